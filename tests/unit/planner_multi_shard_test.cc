// Unit tests of the multi-shard planner: the shard SQL rewrites, merged and hidden columns, column
// names, aggregates, HAVING, limits, and plans built from the current literals of cached analyses.
#include <gtest/gtest.h>

#include "parser/parser.h"
#include "planner/multi_shard_planner.h"
#include "planner/query_router.h"
#include "tests/unit/planner_test_support.h"

namespace shardgate::planner {
namespace {

// The hidden column that tells the collation of an expression the merge orders (MergeCollation):
// evaluated once per statement, or per group in a query that aggregates.
std::string probe(const std::string& x) {
  return "(SELECT pg_collation_for(CASE WHEN false THEN concat(" + x + ") END))";
}
std::string groupProbe(const std::string& x) {
  return "pg_collation_for(CASE WHEN false THEN concat(" + x + ") END)";
}

class MultiShardTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_ = testing::loadTestConfig();
    router_.setDirectoryLookup(&directory_);
    router_.setColumnOrderProvider(&columns_);
  }
  const conf::Database& db() const { return testing::appDb(config_); }

  // The multi-shard plan of `sql` (fails the test if it is not one).
  std::shared_ptr<const MultiShardPlan> plan(std::string_view sql,
                                             const SessionRouteContext& ctx = {}) {
    Result<RouteDecision> r = router_.routeSimple(db(), sql, ctx);
    EXPECT_TRUE(r.ok()) << sql << ": " << (r.ok() ? "" : r.error().message);
    if (!r.ok()) return nullptr;
    EXPECT_EQ(r->kind, RouteDecision::Kind::kMultiShard) << sql;
    if (r->kind != RouteDecision::Kind::kMultiShard) return nullptr;
    // Every shard statement is SQL Postgres's grammar accepts.
    for (const ShardStatement& s : r->multi->statements) {
      EXPECT_TRUE(parser::parse(s.sql).ok()) << s.sql;
    }
    return r->multi;
  }
  std::string shardSql(std::string_view sql, size_t i = 0) {
    auto p = plan(sql);
    if (!p || i >= p->statements.size()) return "<none>";
    return p->statements[i].sql;
  }
  Error refusal(std::string_view sql) {
    Result<RouteDecision> r = router_.routeSimple(db(), sql, {});
    EXPECT_FALSE(r.ok()) << sql << " was routed: " << (r.ok() ? r->reason : "");
    return r.ok() ? Error{} : r.error();
  }
  Result<RouteDecision> bound(std::string_view sql, std::vector<std::optional<std::string>> values,
                              std::vector<int32_t> types = {}, std::vector<int16_t> formats = {}) {
    Result<std::shared_ptr<const QueryAnalysis>> a = router_.prepare(db(), sql, types);
    if (!a.ok()) return a.error();
    storage_ = std::move(values);
    BindParameters b;
    for (const auto& v : storage_) {
      b.values.push_back(v ? std::optional<std::string_view>(*v) : std::nullopt);
    }
    b.formats = std::move(formats);
    b.type_oids = std::move(types);
    return router_.routeBound(db(), **a, b, {});
  }

  conf::ConfigPtr config_;
  QueryRouter router_;
  testing::FakeDirectory directory_;
  testing::FakeColumns columns_;
  std::vector<std::optional<std::string>> storage_;
};

pg_query::Node expressionOf(const std::string& select_list_item) {
  Result<std::shared_ptr<const parser::ParsedQuery>> p =
      parser::parse("SELECT " + select_list_item);
  EXPECT_TRUE(p.ok()) << select_list_item;
  return (*p)->statement(0).select_stmt().target_list(0).res_target().val();
}

