// libFuzzer target: a ClientSession on a real loop in front of a fake shard, fed the input as
// client bytes.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "tests/fuzz/fuzz_drivers.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)shardgate::fuzz::runSession(std::string_view(reinterpret_cast<const char*>(data), size),
                                    shardgate::fuzz::abortingReporter());
  return 0;
}
