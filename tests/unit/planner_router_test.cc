// Unit tests of routing: parameters in text and binary format, arrays, directory and catalog
// lookups, roles, transactions, caches and config reloads.
#include "planner/query_router.h"

#include <gtest/gtest.h>

#include <set>

#include "planner/shard_set.h"
#include "tests/unit/planner_test_support.h"

namespace shardgate::planner {
namespace {

std::string be(uint64_t v, int bytes) {
  std::string s;
  for (int i = bytes - 1; i >= 0; --i) s += static_cast<char>(v >> (8 * i) & 0xff);
  return s;
}

// array_send of a one-dimensional array of int8 (NULL for nullopt elements).
std::string int8Array(const std::vector<std::optional<int64_t>>& elems, uint32_t elem_oid = 20) {
  bool has_null = false;
  for (const auto& e : elems) has_null = has_null || !e;
  std::string s =
      be(1, 4) + be(has_null ? 1 : 0, 4) + be(elem_oid, 4) + be(elems.size(), 4) + be(1, 4);
  for (const auto& e : elems) {
    s += e ? be(8, 4) + be(static_cast<uint64_t>(*e), 8) : be(0xFFFFFFFFu, 4);
  }
  return s;
}

class RouterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_ = testing::loadTestConfig();
    router_.setDirectoryLookup(&directory_);
    router_.setColumnOrderProvider(&columns_);
  }
  const conf::Database& db() const { return testing::appDb(config_); }

  Result<RouteDecision> simple(std::string_view sql, const SessionRouteContext& ctx = {}) {
    return router_.routeSimple(db(), sql, ctx);
  }
  Result<RouteDecision> bound(std::string_view sql, std::vector<int32_t> types,
                              std::vector<std::optional<std::string>> values,
                              std::vector<int16_t> formats = {},
                              const SessionRouteContext& ctx = {}) {
    Result<std::shared_ptr<const QueryAnalysis>> a = router_.prepare(db(), sql, types);
    if (!a.ok()) return a.error();
    storage_ = std::move(values);
    BindParameters b;
    for (const auto& v : storage_) {
      b.values.push_back(v ? std::optional<std::string_view>(*v) : std::nullopt);
    }
    b.formats = std::move(formats);
    b.type_oids = std::move(types);
    return router_.routeBound(db(), **a, b, ctx);
  }
  // The shard of a one-shard decision (fails the test otherwise).
  uint32_t shardOf(const Result<RouteDecision>& r) {
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().describe());
    if (!r.ok()) return 999;
    EXPECT_EQ(r->kind, RouteDecision::Kind::kShard) << describeDecision(db(), *r);
    return r->shard;
  }

  conf::ConfigPtr config_;
  QueryRouter router_;
  testing::FakeDirectory directory_;
  testing::FakeColumns columns_;
  std::vector<std::optional<std::string>> storage_;
};

TEST(ShardSet, Operations) {
  ShardSet a = ShardSet::none(3);
  EXPECT_TRUE(a.empty());
  a.add(1);
  a.add(7);  // out of range: ignored
  EXPECT_EQ(a.size(), 1u);
  EXPECT_EQ(a.first(), std::optional<uint32_t>(1));
  ShardSet b = ShardSet::all(3);
  EXPECT_TRUE(b.isAll());
  b.intersect(a);
  EXPECT_EQ(b, a);
  ShardSet big = ShardSet::one(1000, 999);  // beyond the inline words
  big.unite(ShardSet::one(1000, 3));
  EXPECT_EQ(big.toVector(), (std::vector<uint32_t>{3, 999}));
  EXPECT_TRUE(ShardSet::all(1000).isAll());
  EXPECT_EQ(ShardSet::all(1000).size(), 1000u);
}

TEST_F(RouterTest, TextAndBinaryParametersRouteAlike) {
  for (int64_t id = -3; id < 40; ++id) {
    SCOPED_TRACE(id);
    const uint32_t expected =
        shardOf(simple("SELECT * FROM users WHERE id = " + std::to_string(id)));
    EXPECT_EQ(shardOf(bound("SELECT * FROM users WHERE id = $1", {}, {std::to_string(id)})),
              expected);
    EXPECT_EQ(shardOf(bound("SELECT * FROM users WHERE id = $1", {20},
                            {be(static_cast<uint64_t>(id), 8)}, {1})),
              expected);
    // int4 and int2 parameters hash like the int8 key (Postgres's cross-type hash opfamily).
    EXPECT_EQ(shardOf(bound("SELECT * FROM users WHERE id = $1", {23},
                            {be(static_cast<uint64_t>(id), 4)}, {1})),
              expected);
    EXPECT_EQ(shardOf(bound("SELECT * FROM users WHERE id = $1::int2", {},
                            {be(static_cast<uint64_t>(id), 2)}, {1})),
              expected);
    // Unspecified type: the key column's.
    EXPECT_EQ(shardOf(bound("SELECT * FROM users WHERE id = $1", {0},
                            {be(static_cast<uint64_t>(id), 8)}, {1})),
              expected);
  }
}

