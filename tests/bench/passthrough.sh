#!/usr/bin/env bash
# Pass-through benchmark (make bench): pgbench -S against Postgres, PgBouncer and shardgate; see passthrough.py.
#
#   tests/bench/passthrough.sh                              # full run: 5 runs x 10 s per point (~25 min)
#   BENCH_SECONDS=2 BENCH_RUNS=1 tests/bench/passthrough.sh # quick check
#
# Environment: SHARDGATE_BIN (default build/shardgate), BENCH_SECONDS, BENCH_RUNS, BENCH_CLIENTS, BENCH_MODES,
# BENCH_SCALE, BENCH_POOL_SIZE, BENCH_THREADS, BENCH_KEEP=1 (keep the work directory with its logs).
set -euo pipefail

# shellcheck source=tests/bench/wrapper.sh
source "$(dirname "${BASH_SOURCE[0]}")/wrapper.sh"
bench_main passthrough passthrough.py
