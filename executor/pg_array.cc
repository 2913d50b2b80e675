// Splitting and building Postgres arrays in their wire forms (see pg_array.h).
#include "executor/pg_array.h"

namespace shardgate::executor {

namespace {

constexpr int32_t kMaxDimensions = 6;  // MAXDIM in Postgres

Error malformed(std::string_view why) {
  return Error::make("XX000", "malformed array from a shard: " + std::string(why));
}

uint32_t readUint32(std::string_view b, size_t at) {
  return (static_cast<uint32_t>(static_cast<unsigned char>(b[at])) << 24) |
         (static_cast<uint32_t>(static_cast<unsigned char>(b[at + 1])) << 16) |
         (static_cast<uint32_t>(static_cast<unsigned char>(b[at + 2])) << 8) |
         static_cast<uint32_t>(static_cast<unsigned char>(b[at + 3]));
}

void appendUint32(std::string& out, uint32_t v) {
  const char b[4] = {static_cast<char>(v >> 24), static_cast<char>(v >> 16),
                     static_cast<char>(v >> 8), static_cast<char>(v)};
  out.append(b, 4);
}

Result<PgArray> parseBinary(std::string_view v) {
  PgArray out;
  if (v.size() < 12) return malformed("short header");
  const auto dims = static_cast<int32_t>(readUint32(v, 0));
  out.has_null = readUint32(v, 4) != 0;
  out.element_type = static_cast<int32_t>(readUint32(v, 8));
  if (dims == 0) return out;
  if (dims < 0 || dims > kMaxDimensions || v.size() < 12 + 8 * static_cast<size_t>(dims)) {
    return malformed("bad dimensions");
  }
  out.dimensions = dims;
  const auto length = static_cast<int32_t>(readUint32(v, 12));
  int64_t inner_count = 1;
  for (int32_t d = 1; d < dims; ++d) {
    const auto size = static_cast<int32_t>(readUint32(v, 12 + 8 * static_cast<size_t>(d)));
    if (size < 0 || size > static_cast<int64_t>(v.size())) return malformed("bad dimensions");
    inner_count *= size;  // at most v.size() squared: no overflow
    if (inner_count > static_cast<int64_t>(v.size())) {
      return malformed("bad dimensions");
    }
  }
  if (length < 0 || length > static_cast<int32_t>(v.size())) return malformed("bad length");
  out.inner_dimensions = std::string(v.substr(20, 8 * static_cast<size_t>(dims - 1)));
  size_t at = 12 + 8 * static_cast<size_t>(dims);
  out.items.reserve(static_cast<size_t>(length));
  for (int32_t i = 0; i < length; ++i) {
    const size_t start = at;
    std::optional<size_t> scalar_start;
    int32_t scalar_length = -1;
    for (int64_t e = 0; e < inner_count; ++e) {
      if (at + 4 > v.size()) return malformed("truncated element");
      const auto n = static_cast<int32_t>(readUint32(v, at));
      at += 4;
      scalar_start = at;
      scalar_length = n;
      if (n < 0) continue;
      if (static_cast<size_t>(n) > v.size() - at) return malformed("truncated element");
      at += static_cast<size_t>(n);
    }
    if (dims > 1) {
      out.items.emplace_back(std::string(v.substr(start, at - start)));
    } else if (scalar_length < 0) {
      out.items.emplace_back(std::nullopt);
    } else {
      out.items.emplace_back(
          std::string(v.substr(*scalar_start, static_cast<size_t>(scalar_length))));
    }
  }
  if (at != v.size()) return malformed("trailing bytes");
  return out;
}

// The end of a quoted item starting at `at` (the opening quote): one past the closing quote.
std::optional<size_t> endOfQuoted(std::string_view v, size_t at) {
  for (size_t i = at + 1; i < v.size(); ++i) {
    if (v[i] == '\\') {
      ++i;
    } else if (v[i] == '"') {
      return i + 1;
    }
  }
  return std::nullopt;
}

Result<PgArray> parseText(std::string_view v, char delimiter) {
  PgArray out;
  if (!v.empty() && v.front() == '[') {
    return Error::make("0A000",
                       "cannot merge arrays with explicit bounds across shards (array_agg over "
                       "arrays whose lower bounds are not 1)");
  }
  if (v.size() < 2 || v.front() != '{' || v.back() != '}') return malformed("no braces");
  size_t at = 1;
  const size_t end = v.size() - 1;
  if (at == end) return out;
  while (true) {
    const size_t start = at;
    if (at >= end) return malformed("empty item");
    if (v[at] == '"') {
      auto e = endOfQuoted(v, at);
      if (!e || *e > end) return malformed("unterminated quote");
      at = *e;
    } else if (v[at] == '{') {
      int depth = 0;
      while (at < end) {
        if (v[at] == '"') {
          auto e = endOfQuoted(v, at);
          if (!e || *e > end) return malformed("unterminated quote");
          at = *e;
          continue;
        }
        if (v[at] == '{') ++depth;
        if (v[at] == '}' && --depth == 0) {
          ++at;
          break;
        }
        ++at;
      }
      if (depth != 0) return malformed("unbalanced braces");
    } else {
      while (at < end && v[at] != delimiter) {
        if (v[at] == '"' || v[at] == '{' || v[at] == '}') return malformed("stray character");
        ++at;
      }
      if (at == start) return malformed("empty item");
    }
    const std::string_view item = v.substr(start, at - start);
    if (item == "NULL") {
      out.items.emplace_back(std::nullopt);
    } else {
      out.items.emplace_back(std::string(item));
    }
    if (at == end) break;
    if (v[at] != delimiter) return malformed("missing delimiter");
    ++at;
  }
  return out;
}

}  // namespace

Result<PgArray> parsePgArray(std::string_view value, int16_t format, char delimiter) {
  return format == 1 ? parseBinary(value) : parseText(value, delimiter);
}

std::string unquoteArrayItem(std::string_view item) {
  if (item.size() < 2 || item.front() != '"') return std::string(item);
  std::string out;
  out.reserve(item.size() - 2);
  for (size_t i = 1; i + 1 < item.size(); ++i) {
    if (item[i] == '\\' && i + 2 < item.size()) ++i;
    out.push_back(item[i]);
  }
  return out;
}

void appendQuotedArrayElement(std::string_view element, std::string& out, char delimiter) {
  bool quote =
      element.empty() ||
      (element.size() == 4 && (element[0] == 'N' || element[0] == 'n') &&
       (element[1] == 'U' || element[1] == 'u') && (element[2] == 'L' || element[2] == 'l') &&
       (element[3] == 'L' || element[3] == 'l'));
  for (char c : element) {
    if (c == '{' || c == '}' || c == delimiter || c == '"' || c == '\\' || c == ' ' || c == '\t' ||
        c == '\n' || c == '\r' || c == '\v' || c == '\f') {
      quote = true;
    }
  }
  if (!quote) {
    out.append(element);
    return;
  }
  out.push_back('"');
  for (char c : element) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  out.push_back('"');
}

char arrayDelimiterOf(int32_t array_type_oid) {
  return array_type_oid == 1020 ? ';' : ',';  // box[] is the one built-in type with typdelim ';'
}

int32_t elementTypeOf(int32_t array_type_oid) {
  static const int32_t kElements[] = {
      pg_type::kBool,        pg_type::kBytea,     pg_type::kChar,    pg_type::kName,
      pg_type::kInt2,        pg_type::kInt4,      pg_type::kText,    pg_type::kBpchar,
      pg_type::kVarchar,     pg_type::kInt8,      pg_type::kFloat4,  pg_type::kFloat8,
      pg_type::kOid,         pg_type::kTimestamp, pg_type::kDate,    pg_type::kTime,
      pg_type::kTimestampTz, pg_type::kInterval,  pg_type::kNumeric, pg_type::kTimeTz,
      pg_type::kUuid,
  };
  for (int32_t e : kElements) {
    if (arrayTypeOf(e) == array_type_oid) return e;
  }
  return 0;
}

std::string buildTextArray(const std::vector<const std::optional<std::string>*>& items,
                           char delimiter) {
  std::string out = "{";
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out.push_back(delimiter);
    out += *items[i] ? **items[i] : std::string("NULL");
  }
  out.push_back('}');
  return out;
}

std::string buildBinaryArray(const std::vector<const std::optional<std::string>*>& items,
                             int32_t element_type, bool has_null,
                             const std::string& inner_dimensions) {
  std::string out;
  if (items.empty()) {
    appendUint32(out, 0);
    appendUint32(out, 0);
    appendUint32(out, static_cast<uint32_t>(element_type));
    return out;
  }
  appendUint32(out, static_cast<uint32_t>(1 + inner_dimensions.size() / 8));
  appendUint32(out, has_null ? 1 : 0);
  appendUint32(out, static_cast<uint32_t>(element_type));
  appendUint32(out, static_cast<uint32_t>(items.size()));
  appendUint32(out, 1);  // lower bound
  out += inner_dimensions;
  for (const std::optional<std::string>* item : items) {
    if (!*item) {
      appendUint32(out, 0xFFFFFFFFu);
    } else if (!inner_dimensions.empty()) {
      out += **item;  // a sub-array's elements, already with their length words
    } else {
      appendUint32(out, static_cast<uint32_t>((*item)->size()));
      out += **item;
    }
  }
  return out;
}

}  // namespace shardgate::executor