TEST_F(RouterTest, FormatCodesFollowTheProtocol) {
  // One format code applies to every parameter; several are one per parameter.
  const uint32_t s4 = shardOf(simple("SELECT * FROM users WHERE id = 4"));
  EXPECT_EQ(shardOf(bound("SELECT * FROM users WHERE name = $2 AND id = $1", {20, 25},
                          {be(4, 8), std::string("x")}, {1})),
            s4);
  EXPECT_EQ(shardOf(bound("SELECT * FROM users WHERE name = $2 AND id = $1", {0, 0},
                          {std::string("4"), be(4, 8)}, {0, 1})),
            s4);
  Result<RouteDecision> wrong = bound("SELECT * FROM users WHERE id = $1", {20}, {be(4, 4)}, {1});
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.error().sqlstate, "22P03");
  Result<RouteDecision> bad_text = bound("SELECT * FROM users WHERE id = $1", {}, {"4x"});
  ASSERT_FALSE(bad_text.ok());
  EXPECT_EQ(bad_text.error().sqlstate, "22P02");
}

TEST_F(RouterTest, UuidAndTextKeys) {
  const std::string text = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";
  std::string raw;
  for (size_t i = 0; i < text.size(); i += 2) {
    if (text[i] == '-') ++i;
    raw += static_cast<char>(std::stoi(text.substr(i, 2), nullptr, 16));
  }
  ASSERT_EQ(raw.size(), 16u);
  const uint32_t expected = shardOf(simple("SELECT * FROM devices WHERE id = '" + text + "'"));
  EXPECT_EQ(shardOf(bound("SELECT * FROM devices WHERE id = $1", {2950}, {raw}, {1})), expected);
  EXPECT_EQ(shardOf(bound("SELECT * FROM devices WHERE id = $1", {}, {text})), expected);
  // text and varchar hash alike.
  const uint32_t doc = shardOf(simple("SELECT * FROM documents WHERE slug = 'hello'"));
  EXPECT_EQ(shardOf(bound("SELECT * FROM documents WHERE slug = $1", {1043}, {"hello"}, {1})), doc);
}

TEST_F(RouterTest, ArrayParameters) {
  // Keys 1 and 2 are both on shard0, 4 on shard1 (see the golden cases).
  EXPECT_EQ(shardOf(bound("SELECT * FROM users WHERE id = ANY($1)", {1016},
                          {int8Array({1, std::nullopt, 2})}, {1})),
            0u);
  // Keys on both shards: a multi-shard plan with the parameter kept for every shard.
  Result<RouteDecision> spans =
      bound("SELECT * FROM users WHERE id = ANY($1)", {1016}, {int8Array({1, 4})}, {1});
  ASSERT_TRUE(spans.ok());
  ASSERT_EQ(spans->kind, RouteDecision::Kind::kMultiShard);
  ASSERT_EQ(spans->multi->statements.size(), 2u);
  EXPECT_EQ(spans->multi->statements[1].sql, "SELECT * FROM users WHERE id = ANY($1)");
  // Text arrays: quotes, escapes, spaces, NULL and a dimension prefix.
  EXPECT_EQ(shardOf(bound("SELECT * FROM users WHERE id = ANY($1)", {},
                          {std::string("[1:3]={ \"1\" , 2 ,NULL}")})),
            0u);
  EXPECT_EQ(shardOf(bound("SELECT * FROM users WHERE id = ANY($1)", {1007}, {"{{1},{2}}"})), 0u);
  Result<RouteDecision> empty = bound("SELECT * FROM users WHERE id = ANY($1)", {}, {"{}"});
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->kind, RouteDecision::Kind::kAnyShard);  // matches no row
  Result<RouteDecision> junk = bound("SELECT * FROM users WHERE id = ANY($1)", {}, {"{1,2}x"});
  ASSERT_FALSE(junk.ok());
  EXPECT_EQ(junk.error().sqlstate, "22P02");
  Result<RouteDecision> truncated = bound("SELECT * FROM users WHERE id = ANY($1)", {1016},
                                          {int8Array({1, 2}).substr(0, 30)}, {1});
  ASSERT_FALSE(truncated.ok());
  EXPECT_EQ(truncated.error().sqlstate, "22P03");
  // An array of a type that cannot be a key (numeric[]) cannot pick a shard: every shard.
  Result<RouteDecision> numeric =
      bound("SELECT * FROM users WHERE id = ANY($1)", {1231}, {int8Array({1}, 1700)}, {1});
  ASSERT_TRUE(numeric.ok());
  EXPECT_EQ(numeric->kind, RouteDecision::Kind::kMultiShard);
}

