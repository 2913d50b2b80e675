// Tests for parser::parse: the tree libpg_query builds for common statements, statement ranges, and
// errors (syntax, encoding, garbage) that must come back as values with Postgres's wording.
#include <gtest/gtest.h>

#include <random>
#include <string>

#include "parser/node_helpers.h"
#include "parser/parser.h"

namespace shardgate::parser {
namespace {

std::shared_ptr<const ParsedQuery> mustParse(std::string_view sql) {
  auto r = parse(sql);
  EXPECT_TRUE(r.ok()) << sql << ": " << (r.ok() ? "" : r.error().describe());
  return r.ok() ? *r : nullptr;
}

const pg_query::Node& onlyStatement(const std::shared_ptr<const ParsedQuery>& q) {
  EXPECT_EQ(q->statementCount(), 1u);
  return q->statement(0);
}

TEST(ParserParse, SelectFromWhere) {
  auto q = mustParse("SELECT id, name FROM public.users u WHERE id = 42");
  ASSERT_TRUE(q);
  const pg_query::Node& stmt = onlyStatement(q);
  ASSERT_TRUE(stmt.has_select_stmt()) << nodeKindName(stmt);
  const pg_query::SelectStmt& sel = stmt.select_stmt();
  ASSERT_EQ(sel.target_list_size(), 2);
  EXPECT_EQ(sel.target_list(1).res_target().val().column_ref().fields(0).string().sval(), "name");
  ASSERT_EQ(sel.from_clause_size(), 1);
  const pg_query::RangeVar& rv = sel.from_clause(0).range_var();
  EXPECT_EQ(rv.schemaname(), "public");
  EXPECT_EQ(rv.relname(), "users");
  EXPECT_EQ(rv.alias().aliasname(), "u");
  EXPECT_EQ(qualifiedName(rv), "public.users");

  ASSERT_TRUE(sel.where_clause().has_a_expr());
  const pg_query::A_Expr& where = sel.where_clause().a_expr();
  EXPECT_EQ(where.kind(), pg_query::AEXPR_OP);
  EXPECT_EQ(lastName(where.name()), "=");
  EXPECT_EQ(dottedName(where.lexpr().column_ref().fields()), "id");
  EXPECT_EQ(integerValue(where.rexpr()), 42);
  EXPECT_FALSE(sel.has_limit_count());
}

TEST(ParserParse, SelectWithJoinOrderLimitAggregates) {
  auto q = mustParse(
      "SELECT o.customer_id, count(*), sum(o.total) FROM orders o JOIN customers c "
      "ON c.id = o.customer_id GROUP BY 1 ORDER BY 3 DESC LIMIT 10 OFFSET 5");
  ASSERT_TRUE(q);
  const pg_query::SelectStmt& sel = onlyStatement(q).select_stmt();
  ASSERT_TRUE(sel.from_clause(0).has_join_expr());
  EXPECT_EQ(sel.from_clause(0).join_expr().larg().range_var().relname(), "orders");
  EXPECT_EQ(sel.from_clause(0).join_expr().rarg().range_var().relname(), "customers");
  const pg_query::FuncCall& count = sel.target_list(1).res_target().val().func_call();
  EXPECT_EQ(dottedName(count.funcname()), "count");
  EXPECT_TRUE(count.agg_star());
  EXPECT_EQ(sel.group_clause_size(), 1);
  ASSERT_EQ(sel.sort_clause_size(), 1);
  EXPECT_EQ(sel.sort_clause(0).sort_by().sortby_dir(), pg_query::SORTBY_DESC);
  EXPECT_EQ(integerValue(sel.limit_count()), 10);
  EXPECT_EQ(integerValue(sel.limit_offset()), 5);
}

TEST(ParserParse, InsertValuesReturning) {
  auto q = mustParse("INSERT INTO t (a, b) VALUES (1, 'x'), (2, NULL) RETURNING a");
  ASSERT_TRUE(q);
  const pg_query::Node& stmt = onlyStatement(q);
  ASSERT_TRUE(stmt.has_insert_stmt()) << nodeKindName(stmt);
  const pg_query::InsertStmt& ins = stmt.insert_stmt();
  EXPECT_EQ(ins.relation().relname(), "t");
  ASSERT_EQ(ins.cols_size(), 2);
  EXPECT_EQ(ins.cols(1).res_target().name(), "b");
  const pg_query::SelectStmt& values = ins.select_stmt().select_stmt();
  ASSERT_EQ(values.values_lists_size(), 2);
  const auto& row0 = values.values_lists(0).list().items();
  EXPECT_EQ(integerValue(row0[0]), 1);
  EXPECT_EQ(stringConstant(row0[1]), "x");
  EXPECT_TRUE(isNullConstant(values.values_lists(1).list().items(1)));
  EXPECT_EQ(ins.returning_list_size(), 1);
}

TEST(ParserParse, UpdateWithParam) {
  auto q = mustParse("UPDATE accounts SET balance = balance - $2 WHERE id = $1");
  ASSERT_TRUE(q);
  const pg_query::UpdateStmt& up = onlyStatement(q).update_stmt();
  EXPECT_EQ(up.relation().relname(), "accounts");
  ASSERT_EQ(up.target_list_size(), 1);
  EXPECT_EQ(up.target_list(0).res_target().name(), "balance");
  EXPECT_EQ(paramNumber(up.target_list(0).res_target().val().a_expr().rexpr()), 2);
  EXPECT_EQ(paramNumber(up.where_clause().a_expr().rexpr()), 1);
}

TEST(ParserParse, DeleteWithInList) {
  auto q = mustParse("DELETE FROM app.sessions WHERE id IN (1, 2, 3)");
  ASSERT_TRUE(q);
  const pg_query::DeleteStmt& del = onlyStatement(q).delete_stmt();
  EXPECT_EQ(qualifiedName(del.relation()), "app.sessions");
  const pg_query::A_Expr& in = del.where_clause().a_expr();
  EXPECT_EQ(in.kind(), pg_query::AEXPR_IN);
  ASSERT_TRUE(in.rexpr().has_list());
  EXPECT_EQ(in.rexpr().list().items_size(), 3);
  EXPECT_EQ(integerValue(in.rexpr().list().items(2)), 3);
}

TEST(ParserParse, DdlStatements) {
  auto create = mustParse("CREATE TABLE s.t (id bigint PRIMARY KEY, v text NOT NULL)");
  ASSERT_TRUE(create);
  const pg_query::CreateStmt& ct = onlyStatement(create).create_stmt();
  EXPECT_EQ(qualifiedName(ct.relation()), "s.t");
  ASSERT_EQ(ct.table_elts_size(), 2);
  EXPECT_EQ(ct.table_elts(0).column_def().colname(), "id");
  EXPECT_EQ(dottedName(ct.table_elts(0).column_def().type_name().names()), "pg_catalog.int8");

  auto index = mustParse("CREATE UNIQUE INDEX CONCURRENTLY i ON t (a, lower(b))");
  ASSERT_TRUE(index);
  EXPECT_TRUE(onlyStatement(index).index_stmt().unique());
  EXPECT_TRUE(onlyStatement(index).index_stmt().concurrent());

  auto alter = mustParse("ALTER TABLE t ADD COLUMN c int DEFAULT 0");
  ASSERT_TRUE(alter);
  EXPECT_TRUE(onlyStatement(alter).has_alter_table_stmt());

  auto drop = mustParse("DROP TABLE IF EXISTS a, b CASCADE");
  ASSERT_TRUE(drop);
  EXPECT_EQ(onlyStatement(drop).drop_stmt().objects_size(), 2);
  EXPECT_TRUE(onlyStatement(drop).drop_stmt().missing_ok());
}

TEST(ParserParse, UtilityStatements) {
  struct Case {
    const char* sql;
    const char* kind;
  } cases[] = {
      {"BEGIN", "TransactionStmt"},
      {"COMMIT", "TransactionStmt"},
      {"PREPARE TRANSACTION 'gid1'", "TransactionStmt"},
      {"SET search_path TO a, b", "VariableSetStmt"},
      {"SHOW statement_timeout", "VariableShowStmt"},
      {"COPY t (a, b) FROM STDIN WITH (FORMAT csv)", "CopyStmt"},
      {"EXPLAIN ANALYZE SELECT 1", "ExplainStmt"},
      {"PREPARE p (int) AS SELECT $1", "PrepareStmt"},
      {"EXECUTE p (1)", "ExecuteStmt"},
      {"DEALLOCATE ALL", "DeallocateStmt"},
      {"LISTEN chan", "ListenStmt"},
      {"VACUUM ANALYZE t", "VacuumStmt"},
      {"DISCARD ALL", "DiscardStmt"},
      {"TRUNCATE t", "TruncateStmt"},
      {"LOCK TABLE t IN ACCESS EXCLUSIVE MODE", "LockStmt"},
  };
  for (const Case& c : cases) {
    auto q = mustParse(c.sql);
    ASSERT_TRUE(q) << c.sql;
    EXPECT_STREQ(nodeKindName(onlyStatement(q)), c.kind) << c.sql;
  }
  auto begin = mustParse("BEGIN ISOLATION LEVEL SERIALIZABLE");
  ASSERT_TRUE(begin);
  EXPECT_EQ(onlyStatement(begin).transaction_stmt().kind(), pg_query::TRANS_STMT_BEGIN);
  auto copy = mustParse("COPY t FROM STDIN");
  ASSERT_TRUE(copy);
  EXPECT_TRUE(onlyStatement(copy).copy_stmt().is_from());
  auto set = mustParse("SET LOCAL statement_timeout = 5");
  ASSERT_TRUE(set);
  EXPECT_EQ(onlyStatement(set).variable_set_stmt().name(), "statement_timeout");
  EXPECT_TRUE(onlyStatement(set).variable_set_stmt().is_local());
}

TEST(ParserParse, StatementTextRanges) {
  std::string sql = "SELECT 1;  UPDATE t SET a = ';' ; -- done\n SELECT 'x;y'";
  auto q = mustParse(sql);
  ASSERT_TRUE(q);
  ASSERT_EQ(q->statementCount(), 3u);
  EXPECT_EQ(q->sql, sql);
  EXPECT_EQ(q->statementText(0), "SELECT 1");
  EXPECT_EQ(q->statementText(1), "  UPDATE t SET a = ';' ");
  // The last statement has stmt_len 0: it runs to the end of the text.
  EXPECT_EQ(q->tree.stmts(2).stmt_len(), 0);
  EXPECT_EQ(q->statementText(2), " -- done\n SELECT 'x;y'");
  EXPECT_TRUE(q->statement(1).has_update_stmt());
}

TEST(ParserParse, EmptyAndCommentOnlyInputsHaveNoStatements) {
  for (std::string_view sql : {"", "   ", ";", ";;  ;", "-- just a comment", "/* c */"}) {
    auto q = mustParse(sql);
    ASSERT_TRUE(q);
    EXPECT_EQ(q->statementCount(), 0u) << sql;
  }
}

// Messages and positions as Postgres 15 reports them (checked against a real server).
TEST(ParserParse, SyntaxErrorsCarryPostgresMessageAndPosition) {
  struct Case {
    const char* sql;
    const char* message;
    int position;
  } cases[] = {
      {"SELEC 1", "syntax error at or near \"SELEC\"", 1},
      {"SELECT * FROM t WHERE", "syntax error at end of input", 22},
      {"SELECT 'é' FROM FROM", "syntax error at or near \"FROM\"", 17},  // characters, not bytes
      {"SELECT 'abc", "unterminated quoted string at or near \"'abc\"", 8},
      {"SELECT 1; SELEC 2", "syntax error at or near \"SELEC\"", 11},
      {"SELECT $$abc", "unterminated dollar-quoted string at or near \"$$abc\"", 8},
      {"SELECT 1 /* x", "unterminated /* comment at or near \"/* x\"", 10},
      {"SELECT \"\"", "zero-length delimited identifier at or near \"\"\"\"", 8},
      {"SELECT 1 FROM t WHERE a = = 1", "syntax error at or near \"=\"", 27},
  };
  for (const Case& c : cases) {
    auto r = parse(c.sql);
    ASSERT_FALSE(r.ok()) << c.sql;
    EXPECT_EQ(r.error().sqlstate, "42601") << c.sql;
    EXPECT_EQ(r.error().severity, "ERROR");
    EXPECT_EQ(r.error().message, c.message) << c.sql;
    EXPECT_EQ(r.error().detail, "at character " + std::to_string(c.position)) << c.sql;
  }
}

TEST(ParserParse, NulAndInvalidUtf8AreEncodingErrors) {
  std::string with_nul("SELECT 1\0; DROP TABLE t", 23);
  auto r = parse(with_nul);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().sqlstate, "22021");
  EXPECT_EQ(r.error().message, "invalid byte sequence for encoding \"UTF8\": 0x00");
  EXPECT_EQ(r.error().detail, "at byte offset 8");

