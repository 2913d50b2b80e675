// Maps sharding-key values to shards: hash (Postgres PARTITION BY HASH), range and list.
#include "planner/sharding_function.h"

#include <algorithm>
#include <limits>
#include <string>

#include "planner/pg_hash.h"

namespace shardgate::planner {
namespace {

using conf::isIntegerKey;
using conf::keyTypeName;
using conf::kUuidLength;
using conf::Strategy;

constexpr uint32_t kInt2Oid = 21;
constexpr uint32_t kInt4Oid = 23;
constexpr uint32_t kInt8Oid = 20;
constexpr uint32_t kTextOid = 25;
constexpr uint32_t kVarcharOid = 1043;
constexpr uint32_t kUuidOid = 2950;

// Whether `key` is of the kind the type's values are (an integer, or bytes; 16 bytes for uuid).
Status checkKind(KeyType type, const KeyValue& key) {
  if (isIntegerKey(type) != key.isInt()) {
    return Error::make(conf::keystate::kDatatypeMismatch,
                       std::string("a sharding key of type ") + std::string(keyTypeName(type)) +
                           " cannot take " + (key.isInt() ? "an integer" : "a string") + " value");
  }
  if (type == KeyType::kUuid && key.asBytes().size() != kUuidLength) {
    return Error::make(
        conf::keystate::kDatatypeMismatch,
        "a uuid sharding key needs 16 bytes, got " + std::to_string(key.asBytes().size()));
  }
  return {};
}

Error noShard(const conf::ShardedTable& table, const KeyValue& key, std::string_view why) {
  return Error::make(kNoShardForKey, "no shard for key " + key.display(table.key_type) +
                                         " of table " + table.display() + ": " + std::string(why));
}

// One end of an interval: a value (nullopt: unbounded) and whether it is included.
struct End {
  const std::optional<KeyValue>* value;
  bool inclusive;
};

// The tighter of two lower ends (the greater value; on a tie the excluded one).
End tighterLower(End a, End b) {
  if (!*a.value) return b;
  if (!*b.value) return a;
  if (**a.value != **b.value) return **a.value < **b.value ? b : a;
  return a.inclusive ? b : a;
}
// The tighter of two upper ends (the smaller value; on a tie the excluded one).
End tighterUpper(End a, End b) {
  if (!*a.value) return b;
  if (!*b.value) return a;
  if (**a.value != **b.value) return **a.value < **b.value ? a : b;
  return a.inclusive ? b : a;
}
// Whether some value lies between the ends, treating the order as dense (exact for the integers
// once exclusive ends are made inclusive; for bytes an interval like (x, x || '\0') counts as
// non-empty, which only ever adds a shard).
bool mayHoldValues(End lower, End upper) {
  if (!*lower.value || !*upper.value) return true;
  if (**lower.value < **upper.value) return true;
  return **lower.value == **upper.value && lower.inclusive && upper.inclusive;
}
bool contains(End lower, End upper, const KeyValue& v) {
  if (*lower.value && (v < **lower.value || (v == **lower.value && !lower.inclusive))) return false;
  if (*upper.value && (**upper.value < v || (v == **upper.value && !upper.inclusive))) return false;
  return true;
}

// Integer ends made inclusive: (5 becomes [6, 9) becomes 8]. False if that leaves nothing.
bool closeIntegerEnd(std::optional<KeyValue>& value, bool& inclusive, bool lower) {
  if (!value || inclusive) return true;
  const int64_t v = value->asInt();
  if (lower) {
    if (v == std::numeric_limits<int64_t>::max()) return false;
    value = KeyValue::ofInt(v + 1);
  } else {
    if (v == std::numeric_limits<int64_t>::min()) return false;
    value = KeyValue::ofInt(v - 1);
  }
  inclusive = true;
  return true;
}

std::vector<uint32_t> allShards(size_t shard_count) {
  std::vector<uint32_t> all(shard_count);
  for (size_t i = 0; i < shard_count; ++i) all[i] = static_cast<uint32_t>(i);
  return all;
}

}  // namespace

Status requireKeyInServerEncoding(KeyType type, std::string_view text, bool client_utf8) {
  if (client_utf8 || (type != KeyType::kText && type != KeyType::kVarchar)) return {};
  const bool ascii = std::all_of(text.begin(), text.end(),
                                 [](char c) { return static_cast<unsigned char>(c) < 0x80; });
  if (ascii) return {};
  return Error::make(sqlstate::kFeatureNotSupported,
                     "a text sharding key with non-ASCII characters needs client_encoding UTF8",
                     "Postgres converts the client's text to the database's encoding; shardgate "
                     "hashes text keys as the shards store them, in UTF-8, and does not convert.",
                     "SET client_encoding = 'UTF8'.");
}

bool clientEncodingIsUtf8(std::string_view client_encoding) {
  if (client_encoding == "UTF8") return true;  // as Postgres reports it, nearly always
  // Postgres accepts any letter case and ignores '-' and '_' in encoding names (UTF-8, utf_8).
  char name[9];
  size_t n = 0;
  for (char c : client_encoding) {
    if (c == '-' || c == '_') continue;
    if (n == sizeof(name)) return false;
    name[n++] = static_cast<char>(c >= 'a' && c <= 'z' ? c - 'a' + 'A' : c);
  }
  const std::string_view normalized(name, n);
  return n == 0 || normalized == "UTF8" || normalized == "UNICODE" || normalized == "SQLASCII";
}

Result<KeyValue> parseKeyBinary(KeyType type, std::string_view bytes) {
  const auto wrongLength = [&](size_t expected) {
    return Error::make(conf::keystate::kInvalidBinaryRepresentation,
                       "incorrect binary data format for type " + std::string(keyTypeName(type)) +
                           ": expected " + std::to_string(expected) + " bytes, got " +
                           std::to_string(bytes.size()));
  };
  // Network byte order, two's complement.
  const auto bigEndian = [&]() {
    uint64_t v = 0;
    for (const char c : bytes) v = v << 8 | static_cast<unsigned char>(c);
    return v;
  };
  switch (type) {
    case KeyType::kSmallint:
      if (bytes.size() != 2) return wrongLength(2);
      return KeyValue::ofInt(static_cast<int16_t>(static_cast<uint16_t>(bigEndian())));
    case KeyType::kInteger:
      if (bytes.size() != 4) return wrongLength(4);
      return KeyValue::ofInt(static_cast<int32_t>(static_cast<uint32_t>(bigEndian())));
    case KeyType::kBigint:
      if (bytes.size() != 8) return wrongLength(8);
      return KeyValue::ofInt(static_cast<int64_t>(bigEndian()));
    case KeyType::kUuid:
      if (bytes.size() != kUuidLength) return wrongLength(kUuidLength);
      break;
    case KeyType::kText:
    case KeyType::kVarchar:
      break;
  }
  return KeyValue::ofBytes(std::string(bytes));
}

std::optional<KeyType> keyTypeFromOid(uint32_t type_oid) {
  switch (type_oid) {
    case kInt2Oid:
      return KeyType::kSmallint;
    case kInt4Oid:
      return KeyType::kInteger;
    case kInt8Oid:
      return KeyType::kBigint;
    case kTextOid:
      return KeyType::kText;
    case kVarcharOid:
      return KeyType::kVarchar;
    case kUuidOid:
      return KeyType::kUuid;
    default:
      return std::nullopt;
  }
}

uint64_t partitionHash(KeyType type, const KeyValue& key) {
  uint64_t column_hash;
  if (key.isInt()) {
    // hashint2extended and hashint4extended equal hashint8extended on their values.
    column_hash = hashInt8Extended(key.asInt(), kHashPartitionSeed);
  } else if (type == KeyType::kUuid) {
    column_hash = uuidHashExtended(key.asBytes(), kHashPartitionSeed);
  } else {
    column_hash = hashTextExtended(key.asBytes(), kHashPartitionSeed);
  }
  return partitionRowHash(column_hash);
}

Result<uint32_t> hashShard(KeyType type, size_t shard_count, const KeyValue& key) {
  if (shard_count == 0) {
    return Error::make(sqlstate::kInvalidParameterValue, "hash sharding needs at least one shard");
  }
  if (auto status = checkKind(type, key); !status.ok()) return std::move(status).error();
  return static_cast<uint32_t>(partitionHash(type, key) % shard_count);
}

Result<uint32_t> shardForKey(const conf::ShardedTable& table, size_t shard_count,
                             const KeyValue& key) {
  if (auto status = checkKind(table.key_type, key); !status.ok()) {
    Error e = std::move(status).error();
    e.message = "table " + table.display() + ", column " + table.column + ": " + e.message;
    return e;
  }
  switch (table.strategy) {
    case Strategy::kHash:
      return hashShard(table.key_type, shard_count, key);
    case Strategy::kRange: {
      // The ranges ascend and do not overlap: the candidate is the last one starting at or
      // below the key (a missing from, allowed on the first range only, is minus infinity).
      const auto after = std::upper_bound(
          table.ranges.begin(), table.ranges.end(), key,
          [](const KeyValue& k, const conf::RangeBound& r) { return r.from && k < *r.from; });
      if (after == table.ranges.begin())
        return noShard(table, key, "outside every configured range");
      const conf::RangeBound& range = *(after - 1);
      if (range.to && !(key < *range.to)) {
        return noShard(table, key, "outside every configured range");
      }
      return range.shard;
    }
    case Strategy::kList:
      for (const conf::ListEntry& entry : table.lists) {
        for (const KeyValue& v : entry.values) {
          if (v == key) return entry.shard;
        }
      }
      if (table.default_shard) return *table.default_shard;
      return noShard(table, key, "not in any configured list, and the table has no default_shard");
    case Strategy::kDirectory:
      break;
  }
  return Error::make(sqlstate::kFeatureNotSupported,
                     "table " + table.display() +
                         " uses directory sharding: its keys are looked up in the directory "
                         "table, not computed");
}

std::vector<uint32_t> shardsForRange(const conf::ShardedTable& table, size_t shard_count,
                                     const std::optional<KeyValue>& lo_in, bool lo_inclusive,
                                     const std::optional<KeyValue>& hi_in, bool hi_inclusive) {
  const bool integer = isIntegerKey(table.key_type);
  for (const auto* end : {&lo_in, &hi_in}) {
    // A value of the wrong kind cannot be placed: every shard is the answer that is never wrong.
    if (*end && !checkKind(table.key_type, **end).ok()) return allShards(shard_count);
  }
  std::optional<KeyValue> lo = lo_in;
  std::optional<KeyValue> hi = hi_in;
  if (integer && (!closeIntegerEnd(lo, lo_inclusive, /*lower=*/true) ||
                  !closeIntegerEnd(hi, hi_inclusive, /*lower=*/false))) {
    return {};
  }
  const End lower{&lo, lo_inclusive};
  const End upper{&hi, hi_inclusive};
  if (!mayHoldValues(lower, upper)) return {};

  std::vector<bool> hit(shard_count, false);
  switch (table.strategy) {
    case Strategy::kHash:
    case Strategy::kDirectory:
      return allShards(shard_count);
    case Strategy::kRange:
      for (const conf::RangeBound& range : table.ranges) {
        std::optional<KeyValue> from = range.from;
        std::optional<KeyValue> to = range.to;
        bool from_inclusive = true;
        bool to_inclusive = false;
        if (integer && !closeIntegerEnd(to, to_inclusive, /*lower=*/false)) continue;
        const End range_lower{&from, from_inclusive};
        const End range_upper{&to, to_inclusive};
        if (mayHoldValues(tighterLower(lower, range_lower), tighterUpper(upper, range_upper))) {
          if (range.shard < shard_count) hit[range.shard] = true;
        }
      }
      break;
    case Strategy::kList:
      for (const conf::ListEntry& entry : table.lists) {
        for (const KeyValue& v : entry.values) {
          if (contains(lower, upper, v) && entry.shard < shard_count) hit[entry.shard] = true;
        }
      }
      if (table.default_shard && *table.default_shard < shard_count) {
        hit[*table.default_shard] = true;
      }
      break;
  }
  std::vector<uint32_t> out;
  for (size_t i = 0; i < shard_count; ++i) {
    if (hit[i]) out.push_back(static_cast<uint32_t>(i));
  }
  return out;
}

}  // namespace shardgate::planner
