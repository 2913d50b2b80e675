#!/usr/bin/env bash
# Pass-through benchmark (make bench): pgbench -S against Postgres, PgBouncer and shardgate; see passthrough.py.
#
#   tests/bench/passthrough.sh                              # full run: 3 runs x 10 s per point (~15 min)
#   BENCH_SECONDS=2 BENCH_RUNS=1 tests/bench/passthrough.sh # quick check
#
# Environment: SHARDGATE_BIN (default build/shardgate), BENCH_SECONDS, BENCH_RUNS, BENCH_CLIENTS, BENCH_MODES,
# BENCH_SCALE, BENCH_POOL_SIZE, BENCH_THREADS, BENCH_KEEP=1 (keep the work directory with its logs).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
PYTHON="${PYTHON:-/usr/bin/python3}"
# Absolute: the harness starts shardgate from the directory of its config.
SHARDGATE_BIN="$(realpath -m "${SHARDGATE_BIN:-$repo/build/shardgate}")"
export SHARDGATE_BIN

BENCH_WORKDIR="$(mktemp -d /tmp/shardgate-bench.XXXXXX)"
export BENCH_WORKDIR
chmod 755 "$BENCH_WORKDIR"  # Postgres and PgBouncer run as the postgres user and must get in

# shellcheck source=tests/bench/cleanup.sh
source "$here/cleanup.sh"
trap bench_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

echo "passthrough: work directory $BENCH_WORKDIR, shardgate $SHARDGATE_BIN" >&2
# In the background so that the traps run at once on a signal; bench_cleanup stops it first.
"$PYTHON" "$here/passthrough.py" &
BENCH_CHILD=$!
wait "$BENCH_CHILD"
