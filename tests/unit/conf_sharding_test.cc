// Unit tests of the sharding part of the config: sharded and reference tables, key values, read
// routing, and every refusal (with file:line:column and key path).
#include <gtest/gtest.h>

#include <string>

#include "conf/config_loader.h"

namespace shardgate::conf {
namespace {

// A database "app" with three shards (each with one replica); `extra` comes right after its
// name, so that its keys belong to the database and its tables before the shards' tables.
std::string db(std::string_view extra) {
  std::string s = "[[databases]]\nname = \"app\"\n" + std::string(extra);
  for (int i = 0; i < 3; ++i) {
    s += "[[databases.shards]]\nname = \"s" + std::to_string(i) +
         "\"\nprimary = { host = \"h\", port = 1, user = \"u\" }\n"
         "replicas = [ { host = \"r\", port = 2 } ]\n";
  }
  return s;
}
constexpr int kDbLines = 2;  // lines of db("") before `extra`

ConfigPtr parseOk(std::string_view text) {
  auto result = parseConfig(text, "test.toml");
  EXPECT_TRUE(result.ok()) << (result.ok() ? "" : result.error().message);
  return result.ok() ? *result : nullptr;
}

std::string parseError(std::string_view text) {
  auto result = parseConfig(text, "test.toml");
  if (result.ok()) return "(loaded without error)";
  EXPECT_EQ(result.error().sqlstate, "F0000");
  return result.error().message;
}

KeyValue I(int64_t v) {
  return KeyValue::ofInt(v);
}
KeyValue S(std::string s) {
  return KeyValue::ofBytes(std::move(s));
}

TEST(ConfSharding, DefaultsWhenNothingIsSaid) {
  auto c = parseOk(db(""));
  ASSERT_TRUE(c);
  const Database& app = c->databases[0];
  EXPECT_EQ(app.default_shard, 0u);
  EXPECT_EQ(app.read_preference, ReadPreference::kPrimary);
  EXPECT_EQ(app.replica_policy, ReplicaPolicy::kRoundRobin);
  EXPECT_TRUE(app.sharded_tables.empty());
  EXPECT_TRUE(app.reference_tables.empty());
}

TEST(ConfSharding, EveryStrategyAndSetting) {
  auto c = parseOk(
      "[[users]]\nname = \"a\"\nauth_method = \"trust\"\nread_preference = "
      "\"prefer_replica\"\n" +
      db(R"(default_shard = "s2"
read_preference = "replica"
replica_policy = "least_connections"
reference_tables = ["countries", "ref.currencies"]
[[databases.sharded_tables]]
name = "users"
column = "id"
type = "bigint"
[[databases.sharded_tables]]
name = "analytics.events"
column = "id"
type = "integer"
strategy = "range"
ranges = [ { to = 0, shard = 2 }, { from = 0, to = 1000000, shard = 0 }, { from = 2000000, shard = "s1" } ]
[[databases.sharded_tables]]
name = "tenants"
column = "region"
type = "text"
strategy = "list"
lists = [ { values = ["eu", "uk"], shard = 0 }, { values = ["us"], shard = 1 } ]
default_shard = 1
[[databases.sharded_tables]]
name = "devices"
column = "id"
type = "uuid"
strategy = "list"
lists = [ { values = ["A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"], shard = 1 } ]
[[databases.sharded_tables]]
name = "accounts"
column = "id"
type = "bigint"
strategy = "directory"
directory = { table = "meta.shardgate_directory", shard = 1, fallback = "hash" }
[[databases.sharded_tables]]
name = "sessions"
column = "token"
type = "varchar"
strategy = "directory"
directory = { table = "dir" }
)"));
  ASSERT_TRUE(c);
  const Database& app = c->databases[0];
  EXPECT_EQ(app.default_shard, 2u);
  EXPECT_EQ(app.read_preference, ReadPreference::kReplica);
  EXPECT_EQ(app.replica_policy, ReplicaPolicy::kLeastConnections);
  ASSERT_EQ(app.reference_tables.size(), 2u);
  EXPECT_EQ(app.reference_tables[0].display(), "countries");
  EXPECT_EQ(app.reference_tables[1].schema, "ref");
  EXPECT_EQ(app.reference_tables[1].name, "currencies");

  ASSERT_EQ(app.sharded_tables.size(), 6u);
  const ShardedTable& users = app.sharded_tables[0];
  EXPECT_EQ(users.schema, "");
  EXPECT_EQ(users.name, "users");
  EXPECT_EQ(users.column, "id");
  EXPECT_EQ(users.key_type, KeyType::kBigint);
  EXPECT_EQ(users.strategy, Strategy::kHash);  // the default

  const ShardedTable& events = app.sharded_tables[1];
  EXPECT_EQ(events.schema, "analytics");
  EXPECT_EQ(events.strategy, Strategy::kRange);
  ASSERT_EQ(events.ranges.size(), 3u);
  EXPECT_EQ(events.ranges[0].from, std::nullopt);
  EXPECT_EQ(events.ranges[0].to, I(0));
  EXPECT_EQ(events.ranges[0].shard, 2u);
  EXPECT_EQ(events.ranges[1].from, I(0));
  EXPECT_EQ(events.ranges[1].to, I(1000000));
  EXPECT_EQ(events.ranges[2].from, I(2000000));
  EXPECT_EQ(events.ranges[2].to, std::nullopt);
  EXPECT_EQ(events.ranges[2].shard, 1u);  // by name

  const ShardedTable& tenants = app.sharded_tables[2];
  ASSERT_EQ(tenants.lists.size(), 2u);
  EXPECT_EQ(tenants.lists[0].values, (std::vector<KeyValue>{S("eu"), S("uk")}));
  EXPECT_EQ(tenants.lists[1].shard, 1u);
  EXPECT_EQ(tenants.default_shard, 1u);

  const ShardedTable& devices = app.sharded_tables[3];
  ASSERT_EQ(devices.lists.size(), 1u);
  EXPECT_EQ(formatUuid(devices.lists[0].values[0].asBytes()),
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
  EXPECT_EQ(devices.default_shard, std::nullopt);

  const ShardedTable& accounts = app.sharded_tables[4];
  ASSERT_TRUE(accounts.directory);
  EXPECT_EQ(accounts.directory->table.display(), "meta.shardgate_directory");
  EXPECT_EQ(accounts.directory->shard, 1u);
  EXPECT_EQ(accounts.directory->fallback, DirectoryFallback::kHash);
  const ShardedTable& sessions = app.sharded_tables[5];
  EXPECT_EQ(sessions.key_type, KeyType::kVarchar);
  ASSERT_TRUE(sessions.directory);
  EXPECT_EQ(sessions.directory->shard, 2u);  // the database's default_shard
  EXPECT_EQ(sessions.directory->fallback, DirectoryFallback::kError);

  const User& a = c->users[0];
  EXPECT_EQ(a.read_preference, ReadPreference::kPreferReplica);
  EXPECT_EQ(Config::readPreference(app, a), ReadPreference::kPreferReplica);
  User b;
  EXPECT_EQ(Config::readPreference(app, b), ReadPreference::kReplica);
}

TEST(ConfSharding, TextRangesAndNegativeIntegers) {
  auto c = parseOk(db(R"([[databases.sharded_tables]]
name = "names"
column = "n"
type = "text"
strategy = "range"
ranges = [ { to = "m", shard = 0 }, { from = "m", shard = 1 } ]
[[databases.sharded_tables]]
name = "small"
column = "k"
type = "smallint"
strategy = "range"
ranges = [ { from = -32768, to = 0, shard = 0 }, { from = 0, to = 32767, shard = 1 } ]
)"));
  ASSERT_TRUE(c);
  EXPECT_EQ(c->databases[0].sharded_tables[0].ranges[0].to, S("m"));
  EXPECT_EQ(c->databases[0].sharded_tables[1].ranges[0].from, I(-32768));
}

TEST(ConfSharding, TableLookup) {
  auto c = parseOk(db(R"(reference_tables = ["countries", "ref.rates"]
[[databases.sharded_tables]]
name = "users"
column = "id"
type = "bigint"
[[databases.sharded_tables]]
name = "a.items"
column = "id"
type = "bigint"
[[databases.sharded_tables]]
name = "b.items"
column = "item_id"
type = "bigint"
[[databases.sharded_tables]]
name = "public.orders"
column = "user_id"
type = "bigint"
)"));
  ASSERT_TRUE(c);
  const Database& app = c->databases[0];
  // Unqualified entries match in every schema.
  ASSERT_NE(app.findShardedTable("", "users"), nullptr);
  EXPECT_EQ(app.findShardedTable("other", "users")->name, "users");
  // Qualified entries match their schema; unqualified queries default to "public".
  EXPECT_EQ(app.findShardedTable("a", "items")->column, "id");
  EXPECT_EQ(app.findShardedTable("b", "items")->column, "item_id");
  EXPECT_EQ(app.findShardedTable("", "items"), nullptr);
  EXPECT_EQ(app.findShardedTable("c", "items"), nullptr);
  EXPECT_NE(app.findShardedTable("", "orders"), nullptr);
  EXPECT_NE(app.findShardedTable("public", "orders"), nullptr);
  EXPECT_EQ(app.findShardedTable("x", "orders"), nullptr);
  EXPECT_EQ(app.findShardedTable("", "Users"), nullptr);  // names are case-sensitive
  EXPECT_TRUE(app.isReferenceTable("public", "countries"));
  EXPECT_TRUE(app.isReferenceTable("ref", "rates"));
  EXPECT_FALSE(app.isReferenceTable("", "rates"));
  EXPECT_FALSE(app.isReferenceTable("", "users"));
}

TEST(ConfSharding, PreferReplicaAllowsShardsWithoutReplicas) {
  auto c = parseOk(
      "[[databases]]\nname = \"app\"\nread_preference = \"prefer_replica\"\n[[databases.shards]]\n"
      "primary = { host = \"h\", port = 1, user = \"u\" }\n");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->databases[0].read_preference, ReadPreference::kPreferReplica);
}

TEST(ConfSharding, DemoAndReferenceConfigsDeclareTables) {
  auto demo = loadConfigFile(std::string(SHARDGATE_SOURCE_DIR) + "/conf/demo.toml");
  ASSERT_TRUE(demo.ok()) << demo.error().message;
  const Database& app = (*demo)->databases[0];
  ASSERT_EQ(app.shards.size(), 2u);
  const ShardedTable* users = app.findShardedTable("", "users");
  const ShardedTable* orders = app.findShardedTable("", "orders");
  const ShardedTable* events = app.findShardedTable("", "events");
  ASSERT_TRUE(users && orders && events);
  EXPECT_EQ(users->strategy, Strategy::kHash);
  EXPECT_EQ(users->key_type, KeyType::kBigint);
  EXPECT_EQ(orders->column, "user_id");
  EXPECT_EQ(orders->key_type, KeyType::kBigint);
  ASSERT_EQ(events->ranges.size(), 2u);
  EXPECT_EQ(events->ranges[0].from, I(0));
  EXPECT_EQ(events->ranges[0].to, I(1000000));
  EXPECT_EQ(events->ranges[1].to, I(9223372036854775807));
  EXPECT_EQ(events->ranges[1].shard, 1u);
  EXPECT_TRUE(app.isReferenceTable("", "countries"));
  for (const auto& [table, column] : {std::pair{"pgbench_accounts", "aid"},
                                      {"pgbench_branches", "bid"},
                                      {"pgbench_tellers", "tid"},
                                      {"pgbench_history", "aid"}}) {
    const ShardedTable* t = app.findShardedTable("", table);
    ASSERT_NE(t, nullptr) << table;
    EXPECT_EQ(t->column, column);
    EXPECT_EQ(t->key_type, KeyType::kInteger);
    EXPECT_EQ(t->strategy, Strategy::kHash);
  }

  auto reference = loadConfigFile(std::string(SHARDGATE_SOURCE_DIR) + "/conf/shardgate.toml");
  ASSERT_TRUE(reference.ok()) << reference.error().message;
  EXPECT_FALSE((*reference)->databases[0].sharded_tables.empty());
}

// ----- refusals ---------------------------------------------------------------------------------

struct BadCase {
  const char* name;
  std::string toml;
  int line;    // counted from the start of `extra` (1 = its first line); 0: the line is not checked
  int column;  // 0: not checked
  const char* key_path;
  std::string what;
};

void PrintTo(const BadCase& c, std::ostream* os) {
  *os << c.name;
}

class ConfShardingRefuses : public testing::TestWithParam<BadCase> {};

TEST_P(ConfShardingRefuses, WithPositionAndKey) {
  const BadCase& c = GetParam();
  const std::string message = parseError(db(c.toml));
  if (c.line) {
    std::string prefix = "test.toml:" + std::to_string(kDbLines + c.line) + ":";
    if (c.column) prefix += std::to_string(c.column) + ":";
    EXPECT_TRUE(message.starts_with(prefix)) << message << "\nexpected prefix: " << prefix;
  }
  EXPECT_NE(message.find(std::string(": ") + c.key_path + ": "), std::string::npos)
      << message << "\nexpected key path: " << c.key_path;
  EXPECT_NE(message.find(c.what), std::string::npos) << message << "\nexpected: " << c.what;
}

// A sharded table's header and name/column/type lines, then `rest`.
std::string table(std::string_view name, std::string_view type, std::string_view rest) {
  return "[[databases.sharded_tables]]\nname = \"" + std::string(name) + "\"\ncolumn = \"k\"\n" +
         "type = \"" + std::string(type) + "\"\n" + std::string(rest);
}

const BadCase kBadCases[] = {
    // database level
    {"DefaultShardOutOfRange", "default_shard = 3\n", 1, 17, "databases[0].default_shard",
     "shard 3 does not exist: database \"app\" has 3 shards (0..2)"},
    {"DefaultShardNegative", "default_shard = -1\n", 1, 17, "databases[0].default_shard",
     "shard -1 does not exist"},
    {"DefaultShardUnknownName", "default_shard = \"s9\"\n", 1, 17, "databases[0].default_shard",
     "no shard named \"s9\" in database \"app\" (shards: s0 s1 s2)"},
    {"DefaultShardAsFloat", "default_shard = 1.0\n", 1, 17, "databases[0].default_shard",
     "expected a shard index or a shard name, got a float"},
    {"UnknownReadPreference", "read_preference = \"secondary\"\n", 1, 19,
     "databases[0].read_preference", "\"secondary\" is not one of: primary replica prefer_replica"},
    {"UnknownReplicaPolicy", "replica_policy = \"fastest\"\n", 1, 18, "databases[0].replica_policy",
     "is not one of: round_robin random least_connections"},
    {"TypoInDatabaseKey", "sharded_table = []\n", 1, 1, "databases[0].sharded_table",
     "did you mean \"sharded_tables\"?"},
    {"ReferenceTablesNotAnArray", "reference_tables = \"countries\"\n", 1, 20,
     "databases[0].reference_tables", "expected an array of table names, got a string"},
    {"ReferenceTableNotAString", "reference_tables = [\"a\", 5]\n", 1, 26,
     "databases[0].reference_tables[1]", "expected a table name (a string), got an integer"},
    {"ReferenceTableBadName", "reference_tables = [\"a.b.c\"]\n", 1, 21,
     "databases[0].reference_tables[0]", "\"a.b.c\" is not a table name"},
    {"ReferenceTableEmptySchema", "reference_tables = [\".b\"]\n", 1, 21,
     "databases[0].reference_tables[0]", "is not a table name"},
    {"ReferenceTableQuoted", "reference_tables = [\"\\\"Users\\\"\"]\n", 1, 21,
     "databases[0].reference_tables[0]", "without quotes"},
    {"ReferenceTableTwice", "reference_tables = [\"countries\",\n  \"countries\"]\n", 2, 3,
     "databases[0].reference_tables[1]", "table \"countries\" is declared twice"},
    {"ReferenceTableQualifiedAndNot", "reference_tables = [\"countries\", \"public.countries\"]\n",
     1, 34, "databases[0].reference_tables[1]", "is also declared as \"countries\""},
    {"ShardedAndReference", "reference_tables = [\"users\"]\n" + table("users", "bigint", ""), 1,
     21, "databases[0].reference_tables[0]",
     "table \"users\" is also a sharded table (\"users\", line " + std::to_string(kDbLines + 3) +
         "): a table is either sharded or a reference table"},
    {"ShardedQualifiedAndReference",
     "reference_tables = [\"public.users\"]\n" + table("users", "bigint", ""), 1, 21,
     "databases[0].reference_tables[0]", "is also a sharded table"},
    // a sharded table's own keys
    {"TableWithoutName", "[[databases.sharded_tables]]\ncolumn = \"id\"\ntype = \"bigint\"\n", 1, 0,
     "databases[0].sharded_tables[0].name", "required key is missing"},
    {"TableWithoutColumn", "[[databases.sharded_tables]]\nname = \"t\"\ntype = \"bigint\"\n", 1, 0,
     "databases[0].sharded_tables[0].column", "required key is missing"},
    {"TableWithEmptyColumn", "[[databases.sharded_tables]]\nname = \"t\"\ncolumn = \"\"\n", 3, 10,
     "databases[0].sharded_tables[0].column", "must not be empty"},
    {"TableWithoutType", "[[databases.sharded_tables]]\nname = \"t\"\ncolumn = \"id\"\n", 1, 0,
     "databases[0].sharded_tables[0].type", "one of: smallint integer bigint text varchar uuid"},
    {"UnknownType", table("t", "int8", ""), 4, 8, "databases[0].sharded_tables[0].type",
     "\"int8\" is not one of: smallint integer bigint text varchar uuid"},
    {"UnknownStrategy", table("t", "bigint", "strategy = \"modulo\"\n"), 5, 12,
     "databases[0].sharded_tables[0].strategy",
     "\"modulo\" is not one of: hash range list directory"},
    {"UnknownTableKey", table("t", "bigint", "colum = \"x\"\n"), 5, 1,
     "databases[0].sharded_tables[0].colum", "did you mean \"column\"?"},
    {"BadTableName", table("a..b", "bigint", ""), 2, 8, "databases[0].sharded_tables[0].name",
     "\"a..b\" is not a table name"},
    {"TableTwice", table("users", "bigint", "") + table("users", "text", ""), 6, 8,
     "databases[0].sharded_tables[1].name",
     "table \"users\" is declared twice (first defined at line " + std::to_string(kDbLines + 2) +
         ")"},
    {"TableQualifiedAndUnqualified",
     table("public.users", "bigint", "") + table("users", "bigint", ""), 6, 8,
     "databases[0].sharded_tables[1].name", "is also declared as \"public.users\""},
    // settings of another strategy
    {"RangesForHash", table("t", "bigint", "ranges = [ { from = 0, shard = 0 } ]\n"), 5, 10,
     "databases[0].sharded_tables[0].ranges",
     "only valid with strategy = \"range\" (this table's strategy is \"hash\")"},
    {"ListsForRange",
     table("t", "bigint", "strategy = \"range\"\nlists = [ { values = [1], shard = 0 } ]\n"), 6, 9,
     "databases[0].sharded_tables[0].lists", "only valid with strategy = \"list\""},
    {"DefaultShardForHash", table("t", "bigint", "default_shard = 1\n"), 5, 17,
     "databases[0].sharded_tables[0].default_shard", "only valid with strategy = \"list\""},
    {"DirectoryForList",
     table("t", "text",
           "strategy = \"list\"\nlists = [ { values = [\"a\"], shard = 0 } ]\n"
           "directory = { table = \"d\" }\n"),
     7, 13, "databases[0].sharded_tables[0].directory", "only valid with strategy = \"directory\""},
    // ranges
    {"RangeWithoutRanges", table("t", "bigint", "strategy = \"range\"\n"), 1, 0,
     "databases[0].sharded_tables[0].ranges", "needs at least one range"},
    {"RangeWithEmptyRanges", table("t", "bigint", "strategy = \"range\"\nranges = []\n"), 6, 10,
     "databases[0].sharded_tables[0].ranges", "needs at least one range"},
    {"RangeWithoutShard", table("t", "bigint", "strategy = \"range\"\nranges = [ { from = 0 } ]\n"),
     6, 12, "databases[0].sharded_tables[0].ranges[0].shard", "required key is missing"},
    {"RangeShardOutOfRange",
     table("t", "bigint", "strategy = \"range\"\nranges = [ { from = 0, shard = 3 } ]\n"), 6, 32,
     "databases[0].sharded_tables[0].ranges[0].shard", "shard 3 does not exist"},
    {"RangeUnknownKey",
     table("t", "bigint", "strategy = \"range\"\nranges = [ { start = 0, shard = 0 } ]\n"), 6, 14,
     "databases[0].sharded_tables[0].ranges[0].start", "unknown key"},
    {"RangeStringForBigint",
     table("t", "bigint", "strategy = \"range\"\nranges = [ { from = \"abc\", shard = 0 } ]\n"), 6,
     21, "databases[0].sharded_tables[0].ranges[0].from",
     "expected an integer (the key type is bigint), got a string"},
    {"RangeIntegerForText",
     table("t", "text", "strategy = \"range\"\nranges = [ { to = 5, shard = 0 } ]\n"), 6, 19,
     "databases[0].sharded_tables[0].ranges[0].to",
     "expected a string (the key type is text), got an integer"},
    {"RangeOutOfSmallint",
     table("t", "smallint",
           "strategy = \"range\"\nranges = [ { from = 0, to = 40000, shard = 0 } ]\n"),
     6, 29, "databases[0].sharded_tables[0].ranges[0].to",
     "40000 is out of range (the key type is smallint)"},
    {"RangeOutOfInteger",
     table("t", "integer",
           "strategy = \"range\"\nranges = [ { from = -2147483649, shard = 0 } ]\n"),
     6, 21, "databases[0].sharded_tables[0].ranges[0].from",
     "out of range (the key type is integer)"},
    {"RangeBadUuid",
     table("t", "uuid",
           "strategy = \"range\"\nranges = [ { from = \"not-a-uuid\", shard = 0 } ]\n"),
     6, 21, "databases[0].sharded_tables[0].ranges[0].from",
     "invalid input syntax for type uuid: \"not-a-uuid\""},
    {"RangeEmpty",
     table("t", "bigint", "strategy = \"range\"\nranges = [ { from = 5, to = 5, shard = 0 } ]\n"),
     6, 29, "databases[0].sharded_tables[0].ranges[0].to",
     "the range [5, 5) is empty: to must be greater than from"},
    {"RangeReversed",
     table("t", "text",
           "strategy = \"range\"\nranges = [ { from = \"b\", to = \"a\", shard = 0 } ]\n"),
     6, 31, "databases[0].sharded_tables[0].ranges[0].to", "is empty"},
    {"RangesOverlap",
     table("t", "bigint",
           "strategy = \"range\"\nranges = [ { from = 0, to = 100, shard = 0 },\n"
           "  { from = 50, to = 200, shard = 1 } ]\n"),
     7, 12, "databases[0].sharded_tables[0].ranges[1].from",
     "[50, 200) overlaps ranges[0] [0, 100)"},
    {"RangesUnordered",
     table("t", "bigint",
           "strategy = \"range\"\nranges = [ { from = 100, to = 200, shard = 0 },\n"
           "  { from = 0, to = 50, shard = 1 } ]\n"),
     7, 12, "databases[0].sharded_tables[0].ranges[1].from",
     "ranges must be listed in ascending order: [0, 50) comes after ranges[0] [100, 200)"},
    {"RangeAfterUnboundedTo",
     table("t", "bigint",
           "strategy = \"range\"\nranges = [ { from = 0, shard = 0 },\n"
           "  { from = 50, to = 200, shard = 1 } ]\n"),
     7, 3, "databases[0].sharded_tables[0].ranges[1]",
     "overlaps ranges[0] [0, unbounded), which has no upper bound"},
    {"RangeUnboundedFromNotFirst",
     table("t", "bigint",
           "strategy = \"range\"\nranges = [ { from = 0, to = 10, shard = 0 },\n"
           "  { to = 200, shard = 1 } ]\n"),
     7, 3, "databases[0].sharded_tables[0].ranges[1].from", "only the first range may omit from"},
    {"TextRangesOverlap",
     table("t", "varchar",
           "strategy = \"range\"\nranges = [ { to = \"m\", shard = 0 },\n"
           "  { from = \"l\", shard = 1 } ]\n"),
     7, 12, "databases[0].sharded_tables[0].ranges[1].from", "overlaps ranges[0]"},
    {"RangesAsTable",
     table("t", "bigint", "strategy = \"range\"\nranges = { from = 0, shard = 0 }\n"), 6, 10,
     "databases[0].sharded_tables[0].ranges", "expected an array of tables, got a table"},
    // lists
    {"ListWithoutLists", table("t", "text", "strategy = \"list\"\n"), 1, 0,
     "databases[0].sharded_tables[0].lists", "needs at least one list"},
    {"ListWithoutValues", table("t", "text", "strategy = \"list\"\nlists = [ { shard = 0 } ]\n"), 6,
     11, "databases[0].sharded_tables[0].lists[0].values", "required key is missing"},
    {"ListEmptyValues",
     table("t", "text", "strategy = \"list\"\nlists = [ { values = [], shard = 0 } ]\n"), 6, 22,
     "databases[0].sharded_tables[0].lists[0].values", "must not be empty"},
    {"ListValuesNotArray",
     table("t", "text", "strategy = \"list\"\nlists = [ { values = \"eu\", shard = 0 } ]\n"), 6, 22,
     "databases[0].sharded_tables[0].lists[0].values", "expected an array of key values"},
    {"ListValueWrongType",
     table("t", "bigint", "strategy = \"list\"\nlists = [ { values = [1, \"2\"], shard = 0 } ]\n"),
     6, 26, "databases[0].sharded_tables[0].lists[0].values[1]",
     "expected an integer (the key type is bigint), got a string"},
    {"ListValueTwiceInOneList",
     table("t", "text",
           "strategy = \"list\"\nlists = [ { values = [\"eu\", \"eu\"], shard = 0 } ]\n"),
     6, 29, "databases[0].sharded_tables[0].lists[0].values[1]",
     "value \"eu\" is listed twice (first at databases[0].sharded_tables[0].lists[0].values[0])"},
    {"ListValueTwiceAcrossLists",
     table("t", "integer",
           "strategy = \"list\"\nlists = [ { values = [1, 2], shard = 0 },\n"
           "  { values = [3, 2], shard = 1 } ]\n"),
     7, 18, "databases[0].sharded_tables[0].lists[1].values[1]", "value 2 is listed twice"},
    {"ListUuidTwiceInTwoSpellings",
     table("t", "uuid",
           "strategy = \"list\"\nlists = [ { values = [\"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11\", "
           "\"{A0EEBC999C0B4EF8BB6D6BB9BD380A11}\"], shard = 0 } ]\n"),
     6, 63, "databases[0].sharded_tables[0].lists[0].values[1]",
     "value a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11 is listed twice"},
    {"ListShardUnknown",
     table("t", "text", "strategy = \"list\"\nlists = [ { values = [\"a\"], shard = \"x\" } ]\n"),
     6, 37, "databases[0].sharded_tables[0].lists[0].shard", "no shard named \"x\""},
    {"ListDefaultShardOutOfRange",
     table("t", "text",
           "strategy = \"list\"\nlists = [ { values = [\"a\"], shard = 0 } ]\ndefault_shard = 7\n"),
     7, 17, "databases[0].sharded_tables[0].default_shard", "shard 7 does not exist"},
    {"ListUnknownKey",
     table("t", "text", "strategy = \"list\"\nlists = [ { value = [\"a\"], shard = 0 } ]\n"), 6, 13,
     "databases[0].sharded_tables[0].lists[0].value", "did you mean \"values\"?"},
    // directory
    {"DirectoryWithoutDirectory", table("t", "bigint", "strategy = \"directory\"\n"), 1, 0,
     "databases[0].sharded_tables[0].directory", "needs directory = { table"},
    {"DirectoryWithoutTable",
     table("t", "bigint", "strategy = \"directory\"\ndirectory = { shard = 0 }\n"), 6, 13,
     "databases[0].sharded_tables[0].directory.table", "required key is missing"},
    {"DirectoryBadFallback",
     table("t", "bigint",
           "strategy = \"directory\"\ndirectory = { table = \"d\", fallback = \"random\" }\n"),
     6, 39, "databases[0].sharded_tables[0].directory.fallback",
     "\"random\" is not one of: error hash"},
    {"DirectoryShardOutOfRange",
     table("t", "bigint", "strategy = \"directory\"\ndirectory = { table = \"d\", shard = 3 }\n"),
     6, 36, "databases[0].sharded_tables[0].directory.shard", "shard 3 does not exist"},
    {"DirectoryAsString", table("t", "bigint", "strategy = \"directory\"\ndirectory = \"d\"\n"), 6,
     13, "databases[0].sharded_tables[0].directory", "expected a table, got a string"},
};

INSTANTIATE_TEST_SUITE_P(Cases, ConfShardingRefuses, testing::ValuesIn(kBadCases),
                         [](const testing::TestParamInfo<BadCase>& info) {
                           return std::string(info.param.name);
                         });

TEST(ConfSharding, ReplicaPreferenceNeedsReplicasEverywhere) {
  const std::string message = parseError(
      "[[databases]]\nname = \"app\"\nread_preference = \"replica\"\n[[databases.shards]]\n"
      "name = \"a\"\nprimary = { host = \"h\", port = 1, user = \"u\" }\n"
      "replicas = [ { host = \"r\", port = 2 } ]\n"
      "[[databases.shards]]\nname = \"b\"\nprimary = { host = \"h\", port = 3, user = \"u\" }\n");
  EXPECT_EQ(message,
            "test.toml:3:19: databases[0].read_preference: \"replica\" needs a replica on every "
            "shard, and shard \"b\" has none (\"prefer_replica\" falls back to the primary)");
}

TEST(ConfSharding, UserReadPreferenceIsChecked) {
  EXPECT_EQ(parseError("[[users]]\nname = \"a\"\nread_preference = \"any\"\n"),
            "test.toml:3:19: users[0].read_preference: \"any\" is not one of: primary replica "
            "prefer_replica");
}

TEST(ConfSharding, ErrorMessageFormatIsExact) {
  EXPECT_EQ(parseError(db(table("t", "bigint",
                                "strategy = \"range\"\nranges = [ { from = 0, to = 10, shard = 0 },"
                                " { from = 5, to = 20, shard = 1 } ]\n"))),
            "test.toml:" + std::to_string(kDbLines + 6) +
                ":55: databases[0].sharded_tables[0].ranges[1].from: [5, 20) overlaps ranges[0] "
                "[0, 10)");
}

}  // namespace
}  // namespace shardgate::conf
