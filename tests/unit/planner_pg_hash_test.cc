// Unit tests of the Postgres hash functions: values computed by Postgres 15.20 itself with
// SELECT hashint8extended(k, 8816678312871386365), hashtextextended(...), satisfies_hash_partition.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>

#include "planner/pg_hash.h"
#include "planner/sharding_function.h"

namespace shardgate::planner {
namespace {

// HASH_PARTITION_SEED as the signed bigint psql takes it.
constexpr int64_t kSeed = 8816678312871386365;

// Postgres returns the extended hashes as bigint; compare as the same 64 bits.
uint64_t u(int64_t pg_value) {
  return static_cast<uint64_t>(pg_value);
}

TEST(PgHash, SeedIsHashPartitionSeed) {
  EXPECT_EQ(kHashPartitionSeed, static_cast<uint64_t>(kSeed));
}

struct IntCase {
  int64_t value;
  int64_t with_seed;  // <type>hashextended(value, HASH_PARTITION_SEED)
  int64_t seed0;      // <type>hashextended(value, 0)
};

// hashint8extended: the high half folds into the low half, so 4294967296 hashes like 1 and
// INT64_MAX like INT32_MIN.
const IntCase kInt8Cases[] = {
    {0, -4403592609991167795, 4154612158245552303},
    {1, 5968994663651403477, -3670598878359251130},
    {-1, -5017072347659237694, -1888257769727981238},
    {42, 7363975540656877951, 8010225493015854792},
    {4294967296, 5968994663651403477, -3670598878359251130},
    {-4294967297, 2147707635919668551, 495194309054116481},
    {INT64_MAX, 4938542303000433043, 1977219185673256887},
    {INT64_MIN, -6050265599104649060, -9109110466470504941},
};

TEST(PgHash, HashInt8ExtendedMatchesPostgres) {
  for (const IntCase& c : kInt8Cases) {
    EXPECT_EQ(hashInt8Extended(c.value, kHashPartitionSeed), u(c.with_seed)) << c.value;
    EXPECT_EQ(hashInt8Extended(c.value, 0), u(c.seed0)) << c.value;
  }
}

TEST(PgHash, HashInt4ExtendedMatchesPostgres) {
  const IntCase cases[] = {
      {0, -4403592609991167795, 4154612158245552303},
      {1, 5968994663651403477, -3670598878359251130},
      {-1, -5017072347659237694, -1888257769727981238},
      {42, 7363975540656877951, 8010225493015854792},
      {INT32_MAX, -6050265599104649060, -9109110466470504941},
      {INT32_MIN, 4938542303000433043, 1977219185673256887},
  };
  for (const IntCase& c : cases) {
    const auto v = static_cast<int32_t>(c.value);
    EXPECT_EQ(hashInt4Extended(v, kHashPartitionSeed), u(c.with_seed)) << c.value;
    EXPECT_EQ(hashInt4Extended(v, 0), u(c.seed0)) << c.value;
    // Cross-type compatibility: equal values hash alike as int8.
    EXPECT_EQ(hashInt8Extended(c.value, kHashPartitionSeed), u(c.with_seed)) << c.value;
  }
}

TEST(PgHash, HashInt2ExtendedMatchesPostgres) {
  const IntCase cases[] = {
      {0, -4403592609991167795, 4154612158245552303},
      {-1, -5017072347659237694, -1888257769727981238},
      {42, 7363975540656877951, 8010225493015854792},
      {32767, -6436696229286267413, 1790040721271588170},
      {-32768, 5885242512097991578, 8455483389771436374},
  };
  for (const IntCase& c : cases) {
    const auto v = static_cast<int16_t>(c.value);
    EXPECT_EQ(hashInt2Extended(v, kHashPartitionSeed), u(c.with_seed)) << c.value;
    EXPECT_EQ(hashInt2Extended(v, 0), u(c.seed0)) << c.value;
    EXPECT_EQ(hashInt4Extended(v, kHashPartitionSeed), u(c.with_seed)) << c.value;
  }
}

TEST(PgHash, HashBytesUint32ExtendedIsTheInt4Hash) {
  EXPECT_EQ(hashBytesUint32Extended(42, kHashPartitionSeed), u(7363975540656877951));
  EXPECT_EQ(hashBytesUint32Extended(0xffffffffu, 0), u(-1888257769727981238));
}

struct TextCase {
  std::string text;
  int64_t with_seed;
  int64_t seed0;
};

// Every tail length of lookup3 (0..11 bytes left after the 12-byte blocks) is covered by these
// lengths: 0, 1, 3, 4, 11, 12, 13, 19 (UTF-8 bytes), 100.
const TextCase kTextCases[] = {
    {"", -5700645584453517373, -6939563903564495251},
    {"a", -6705225459120232837, 3591986179850072241},
    {"abc", 3628778498291917250, -6747756470228489321},
    {"abcd", 4029384952263848046, -1038429303365892052},
    {"hello world", 7664296498819024037, 6947366892317592103},
    {"abcdefghijkl", -7876791541613377658, -7556637188122330412},
    {"abcdefghijklm", -6785754114725280077, 8871624171452417744},
    {"h\xc3\xa9llo \xc3\xbcn\xc3\xaf"
     "code \xe2\x9c\x93",
     6931680033414923432, -6134095537900594194},
    {std::string(100, 'x'), 894331291974510311, -6927006773748011226},
};

TEST(PgHash, HashTextExtendedMatchesPostgres) {
  for (const TextCase& c : kTextCases) {
    EXPECT_EQ(hashTextExtended(c.text, kHashPartitionSeed), u(c.with_seed)) << c.text;
    EXPECT_EQ(hashTextExtended(c.text, 0), u(c.seed0)) << c.text;
    EXPECT_EQ(hashVarcharExtended(c.text, kHashPartitionSeed), u(c.with_seed)) << c.text;
  }
}

TEST(PgHash, HashBytesDoesNotDependOnAlignment) {
  // Postgres reads aligned keys a word at a time and others byte by byte; both must agree.
  alignas(8) char buffer[64];
  const std::string text = "hello world, aligned or not";
  for (size_t offset = 0; offset < 8; ++offset) {
    std::copy(text.begin(), text.end(), buffer + offset);
    EXPECT_EQ(hashBytesExtended(std::string_view(buffer + offset, text.size()), 7),
              hashBytesExtended(text, 7))
        << offset;
  }
}

TEST(PgHash, UuidHashExtendedMatchesPostgres) {
  struct UuidCase {
    const char* text;
    int64_t with_seed;
    int64_t seed0;
  };
  const UuidCase cases[] = {
      {"00000000-0000-0000-0000-000000000000", -5281082146396728638, -6859010066814654381},
      {"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", 424513190990560493, 7543054272012930821},
      {"ffffffff-ffff-ffff-ffff-ffffffffffff", -148986464341306210, 293445543803463785},
  };
  for (const UuidCase& c : cases) {
    auto key = parseKeyText(KeyType::kUuid, c.text);
    ASSERT_TRUE(key.ok()) << c.text;
    EXPECT_EQ(uuidHashExtended(key->asBytes(), kHashPartitionSeed), u(c.with_seed)) << c.text;
    EXPECT_EQ(uuidHashExtended(key->asBytes(), 0), u(c.seed0)) << c.text;
  }
}

TEST(PgHash, HashCombine64) {
  // With a = 0 the combination is b plus the constant (mod 2^64).
  EXPECT_EQ(hashCombine64(0, 0), 0x49a0f4dd15e5a8e3ULL);
  EXPECT_EQ(hashCombine64(0, 1), 0x49a0f4dd15e5a8e4ULL);
  EXPECT_EQ(hashCombine64(0, ~0ULL), 0x49a0f4dd15e5a8e2ULL);
  // a's own shifts take part otherwise: a ^ (b + k + (a << 54) + (a >> 7)).
  EXPECT_EQ(hashCombine64(1, 0), 1ULL ^ (0x49a0f4dd15e5a8e3ULL + (1ULL << 54)));
  EXPECT_EQ(partitionRowHash(5), hashCombine64(0, 5));
}

// satisfies_hash_partition('t'::regclass, modulus, remainder, key) is true for these remainders.
struct RemainderCase {
  KeyType type;
  std::string key;
  uint64_t modulus;
  uint64_t remainder;
};

const RemainderCase kRemainders[] = {
    {KeyType::kBigint, "-9223372036854775808", 2, 1},
    {KeyType::kBigint, "-9223372036854775808", 3, 1},
    {KeyType::kBigint, "-9223372036854775808", 8, 7},
    {KeyType::kBigint, "-1", 2, 1},
    {KeyType::kBigint, "-1", 3, 2},
    {KeyType::kBigint, "-1", 8, 5},
    {KeyType::kBigint, "0", 2, 0},
    {KeyType::kBigint, "0", 3, 2},
    {KeyType::kBigint, "0", 8, 0},
    {KeyType::kBigint, "1", 3, 2},
    {KeyType::kBigint, "42", 2, 0},
    {KeyType::kBigint, "42", 3, 0},
    {KeyType::kBigint, "42", 8, 2},
    {KeyType::kBigint, "1000000", 2, 1},
    {KeyType::kBigint, "1000000", 3, 0},
    {KeyType::kBigint, "1000000", 8, 3},
    {KeyType::kSmallint, "-5", 3, 1},
    {KeyType::kSmallint, "-5", 8, 7},
    {KeyType::kSmallint, "7", 2, 1},
    {KeyType::kText, "", 2, 0},
    {KeyType::kText, "", 3, 2},
    {KeyType::kText, "", 8, 6},
    {KeyType::kText, "eu", 3, 0},
    {KeyType::kText, "eu", 8, 4},
    {KeyType::kVarchar, "hello world", 3, 1},
    {KeyType::kText, "hello world", 8, 0},
    {KeyType::kUuid, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", 2, 0},
    {KeyType::kUuid, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", 3, 1},
    {KeyType::kUuid, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", 8, 0},
};

TEST(PgHash, PartitionRemaindersMatchSatisfiesHashPartition) {
  for (const RemainderCase& c : kRemainders) {
    auto key = parseKeyText(c.type, c.key);
    ASSERT_TRUE(key.ok()) << c.key;
    EXPECT_EQ(partitionHash(c.type, *key) % c.modulus, c.remainder)
        << conf::keyTypeName(c.type) << " " << c.key << " % " << c.modulus;
  }
}

TEST(PgHash, PartitionHashIsTheCombinedColumnHash) {
  EXPECT_EQ(partitionHash(KeyType::kBigint, KeyValue::ofInt(42)),
            u(7363975540656877951) + 0x49a0f4dd15e5a8e3ULL);
  EXPECT_EQ(partitionHash(KeyType::kText, KeyValue::ofBytes("abc")),
            u(3628778498291917250) + 0x49a0f4dd15e5a8e3ULL);
}

}  // namespace
}  // namespace shardgate::planner
