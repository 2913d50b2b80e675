// findLockDeadlock: cycles of lock waits across servers, on hand-made sessions and pg_locks rows.
#include "backends/lock_deadlock.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace shardgate::backends {
namespace {

const std::string kS0 = "10.0.0.1:5432";
const std::string kS1 = "10.0.0.2:5432";
const std::string kS2 = "10.0.0.3:5432";
constexpr uint64_t kTimeoutMs = 1000;

BackendHolder session(uint64_t id, std::vector<BackendRef> backends, uint32_t worker = 0) {
  return BackendHolder{worker, id, std::move(backends)};
}

LockWait wait(const std::string& server, int32_t pid, std::vector<int32_t> blockers,
              uint64_t waited_ms) {
  return LockWait{BackendRef{server, pid}, std::move(blockers), waited_ms};
}

TEST(LockDeadlock, TwoSessionsCrossingTwoServersGiveTheLaterWaiterAsVictim) {
  // Session 1 holds 100 on s0 and 200 on s1; session 2 holds 101 on s0 and 201 on s1.
  // 200 (session 1) waits on s1 for 201; 101 (session 2) waits on s0 for 100.
  std::vector<BackendHolder> holders{session(1, {{kS0, 100}, {kS1, 200}}),
                                     session(2, {{kS0, 101}, {kS1, 201}}, /*worker=*/1)};
  std::vector<LockWait> waits{wait(kS1, 200, {201}, 3000), wait(kS0, 101, {100}, 1500)};
  auto found = findLockDeadlock(holders, waits, kTimeoutMs);
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->session, 2u);
  EXPECT_EQ(found->worker, 1u);
  EXPECT_EQ(found->waiting, (BackendRef{kS0, 101}));
  EXPECT_EQ(found->waited_ms, 1500u);
  ASSERT_EQ(found->cycle.size(), 2u);
  EXPECT_EQ(found->cycle[0], "Process 101 (shardgate client 2) on " + kS0 +
                                 " waits for a lock held by process 100 (shardgate client 1)");
  EXPECT_EQ(found->cycle[1], "Process 200 (shardgate client 1) on " + kS1 +
                                 " waits for a lock held by process 201 (shardgate client 2)");
}

TEST(LockDeadlock, TheFirstCheckAfterTheCycleClosedChoosesTheVictim) {
  // Session 1 began waiting 600 ms before session 2, less than the timeout: its own check comes
  // after the cycle closed, and first, so it is the victim, as Postgres would choose, once due.
  std::vector<BackendHolder> holders{session(1, {{kS0, 100}, {kS1, 200}}),
                                     session(2, {{kS0, 101}, {kS1, 201}})};
  std::vector<LockWait> waits{wait(kS1, 200, {201}, 900), wait(kS0, 101, {100}, 300)};
  EXPECT_FALSE(findLockDeadlock(holders, waits, kTimeoutMs).has_value());
  waits[0].waited_ms = 1200;
  waits[1].waited_ms = 600;
  auto found = findLockDeadlock(holders, waits, kTimeoutMs);
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->session, 1u);
}

TEST(LockDeadlock, WaitsWithoutACycleAreNoDeadlock) {
  // Session 2 waits on both servers for session 1, which waits for nobody.
  std::vector<BackendHolder> holders{session(1, {{kS0, 100}, {kS1, 200}}),
                                     session(2, {{kS0, 101}, {kS1, 201}})};
  std::vector<LockWait> waits{wait(kS0, 101, {100}, 5000), wait(kS1, 201, {200}, 5000)};
  EXPECT_FALSE(findLockDeadlock(holders, waits, kTimeoutMs).has_value());
}

TEST(LockDeadlock, ACycleOnOneServerIsLeftToThatServer) {
  // Both waits on s0: Postgres's own deadlock detector breaks this one.
  std::vector<BackendHolder> holders{session(1, {{kS0, 100}, {kS1, 200}}),
                                     session(2, {{kS0, 101}, {kS1, 201}})};
  std::vector<LockWait> waits{wait(kS0, 100, {101}, 5000), wait(kS0, 101, {100}, 5000)};
  EXPECT_FALSE(findLockDeadlock(holders, waits, kTimeoutMs).has_value());
}

