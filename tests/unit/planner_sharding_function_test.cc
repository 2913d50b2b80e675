// Unit tests of the sharding functions: key parsing (text and binary), hash, range and list
// routing, and the shards a key interval may touch.
#include <gtest/gtest.h>

#include <limits>
#include <string>
#include <vector>

#include "conf/config_loader.h"
#include "planner/sharding_function.h"

namespace shardgate::conf {
// Readable gtest failure messages.
void PrintTo(const KeyValue& v, std::ostream* os) {
  *os << v.display(v.isInt() ? KeyType::kBigint : KeyType::kText);
}
}  // namespace shardgate::conf

namespace shardgate::planner {
namespace {

using conf::RangeBound;
using conf::ShardedTable;
using conf::Strategy;
using Shards = std::vector<uint32_t>;

constexpr int64_t kMin = std::numeric_limits<int64_t>::min();
constexpr int64_t kMax = std::numeric_limits<int64_t>::max();

KeyValue I(int64_t v) {
  return KeyValue::ofInt(v);
}
KeyValue S(std::string s) {
  return KeyValue::ofBytes(std::move(s));
}

// events: [.., 0) -> 2, [0, 1000) -> 0, [1000, 2000) -> 1, gap, [5000, ..) -> 2.
ShardedTable rangeTable() {
  ShardedTable t;
  t.name = "events";
  t.column = "id";
  t.key_type = KeyType::kBigint;
  t.strategy = Strategy::kRange;
  t.ranges = {RangeBound{std::nullopt, I(0), 2}, RangeBound{I(0), I(1000), 0},
              RangeBound{I(1000), I(2000), 1}, RangeBound{I(5000), std::nullopt, 2}};
  return t;
}

ShardedTable listTable(std::optional<uint32_t> default_shard) {
  ShardedTable t;
  t.schema = "app";
  t.name = "tenants";
  t.column = "region";
  t.key_type = KeyType::kText;
  t.strategy = Strategy::kList;
  t.lists = {conf::ListEntry{{S("eu"), S("uk")}, 0}, conf::ListEntry{{S("us")}, 1}};
  t.default_shard = default_shard;
  return t;
}

ShardedTable hashTable(KeyType type) {
  ShardedTable t;
  t.name = "users";
  t.column = "id";
  t.key_type = type;
  return t;
}

uint32_t shardOf(const ShardedTable& t, const KeyValue& k, size_t shards = 3) {
  auto r = shardForKey(t, shards, k);
  EXPECT_TRUE(r.ok()) << r.error().message;
  return r.ok() ? *r : 999;
}

// ----- parsing ------------------------------------------------------------------------------

TEST(ParseKeyText, Integers) {
  EXPECT_EQ(*parseKeyText(KeyType::kBigint, "42"), I(42));
  EXPECT_EQ(*parseKeyText(KeyType::kBigint, "-7"), I(-7));
  EXPECT_EQ(*parseKeyText(KeyType::kBigint, "+7"), I(7));
  EXPECT_EQ(*parseKeyText(KeyType::kBigint, "  \t12 \n"), I(12));
  EXPECT_EQ(*parseKeyText(KeyType::kBigint, "007"), I(7));
  EXPECT_EQ(*parseKeyText(KeyType::kBigint, "-9223372036854775808"), I(kMin));
  EXPECT_EQ(*parseKeyText(KeyType::kBigint, "9223372036854775807"), I(kMax));
  EXPECT_EQ(*parseKeyText(KeyType::kSmallint, "-32768"), I(-32768));
  EXPECT_EQ(*parseKeyText(KeyType::kInteger, "2147483647"), I(2147483647));
}

TEST(ParseKeyText, IntegerErrorsAreLikePostgres) {
  struct Bad {
    KeyType type;
    const char* text;
    const char* sqlstate;
    const char* message;
  };
  const Bad cases[] = {
      {KeyType::kBigint, "abc", "22P02", "invalid input syntax for type bigint: \"abc\""},
      {KeyType::kBigint, "", "22P02", "invalid input syntax for type bigint: \"\""},
      {KeyType::kBigint, "-", "22P02", "invalid input syntax"},
      {KeyType::kBigint, "1 2", "22P02", "invalid input syntax"},
      {KeyType::kBigint, "1.5", "22P02", "invalid input syntax"},
      {KeyType::kBigint, "0x10", "22P02", "invalid input syntax"},
      {KeyType::kBigint, "1_000", "22P02", "invalid input syntax"},  // Postgres 16+ only
      {KeyType::kBigint, "9223372036854775808", "22003",
       "value \"9223372036854775808\" is out of range for type bigint"},
      {KeyType::kBigint, "-9223372036854775809", "22003", "out of range"},
      {KeyType::kBigint, "99999999999999999999999", "22003", "out of range"},
      {KeyType::kInteger, "2147483648", "22003", "out of range for type integer"},
      {KeyType::kSmallint, "-32769", "22003", "out of range for type smallint"},
      {KeyType::kSmallint, "x", "22P02", "invalid input syntax for type smallint"},
  };
  for (const Bad& c : cases) {
    auto r = parseKeyText(c.type, c.text);
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_EQ(r.error().sqlstate, c.sqlstate) << c.text;
    EXPECT_NE(r.error().message.find(c.message), std::string::npos) << r.error().message;
  }
}

TEST(ParseKeyText, UuidForms) {
  const std::string canonical = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";
  auto expected = parseKeyText(KeyType::kUuid, canonical);
  ASSERT_TRUE(expected.ok());
  ASSERT_EQ(expected->asBytes().size(), 16u);
  EXPECT_EQ(static_cast<unsigned char>(expected->asBytes()[0]), 0xa0);
  EXPECT_EQ(static_cast<unsigned char>(expected->asBytes()[15]), 0x11);
  EXPECT_EQ(conf::formatUuid(expected->asBytes()), canonical);
  for (const char* form :
       {"A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11", "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
        "a0eebc999c0b4ef8bb6d6bb9bd380a11", "a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11",
        "{a0eebc999c0b4ef8bb6d6bb9bd380a11}"}) {
    auto r = parseKeyText(KeyType::kUuid, form);
    ASSERT_TRUE(r.ok()) << form << ": " << r.error().message;
    EXPECT_EQ(*r, *expected) << form;
  }
  for (const char* bad :
       {"", "a0eebc99", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a111", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1g",
        " a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11 ",
        "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
        "a0e-ebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "a0eebc99--9c0b-4ef8-bb6d-6bb9bd380a11",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11-", "abc"}) {
    auto r = parseKeyText(KeyType::kUuid, bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.error().sqlstate, "22P02") << bad;
    EXPECT_NE(r.error().message.find("invalid input syntax for type uuid"), std::string::npos);
  }
}

TEST(ParseKeyText, TextIsTakenAsIs) {
  EXPECT_EQ(*parseKeyText(KeyType::kText, ""), S(""));
  EXPECT_EQ(*parseKeyText(KeyType::kText, " 42 "), S(" 42 "));
  EXPECT_EQ(*parseKeyText(KeyType::kVarchar, "h\xc3\xa9"), S("h\xc3\xa9"));
}

TEST(ParseKeyBinary, BigEndianIntegers) {
  EXPECT_EQ(*parseKeyBinary(KeyType::kSmallint, std::string("\xff\xfe", 2)), I(-2));
  EXPECT_EQ(*parseKeyBinary(KeyType::kSmallint, std::string("\x7f\xff", 2)), I(32767));
  EXPECT_EQ(*parseKeyBinary(KeyType::kInteger, std::string("\x00\x00\x01\x00", 4)), I(256));
  EXPECT_EQ(*parseKeyBinary(KeyType::kInteger, std::string("\x80\x00\x00\x00", 4)),
            I(-2147483648LL));
  EXPECT_EQ(*parseKeyBinary(KeyType::kBigint, std::string("\x00\x00\x00\x00\x00\x0f\x42\x40", 8)),
            I(1000000));
  EXPECT_EQ(*parseKeyBinary(KeyType::kBigint, std::string("\x80\0\0\0\0\0\0\0", 8)), I(kMin));
  EXPECT_EQ(*parseKeyBinary(KeyType::kBigint, std::string(8, '\xff')), I(-1));
}

TEST(ParseKeyBinary, UuidAndText) {
  const std::string raw("\xa0\xee\xbc\x99\x9c\x0b\x4e\xf8\xbb\x6d\x6b\xb9\xbd\x38\x0a\x11", 16);
  EXPECT_EQ(*parseKeyBinary(KeyType::kUuid, raw),
            *parseKeyText(KeyType::kUuid, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"));
  EXPECT_EQ(*parseKeyBinary(KeyType::kText, std::string("a\0b", 3)), S(std::string("a\0b", 3)));
}

TEST(ParseKeyBinary, WrongLengthIsRefused) {
  const std::pair<KeyType, size_t> cases[] = {{KeyType::kSmallint, 4}, {KeyType::kInteger, 8},
                                              {KeyType::kBigint, 4},   {KeyType::kBigint, 0},
                                              {KeyType::kUuid, 15},    {KeyType::kUuid, 36}};
  for (const auto& [type, size] : cases) {
    auto r = parseKeyBinary(type, std::string(size, '\1'));
    ASSERT_FALSE(r.ok()) << conf::keyTypeName(type) << " " << size;
    EXPECT_EQ(r.error().sqlstate, "22P03");
  }
}

TEST(KeyTypeFromOid, KnownTypes) {
  EXPECT_EQ(keyTypeFromOid(20), KeyType::kBigint);
  EXPECT_EQ(keyTypeFromOid(21), KeyType::kSmallint);
  EXPECT_EQ(keyTypeFromOid(23), KeyType::kInteger);
  EXPECT_EQ(keyTypeFromOid(25), KeyType::kText);
  EXPECT_EQ(keyTypeFromOid(1043), KeyType::kVarchar);
  EXPECT_EQ(keyTypeFromOid(2950), KeyType::kUuid);
  EXPECT_EQ(keyTypeFromOid(1042), std::nullopt);  // bpchar hashes without trailing spaces
  EXPECT_EQ(keyTypeFromOid(0), std::nullopt);
}

TEST(KeyValue, OrderIsNumericAndBytewise) {
  EXPECT_LT(I(-5), I(3));
  EXPECT_LT(I(kMin), I(kMax));
  EXPECT_LT(S(""), S("a"));
  EXPECT_LT(S("a"), S("ab"));
  EXPECT_LT(S("Z"), S("a"));
  EXPECT_LT(S("z"), S("\xc3\xa9"));  // unsigned bytes, like COLLATE "C"
  EXPECT_EQ(I(7), I(7));
  EXPECT_NE(S("7"), I(7));
}

// ----- hash -----------------------------------------------------------------------------------

TEST(HashShard, IsTheHashPartitionRemainder) {
  // satisfies_hash_partition(t, 8, 2, 42::bigint) and (t, 3, 0, 42) are true.
  EXPECT_EQ(shardOf(hashTable(KeyType::kBigint), I(42), 8), 2u);
  EXPECT_EQ(shardOf(hashTable(KeyType::kBigint), I(42), 3), 0u);
  EXPECT_EQ(shardOf(hashTable(KeyType::kText), S("eu"), 8), 4u);
  EXPECT_EQ(shardOf(hashTable(KeyType::kBigint), I(7), 1), 0u);
}

TEST(HashShard, IntegerTypesAgreeOnEqualValues) {
  for (int64_t v : {-32768LL, -1LL, 0LL, 1LL, 12345LL, 32767LL}) {
    const uint32_t s = shardOf(hashTable(KeyType::kBigint), I(v), 8);
    EXPECT_EQ(shardOf(hashTable(KeyType::kInteger), I(v), 8), s) << v;
    EXPECT_EQ(shardOf(hashTable(KeyType::kSmallint), I(v), 8), s) << v;
  }
}

TEST(HashShard, TextAndVarcharAgree) {
  for (const char* v : {"", "a", "eu", "a longer key than twelve bytes"}) {
    EXPECT_EQ(shardOf(hashTable(KeyType::kText), S(v), 8),
              shardOf(hashTable(KeyType::kVarchar), S(v), 8));
  }
}

TEST(HashShard, EveryShardIsUsed) {
  std::vector<int> count(4, 0);
  for (int64_t v = 0; v < 400; ++v) count[shardOf(hashTable(KeyType::kBigint), I(v), 4)]++;
  for (int c : count) EXPECT_GT(c, 60);
}

TEST(HashShard, WrongKindOfKeyIsRefused) {
  auto r = shardForKey(hashTable(KeyType::kText), 2, I(5));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().sqlstate, "42804");
  EXPECT_NE(r.error().message.find("users"), std::string::npos);
  r = shardForKey(hashTable(KeyType::kBigint), 2, S("5"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().sqlstate, "42804");
  r = shardForKey(hashTable(KeyType::kUuid), 2, S("short"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().sqlstate, "42804");
  EXPECT_FALSE(hashShard(KeyType::kBigint, 0, I(1)).ok());
}

// ----- range ----------------------------------------------------------------------------------

TEST(RangeShard, BoundsAreInclusiveExclusive) {
  const ShardedTable t = rangeTable();
  EXPECT_EQ(shardOf(t, I(kMin)), 2u);
  EXPECT_EQ(shardOf(t, I(-1)), 2u);
  EXPECT_EQ(shardOf(t, I(0)), 0u);
  EXPECT_EQ(shardOf(t, I(999)), 0u);
  EXPECT_EQ(shardOf(t, I(1000)), 1u);
  EXPECT_EQ(shardOf(t, I(1999)), 1u);
  EXPECT_EQ(shardOf(t, I(5000)), 2u);
  EXPECT_EQ(shardOf(t, I(kMax)), 2u);
}

TEST(RangeShard, KeyInAGapIsAnError) {
  const ShardedTable t = rangeTable();
  for (int64_t k : {2000LL, 3000LL, 4999LL}) {
    auto r = shardForKey(t, 3, I(k));
    ASSERT_FALSE(r.ok()) << k;
    EXPECT_EQ(r.error().sqlstate, "22023");
    EXPECT_EQ(r.error().message, "no shard for key " + std::to_string(k) +
                                     " of table events: outside every configured range");
  }
}

TEST(RangeShard, BoundedBothEndsRefusesOutside) {
  ShardedTable t = rangeTable();
  t.ranges = {RangeBound{I(0), I(1000000), 0},
              RangeBound{I(1000000), I(9223372036854775807), 1}};  // the demo's events
  EXPECT_EQ(shardOf(t, I(0)), 0u);
  EXPECT_EQ(shardOf(t, I(999999)), 0u);
  EXPECT_EQ(shardOf(t, I(1000000)), 1u);
  EXPECT_EQ(shardOf(t, I(kMax - 1)), 1u);
  EXPECT_FALSE(shardForKey(t, 2, I(kMax)).ok());  // to is exclusive
  EXPECT_FALSE(shardForKey(t, 2, I(-1)).ok());
}

TEST(RangeShard, TextRangesCompareBytewise) {
  ShardedTable t;
  t.name = "names";
  t.column = "n";
  t.key_type = KeyType::kText;
  t.strategy = Strategy::kRange;
  t.ranges = {RangeBound{std::nullopt, S("m"), 0}, RangeBound{S("m"), std::nullopt, 1}};
  EXPECT_EQ(shardOf(t, S("")), 0u);
  EXPECT_EQ(shardOf(t, S("lzzz")), 0u);
  EXPECT_EQ(shardOf(t, S("m")), 1u);
  EXPECT_EQ(shardOf(t, S("Zebra")), 0u);  // upper case sorts first under "C"
  EXPECT_EQ(shardOf(t, S("\xc3\xa9t\xc3\xa9")), 1u);
}

// ----- list -----------------------------------------------------------------------------------

TEST(ListShard, ListedValues) {
  const ShardedTable t = listTable(std::nullopt);
  EXPECT_EQ(shardOf(t, S("eu")), 0u);
  EXPECT_EQ(shardOf(t, S("uk")), 0u);
  EXPECT_EQ(shardOf(t, S("us")), 1u);
}

TEST(ListShard, UnlistedWithoutDefaultIsAnError) {
  auto r = shardForKey(listTable(std::nullopt), 3, S("fr"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().sqlstate, "22023");
  EXPECT_EQ(r.error().message,
            "no shard for key \"fr\" of table app.tenants: not in any configured list, and the "
            "table has no default_shard");
  // Case matters, as in Postgres.
  EXPECT_FALSE(shardForKey(listTable(std::nullopt), 3, S("EU")).ok());
}

TEST(ListShard, UnlistedGoesToDefault) {
  EXPECT_EQ(shardOf(listTable(2), S("fr")), 2u);
  EXPECT_EQ(shardOf(listTable(2), S("")), 2u);
  EXPECT_EQ(shardOf(listTable(2), S("eu")), 0u);
}

TEST(DirectoryShard, NeedsALookup) {
  ShardedTable t = hashTable(KeyType::kBigint);
  t.strategy = Strategy::kDirectory;
  t.directory = conf::DirectoryConfig{{"", "dir"}, 0, conf::DirectoryFallback::kHash};
  auto r = shardForKey(t, 2, I(1));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().sqlstate, "0A000");
  // The fallback is plain hashing.
  EXPECT_EQ(*hashShard(t.key_type, 8, I(42)), 2u);
}

// ----- intervals --------------------------------------------------------------------------------

TEST(ShardsForRange, RangeStrategy) {
  const ShardedTable t = rangeTable();
  auto f = [&](std::optional<int64_t> lo, bool lo_inc, std::optional<int64_t> hi, bool hi_inc) {
    return shardsForRange(t, 3, lo ? std::optional(I(*lo)) : std::nullopt, lo_inc,
                          hi ? std::optional(I(*hi)) : std::nullopt, hi_inc);
  };
  EXPECT_EQ(f(10, true, 20, true), (Shards{0}));
  EXPECT_EQ(f(0, true, 999, true), (Shards{0}));
  EXPECT_EQ(f(-1, true, 0, true), (Shards{0, 2}));
  EXPECT_EQ(f(-1, false, 0, true), (Shards{0}));  // (-1, 0] is just 0
  EXPECT_EQ(f(-1, true, 0, false), (Shards{2}));  // [-1, 0) is just -1
  EXPECT_EQ(f(999, true, 1000, true), (Shards{0, 1}));
  EXPECT_EQ(f(999, false, 1000, true), (Shards{1}));
  EXPECT_EQ(f(999, true, 1000, false), (Shards{0}));
  EXPECT_EQ(f(999, false, 1000, false), (Shards{}));  // no integer strictly between
  EXPECT_EQ(f(2000, true, 4999, true), (Shards{}));   // the gap
  EXPECT_EQ(f(1500, true, 6000, true), (Shards{1, 2}));
  EXPECT_EQ(f(std::nullopt, true, std::nullopt, true), (Shards{0, 1, 2}));
  EXPECT_EQ(f(1000, true, std::nullopt, true), (Shards{1, 2}));
  EXPECT_EQ(f(std::nullopt, true, 5, true), (Shards{0, 2}));
  EXPECT_EQ(f(20, true, 10, true), (Shards{}));  // empty interval
  EXPECT_EQ(f(5, true, 5, true), (Shards{0}));
  EXPECT_EQ(f(5, false, 5, true), (Shards{}));
  EXPECT_EQ(f(kMax, false, std::nullopt, true), (Shards{}));
  EXPECT_EQ(f(std::nullopt, true, kMin, false), (Shards{}));
  EXPECT_EQ(f(kMax, true, kMax, true), (Shards{2}));
}

TEST(ShardsForRange, TextRangeIsNeverTooNarrow) {
  ShardedTable t;
  t.name = "names";
  t.key_type = KeyType::kText;
  t.strategy = Strategy::kRange;
  t.ranges = {RangeBound{std::nullopt, S("m"), 0}, RangeBound{S("m"), std::nullopt, 1}};
  EXPECT_EQ(shardsForRange(t, 2, S("a"), true, S("c"), true), (Shards{0}));
  EXPECT_EQ(shardsForRange(t, 2, S("a"), true, S("m"), false), (Shards{0}));
  EXPECT_EQ(shardsForRange(t, 2, S("a"), true, S("m"), true), (Shards{0, 1}));
  EXPECT_EQ(shardsForRange(t, 2, S("m"), true, std::nullopt, true), (Shards{1}));
  EXPECT_EQ(shardsForRange(t, 2, S("lz"), false, std::nullopt, true), (Shards{0, 1}));
}

TEST(ShardsForRange, ListStrategy) {
  EXPECT_EQ(shardsForRange(listTable(std::nullopt), 3, S("e"), true, S("f"), true), (Shards{0}));
  EXPECT_EQ(shardsForRange(listTable(std::nullopt), 3, S("a"), true, S("z"), true), (Shards{0, 1}));
  EXPECT_EQ(shardsForRange(listTable(std::nullopt), 3, S("us"), false, std::nullopt, true),
            (Shards{}));
  EXPECT_EQ(shardsForRange(listTable(2), 3, S("us"), false, std::nullopt, true), (Shards{2}));
  EXPECT_EQ(shardsForRange(listTable(2), 3, S("eu"), true, S("eu"), true), (Shards{0, 2}));
}

TEST(ShardsForRange, HashTouchesEveryShard) {
  EXPECT_EQ(shardsForRange(hashTable(KeyType::kBigint), 4, I(1), true, I(2), true),
            (Shards{0, 1, 2, 3}));
  EXPECT_EQ(shardsForRange(hashTable(KeyType::kBigint), 4, I(2), true, I(1), true), (Shards{}));
}

TEST(ShardsForRange, WrongKindMeansEveryShard) {
  EXPECT_EQ(shardsForRange(rangeTable(), 3, S("x"), true, std::nullopt, true), (Shards{0, 1, 2}));
}

// ----- with a loaded config -------------------------------------------------------------------

TEST(ShardForKey, DemoConfig) {
  auto config = conf::loadConfigFile(std::string(SHARDGATE_SOURCE_DIR) + "/conf/demo.toml");
  ASSERT_TRUE(config.ok()) << config.error().message;
  const conf::Database* app = (*config)->findDatabase("app");
  ASSERT_NE(app, nullptr);
  const size_t n = app->shards.size();
  const ShardedTable* users = app->findShardedTable("", "users");
  const ShardedTable* orders = app->findShardedTable("public", "orders");
  const ShardedTable* events = app->findShardedTable("", "events");
  ASSERT_TRUE(users && orders && events);
  // Co-location: a user and the orders with that user_id are on one shard.
  for (int64_t id : {1LL, 2LL, 42LL, 1000001LL}) {
    EXPECT_EQ(*shardForKey(*users, n, I(id)), *shardForKey(*orders, n, I(id)));
  }
  EXPECT_EQ(*shardForKey(*events, n, I(999999)), 0u);
  EXPECT_EQ(*shardForKey(*events, n, I(1000000)), 1u);
  EXPECT_TRUE(app->isReferenceTable("", "countries"));
  EXPECT_EQ(app->findShardedTable("", "countries"), nullptr);
}

}  // namespace
}  // namespace shardgate::planner

namespace shardgate::planner {
namespace {

TEST(KeyEncoding, NonAsciiTextKeysNeedAUtf8Client) {
  EXPECT_TRUE(clientEncodingIsUtf8("UTF8"));
  EXPECT_TRUE(clientEncodingIsUtf8("utf-8"));
  EXPECT_TRUE(clientEncodingIsUtf8("Unicode"));
  EXPECT_TRUE(clientEncodingIsUtf8("SQL_ASCII"));
  EXPECT_FALSE(clientEncodingIsUtf8("LATIN1"));
  EXPECT_FALSE(clientEncodingIsUtf8("WIN1252"));
  EXPECT_FALSE(clientEncodingIsUtf8("UTF8UTF8UTF8"));
  EXPECT_TRUE(requireKeyInServerEncoding(KeyType::kText, "caf\xe9", true).ok());
  EXPECT_TRUE(requireKeyInServerEncoding(KeyType::kText, "cafe", false).ok());
  EXPECT_TRUE(requireKeyInServerEncoding(KeyType::kBigint, "12", false).ok());
  Status latin1 = requireKeyInServerEncoding(KeyType::kVarchar, "caf\xe9", false);
  ASSERT_FALSE(latin1.ok());
  EXPECT_EQ(latin1.error().sqlstate, "0A000");
}

}  // namespace
}  // namespace shardgate::planner
