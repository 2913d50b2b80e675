// Column values from the shards as the merge sees them: the type of each column (OID and wire
// format) and the decoding of a value into a key that orders and compares as Postgres does.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/result.h"
#include "executor/collation.h"
#include "executor/decimal.h"

namespace shardgate::executor {

// Built-in type OIDs (src/include/catalog/pg_type.dat).
namespace pg_type {
inline constexpr int32_t kBool = 16;
inline constexpr int32_t kBytea = 17;
inline constexpr int32_t kChar = 18;
inline constexpr int32_t kName = 19;
inline constexpr int32_t kInt8 = 20;
inline constexpr int32_t kInt2 = 21;
inline constexpr int32_t kInt4 = 23;
inline constexpr int32_t kText = 25;
inline constexpr int32_t kOid = 26;
inline constexpr int32_t kFloat4 = 700;
inline constexpr int32_t kFloat8 = 701;
inline constexpr int32_t kUnknown = 705;
inline constexpr int32_t kBpchar = 1042;
inline constexpr int32_t kVarchar = 1043;
inline constexpr int32_t kDate = 1082;
inline constexpr int32_t kTime = 1083;
inline constexpr int32_t kTimestamp = 1114;
inline constexpr int32_t kTimestampTz = 1184;
inline constexpr int32_t kInterval = 1186;
inline constexpr int32_t kTimeTz = 1266;
inline constexpr int32_t kNumeric = 1700;
inline constexpr int32_t kUuid = 2950;
}  // namespace pg_type

// How values of a type order; kOther: shardgate does not know (no sorting or grouping on it).
enum class ValueClass : uint8_t {
  kInteger,  // int2, int4, int8, oid
  kFloat,    // float4, float8: NaN above everything, -0 = 0
  kNumeric,
  kBool,
  kCollatedText,  // text, varchar, bpchar (trailing blanks ignored), name: in the value's
                  // collation (see ColumnCollations)
  kBytewise,      // "char", bytea, uuid: byte order
  kDate,
  kTime,
  kTimeTz,     // by UTC time, then by zone
  kTimestamp,  // timestamp and timestamptz (UTC microseconds)
  kInterval,   // by total span: months as 30 days, days as 24 hours
  kOther,
};

ValueClass classifyType(int32_t type_oid);
// "integer", "numeric", ... for messages; "type <oid>" for types shardgate does not know.
std::string typeName(int32_t type_oid);
// pg_type.typlen for the result types the merge produces (-1 for variable width).
int16_t typeLength(int32_t type_oid);
// The array type of an element type (int4 -> int4[] = 1007), 0 if unknown.
int32_t arrayTypeOf(int32_t element_type_oid);

struct ColumnType {
  int32_t oid = 0;
  int16_t format = 0;  // 0 text, 1 binary
  ValueClass value_class() const { return classifyType(oid); }
  bool binary() const { return format == 1; }
};

// A decoded non-NULL value; which member is set depends on the value class.
struct ValueKey {
  enum class Tag : uint8_t { kInt, kWide, kDouble, kDecimal, kBytes, kCollated };
  Tag tag = Tag::kInt;
  int64_t integer = 0;  // kInt: integers, oid, bool, date, time, timestamp
  __int128 wide = 0;    // kWide: interval span, timetz (UTC time, zone)
  double real = 0;      // kDouble: floats, -0 made +0
  Decimal decimal;      // kDecimal
  std::string bytes;    // kBytes, kCollated (bpchar without trailing blanks)
};

// Decodes `value` (text or binary as `type.format` says). 0A000 for a kOther type; 22P02/22P03
// for a value that does not parse (a shard never sends one, but bad input must not crash).
Result<ValueKey> decodeValue(const ColumnType& type, std::string_view value);
// Same ordering as Postgres's default btree operator class of the type.
int compareKeys(const ValueKey& a, const ValueKey& b, const Collation& collation);
// Bytes equal exactly when the keys compare equal (for hashing groups and DISTINCT rows).
void appendEqualityBytes(const ValueKey& key, std::string& out);

// 0A000 "cannot <what> on column N of type T across shards" when the type is kOther.
Status requireOrderable(const ColumnType& type, size_t column, std::string_view what);
// The shards print floats (in text) with the session's extra_float_digits: below 1 they round, so
// values that differ may print alike, and summing, ordering or grouping the printed values may
// not give what one Postgres gives with the exact ones. 0A000 for a float column in text then.
Status requireExactFloats(const ColumnType& type, size_t column, std::string_view what,
                          int extra_float_digits);

}  // namespace shardgate::executor