TEST(FigureColumnName, FollowsPostgres) {
  EXPECT_EQ(figureColumnName(expressionOf("count(*)")), "count");
  EXPECT_EQ(figureColumnName(expressionOf("pg_catalog.avg(x)")), "avg");
  EXPECT_EQ(figureColumnName(expressionOf("u.name")), "name");
  EXPECT_EQ(figureColumnName(expressionOf("x::text")), "x");
  EXPECT_EQ(figureColumnName(expressionOf("1::int")), "int4");
  EXPECT_EQ(figureColumnName(expressionOf("1 + 1")), "?column?");
  EXPECT_EQ(figureColumnName(expressionOf("CASE WHEN true THEN 1 END")), "case");
  EXPECT_EQ(figureColumnName(expressionOf("coalesce(a, b)")), "coalesce");
  EXPECT_EQ(figureColumnName(expressionOf("greatest(a, b)")), "greatest");
  EXPECT_EQ(figureColumnName(expressionOf("ARRAY[1]")), "array");
  EXPECT_EQ(figureColumnName(expressionOf("EXISTS (SELECT 1)")), "exists");
  EXPECT_EQ(figureColumnName(expressionOf("(SELECT max(id) FROM t)")), "max");
  EXPECT_EQ(figureColumnName(expressionOf("NULLIF(a, b)")), "nullif");
  EXPECT_EQ(figureColumnName(expressionOf("(a).b")), "b");
}

TEST(SameExpression, IgnoresPositionsOnly) {
  EXPECT_TRUE(sameExpression(expressionOf("sum(amount)"), expressionOf("  sum( amount )")));
  EXPECT_TRUE(sameExpression(expressionOf("lower(name)"), expressionOf("LOWER(name)")));
  EXPECT_FALSE(sameExpression(expressionOf("sum(amount)"), expressionOf("sum(DISTINCT amount)")));
  EXPECT_FALSE(sameExpression(expressionOf("o.id"), expressionOf("id")));
}

TEST_F(MultiShardTest, PlainFanOutSendsTheStatementAsWritten) {
  auto p = plan("  SELECT * FROM users WHERE name = 'x' ;");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->kind, MultiShardPlan::Kind::kRead);
  EXPECT_EQ(p->merge, nullptr);  // concatenation
  ASSERT_EQ(p->statements.size(), 2u);
  EXPECT_EQ(p->statements[0].shard, 0u);
  EXPECT_EQ(p->statements[1].shard, 1u);
  EXPECT_EQ(p->statements[0].sql, "SELECT * FROM users WHERE name = 'x'");
}

TEST_F(MultiShardTest, OnlyTheShardsOfTheKeysRun) {
  // events: [0, 1000000) on shard0, the rest on shard1; a range inside shard1 is one shard.
  auto p = plan("SELECT * FROM events WHERE id >= 999999");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->statements.size(), 2u);
  Result<RouteDecision> one =
      router_.routeSimple(db(), "SELECT * FROM events WHERE id > 1000000", {});
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->kind, RouteDecision::Kind::kShard);
}

TEST_F(MultiShardTest, OrderByMapsToMergedColumnsAndShardsSortByPosition) {
  auto p = plan("SELECT id, name AS n FROM users ORDER BY n DESC, lower(name) NULLS FIRST, 1");
  ASSERT_TRUE(p && p->merge);
  const MergePlan& m = *p->merge;
  EXPECT_EQ(p->statements[0].sql, "SELECT id, name AS n, lower(name), " + probe("name") + ", " +
                                      probe("lower(name)") +
                                      " FROM users ORDER BY 2 DESC, 3 NULLS FIRST, 1");
  ASSERT_EQ(m.sort.size(), 3u);
  EXPECT_EQ(m.sort[0].column, 1u);
  EXPECT_TRUE(m.sort[0].descending);
  EXPECT_TRUE(m.sort[0].nulls_first);  // Postgres's default for DESC
  EXPECT_EQ(m.sort[1].column, 2u);     // hidden
  EXPECT_FALSE(m.sort[1].descending);
  EXPECT_TRUE(m.sort[1].nulls_first);
  EXPECT_EQ(m.sort[2].column, 0u);
  EXPECT_FALSE(m.sort[2].nulls_first);
  // Each key's collation, from the probes after the keys; users.id is the (bigint) sharding key,
  // which has none.
  ASSERT_EQ(m.collations.size(), 2u);
  EXPECT_EQ(m.collations[0].column, 1u);
  EXPECT_EQ(m.collations[0].probe, 3u);
  EXPECT_EQ(m.collations[1].column, 2u);
  EXPECT_EQ(m.collations[1].probe, 4u);
  EXPECT_EQ(m.visible_columns, (std::vector<uint32_t>{0, 1}));
  EXPECT_FALSE(m.aggregate);
  EXPECT_FALSE(m.explain.empty());
}

