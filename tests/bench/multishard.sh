#!/usr/bin/env bash
# Multi-shard read benchmark (make bench): fan-out aggregate, merged ORDER BY ... LIMIT and a streamed
# full merge sort through shardgate over two hash shards, against one Postgres; see multishard.py.
#
#   tests/bench/multishard.sh                                  # full run: scale 20, 3 runs (~2 min)
#   BENCH_SCALE=2 BENCH_RUNS=1 tests/bench/multishard.sh       # quick check
#
# Environment: SHARDGATE_BIN (default build/shardgate), BENCH_SCALE, BENCH_RUNS, BENCH_LIMIT_REPEAT,
# BENCH_SHARDGATE_WORKERS, BENCH_KEEP=1 (keep the work directory with its logs).
set -euo pipefail

# shellcheck source=tests/bench/wrapper.sh
source "$(dirname "${BASH_SOURCE[0]}")/wrapper.sh"
bench_main multishard multishard.py
