// Unit tests of the Analyzer: statement kinds, tables and aliases, key predicates, equalities,
// writes, the SELECT shape, and when an analysis may serve a whole literal template.
#include "planner/analyzer.h"

#include <gtest/gtest.h>

#include "parser/parser.h"
#include "tests/unit/planner_test_support.h"

namespace shardgate::planner {
namespace {

class AnalyzerTest : public ::testing::Test {
 protected:
  void SetUp() override { config_ = testing::loadTestConfig(); }
  const conf::Database& db() const { return testing::appDb(config_); }

  std::shared_ptr<const QueryAnalysis> analyze(const std::string& sql, bool with_template = false,
                                               size_t index = 0) {
    Result<std::shared_ptr<const parser::ParsedQuery>> parsed = parser::parse(sql);
    EXPECT_TRUE(parsed.ok()) << sql;
    if (!parsed.ok()) return nullptr;
    if (with_template) {
      EXPECT_TRUE(literals_.scan(sql)) << sql;
    }
    Result<std::shared_ptr<const QueryAnalysis>> a =
        analyzeStatement(db(), *parsed, index, with_template ? &literals_ : nullptr, {});
    EXPECT_TRUE(a.ok()) << sql << ": " << (a.ok() ? "" : a.error().describe());
    return a.ok() ? *a : nullptr;
  }