TEST_F(MultiShardTest, SelectStarPutsHiddenSortColumnsFirst) {
  auto p = plan("SELECT * FROM pgbench_accounts ORDER BY aid DESC, 3 LIMIT 100");
  ASSERT_TRUE(p && p->merge);
  EXPECT_EQ(p->statements[0].sql,
            "SELECT aid, * FROM pgbench_accounts ORDER BY 1 DESC, 4 LIMIT 100");
  EXPECT_EQ(p->merge->leading_hidden, 1u);
  EXPECT_EQ(p->merge->shard_columns, 0u);  // unknown with SELECT *
  EXPECT_TRUE(p->merge->visible_columns.empty());
  ASSERT_EQ(p->merge->sort.size(), 2u);
  EXPECT_EQ(p->merge->sort[0].column, 0u);
  EXPECT_EQ(p->merge->sort[1].column, 3u);  // the client's third column, after the hidden one
  // A position in *: no expression to probe, so text there is refused when the rows come.
  EXPECT_FALSE(p->merge->sort[0].collation_unknown);
  EXPECT_TRUE(p->merge->sort[1].collation_unknown);
  EXPECT_TRUE(p->merge->collations.empty());  // aid: an integer sharding key
  // A text key's probe goes first as well.
  auto named = plan("SELECT * FROM users u ORDER BY u.name, 2");
  ASSERT_TRUE(named && named->merge);
  EXPECT_EQ(named->statements[0].sql,
            "SELECT u.name, " + probe("u.name") + ", * FROM users u ORDER BY 1, 4");
  EXPECT_EQ(named->merge->leading_hidden, 2u);
  ASSERT_EQ(named->merge->collations.size(), 1u);
  EXPECT_EQ(named->merge->collations[0].column, 0u);
  EXPECT_EQ(named->merge->collations[0].probe, 1u);
}

TEST_F(MultiShardTest, LimitAndOffsetArePushedDownAsTheirSum) {
  auto p = plan("SELECT id FROM users ORDER BY id LIMIT 10 OFFSET 5");
  ASSERT_TRUE(p && p->merge);
  EXPECT_EQ(p->statements[0].sql, "SELECT id FROM users ORDER BY 1 LIMIT 15");
  ASSERT_TRUE(p->merge->limit && p->merge->offset);
  EXPECT_EQ(p->merge->limit->kind, ValueRef::Kind::kConstant);
  EXPECT_EQ(p->merge->limit->text, "10");
  EXPECT_EQ(p->merge->offset->text, "5");
  // Beyond int32 the constant is written as a bigint literal.
  EXPECT_EQ(shardSql("SELECT id FROM users LIMIT 3000000000 OFFSET 1"),
            "SELECT id FROM users LIMIT 3000000001");
  // OFFSET alone: the shards return everything.
  EXPECT_EQ(shardSql("SELECT id FROM users OFFSET 3"), "SELECT id FROM users");
}

TEST_F(MultiShardTest, CachedTemplatesPlanWithTheCurrentLiterals) {
  // The second text hits the first one's template: the plan must use its own literals.
  EXPECT_EQ(shardSql("SELECT id FROM users WHERE name = 'a' ORDER BY id LIMIT 3"),
            "SELECT id FROM users WHERE name = 'a' ORDER BY 1 LIMIT 3");
  EXPECT_EQ(shardSql("SELECT id FROM users WHERE name = 'b' ORDER BY id LIMIT 7"),
            "SELECT id FROM users WHERE name = 'b' ORDER BY 1 LIMIT 7");
  EXPECT_EQ(shardSql("SELECT * FROM users WHERE name = 'c'"),
            "SELECT * FROM users WHERE name = 'c'");
  EXPECT_EQ(shardSql("SELECT * FROM users WHERE name = 'd'"),
            "SELECT * FROM users WHERE name = 'd'");
  auto first = plan("INSERT INTO users (id, name) VALUES (1, 'a'), (4, 'b')");
  auto second = plan("INSERT INTO users (id, name) VALUES (4, 'c'), (2, 'd')");
  ASSERT_TRUE(first && second);
  EXPECT_EQ(second->statements[0].sql, "INSERT INTO users (id, name) VALUES (2, 'd')");
  EXPECT_EQ(second->statements[1].sql, "INSERT INTO users (id, name) VALUES (4, 'c')");
  EXPECT_GT(router_.stats().template_hits, 0u);
}