TEST(LockDeadlock, ACycleThroughABackendOfNoSessionOfOursIsFound) {
  // 200 (session 1) waits on s1 for 300, a backend of someone else, which waits for 201
  // (session 2); 101 (session 2) waits on s0 for 100 (session 1).
  std::vector<BackendHolder> holders{session(1, {{kS0, 100}, {kS1, 200}}),
                                     session(2, {{kS0, 101}, {kS1, 201}})};
  std::vector<LockWait> waits{wait(kS1, 200, {300}, 4000), wait(kS1, 300, {201}, 3500),
                              wait(kS0, 101, {100}, 2000)};
  auto found = findLockDeadlock(holders, waits, kTimeoutMs);
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->session, 2u);  // the backend of nobody's cannot be cancelled by us
  EXPECT_EQ(found->cycle.size(), 3u);
}

TEST(LockDeadlock, TwoDatabasesOfOneServerHideACycleToo) {
  // Shards 0 and 1 are two databases of one server: each session has a backend in each, and
  // the server sees two waits that do not meet (101 waits for 100, 200 for 201).
  std::vector<BackendHolder> holders{session(1, {{kS0, 100}, {kS0, 200}}),
                                     session(2, {{kS0, 101}, {kS0, 201}})};
  std::vector<LockWait> waits{wait(kS0, 200, {201}, 3000), wait(kS0, 101, {100}, 1500)};
  auto found = findLockDeadlock(holders, waits, kTimeoutMs);
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->session, 2u);
}

TEST(LockDeadlock, ACycleClosedByAnotherClientsBackendStillGetsAVictimOfOurs) {
  // 11 (session 1) waits on s1 for 21 (session 2); 20 (session 2) waits on s0 for 30, a backend
  // of no session of ours, which began waiting for 10 (session 1) only just now: its own check
  // cannot see the cycle, and the checks of ours came before it closed. The last of ours to
  // begin waiting is the victim.
  std::vector<BackendHolder> holders{session(1, {{kS0, 10}, {kS1, 11}}),
                                     session(2, {{kS0, 20}, {kS1, 21}})};
  std::vector<LockWait> waits{wait(kS1, 11, {21}, 5000), wait(kS0, 20, {30}, 4000),
                              wait(kS0, 30, {10}, 100)};
  auto found = findLockDeadlock(holders, waits, kTimeoutMs);
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->session, 2u);
  EXPECT_EQ(found->waiting, (BackendRef{kS0, 20}));
}

TEST(LockDeadlock, ThreeSessionsOverThreeServers) {
  std::vector<BackendHolder> holders{session(1, {{kS0, 10}, {kS1, 11}}),
                                     session(2, {{kS1, 20}, {kS2, 21}}),
                                     session(3, {{kS2, 30}, {kS0, 31}})};
  // 1 waits on s1 for 2; 2 waits on s2 for 3; 3 waits on s0 for 1.
  std::vector<LockWait> waits{wait(kS1, 11, {20}, 5000), wait(kS2, 21, {30}, 4000),
                              wait(kS0, 31, {10}, 2500)};
  auto found = findLockDeadlock(holders, waits, kTimeoutMs);
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->session, 3u);
  EXPECT_EQ(found->waiting, (BackendRef{kS0, 31}));
  EXPECT_EQ(found->cycle.size(), 3u);
}

TEST(LockDeadlock, SamePidsOnDifferentServersAreDifferentBackends) {
  // Pid 100 on s1 is not session 1's backend 100 on s0: no cycle.
  std::vector<BackendHolder> holders{session(1, {{kS0, 100}, {kS1, 200}}),
                                     session(2, {{kS0, 101}, {kS1, 201}})};
  std::vector<LockWait> waits{wait(kS1, 201, {100}, 5000), wait(kS0, 100, {101}, 5000)};
  EXPECT_FALSE(findLockDeadlock(holders, waits, kTimeoutMs).has_value());
}

}  // namespace
}  // namespace shardgate::backends
