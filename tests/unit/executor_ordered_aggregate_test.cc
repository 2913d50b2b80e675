// Unit tests of string_agg / array_agg with their own ORDER BY (and DISTINCT) merged across shards,
// of avg(real) from double precision sums, and of the array wire forms they rely on. Expected
// values are what Postgres 15 gives for the same rows on one server.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "executor/aggregate.h"
#include "executor/pg_array.h"
#include "proxy/wire/backend_messages.h"
#include "tests/unit/executor_test_support.h"

namespace shardgate::executor {
namespace {

using planner::MergeAggregate;
using planner::MergePlan;
using Row = std::vector<std::optional<std::string>>;
using AggKind = MergeAggregate::Kind;

std::string be32(uint32_t v) {
  return std::string{static_cast<char>(v >> 24), static_cast<char>(v >> 16),
                     static_cast<char>(v >> 8), static_cast<char>(v)};
}

std::string payload(const Row& row) {
  return testing::dataRowPayload(row);
}

// Runs the plan's aggregation over the shard rows (all shards' rows in one list: the aggregate
// does not care which shard a row came from). Returns the merged rows or the error.
Result<std::vector<MergedRow>> aggregate(const MergePlan& plan,
                                         const std::vector<ColumnType>& columns,
                                         const std::vector<Row>& rows) {
  auto collation = Collation::open("C");
  if (!collation.ok()) return std::move(collation).error();
  static MemoryBudget budget(1 << 26);
  auto collations = std::make_shared<ColumnCollations>(*collation, plan.collations, columns);
  auto agg = HashAggregate::create(plan, columns, collations, &budget);
  if (!agg.ok()) return std::move(agg).error();
  for (const Row& r : rows) {
    auto row = ShardRow::parse(payload(r), columns.size());
    if (!row.ok()) return std::move(row).error();
    Status s = agg->add(*row);
    if (!s.ok()) return std::move(s).error();
  }
  return agg->finish();
}

MergeAggregate ordered(AggKind kind, std::vector<uint32_t> inputs,
                       std::vector<MergeAggregate::OrderKey> order) {
  MergeAggregate a;
  a.kind = kind;
  a.function = kind == AggKind::kOrderedStringAgg ? "string_agg" : "array_agg";
  a.inputs = std::move(inputs);
  a.order = std::move(order);
  return a;
}

TEST(PgArrayTest, SplitsTextArraysWithQuotingNullsAndNesting) {
  auto b = parsePgArray(R"({1,"a b",NULL,"NULL","x\"y\\z","{,}",""})", 0);
  ASSERT_TRUE(b.ok()) << b.error().describe();
  ASSERT_EQ(b->items.size(), 7u);
  EXPECT_EQ(*b->items[0], "1");
  EXPECT_EQ(unquoteArrayItem(*b->items[1]), "a b");
  EXPECT_FALSE(b->items[2]);
  EXPECT_EQ(unquoteArrayItem(*b->items[3]), "NULL");
  EXPECT_EQ(unquoteArrayItem(*b->items[4]), R"(x"y\z)");
  EXPECT_EQ(unquoteArrayItem(*b->items[5]), "{,}");
  EXPECT_EQ(unquoteArrayItem(*b->items[6]), "");
  auto nested = parsePgArray(R"({{1,"}"},{NULL,4}})", 0);
  ASSERT_TRUE(nested.ok());
  ASSERT_EQ(nested->items.size(), 2u);
  EXPECT_EQ(*nested->items[0], R"({1,"}"})");
  EXPECT_EQ(*nested->items[1], "{NULL,4}");
  auto empty = parsePgArray("{}", 0);
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->items.empty());
  auto bounds = parsePgArray("[0:1]={1,2}", 0);
  ASSERT_FALSE(bounds.ok());
  EXPECT_EQ(bounds.error().sqlstate, "0A000");
  for (const char* bad : {"", "{", "{1,2", "{\"a}", "{1,,2}", "{{1}", "1,2}", "{a\"b}"}) {
    EXPECT_FALSE(parsePgArray(bad, 0).ok()) << bad;
  }
  // box[] separates elements with ';'
  auto boxes = parsePgArray("{(1,1),(0,0);(2,2),(1,1)}", 0, arrayDelimiterOf(1020));
  ASSERT_TRUE(boxes.ok());
  EXPECT_EQ(boxes->items.size(), 2u);
}

