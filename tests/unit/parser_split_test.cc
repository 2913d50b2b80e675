// Tests for parser::splitStatements: statement boundaries found by Postgres's grammar, so ';'
// inside literals, comments, dollar quotes and rule bodies does not split.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "parser/parser.h"

namespace shardgate::parser {
namespace {

std::vector<std::string> split(std::string_view sql) {
  auto r = splitStatements(sql);
  EXPECT_TRUE(r.ok()) << sql << ": " << (r.ok() ? "" : r.error().describe());
  if (!r.ok()) return {};
  return std::vector<std::string>(r->begin(), r->end());
}

TEST(ParserSplit, SimpleStatements) {
  EXPECT_EQ(split("SELECT 1"), (std::vector<std::string>{"SELECT 1"}));
  EXPECT_EQ(split("SELECT 1;"), (std::vector<std::string>{"SELECT 1"}));
  EXPECT_EQ(split("BEGIN; UPDATE t SET a = 1; COMMIT;"),
            (std::vector<std::string>{"BEGIN", " UPDATE t SET a = 1", " COMMIT"}));
}

TEST(ParserSplit, EmptyInputsAndEmptyStatements) {
  EXPECT_TRUE(split("").empty());
  EXPECT_TRUE(split("   \n").empty());
  EXPECT_TRUE(split(";;;").empty());
  EXPECT_EQ(split(";; SELECT 1 ;;"), (std::vector<std::string>{" SELECT 1 "}));
  EXPECT_EQ(split("SELECT 1; -- trailing comment"), (std::vector<std::string>{"SELECT 1"}));
}

TEST(ParserSplit, SemicolonsInStringsAndIdentifiers) {
  EXPECT_EQ(
      split("SELECT 'a;b'; SELECT E'c\\';d'; SELECT \"x;y\" FROM t"),
      (std::vector<std::string>{"SELECT 'a;b'", " SELECT E'c\\';d'", " SELECT \"x;y\" FROM t"}));
  EXPECT_EQ(split("SELECT 'it''s; fine'; SELECT 2"),
            (std::vector<std::string>{"SELECT 'it''s; fine'", " SELECT 2"}));
}

TEST(ParserSplit, SemicolonsInComments) {
  EXPECT_EQ(split("SELECT 1 /* a; /* nested; */ b; */ + 1; SELECT 2 -- c; d\n; SELECT 3"),
            (std::vector<std::string>{"SELECT 1 /* a; /* nested; */ b; */ + 1",
                                      " SELECT 2 -- c; d\n", " SELECT 3"}));
}

TEST(ParserSplit, DollarQuotedBodies) {
  std::string fn =
      "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $body$ BEGIN PERFORM 1; RETURN 2; END "
      "$body$";
  std::string do_block = "DO $$ BEGIN RAISE NOTICE 'x;'; END $$";
  auto parts = split(fn + "; " + do_block + "; SELECT $q$;$q$");
  ASSERT_EQ(parts.size(), 3u);
  EXPECT_EQ(parts[0], fn);
  EXPECT_EQ(parts[1], " " + do_block);
  EXPECT_EQ(parts[2], " SELECT $q$;$q$");
}

TEST(ParserSplit, RuleBodiesWithSeveralActionsStayWhole) {
  std::string rule =
      "CREATE RULE r AS ON INSERT TO t DO ALSO (INSERT INTO a VALUES (1); INSERT INTO b VALUES "
      "(2))";
  EXPECT_EQ(split(rule + "; SELECT 1"), (std::vector<std::string>{rule, " SELECT 1"}));
}

TEST(ParserSplit, ViewsPointIntoTheInput) {
  std::string sql = "SELECT 1; SELECT 2";
  auto r = splitStatements(sql);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->size(), 2u);
  EXPECT_EQ((*r)[1].data(), sql.data() + 9);
  EXPECT_EQ((*r)[1].size(), sql.size() - 9);
}

TEST(ParserSplit, AgreesWithParsedStatementText) {
  std::string sql = "SET x = 1;  /* c */ SELECT 'a;' ; INSERT INTO t VALUES ($$;$$)  ";
  auto parts = splitStatements(sql);
  auto parsed = parse(sql);
  ASSERT_TRUE(parts.ok());
  ASSERT_TRUE(parsed.ok());
  ASSERT_EQ(parts->size(), (*parsed)->statementCount());
  for (size_t i = 0; i < parts->size(); ++i) EXPECT_EQ((*parts)[i], (*parsed)->statementText(i));
}

TEST(ParserSplit, ErrorsAreSyntaxErrors) {
  auto r = splitStatements("SELECT 1; SELEC 2");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().sqlstate, "42601");
  EXPECT_EQ(r.error().detail, "at character 11");
  auto nul = splitStatements(std::string_view("SELECT 1;\0SELECT 2", 18));
  ASSERT_FALSE(nul.ok());
  EXPECT_EQ(nul.error().sqlstate, "22021");
}

TEST(ParserSplit, ManyStatements) {
  std::string sql;
  for (int i = 0; i < 5000; ++i) sql += "INSERT INTO t VALUES (" + std::to_string(i) + ");";
  auto r = splitStatements(sql);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->size(), 5000u);
  EXPECT_EQ((*r)[4999], "INSERT INTO t VALUES (4999)");
}

}  // namespace
}  // namespace shardgate::parser