TEST_F(MultiShardTest, ParametersStayParametersAndLimitsAreEvaluated) {
  Result<RouteDecision> r = bound(
      "SELECT id FROM users WHERE name = $1 ORDER BY id LIMIT $2 OFFSET $3", {"x", "10", "20"});
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_EQ(r->kind, RouteDecision::Kind::kMultiShard);
  EXPECT_EQ(r->multi->statements[0].sql,
            "SELECT id FROM users WHERE name = $1 ORDER BY 1 LIMIT 30");
  EXPECT_EQ(r->multi->merge->limit->text, "10");
  EXPECT_EQ(r->multi->merge->offset->text, "20");
  // Binary int8 LIMIT.
  const std::string seven("\0\0\0\0\0\0\0\7", 8);
  Result<RouteDecision> b = bound("SELECT id FROM users ORDER BY id LIMIT $1", {seven}, {20}, {1});
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->multi->statements[0].sql, "SELECT id FROM users ORDER BY 1 LIMIT 7");
  // LIMIT NULL is no limit.
  Result<RouteDecision> n = bound("SELECT id FROM users ORDER BY id LIMIT $1", {std::nullopt});
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(n->multi->statements[0].sql, "SELECT id FROM users ORDER BY 1");
  EXPECT_FALSE(n->multi->merge->limit);
}

TEST(HighestClientParameter, ReadsTheClientsNumbersFromEveryStatement) {
  // Statements taking the client's parameters as they are: the highest $n outside quotes.
  EXPECT_EQ(highestClientParameter(
                {ShardStatement(0, "SELECT $2 + $10, '$11', $3"), ShardStatement(1, "SELECT $4")}),
            10u);
  EXPECT_EQ(highestClientParameter({ShardStatement(0, "SELECT 1 -- $5")}), 0u);
  // Renumbered statements (a multi-row INSERT split by shard) name the client's numbers.
  EXPECT_EQ(highestClientParameter({ShardStatement(0, "INSERT INTO t VALUES ($1, $2)", {3, 4}),
                                    ShardStatement(1, "INSERT INTO t VALUES ($1, $2)", {1, 2})}),
            4u);
  EXPECT_EQ(highestClientParameter({}), 0u);
}

TEST(ReferencedParameters, FindsParametersOutsideQuotesAndComments) {
  EXPECT_EQ(referencedParameters("SELECT $2, '$1', \"$3\" FROM t -- $4\nWHERE a$5 = $6"),
            (std::vector<bool>{false, true, false, false, false, true}));
  EXPECT_TRUE(referencedParameters("SELECT 1").empty());
  EXPECT_TRUE(referencedParameters("SELECT $0, $99999").empty());  // not parameters
  // Block comments (nested), dollar quotes with and without a tag, E'' escapes: a quote inside
  // them opens nothing, so the parameters after them still count.
  EXPECT_EQ(referencedParameters("SELECT /* $1 /* it's */ $2 */ $3"),
            (std::vector<bool>{false, false, true}));
  EXPECT_EQ(referencedParameters("SELECT $$it's $1$$, $f$ $$ $2 $f$, $4"),
            (std::vector<bool>{false, false, false, true}));
  EXPECT_EQ(referencedParameters("SELECT E'\\' $1', $2, name'x', $3"),
            (std::vector<bool>{false, true, true}));
  EXPECT_EQ(referencedParameters("SELECT a$b$ + $1"), (std::vector<bool>{true}));
  // Unterminated quotes and comments end the text without reading past it.
  EXPECT_TRUE(referencedParameters("SELECT '$1").empty());
  EXPECT_TRUE(referencedParameters("SELECT /* $1").empty());
  EXPECT_TRUE(referencedParameters("SELECT $q$ $1").empty());
  // Every shard statement knows its own, once, with the plan.
  ShardStatement st(0, "INSERT INTO t VALUES ($1, $3)");
  EXPECT_EQ(st.referenced_params, (std::vector<bool>{true, false, true}));
}

