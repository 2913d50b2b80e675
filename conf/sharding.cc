// Sharding-key values: Postgres-compatible text input, range checks, ordering and display.
#include "conf/sharding.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <utility>

namespace shardgate::conf {
namespace {

// Postgres's isspace() set for numeric input (scanint8 and friends use the C locale's isspace).
bool isSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

int hexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Postgres's own name of each key type, as its input-syntax errors spell it.
std::string_view sqlTypeName(KeyType type) {
  switch (type) {
    case KeyType::kSmallint:
      return "smallint";
    case KeyType::kInteger:
      return "integer";
    case KeyType::kBigint:
      return "bigint";
    case KeyType::kText:
      return "text";
    case KeyType::kVarchar:
      return "character varying";
    case KeyType::kUuid:
      return "uuid";
  }
  return "?";
}

// The range of each integer key type.
std::pair<int64_t, int64_t> integerLimits(KeyType type) {
  switch (type) {
    case KeyType::kSmallint:
      return {std::numeric_limits<int16_t>::min(), std::numeric_limits<int16_t>::max()};
    case KeyType::kInteger:
      return {std::numeric_limits<int32_t>::min(), std::numeric_limits<int32_t>::max()};
    default:
      return {std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max()};
  }
}

Error invalidSyntax(KeyType type, std::string_view text) {
  return Error::make(keystate::kInvalidTextRepresentation, "invalid input syntax for type " +
                                                               std::string(sqlTypeName(type)) +
                                                               ": \"" + std::string(text) + "\"");
}

Error outOfRange(KeyType type, std::string_view text) {
  return Error::make(keystate::kNumericValueOutOfRange, "value \"" + std::string(text) +
                                                            "\" is out of range for type " +
                                                            std::string(sqlTypeName(type)));
}

// int2in/int4in/int8in (pg_strtoint16/32/64 in Postgres 15): [space] [sign] digits [space].
Result<KeyValue> parseInteger(KeyType type, std::string_view text) {
  size_t i = 0;
  while (i < text.size() && isSpace(text[i])) ++i;
  bool negative = false;
  if (i < text.size() && (text[i] == '+' || text[i] == '-')) {
    negative = text[i] == '-';
    ++i;
  }
  const size_t digits_start = i;
  // Accumulate as a negative number so that the minimum of each type fits.
  int64_t value = 0;
  bool overflow = false;
  for (; i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i) {
    const int digit = text[i] - '0';
    if (value < (std::numeric_limits<int64_t>::min() + digit) / 10) overflow = true;
    if (!overflow) value = value * 10 - digit;
  }
  if (i == digits_start) return invalidSyntax(type, text);
  while (i < text.size() && isSpace(text[i])) ++i;
  if (i != text.size()) return invalidSyntax(type, text);
  if (overflow) return outOfRange(type, text);
  if (!negative) {
    if (value == std::numeric_limits<int64_t>::min()) return outOfRange(type, text);
    value = -value;
  }
  const auto [lo, hi] = integerLimits(type);
  if (value < lo || value > hi) return outOfRange(type, text);
  return KeyValue::ofInt(value);
}

// uuid_in (string_to_uuid): optional braces; two hex digits per byte; a hyphen may follow any
// even-numbered byte except the last; nothing else, not even whitespace.
Result<KeyValue> parseUuid(std::string_view text) {
  std::string bytes(kUuidLength, '\0');
  size_t i = 0;
  const bool braces = !text.empty() && text[0] == '{';
  if (braces) ++i;
  for (size_t b = 0; b < kUuidLength; ++b) {
    if (i + 1 >= text.size()) return invalidSyntax(KeyType::kUuid, text);
    const int hi = hexValue(text[i]);
    const int lo = hexValue(text[i + 1]);
    if (hi < 0 || lo < 0) return invalidSyntax(KeyType::kUuid, text);
    bytes[b] = static_cast<char>(hi * 16 + lo);
    i += 2;
    if (i < text.size() && text[i] == '-' && b % 2 == 1 && b < kUuidLength - 1) ++i;
  }
  if (braces) {
    if (i >= text.size() || text[i] != '}') return invalidSyntax(KeyType::kUuid, text);
    ++i;
  }
  if (i != text.size()) return invalidSyntax(KeyType::kUuid, text);
  return KeyValue::ofBytes(std::move(bytes));
}

}  // namespace

std::strong_ordering operator<=>(const KeyValue& a, const KeyValue& b) {
  if (a.data_.index() != b.data_.index()) return a.data_.index() <=> b.data_.index();
  if (a.isInt()) return a.asInt() <=> b.asInt();
  const std::string& x = a.asBytes();
  const std::string& y = b.asBytes();
  const int c = std::memcmp(x.data(), y.data(), std::min(x.size(), y.size()));
  if (c != 0) return c < 0 ? std::strong_ordering::less : std::strong_ordering::greater;
  return x.size() <=> y.size();
}

std::string KeyValue::display(KeyType type) const {
  if (isInt()) return std::to_string(asInt());
  if (type == KeyType::kUuid && asBytes().size() == kUuidLength) return formatUuid(asBytes());
  std::string out = "\"";
  for (const char c : asBytes()) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[(static_cast<unsigned char>(c) >> 4) & 0xf];
      out += kHex[static_cast<unsigned char>(c) & 0xf];
    } else {
      out += c;
    }
  }
  return out + "\"";
}

Result<KeyValue> parseKeyText(KeyType type, std::string_view text) {
  switch (type) {
    case KeyType::kSmallint:
    case KeyType::kInteger:
    case KeyType::kBigint:
      return parseInteger(type, text);
    case KeyType::kUuid:
      return parseUuid(text);
    case KeyType::kText:
    case KeyType::kVarchar:
      break;
  }
  return KeyValue::ofBytes(std::string(text));
}

Result<KeyValue> keyFromInt(KeyType type, int64_t value) {
  if (!isIntegerKey(type)) {
    return Error::make(keystate::kDatatypeMismatch,
                       "an integer is not a value of type " + std::string(sqlTypeName(type)));
  }
  const auto [lo, hi] = integerLimits(type);
  if (value < lo || value > hi) return outOfRange(type, std::to_string(value));
  return KeyValue::ofInt(value);
}

std::string formatUuid(std::string_view bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(36);
  for (size_t i = 0; i < bytes.size(); ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out += '-';
    const auto byte = static_cast<unsigned char>(bytes[i]);
    out += kHex[byte >> 4];
    out += kHex[byte & 0xf];
  }
  return out;
}

}  // namespace shardgate::conf