TEST(PgArrayTest, BinaryArraysRoundTrip) {
  // array_send of '{7,NULL}'::int4[]
  const std::string one =
      be32(1) + be32(1) + be32(23) + be32(2) + be32(1) + be32(4) + be32(7) + be32(0xFFFFFFFFu);
  auto a = parsePgArray(one, 1);
  ASSERT_TRUE(a.ok());
  ASSERT_EQ(a->items.size(), 2u);
  EXPECT_EQ(*a->items[0], be32(7));
  EXPECT_FALSE(a->items[1]);
  std::vector<const std::optional<std::string>*> items = {&a->items[0], &a->items[1]};
  EXPECT_EQ(buildBinaryArray(items, 23, true, ""), one);
  // '{{1,2},{3,4}}'::int4[]: items are the sub-arrays' elements with their lengths.
  std::string two = be32(2) + be32(0) + be32(23) + be32(2) + be32(1) + be32(2) + be32(1);
  for (uint32_t v : {1, 2, 3, 4}) two += be32(4) + be32(v);
  auto b = parsePgArray(two, 1);
  ASSERT_TRUE(b.ok());
  ASSERT_EQ(b->items.size(), 2u);
  EXPECT_EQ(*b->items[1], be32(4) + be32(3) + be32(4) + be32(4));
  std::vector<const std::optional<std::string>*> sub = {&b->items[0], &b->items[1]};
  EXPECT_EQ(buildBinaryArray(sub, 23, false, b->inner_dimensions), two);
  for (size_t cut = 0; cut < one.size(); ++cut) {
    EXPECT_FALSE(parsePgArray(one.substr(0, cut), 1).ok()) << cut;
  }
  EXPECT_FALSE(parsePgArray(one + "x", 1).ok());
}

// A shard's array value is input: whatever the bytes, parsing answers (a value or an error) and
// never reads past them. Mutations of valid arrays, in both formats, from a fixed seed.
TEST(PgArrayTest, HostileValuesAreErrorsNotCrashes) {
  std::string two = be32(2) + be32(0) + be32(23) + be32(2) + be32(1) + be32(2) + be32(1);
  for (uint32_t v : {1, 2, 3, 4}) two += be32(4) + be32(v);
  const std::vector<std::pair<std::string, int16_t>> seeds = {
      {R"({a,"b c",NULL,"x\"y",{1,2}})", 0},
      {"{{1,2},{3,4}}", 0},
      {"[0:1]={1,2}", 0},
      {be32(1) + be32(1) + be32(23) + be32(2) + be32(1) + be32(4) + be32(7) + be32(0xFFFFFFFFu), 1},
      {two, 1},
  };
  uint64_t state = 0x9E3779B97F4A7C15ull;
  const auto next = [&state] {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
  };
  const std::string specials("{}\",\\ NUL\xff\x80\0", 12);  // the last one a NUL byte
  size_t parsed = 0;
  for (int round = 0; round < 20000; ++round) {
    const auto& [seed, format] = seeds[next() % seeds.size()];
    std::string v = seed;
    const int edits = 1 + static_cast<int>(next() % 4);
    for (int e = 0; e < edits && !v.empty(); ++e) {
      const size_t at = next() % v.size();
      switch (next() % 4) {
        case 0:
          v[at] = static_cast<char>(next());
          break;
        case 1:
          v.erase(at, 1 + next() % 4);
          break;
        case 2:
          v.insert(at, 1, specials[next() % specials.size()]);
          break;
        default:
          v.resize(at);
          break;
      }
    }
    auto a = parsePgArray(v, format);
    if (!a.ok()) continue;
    ++parsed;
    // What parsed can be built back without trouble.
    std::vector<const std::optional<std::string>*> items;
    for (const auto& item : a->items) items.push_back(&item);
    if (format == 0) {
      (void)buildTextArray(items);
      for (const auto& item : a->items) {
        if (item) (void)unquoteArrayItem(*item);
      }
    } else {
      (void)buildBinaryArray(items, a->element_type, a->has_null, a->inner_dimensions);
    }
  }
  EXPECT_GT(parsed, 0u);  // the mutations are not all rejected outright
}

