// Tests for parser::fingerprint: equal for queries that differ only in constants and layout,
// different for different shapes.
#include <gtest/gtest.h>

#include "parser/parser.h"

namespace shardgate::parser {
namespace {

uint64_t fp(std::string_view sql) {
  auto r = fingerprint(sql);
  EXPECT_TRUE(r.ok()) << sql << ": " << (r.ok() ? "" : r.error().describe());
  return r.ok() ? *r : 0;
}

TEST(ParserFingerprint, SameForDifferentConstantsAndLayout) {
  uint64_t base = fp("SELECT * FROM users WHERE id = 1 AND name = 'a'");
  EXPECT_NE(base, 0u);
  EXPECT_EQ(base, fp("SELECT * FROM users WHERE id = 42 AND name = 'zzz'"));
  EXPECT_EQ(base, fp("select *\n  from USERS   where id = 7 and name = 'b' -- comment"));
  EXPECT_EQ(base, fp("SELECT * FROM users WHERE id = $1 AND name = $2"));
  EXPECT_EQ(fp("SELECT 1 LIMIT 10"), fp("SELECT 2 LIMIT 20"));
}

// What libpg_query deliberately ignores; documented in parser.h because it makes the fingerprint
// unfit as a plan-cache key.
TEST(ParserFingerprint, IgnoresInListLengthAliasesAndSelectListOrder) {
  EXPECT_EQ(fp("SELECT * FROM t WHERE id IN (1, 2)"), fp("SELECT * FROM t WHERE id IN (1, 2, 3)"));
  EXPECT_EQ(fp("SELECT * FROM t WHERE id IN (1, 2)"), fp("SELECT * FROM t WHERE id IN ($1, $2)"));
  EXPECT_EQ(fp("SELECT a AS x FROM t"), fp("SELECT a AS y FROM t"));
  EXPECT_EQ(fp("SELECT a, b FROM t"), fp("SELECT b, a FROM t"));
}

TEST(ParserFingerprint, DifferentForDifferentShapes) {
  uint64_t base = fp("SELECT * FROM users WHERE id = 1");
  EXPECT_NE(base, fp("SELECT * FROM users WHERE id > 1"));
  EXPECT_NE(base, fp("SELECT * FROM accounts WHERE id = 1"));
  EXPECT_NE(base, fp("SELECT id FROM users WHERE id = 1"));
  EXPECT_NE(base, fp("SELECT * FROM users WHERE uid = 1"));
  EXPECT_NE(base, fp("DELETE FROM users WHERE id = 1"));
  EXPECT_NE(base, fp("SELECT * FROM users WHERE id = 1 LIMIT 1"));
}

TEST(ParserFingerprint, ErrorsAsForParse) {
  auto r = fingerprint("SELEC 1");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().sqlstate, "42601");
  EXPECT_EQ(r.error().detail, "at character 1");
  auto nul = fingerprint(std::string_view("SELECT 1\0", 9));
  ASSERT_FALSE(nul.ok());
  EXPECT_EQ(nul.error().sqlstate, "22021");
}

TEST(ParserFingerprint, DeterministicAndMultiStatement) {
  EXPECT_EQ(fp("SELECT 1; SELECT 2"), fp("SELECT 1; SELECT 2"));
  EXPECT_NE(fp("SELECT 1; SELECT 2"), fp("SELECT 1"));
}

}  // namespace
}  // namespace shardgate::parser