TEST_F(MultiShardTest, ReadPlansAreCachedPerTextShardsAndPlanValues) {
  // The same text again: the same immutable plan, not a rebuilt one.
  auto first = plan("SELECT id FROM users ORDER BY id LIMIT 5");
  auto again = plan("SELECT id FROM users ORDER BY id LIMIT 5");
  ASSERT_TRUE(first && again);
  EXPECT_EQ(first.get(), again.get());
  // Other literals: another plan (the template cache shares the analysis, not the plan).
  auto other = plan("SELECT id FROM users ORDER BY id LIMIT 6");
  ASSERT_TRUE(other);
  EXPECT_NE(other.get(), first.get());
  EXPECT_EQ(other->statements[0].sql, "SELECT id FROM users ORDER BY 1 LIMIT 6");
  // Bind values the plan does not read share a plan; a LIMIT parameter's value does not.
  Result<RouteDecision> a = bound("SELECT id FROM users WHERE name = $1 ORDER BY id", {"x"});
  Result<RouteDecision> b = bound("SELECT id FROM users WHERE name = $1 ORDER BY id", {"y"});
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->multi.get(), b->multi.get());
  Result<RouteDecision> l3 = bound("SELECT id FROM users ORDER BY id LIMIT $1", {"3"});
  Result<RouteDecision> l4 = bound("SELECT id FROM users ORDER BY id LIMIT $1", {"4"});
  ASSERT_TRUE(l3.ok() && l4.ok());
  EXPECT_EQ(l3->multi->statements[0].sql, "SELECT id FROM users ORDER BY 1 LIMIT 3");
  EXPECT_EQ(l4->multi->statements[0].sql, "SELECT id FROM users ORDER BY 1 LIMIT 4");
  // Keys choosing other shards: other plans.
  Result<RouteDecision> k1 =
      bound("SELECT id FROM users WHERE id IN ($1, $2) ORDER BY id", {"1", "4"});
  Result<RouteDecision> k2 =
      bound("SELECT id FROM users WHERE id IN ($1, $2) ORDER BY id", {"1", "2"});
  ASSERT_TRUE(k1.ok() && k2.ok());
  EXPECT_EQ(k1->kind, RouteDecision::Kind::kMultiShard);
  EXPECT_NE(k2->kind, RouteDecision::Kind::kMultiShard);  // keys 1 and 2 are both on shard 0
}

TEST_F(MultiShardTest, SplitInsertsRenumberTheirParameters) {
  Result<RouteDecision> r =
      bound("INSERT INTO users (id, name) VALUES ($1, $2), ($3, $2), ($4, $5) RETURNING $6::text",
            {"4", "a", "1", "5", "b", "t"});
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_EQ(r->kind, RouteDecision::Kind::kMultiShard);
  ASSERT_EQ(r->multi->statements.size(), 2u);
  const ShardStatement& s0 = r->multi->statements[0];  // key 1
  const ShardStatement& s1 = r->multi->statements[1];  // keys 4 and 5
  EXPECT_EQ(s0.sql, "INSERT INTO users (id, name) VALUES ($1, $2) RETURNING $3::text");
  EXPECT_EQ(s0.params, (std::vector<int32_t>{3, 2, 6}));
  EXPECT_EQ(s1.sql, "INSERT INTO users (id, name) VALUES ($1, $2), ($3, $4) RETURNING $5::text");
  EXPECT_EQ(s1.params, (std::vector<int32_t>{1, 2, 4, 5, 6}));
  // Statements that are not split take every parameter as it is.
  Result<RouteDecision> u = bound("UPDATE users SET name = $1 WHERE name = $2", {"x", "y"});
  ASSERT_TRUE(u.ok());
  EXPECT_TRUE(u->multi->statements[0].params.empty());
}