TEST(PgArrayTest, QuotesAsArrayOut) {
  std::string out;
  for (std::string_view e : {"a", "", "null", "a,b", "x\"y", "b\\s", "{", "two words", "é"}) {
    if (!out.empty()) out += ',';
    appendQuotedArrayElement(e, out);
  }
  EXPECT_EQ(out, R"(a,"","null","a,b","x\"y","b\\s","{","two words",é)");
  EXPECT_EQ(elementTypeOf(1007), pg_type::kInt4);
  EXPECT_EQ(elementTypeOf(1009), pg_type::kText);
  EXPECT_EQ(elementTypeOf(4242), 0);
}

// Two shards, rows (id, name):
//   shard 0: (1,'b'),(4,NULL),(5,'a,b'),(7,'c d')   shard 1: (2,'a'),(3,'b'),(6,'"q"')
// select string_agg(name, ', ' ORDER BY name, id), array_agg(name ORDER BY name DESC, id)
//   -> "\"q\", a, a,b, b, b, c d" | {NULL,"c d",b,b,"a,b",a,"\"q\""}   (collation C)
TEST(OrderedAggregateTest, StringAggAndArrayAggMergeByTheirOrder) {
  MergePlan plan;
  plan.aggregate = true;
  // shard columns: 0 array_agg(name ORDER BY name, id), 1 ', ', 2 array_agg(name ...),
  // 3 array_agg(id ...), 4 array_agg(name ORDER BY name DESC, id), 5 array_agg(name ...),
  // 6 array_agg(id ...)
  plan.aggregates = {
      ordered(AggKind::kOrderedStringAgg, {0, 1}, {{2, false, false}, {3, false, false}}),
      ordered(AggKind::kOrderedArrayAgg, {4}, {{5, true, true}, {6, false, false}})};
  const std::vector<ColumnType> columns = {{1009, 0}, {25, 0},   {1009, 0}, {1007, 0},
                                           {1009, 0}, {1009, 0}, {1007, 0}};
  const std::vector<Row> rows = {
      {R"({"a,b",b,"c d",NULL})", ", ", R"({"a,b",b,"c d",NULL})", "{5,1,7,4}",
       R"({NULL,"c d",b,"a,b"})", R"({NULL,"c d",b,"a,b"})", "{4,7,1,5}"},
      {R"({"\"q\"",a,b})", ", ", R"({"\"q\"",a,b})", "{6,2,3}", R"({b,a,"\"q\""})",
       R"({b,a,"\"q\""})", "{3,2,6}"},
  };
  auto merged = aggregate(plan, columns, rows);
  ASSERT_TRUE(merged.ok()) << merged.error().describe();
  ASSERT_EQ(merged->size(), 1u);
  const MergedRow& r = (*merged)[0];
  EXPECT_EQ(*r.values[0], R"("q", a, a,b, b, b, c d)");
  EXPECT_EQ(*r.values[4], R"({NULL,"c d",b,b,"a,b",a,"\"q\""})");
}

