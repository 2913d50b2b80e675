# Test-only programs of the planner layer (included by tests/CMakeLists.txt).
if(TARGET shardgate_planner)
  # shard_probe <type> <modulus>: shardgate's hash-partition remainders for keys on stdin; the
  # integration test test_hash_compat.py checks them against Postgres (in <build>/tests/).
  add_executable(shard_probe ${CMAKE_SOURCE_DIR}/planner/tools/shard_probe.cc)
  target_link_libraries(shard_probe PRIVATE shardgate_planner)
endif()

# route_microbench: Google Benchmark of the planner's per-statement cost on a cache hit (make bench).
find_package(benchmark QUIET)
if(TARGET shardgate_planner AND benchmark_FOUND)
  add_executable(route_microbench ${CMAKE_CURRENT_SOURCE_DIR}/bench/route_microbench.cc)
  target_include_directories(route_microbench PRIVATE ${CMAKE_SOURCE_DIR})
  target_link_libraries(route_microbench PRIVATE shardgate_planner benchmark::benchmark)
  target_compile_definitions(route_microbench PRIVATE SHARDGATE_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
endif()