TEST_F(RouterTest, SamePreparedStatementRoutesPerExecution) {
  Result<std::shared_ptr<const QueryAnalysis>> a = router_.prepare(
      db(), "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2", {23, 23});
  ASSERT_TRUE(a.ok());
  std::set<uint32_t> shards;
  for (int aid = 1; aid <= 20; ++aid) {
    const std::string delta = be(5, 4);
    const std::string key = be(static_cast<uint64_t>(aid), 4);
    BindParameters b;
    b.values = {delta, key};
    b.formats = {1};
    b.type_oids = {23, 23};
    Result<RouteDecision> r = router_.routeBound(db(), **a, b, {});
    ASSERT_TRUE(r.ok());
    EXPECT_TRUE(r->writes);
    EXPECT_EQ(r->shard,
              shardOf(simple("SELECT 1 FROM pgbench_accounts WHERE aid = " + std::to_string(aid))));
    shards.insert(r->shard);
  }
  EXPECT_EQ(shards.size(), 2u);
  // Parse is cached by text and parameter types.
  Result<std::shared_ptr<const QueryAnalysis>> again = router_.prepare(
      db(), "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2", {23, 23});
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->get(), a->get());
  Result<std::shared_ptr<const QueryAnalysis>> other_types = router_.prepare(
      db(), "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2", {23, 20});
  ASSERT_TRUE(other_types.ok());
  EXPECT_NE(other_types->get(), a->get());
}

TEST_F(RouterTest, DirectoryLookupsAreRequestedThenUsed) {
  Result<RouteDecision> r = simple("SELECT * FROM accounts WHERE id IN (50, 51)");
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->kind, RouteDecision::Kind::kNeedsLookup);
  ASSERT_EQ(r->directory_lookups.size(), 2u);
  EXPECT_EQ(r->directory_lookups[0].table->name, "accounts");
  EXPECT_EQ(r->directory_lookups[0].key, conf::KeyValue::ofInt(50));
  // The proxy looks the keys up, then routes again.
  directory_.add("accounts", conf::KeyValue::ofInt(50), 1);
  directory_.add("accounts", conf::KeyValue::ofInt(51), 1);
  EXPECT_EQ(shardOf(simple("SELECT * FROM accounts WHERE id IN (50, 51)")), 1u);
  directory_.add("accounts", conf::KeyValue::ofInt(52), 0);
  Result<RouteDecision> spans = simple("SELECT * FROM accounts WHERE id IN (50, 52)");
  ASSERT_TRUE(spans.ok());
  ASSERT_EQ(spans->kind, RouteDecision::Kind::kMultiShard);
  EXPECT_EQ(spans->multi->statements.size(), 2u);
  // Inside a multi-statement query too.
  Result<RouteDecision> multi = simple("SELECT 1; SELECT * FROM accounts WHERE id = 77");
  ASSERT_TRUE(multi.ok());
  EXPECT_EQ(multi->kind, RouteDecision::Kind::kNeedsLookup);
  ASSERT_EQ(multi->directory_lookups.size(), 1u);
}

TEST_F(RouterTest, ColumnOrderIsRequestedThenUsed) {
  Result<RouteDecision> r = simple("INSERT INTO events VALUES (1000005, 'x')");
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->kind, RouteDecision::Kind::kNeedsLookup);
  ASSERT_EQ(r->column_order_lookups.size(), 1u);
  EXPECT_EQ(r->column_order_lookups[0].table, "events");

  class Columns : public ColumnOrderProvider {
   public:
    const std::vector<std::string>* columnOrder(std::string_view,
                                                std::string_view table) const override {
      return table == "events" ? &order_ : nullptr;
    }
    std::vector<std::string> order_ = {"payload", "id"};
  } columns;
  router_.setColumnOrderProvider(&columns);
  EXPECT_EQ(shardOf(simple("INSERT INTO events VALUES ('x', 1000005)")), 1u);
  EXPECT_EQ(shardOf(simple("INSERT INTO events VALUES ('x', 5)")), 0u);
  Result<RouteDecision> short_row = simple("INSERT INTO events VALUES ('x')");
  ASSERT_FALSE(short_row.ok());
  EXPECT_EQ(short_row.error().sqlstate, "0A000");
}