TEST(OrderedAggregateTest, GroupsWithoutRowsAndNullValues) {
  MergePlan plan;
  plan.aggregate = true;
  plan.group_columns = {0};
  plan.aggregates = {ordered(AggKind::kOrderedStringAgg, {1, 2}, {{3, false, false}}),
                     ordered(AggKind::kOrderedArrayAgg, {4}, {{5, false, true}})};
  const std::vector<ColumnType> columns = {{25, 0},   {1009, 0}, {25, 0},
                                           {1007, 0}, {1007, 0}, {1007, 0}};
  // group g1: only NULL names -> string_agg NULL, array_agg {NULL,NULL} ordered by id NULLS FIRST
  // group g2: FILTER left nothing on one shard (NULL partials)
  const std::vector<Row> rows = {
      {"g1", "{NULL}", "|", "{2}", "{2}", "{2}"},
      {"g1", "{NULL}", "|", "{1}", "{1}", "{1}"},
      {"g2", std::nullopt, "|", std::nullopt, std::nullopt, std::nullopt},
      {"g2", "{x}", "|", "{9}", "{NULL}", "{NULL}"},
      {"g2", "{y}", "|", "{3}", "{8}", "{8}"},
  };
  auto merged = aggregate(plan, columns, rows);
  ASSERT_TRUE(merged.ok()) << merged.error().describe();
  ASSERT_EQ(merged->size(), 2u);
  EXPECT_FALSE((*merged)[0].values[1]);
  EXPECT_EQ(*(*merged)[0].values[4], "{1,2}");
  EXPECT_EQ(*(*merged)[1].values[1], "y|x");
  EXPECT_EQ(*(*merged)[1].values[4], "{NULL,8}");
}

TEST(OrderedAggregateTest, BinaryArraysAndByteaStrings) {
  auto int4Array = [](std::vector<std::optional<uint32_t>> values) {
    std::string a =
        be32(1) + be32(0) + be32(23) + be32(static_cast<uint32_t>(values.size())) + be32(1);
    for (auto v : values) a += v ? be32(4) + be32(*v) : be32(0xFFFFFFFFu);
    return a;
  };
  auto byteaArray = [](std::vector<std::string> values) {
    std::string a =
        be32(1) + be32(0) + be32(17) + be32(static_cast<uint32_t>(values.size())) + be32(1);
    for (const auto& v : values) a += be32(static_cast<uint32_t>(v.size())) + v;
    return a;
  };
  MergePlan plan;
  plan.aggregate = true;
  // array_agg(id ORDER BY id DESC) in binary; string_agg(b, '\x2c'::bytea ORDER BY id) in binary
  plan.aggregates = {ordered(AggKind::kOrderedArrayAgg, {0}, {{1, true, true}}),
                     ordered(AggKind::kOrderedStringAgg, {2, 3}, {{4, false, false}})};
  const std::vector<ColumnType> columns = {{1007, 1}, {1007, 1}, {1001, 1}, {17, 1}, {1007, 1}};
  const std::vector<Row> rows = {
      {int4Array({5, 1}), int4Array({5, 1}), byteaArray({"\x01", "\x05"}), ",", int4Array({1, 5})},
      {int4Array({4, 2}), int4Array({4, 2}), byteaArray({"\x02", "\x04"}), ",", int4Array({2, 4})},
  };
  auto merged = aggregate(plan, columns, rows);
  ASSERT_TRUE(merged.ok()) << merged.error().describe();
  const MergedRow& r = (*merged)[0];
  const std::string want = int4Array({5, 4, 2, 1});
  EXPECT_EQ(*r.values[0], want);
  EXPECT_EQ(*r.values[2], std::string("\x01,\x02,\x04,\x05"));
  // The same in text: bytea as hex, delimiter "\x2c".
  const std::vector<ColumnType> text = {{1007, 0}, {1007, 0}, {1001, 0}, {17, 0}, {1007, 0}};
  const std::vector<Row> text_rows = {
      {"{5,1}", "{5,1}", R"({"\\x01","\\x05"})", R"(\x2c)", "{1,5}"},
      {"{4,2}", "{4,2}", R"({"\\x02","\\x04"})", R"(\x2c)", "{2,4}"},
  };
  auto merged_text = aggregate(plan, text, text_rows);
  ASSERT_TRUE(merged_text.ok()) << merged_text.error().describe();
  EXPECT_EQ(*(*merged_text)[0].values[0], "{5,4,2,1}");
  EXPECT_EQ(*(*merged_text)[0].values[2], R"(\x012c022c042c05)");
}

