// What each fuzz target does with one input, shared by the libFuzzer binaries (clang) and the
// regression test that replays tests/fuzz/regressions/ (g++ unit build).
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

namespace shardgate::fuzz {

// Called for every violated property (a crash or sanitizer report needs no call: it stops the
// process by itself). The fuzzers abort; the regression test records a failure.
using Reporter = std::function<void(std::string_view what)>;

// The fuzzers' reporter: prints the property and aborts, which libFuzzer records as a crash.
const Reporter& abortingReporter();

// frameUntyped + decodeStartupPacket over the input (packets back to back), with the
// decode/encode round trip checked; then the input fed as the first bytes of a ClientSession.
void runStartupPacket(std::string_view input, const Reporter& report);

// frameTyped + every frontend (and backend) message decoder over each framed payload, with the
// decode/encode round trip checked.
void runFrontendMessages(std::string_view input, const Reporter& report);

// A ClientSession on a real libuv loop, fed the input as client bytes. The first 4 bytes choose
// the set-up (see kSession* in fuzz_drivers.cc) and where the rest is split into reads; the rest
// is the byte stream. What the session sends back must be well-formed backend messages, and
// everything must shut down with no handle or object left behind. Returns what the session wrote
// to the client (for tests that check a seed really gets where it is meant to).
std::string runSession(std::string_view input, const Reporter& report);

// Flags of the session input's first byte.
inline constexpr unsigned char kSessionTransactionPooling = 0x01;  // pool_mode = "transaction"
inline constexpr unsigned char kSessionShardAsksPassword = 0x02;   // shard wants cleartext
inline constexpr unsigned char kSessionShardRefusesLogin = 0x04;   // shard login fails
inline constexpr unsigned char kSessionShutdownFirst = 0x08;  // worker shuts down, client stays
inline constexpr size_t kSessionHeaderSize = 4;

}  // namespace shardgate::fuzz
