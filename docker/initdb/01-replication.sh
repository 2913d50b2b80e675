#!/usr/bin/env bash
# Primary init (docker-entrypoint-initdb.d, first start only): the role replicas clone and stream
# with, and the pg_hba.conf line that lets it connect for replication.
#
# The postgres image runs this file when it is executable and sources it otherwise, so it sets no
# shell options and never calls exit: the entrypoint's own `set -e` stops the init on a failure.

: "${REPLICATION_USER:=replicator}"
: "${REPLICATION_PASSWORD:?REPLICATION_PASSWORD must be set for the primary (docker-compose.yml)}"

# psql variables (:"name", :'literal') quote the values, whatever characters they hold.
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname postgres \
  -v repl_user="$REPLICATION_USER" -v repl_password="$REPLICATION_PASSWORD" <<'EOSQL'
SET password_encryption = 'scram-sha-256';
CREATE ROLE :"repl_user" WITH REPLICATION LOGIN PASSWORD :'repl_password';
EOSQL

# The image's own line (host all all all scram-sha-256) does not match the pseudo-database
# "replication"; pg_hba.conf is copied to the replica by pg_basebackup, so both get this line.
echo "host replication ${REPLICATION_USER} all scram-sha-256" >>"${PGDATA}/pg_hba.conf"
