// Replays the fuzzers' regression inputs (tests/fuzz/regressions/<target>/) and seed corpora
// (tests/fuzz/seeds/<target>/) through the same drivers the libFuzzer binaries run, so a crash
// or broken property found once stays fixed in the ordinary g++ build.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "tests/fuzz/fuzz_drivers.h"

namespace shardgate::fuzz {
namespace {

namespace fs = std::filesystem;

struct Target {
  const char* name;
  void (*run)(std::string_view input, const Reporter& report);
};

// gtest names the parameter in failure messages.
void PrintTo(const Target& target, std::ostream* os) {
  *os << target.name;
}

void runSessionIgnoringResult(std::string_view input, const Reporter& report) {
  (void)runSession(input, report);
}

const Target kTargets[] = {
    {"fuzz_startup_packet", &runStartupPacket},
    {"fuzz_frontend_messages", &runFrontendMessages},
    {"fuzz_session", &runSessionIgnoringResult},
};

fs::path fuzzDir() {
  return fs::path(SHARDGATE_SOURCE_DIR) / "tests" / "fuzz";
}

std::string readFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Every input file under `dir`, sorted (README files describe a directory; they are no input).
std::vector<fs::path> inputsIn(const fs::path& dir) {
  std::vector<fs::path> files;
  if (!fs::is_directory(dir)) return files;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    if (entry.path().filename().string().rfind("README", 0) == 0) continue;
    files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

void replay(const Target& target, const fs::path& dir) {
  for (const fs::path& file : inputsIn(dir)) {
    SCOPED_TRACE(file.string());
    std::string input = readFile(file);
    target.run(input, [&](std::string_view what) {
      ADD_FAILURE() << target.name << " on " << file.filename().string() << ": " << what;
    });
  }
}

class FuzzReplayTest : public ::testing::TestWithParam<Target> {};

TEST_P(FuzzReplayTest, RegressionInputsKeepTheirProperties) {
  replay(GetParam(), fuzzDir() / "regressions" / GetParam().name);
}

TEST_P(FuzzReplayTest, SeedInputsKeepTheirProperties) {
  fs::path dir = fuzzDir() / "seeds" / GetParam().name;
  ASSERT_FALSE(inputsIn(dir).empty()) << "no seeds in " << dir;
  replay(GetParam(), dir);
}

INSTANTIATE_TEST_SUITE_P(Targets, FuzzReplayTest, ::testing::ValuesIn(kTargets),
                         [](const ::testing::TestParamInfo<Target>& info) {
                           return std::string(info.param.name);
                         });

// ---- the session harness really gets where the seeds aim -------------------------------------

uint32_t load32(const char* p) {
  return (static_cast<uint32_t>(static_cast<uint8_t>(p[0])) << 24) |
         (static_cast<uint32_t>(static_cast<uint8_t>(p[1])) << 16) |
         (static_cast<uint32_t>(static_cast<uint8_t>(p[2])) << 8) |
         static_cast<uint32_t>(static_cast<uint8_t>(p[3]));
}

// The type bytes of the messages in a client's output (after `skip` single-byte answers).
std::string messageTypes(std::string_view out, size_t skip = 0) {
  std::string types;
  out.remove_prefix(std::min(skip, out.size()));
  while (out.size() >= 5) {
    size_t size = size_t{1} + load32(out.data() + 1);
    if (size < 5 || size > out.size()) break;
    types += out[0];
    out.remove_prefix(size);
  }
  return types;
}

SessionResult sessionRun(const std::string& seed) {
  std::string input = readFile(fuzzDir() / "seeds" / "fuzz_session" / seed);
  EXPECT_FALSE(input.empty()) << seed;
  return runSession(input, [&](std::string_view what) { ADD_FAILURE() << seed << ": " << what; });
}

std::string sessionOutput(const std::string& seed) {
  return sessionRun(seed).client_output;
}

TEST(FuzzSessionHarness, TrustLoginReachesTheFakeShardAndGetsRows) {
  SessionResult run = sessionRun("trust_select");
  // Session pooling resets the connection when the client leaves.
  EXPECT_EQ(run.statements_on_shard, (std::vector<std::string>{"SELECT 1", "DISCARD ALL"}));
  std::string types = messageTypes(run.client_output);
  // AuthenticationOk, ParameterStatus..., BackendKeyData, ReadyForQuery; then the shard's
  // RowDescription, DataRow x2, CommandComplete, ReadyForQuery.
  ASSERT_FALSE(types.empty());
  EXPECT_EQ(types.front(), 'R');
  EXPECT_NE(types.find('K'), std::string::npos) << types;
  EXPECT_NE(types.find("TDDCZ"), std::string::npos) << types;
  EXPECT_EQ(std::count(types.begin(), types.end(), 'Z'), 2) << types;
}

TEST(FuzzSessionHarness, SplitInputStillGetsEveryAnswer) {
  std::string types = messageTypes(sessionOutput("trust_select_split"));
  EXPECT_EQ(std::count(types.begin(), types.end(), 'Z'), 3) << types;
}

TEST(FuzzSessionHarness, SslRequestIsAnsweredWithN) {
  std::string out = sessionOutput("ssl_then_login");
  ASSERT_FALSE(out.empty());
  EXPECT_EQ(out[0], 'N');
  EXPECT_NE(messageTypes(out, 1).find("TDDCZ"), std::string::npos);
}

TEST(FuzzSessionHarness, TransactionPoolingServesEveryTransaction) {
  std::string types = messageTypes(sessionOutput("txn_pooling_block"));
  // Login, BEGIN, SELECT, COMMIT, SELECT.
  EXPECT_EQ(std::count(types.begin(), types.end(), 'Z'), 5) << types;
}

TEST(FuzzSessionHarness, CopyInCompletes) {
  std::string types = messageTypes(sessionOutput("copy_in"));
  EXPECT_NE(types.find("GCZ"), std::string::npos) << types;  // CopyIn, COPY 2, ready
  EXPECT_NE(types.find("TDDCZ"), std::string::npos) << types;
}

TEST(FuzzSessionHarness, UnreachableShardGivesAnError) {
  std::string types = messageTypes(sessionOutput("database_down"));
  ASSERT_FALSE(types.empty());
  EXPECT_EQ(types.back(), 'E') << types;
  EXPECT_EQ(types.find('Z'), std::string::npos) << types;
}

TEST(FuzzSessionHarness, ShutdownTerminatesTheSession) {
  std::string types = messageTypes(sessionOutput("shutdown_idle"));
  ASSERT_FALSE(types.empty());
  EXPECT_EQ(types.back(), 'E') << types;  // 57P01 terminating connection
}

// Postgres runs every message it received before a Terminate; a client may send
// Query + Terminate in one write and leave without reading.
TEST(FuzzSessionHarness, QueryPipelinedBeforeTerminateStillRuns) {
  SessionResult run = sessionRun("trust_select_terminate");
  EXPECT_NE(std::find(run.statements_on_shard.begin(), run.statements_on_shard.end(), "SELECT 1"),
            run.statements_on_shard.end())
      << "the shard never ran the query the client sent before Terminate";
}

// Transaction pooling: the shard dies after the client's Execute but before its Sync arrives.
// The client must hear about it; a bare ReadyForQuery would tell it the Execute went through.
TEST(FuzzSessionHarness, ShardLostMidBatchIsReportedToTheClient) {
  std::string types = messageTypes(sessionOutput("txn_pooling_shard_crash_mid_batch"));
  size_t login = types.find('Z');
  ASSERT_NE(login, std::string::npos) << types;
  EXPECT_NE(types.find('E', login), std::string::npos)
      << "no error for the Execute the shard never answered: " << types;
}

// Savepoints over the two shards of the sharded database: the shard that joins after SAVEPOINT
// makes it first, ROLLBACK TO runs on both shards' connections (shardgate's own statements,
// the name quoted), and every query is answered without an error.
// A seed's run that must answer `queries` queries (after the login) without an error; `ran(sql)`
// counts the statements the fake shards ran with exactly that text.
struct ErrorFreeRun {
  ErrorFreeRun(const std::string& seed, long queries) : run(sessionRun(seed)) {
    std::string types = messageTypes(run.client_output);
    EXPECT_EQ(types.find('E'), std::string::npos) << seed << ": " << types;
    EXPECT_EQ(std::count(types.begin(), types.end(), 'Z'), queries + 1) << seed << ": " << types;
  }
  long ran(std::string_view sql) const {
    const auto& all = run.statements_on_shard;
    return std::count(all.begin(), all.end(), sql);
  }
  std::string shards() const { return ::testing::PrintToString(run.statements_on_shard); }
  SessionResult run;
};

TEST(FuzzSessionHarness, SavepointsReachBothShards) {
  ErrorFreeRun r("sharded_savepoints", 7);
  EXPECT_EQ(r.ran("SAVEPOINT \"a\""), 1) << r.shards();
  EXPECT_EQ(r.ran("ROLLBACK TO SAVEPOINT \"a\""), 2) << r.shards();
  EXPECT_EQ(r.ran("RELEASE SAVEPOINT \"a\""), 2) << r.shards();
}

// SET LOCAL made before the second shard joins is replayed there; a SET once the transaction runs
// on both shards runs on each of them.
TEST(FuzzSessionHarness, SettingsReachBothShards) {
  ErrorFreeRun r("sharded_settings", 6);
  // On shard 0, then replayed (as the client wrote it) on the shard that joins.
  EXPECT_EQ(r.ran("SET LOCAL work_mem = '7MB'"), 2) << r.shards();
  EXPECT_EQ(r.ran("SET statement_timeout = '9s'"), 2) << r.shards();
}

// Multi-shard reads are merged in the harness too: the shards' collation is read in the thread
// pool while the loop serves the fake shards (read on the loop, it timed out: 08006).
TEST(FuzzSessionHarness, MultiShardReadsAreMerged) {
  ErrorFreeRun r("sharded_keyed_and_multi", 3);
  const auto& ran = r.run.statements_on_shard;
  EXPECT_EQ(std::count_if(ran.begin(), ran.end(),
                          [](const std::string& sql) { return sql.find("count(") != sql.npos; }),
            2)
      << r.shards();
}

// The output check is a real check: broken streams are reported, good ones are not.
TEST(FuzzDrivers, SessionOutputCheckCatchesBrokenStreams) {
  auto reports = [](std::string_view out, size_t encryption_requests) {
    int n = 0;
    checkSessionOutput(out, encryption_requests, [&](std::string_view) { ++n; });
    return n;
  };
  const std::string ready("Z\0\0\0\x05I", 6);
  const std::string fatal = std::string("E\0\0\0\x13SFATAL\0VFATAL\0\0", 20);
  EXPECT_EQ(reports(ready, 0), 0);
  EXPECT_EQ(reports("N" + ready, 1), 0);
  EXPECT_EQ(reports(ready, 1), 1);  // the 'N' is missing
  EXPECT_EQ(reports("N", 2), 0);    // closed before answering the second request
  EXPECT_EQ(reports("", 1), 0);
  EXPECT_EQ(reports(ready.substr(0, 5), 0), 1);     // cut short
  EXPECT_EQ(reports("?" + ready.substr(1), 0), 1);  // not a backend type
  EXPECT_EQ(reports(fatal + ready, 0), 1);          // something after FATAL
  EXPECT_EQ(reports(ready + fatal + fatal, 0), 0);  // errors may follow errors
}

}  // namespace
}  // namespace shardgate::fuzz