TEST_F(RouterTest, RolesFollowReadPreferenceAndTransactions) {
  SessionRouteContext ctx;
  ctx.read_preference = conf::ReadPreference::kPreferReplica;
  Result<RouteDecision> r = simple("SELECT * FROM users WHERE id = 1", ctx);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->role, Role::kReplica);
  EXPECT_TRUE(r->primary_fallback);
  EXPECT_FALSE(r->writes);

  ctx.read_preference = conf::ReadPreference::kReplica;
  r = simple("SELECT * FROM users WHERE id = 1", ctx);
  EXPECT_EQ(r->role, Role::kReplica);
  EXPECT_FALSE(r->primary_fallback);

  r = simple("SELECT * FROM users WHERE id = 1 FOR UPDATE", ctx);
  EXPECT_EQ(r->role, Role::kPrimary);
  EXPECT_TRUE(r->writes);

  ctx.in_transaction = true;
  EXPECT_EQ(simple("SELECT * FROM users WHERE id = 1", ctx)->role, Role::kPrimary);
  ctx.transaction_read_only = true;
  EXPECT_EQ(simple("SELECT * FROM users WHERE id = 1", ctx)->role, Role::kReplica);

  ctx = {};
  ctx.read_preference = conf::ReadPreference::kReplica;
  r = simple("BEGIN READ ONLY", ctx);
  EXPECT_TRUE(r->begins_read_only_transaction);
  EXPECT_EQ(r->transaction, TransactionAction::kBegin);
  EXPECT_EQ(r->role, Role::kReplica);
  EXPECT_EQ(simple("BEGIN", ctx)->role, Role::kPrimary);
}

TEST_F(RouterTest, TransactionsAreBoundToOneShard) {
  SessionRouteContext ctx;
  ctx.in_transaction = true;
  ctx.transaction_shard = 1;
  EXPECT_EQ(shardOf(simple("SELECT 1", ctx)), 1u);
  EXPECT_EQ(shardOf(simple("COMMIT", ctx)), 1u);
  EXPECT_EQ(shardOf(simple("SELECT * FROM users WHERE id = 4", ctx)), 1u);
  Result<RouteDecision> other = simple("SELECT * FROM users WHERE id = 1", ctx);
  ASSERT_FALSE(other.ok());
  EXPECT_EQ(other.error().sqlstate, "0A000");
  EXPECT_NE(other.error().message.find("shard1"), std::string::npos);
}

TEST_F(RouterTest, ShardgateSettings) {
  Result<RouteDecision> r = simple("SET shardgate.read_preference = 'Prefer_Replica'");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->kind, RouteDecision::Kind::kShardgateSetting);
  EXPECT_EQ(r->setting_action, SettingAction::kSet);
  EXPECT_EQ(r->setting_name, "shardgate.read_preference");
  EXPECT_EQ(r->setting_value, "prefer_replica");
  // The value comes from the literal each time, also on a template hit.
  r = simple("SET shardgate.read_preference = 'primary'");
  EXPECT_EQ(r->setting_value, "primary");
  EXPECT_EQ(router_.stats().template_hits, 1u);
  EXPECT_TRUE(simple("RESET ALL")->resets_session);
}

TEST_F(RouterTest, TemplateCacheHitsAndExactEntries) {
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(simple("SELECT * FROM users WHERE id = " + std::to_string(i)).ok());
  }
  QueryRouter::Stats s = router_.stats();
  EXPECT_EQ(s.misses, 1u);
  EXPECT_EQ(s.template_hits, 9u);

  // Not templatable (E''): cached by exact text.
  ASSERT_TRUE(simple("SELECT * FROM documents WHERE slug = E'a\\\\b'").ok());
  ASSERT_TRUE(simple("SELECT * FROM documents WHERE slug = E'a\\\\b'").ok());
  s = router_.stats();
  EXPECT_EQ(s.misses, 2u);
  EXPECT_EQ(s.exact_hits, 1u);

  // -(-1) ties the analysis to its text: another value must not reuse it.
  const uint32_t s1 = shardOf(simple("SELECT * FROM users WHERE id = -(-1)"));
  const uint32_t s4 = shardOf(simple("SELECT * FROM users WHERE id = -(-4)"));
  EXPECT_EQ(s1, shardOf(simple("SELECT * FROM users WHERE id = 1")));
  EXPECT_EQ(s4, shardOf(simple("SELECT * FROM users WHERE id = 4")));
  EXPECT_NE(s1, s4);

  // Errors are not cached.
  EXPECT_FALSE(simple("SELEC 1").ok());
  EXPECT_FALSE(simple("SELEC 1").ok());
}

