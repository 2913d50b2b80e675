// Tests for parser::deparse / deparseStatement: round trips keep the query's meaning (same
// fingerprint), and edited trees come back as the edited SQL.
#include <gtest/gtest.h>

#include <string>

#include "parser/node_helpers.h"
#include "parser/parser.h"

namespace shardgate::parser {
namespace {

pg_query::ParseResult treeOf(std::string_view sql) {
  auto r = parse(sql);
  EXPECT_TRUE(r.ok()) << sql << ": " << (r.ok() ? "" : r.error().describe());
  return r.ok() ? (*r)->tree : pg_query::ParseResult();
}

TEST(ParserDeparse, RoundTripKeepsFingerprint) {
  const char* queries[] = {
      "SELECT a, b FROM t WHERE a = 1 AND b IN ('x', 'y') ORDER BY a DESC NULLS LAST LIMIT 5",
      "SELECT o.id, count(*) FILTER (WHERE o.total > 10) FROM orders o LEFT JOIN items i ON "
      "i.order_id = o.id GROUP BY o.id HAVING count(*) > 1",
      "WITH r AS (SELECT * FROM t WHERE x > $1) SELECT DISTINCT ON (a) a, b FROM r",
      "SELECT sum(v) OVER (PARTITION BY k ORDER BY ts ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) "
      "FROM m",
      "SELECT 1 UNION ALL SELECT 2 EXCEPT SELECT 3",
      "INSERT INTO t (a, b) VALUES (1, 'x'), (2, 'y') ON CONFLICT (a) DO UPDATE SET b = "
      "excluded.b RETURNING *",
      "UPDATE t SET a = a + 1, b = DEFAULT FROM u WHERE t.id = u.id",
      "DELETE FROM t USING u WHERE t.id = u.id RETURNING t.id",
      "CREATE TABLE s.t (id bigint PRIMARY KEY, v text NOT NULL DEFAULT 'x', CHECK (id > 0))",
      "ALTER TABLE t ADD COLUMN c int",
      "SELECT CASE WHEN a IS NULL THEN 'n' ELSE a::text END, ARRAY[1, 2], (SELECT max(x) FROM u) "
      "FROM t WHERE EXISTS (SELECT 1 FROM v WHERE v.id = t.id) FOR UPDATE SKIP LOCKED",
      "BEGIN ISOLATION LEVEL REPEATABLE READ",
      "SET search_path TO a, public",
      "COPY t (a, b) FROM STDIN",
  };
  for (const char* sql : queries) {
    pg_query::ParseResult tree = treeOf(sql);
    auto text = deparse(tree);
    ASSERT_TRUE(text.ok()) << sql << ": " << text.error().describe();
    auto again = treeOf(*text);
    ASSERT_EQ(again.stmts_size(), tree.stmts_size()) << *text;
    auto before = fingerprint(sql);
    auto after = fingerprint(*text);
    ASSERT_TRUE(before.ok());
    ASSERT_TRUE(after.ok()) << *text;
    EXPECT_EQ(*before, *after) << sql << "\n  deparsed: " << *text;
  }
}

TEST(ParserDeparse, ExactTextOfSimpleStatements) {
  auto text = deparse(treeOf("select  a,b from T where X=1 limit 10"));
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(*text, "SELECT a, b FROM t WHERE x = 1 LIMIT 10");
  auto multi = deparse(treeOf("SELECT 1; SELECT 2"));
  ASSERT_TRUE(multi.ok());
  EXPECT_EQ(*multi, "SELECT 1; SELECT 2");
  auto empty = deparse(pg_query::ParseResult());
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(*empty, "");
}

TEST(ParserDeparse, EditedLimitConstant) {
  pg_query::ParseResult tree = treeOf("SELECT id FROM t ORDER BY id LIMIT 10 OFFSET 20");
  pg_query::SelectStmt* sel = tree.mutable_stmts(0)->mutable_stmt()->mutable_select_stmt();
  // What the planner does to push LIMIT down to shards: count + offset, no offset.
  sel->mutable_limit_count()->mutable_a_const()->mutable_ival()->set_ival(30);
  sel->clear_limit_offset();
  auto text = deparse(tree);
  ASSERT_TRUE(text.ok()) << text.error().describe();
  EXPECT_EQ(*text, "SELECT id FROM t ORDER BY id LIMIT 30");
}

TEST(ParserDeparse, EditedTableAndAddedWhere) {
  pg_query::ParseResult tree = treeOf("SELECT * FROM users");
  pg_query::SelectStmt* sel = tree.mutable_stmts(0)->mutable_stmt()->mutable_select_stmt();
  pg_query::RangeVar* rv = sel->mutable_from_clause(0)->mutable_range_var();
  rv->set_schemaname("shard_3");
  rv->set_relname("Users");  // needs quoting on the way out
  // WHERE tenant = 'o''brien': a string constant, quoted by the deparser rather than by us.
  pg_query::A_Expr* eq = sel->mutable_where_clause()->mutable_a_expr();
  eq->set_kind(pg_query::AEXPR_OP);
  eq->add_name()->mutable_string()->set_sval("=");
  eq->mutable_lexpr()->mutable_column_ref()->add_fields()->mutable_string()->set_sval("tenant");
  eq->mutable_rexpr()->mutable_a_const()->mutable_sval()->set_sval("o'brien");
  auto text = deparse(tree);
  ASSERT_TRUE(text.ok()) << text.error().describe();
  EXPECT_EQ(*text, "SELECT * FROM shard_3.\"Users\" WHERE tenant = 'o''brien'");
}

TEST(ParserDeparse, SingleStatement) {
  auto q = parse("SELECT 1; UPDATE t SET a = 2 WHERE id = 3; SELECT 4");
  ASSERT_TRUE(q.ok());
  auto text = deparseStatement((*q)->statement(1));
  ASSERT_TRUE(text.ok()) << text.error().describe();
  EXPECT_EQ(*text, "UPDATE t SET a = 2 WHERE id = 3");
}

TEST(ParserDeparse, BrokenTreesAreErrorsNotCrashes) {
  auto unset = deparseStatement(pg_query::Node());
  ASSERT_FALSE(unset.ok());
  EXPECT_EQ(unset.error().sqlstate, "XX000");

  pg_query::ParseResult no_stmt;
  no_stmt.add_stmts();
  EXPECT_FALSE(deparse(no_stmt).ok());

  // libpg_query's own checks come back as errors.
  pg_query::ParseResult no_value = treeOf("SELECT a, b FROM t");
  no_value.mutable_stmts(0)
      ->mutable_stmt()
      ->mutable_select_stmt()
      ->mutable_target_list(0)
      ->mutable_res_target()
      ->clear_val();
  auto r = deparse(no_value);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().sqlstate, "XX000");
  EXPECT_NE(r.error().message.find("ResTarget without val"), std::string::npos);
}

TEST(ParserDeparse, EmptyNodesThatPostgresItselfProduces) {
  // DISTINCT is a one-element list holding NULL, i.e. an empty Node in the protobuf tree.
  pg_query::ParseResult tree = treeOf("SELECT DISTINCT a FROM t");
  ASSERT_EQ(tree.stmts(0).stmt().select_stmt().distinct_clause_size(), 1);
  EXPECT_EQ(tree.stmts(0).stmt().select_stmt().distinct_clause(0).node_case(),
            pg_query::Node::NODE_NOT_SET);
  auto text = deparse(tree);
  ASSERT_TRUE(text.ok()) << text.error().describe();
  EXPECT_EQ(*text, "SELECT DISTINCT a FROM t");
  // A singular Node that is present but empty reads as absent.
  pg_query::ParseResult where = treeOf("SELECT 1 WHERE true");
  where.mutable_stmts(0)->mutable_stmt()->mutable_select_stmt()->mutable_where_clause()->Clear();
  auto no_where = deparse(where);
  ASSERT_TRUE(no_where.ok());
  EXPECT_EQ(*no_where, "SELECT 1");
}

}  // namespace
}  // namespace shardgate::parser
