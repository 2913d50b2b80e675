# Fuzzing (included by tests/CMakeLists.txt): the fuzz drivers, the libFuzzer targets when
# SHARDGATE_BUILD_FUZZERS is on, and the drivers linked into the regression test
# tests/unit/proxy_fuzz_regression_test.cc (part of proxy_unit_tests, defined after this file).
if(NOT TARGET shardgate_fuzz_drivers)
  add_subdirectory(${CMAKE_CURRENT_SOURCE_DIR}/fuzz ${CMAKE_CURRENT_BINARY_DIR}/fuzz)
endif()

function(shardgate_link_fuzz_regression_test)
  if(TARGET proxy_unit_tests)
    target_link_libraries(proxy_unit_tests PRIVATE shardgate_fuzz_drivers)
  endif()
endfunction()
cmake_language(DEFER CALL shardgate_link_fuzz_regression_test)