// The hidden double precision sum avg(x) adds for a real x (see realSumInFloat8).
std::string realSum(const std::string& x) {
  const std::string one = "COALESCE(CASE WHEN false THEN " + x + " END, '1')";
  return "sum(CASE WHEN (((" + one + " / '2') * '2') + ((" + one +
         " / '10000') / '10000')) = " + one + " THEN " + x + " * 1::double precision END)";
}

TEST_F(MultiShardTest, AggregatesArePlannedAsPartials) {
  auto p = plan("SELECT count(*), sum(abalance), avg(abalance) AS mean FROM pgbench_accounts");
  ASSERT_TRUE(p && p->merge);
  EXPECT_EQ(p->statements[0].sql,
            "SELECT count(*), sum(abalance), sum(abalance) AS mean, count(abalance), " +
                realSum("abalance") + " FROM pgbench_accounts");
  const MergePlan& m = *p->merge;
  EXPECT_TRUE(m.aggregate);
  EXPECT_TRUE(m.group_columns.empty());
  ASSERT_EQ(m.aggregates.size(), 3u);
  EXPECT_EQ(m.aggregates[0].kind, MergeAggregate::Kind::kCount);
  EXPECT_EQ(m.aggregates[0].inputs, (std::vector<uint32_t>{0}));
  EXPECT_EQ(m.aggregates[1].kind, MergeAggregate::Kind::kSum);
  EXPECT_EQ(m.aggregates[2].kind, MergeAggregate::Kind::kAvg);
  EXPECT_EQ(m.aggregates[2].function, "avg");
  EXPECT_EQ(m.aggregates[2].inputs, (std::vector<uint32_t>{2, 3, 4}));
  EXPECT_EQ(m.visible_columns, (std::vector<uint32_t>{0, 1, 2}));
  EXPECT_EQ(m.shard_columns, 5u);
}

TEST_F(MultiShardTest, RewrittenColumnsKeepTheClientsNames) {
  // avg(x) is sent as sum(x): it keeps the name avg (or the alias).
  EXPECT_EQ(shardSql("SELECT avg(amount) FROM orders"),
            "SELECT sum(amount) AS avg, count(amount), " + realSum("amount") + " FROM orders");
  EXPECT_EQ(shardSql("SELECT avg(amount) AS \"Mean\" FROM orders"),
            "SELECT sum(amount) AS \"Mean\", count(amount), " + realSum("amount") + " FROM orders");
  EXPECT_EQ(
      shardSql("SELECT pg_catalog.stddev_samp(amount) FROM orders"),
      "SELECT count(amount) AS stddev_samp, sum(amount::numeric), "
      "sum(amount::numeric * amount::numeric), max(CASE WHEN false THEN amount END) FROM orders");
  EXPECT_EQ(shardSql("SELECT count(DISTINCT user_id) FROM orders"),
            "SELECT user_id AS count FROM orders GROUP BY user_id");
  // Unchanged aggregates need no alias.
  EXPECT_EQ(shardSql("SELECT min(amount), max(amount) FROM orders"),
            "SELECT min(amount), max(amount), " + groupProbe("min(amount)") + ", " +
                groupProbe("max(amount)") + " FROM orders");
}

TEST_F(MultiShardTest, VarianceUsesCountSumAndSumOfSquares) {
  auto p = plan("SELECT variance(amount) FILTER (WHERE amount > 0) FROM orders");
  ASSERT_TRUE(p && p->merge);
  EXPECT_EQ(p->statements[0].sql,
            "SELECT count(amount) FILTER (WHERE amount > 0) AS variance, sum(amount::numeric) "
            "FILTER (WHERE amount > 0), sum(amount::numeric * amount::numeric) FILTER (WHERE "
            "amount > 0), max(CASE WHEN false THEN amount END) FROM orders");
  ASSERT_EQ(p->merge->aggregates.size(), 1u);
  EXPECT_EQ(p->merge->aggregates[0].kind, MergeAggregate::Kind::kVariance);
  EXPECT_EQ(p->merge->aggregates[0].function, "variance");
  EXPECT_EQ(p->merge->aggregates[0].inputs, (std::vector<uint32_t>{0, 1, 2, 3}));
}

