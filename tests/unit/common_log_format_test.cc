// Tests of the key=value -> JSON log line conversion (log_format = "json").
#include "common/log_format.h"

#include <gtest/gtest.h>

#include <string>

namespace shardgate {
namespace {

std::string members(std::string_view message) {
  std::string out;
  appendEventAsJsonMembers(out, message);
  return out;
}

TEST(LogFormat, KeyValuePairsBecomeMembers) {
  EXPECT_EQ(members("event=listening address=127.0.0.1 port=6432 workers=2"),
            R"("event":"listening","address":"127.0.0.1","port":6432,"workers":2)");
}

TEST(LogFormat, QuotedValuesMayContainSpacesAndQuotes) {
  EXPECT_EQ(members(R"(event=client_error session=3 error="42P01: relation "t" does not exist")"),
            R"("event":"client_error","session":3,"error":"42P01: relation \"t\" does not exist")");
  EXPECT_EQ(members(R"(event=x a="one two" b=3)"), R"("event":"x","a":"one two","b":3)");
}

TEST(LogFormat, LeadingZerosAndLongNumbersStayStrings) {
  EXPECT_EQ(members("event=x pid=0123 big=12345678901234567890"),
            R"("event":"x","pid":"0123","big":"12345678901234567890")");
}

TEST(LogFormat, FreeTextBecomesMsg) {
  EXPECT_EQ(members("hello world"), R"("msg":"hello world")");
  EXPECT_EQ(members(R"(event=x error="unterminated)"), R"("msg":"event=x error=\"unterminated")");
}

TEST(LogFormat, EscapesControlCharactersAndBadUtf8) {
  std::string out;
  appendJsonEscaped(out, std::string("a\nb\x01\\\xff", 6));
  EXPECT_EQ(out, "a\\nb\\u0001\\\\\xef\xbf\xbd");
  out.clear();
  appendJsonEscaped(out, "caf\xc3\xa9");
  EXPECT_EQ(out, "caf\xc3\xa9");
}

}  // namespace
}  // namespace shardgate