  conf::ConfigPtr config_;
  LiteralTemplate literals_;
};

TEST_F(AnalyzerTest, StatementKinds) {
  EXPECT_EQ(analyze("SELECT 1")->kind, StatementKind::kSelect);
  EXPECT_EQ(analyze("INSERT INTO settings VALUES (1)")->kind, StatementKind::kInsert);
  EXPECT_EQ(analyze("UPDATE settings SET a = 1")->kind, StatementKind::kUpdate);
  EXPECT_EQ(analyze("DELETE FROM settings")->kind, StatementKind::kDelete);
  EXPECT_EQ(analyze("COPY settings TO STDOUT")->kind, StatementKind::kCopy);
  EXPECT_EQ(analyze("SET search_path = x")->kind, StatementKind::kSet);
  EXPECT_EQ(analyze("RESET ALL")->kind, StatementKind::kReset);
  EXPECT_TRUE(analyze("RESET ALL")->resets_session);
  EXPECT_EQ(analyze("SHOW work_mem")->kind, StatementKind::kShow);
  EXPECT_EQ(analyze("CREATE TABLE x (a int)")->kind, StatementKind::kUtility);
  EXPECT_EQ(analyze("LISTEN x")->kind, StatementKind::kListen);
  EXPECT_EQ(analyze("FETCH 1 FROM c")->kind, StatementKind::kCursor);
  EXPECT_EQ(analyze("DISCARD ALL")->kind, StatementKind::kSessionCommand);
  EXPECT_EQ(analyze("EXECUTE p")->kind, StatementKind::kSqlPrepared);

  auto begin = analyze("BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY");
  EXPECT_EQ(begin->kind, StatementKind::kTransaction);
  EXPECT_EQ(begin->transaction, TransactionAction::kBegin);
  EXPECT_TRUE(begin->read_only_transaction);
  EXPECT_FALSE(analyze("BEGIN READ WRITE")->read_only_transaction);
  EXPECT_EQ(analyze("ROLLBACK TO SAVEPOINT a")->transaction, TransactionAction::kRollbackTo);
  // The savepoint's name as Postgres keeps it: folded to lower case unless quoted.
  EXPECT_EQ(analyze("SAVEPOINT Outer_1")->savepoint_name, "outer_1");
  EXPECT_EQ(analyze("RELEASE \"Mixed \"\"Case\"\"\"")->savepoint_name, "Mixed \"Case\"");
  EXPECT_EQ(analyze("ROLLBACK TO b")->savepoint_name, "b");
  EXPECT_EQ(analyze("ROLLBACK")->savepoint_name, "");
  EXPECT_TRUE(analyze("SET TRANSACTION READ ONLY")->read_only_transaction);
  EXPECT_TRUE(analyze("SET transaction_read_only = on")->read_only_transaction);
  EXPECT_FALSE(analyze("SET transaction_read_only = off")->read_only_transaction);

  auto setting = analyze("SET LOCAL Shardgate.Read_Preference = 'replica'");
  EXPECT_EQ(setting->kind, StatementKind::kShardgateSetting);
  EXPECT_EQ(setting->setting_name, "shardgate.read_preference");
  EXPECT_EQ(setting->setting_action, SettingAction::kSet);
  EXPECT_TRUE(setting->setting_local);
  EXPECT_EQ(analyze("SHOW shardgate.read_preference")->setting_action, SettingAction::kShow);
  EXPECT_EQ(analyze("RESET shardgate.read_preference")->setting_action, SettingAction::kReset);

  auto explain = analyze("EXPLAIN (ROUTE) UPDATE users SET name = 'x' WHERE id = 1");
  EXPECT_EQ(explain->explain, ExplainMode::kRoute);
  EXPECT_EQ(explain->kind, StatementKind::kUpdate);
  EXPECT_FALSE(analyze("EXPLAIN UPDATE users SET name = 'x' WHERE id = 1")->writes);
  EXPECT_TRUE(analyze("EXPLAIN ANALYZE UPDATE users SET name = 'x' WHERE id = 1")->writes);
  EXPECT_EQ(analyze("EXPLAIN (ANALYZE false) SELECT 1")->explain, ExplainMode::kPlain);
}

TEST_F(AnalyzerTest, TablesAliasesAndClasses) {
  auto a = analyze(
      "SELECT * FROM users u JOIN public.orders ON orders.user_id = u.id "
      "JOIN countries c ON true JOIN settings s ON true");
  ASSERT_EQ(a->tables.size(), 4u);
  EXPECT_EQ(a->tables[0].name, "users");
  EXPECT_EQ(a->tables[0].alias, "u");
  EXPECT_EQ(a->tables[0].table_class, TableClass::kSharded);
  EXPECT_EQ(a->tables[0].key_column, "id");
  EXPECT_EQ(a->tables[1].schema, "public");
  EXPECT_EQ(a->tables[1].key_column, "user_id");
  EXPECT_EQ(a->tables[2].table_class, TableClass::kReference);
  EXPECT_EQ(a->tables[3].table_class, TableClass::kUnsharded);
  // The join equality on both keys, both ways (inner join).
  ASSERT_EQ(a->equalities.size(), 2u);
  EXPECT_EQ(a->equalities[0].narrowed, 1);
  EXPECT_EQ(a->equalities[0].from, 0);
}

TEST_F(AnalyzerTest, SubqueriesAndCtesCount) {
  auto a = analyze(
      "WITH x AS (SELECT * FROM orders WHERE user_id = 1) "
      "SELECT * FROM x, users WHERE users.id IN (SELECT user_id FROM orders) "
      "AND EXISTS (SELECT 1 FROM events e WHERE e.id = 5)");
  std::vector<std::string> names;
  for (const auto& t : a->tables) names.push_back(t.name);
  EXPECT_EQ(names, (std::vector<std::string>{"orders", "users", "orders", "events"}));
  // A CTE named like a table hides the table.
  auto shadow = analyze("WITH users AS (SELECT 1 AS id) SELECT * FROM users WHERE id = 1");
  EXPECT_TRUE(shadow->tables.empty());
  // ... but not a schema-qualified name.
  EXPECT_EQ(analyze("WITH users AS (SELECT 1) SELECT * FROM public.users")->tables.size(), 1u);
}

TEST_F(AnalyzerTest, KeyPredicates) {
  auto a = analyze("SELECT * FROM users WHERE (id = 1 OR id IN (2, 3)) AND name = 'x'");
  ASSERT_EQ(a->tables.size(), 1u);
  ASSERT_GE(a->tables[0].predicate, 0);
  const KeyPredicate& root = a->predicates[a->tables[0].predicate];
  EXPECT_EQ(root.op, KeyPredicate::Op::kOr);
  ASSERT_EQ(root.count, 2u);
  EXPECT_EQ(a->predicates[a->children[root.first]].op, KeyPredicate::Op::kEqual);
  const KeyPredicate& in = a->predicates[a->children[root.first + 1]];
  EXPECT_EQ(in.op, KeyPredicate::Op::kIn);
  EXPECT_EQ(in.count, 2u);
  EXPECT_EQ(a->values[in.first].kind, ValueRef::Kind::kConstant);
  EXPECT_EQ(a->values[in.first].text, "2");

  // Conditions that say nothing about the key.
  EXPECT_EQ(analyze("SELECT * FROM users WHERE id <> 1")->tables[0].predicate, -1);
  EXPECT_EQ(analyze("SELECT * FROM users WHERE id = 1 OR name = 'x'")->tables[0].predicate, -1);
  EXPECT_EQ(analyze("SELECT * FROM users WHERE NOT id = 1")->tables[0].predicate, -1);
  EXPECT_EQ(analyze("SELECT * FROM users WHERE id::text = '1'")->tables[0].predicate, -1);
  EXPECT_EQ(analyze("SELECT * FROM users WHERE name = 'x'")->tables[0].predicate, -1);
  // A key of another table with the same column name does not count.
  auto other = analyze("SELECT * FROM users u, settings s WHERE s.id = 1");
  EXPECT_EQ(other->tables[0].predicate, -1);
  // Two tables with key column "id" in one scope: an unqualified "id" is ambiguous.
  auto ambiguous = analyze("SELECT * FROM users, events WHERE id = 1");
  EXPECT_EQ(ambiguous->tables[0].predicate, -1);
  EXPECT_EQ(ambiguous->tables[1].predicate, -1);

  auto range = analyze("SELECT * FROM events WHERE id BETWEEN $1 AND 10");
  const KeyPredicate& r = range->predicates[range->tables[0].predicate];
  EXPECT_EQ(r.op, KeyPredicate::Op::kRange);
  EXPECT_EQ(range->values[r.lower].kind, ValueRef::Kind::kParam);
  EXPECT_EQ(range->values[r.lower].index, 1);
  EXPECT_TRUE(r.lower_inclusive);

  auto any = analyze("SELECT * FROM users WHERE id = ANY($1::bigint[])");
  const KeyPredicate& ap = any->predicates[any->tables[0].predicate];
  EXPECT_EQ(ap.op, KeyPredicate::Op::kAnyArray);
  EXPECT_TRUE(any->values[ap.first].is_array);
  EXPECT_TRUE(any->values[ap.first].cast);
  EXPECT_EQ(any->values[ap.first].cast_type, conf::KeyType::kBigint);
}

TEST_F(AnalyzerTest, OuterJoinsOnlyFilterTheNullableSide) {
  auto left = analyze("SELECT * FROM orders o LEFT JOIN users u ON u.id = o.user_id AND u.id = 1");
  EXPECT_EQ(left->tables[0].predicate, -1);  // orders: preserved
  EXPECT_GE(left->tables[1].predicate, 0);   // users: nullable, filtered by the ON condition
  ASSERT_EQ(left->equalities.size(), 1u);
  EXPECT_EQ(left->equalities[0].narrowed, 1);
  auto full = analyze("SELECT * FROM orders o FULL JOIN users u ON u.id = o.user_id AND u.id = 1");
  EXPECT_EQ(full->tables[1].predicate, -1);
  EXPECT_TRUE(full->equalities.empty());
  // WHERE filters every table of its level, whatever the join.
  auto where =
      analyze("SELECT * FROM orders o LEFT JOIN users u ON u.id = o.user_id WHERE u.id = 1");
  EXPECT_GE(where->tables[1].predicate, 0);
}

TEST_F(AnalyzerTest, Writes) {
  EXPECT_FALSE(analyze("SELECT * FROM users WHERE id = 1")->writes);
  EXPECT_TRUE(analyze("SELECT * FROM users WHERE id = 1 FOR UPDATE")->writes);
  EXPECT_TRUE(analyze("SELECT * FROM users WHERE id = 1 FOR KEY SHARE")->writes);
  EXPECT_TRUE(analyze("SELECT nextval('s')")->writes);
  EXPECT_TRUE(analyze("SELECT pg_catalog.setval('s', 1)")->writes);
  EXPECT_TRUE(analyze("SELECT * FROM users WHERE id = (SELECT nextval('s'))")->writes);
  EXPECT_TRUE(analyze("SELECT pg_advisory_xact_lock(1)")->writes);
  EXPECT_FALSE(analyze("SELECT currval('s'), lower('X'), now()")->writes);
  EXPECT_TRUE(
      analyze("WITH d AS (DELETE FROM users WHERE id = 1 RETURNING *) SELECT * FROM d")->writes);
  EXPECT_TRUE(analyze("SELECT 1 INTO newtable")->writes);
  EXPECT_TRUE(analyze("COPY settings FROM STDIN")->writes);
  EXPECT_FALSE(analyze("COPY settings TO STDOUT")->writes);
  EXPECT_TRUE(analyze("NOTIFY ch")->writes);
  EXPECT_TRUE(analyze("VACUUM")->writes);
  EXPECT_EQ(analyze("SELECT nextval('s')")->write_reason, "nextval()");
}

TEST_F(AnalyzerTest, InsertRows) {
  auto a = analyze("INSERT INTO users (name, id) VALUES ('a', 1), ('b', $1) RETURNING id");
  ASSERT_EQ(a->inserts.size(), 1u);
  const InsertRows& rows = a->inserts[0];
  EXPECT_TRUE(rows.column_list);
  EXPECT_EQ(rows.rows, 2u);
  ASSERT_EQ(rows.cells.size(), 2u);
  EXPECT_EQ(rows.cells[0].text, "1");
  EXPECT_EQ(rows.cells[1].kind, ValueRef::Kind::kParam);
  EXPECT_TRUE(a->returning);

  auto no_list = analyze("INSERT INTO users VALUES (1, 'a'), (2, 'b')");
  EXPECT_FALSE(no_list->inserts[0].column_list);
  EXPECT_EQ(no_list->inserts[0].width, 2u);
  EXPECT_EQ(no_list->inserts[0].cells.size(), 4u);

  EXPECT_FALSE(analyze("INSERT INTO users (name) VALUES ('a')")->inserts[0].key_in_column_list);
  EXPECT_TRUE(analyze("INSERT INTO users DEFAULT VALUES")->inserts[0].default_values);
  EXPECT_TRUE(analyze("INSERT INTO users (id) VALUES (1) ON CONFLICT DO NOTHING")->on_conflict);

  auto select = analyze("INSERT INTO orders (user_id) SELECT id FROM users WHERE id = 1");
  EXPECT_TRUE(select->inserts[0].from_select);
  ASSERT_EQ(select->inserts[0].cell_sources.size(), 1u);
  EXPECT_EQ(select->inserts[0].cell_sources[0], 1);  // users is table 1, orders table 0
}

TEST_F(AnalyzerTest, KeyAssignments) {
  auto a = analyze("UPDATE users SET id = id, name = 'x' WHERE id = 1");
  ASSERT_EQ(a->tables[0].key_assignments.size(), 1u);
  EXPECT_EQ(a->tables[0].key_assignments[0].kind, ValueRef::Kind::kSameColumn);
  auto multi = analyze("UPDATE users SET (name, id) = ('x', 7) WHERE id = 1");
  ASSERT_EQ(multi->tables[0].key_assignments.size(), 1u);
  EXPECT_EQ(multi->tables[0].key_assignments[0].text, "7");
  auto conflict =
      analyze("INSERT INTO users (id) VALUES (1) ON CONFLICT (id) DO UPDATE SET id = EXCLUDED.id");
  ASSERT_EQ(conflict->tables[0].key_assignments.size(), 1u);
  EXPECT_EQ(conflict->tables[0].key_assignments[0].kind, ValueRef::Kind::kSameColumn);
  EXPECT_TRUE(analyze("UPDATE settings SET id = 5")->tables[0].key_assignments.empty());
}

TEST_F(AnalyzerTest, SelectShape) {
  auto a = analyze(
      "SELECT DISTINCT user_id, count(*), sum(amount) FROM orders WHERE user_id = 1 "
      "GROUP BY user_id HAVING max(amount) > 1 ORDER BY 2 DESC NULLS LAST, user_id LIMIT $1 "
      "OFFSET 5");
  const SelectShape& s = a->shape;
  EXPECT_TRUE(s.aggregates);
  EXPECT_EQ(s.aggregate_functions, (std::vector<std::string>{"count", "sum", "max"}));
  EXPECT_EQ(s.group_by_items, 1u);
  EXPECT_TRUE(s.having);
  EXPECT_TRUE(s.distinct);
  EXPECT_FALSE(s.distinct_on);
  ASSERT_EQ(s.order_by.size(), 2u);
  ASSERT_TRUE(s.order_by[0].ordinal.has_value());
  EXPECT_EQ(s.order_by[0].ordinal->text, "2");
  EXPECT_TRUE(s.order_by[0].descending);
  EXPECT_EQ(s.order_by[0].nulls_first, std::optional<bool>(false));
  EXPECT_EQ(s.order_by[1].expression, "user_id");
  ASSERT_TRUE(s.limit.has_value());
  EXPECT_EQ(s.limit->kind, ValueRef::Kind::kParam);
  ASSERT_TRUE(s.offset.has_value());
  EXPECT_EQ(s.offset->text, "5");

  EXPECT_TRUE(analyze("SELECT DISTINCT ON (a) a FROM t")->shape.distinct_on);
  EXPECT_TRUE(analyze("SELECT row_number() OVER () FROM t")->shape.window_functions);
  EXPECT_FALSE(analyze("SELECT row_number() OVER () FROM t")->shape.aggregates);
  EXPECT_TRUE(analyze("SELECT 1 UNION SELECT 2")->shape.set_operation);
  // Aggregates inside a subquery are not the outer query's.
  EXPECT_FALSE(analyze("SELECT (SELECT count(*) FROM t) FROM u")->shape.aggregates);
}

TEST_F(AnalyzerTest, TemplatedAnalysesReferToLiterals) {
  auto a = analyze("SELECT * FROM users WHERE id = -5 AND name = 'x'", /*with_template=*/true);
  EXPECT_TRUE(a->templated);
  const ValueRef& v = a->values[a->predicates[a->tables[0].predicate].first];
  EXPECT_EQ(v.kind, ValueRef::Kind::kLiteral);
  EXPECT_EQ(v.index, 0);
  EXPECT_TRUE(v.negate);
  EXPECT_EQ(v.token, ValueRef::Token::kInteger);

  // A constant folded from an expression the template cannot express ties the analysis to the
  // exact text: -(-3) is the constant 3 located at the first '-'.
  EXPECT_FALSE(analyze("SELECT * FROM users WHERE id = -(-3)", true)->templated);
  // Keyword-valued constants are part of the template.
  EXPECT_TRUE(analyze("SET shardgate.read_preference = replica", true)->templated);
  EXPECT_TRUE(analyze("BEGIN READ ONLY", true)->templated);
  // A literal deciding the analysis itself (EXPLAIN options) ties it to the text.
  EXPECT_FALSE(analyze("EXPLAIN (ANALYZE 1) SELECT 1", true)->templated);
  // Without a template, everything is inline.
  EXPECT_FALSE(analyze("SELECT * FROM users WHERE id = 5")->templated);
}

TEST_F(AnalyzerTest, DeepStatementsAreRefused) {
  std::string sql = "SELECT * FROM users WHERE id = 1";
  for (int i = 0; i < 300; ++i) sql = "SELECT * FROM (" + sql + ") s" + std::to_string(i);
  Result<std::shared_ptr<const parser::ParsedQuery>> parsed = parser::parse(sql);
  ASSERT_TRUE(parsed.ok()) << parsed.error().describe();
  EXPECT_TRUE(analyzeStatement(db(), *parsed, 0, nullptr, {}).ok());
  Result<std::shared_ptr<const QueryAnalysis>> a =
      analyzeStatement(db(), *parsed, 0, nullptr, {}, /*max_depth=*/200);
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.error().sqlstate, "54001");
  // The deepest expression Postgres's parser accepts here is analysed without trouble.
  std::string expr = "1";
  for (int i = 0; i < 2000; ++i) expr += "+1";
  Result<std::shared_ptr<const parser::ParsedQuery>> sum =
      parser::parse("SELECT * FROM users WHERE id = 1 AND name = " + expr);
  ASSERT_TRUE(sum.ok());
  EXPECT_TRUE(analyzeStatement(db(), *sum, 0, nullptr, {}).ok());
}

}  // namespace
}  // namespace shardgate::planner
