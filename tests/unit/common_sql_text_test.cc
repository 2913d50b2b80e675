// The quick lexical helpers of common/sql_text.h that have no caller-side test of their own.
#include "common/sql_text.h"

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

}  // namespace
}  // namespace shardgate
