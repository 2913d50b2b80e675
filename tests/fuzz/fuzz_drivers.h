// What each fuzz target does with one input, shared by the libFuzzer binaries (clang) and the
// regression test that replays tests/fuzz/regressions/ (g++ unit build).
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

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

// What a session run leaves to look at.
struct SessionResult {
  std::string client_output;                     // every byte the session wrote to the client
  std::vector<std::string> statements_on_shard;  // what the fake shard ran, internal SQL included
};

// A ClientSession on a real libuv loop, fed the input as client bytes. The first 4 bytes choose
// the set-up (the kSession* flags below) and where the rest is split into reads; the rest is the
// byte stream. What the session sends back must be well-formed backend messages, and everything
// must shut down with no handle or object left behind.
SessionResult runSession(std::string_view input, const Reporter& report);

// The check runSession applies to what the session wrote to the client: one 'N' for each of the
// `encryption_requests` SSLRequest/GSSENCRequest packets the client opened with (unless the
// output ends there), then only whole backend messages, and only ErrorResponses after a FATAL.
void checkSessionOutput(std::string_view out, size_t encryption_requests, const Reporter& report);

// Flags of the session input's first byte.
inline constexpr unsigned char kSessionTransactionPooling = 0x01;  // pool_mode = "transaction"
inline constexpr unsigned char kSessionShardAsksPassword = 0x02;   // shard wants cleartext
inline constexpr unsigned char kSessionShardRefusesLogin = 0x04;   // shard login fails
inline constexpr unsigned char kSessionShutdownFirst = 0x08;  // worker shuts down, client stays
// After the client leaves, a second one logs in (trust) and must get an answer to its SELECT:
// whatever the first client left in the pool must not hurt the next one.
inline constexpr unsigned char kSessionSecondClient = 0x10;
// The second client sends its SELECT in the same write as its startup packet.
inline constexpr unsigned char kSessionSecondClientPipelines = 0x20;
inline constexpr size_t kSessionHeaderSize = 4;

}  // namespace shardgate::fuzz
