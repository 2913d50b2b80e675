// ReplyQueue: a FIFO that keeps its order across wrap-around and growth, and lets go of what it
// popped.
#include "backends/reply_queue.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "backends/prepared_statements.h"

namespace shardgate::backends {
namespace {

ExpectedReply entry(int n) {
  return ExpectedReply{Reply::kExecution, ReplyAction::kForward, nullptr, std::to_string(n), {}};
}

TEST(ReplyQueue, FifoAcrossWrapAndGrowth) {
  ReplyQueue q;
  EXPECT_TRUE(q.empty());
  int pushed = 0;
  int popped = 0;
  // Interleave pushes and pops so that the ring wraps, then grows while wrapped.
  for (int round = 0; round < 50; ++round) {
    for (int i = 0; i < round % 7 + 1; ++i) q.push_back(entry(pushed++));
    for (int i = 0; i < round % 5 && !q.empty(); ++i) {
      EXPECT_EQ(q.front().client_statement_name, std::to_string(popped++));
      q.pop_front();
    }
    EXPECT_EQ(q.size(), static_cast<size_t>(pushed - popped));
  }
  while (!q.empty()) {
    EXPECT_EQ(q.front().client_statement_name, std::to_string(popped++));
    q.pop_front();
  }
  EXPECT_EQ(popped, pushed);
}

TEST(ReplyQueue, PopReleasesTheEntry) {
  ReplyQueue q;
  auto statement = std::make_shared<PreparedStatement>(1, "select 1", std::vector<int32_t>{});
  std::weak_ptr<PreparedStatement> watch = statement;
  q.push_back(ExpectedReply{Reply::kParseComplete, ReplyAction::kSwallow, std::move(statement),
                            "client_name", "synthetic"});
  EXPECT_FALSE(watch.expired());
  q.pop_front();
  EXPECT_TRUE(q.empty());
  EXPECT_TRUE(watch.expired());  // not kept alive by the slot until it is reused
  // The slot the next entry reuses starts clean.
  q.push_back(ExpectedReply{Reply::kBindComplete, ReplyAction::kForward, nullptr, {}, {}});
  EXPECT_EQ(q.front().reply, Reply::kBindComplete);
  EXPECT_EQ(q.front().action, ReplyAction::kForward);
  EXPECT_TRUE(q.front().synthetic.empty());
  EXPECT_TRUE(q.front().client_statement_name.empty());
  EXPECT_EQ(q.front().statement, nullptr);
}

}  // namespace
}  // namespace shardgate::backends
