// Unit tests of LiteralTemplate: which texts share a template, literal kinds and values, and the
// texts it refuses (so that they are parsed and cached by their exact bytes).
#include "planner/literal_template.h"

#include <gtest/gtest.h>

#include <string>

namespace shardgate::planner {
namespace {

std::string keyOf(std::string_view sql) {
  LiteralTemplate t;
  EXPECT_TRUE(t.scan(sql)) << sql;
  return t.key();
}

bool scans(std::string_view sql) {
  LiteralTemplate t;
  return t.scan(sql);
}

TEST(LiteralTemplate, ReplacesNumbersAndStrings) {
  LiteralTemplate t;
  ASSERT_TRUE(t.scan("SELECT abalance FROM pgbench_accounts WHERE aid = 4711;"));
  EXPECT_EQ(t.key(), "SELECT abalance FROM pgbench_accounts WHERE aid = \x01I;");
  ASSERT_EQ(t.size(), 1u);
  EXPECT_EQ(t.rawText(0), "4711");
  EXPECT_EQ(t.literals()[0].kind, LiteralKind::kInteger);

  ASSERT_TRUE(t.scan("SELECT * FROM t WHERE a = 'it''s' AND b = 1.5 AND c = 1e3"));
  ASSERT_EQ(t.size(), 3u);
  EXPECT_EQ(t.value(0), "it's");
  EXPECT_EQ(t.rawText(0), "'it''s'");
  EXPECT_EQ(t.literals()[0].kind, LiteralKind::kString);
  EXPECT_EQ(t.value(1), "1.5");
  EXPECT_EQ(t.literals()[1].kind, LiteralKind::kNumeric);
  EXPECT_EQ(t.literals()[2].kind, LiteralKind::kNumeric);
}

TEST(LiteralTemplate, StatementsDifferingOnlyInLiteralsShareATemplate) {
  EXPECT_EQ(keyOf("SELECT * FROM users WHERE id = 1"), keyOf("SELECT * FROM users WHERE id = 42"));
  EXPECT_EQ(keyOf("SELECT * FROM t WHERE s = 'a'"), keyOf("SELECT * FROM t WHERE s = 'b''c'"));
  // Whitespace and comments do not matter; token boundaries do.
  EXPECT_EQ(keyOf("SELECT  *\n FROM t -- note\n WHERE a = 1"),
            keyOf("SELECT * /* x */ FROM t WHERE a = 2"));
  EXPECT_NE(keyOf("SELECT a-1"), keyOf("SELECT a - 1"));
  EXPECT_NE(keyOf("SELECT * FROM users WHERE id = 1"), keyOf("SELECT * FROM Users WHERE id = 1"));
}

TEST(LiteralTemplate, KeepsTheTokenClassTheGrammarSees) {
  // ICONST vs FCONST: an integer past int32 is an FCONST to Postgres's grammar.
  EXPECT_NE(keyOf("SELECT 2147483647"), keyOf("SELECT 2147483648"));
  EXPECT_EQ(keyOf("SELECT 2147483648"), keyOf("SELECT 1.5"));
  EXPECT_EQ(keyOf("SELECT 0002147483647"), keyOf("SELECT 7"));
  EXPECT_NE(keyOf("SELECT 1"), keyOf("SELECT '1'"));
}

TEST(LiteralTemplate, TypeModifiersStayVerbatim) {
  // float(p) picks float4 or float8 by value in the grammar itself.
  LiteralTemplate t;
  ASSERT_TRUE(t.scan("SELECT 1::float(10), 2::numeric(10, 2), 'x'::varchar(5) WHERE a = 3"));
  EXPECT_NE(t.key().find("float(10)"), std::string::npos) << t.key();
  EXPECT_NE(t.key().find("numeric(10, 2)"), std::string::npos) << t.key();
  EXPECT_NE(t.key().find("varchar(5)"), std::string::npos) << t.key();
  EXPECT_EQ(t.size(), 4u);  // 1, 2, 'x', 3
  EXPECT_NE(keyOf("SELECT 1::float(10)"), keyOf("SELECT 1::float(30)"));
  // A function call's arguments are ordinary literals.
  EXPECT_EQ(keyOf("SELECT substr(a, 1, 2)"), keyOf("SELECT substr(a, 3, 4)"));
}

TEST(LiteralTemplate, RefusesWhatItCannotTokeniseExactly) {
  EXPECT_FALSE(scans("SELECT E'a\\nb'"));
  EXPECT_FALSE(scans("SELECT e'x'"));
  EXPECT_FALSE(scans("SELECT B'101'"));
  EXPECT_FALSE(scans("SELECT X'ff'"));
  EXPECT_FALSE(scans("SELECT N'x'"));
  EXPECT_FALSE(scans("SELECT U&'d\\0061t'"));
  EXPECT_FALSE(scans("SELECT U&\"d\\0061t\""));
  EXPECT_FALSE(scans("SELECT $$x$$"));
  EXPECT_FALSE(scans("SELECT $tag$x$tag$"));
  EXPECT_FALSE(scans("SELECT 'a'\n'b'"));  // one literal 'ab' to Postgres
  EXPECT_FALSE(scans("SELECT 'a' -- c\n 'b'"));
  EXPECT_FALSE(scans("SELECT 'unterminated"));
  EXPECT_FALSE(scans("SELECT \"unterminated"));
  EXPECT_FALSE(scans("SELECT \"\""));
  EXPECT_FALSE(scans("SELECT /* unterminated"));
  EXPECT_FALSE(scans("SELECT 123abc"));  // trailing junk
  EXPECT_FALSE(scans("SELECT 1.2.3"));
  EXPECT_FALSE(scans("SELECT 1..2"));
  EXPECT_FALSE(scans("SELECT 1e"));
  EXPECT_FALSE(scans("SELECT $1abc"));
  EXPECT_FALSE(scans(std::string_view("SELECT '\0'", 11)));
  EXPECT_FALSE(scans("SELECT '\xff'"));          // invalid UTF-8
  EXPECT_FALSE(scans("SELECT '\xed\xa0\x80'"));  // a surrogate
  EXPECT_FALSE(scans("SELECT {"));
  EXPECT_FALSE(scans("SELECT 1\v"));
  EXPECT_TRUE(
      scans("SELECT 'z\xc3\xbcrich', \"Quoted\"\"Name\", $1, a::text[] /* /* nested */ */"));
  EXPECT_TRUE(scans(""));
}

TEST(LiteralTemplate, PrefixKeepsDatabasesApart) {
  LiteralTemplate a;
  LiteralTemplate b;
  ASSERT_TRUE(a.scan("SELECT 1", std::string_view("Tapp\0", 5)));
  ASSERT_TRUE(b.scan("SELECT 1", std::string_view("Tother\0", 7)));
  EXPECT_NE(a.key(), b.key());
}

TEST(LiteralTemplate, MapsFoldedMinusSignsToTheLiteral) {
  LiteralTemplate t;
  const std::string sql = "SELECT 1 WHERE a = - -3 AND b = -/* c */7 AND c = 5 - 2";
  ASSERT_TRUE(t.scan(sql));
  int negations = 0;
  const size_t minus = sql.find("- -3");
  std::optional<size_t> idx = t.literalForConstant(minus, negations);
  ASSERT_TRUE(idx.has_value());
  EXPECT_EQ(t.rawText(*idx), "3");
  EXPECT_EQ(negations, 2);
  idx = t.literalForConstant(sql.find("-/*"), negations);
  ASSERT_TRUE(idx.has_value());
  EXPECT_EQ(t.rawText(*idx), "7");
  EXPECT_EQ(negations, 1);
  idx = t.literalForConstant(sql.find("5 - 2"), negations);
  ASSERT_TRUE(idx.has_value());
  EXPECT_EQ(negations, 0);
  // A location that is not a literal (a keyword) maps to nothing.
  EXPECT_FALSE(t.literalForConstant(sql.find("WHERE"), negations).has_value());
}

TEST(LiteralTemplate, ValueViewAvoidsCopiesUnlessUnescaping) {
  LiteralTemplate t;
  ASSERT_TRUE(t.scan("SELECT 'plain', 'it''s'"));
  std::string scratch;
  const std::string_view plain = t.valueView(0, scratch);
  EXPECT_EQ(plain, "plain");
  EXPECT_GE(plain.data(), t.sql().data());
  EXPECT_LT(plain.data(), t.sql().data() + t.sql().size());
  EXPECT_EQ(t.valueView(1, scratch), "it's");
}

TEST(LiteralTemplate, Utf8Validation) {
  EXPECT_TRUE(isValidUtf8Text("abc \xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"));
  EXPECT_FALSE(isValidUtf8Text("\xc0\xaf"));          // overlong
  EXPECT_FALSE(isValidUtf8Text("\xe0\x80\xaf"));      // overlong
  EXPECT_FALSE(isValidUtf8Text("\xf4\x90\x80\x80"));  // past U+10FFFF
  EXPECT_FALSE(isValidUtf8Text("\xe2\x82"));          // truncated
  // Long ASCII runs (checked eight bytes at a time) with a bad byte at every position.
  const std::string ascii = "SELECT abalance FROM pgbench_accounts WHERE aid = 42";
  EXPECT_TRUE(isValidUtf8Text(ascii));
  for (size_t at = 0; at < ascii.size(); ++at) {
    for (const char bad : {'\0', '\xff', '\x80'}) {
      std::string s = ascii;
      s[at] = bad;
      EXPECT_FALSE(isValidUtf8Text(s)) << "byte " << static_cast<int>(bad) << " at " << at;
    }
    std::string two = ascii;
    two.replace(at, 1, "\xc3\xa9");  // a valid two-byte character anywhere
    EXPECT_TRUE(isValidUtf8Text(two)) << at;
  }
}

}  // namespace
}  // namespace shardgate::planner
