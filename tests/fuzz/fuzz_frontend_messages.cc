// libFuzzer target: frontend messages: framing and every decoder's round trip.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "tests/fuzz/fuzz_drivers.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)shardgate::fuzz::runFrontendMessages(
      std::string_view(reinterpret_cast<const char*>(data), size),
      shardgate::fuzz::abortingReporter());
  return 0;
}
