// deadlockedHolders: which clients wait for each other's pooled connections, on hand-made pool
// states (no connections, no loop).
#include "backends/pool_deadlock.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace shardgate::backends {
namespace {

// Deadlock detection only compares pool addresses: these stand for pools 0..3.
const Pool* pool(uintptr_t n) {
  return reinterpret_cast<const Pool*>(0x1000 + 0x100 * n);
}

class FakeHolder final : public ConnectionHolder {
 public:
  explicit FakeHolder(std::vector<const Pool*> awaited = {}) : awaited_(std::move(awaited)) {}
  void awaitedPools(std::vector<const Pool*>& out) const override {
    out.insert(out.end(), awaited_.begin(), awaited_.end());
  }
  uint64_t waitingSinceMs() const override { return 1; }
  void failWaits(const Error&) override {}
  uint64_t holderId() const override { return 0; }

 private:
  std::vector<const Pool*> awaited_;
};

PoolWaitState exhausted(uintptr_t n, std::vector<ConnectionHolder*> holders) {
  return PoolWaitState{pool(n), true, std::move(holders)};
}

std::vector<ConnectionHolder*> sorted(std::vector<ConnectionHolder*> v) {
  std::sort(v.begin(), v.end());
  return v;
}

TEST(PoolDeadlockTest, TwoClientsEachHoldingWhatTheOtherWaitsFor) {
  FakeHolder a({pool(1)}), b({pool(0)});
  EXPECT_EQ(sorted(deadlockedHolders({exhausted(0, {&a}), exhausted(1, {&b})})), sorted({&a, &b}));
}

TEST(PoolDeadlockTest, NoneWhenAHolderIsNotWaiting) {
  FakeHolder a({pool(1)}), b;  // b runs, or waits for its client: it will give shard 1 back
  EXPECT_TRUE(deadlockedHolders({exhausted(0, {&a}), exhausted(1, {&b})}).empty());
}

TEST(PoolDeadlockTest, NoneWhileAConnectionOfThePoolWillComeFreeByItself) {
  FakeHolder a({pool(1)}), b({pool(0)});
  // Shard 1's second connection runs shardgate's own statement (or is logging in): no holder.
  EXPECT_TRUE(deadlockedHolders({exhausted(0, {&a}), exhausted(1, {&b, nullptr})}).empty());
}

TEST(PoolDeadlockTest, NoneWhenTheAwaitedPoolIsNotExhausted) {
  FakeHolder a({pool(1)}), b({pool(0)});
  PoolWaitState open{pool(1), false, {}};  // room for another connection: a will get one
  EXPECT_TRUE(deadlockedHolders({exhausted(0, {&a}), open}).empty());
}

TEST(PoolDeadlockTest, WaitersHoldingNothingAreNotPartOfIt) {
  FakeHolder a({pool(1)}), b({pool(0)}), c({pool(0)});  // c only queues behind the cycle
  EXPECT_EQ(sorted(deadlockedHolders({exhausted(0, {&a}), exhausted(1, {&b})})), sorted({&a, &b}));
}

TEST(PoolDeadlockTest, AHolderNeedingEveryPoolItWaitsOnIsStuckByOne) {
  // a's multi-shard statement waits on shards 1 and 2: shard 2 has room, shard 1 never will.
  FakeHolder a({pool(1), pool(2)}), b({pool(0)});
  PoolWaitState open{pool(2), false, {}};
  EXPECT_EQ(sorted(deadlockedHolders({exhausted(0, {&a}), exhausted(1, {&b}), open})),
            sorted({&a, &b}));
}

TEST(PoolDeadlockTest, AChainEndingInARunningClientIsNoDeadlock) {
  FakeHolder a({pool(1)}), b({pool(2)}), d;  // d holds shard 2 and is not waiting
  EXPECT_TRUE(
      deadlockedHolders({exhausted(0, {&a}), exhausted(1, {&b}), exhausted(2, {&d})}).empty());
}

TEST(PoolDeadlockTest, ThreeClientsInACircleEachHoldingTwoConnections) {
  FakeHolder a({pool(1)}), b({pool(2)}), c({pool(0)});
  auto found =
      deadlockedHolders({exhausted(0, {&a, &a}), exhausted(1, {&b, &b}), exhausted(2, {&c, &c})});
  EXPECT_EQ(sorted(found), sorted({&a, &b, &c}));  // each named once
}

TEST(PoolDeadlockTest, ACycleBesideAPoolThatMoves) {
  FakeHolder a({pool(1)}), b({pool(0)}), e({pool(3)}), f;
  auto found = deadlockedHolders(
      {exhausted(0, {&a}), exhausted(1, {&b}), exhausted(2, {&e}), exhausted(3, {&f})});
  EXPECT_EQ(sorted(found), sorted({&a, &b}));
}

}  // namespace
}  // namespace shardgate::backends