TEST_F(MultiShardTest, GroupByHavingAndOrderByOverMergedColumns) {
  auto p = plan(
      "SELECT status, avg(amount) FROM orders GROUP BY status, user_id "
      "HAVING count(*) > 2 AND status <> 'x' ORDER BY max(amount) DESC, 2 LIMIT 3 OFFSET 1");
  ASSERT_TRUE(p && p->merge);
  // Select list, then hidden: avg's count and double precision sum, the GROUP BY item not
  // selected, HAVING's count(*), ORDER BY's max(amount). No HAVING, ORDER BY or LIMIT on the
  // shards.
  EXPECT_EQ(p->statements[0].sql, "SELECT status, sum(amount) AS avg, count(amount), " +
                                      realSum("amount") + ", user_id, count(*), max(amount), " +
                                      groupProbe("max(amount)") + ", " + groupProbe("status") +
                                      " FROM orders GROUP BY status, user_id");
  const MergePlan& m = *p->merge;
  EXPECT_EQ(m.group_columns, (std::vector<uint32_t>{0, 4}));
  ASSERT_EQ(m.aggregates.size(), 3u);
  EXPECT_EQ(m.aggregates[1].kind, MergeAggregate::Kind::kCount);
  EXPECT_EQ(m.aggregates[1].inputs, (std::vector<uint32_t>{5}));
  EXPECT_EQ(m.aggregates[2].kind, MergeAggregate::Kind::kMax);
  ASSERT_TRUE(m.having);
  EXPECT_EQ(m.having->kind, MergeExpression::Kind::kAnd);
  ASSERT_EQ(m.having->children.size(), 2u);
  const MergeExpression& gt = m.having->children[0];
  EXPECT_EQ(gt.kind, MergeExpression::Kind::kCompare);
  EXPECT_EQ(gt.op, ">");
  EXPECT_EQ(gt.children[0].kind, MergeExpression::Kind::kColumn);
  EXPECT_EQ(gt.children[0].column, 5u);
  EXPECT_EQ(gt.children[1].kind, MergeExpression::Kind::kConstant);
  EXPECT_EQ(gt.children[1].text, "2");
  EXPECT_EQ(gt.children[1].type_oid, 23);
  const MergeExpression& ne = m.having->children[1];
  EXPECT_EQ(ne.op, "<>");
  EXPECT_EQ(ne.children[0].column, 0u);
  EXPECT_EQ(ne.children[1].type_oid, 0);  // an unknown literal, typed from the other side
  ASSERT_EQ(m.sort.size(), 2u);
  EXPECT_EQ(m.sort[0].column, 6u);
  EXPECT_TRUE(m.sort[0].descending);
  EXPECT_EQ(m.sort[1].column, 1u);
  EXPECT_EQ(m.limit->text, "3");
  EXPECT_EQ(m.offset->text, "1");
  EXPECT_EQ(m.visible_columns, (std::vector<uint32_t>{0, 1}));
}

TEST_F(MultiShardTest, DistinctAggregatesGroupTheShardsByTheValue) {
  auto p = plan("SELECT status, count(DISTINCT user_id), sum(amount) FROM orders GROUP BY status");
  ASSERT_TRUE(p && p->merge);
  EXPECT_EQ(p->statements[0].sql, "SELECT status, user_id AS count, sum(amount), " +
                                      groupProbe("status") +
                                      " FROM orders GROUP BY status, user_id");
  EXPECT_EQ(p->merge->group_columns, (std::vector<uint32_t>{0}));
  EXPECT_EQ(p->merge->aggregates[0].kind, MergeAggregate::Kind::kDistinct);
  EXPECT_EQ(p->merge->aggregates[0].function, "count");
  EXPECT_EQ(p->merge->aggregates[0].inputs, (std::vector<uint32_t>{1}));
}