  auto bad = parse("SELECT 'caf\xc3\x28'");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().sqlstate, "22021");
  EXPECT_EQ(bad.error().message, "invalid byte sequence for encoding \"UTF8\": 0xc3 0x28");

  for (std::string_view s :
       {"SELECT '\xed\xa0\x80'", "SELECT '\xc0\xaf'", "SELECT '\xf4\x90\x80\x80'",
        "SELECT '\xe2\x82'", "SELECT 1 -- \xff"}) {
    auto e = parse(s);
    ASSERT_FALSE(e.ok()) << s;
    EXPECT_EQ(e.error().sqlstate, "22021") << s;
  }
  // Valid multi-byte text of every length is accepted.
  auto ok = mustParse("SELECT 'é€𝄞', \"tablé\"");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->statementCount(), 1u);
}

TEST(ParserParse, GarbageNeverCrashes) {
  std::mt19937 rng(12345);
  const std::string alphabet = "SELECT FROM WHERE ()'\"$;,.:*+-/<>=[]{}|\\0123456789abcxyz_\n\t";
  int errors = 0;
  for (int i = 0; i < 2000; ++i) {
    std::string s;
    size_t len = rng() % 80;
    for (size_t k = 0; k < len; ++k) s += alphabet[rng() % alphabet.size()];
    auto r = parse(s);
    if (!r.ok()) {
      ++errors;
      EXPECT_FALSE(r.error().message.empty());
    }
  }
  EXPECT_GT(errors, 1000);  // random text is mostly not SQL, and says so
  // Random bytes, including NUL and high bytes.
  for (int i = 0; i < 500; ++i) {
    std::string s;
    size_t len = rng() % 64;
    for (size_t k = 0; k < len; ++k) s += static_cast<char>(rng() & 0xFF);
    (void)parse(s);
  }
}

