// Unit tests of ResultMerger: shard partial results in, the client's rows out. The shard rows
// and the expected answers were produced by Postgres 15.20 on one table `t` (40 rows, see
// kTableSql), split into three "shards" by id % 3: each shard's rows are the partial query
// over its third, the expected rows the original query over the whole table.
#include <gtest/gtest.h>

#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "executor/collation.h"
#include "executor/column_collations.h"
#include "executor/decimal.h"
#include "executor/result_merger.h"
#include "executor/value.h"
#include "proxy/wire/backend_messages.h"
#include "tests/unit/executor_test_support.h"

namespace shardgate::executor {
namespace {

using planner::MergeAggregate;
using planner::MergeExpression;
using planner::MergePlan;
using planner::MergeSortKey;
using Row = std::vector<std::optional<std::string>>;
using AggKind = MergeAggregate::Kind;

// The data behind the expected values (database en_US.UTF-8):
[[maybe_unused]] constexpr const char* kTableSql = R"sql(
create table t (id int, g text, i4 int, i8 bigint, n numeric, f float8, b bool, s text);
insert into t select i,
  (array['x','Y','é',null])[1 + i % 4],
  case when i % 7 = 3 then null else (i * 37 % 101) - 50 end,
  case when i % 5 = 2 then null else (i::bigint * 987654321987) % 9000000000000000 - 4000000000000000 end,
  case when i % 6 = 1 then null else round(((i * 7919) % 10007 - 5000) / 37.0, (i % 4)) end,
  case when i % 8 = 5 then null else ((i * 13) % 29 - 14) * 0.25 end,
  case when i % 9 = 4 then null else i % 3 <> 0 end,
  case when i % 10 = 7 then null else (array['apple','Banana','cherry','Äpfel','banana','date'])[1 + i % 6] || i end
from generate_series(1, 40) i;
)sql";

// "a|<NULL>|b" -> {"a", NULL, "b"}
Row splitRow(std::string_view line) {
  Row row;
  size_t start = 0;
  while (true) {
    const size_t bar = line.find('|', start);
    const std::string_view field =
        line.substr(start, bar == std::string_view::npos ? std::string_view::npos : bar - start);
    if (field == "<NULL>") {
      row.emplace_back(std::nullopt);
    } else {
      row.emplace_back(std::string(field));
    }
    if (bar == std::string_view::npos) break;
    start = bar + 1;
  }
  return row;
}

std::string rowDescription(const std::vector<int32_t>& oids, int16_t format = 0) {
  wire::RowDescription d;
  for (size_t i = 0; i < oids.size(); ++i) {
    wire::FieldDescription f;
    f.name = "c" + std::to_string(i);
    f.type_oid = oids[i];
    f.type_size = typeLength(oids[i]);
    f.type_modifier = oids[i] == pg_type::kNumeric ? 655366 : -1;
    f.format = format;
    d.fields.push_back(f);
  }
  std::string framed;
  d.encode(framed);
  return framed.substr(5);
}

std::string dataRow(const Row& row) {
  return testing::dataRowPayload(row);
}

std::vector<Row> decodeOutput(const std::string& out) {
  std::vector<Row> rows;
  size_t pos = 0;
  while (pos < out.size()) {
    EXPECT_EQ(out[pos], 'D');
    const uint32_t length =
        (static_cast<uint32_t>(static_cast<unsigned char>(out[pos + 1])) << 24) |
        (static_cast<uint32_t>(static_cast<unsigned char>(out[pos + 2])) << 16) |
        (static_cast<uint32_t>(static_cast<unsigned char>(out[pos + 3])) << 8) |
        static_cast<uint32_t>(static_cast<unsigned char>(out[pos + 4]));
    auto row = wire::DataRow::decode(std::string_view(out).substr(pos + 5, length - 4));
    EXPECT_TRUE(row.ok());
    if (!row.ok()) break;
    rows.push_back(row->values);
    pos += 1 + length;
  }
  return rows;
}

std::string show(const std::vector<Row>& rows) {
  std::ostringstream s;
  for (const Row& r : rows) {
    for (size_t i = 0; i < r.size(); ++i) s << (i ? "|" : "") << (r[i] ? *r[i] : "<NULL>");
    s << "\n";
  }
  return s.str();
}

struct MergeRun {
  std::vector<Row> rows;
  std::optional<Error> error;
  std::string client_description;
};

// Feeds every shard's RowDescription and rows (interleaved round-robin, as they might arrive),
// finishes the shards and drains.
MergeRun runMerge(std::shared_ptr<const MergePlan> plan, MergeOptions options,
                  const std::vector<int32_t>& oids, const std::vector<std::vector<Row>>& shards,
                  int16_t format = 0) {
  MergeRun run;
  options.shard_count = shards.size();
  auto merger = ResultMerger::create(plan, options);
  if (!merger.ok()) {
    run.error = merger.error();
    return run;
  }
  ResultMerger& m = **merger;
  std::string out;
  auto check = [&](Status s) {
    if (!s.ok() && !run.error) run.error = s.error();
    return s.ok();
  };
  for (size_t shard = 0; shard < shards.size(); ++shard) {
    if (!check(m.setRowDescription(shard, rowDescription(oids, format)))) return run;
  }
  run.client_description = m.clientRowDescription();
  size_t longest = 0;
  for (const auto& s : shards) longest = std::max(longest, s.size());
  for (size_t i = 0; i < longest; ++i) {
    for (size_t shard = 0; shard < shards.size(); ++shard) {
      if (i < shards[shard].size() && !check(m.addRow(shard, dataRow(shards[shard][i]))))
        return run;
      if (i + 1 == shards[shard].size()) m.shardFinished(shard);
    }
    if (!check(m.drain(out))) return run;
  }
  for (size_t shard = 0; shard < shards.size(); ++shard) m.shardFinished(shard);
  while (!m.done()) {
    const size_t before = out.size();
    if (!check(m.drain(out, 64))) return run;
    if (out.size() == before && !m.done()) {
      run.error = Error::make("XX000", "merge made no progress");
      return run;
    }
  }
  run.rows = decodeOutput(out);
  EXPECT_EQ(m.rowsOut(), run.rows.size());
  return run;
}

std::vector<Row> rowsOf(const std::vector<std::string>& lines) {
  std::vector<Row> rows;
  for (const auto& l : lines) rows.push_back(splitRow(l));
  return rows;
}

MergeAggregate agg(AggKind kind, std::string function, std::vector<uint32_t> inputs) {
  MergeAggregate a;
  a.kind = kind;
  a.function = std::move(function);
  a.inputs = std::move(inputs);
  return a;
}

// ---- the grouped aggregate over t ----

// Shard query (per shard, id % 3 = k):
//   select g, count(*), count(i4), sum(i4), sum(i8), sum(n), min(n), max(s),
//          sum(i4), count(i4), sum(n), count(n), sum(f), count(f), bool_and(b), bool_or(b),
//          count(n), sum(n), sum(n*n), count(i4), sum(i4)::numeric, sum(i4::numeric*i4),
//          count(i8), sum(i8), sum(i8::numeric*i8), count(n), sum(n), sum(n*n)
//   from t where id % 3 = k group by g order by g
const std::vector<int32_t> kAggregateOids = {
    25, 20, 20, 20,   1700, 1700, 1700, 25,   20, 20,   1700, 20, 701,  20,
    16, 16, 20, 1700, 1700, 20,   1700, 1700, 20, 1700, 1700, 20, 1700, 1700};

std::shared_ptr<MergePlan> aggregatePlan(bool grouped) {
  auto plan = std::make_shared<MergePlan>();
  plan->aggregate = true;
  const uint32_t o = grouped ? 1 : 0;  // column offset: g comes first when grouped
  if (grouped) plan->group_columns = {0};
  plan->aggregates = {
      agg(AggKind::kCount, "count", {o + 0}),
      agg(AggKind::kCount, "count", {o + 1}),
      agg(AggKind::kSum, "sum", {o + 2}),
      agg(AggKind::kSum, "sum", {o + 3}),
      agg(AggKind::kSum, "sum", {o + 4}),
      agg(AggKind::kMin, "min", {o + 5}),
      agg(AggKind::kMax, "max", {o + 6}),
      agg(AggKind::kAvg, "avg", {o + 7, o + 8}),
      agg(AggKind::kAvg, "avg", {o + 9, o + 10}),
      agg(AggKind::kAvg, "avg", {o + 11, o + 12}),
      agg(AggKind::kBoolAnd, "bool_and", {o + 13}),
      agg(AggKind::kBoolOr, "bool_or", {o + 14}),
      agg(AggKind::kVariance, "variance", {o + 15, o + 16, o + 17}),
      agg(AggKind::kVariance, "stddev_samp", {o + 18, o + 19, o + 20}),
      agg(AggKind::kVariance, "var_pop", {o + 21, o + 22, o + 23}),
      agg(AggKind::kVariance, "stddev_pop", {o + 24, o + 25, o + 26}),
  };
  plan->aggregates[7].result_type_oid = pg_type::kNumeric;
  plan->visible_columns = {o + 0, o + 1,  o + 2,  o + 3,  o + 4,  o + 5,  o + 6,  o + 7,
                           o + 9, o + 11, o + 13, o + 14, o + 15, o + 18, o + 21, o + 24};
  if (grouped) plan->visible_columns.insert(plan->visible_columns.begin(), 0);
  return plan;
}

TEST(ExecutorMergeTest, GroupedAggregatesMatchPostgres) {
  auto plan = aggregatePlan(true);
  plan->sort = {MergeSortKey{0, false, false}};  // ORDER BY g (NULLS LAST)
  const std::vector<std::vector<Row>> shards = {
      rowsOf({
          "é|3|3|30|-11946666666612702|63.22|-69.08|apple6|30|3|63.22|3|-1.75|3|f|f|3|63.22|13525."
          "8546|3|30|3500|3|-11946666666612702|47574562413836887896846251492940|3|63.22|13525.8546",
          "x|3|2|-41|-7940740740680780|129|-3|apple36|-41|2|129|3|-1.25|3|f|f|3|129|17699|2|-41|"
          "1061|2|-7940740740680780|31527751988550072532457287932368|3|129|17699",
          "Y|3|3|-41|-11937777777714819|-174.2|-104.2|Äpfel9|-41|3|-174.2|3|-1|2|f|f|3|-174.2|"
          "22312.46|3|-41|2481|3|-11937777777714819|47503793689485792496681992980259|3|-174.2|"
          "22312.46",
          "<NULL>|4|3|19|-11943703703646741|128.324|-36.054|Äpfel39|19|3|128.324|4|-2|4|f|f|4|128."
          "324|22127.780526|3|19|2041|3|-11943703703646741|47551341563333770999178707436595|4|128."
          "324|22127.780526",
      }),
      rowsOf({
          "é|3|2|-48|-7956543209832572|197.41|-24.35|banana34|-48|2|197.41|3|1|3|t|t|3|197.41|"
          "25183.8345|2|-48|1952|2|-7956543209832572|31653570857751608938443564980264|3|197.41|"
          "25183.8345",
          "x|4|4|26|-15913086419665144|-96|-92|banana40|26|4|-96|4|3.75|4|t|t|4|-96|20264|4|26|"
          "2210|4|-15913086419665144|63307282181895820379383844416864|4|-96|20264",
          "Y|4|4|-14|-11961481481442507|<NULL>|<NULL>|Banana25|-14|4|<NULL>|0|-2.25|2|t|t|0|<NULL>|"
          "<NULL>|4|-14|2090|3|-11961481481442507|47692627343082548982533944394355|0|<NULL>|<NULL>",
          "<NULL>|3|2|54|-7950617283900650|<NULL>|<NULL>|Banana31|54|2|<NULL>|0|0.75|3|t|t|0|<NULL>"
          "|<NULL>|2|54|2258|2|-7950617283900650|31606227830726175752087892439418|0|<NULL>|<NULL>",
      }),
      rowsOf({
          "é|4|3|-10|-11922962962885014|-186.86|-115.89|cherry38|-10|3|-186.86|4|-0.5|4|t|t|4|-186."
          "86|27303.0042|3|-10|1954|3|-11922962962885014|47385962870894468915155490839404|4|-186."
          "86|27303.0042",
          "x|3|3|50|-7972345678984364|-5|-48|cherry8|50|3|-5|3|3.25|3|t|t|3|-5|12341|3|50|2754|2|-"
          "7972345678984364|31779218045806631174711635470416|3|-5|12341",
          "Y|3|2|47|-7966419753052442|232.5|-12.6|date5|47|2|232.5|3|1|1|t|t|3|232.5|30197.97|2|47|"
          "1325|2|-7966419753052442|31732202773697270494181629994354|3|232.5|30197.97",
          "<NULL>|3|3|-21|-11931851851782897|28.107|-80.784|date35|-21|3|28.107|3|3.5|3|t|t|3|28."
          "107|12456.844877|3|-21|3347|3|-11931851851782897|47456643803750187751259302816875|3|28."
          "107|12456.844877",
      }),
  };
  MergeOptions options;
  options.collation = "en_US.UTF-8";
  if (!Collation::open(options.collation).ok()) GTEST_SKIP() << "en_US.UTF-8 not installed";
  const MergeRun run = runMerge(plan, options, kAggregateOids, shards);
  ASSERT_FALSE(run.error) << run.error->describe();
  // select g, count(*), count(i4), sum(i4), sum(i8), sum(n), min(n), max(s), avg(i4), avg(n),
  //        avg(f), bool_and(b), bool_or(b), variance(n), stddev_samp(i4), var_pop(i8),
  //        stddev_pop(n) from t group by g order by g
  const std::vector<Row> expected = rowsOf({
      "é|10|8|-28|-31826172839330288|73.77|-115.89|cherry38|-3.5000000000000000|7.3770000000000000|"
      "-0.125|f|t|7274.2768900000000000|32.3109888428070242|117055327168752080595380280|80."
      "9126022384646828",
      "x|10|9|35|-31826172839330288|28|-92|cherry8|3.8888888888888889|2.8000000000000000|0.575|f|t|"
      "5580.6222222222222222|27.1313676601661773|136564548363544094027943660|70.8700218710280913",
      "Y|10|9|-8|-31865679012209768|58.3|-104.2|date5|-0.88888888888888888889|9.7166666666666667|-"
      "0.45|f|t|10388.789666666667|27.1313676601661773|117055327168752080595380280|93."
      "0447458066398407",
      "<NULL>|10|8|52|-31826172839330288|156.431|-80.784|date35|6.5000000000000000|22."
      "3472857142857143|0.225|f|t|5181.4695252380952381|32.3109888428070242|"
      "131687243064846090669802815|66.6427760005630655",
  });
  EXPECT_EQ(show(run.rows), show(expected));

  // The client sees the visible columns with the aggregates' result types.
  auto description = wire::RowDescription::decode(run.client_description);
  ASSERT_TRUE(description.ok());
  std::vector<int32_t> types;
  for (const auto& f : description->fields) types.push_back(f.type_oid);
  EXPECT_EQ(types, (std::vector<int32_t>{25, 20, 20, 20, 1700, 1700, 1700, 25, 1700, 1700, 701, 16,
                                         16, 1700, 1700, 1700, 1700}));
  EXPECT_EQ(description->fields[8].type_modifier, -1);  // avg(i4): int8 sum became numeric
  EXPECT_EQ(description->fields[8].type_size, -1);
  EXPECT_EQ(description->fields[10].type_size, 8);          // avg(f): float8
  EXPECT_EQ(description->fields[4].type_modifier, 655366);  // sum(i8) kept the shard's numeric
}

TEST(ExecutorMergeTest, UngroupedAggregatesMatchPostgres) {
  auto plan = aggregatePlan(false);
  const std::vector<std::vector<Row>> shards = {
      rowsOf({"13|11|-33|-43768888888655042|146.344|-104.2|apple6|-33|11|146.344|13|-6|12|f|f|13|"
              "146.344|75665.095126|11|-33|9083|11|-43768888888655042|"
              "174157449655206523925164239842162|13|146.344|75665.095126"}),
      rowsOf({"14|12|18|-43781728394840873|101.41|-92|banana40|18|12|101.41|7|3.25|12|t|t|7|101.41|"
              "45447.8345|12|18|8510|11|-43781728394840873|174259708213456154052449246230901|7|101."
              "41|45447.8345"}),
      rowsOf({"13|11|66|-39793580246704717|68.747|-115.89|date5|66|11|68.747|13|7.25|11|t|t|13|68."
              "747|82298.819077|11|66|9380|10|-39793580246704717|158354027494148558335308059121049|"
              "13|68.747|82298.819077"}),
  };
  std::vector<int32_t> oids(kAggregateOids.begin() + 1, kAggregateOids.end());
  MergeOptions options;
  options.collation = "en_US.UTF-8";
  if (!Collation::open(options.collation).ok()) GTEST_SKIP() << "en_US.UTF-8 not installed";
  const MergeRun run = runMerge(plan, options, oids, shards);
  ASSERT_FALSE(run.error) << run.error->describe();
  // select count(*), count(i4), sum(i4), ... from t
  EXPECT_EQ(show(run.rows),
            show(rowsOf({"40|34|51|-127344197530200632|316.501|-115.89|date5|1.5000000000000000|"
                         "9.5909393939393939|0.12857142857142856|f|t|6261.7564623087121212|"
                         "28.5490009377815977|130163085159002964620383801|77.9230791645272151"})));
}

// select ... from t where false: every shard returns its empty-input row; without any shard row
// at all the merge still returns the one row.
TEST(ExecutorMergeTest, EmptyInputWithoutGroupByReturnsOneRow) {
  auto plan = aggregatePlan(false);
  std::vector<int32_t> oids(kAggregateOids.begin() + 1, kAggregateOids.end());
  const Row empty_partial = splitRow(
      "0|0|<NULL>|<NULL>|<NULL>|<NULL>|<NULL>|<NULL>|0|<NULL>|0|<NULL>|0|<NULL>|<NULL>|0|<NULL>|"
      "<NULL>|0|<NULL>|<NULL>|0|<NULL>|<NULL>|0|<NULL>|<NULL>");
  const std::string expected = show(rowsOf(
      {"0|0|<NULL>|<NULL>|<NULL>|<NULL>|<NULL>|<NULL>|<NULL>|<NULL>|<NULL>|<NULL>|<NULL>|<NULL>|"
       "<NULL>|<NULL>"}));
  MergeRun run = runMerge(plan, {}, oids, {{empty_partial}, {empty_partial}});
  ASSERT_FALSE(run.error) << run.error->describe();
  EXPECT_EQ(show(run.rows), expected);
  run = runMerge(plan, {}, oids, {{}, {}, {}});
  ASSERT_FALSE(run.error) << run.error->describe();
  EXPECT_EQ(show(run.rows), expected);
  // With GROUP BY, no input means no rows.
  auto grouped = aggregatePlan(true);
  run = runMerge(grouped, {}, kAggregateOids, {{}, {}});
  ASSERT_FALSE(run.error) << run.error->describe();
  EXPECT_TRUE(run.rows.empty());
}

// Shards: select g, i4, i4, i4, i4, i4 from t where id % 3 = k and id <= 24 group by g, i4
// Expected: select g, count(distinct i4), sum(distinct i4), avg(distinct i4),
//           array_agg(distinct i4), max(distinct i4) from t where id <= 24 group by g order by g
TEST(ExecutorMergeTest, DistinctAggregatesMatchPostgres) {
  auto plan = std::make_shared<MergePlan>();
  plan->aggregate = true;
  plan->group_columns = {0};
  plan->aggregates = {agg(AggKind::kDistinct, "count", {1}), agg(AggKind::kDistinct, "sum", {2}),
                      agg(AggKind::kDistinct, "avg", {3}),
                      agg(AggKind::kDistinct, "array_agg", {4}),
                      agg(AggKind::kDistinct, "max", {5})};
  plan->sort = {MergeSortKey{0, false, false}};
  auto shard = [](std::string_view pairs) {
    std::vector<Row> rows;
    std::stringstream ss{std::string(pairs)};
    std::string item;
    while (std::getline(ss, item, ';')) {
      Row r = splitRow(item);
      rows.push_back({r[0], r[1], r[1], r[1], r[1], r[1]});
    }
    return rows;
  };
  const std::vector<std::vector<Row>> shards = {
      shard("é|-30;é|10;x|-10;x|<NULL>;Y|-20;Y|20;<NULL>|0;<NULL>|<NULL>"),
      shard("é|-44;é|<NULL>;x|-3;x|37;Y|-13;Y|27;<NULL>|7;<NULL>|47"),
      shard("é|-37;é|24;x|-17;x|44;Y|34;Y|<NULL>;<NULL>|-47;<NULL>|-7"),
  };
  MergeOptions options;
  options.collation = "en_US.UTF-8";
  if (!Collation::open(options.collation).ok()) GTEST_SKIP() << "en_US.UTF-8 not installed";
  const MergeRun run = runMerge(plan, options, {25, 23, 23, 23, 23, 23}, shards);
  ASSERT_FALSE(run.error) << run.error->describe();
  EXPECT_EQ(show(run.rows), show(rowsOf({
                                "é|5|-77|-15.4000000000000000|{-44,-37,-30,10,24,NULL}|24",
                                "x|5|51|10.2000000000000000|{-17,-10,-3,37,44,NULL}|44",
                                "Y|5|48|9.6000000000000000|{-20,-13,20,27,34,NULL}|34",
                                "<NULL>|5|0|0.00000000000000000000|{-47,-7,0,7,47,NULL}|47",
                            })));
  auto description = wire::RowDescription::decode(run.client_description);
  ASSERT_TRUE(description.ok());
  EXPECT_EQ(description->fields[1].type_oid, 20);    // count
  EXPECT_EQ(description->fields[2].type_oid, 20);    // sum(int4) is bigint
  EXPECT_EQ(description->fields[3].type_oid, 1700);  // avg
  EXPECT_EQ(description->fields[4].type_oid, 1007);  // int4[]
}

// Shards: select g, s, ', ', s from t where id % 3 = k and id <= 24 group by g, s
// Expected: select g, string_agg(distinct s, ', '), array_agg(distinct s) ... group by g order by g
TEST(ExecutorMergeTest, DistinctStringAggregatesFollowTheCollation) {
  auto plan = std::make_shared<MergePlan>();
  plan->aggregate = true;
  plan->group_columns = {0};
  plan->aggregates = {agg(AggKind::kDistinct, "string_agg", {1, 2}),
                      agg(AggKind::kDistinct, "array_agg", {3})};
  plan->visible_columns = {0, 1, 3};
  plan->sort = {MergeSortKey{0, false, false}};
  auto shard = [](std::string_view pairs) {
    std::vector<Row> rows;
    std::stringstream ss{std::string(pairs)};
    std::string item;
    while (std::getline(ss, item, ';')) {
      Row r = splitRow(item);
      rows.push_back({r[0], r[1], std::string(", "), r[1]});
    }
    return rows;
  };
  const std::vector<std::vector<Row>> shards = {
      shard(
          "é|apple18;é|apple6;x|apple12;x|apple24;Y|Äpfel21;Y|Äpfel9;<NULL>|Äpfel15;<NULL>|Äpfel3"),
      shard("é|banana10;é|banana22;x|banana16;x|banana4;Y|Banana1;Y|Banana13;<NULL>|Banana19;<NULL>"
            "|<NULL>"),
      shard(
          "é|cherry14;é|cherry2;x|cherry20;x|cherry8;Y|date5;Y|<NULL>;<NULL>|date11;<NULL>|date23"),
  };
  MergeOptions options;
  options.collation = "en_US.UTF-8";
  if (!Collation::open(options.collation).ok()) GTEST_SKIP() << "en_US.UTF-8 not installed";
  const MergeRun run = runMerge(plan, options, {25, 25, 25, 25}, shards);
  ASSERT_FALSE(run.error) << run.error->describe();
  EXPECT_EQ(show(run.rows), show(rowsOf({
                                "é|apple18, apple6, banana10, banana22, cherry14, "
                                "cherry2|{apple18,apple6,banana10,banana22,cherry14,cherry2}",
                                "x|apple12, apple24, banana16, banana4, cherry20, "
                                "cherry8|{apple12,apple24,banana16,banana4,cherry20,cherry8}",
                                "Y|Äpfel21, Äpfel9, Banana1, Banana13, "
                                "date5|{Äpfel21,Äpfel9,Banana1,Banana13,date5,NULL}",
                                "<NULL>|Äpfel15, Äpfel3, Banana19, date11, "
                                "date23|{Äpfel15,Äpfel3,Banana19,date11,date23,NULL}",
                            })));
}

// Shards: select s, (select pg_collation_for(...s...)) from t order by 1 — s has a collation of its
// own. The database is en_US.UTF-8; the probe column says "C", so the merge is by bytes.
TEST(ExecutorMergeTest, SortKeysFollowTheCollationTheProbeNames) {
  MergeOptions options;
  options.collation = "en_US.UTF-8";
  if (!Collation::open(options.collation).ok()) GTEST_SKIP() << "en_US.UTF-8 not installed";
  auto plan = std::make_shared<MergePlan>();
  plan->sort = {MergeSortKey{0, false, false}};
  plan->collations = {{0, 1}};
  plan->visible_columns = {0};
  // Each shard's rows come sorted in the probe's collation.
  const auto shards = [](const std::string& collation, std::vector<std::string> first,
                         std::vector<std::string> second) {
    std::vector<std::vector<Row>> out(2);
    for (const std::string& v : first) out[0].push_back({v, collation});
    for (const std::string& v : second) out[1].push_back({v, collation});
    return out;
  };
  MergeRun run = runMerge(plan, options, {25, 25}, shards("\"C\"", {"B", "a"}, {"A", "b"}));
  ASSERT_FALSE(run.error) << run.error->describe();
  EXPECT_EQ(show(run.rows), show(rowsOf({"A", "B", "a", "b"})));
  run = runMerge(plan, options, {25, 25}, shards("\"default\"", {"a", "B"}, {"A", "b"}));
  ASSERT_FALSE(run.error) << run.error->describe();
  EXPECT_EQ(show(run.rows), show(rowsOf({"a", "A", "b", "B"})));
  run = runMerge(plan, options, {25, 25}, shards("\"en-x-icu\"", {"a", "B"}, {"A", "b"}));
  ASSERT_TRUE(run.error);
  EXPECT_EQ(run.error->sqlstate, "0A000");
  // A position in SELECT *: no probe, so text cannot be ordered; numbers can.
  auto star = std::make_shared<MergePlan>();
  star->sort = {MergeSortKey{0, false, false, true}};
  run = runMerge(star, options, {25}, {{{"b"}}, {{"a"}}});
  ASSERT_TRUE(run.error);
  EXPECT_EQ(run.error->sqlstate, "0A000");
  run = runMerge(star, options, {23}, {{{"2"}}, {{"1"}}});
  ASSERT_FALSE(run.error) << run.error->describe();
  EXPECT_EQ(show(run.rows), show(rowsOf({"1", "2"})));
}

TEST(CollationNamed, MapsPostgresCollationNamesToLocales) {
  auto database = Collation::open("C");
  ASSERT_TRUE(database.ok());
  const auto named = [&](std::string_view n) { return collationNamed(n, *database); };
  EXPECT_EQ(named("\"default\"")->get(), database->get());
  for (std::string_view bytes : {"\"C\"", "\"POSIX\"", "ucs_basic", "\"ucs_basic\""}) {
    ASSERT_TRUE(named(bytes).ok()) << bytes;
    EXPECT_TRUE((*named(bytes))->isBytewise()) << bytes;
  }
  for (std::string_view refused : {"\"en-x-icu\"", "\"und-x-icu\"", "public.\"de\"",
                                   "\"my\"\"coll\"", "\"en_US.iso88591\"", "\"german\"x"}) {
    auto r = named(refused);
    ASSERT_FALSE(r.ok()) << refused;
    EXPECT_EQ(r.error().sqlstate, "0A000") << refused;
  }
  if (!Collation::open("en_US.UTF-8").ok()) GTEST_SKIP() << "en_US.UTF-8 not installed";
  for (std::string_view utf8 : {"\"en_US\"", "\"en_US.utf8\"", "\"en_US.UTF-8\""}) {
    auto r = named(utf8);
    ASSERT_TRUE(r.ok()) << utf8;
    EXPECT_EQ((*r)->name(), "en_US.UTF-8") << utf8;
  }
}

// Shards: select string_agg(s, ','), array_agg(i4), ',' from t where id % 3 = k and id <= 9
TEST(ExecutorMergeTest, StringAggAndArrayAggConcatenate) {
  auto plan = std::make_shared<MergePlan>();
  plan->aggregate = true;
  plan->aggregates = {agg(AggKind::kStringAgg, "string_agg", {0, 2}),
                      agg(AggKind::kArrayAgg, "array_agg", {1})};
  plan->visible_columns = {0, 1};
  const MergeRun run = runMerge(
      plan, {}, {25, 1007, 25},
      {rowsOf({"Äpfel3,apple6,Äpfel9|{NULL,-30,-20}|,"}), rowsOf({"Banana1,banana4|{-13,-3,7}|,"}),
       rowsOf({"<NULL>|<NULL>|,"}), rowsOf({"cherry2,date5,cherry8|{24,34,44}|,"})});
  ASSERT_FALSE(run.error) << run.error->describe();
  EXPECT_EQ(show(run.rows),
            "Äpfel3,apple6,Äpfel9,Banana1,banana4,cherry2,date5,cherry8|"
            "{NULL,-30,-20,-13,-3,7,24,34,44}\n");
  // select array_agg(x) from (values (array[1,2]),(array[3,4])) v(x) = {{1,2},{3,4}}
  const MergeRun nested =
      runMerge(plan, {}, {25, 1007, 25}, {rowsOf({"a|{{1,2}}|,"}), rowsOf({"b|{{3,4}}|,"})});
  ASSERT_FALSE(nested.error);
  EXPECT_EQ(show(nested.rows), "a,b|{{1,2},{3,4}}\n");
}

std::string be32(uint32_t v) {
  return std::string{static_cast<char>(v >> 24), static_cast<char>(v >> 16),
                     static_cast<char>(v >> 8), static_cast<char>(v)};
}
std::string be64(uint64_t v) {
  return be32(static_cast<uint32_t>(v >> 32)) + be32(static_cast<uint32_t>(v));
}

TEST(ExecutorMergeTest, BinaryResultsAreMergedInBinary) {
  // count(*), sum(i8) as numeric, avg(i4) as (sum int8, count int8), array_agg(int4)
  auto plan = std::make_shared<MergePlan>();
  plan->aggregate = true;
  plan->aggregates = {agg(AggKind::kCount, "count", {0}), agg(AggKind::kSum, "sum", {1}),
                      agg(AggKind::kAvg, "avg", {2, 3}), agg(AggKind::kArrayAgg, "array_agg", {4}),
                      agg(AggKind::kMax, "max", {5})};
  plan->visible_columns = {0, 1, 2, 4, 5};
  auto numeric = [](std::string_view text) { return Decimal::parseText(text)->toBinary(); };
  auto array = [&](std::vector<int32_t> values) {
    std::string a =
        be32(1) + be32(0) + be32(23) + be32(static_cast<uint32_t>(values.size())) + be32(1);
    for (int32_t v : values) a += be32(4) + be32(static_cast<uint32_t>(v));
    return a;
  };
  const Row shard0 = {be64(3), numeric("10.5"), be64(7),
                      be64(3), array({1, 2}),   be64(uint64_t(-5))};
  const Row shard1 = {be64(2), numeric("-0.25"), be64(1), be64(2), array({3}), be64(uint64_t(-7))};
  const MergeRun run = runMerge(plan, {}, {20, 1700, 20, 20, 1007, 20}, {{shard0}, {shard1}}, 1);
  ASSERT_FALSE(run.error) << run.error->describe();
  ASSERT_EQ(run.rows.size(), 1u);
  const Row& r = run.rows[0];
  EXPECT_EQ(*r[0], be64(5));
  EXPECT_EQ(*r[1], numeric("10.25"));
  EXPECT_EQ(*r[2], numeric("1.6000000000000000"));  // select 8::numeric / 5
  EXPECT_EQ(*r[3], array({1, 2, 3}));
  EXPECT_EQ(*r[4], be64(uint64_t(-5)));  // max compares the binary int8 values
}

// select variance(x), stddev(x), var_pop(x), stddev_pop(x) from (values (1.5),(1.5)) v(x)
//   -> 0|0|0|0;  from (values (1.5)) v(x) -> <NULL>|<NULL>|0|0
TEST(ExecutorMergeTest, VarianceEdgeCases) {
  auto plan = std::make_shared<MergePlan>();
  plan->aggregate = true;
  plan->aggregates = {agg(AggKind::kVariance, "variance", {0, 1, 2}),
                      agg(AggKind::kVariance, "stddev", {3, 4, 5}),
                      agg(AggKind::kVariance, "var_pop", {6, 7, 8}),
                      agg(AggKind::kVariance, "stddev_pop", {9, 10, 11})};
  plan->visible_columns = {0, 3, 6, 9};
  const std::vector<int32_t> oids = {20, 1700, 1700, 20, 1700, 1700,
                                     20, 1700, 1700, 20, 1700, 1700};
  const Row one = splitRow("1|1.5|2.25|1|1.5|2.25|1|1.5|2.25|1|1.5|2.25");
  const Row none = splitRow("0|<NULL>|<NULL>|0|<NULL>|<NULL>|0|<NULL>|<NULL>|0|<NULL>|<NULL>");
  MergeRun run = runMerge(plan, {}, oids, {{one}, {one}, {none}});
  ASSERT_FALSE(run.error) << run.error->describe();
  EXPECT_EQ(show(run.rows), "0|0|0|0\n");
  run = runMerge(plan, {}, oids, {{one}, {none}});
  ASSERT_FALSE(run.error) << run.error->describe();
  EXPECT_EQ(show(run.rows), "<NULL>|<NULL>|0|0\n");
}

// select sum(x), avg(x) from (values (0.1::float8),(0.2),(0.3)) v(x)
//   -> 0.6000000000000001|0.20000000000000004
// select sum(x) from (values (0.1::float4),(0.2)) v(x) -> 0.3
// select sum(x) from (values (9223372036854775807::bigint),(1)) v(x) -> 9223372036854775808
TEST(ExecutorMergeTest, FloatSumsAndIntegerRanges) {
  auto plan = std::make_shared<MergePlan>();
  plan->aggregate = true;
  plan->aggregates = {agg(AggKind::kSum, "sum", {0}), agg(AggKind::kAvg, "avg", {1, 2}),
                      agg(AggKind::kSum, "sum", {3}), agg(AggKind::kSum, "sum", {4})};
  plan->visible_columns = {0, 1, 3, 4};
  MergeRun run =
      runMerge(plan, {}, {701, 701, 20, 700, 1700},
               {rowsOf({"0.30000000000000004|0.30000000000000004|2|0.1|9223372036854775807"}),
                rowsOf({"0.3|0.3|1|0.2|1"})});
  ASSERT_FALSE(run.error) << run.error->describe();
  EXPECT_EQ(show(run.rows), "0.6000000000000001|0.20000000000000004|0.3|9223372036854775808\n");
  // sum(int4) partials are bigint and stay bigint: past its range is Postgres's error.
  auto int_sum = std::make_shared<MergePlan>();
  int_sum->aggregate = true;
  int_sum->aggregates = {agg(AggKind::kSum, "sum", {0})};
  run = runMerge(int_sum, {}, {20}, {rowsOf({"9223372036854775807"}), rowsOf({"1"})});
  ASSERT_TRUE(run.error);
  EXPECT_EQ(run.error->sqlstate, "22003");
  run = runMerge(int_sum, {}, {20}, {rowsOf({"9223372036854775807"}), rowsOf({"-1"})});
  ASSERT_FALSE(run.error);
  EXPECT_EQ(show(run.rows), "9223372036854775806\n");
}

// select max(x), min(x) from (values ('2024-01-01 10:00:00+02'::timestamptz),
//   ('2024-01-01 09:00:00+00')) v(x)  -> 09:00:00+00 is the later instant
TEST(ExecutorMergeTest, MinMaxCompareInstantsNotText) {
  auto plan = std::make_shared<MergePlan>();
  plan->aggregate = true;
  plan->aggregates = {agg(AggKind::kMax, "max", {0}), agg(AggKind::kMin, "min", {1})};
  const MergeRun run = runMerge(plan, {}, {1184, 1184},
                                {rowsOf({"2024-01-01 10:00:00+02|2024-01-01 10:00:00+02"}),
                                 rowsOf({"2024-01-01 09:00:00+00|2024-01-01 09:00:00+00"})});
  ASSERT_FALSE(run.error) << run.error->describe();
  EXPECT_EQ(show(run.rows), "2024-01-01 09:00:00+00|2024-01-01 10:00:00+02\n");
}

// ---- streaming: merge sort, concatenation, limit ----

std::vector<Row> intRows(std::vector<std::optional<int>> values) {
  std::vector<Row> rows;
  for (const auto& v : values) {
    rows.push_back(
        {v ? std::optional<std::string>(std::to_string(*v)) : std::nullopt, std::string("x")});
  }
  return rows;
}

TEST(ExecutorMergeTest, MergeSortInterleavesSortedShards) {
  auto plan = std::make_shared<MergePlan>();
  plan->sort = {MergeSortKey{0, true, true}};  // ORDER BY a DESC (NULLS FIRST)
  plan->visible_columns = {0};
  const MergeRun run = runMerge(plan, {}, {23, 25},
                                {intRows({std::nullopt, 9, 5, 1}),
                                 intRows({8, 7, 6}),
                                 intRows({std::nullopt, 10, 2, -3}),
                                 {}});
  ASSERT_FALSE(run.error) << run.error->describe();
  EXPECT_EQ(show(run.rows), "<NULL>\n<NULL>\n10\n9\n8\n7\n6\n5\n2\n1\n-3\n");
}

TEST(ExecutorMergeTest, MergeSortWithLimitAndOffset) {
  auto plan = std::make_shared<MergePlan>();
  plan->sort = {MergeSortKey{0, false, false}};
  MergeOptions options;
  options.limit = 3;
  options.offset = 2;
  const MergeRun run = runMerge(plan, options, {23, 25},
                                {intRows({1, 4, 7, 10}), intRows({2, 5, 8}), intRows({3, 6, 9})});
  ASSERT_FALSE(run.error) << run.error->describe();
  EXPECT_EQ(show(run.rows), "3|x\n4|x\n5|x\n");
}

TEST(ExecutorMergeTest, MergeSortWaitsForEveryShardAndAppliesBackpressure) {
  auto plan = std::make_shared<MergePlan>();
  plan->sort = {MergeSortKey{0, false, false}};
  MergeOptions options;
  options.shard_count = 2;
  auto merger = ResultMerger::create(plan, options);
  ASSERT_TRUE(merger.ok());
  ResultMerger& m = **merger;
  ASSERT_TRUE(m.setRowDescription(0, rowDescription({23, 25})).ok());
  ASSERT_TRUE(m.setRowDescription(1, rowDescription({23, 25})).ok());
  // Shard 0 sends many rows; shard 1 nothing yet: nothing can be emitted, shard 0 gets paused,
  // shard 1 stays wanted.
  const std::string padding(1000, 'p');
  int sent = 0;
  while (m.wantsMore(0)) {
    ASSERT_TRUE(m.addRow(0, dataRow({std::to_string(sent++), padding})).ok());
    ASSERT_LT(sent, 100000);
  }
  EXPECT_GT(sent, 10);
  EXPECT_TRUE(m.wantsMore(1));
  std::string out;
  ASSERT_TRUE(m.drain(out).ok());
  EXPECT_TRUE(out.empty());
  // Shard 1's first row lets everything below it through.
  ASSERT_TRUE(m.addRow(1, dataRow({std::to_string(sent / 2), padding})).ok());
  ASSERT_TRUE(m.drain(out).ok());
  // Shard 0's rows 0..sent/2 (ties go to the lower shard), then shard 1's row; then shard 1's
  // queue is empty again and its next row might be smaller than shard 0's head.
  EXPECT_EQ(decodeOutput(out).size(), static_cast<size_t>(sent / 2 + 2));
  EXPECT_TRUE(m.wantsMore(0));
  m.shardFinished(1);
  out.clear();
  ASSERT_TRUE(m.drain(out).ok());
  m.shardFinished(0);
  ASSERT_TRUE(m.drain(out).ok());
  EXPECT_TRUE(m.done());
  EXPECT_EQ(m.rowsOut(), static_cast<uint64_t>(sent + 1));
}

TEST(ExecutorMergeTest, ConcatenationStreamsAndStopsAtLimit) {
  auto plan = std::make_shared<MergePlan>();
  plan->visible_columns = {1};
  MergeOptions options;
  options.shard_count = 2;
  options.limit = 3;
  auto merger = ResultMerger::create(plan, options);
  ASSERT_TRUE(merger.ok());
  ResultMerger& m = **merger;
  ASSERT_TRUE(m.setRowDescription(0, rowDescription({23, 25})).ok());
  std::string out;
  ASSERT_TRUE(m.addRow(0, dataRow({std::string("1"), std::string("a")})).ok());
  ASSERT_TRUE(m.drain(out).ok());
  EXPECT_EQ(show(decodeOutput(out)), "a\n");  // before any shard finished
  ASSERT_TRUE(m.setRowDescription(1, rowDescription({23, 25})).ok());
  ASSERT_TRUE(m.addRow(1, dataRow({std::string("2"), std::nullopt})).ok());
  EXPECT_FALSE(m.complete());
  ASSERT_TRUE(m.addRow(0, dataRow({std::string("3"), std::string("c")})).ok());
  EXPECT_TRUE(m.complete());
  EXPECT_TRUE(m.wantsMore(0));  // read on: later rows are dropped, the shards can finish
  ASSERT_TRUE(m.addRow(1, dataRow({std::string("4"), std::string("d")})).ok());  // ignored
  ASSERT_TRUE(m.drain(out).ok());
  EXPECT_EQ(show(decodeOutput(out)), "a\n<NULL>\nc\n");
  EXPECT_TRUE(m.done());
  EXPECT_EQ(m.rowsOut(), 3u);
  auto description = wire::RowDescription::decode(m.clientRowDescription());
  ASSERT_TRUE(description.ok());
  ASSERT_EQ(description->fields.size(), 1u);
  EXPECT_EQ(description->fields[0].name, "c1");
}

// SELECT * ... ORDER BY lower(name): the hidden sort column comes first (leading_hidden = 1).
TEST(ExecutorMergeTest, LeadingHiddenSortColumnsAreDropped) {
  auto plan = std::make_shared<MergePlan>();
  plan->sort = {MergeSortKey{0, false, false}};
  plan->leading_hidden = 1;
  const MergeRun run =
      runMerge(plan, {}, {23, 25, 25}, {rowsOf({"1|a|x", "3|c|z"}), rowsOf({"2|b|y"})});
  ASSERT_FALSE(run.error) << run.error->describe();
  EXPECT_EQ(show(run.rows), "a|x\nb|y\nc|z\n");
  auto description = wire::RowDescription::decode(run.client_description);
  ASSERT_TRUE(description.ok());
  ASSERT_EQ(description->fields.size(), 2u);
  EXPECT_EQ(description->fields[0].name, "c1");
  EXPECT_EQ(describeMergePlan(*plan).back(), "Project(columns from 1 on)");
}

TEST(ExecutorMergeTest, ConcatenationWithoutProjectionForwardsRowsUnchanged) {
  auto plan = std::make_shared<MergePlan>();
  const MergeRun run = runMerge(plan, {}, {23, 25}, {intRows({1, 2}), intRows({3})});
  ASSERT_FALSE(run.error);
  EXPECT_EQ(run.rows.size(), 3u);
  MergeOptions zero;
  zero.limit = 0;
  const MergeRun none = runMerge(plan, zero, {23, 25}, {intRows({1, 2}), intRows({3})});
  ASSERT_FALSE(none.error);
  EXPECT_TRUE(none.rows.empty());
}

TEST(ExecutorMergeTest, SelectDistinctAcrossShards) {
  auto plan = std::make_shared<MergePlan>();
  plan->distinct = true;
  plan->sort = {MergeSortKey{0, false, false}};
  // numeric 1.0 and 1 are one value (the first seen is kept).
  const MergeRun run =
      runMerge(plan, {}, {1700, 25},
               {rowsOf({"1.0|a", "2|b", "<NULL>|c"}), rowsOf({"1|a", "1|b", "2|b", "<NULL>|c"})});
  ASSERT_FALSE(run.error) << run.error->describe();
  EXPECT_EQ(show(run.rows), "1.0|a\n1|b\n2|b\n<NULL>|c\n");
}

// ---- HAVING ----

MergeExpression column(uint32_t c) {
  MergeExpression e;
  e.kind = MergeExpression::Kind::kColumn;
  e.column = c;
  return e;
}
MergeExpression constant(std::string text, int32_t type = 0) {
  MergeExpression e;
  e.kind = MergeExpression::Kind::kConstant;
  e.text = std::move(text);
  e.type_oid = type;
  return e;
}
MergeExpression binary(MergeExpression::Kind kind, std::string op, MergeExpression a,
                       MergeExpression b) {
  MergeExpression e;
  e.kind = kind;
  e.op = std::move(op);
  e.children = {std::move(a), std::move(b)};
  return e;
}

std::shared_ptr<MergePlan> havingPlan(MergeExpression having) {
  auto plan = std::make_shared<MergePlan>();
  plan->aggregate = true;
  plan->group_columns = {0};
  plan->aggregates = {agg(AggKind::kSum, "sum", {1}), agg(AggKind::kCount, "count", {2}),
                      agg(AggKind::kAvg, "avg", {3, 4})};
  plan->having = std::move(having);
  plan->sort = {MergeSortKey{0, false, false}};
  plan->visible_columns = {0, 1, 2, 3};
  return plan;
}

std::vector<std::vector<Row>> havingShards() {
  // g, sum(x) (int8), count(*), sum(n) (numeric), count(n)
  return {rowsOf({"a|10|2|1.5|2", "b|-4|1|<NULL>|0", "c|<NULL>|3|<NULL>|0"}),
          rowsOf({"a|5|1|2|1", "b|7|2|3.25|2"})};
}

TEST(ExecutorMergeTest, HavingFiltersMergedGroups) {
  using K = MergeExpression::Kind;
  // HAVING sum(x) > 10: a (15) passes, b (3) does not, c (NULL) does not.
  MergeRun run = runMerge(havingPlan(binary(K::kCompare, ">", column(1), constant("10", 23))), {},
                          {25, 20, 20, 1700, 20}, havingShards());
  ASSERT_FALSE(run.error) << run.error->describe();
  EXPECT_EQ(show(run.rows), "a|15|3|1.16666666666666666667\n");
  // HAVING sum(x) / count(*) = 5 (integer division: 15/3 = 5, 3/3 = 1)
  run = runMerge(
      havingPlan(binary(K::kCompare, "=", binary(K::kArithmetic, "/", column(1), column(2)),
                        constant("5", 23))),
      {}, {25, 20, 20, 1700, 20}, havingShards());
  ASSERT_FALSE(run.error) << run.error->describe();
  EXPECT_EQ(show(run.rows), "a|15|3|1.16666666666666666667\n");
  // HAVING avg(n) >= 1.625 (numeric): b's avg is 1.6250000000000000; a's is
  // select avg(x) from (values (1.5),(2),(0)) = 1.16666666666666666667
  run = runMerge(havingPlan(binary(K::kCompare, ">=", column(3), constant("1.625"))), {},
                 {25, 20, 20, 1700, 20}, havingShards());
  ASSERT_FALSE(run.error) << run.error->describe();
  EXPECT_EQ(show(run.rows), "b|3|3|1.6250000000000000\n");
  // HAVING sum(x) IS NULL OR count(*) > 3 : c
  MergeExpression is_null;
  is_null.kind = K::kIsNull;
  is_null.children = {column(1)};
  run = runMerge(havingPlan(binary(K::kOr, "", is_null,
                                   binary(K::kCompare, ">", column(2), constant("3", 20)))),
                 {}, {25, 20, 20, 1700, 20}, havingShards());
  ASSERT_FALSE(run.error) << run.error->describe();
  EXPECT_EQ(show(run.rows), "c|<NULL>|3|<NULL>\n");
  // NOT (sum > 10) keeps b only: NOT NULL is NULL, which drops c.
  MergeExpression negated;
  negated.kind = K::kNot;
  negated.children = {binary(K::kCompare, ">", column(1), constant("10", 23))};
  run = runMerge(havingPlan(negated), {}, {25, 20, 20, 1700, 20}, havingShards());
  ASSERT_FALSE(run.error) << run.error->describe();
  EXPECT_EQ(show(run.rows), "b|3|3|1.6250000000000000\n");
  // Division by zero in HAVING is Postgres's error.
  run = runMerge(
      havingPlan(binary(K::kCompare, ">", binary(K::kArithmetic, "/", column(1), constant("0", 23)),
                        constant("1", 23))),
      {}, {25, 20, 20, 1700, 20}, havingShards());
  ASSERT_TRUE(run.error);
  EXPECT_EQ(run.error->sqlstate, "22012");
  // A text comparison uses the collation: g > 'a'
  run = runMerge(havingPlan(binary(K::kCompare, ">", column(0), constant("a"))), {},
                 {25, 20, 20, 1700, 20}, havingShards());
  ASSERT_FALSE(run.error) << run.error->describe();
  EXPECT_EQ(run.rows.size(), 2u);
}

// ---- ORDER BY and LIMIT after aggregation ----

TEST(ExecutorMergeTest, SortAndLimitAfterAggregation) {
  auto plan = havingPlan(MergeExpression{});
  plan->having.reset();
  plan->sort = {MergeSortKey{1, true, false}};  // ORDER BY sum(x) DESC NULLS LAST
  MergeOptions options;
  options.limit = 2;
  const MergeRun run = runMerge(plan, options, {25, 20, 20, 1700, 20}, havingShards());
  ASSERT_FALSE(run.error) << run.error->describe();
  EXPECT_EQ(show(run.rows), "a|15|3|1.16666666666666666667\nb|3|3|1.6250000000000000\n");
}

// ---- limits and errors ----

TEST(ExecutorMergeTest, HashAggregatePastTheCapIsOutOfMemory) {
  auto plan = std::make_shared<MergePlan>();
  plan->aggregate = true;
  plan->group_columns = {0};
  plan->aggregates = {agg(AggKind::kCount, "count", {1})};
  MergeOptions options;
  options.max_buffered_bytes = 16 * 1024;
  std::vector<Row> rows;
  for (int i = 0; i < 1000; ++i) rows.push_back({std::to_string(i), std::string("1")});
  const MergeRun run = runMerge(plan, options, {23, 20}, {rows, rows});
  ASSERT_TRUE(run.error);
  EXPECT_EQ(run.error->sqlstate, "53200");
  EXPECT_NE(run.error->detail.find("general.max_merge_bytes"), std::string::npos);
  // Within the cap it works.
  options.max_buffered_bytes = 16 * 1024 * 1024;
  const MergeRun fits = runMerge(plan, options, {23, 20}, {rows, rows});
  ASSERT_FALSE(fits.error) << fits.error->describe();
  EXPECT_EQ(fits.rows.size(), 1000u);
  EXPECT_EQ(*fits.rows[999][1], "2");
}

TEST(ExecutorMergeTest, DistinctPastTheCapIsOutOfMemory) {
  auto plan = std::make_shared<MergePlan>();
  plan->distinct = true;
  MergeOptions options;
  options.max_buffered_bytes = 4096;
  std::vector<Row> rows;
  for (int i = 0; i < 1000; ++i) rows.push_back({std::to_string(i), std::string("v")});
  const MergeRun run = runMerge(plan, options, {23, 25}, {rows});
  ASSERT_TRUE(run.error);
  EXPECT_EQ(run.error->sqlstate, "53200");
}

TEST(ExecutorMergeTest, UnsupportedShapesAreFeatureNotSupported) {
  auto sort_json = std::make_shared<MergePlan>();
  sort_json->sort = {MergeSortKey{0, false, false}};
  MergeRun run = runMerge(sort_json, {}, {3802}, {{}});
  ASSERT_TRUE(run.error);
  EXPECT_EQ(run.error->sqlstate, "0A000");

  auto group_json = std::make_shared<MergePlan>();
  group_json->aggregate = true;
  group_json->group_columns = {0};
  run = runMerge(group_json, {}, {3802}, {{}});
  ASSERT_TRUE(run.error);
  EXPECT_EQ(run.error->sqlstate, "0A000");

  auto float_variance = std::make_shared<MergePlan>();
  float_variance->aggregate = true;
  float_variance->aggregates = {agg(AggKind::kVariance, "variance", {0, 1, 2})};
  run = runMerge(float_variance, {}, {20, 701, 701}, {{}});
  ASSERT_TRUE(run.error);
  EXPECT_EQ(run.error->sqlstate, "0A000");

  auto float4_avg = std::make_shared<MergePlan>();
  float4_avg->aggregate = true;
  float4_avg->aggregates = {agg(AggKind::kAvg, "avg", {0, 1})};
  run = runMerge(float4_avg, {}, {700, 20}, {{}});
  ASSERT_TRUE(run.error);
  EXPECT_EQ(run.error->sqlstate, "0A000");

  auto sum_text = std::make_shared<MergePlan>();
  sum_text->aggregate = true;
  sum_text->aggregates = {agg(AggKind::kSum, "sum", {0})};
  run = runMerge(sum_text, {}, {25}, {{}});
  ASSERT_TRUE(run.error);
  EXPECT_EQ(run.error->sqlstate, "0A000");

  auto stddev_distinct = std::make_shared<MergePlan>();
  stddev_distinct->aggregate = true;
  stddev_distinct->aggregates = {agg(AggKind::kDistinct, "stddev", {0})};
  run = runMerge(stddev_distinct, {}, {23}, {{}});
  ASSERT_TRUE(run.error);
  EXPECT_EQ(run.error->sqlstate, "0A000");

  MergeOptions bad_collation;
  bad_collation.collation = "xx_NOPE.UTF-8";
  run = runMerge(sort_json, bad_collation, {25}, {{}});
  ASSERT_TRUE(run.error);
  EXPECT_EQ(run.error->sqlstate, "0A000");
  // A plain concatenation does not need the collation.
  run = runMerge(std::make_shared<MergePlan>(), bad_collation, {25}, {rowsOf({"a"})});
  EXPECT_FALSE(run.error);
}

TEST(ExecutorMergeTest, BadInputIsAnErrorNotACrash) {
  auto plan = std::make_shared<MergePlan>();
  plan->sort = {MergeSortKey{0, false, false}};
  MergeOptions options;
  options.shard_count = 2;
  auto merger = ResultMerger::create(plan, options);
  ASSERT_TRUE(merger.ok());
  ResultMerger& m = **merger;
  EXPECT_EQ(m.addRow(0, dataRow({std::string("1")})).error().sqlstate, "XX000");  // no description
  auto fresh = [&] {
    auto r = ResultMerger::create(plan, options);
    EXPECT_TRUE(r.ok());
    EXPECT_TRUE((*r)->setRowDescription(0, rowDescription({23})).ok());
    return std::move(*r);
  };
  EXPECT_EQ(fresh()->setRowDescription(1, rowDescription({20})).error().sqlstate, "XX000");
  EXPECT_EQ(fresh()->setRowDescription(1, rowDescription({23, 23})).error().sqlstate, "XX000");
  EXPECT_EQ(fresh()->setRowDescription(1, "\x01").error().sqlstate, "08P01");
  EXPECT_EQ(fresh()->addRow(0, "\x00\x02").error().sqlstate, "XX000");
  EXPECT_EQ(fresh()->addRow(0, dataRow({std::string("1"), std::string("2")})).error().sqlstate,
            "XX000");
  EXPECT_EQ(fresh()->addRow(0, dataRow({std::string("12x")})).error().sqlstate, "22P02");
  EXPECT_EQ(fresh()->addRow(5, dataRow({std::string("1")})).error().sqlstate, "XX000");
  // After an error, the merger keeps returning it.
  auto failed = fresh();
  EXPECT_FALSE(failed->addRow(0, dataRow({std::string("x")})).ok());
  std::string out;
  EXPECT_FALSE(failed->drain(out).ok());
  EXPECT_FALSE(failed->wantsMore(0));

  MergeOptions negative;
  negative.shard_count = 1;
  negative.limit = -1;
  EXPECT_EQ(ResultMerger::create(plan, negative).error().sqlstate, "2201W");
  negative.limit.reset();
  negative.offset = -1;
  EXPECT_EQ(ResultMerger::create(plan, negative).error().sqlstate, "2201X");

  auto out_of_range = std::make_shared<MergePlan>();
  out_of_range->visible_columns = {3};
  const MergeRun run = runMerge(out_of_range, {}, {23}, {{}});
  ASSERT_TRUE(run.error);
  EXPECT_EQ(run.error->sqlstate, "XX000");
}

// An aggregate's result replaces its first input column: that column cannot also be a grouping
// column (the plan would lose the group's value). A grouping column may feed a later input.
TEST(ExecutorMergeTest, AggregateResultColumnMustBeItsOwn) {
  auto plan = std::make_shared<MergePlan>();
  plan->aggregate = true;
  plan->group_columns = {0};
  plan->aggregates = {agg(AggKind::kDistinct, "count", {0})};
  MergeRun run = runMerge(plan, {}, {23}, {rowsOf({"1"})});
  ASSERT_TRUE(run.error);
  EXPECT_EQ(run.error->sqlstate, "XX000");
  plan->aggregates = {agg(AggKind::kStringAgg, "string_agg", {1, 0})};
  run = runMerge(plan, {}, {25, 25}, {rowsOf({"a|x"}), rowsOf({"a|y"})});
  ASSERT_FALSE(run.error) << run.error->describe();
  EXPECT_EQ(show(run.rows), "a|xay\n");
}

TEST(ExecutorMergeTest, DescribesEveryStep) {
  auto plan =
      havingPlan(binary(MergeExpression::Kind::kCompare, ">", column(1), constant("10", 23)));
  plan->distinct = true;
  planner::ValueRef limit;
  limit.kind = planner::ValueRef::Kind::kParam;
  limit.index = 1;
  plan->limit = limit;
  const std::vector<std::string> lines = describeMergePlan(*plan);
  const std::vector<std::string> expected = {
      "Aggregate(hash on columns 0; sum(column 1); count(column 2); avg(column 3, column 4))",
      "Filter(HAVING (column 1 > '10'))",
      "Distinct(hash on the client's columns)",
      "Sort(in memory after aggregation on column 0)",
      "Limit(limit $1)",
      "Project(columns 0 1 2 3)",
  };
  EXPECT_EQ(lines, expected);
  MergePlan streaming;
  streaming.sort = {MergeSortKey{2, true, false}};
  EXPECT_EQ(
      describeMergePlan(streaming),
      std::vector<std::string>{
          "MergeSort(k-way merge of the shards' sorted streams on column 2 DESC NULLS LAST)"});
  EXPECT_EQ(describeMergePlan(MergePlan{}),
            std::vector<std::string>{"Concatenate(shard rows as they arrive)"});
}

TEST(ExecutorMergeTest, IcuDatabasesRefuseTextOrdering) {
  auto icu = Collation::open(std::string(kIcuCollationPrefix) + "und-x-icu");
  ASSERT_FALSE(icu.ok());
  EXPECT_EQ(icu.error().sqlstate, "0A000");
  EXPECT_NE(icu.error().message.find("ICU"), std::string::npos) << icu.error().message;
}

}  // namespace
}  // namespace shardgate::executor
