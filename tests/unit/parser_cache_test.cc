// Tests for parser::ParseCache: hits share one parse, the LRU bound holds, long texts and errors
// are not cached; plus a printed (not asserted) measurement of what a hit costs.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "parser/parser.h"

namespace shardgate::parser {
namespace {

TEST(ParserCache, HitReturnsTheSameParse) {
  ParseCache cache;
  auto a = cache.get("SELECT * FROM t WHERE id = 1");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(cache.misses(), 1u);
  EXPECT_EQ(cache.hits(), 0u);
  // The key is the text, not its storage: a different buffer with the same bytes hits.
  std::string copy = "SELECT * FROM t WHERE id = 1";
  auto b = cache.get(copy);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(a->get(), b->get());
  EXPECT_EQ(cache.hits(), 1u);
  EXPECT_EQ(cache.size(), 1u);
  // Different text (even only in a constant) is a different entry.
  auto c = cache.get("SELECT * FROM t WHERE id = 2");
  ASSERT_TRUE(c.ok());
  EXPECT_NE(a->get(), c->get());
  EXPECT_EQ(cache.size(), 2u);
  EXPECT_EQ(cache.misses(), 2u);
}

TEST(ParserCache, EvictsLeastRecentlyUsedWithinTheBound) {
  ParseCache cache(3);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(cache.get("SELECT " + std::to_string(i)).ok());
  ASSERT_TRUE(cache.get("SELECT 0").ok());  // 0 is now the most recent; 1 is the oldest
  ASSERT_TRUE(cache.get("SELECT 3").ok());  // evicts 1
  EXPECT_EQ(cache.size(), 3u);
  uint64_t hits = cache.hits();
  ASSERT_TRUE(cache.get("SELECT 0").ok());
  ASSERT_TRUE(cache.get("SELECT 2").ok());
  ASSERT_TRUE(cache.get("SELECT 3").ok());
  EXPECT_EQ(cache.hits(), hits + 3);
  uint64_t misses = cache.misses();
  ASSERT_TRUE(cache.get("SELECT 1").ok());  // was evicted
  EXPECT_EQ(cache.misses(), misses + 1);

  for (int i = 0; i < 1000; ++i) ASSERT_TRUE(cache.get("SELECT " + std::to_string(i)).ok());
  EXPECT_EQ(cache.size(), 3u);
}

TEST(ParserCache, EvictedEntryStaysAliveWhileUsed) {
  ParseCache cache(1);
  auto kept = cache.get("SELECT 'kept'");
  ASSERT_TRUE(kept.ok());
  std::shared_ptr<const ParsedQuery> plan_ref = *kept;
  ASSERT_TRUE(cache.get("SELECT 'other'").ok());
  EXPECT_EQ(cache.size(), 1u);
  EXPECT_EQ(plan_ref->sql, "SELECT 'kept'");
  EXPECT_EQ(plan_ref->statementCount(), 1u);
}

TEST(ParserCache, LongTextsAndErrorsAreNotCached) {
  ParseCache cache(16, 64);
  std::string long_sql = "SELECT '" + std::string(100, 'x') + "'";
  ASSERT_TRUE(cache.get(long_sql).ok());
  ASSERT_TRUE(cache.get(long_sql).ok());
  EXPECT_EQ(cache.size(), 0u);
  EXPECT_EQ(cache.hits(), 0u);
  EXPECT_EQ(cache.misses(), 2u);

  auto bad = cache.get("SELEC 1");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().sqlstate, "42601");
  EXPECT_EQ(cache.size(), 0u);
  EXPECT_FALSE(cache.get("SELEC 1").ok());
  EXPECT_EQ(cache.hits(), 0u);
}

TEST(ParserCache, ZeroEntriesDisablesCaching) {
  ParseCache cache(0);
  ASSERT_TRUE(cache.get("SELECT 1").ok());
  ASSERT_TRUE(cache.get("SELECT 1").ok());
  EXPECT_EQ(cache.size(), 0u);
  EXPECT_EQ(cache.hits(), 0u);
}

TEST(ParserCache, ClearEmptiesTheCache) {
  ParseCache cache;
  ASSERT_TRUE(cache.get("SELECT 1").ok());
  cache.clear();
  EXPECT_EQ(cache.size(), 0u);
  ASSERT_TRUE(cache.get("SELECT 1").ok());
  EXPECT_EQ(cache.misses(), 2u);
}

// Prints the cost of a hit and of a miss; no timing assertion (machines differ).
TEST(ParserCache, MeasureHitCost) {
  const std::string sql =
      "SELECT id, name, email FROM users WHERE tenant_id = $1 AND status = 'active' ORDER BY "
      "created_at DESC LIMIT 50";
  ParseCache cache;
  ASSERT_TRUE(cache.get(sql).ok());
  constexpr int kHits = 200000;
  auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < kHits; ++i) {
    auto r = cache.get(sql);
    if (!r.ok()) FAIL();
  }
  double hit_ns =
      std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count() /
      kHits;
  constexpr int kParses = 2000;
  start = std::chrono::steady_clock::now();
  for (int i = 0; i < kParses; ++i) {
    auto r = parse(sql);
    if (!r.ok()) FAIL();
  }
  double parse_ns =
      std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count() /
      kParses;
  EXPECT_EQ(cache.hits(), static_cast<uint64_t>(kHits));
  std::printf("[ parse cache ] %zu-byte query: hit %.0f ns, uncached parse %.0f ns (%.0fx)\n",
              sql.size(), hit_ns, parse_ns, parse_ns / hit_ns);
}

}  // namespace
}  // namespace shardgate::parser