TEST_F(MultiShardTest, WritesAndDdl) {
  auto ins = plan("INSERT INTO users (id, name) VALUES (1, 'a'), (4, 'b'), (2, 'c') RETURNING id");
  ASSERT_TRUE(ins);
  EXPECT_EQ(ins->kind, MultiShardPlan::Kind::kWrite);
  ASSERT_EQ(ins->statements.size(), 2u);
  EXPECT_EQ(ins->statements[0].sql,
            "INSERT INTO users (id, name) VALUES (1, 'a'), (2, 'c') RETURNING id");
  EXPECT_EQ(ins->statements[1].sql, "INSERT INTO users (id, name) VALUES (4, 'b') RETURNING id");
  auto upd = plan("UPDATE users SET name = 'x'");
  ASSERT_TRUE(upd);
  EXPECT_EQ(upd->kind, MultiShardPlan::Kind::kWrite);
  EXPECT_FALSE(upd->replicated);
  auto ref = plan("INSERT INTO countries (code) VALUES ('fr')");
  ASSERT_TRUE(ref);
  EXPECT_TRUE(ref->replicated);
  auto ddl = plan("CREATE INDEX ON orders (amount)");
  ASSERT_TRUE(ddl);
  EXPECT_EQ(ddl->kind, MultiShardPlan::Kind::kDdl);
  auto drop = plan("DROP INDEX idx");
  ASSERT_TRUE(drop);
  EXPECT_EQ(drop->statements[0].sql, "DROP INDEX idx");
  EXPECT_EQ(drop->statements[1].sql, "DROP INDEX IF EXISTS idx");
  // In a transaction bound to a shard, too.
  SessionRouteContext ctx;
  ctx.in_transaction = true;
  ctx.transaction_shard = 1;
  auto in_txn = plan("TRUNCATE users", ctx);
  ASSERT_TRUE(in_txn);
  EXPECT_EQ(in_txn->statements.size(), 2u);
}

TEST_F(MultiShardTest, RefusalsNameWhatIsNotSupported) {
  const auto refused = [&](std::string_view sql, std::string_view words) {
    const Error e = refusal(sql);
    EXPECT_EQ(e.sqlstate, "0A000") << sql;
    EXPECT_NE(e.message.find(words), std::string::npos) << sql << ": " << e.message;
  };
  refused("SELECT id, rank() OVER (ORDER BY id) FROM users", "window functions");
  refused("SELECT DISTINCT ON (name) * FROM users", "DISTINCT ON");
  refused("SELECT * FROM users u JOIN events e ON e.id = u.id", "not co-located");
  refused("SELECT * FROM users u JOIN documents d ON d.slug = u.name",
          "not on their sharding keys");
  refused("SELECT * FROM users WHERE name IN (SELECT name FROM orders)", "subquery");
  refused("SELECT * FROM (SELECT * FROM users LIMIT 5) s", "LIMIT in a subquery");
  refused("SELECT id FROM users UNION SELECT user_id FROM orders", "UNION");
  refused("SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY id) FROM users", "percentile_disc");
  refused("SELECT mode() WITHIN GROUP (ORDER BY id) FROM users", "mode");
  refused("SELECT jsonb_agg(id) FROM users", "jsonb_agg");
  refused("SELECT sum(id ORDER BY id) FROM users", "ORDER BY inside");
  refused("SELECT array_agg(DISTINCT id ORDER BY age) FROM users", "ordered by the aggregated");
  refused("SELECT * FROM users FOR UPDATE", "FOR UPDATE");
  refused("SELECT max(id) - min(id) FROM users", "over aggregates");
  refused("EXPLAIN SELECT * FROM users", "EXPLAIN");
  refused("INSERT INTO users (id) SELECT id + 1 FROM users", "INSERT ... SELECT");
}

TEST_F(MultiShardTest, CorrelatedSubqueriesOnTheKeyAreAllowed) {
  plan("SELECT u.id, (SELECT sum(amount) FROM orders o WHERE o.user_id = u.id) FROM users u");
  plan(
      "SELECT * FROM users u WHERE EXISTS (SELECT 1 FROM orders o WHERE o.user_id = u.id "
      "ORDER BY amount LIMIT 1)");
  plan(
      "SELECT * FROM users u, LATERAL (SELECT * FROM orders o WHERE o.user_id = u.id "
      "ORDER BY amount DESC LIMIT 3) top");
  plan("SELECT count(*) FROM (SELECT user_id, sum(amount) FROM orders GROUP BY user_id) s");
}

}  // namespace
}  // namespace shardgate::planner
