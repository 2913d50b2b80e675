// Tests for parser/node_helpers.h on trees from real statements.
#include <gtest/gtest.h>

#include "parser/node_helpers.h"
#include "parser/parser.h"

namespace shardgate::parser {
namespace {

const pg_query::SelectStmt& select(const std::shared_ptr<const ParsedQuery>& q) {
  return q->statement(0).select_stmt();
}

std::shared_ptr<const ParsedQuery> mustParse(std::string_view sql) {
  auto r = parse(sql);
  EXPECT_TRUE(r.ok()) << sql;
  return r.ok() ? *r : nullptr;
}

TEST(ParserNodeHelpers, Names) {
  auto q = mustParse("SELECT t.*, s.t.c, pg_catalog.count(*) FROM db.s.t, \"Mixed Case\" AS m");
  ASSERT_TRUE(q);
  const auto& sel = select(q);
  EXPECT_EQ(dottedName(sel.target_list(0).res_target().val().column_ref().fields()), "t.*");
  EXPECT_EQ(dottedName(sel.target_list(1).res_target().val().column_ref().fields()), "s.t.c");
  const auto& count = sel.target_list(2).res_target().val().func_call();
  EXPECT_EQ(dottedName(count.funcname()), "pg_catalog.count");
  EXPECT_EQ(lastName(count.funcname()), "count");
  EXPECT_EQ(qualifiedName(sel.from_clause(0).range_var()), "db.s.t");
  EXPECT_EQ(qualifiedName(sel.from_clause(1).range_var()), "Mixed Case");
  EXPECT_EQ(lastName(sel.target_list(0).res_target().val().column_ref().fields()), std::nullopt);
  EXPECT_EQ(lastName(NodeList()), std::nullopt);

  pg_query::Node s;
  s.mutable_string()->set_sval("abc");
  EXPECT_EQ(stringValue(s), "abc");
  EXPECT_EQ(stringValue(pg_query::Node()), std::nullopt);
}

TEST(ParserNodeHelpers, NodeKindNames) {
  auto q = mustParse("SELECT a + 1 FROM t; INSERT INTO t VALUES (1); CREATE TABLE x (a int)");
  ASSERT_TRUE(q);
  EXPECT_STREQ(nodeKindName(q->statement(0)), "SelectStmt");
  EXPECT_STREQ(nodeKindName(q->statement(1)), "InsertStmt");
  EXPECT_STREQ(nodeKindName(q->statement(2)), "CreateStmt");
  EXPECT_STREQ(nodeKindName(select(q).target_list(0).res_target().val()), "A_Expr");
  EXPECT_STREQ(nodeKindName(select(q).from_clause(0)), "RangeVar");
  EXPECT_STREQ(nodeKindName(pg_query::Node()), "(empty)");
}

TEST(ParserNodeHelpers, Constants) {
  auto q = mustParse(
      "SELECT 42, -7, 9223372036854775807, 9223372036854775808, 1.5, 'txt', NULL, $3, "
      "-2147483648, 1e3");
  ASSERT_TRUE(q);
  const auto& t = select(q).target_list();
  auto val = [&](int i) -> const pg_query::Node& { return t[i].res_target().val(); };
  EXPECT_EQ(integerValue(val(0)), 42);
  EXPECT_EQ(integerValue(val(1)), -7);            // the grammar folds the minus into the constant
  EXPECT_EQ(integerValue(val(2)), INT64_MAX);     // beyond int32: a Float node holding digits
  EXPECT_EQ(integerValue(val(3)), std::nullopt);  // beyond int64
  EXPECT_EQ(integerValue(val(4)), std::nullopt);
  EXPECT_EQ(integerValue(val(5)), std::nullopt);
  EXPECT_EQ(stringConstant(val(5)), "txt");
  EXPECT_EQ(stringConstant(val(0)), std::nullopt);
  EXPECT_TRUE(isNullConstant(val(6)));
  EXPECT_FALSE(isNullConstant(val(0)));
  EXPECT_EQ(integerValue(val(6)), std::nullopt);
  EXPECT_EQ(stringConstant(val(6)), std::nullopt);
  EXPECT_EQ(paramNumber(val(7)), 3);
  EXPECT_EQ(paramNumber(val(0)), std::nullopt);
  EXPECT_EQ(integerValue(val(8)), INT32_MIN);
  EXPECT_EQ(integerValue(val(9)), std::nullopt);

  pg_query::Node i;
  i.mutable_integer()->set_ival(5);
  EXPECT_EQ(integerValue(i), 5);
}

}  // namespace
}  // namespace shardgate::parser