TEST(ParserParse, VeryLongInputs) {
  // A 20k-row bulk insert: wide but flat.
  std::string insert = "INSERT INTO t (a, b) VALUES ";
  for (int i = 0; i < 20000; ++i) {
    if (i) insert += ", ";
    insert += "(" + std::to_string(i) + ", 'row " + std::to_string(i) + "')";
  }
  auto q = mustParse(insert);
  ASSERT_TRUE(q);
  EXPECT_EQ(onlyStatement(q).insert_stmt().select_stmt().select_stmt().values_lists_size(), 20000);

  // A 1 MB string literal and a 100k-element IN list.
  auto lit = mustParse("SELECT '" + std::string(1 << 20, 'x') + "'");
  ASSERT_TRUE(lit);
  EXPECT_EQ(
      stringConstant(onlyStatement(lit).select_stmt().target_list(0).res_target().val())->size(),
      size_t{1} << 20);
  std::string in = "SELECT * FROM t WHERE id IN (";
  for (int i = 0; i < 100000; ++i) in += (i ? "," : "") + std::to_string(i);
  in += ")";
  auto inq = mustParse(in);
  ASSERT_TRUE(inq);
  EXPECT_EQ(onlyStatement(inq).select_stmt().where_clause().a_expr().rexpr().list().items_size(),
            100000);

  // Long garbage: an error, not a crash.
  auto junk = parse(std::string(200000, '('));
  ASSERT_FALSE(junk.ok());
  EXPECT_EQ(junk.error().sqlstate, "42601");
}

TEST(ParserParse, ResultIsSharedAndImmutable) {
  auto r = parse("SELECT 1");
  ASSERT_TRUE(r.ok());
  std::shared_ptr<const ParsedQuery> a = *r;
  std::shared_ptr<const ParsedQuery> b = a;
  EXPECT_EQ(a.get(), b.get());
  EXPECT_EQ(a.use_count(), 3);  // r, a, b
}

}  // namespace
}  // namespace shardgate::parser
