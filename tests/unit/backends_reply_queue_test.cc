// ReplyQueue and the RingQueue under it: a FIFO that keeps its order across wrap-around and
// growth, lets go of what it popped, and allocates nothing while it has never been used.
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
  EXPECT_FALSE(q.front().checks_shape);
}

TEST(ReplyQueue, RecycledSlotIsNoCheck) {
  ReplyQueue q;
  ExpectedReply& check = q.emplace_back();
  check.reply = Reply::kDescription;
  check.checks_shape = true;
  q.pop_front();
  EXPECT_FALSE(q.emplace_back().checks_shape);
}

TEST(RingQueue, AllocatesNothingUntilTheFirstPush) {
  RingQueue<std::vector<int>> q;
  EXPECT_EQ(q.capacity(), 0u);  // an idle session's queues cost their size only
  q.push_back({1, 2});
  EXPECT_GT(q.capacity(), 0u);
  q.pop_front();
  EXPECT_TRUE(q.empty());
}

TEST(RingQueue, EmplacedSlotsStartDefaultAfterReuse) {
  RingQueue<std::vector<int>> q;
  for (int round = 0; round < 20; ++round) {
    std::vector<int>& slot = q.emplace_back();
    EXPECT_TRUE(slot.empty()) << "round " << round;  // the popped entry was reset
    slot.assign(static_cast<size_t>(round + 1), round);
    if (round % 3 != 2) {
      EXPECT_EQ(q.front().front(), q.front().back());
      q.pop_front();
    }
  }
  EXPECT_EQ(q.size(), 6u);
  EXPECT_EQ(q.front(), std::vector<int>(15, 14));  // 20 pushed, 14 popped in order
  EXPECT_EQ(q.back(), std::vector<int>(20, 19));
  q.clear();
  EXPECT_TRUE(q.empty());
  EXPECT_TRUE(q.emplace_back().empty());
}

TEST(RingQueue, IndexCountsFromTheFront) {
  RingQueue<int> q;
  for (int i = 0; i < 6; ++i) q.push_back(int(i));
  q.pop_front();
  q.pop_front();
  for (int i = 6; i < 9; ++i) q.push_back(int(i));  // wraps around
  const RingQueue<int>& view = q;
  for (size_t i = 0; i < view.size(); ++i) EXPECT_EQ(view[i], static_cast<int>(i) + 2);
}

}  // namespace
}  // namespace shardgate::backends
