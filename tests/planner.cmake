# Test-only programs of the planner layer (included by tests/CMakeLists.txt).
if(TARGET shardgate_planner)
  # shard_probe <type> <modulus>: shardgate's hash-partition remainders for keys on stdin; the
  # integration test test_hash_compat.py checks them against Postgres (in <build>/tests/).
  add_executable(shard_probe ${CMAKE_SOURCE_DIR}/planner/tools/shard_probe.cc)
  target_link_libraries(shard_probe PRIVATE shardgate_planner)
endif()