TEST(OrderedAggregateTest, MismatchedOrUnorderableKeysAreErrors) {
  MergePlan plan;
  plan.aggregate = true;
  plan.aggregates = {ordered(AggKind::kOrderedArrayAgg, {0}, {{1, false, false}})};
  auto short_keys = aggregate(plan, {{1007, 0}, {1007, 0}}, {{"{1,2}", "{1}"}});
  ASSERT_FALSE(short_keys.ok());
  EXPECT_EQ(short_keys.error().sqlstate, "XX000");
  auto jsonb_keys = aggregate(plan, {{1007, 0}, {3807, 0}}, {{"{1}", "{}"}});
  ASSERT_FALSE(jsonb_keys.ok());
  EXPECT_EQ(jsonb_keys.error().sqlstate, "0A000");
  auto garbage = aggregate(plan, {{1007, 0}, {1007, 0}}, {{"{1,2", "{1,2}"}});
  ASSERT_FALSE(garbage.ok());
}

// array_agg(DISTINCT x ORDER BY x DESC) over {3, NULL, 1} and {1, 2}: {NULL,3,2,1}
TEST(OrderedAggregateTest, DistinctFollowsTheDirection) {
  MergePlan plan;
  plan.aggregate = true;
  MergeAggregate a;
  a.kind = AggKind::kDistinct;
  a.function = "array_agg";
  a.inputs = {0};
  a.order = {{0, true, true}};
  plan.aggregates = {a};
  auto merged = aggregate(plan, {{23, 0}}, {{"3"}, {std::nullopt}, {"1"}, {"1"}, {"2"}});
  ASSERT_TRUE(merged.ok()) << merged.error().describe();
  EXPECT_EQ(*(*merged)[0].values[0], "{NULL,3,2,1}");
  plan.aggregates[0].order = {{0, false, false}};
  merged = aggregate(plan, {{23, 0}}, {{"3"}, {std::nullopt}, {"1"}});
  ASSERT_TRUE(merged.ok());
  EXPECT_EQ(*(*merged)[0].values[0], "{1,3,NULL}");
}

// avg(real): sum(x) is real, the third input the double precision sum Postgres uses.
// select avg(x) from (values (0.1::real),(0.2::real),(0.7::real)) v(x) -> 0.3333333308498065
TEST(OrderedAggregateTest, AvgOfRealUsesTheDoublePrecisionSum) {
  MergePlan plan;
  plan.aggregate = true;
  MergeAggregate a;
  a.kind = AggKind::kAvg;
  a.function = "avg";
  a.inputs = {0, 1, 2};
  plan.aggregates = {a};
  // shard 0: 0.1, 0.2 (float8 sum of the reals 0.30000000447034836); shard 1: 0.7
  auto merged = aggregate(plan, {{700, 0}, {20, 0}, {701, 0}},
                          {{"0.3", "2", "0.30000000447034836"}, {"0.7", "1", "0.699999988079071"}});
  ASSERT_TRUE(merged.ok()) << merged.error().describe();
  EXPECT_EQ(*(*merged)[0].values[0], "0.3333333308498065");
  MemoryBudget budget(1 << 20);
  auto typed = HashAggregate::create(plan, {{700, 0}, {20, 0}, {701, 0}}, nullptr, &budget);
  ASSERT_TRUE(typed.ok());
  EXPECT_EQ(typed->mergedColumns()[0].oid, pg_type::kFloat8);  // avg(real) is double precision
  plan.aggregates[0].inputs = {0, 1};
  auto refused = aggregate(plan, {{700, 0}, {20, 0}}, {{"0.3", "2"}});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().sqlstate, "0A000");
}

}  // namespace
}  // namespace shardgate::executor
