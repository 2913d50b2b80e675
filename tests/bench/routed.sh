#!/usr/bin/env bash
# Routed-statement benchmark (make bench): keyed pgbench_accounts reads through shardgate over two hash
# shards, against shardgate in front of one server (pass-through) and Postgres; see routed.py.
#
#   tests/bench/routed.sh                                   # full run: 5 runs x 10 s per point (~25 min)
#   BENCH_SECONDS=2 BENCH_RUNS=1 tests/bench/routed.sh      # quick check
#
# Environment: SHARDGATE_BIN (default build/shardgate), BENCH_SECONDS, BENCH_RUNS, BENCH_CLIENTS,
# BENCH_ROUTED_MODES, BENCH_SCALE, BENCH_POOL_SIZE, BENCH_THREADS, BENCH_KEEP=1 (keep the work directory).
set -euo pipefail

# shellcheck source=tests/bench/wrapper.sh
source "$(dirname "${BASH_SOURCE[0]}")/wrapper.sh"
bench_main routed routed.py
