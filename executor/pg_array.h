// Postgres arrays as the shards send them (array_out text, array_send binary): split into their
// top-level items and built back, for merging ordered array_agg and string_agg partials.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "executor/value.h"

namespace shardgate::executor {

// One array value split along its first dimension.
struct PgArray {
  // Each top-level item (nullopt: NULL). Text: as array_out wrote it (still quoted and escaped; a
  // sub-array of a multi-dimensional array as its "{...}"). Binary: the element's bytes without
  // its length word; for a multi-dimensional array, the sub-array's elements with their length
  // words (the form array_send gives them).
  std::vector<std::optional<std::string>> items;
  // Binary only: the header fields an array built from these items needs.
  int32_t dimensions = 0;  // 0: empty array
  int32_t element_type = 0;
  bool has_null = false;
  std::string inner_dimensions;  // (size, lower bound) pairs of dimensions 2..n, as sent
};

// Splits `value`, a non-NULL array in `format` (0 text, 1 binary). 0A000 for text forms shardgate
// does not merge (explicit bounds like "[0:2]={...}"); XX000 for a malformed value.
// `delimiter`: the element type's typdelim (see arrayDelimiterOf).
Result<PgArray> parsePgArray(std::string_view value, int16_t format, char delimiter = ',');

// The element of a text-format item: surrounding quotes and backslash escapes removed.
std::string unquoteArrayItem(std::string_view item);

// Appends `element` quoted as array_out quotes it (when it is empty, "NULL", or holds a space,
// a delimiter, a brace, a quote or a backslash).
void appendQuotedArrayElement(std::string_view element, std::string& out, char delimiter = ',');

// The delimiter array_out puts between elements of this array type (';' for box[], ',' else).
char arrayDelimiterOf(int32_t array_type_oid);

// The element type of a built-in array type (int4[] 1007 -> int4 23), 0 if unknown.
int32_t elementTypeOf(int32_t array_type_oid);

// Assembles a one-dimensional-at-the-top array from items in the text or binary form above.
// Binary: `element_type`, `has_null` and `inner_dimensions` describe the items (inner_dimensions
// empty: the items are scalars).
std::string buildTextArray(const std::vector<const std::optional<std::string>*>& items,
                           char delimiter = ',');
std::string buildBinaryArray(const std::vector<const std::optional<std::string>*>& items,
                             int32_t element_type, bool has_null,
                             const std::string& inner_dimensions);

}  // namespace shardgate::executor
