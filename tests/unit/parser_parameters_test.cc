// Tests for parser::highestParameterNumber: $n tokens as Postgres's scanner reads them, so a "$n"
// inside a string, a quoted name, a comment or a dollar quote is not a parameter.
#include <gtest/gtest.h>

#include "parser/parser.h"

namespace shardgate::parser {
namespace {

TEST(ParserParameters, HighestNumberOfTheParameterTokens) {
  EXPECT_EQ(highestParameterNumber("SELECT 1"), 0);
  EXPECT_EQ(highestParameterNumber("SELECT $1"), 1);
  EXPECT_EQ(highestParameterNumber("SELECT $2 + $10, $3"), 10);
  EXPECT_EQ(highestParameterNumber("UPDATE t SET a = $2 WHERE id = $1"), 2);
}

TEST(ParserParameters, DollarsThatAreNotParameters) {
  EXPECT_EQ(highestParameterNumber("SELECT '$3', \"$4\", E'$5' /* $6 */ -- $7\n, $1"), 1);
  EXPECT_EQ(highestParameterNumber("SELECT $$ $9 $$, $tag$ $8 $tag$"), 0);
}

TEST(ParserParameters, TextThatDoesNotScan) {
  EXPECT_EQ(highestParameterNumber("SELECT 'unterminated $1"), 0);
}

}  // namespace
}  // namespace shardgate::parser
