#!/usr/bin/env bash
# Entrypoint of the replica services: on first start, waits for the primary and clones it with
# pg_basebackup -R; then hands over to the postgres image's entrypoint, which finds a data
# directory and starts Postgres as a hot standby streaming from the primary.
#
# Environment: PRIMARY_HOST (required), PRIMARY_PORT (5432), REPLICATION_USER (replicator),
# REPLICATION_PASSWORD (required), PRIMARY_WAIT_SECONDS (300), REPLICA_NAME (the name the primary
# shows in pg_stat_replication; default $HOSTNAME), PGDATA (the image's default).
set -euo pipefail

: "${PRIMARY_HOST:?PRIMARY_HOST must name the primary service}"
: "${REPLICATION_PASSWORD:?REPLICATION_PASSWORD must be set}"
PRIMARY_PORT=${PRIMARY_PORT:-5432}
REPLICATION_USER=${REPLICATION_USER:-replicator}
PRIMARY_WAIT_SECONDS=${PRIMARY_WAIT_SECONDS:-300}
PGDATA=${PGDATA:-/var/lib/postgresql/data}
REPLICA_NAME=${REPLICA_NAME:-${HOSTNAME:-replica}}
# Written after a complete clone: a data directory without it is a clone that was interrupted.
MARKER="$PGDATA/.replica-cloned"

log() { echo "replica-entrypoint: $*" >&2; }

if [[ ! -f "$MARKER" ]]; then
  # The primary's init phase runs a server on the Unix socket only, so answering over TCP means
  # it is initialized (database, tables, replication role) and listening for real.
  log "waiting up to ${PRIMARY_WAIT_SECONDS}s for ${PRIMARY_HOST}:${PRIMARY_PORT}"
  deadline=$((SECONDS + PRIMARY_WAIT_SECONDS))
  until pg_isready -q -h "$PRIMARY_HOST" -p "$PRIMARY_PORT" -U "$REPLICATION_USER" -d postgres; do
    if ((SECONDS >= deadline)); then
      log "${PRIMARY_HOST}:${PRIMARY_PORT} not ready after ${PRIMARY_WAIT_SECONDS}s; giving up (the restart policy retries)"
      exit 1
    fi
    sleep 1
  done

  mkdir -p "$PGDATA"
  # Leftovers of an interrupted clone would make pg_basebackup refuse the directory.
  find "$PGDATA" -mindepth 1 -delete
  chown postgres:postgres "$PGDATA"
  chmod 0700 "$PGDATA"

  log "cloning ${PRIMARY_HOST}:${PRIMARY_PORT} into $PGDATA"
  # -R writes standby.signal and primary_conninfo (with this connection string, password
  # included) into postgresql.auto.conf; application_name names the replica in
  # pg_stat_replication. -X stream: the WAL written during the copy comes along.
  PGPASSWORD="$REPLICATION_PASSWORD" gosu postgres pg_basebackup \
    -d "host=$PRIMARY_HOST port=$PRIMARY_PORT user=$REPLICATION_USER application_name=$REPLICA_NAME" \
    -D "$PGDATA" -R -X stream -c fast -w
  gosu postgres touch "$MARKER"
  log "clone complete"
fi

# The image's entrypoint sees PG_VERSION, skips initdb and runs the command as user postgres.
exec docker-entrypoint.sh "$@"
