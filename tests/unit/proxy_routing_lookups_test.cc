// Unit tests of the routing lookups' pieces that need no shard: the LRU cache, the recognition of
// shardgate.move_key calls, and the search_path statement a session's lookups run with.
#include "proxy/routing_lookups.h"

#include <gtest/gtest.h>

namespace shardgate::proxy {
namespace {

conf::Database directoryDatabase() {
  conf::Database db;
  db.name = "app";
  db.shards.resize(2);
  db.shards[0].name = "shard0";
  db.shards[1].name = "east";
  conf::ShardedTable accounts;
  accounts.name = "accounts";
  accounts.column = "id";
  accounts.key_type = conf::KeyType::kBigint;
  accounts.strategy = conf::Strategy::kDirectory;
  accounts.directory =
      conf::DirectoryConfig{{"", "shardgate_directory"}, 0, conf::DirectoryFallback::kHash};
  db.sharded_tables.push_back(accounts);
  conf::ShardedTable users;
  users.name = "users";
  users.column = "id";
  db.sharded_tables.push_back(users);
  return db;
}

TEST(LruCacheTest, EvictsTheLeastRecentlyUsed) {
  LruCache<int> cache(2);
  cache.put("a", 1);
  cache.put("b", 2);
  ASSERT_NE(cache.find("a"), nullptr);  // a is now the most recent
  cache.put("c", 3);
  EXPECT_EQ(cache.find("b"), nullptr);
  ASSERT_NE(cache.find("a"), nullptr);
  EXPECT_EQ(*cache.find("a"), 1);
  EXPECT_EQ(*cache.find("c"), 3);
  cache.put("a", 7);
  EXPECT_EQ(*cache.find("a"), 7);
  EXPECT_EQ(cache.size(), 2u);
  cache.erase("a");
  EXPECT_EQ(cache.find("a"), nullptr);
  EXPECT_EQ(cache.size(), 1u);
}

TEST(MoveKeyCallTest, OtherStatementsAreNotCalls) {
  const conf::Database db = directoryDatabase();
  EXPECT_FALSE(parseMoveKeyCall(db, "SELECT 1"));
  EXPECT_FALSE(parseMoveKeyCall(db, "SELECT move_key FROM t"));
  EXPECT_FALSE(parseMoveKeyCall(db, "SELECT other.move_key('accounts', '1', 0)"));
  EXPECT_FALSE(
      parseMoveKeyCall(db, "SELECT shardgate.move_key("));  // does not parse: a shard says so
}

TEST(MoveKeyCallTest, ReadsTableKeyAndShard) {
  const conf::Database db = directoryDatabase();
  auto call = parseMoveKeyCall(db, "select SHARDGATE.MOVE_KEY('accounts', '42', 1)");
  ASSERT_TRUE(call);
  ASSERT_TRUE(call->ok()) << call->error().message;
  EXPECT_EQ((*call)->table->name, "accounts");
  EXPECT_EQ((*call)->key, conf::KeyValue::ofInt(42));
  EXPECT_EQ((*call)->shard, 1u);

  call = parseMoveKeyCall(db, "SELECT shardgate.move_key('accounts', 7, 'east')");
  ASSERT_TRUE(call && call->ok());
  EXPECT_EQ((*call)->key, conf::KeyValue::ofInt(7));
  EXPECT_EQ((*call)->shard, 1u);
}

TEST(MoveKeyCallTest, WrongCallsAreErrors) {
  const conf::Database db = directoryDatabase();
  const auto state = [&](std::string_view sql) {
    auto call = parseMoveKeyCall(db, sql);
    if (!call) return std::string("not a call");
    return call->ok() ? std::string("ok") : call->error().sqlstate;
  };
  EXPECT_EQ(state("SELECT shardgate.move_key('users', '1', 0)"), "42P01");
  EXPECT_EQ(state("SELECT shardgate.move_key('nosuch', '1', 0)"), "42P01");
  EXPECT_EQ(state("SELECT shardgate.move_key('accounts', 'x', 0)"), "22P02");
  EXPECT_EQ(state("SELECT shardgate.move_key('accounts', '1', 2)"), "22023");
  EXPECT_EQ(state("SELECT shardgate.move_key('accounts', '1', -1)"), "22023");
  EXPECT_EQ(state("SELECT shardgate.move_key('accounts', '1', 'west')"), "22023");
  EXPECT_EQ(state("SELECT shardgate.move_key('accounts', '1')"), "22023");
  EXPECT_EQ(state("SELECT shardgate.move_key('accounts', '1', 0) FROM t"), "22023");
  EXPECT_EQ(state("SELECT shardgate.move_key('accounts', id, 0)"), "22023");
}

TEST(SearchPathStatementTest, FromTheSessionsSettings) {
  std::map<std::string, std::string, std::less<>> settings;
  EXPECT_EQ(searchPathStatement(settings), "");
  settings["search_path"] = "SET search_path = other, public";
  settings["work_mem"] = "SET work_mem = '8MB'";
  EXPECT_EQ(searchPathStatement(settings), "SET search_path = other, public");
}

}  // namespace
}  // namespace shardgate::proxy
