# EXIT trap of the benchmark wrappers (sourced): stops whatever the Python driver left running.
# shellcheck shell=bash
#
# Expects BENCH_WORKDIR (the run's scratch directory) and BENCH_CHILD (the driver's pid, once started).
# The driver stops everything itself; this is for when it was killed: it kills the pids it recorded in
# $BENCH_WORKDIR/pids, stops the Postgres clusters from the harness state files (one per subdirectory),
# and removes the work directory unless BENCH_KEEP=1.

bench_cleanup() {
  local rc=$?
  local harness
  harness="$(cd "$(dirname "${BASH_SOURCE[0]}")/../harness" && pwd)/pgcluster.py"
  trap - EXIT INT TERM HUP
  if [[ -n "${BENCH_CHILD:-}" ]] && kill -0 "$BENCH_CHILD" 2>/dev/null; then
    kill -TERM "$BENCH_CHILD" 2>/dev/null || true
    for _ in $(seq 1 300); do
      kill -0 "$BENCH_CHILD" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$BENCH_CHILD" 2>/dev/null || true
    wait "$BENCH_CHILD" 2>/dev/null || true
  fi
  if [[ -f "$BENCH_WORKDIR/pids" ]]; then
    local pid what
    while read -r pid what; do
      # Only a process that still runs the program we started (pids get reused).
      if kill -0 "$pid" 2>/dev/null && grep -qE 'shardgate|pgbouncer|runuser' "/proc/$pid/comm" 2>/dev/null; then
        echo "cleanup: killing leftover $what (pid $pid)" >&2
        kill -KILL "$pid" 2>/dev/null || true
      fi
    done <"$BENCH_WORKDIR/pids"
  fi
  local state
  for state in "$BENCH_WORKDIR"/*/pgcluster-state.json; do
    [[ -f "$state" ]] || continue
    "${PYTHON:-/usr/bin/python3}" "$harness" down --dir "$(dirname "$state")" >/dev/null 2>&1 || true
  done
  if [[ "${BENCH_KEEP:-0}" == 1 ]]; then
    echo "cleanup: kept $BENCH_WORKDIR (BENCH_KEEP=1)" >&2
  else
    rm -rf "$BENCH_WORKDIR"
  fi
  exit "$rc"
}
