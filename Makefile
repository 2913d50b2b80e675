# Entry points: build, test, run the demo cluster, format and sanitizer builds (see README.md).
SHELL := /bin/bash

PYTHON ?= /usr/bin/python3
BUILD_DIR ?= build
ASAN_DIR ?= build-asan
DEMO_DIR ?= $(BUILD_DIR)/demo
BUILD_TYPE ?= RelWithDebInfo
JOBS ?= $(shell nproc)
# The demo starts from conf/demo.toml; without it the harness uses its built-in 2-shard example.
DEMO_CONFIG := $(wildcard conf/demo.toml)
# Every C++ source of the project (build trees and .git excluded), NUL-separated for xargs -0.
FIND_CXX := find . \( -path ./.git -o -path './build*' \) -prune -o -type f \( -name '*.h' -o -name '*.cc' \) -print0
HARNESS := $(PYTHON) tests/harness/pgcluster.py

.PHONY: all deps build up down test format check-format asan clean bench fuzz

all: build

deps:
	./scripts/install-deps.sh
	./scripts/install-node-deps.sh

build: deps
	@if [ ! -f $(BUILD_DIR)/CMakeCache.txt ]; then \
	  cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE); \
	fi
	cmake --build $(BUILD_DIR) -j$(JOBS)

# Starts 2 shards (primary + replica each) under $(DEMO_DIR) and shardgate on 6432, and returns.
up: build
	$(HARNESS) up --dir $(DEMO_DIR) --bin $(BUILD_DIR)/shardgate $(if $(DEMO_CONFIG),--config $(DEMO_CONFIG))

down:
	$(HARNESS) down --dir $(DEMO_DIR)

test: build
	ctest --test-dir $(BUILD_DIR) --output-on-failure

format:
	$(FIND_CXX) | xargs -0 -r clang-format -i

check-format:
	$(FIND_CXX) | xargs -0 -r clang-format --dry-run --Werror

# Debug (assertions on) with ASan + UBSan; the integration tests then run against that binary too.
# A small quarantine of freed blocks (ASan's default is 256 MB): integration tests bound how much
# shardgate's memory may grow while it relays large results, and the quarantine alone exceeds that.
asan: deps
	@if [ ! -f $(ASAN_DIR)/CMakeCache.txt ]; then \
	  cmake -S . -B $(ASAN_DIR) -DCMAKE_BUILD_TYPE=Debug -DSHARDGATE_ENABLE_SANITIZER=ON; \
	fi
	cmake --build $(ASAN_DIR) -j$(JOBS)
	ASAN_OPTIONS=$${ASAN_OPTIONS:-detect_leaks=1:quarantine_size_mb=8} UBSAN_OPTIONS=$${UBSAN_OPTIONS:-print_stacktrace=1} \
	  ctest --test-dir $(ASAN_DIR) --output-on-failure

# The planner's microbenchmark, then pass-through, routed-statement and idle-client benchmarks against Postgres and PgBouncer (tests/bench/; ~30 min).
# BENCH_SECONDS=2 BENCH_RUNS=1 IDLE_CLIENTS=1000 make bench is a quick check.
bench: build
	@if [ -x $(BUILD_DIR)/tests/route_microbench ]; then $(BUILD_DIR)/tests/route_microbench; fi
	SHARDGATE_BIN=$(abspath $(BUILD_DIR))/shardgate tests/bench/passthrough.sh
	SHARDGATE_BIN=$(abspath $(BUILD_DIR))/shardgate tests/bench/routed.sh
	SHARDGATE_BIN=$(abspath $(BUILD_DIR))/shardgate tests/bench/idle_clients
	SHARDGATE_BIN=$(abspath $(BUILD_DIR))/shardgate tests/bench/multishard.sh

# libFuzzer targets (tests/fuzz/, clang + ASan/UBSan), each run for FUZZ_SECONDS. New inputs go to
# $(FUZZ_DIR)/corpus/<target> (seeded from tests/fuzz/seeds/ and tests/fuzz/regressions/), crashes
# to $(FUZZ_DIR)/artifacts/<target>/. SHARDGATE_FUZZ_IGNORE="text|..." skips known reports.
FUZZ_DIR ?= build-fuzz
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= fuzz_startup_packet fuzz_frontend_messages fuzz_session
fuzz:
	@if [ ! -f $(FUZZ_DIR)/CMakeCache.txt ]; then \
	  cmake -S . -B $(FUZZ_DIR) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
	    -DSHARDGATE_BUILD_FUZZERS=ON; \
	fi
	cmake --build $(FUZZ_DIR) -j$(JOBS) --target $(FUZZ_TARGETS)
	@set -e; for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(FUZZ_DIR)/corpus/$$t $(FUZZ_DIR)/artifacts/$$t; \
	  inputs=""; for d in tests/fuzz/seeds/$$t tests/fuzz/regressions/$$t; do \
	    if [ -d $$d ]; then inputs="$$inputs $$d"; fi; \
	  done; \
	  echo "== $$t for $(FUZZ_SECONDS) s"; \
	  UBSAN_OPTIONS=$${UBSAN_OPTIONS:-print_stacktrace=1} $(FUZZ_DIR)/$$t \
	    -max_total_time=$(FUZZ_SECONDS) -max_len=65536 -timeout=30 -print_final_stats=1 \
	    -dict=tests/fuzz/shardgate.dict -artifact_prefix=$(FUZZ_DIR)/artifacts/$$t/ \
	    $(FUZZ_DIR)/corpus/$$t $$inputs; \
	done

# Stops the demo first: its data lives in $(BUILD_DIR)/demo.
clean: down
	rm -rf $(BUILD_DIR) $(ASAN_DIR)
