# The shared body of the benchmark wrappers (sourced): work directory, cleanup traps, the Python driver.
# shellcheck shell=bash
#
#   bench_main <name> <driver.py>
# runs the driver (next to this file) with BENCH_WORKDIR set to a fresh directory under /tmp and
# SHARDGATE_BIN made absolute; cleanup.sh's EXIT trap stops whatever it left running.

bench_main() {
  local name="$1" driver="$2"
  local here repo
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

  echo "$name: work directory $BENCH_WORKDIR, shardgate $SHARDGATE_BIN, open-files limit $(ulimit -n)" >&2
  # In the background so that the traps run at once on a signal; bench_cleanup stops it first.
  "$PYTHON" "$here/$driver" &
  BENCH_CHILD=$!
  wait "$BENCH_CHILD"
}