TEST_F(RouterTest, CacheIsBounded) {
  QueryRouter small(4);
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(small.routeSimple(db(), "SELECT " + std::string(i, 'x') + "1", {}).ok());
  }
  EXPECT_EQ(small.stats().entries, 4u);
  QueryRouter none(0);
  ASSERT_TRUE(none.routeSimple(db(), "SELECT 1", {}).ok());
  EXPECT_EQ(none.stats().entries, 0u);
}

TEST_F(RouterTest, ConfigReloadInvalidatesCachedAnalyses) {
  ASSERT_EQ(shardOf(simple("SELECT * FROM settings WHERE id = 4")), 0u);  // unsharded
  Result<std::shared_ptr<const QueryAnalysis>> prepared =
      router_.prepare(db(), "SELECT * FROM settings WHERE id = $1", {});
  ASSERT_TRUE(prepared.ok());

  // A new snapshot in which settings is sharded by id.
  const conf::ConfigPtr reloaded = testing::loadTestConfig(R"(
[[databases.sharded_tables]]
name = "settings"
column = "id"
type = "bigint"
)");
  const conf::Database& db2 = testing::appDb(reloaded);
  const uint32_t expected = shardOf(simple("SELECT * FROM users WHERE id = 4"));
  Result<RouteDecision> r = router_.routeSimple(db2, "SELECT * FROM settings WHERE id = 4", {});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->shard, expected);
  EXPECT_NE(r->reason.find("settings.id = 4"), std::string::npos) << r->reason;
  BindParameters b;
  b.values = {std::string_view("4")};
  Result<RouteDecision> rb = router_.routeBound(db2, **prepared, b, {});
  ASSERT_TRUE(rb.ok());
  EXPECT_EQ(rb->shard, expected);

  // A Parse of the same text after the reload is analysed for the new config: prepare() keeps
  // its last answer aside, but only for the config it was made for.
  Result<std::shared_ptr<const QueryAnalysis>> reprepared =
      router_.prepare(db2, "SELECT * FROM settings WHERE id = $1", {});
  ASSERT_TRUE(reprepared.ok());
  EXPECT_NE(reprepared->get(), prepared->get());
  EXPECT_EQ((*reprepared)->tables.at(0).table_class, TableClass::kSharded);
  const uint64_t hits = router_.stats().exact_hits;
  Result<std::shared_ptr<const QueryAnalysis>> again =
      router_.prepare(db2, "SELECT * FROM settings WHERE id = $1", {});
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->get(), reprepared->get());
  EXPECT_EQ(router_.stats().exact_hits, hits + 1);
  // And a Parse under the old config is analysed for that one again.
  Result<std::shared_ptr<const QueryAnalysis>> old =
      router_.prepare(db(), "SELECT * FROM settings WHERE id = $1", {});
  ASSERT_TRUE(old.ok());
  EXPECT_EQ((*old)->tables.at(0).table_class, TableClass::kUnsharded);
}

TEST_F(RouterTest, SingleShardDatabaseRoutesEverythingToIt) {
  const Result<conf::ConfigPtr> loaded = conf::parseConfig(R"(
[[users]]
name = "u"
password = "p"
[[databases]]
name = "solo"
reference_tables = ["countries"]
[[databases.shards]]
[databases.shards.primary]
host = "127.0.0.1"
port = 5432
database = "solo"
user = "u"
[[databases.sharded_tables]]
name = "users"
column = "id"
type = "bigint"
)",
                                                           "solo.toml");
  ASSERT_TRUE(loaded.ok()) << loaded.error().describe();
  const conf::Database& solo = *(*loaded)->findDatabase("solo");
  QueryRouter router;
  for (const char* sql :
       {"SELECT * FROM users", "UPDATE users SET name = 'x'", "INSERT INTO countries VALUES ('fr')",
        "ALTER TABLE users ADD c int", "SELECT * FROM users WHERE id IN (1, 4)",
        "MERGE INTO users u USING t "
        "ON u.id = t.id WHEN MATCHED THEN DELETE"}) {
    Result<RouteDecision> r = router.routeSimple(solo, sql, {});
    ASSERT_TRUE(r.ok()) << sql << ": " << r.error().describe();
    EXPECT_EQ(r->kind, RouteDecision::Kind::kShard) << sql;
    EXPECT_EQ(r->shard, 0u) << sql;
  }
}

}  // namespace
}  // namespace shardgate::planner
