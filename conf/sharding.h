// Sharding vocabulary of the config: key types, strategies, read routing, and sharding-key values.
#pragma once

#include <compare>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

#include "common/result.h"

namespace shardgate::conf {

// The SQL type of a sharding key column. The integer types hash alike for equal values (Postgres
// built hashint2/4/8 for cross-type hash joins), and varchar hashes as text.
enum class KeyType { kSmallint, kInteger, kBigint, kText, kVarchar, kUuid };

// How a sharded table's rows are spread over the shards.
enum class Strategy {
  kHash,       // Postgres PARTITION BY HASH remainder, modulus = number of shards
  kRange,      // [from, to) ranges, each on one shard
  kList,       // listed values, each list on one shard
  kDirectory,  // a lookup table key -> shard, kept on one shard's primary
};

// Where reads go when a statement may run on a replica.
enum class ReadPreference { kPrimary, kReplica, kPreferReplica };

// How a replica is picked among a shard's replicas.
enum class ReplicaPolicy { kRoundRobin, kRandom, kLeastConnections };

// What a directory-sharded table does with a key its directory does not list.
enum class DirectoryFallback {
  kError,  // refuse the statement
  kHash,   // route it like strategy "hash" would
};

// SQLSTATEs of key parsing, as Postgres reports the same failures.
namespace keystate {
inline constexpr std::string_view kInvalidTextRepresentation = "22P02";
inline constexpr std::string_view kInvalidBinaryRepresentation = "22P03";
inline constexpr std::string_view kNumericValueOutOfRange = "22003";
inline constexpr std::string_view kDatatypeMismatch = "42804";
}  // namespace keystate

inline constexpr size_t kUuidLength = 16;

// A sharding-key value: an int64 for the integer key types, the bytes for text and varchar (as the
// client sent them, UTF-8 in a UTF-8 database), the 16 raw bytes for uuid.
class KeyValue {
 public:
  KeyValue() = default;
  static KeyValue ofInt(int64_t v) { return KeyValue(Data(std::in_place_index<0>, v)); }
  static KeyValue ofBytes(std::string bytes) {
    return KeyValue(Data(std::in_place_index<1>, std::move(bytes)));
  }

  bool isInt() const { return data_.index() == 0; }
  bool isBytes() const { return data_.index() == 1; }
  int64_t asInt() const { return std::get<0>(data_); }
  const std::string& asBytes() const { return std::get<1>(data_); }

  // The order of range sharding: integers numerically; bytes as unsigned bytes (memcmp), which is
  // Postgres's uuid order and text order under COLLATE "C". Integers sort before bytes (a config
  // never mixes them: the loader checks every value against the key type).
  friend std::strong_ordering operator<=>(const KeyValue& a, const KeyValue& b);
  friend bool operator==(const KeyValue& a, const KeyValue& b) = default;

  // For messages: 42, "eu" (quoted, escaped) or the canonical uuid text.
  std::string display(KeyType type) const;

 private:
  using Data = std::variant<int64_t, std::string>;
  explicit KeyValue(Data data) : data_(std::move(data)) {}
  Data data_{std::in_place_index<0>, 0};
};

// Whether values of the type are KeyValue integers (else bytes).
inline bool isIntegerKey(KeyType t) {
  return t == KeyType::kSmallint || t == KeyType::kInteger || t == KeyType::kBigint;
}

// Parses a key as Postgres's input function for the type would (int2in, int4in, int8in, uuid_in,
// textin): integers allow surrounding whitespace and a sign; uuids are 32 hex digits, in either
// case, optionally in braces, optionally with a hyphen after any group of four digits. Errors:
// 22P02 (invalid input syntax), 22003 (out of range for the type), with Postgres's wording.
Result<KeyValue> parseKeyText(KeyType type, std::string_view text);

// An integer checked against the range of an integer key type (22003 if it does not fit);
// 42804 for a non-integer key type.
Result<KeyValue> keyFromInt(KeyType type, int64_t value);

// "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11" from 16 bytes.
std::string formatUuid(std::string_view bytes);

// The spelling of each enum value in the TOML file (the loader parses with these, so they agree).
inline std::string_view keyTypeName(KeyType t) {
  switch (t) {
    case KeyType::kSmallint:
      return "smallint";
    case KeyType::kInteger:
      return "integer";
    case KeyType::kBigint:
      return "bigint";
    case KeyType::kText:
      return "text";
    case KeyType::kVarchar:
      return "varchar";
    case KeyType::kUuid:
      return "uuid";
  }
  return "?";
}
inline std::string_view strategyName(Strategy s) {
  switch (s) {
    case Strategy::kHash:
      return "hash";
    case Strategy::kRange:
      return "range";
    case Strategy::kList:
      return "list";
    case Strategy::kDirectory:
      return "directory";
  }
  return "?";
}
inline std::string_view readPreferenceName(ReadPreference p) {
  switch (p) {
    case ReadPreference::kPrimary:
      return "primary";
    case ReadPreference::kReplica:
      return "replica";
    case ReadPreference::kPreferReplica:
      return "prefer_replica";
  }
  return "?";
}
// The preference named `name` ("primary", "replica", "prefer_replica"); primary if unknown.
inline ReadPreference parseReadPreference(std::string_view name) {
  for (ReadPreference p : {ReadPreference::kReplica, ReadPreference::kPreferReplica}) {
    if (readPreferenceName(p) == name) return p;
  }
  return ReadPreference::kPrimary;
}
inline std::string_view replicaPolicyName(ReplicaPolicy p) {
  switch (p) {
    case ReplicaPolicy::kRoundRobin:
      return "round_robin";
    case ReplicaPolicy::kRandom:
      return "random";
    case ReplicaPolicy::kLeastConnections:
      return "least_connections";
  }
  return "?";
}
inline std::string_view directoryFallbackName(DirectoryFallback f) {
  switch (f) {
    case DirectoryFallback::kError:
      return "error";
    case DirectoryFallback::kHash:
      return "hash";
  }
  return "?";
}

}  // namespace shardgate::conf
