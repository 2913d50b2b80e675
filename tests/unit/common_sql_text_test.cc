// The quick lexical helpers of common/sql_text.h and common/ascii.h that have no caller-side test
// of their own.
#include "common/sql_text.h"

#include "common/ascii.h"

#include <gtest/gtest.h>

namespace shardgate {
namespace {

TEST(SqlText, FirstKeywordSkipsSpaceAndComments) {
  EXPECT_TRUE(sqlStartsWithKeyword("SAVEPOINT s", "savepoint"));
  EXPECT_TRUE(sqlStartsWithKeyword("  \n\tSavePoint \"s\"", "savepoint"));
  EXPECT_TRUE(
      sqlStartsWithKeyword("/* a /* nested */ comment */ -- and a line\nsavepoint s", "savepoint"));
  EXPECT_TRUE(sqlStartsWithKeyword("savepoint", "savepoint"));
  EXPECT_TRUE(sqlStartsWithKeyword("savepoint;", "savepoint"));
  // A longer word, another statement, or a comment that never ends: no.
  EXPECT_FALSE(sqlStartsWithKeyword("savepoints", "savepoint"));
  EXPECT_FALSE(sqlStartsWithKeyword("savepoint$1", "savepoint"));
  EXPECT_FALSE(sqlStartsWithKeyword("SELECT 'savepoint'", "savepoint"));
  EXPECT_FALSE(sqlStartsWithKeyword("/* savepoint", "savepoint"));
  EXPECT_FALSE(sqlStartsWithKeyword("", "savepoint"));
  EXPECT_FALSE(sqlStartsWithKeyword("save", "savepoint"));
}

TEST(SqlText, ContainsIgnoreCaseFindsTheWordInAnyCaseAtAnyPlace) {
  // A word with a byte that is no letter ('_') is found through that byte.
  EXPECT_TRUE(containsIgnoreCase("SELECT shardgate.MOVE_KEY('t', 1, 0)", "move_key"));
  EXPECT_TRUE(containsIgnoreCase("move_key", "move_key"));
  EXPECT_TRUE(containsIgnoreCase("x_move_key_", "move_key"));
  EXPECT_FALSE(containsIgnoreCase("SELECT abalance FROM pgbench_accounts", "move_key"));
  EXPECT_FALSE(containsIgnoreCase("_key", "move_key"));     // too close to the start
  EXPECT_FALSE(containsIgnoreCase("move_ke", "move_key"));  // too close to the end
  EXPECT_FALSE(containsIgnoreCase("move_kex move-key", "move_key"));
  // A word of letters only: its last letter in either case.
  EXPECT_TRUE(containsIgnoreCase("LISTEN ch", "listen"));
  EXPECT_TRUE(containsIgnoreCase("a listen", "listen"));
  EXPECT_FALSE(containsIgnoreCase("listed", "listen"));
  EXPECT_FALSE(containsIgnoreCase("", "listen"));
}

}  // namespace
}  // namespace shardgate
