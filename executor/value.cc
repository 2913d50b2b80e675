// Decoding and ordering of shard column values by type (see value.h).
#include "executor/value.h"

#include <bit>
#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>

namespace shardgate::executor {
namespace {

constexpr int64_t kMicrosPerSecond = 1000000;
constexpr int64_t kMicrosPerDay = 86400 * kMicrosPerSecond;
constexpr int64_t kDaysPerMonth = 30;  // DAYS_PER_MONTH: interval comparison counts a month so

Error badText(const ColumnType& type, std::string_view value) {
  return Error::make("22P02", "invalid input syntax for type " + typeName(type.oid) + ": \"" +
                                  std::string(value.substr(0, 64)) + "\"");
}
// A date or time value shardgate cannot read: the session's DateStyle (or IntervalStyle) makes
// the shards print it in a form the merge does not compare. Refused, never compared wrongly.
Error unreadableDateTime(const ColumnType& type, std::string_view value, std::string_view setting,
                         std::string_view wanted) {
  return Error::make("0A000",
                     "cannot compare " + typeName(type.oid) + " value \"" +
                         std::string(value.substr(0, 64)) + "\" across shards",
                     "shardgate merges date and time values in the " + std::string(setting) + " " +
                         std::string(wanted) + " output format.",
                     "SET " + std::string(setting) + " TO " + std::string(wanted) +
                         " (the default), or ask for binary results.");
}
Error badBinary(const ColumnType& type) {
  return Error::make(
      "22P03", "invalid binary value for type " + typeName(type.oid) + " in a shard's result row");
}

uint64_t readBigEndian(std::string_view bytes) {
  uint64_t v = 0;
  for (unsigned char c : bytes) v = (v << 8) | c;
  return v;
}

// Parses an unsigned decimal run at s[pos...]; false if there is none.
bool parseDigits(std::string_view s, size_t& pos, int64_t& out, size_t max_digits = 18) {
  const size_t start = pos;
  int64_t v = 0;
  while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9' && pos - start < max_digits) {
    v = v * 10 + (s[pos] - '0');
    ++pos;
  }
  out = v;
  return pos > start;
}

// ".123456" -> microseconds (digits past the sixth are ignored: Postgres prints at most six).
int64_t parseFraction(std::string_view s, size_t& pos) {
  if (pos >= s.size() || s[pos] != '.') return 0;
  ++pos;
  int64_t micros = 0;
  int digits = 0;
  while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') {
    if (digits < 6) micros = micros * 10 + (s[pos] - '0');
    ++digits;
    ++pos;
  }
  for (; digits < 6; ++digits) micros *= 10;
  return micros;
}

// Days since 2000-01-01 of a proleptic Gregorian date (astronomical year numbering).
int64_t daysSince2000(int64_t year, int64_t month, int64_t day) {
  // Count from 0000-03-01 so that the leap day ends the counting year.
  if (month <= 2) year -= 1;
  const int64_t era = (year >= 0 ? year : year - 399) / 400;
  const int64_t year_of_era = year - era * 400;
  const int64_t shifted_month = month > 2 ? month - 3 : month + 9;
  const int64_t day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
  const int64_t day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
  return era * 146097 + day_of_era - 719468 - 10957;  // 719468: 0000-03-01 to 1970-01-01
}

// "YYYY-MM-DD" at the start of s; the year may have more than four digits.
bool parseDate(std::string_view s, size_t& pos, int64_t& year, int64_t& month, int64_t& day) {
  if (!parseDigits(s, pos, year, 9) || pos >= s.size() || s[pos] != '-') return false;
  ++pos;
  if (!parseDigits(s, pos, month, 2) || pos >= s.size() || s[pos] != '-') return false;
  ++pos;
  return parseDigits(s, pos, day, 2) && month >= 1 && month <= 12 && day >= 1 && day <= 31;
}

// "HH:MM:SS[.ffffff]" -> microseconds.
bool parseTimeOfDay(std::string_view s, size_t& pos, int64_t& micros) {
  int64_t h = 0, m = 0, sec = 0;
  // Interval times may run to 2562047788 hours (the int64 microsecond limit).
  if (!parseDigits(s, pos, h, 10) || pos >= s.size() || s[pos] != ':') return false;
  ++pos;
  if (!parseDigits(s, pos, m, 2)) return false;
  if (pos < s.size() && s[pos] == ':') {
    ++pos;
    if (!parseDigits(s, pos, sec, 2)) return false;
  }
  const __int128 total =
      (static_cast<__int128>(h) * 3600 + m * 60 + sec) * kMicrosPerSecond + parseFraction(s, pos);
  if (total > std::numeric_limits<int64_t>::max()) return false;
  micros = static_cast<int64_t>(total);
  return true;
}

// "+05", "-03:30", "+00:53:28" -> seconds east of UTC.
bool parseZoneOffset(std::string_view s, size_t& pos, int64_t& seconds_east) {
  if (pos >= s.size() || (s[pos] != '+' && s[pos] != '-')) return false;
  const bool negative = s[pos] == '-';
  ++pos;
  int64_t h = 0, m = 0, sec = 0;
  if (!parseDigits(s, pos, h, 2)) return false;
  if (pos < s.size() && s[pos] == ':') {
    ++pos;
    if (!parseDigits(s, pos, m, 2)) return false;
    if (pos < s.size() && s[pos] == ':') {
      ++pos;
      if (!parseDigits(s, pos, sec, 2)) return false;
    }
  }
  seconds_east = (h * 3600 + m * 60 + sec) * (negative ? -1 : 1);
  return true;
}

bool consumeBC(std::string_view s, size_t& pos) {
  if (s.substr(pos) == " BC") {
    pos = s.size();
    return true;
  }
  return false;
}

// ISO DateStyle output of date, timestamp and timestamptz (the shards print them in the client
// session's DateStyle: other styles are refused). with_time: timestamp; with_zone: timestamptz
// (offset required).
Result<int64_t> parseDateTimeText(const ColumnType& type, std::string_view s, bool with_time,
                                  bool with_zone) {
  const int64_t plus_infinity =
      with_time ? std::numeric_limits<int64_t>::max() : std::numeric_limits<int32_t>::max();
  const int64_t minus_infinity =
      with_time ? std::numeric_limits<int64_t>::min() : std::numeric_limits<int32_t>::min();
  if (s == "infinity") return plus_infinity;
  if (s == "-infinity") return minus_infinity;
  size_t pos = 0;
  int64_t year = 0, month = 0, day = 0;
  if (!parseDate(s, pos, year, month, day)) return unreadableDateTime(type, s, "DateStyle", "ISO");
  int64_t micros = 0;
  int64_t offset = 0;
  if (with_time) {
    if (pos >= s.size() || s[pos] != ' ') return unreadableDateTime(type, s, "DateStyle", "ISO");
    ++pos;
    if (!parseTimeOfDay(s, pos, micros)) return unreadableDateTime(type, s, "DateStyle", "ISO");
    if (with_zone && !parseZoneOffset(s, pos, offset)) {
      return Error::make("0A000", "cannot compare timestamptz value \"" + std::string(s) +
                                      "\" without a UTC offset across shards");
    }
  }
  const bool bc = consumeBC(s, pos);
  if (pos != s.size()) return unreadableDateTime(type, s, "DateStyle", "ISO");
  if (bc) year = 1 - year;
  const int64_t days = daysSince2000(year, month, day);
  if (!with_time) return days;
  const __int128 instant = static_cast<__int128>(days) * kMicrosPerDay + micros -
                           static_cast<__int128>(offset) * kMicrosPerSecond;
  if (instant > std::numeric_limits<int64_t>::max() ||
      instant < std::numeric_limits<int64_t>::min()) {
    return Error::make("22008", typeName(type.oid) + " out of range: \"" + std::string(s) + "\"");
  }
  return static_cast<int64_t>(instant);
}

// IntervalStyle "postgres" output: "1 year 2 mons -3 days +04:05:06.5", "00:00:00".
Result<__int128> parseIntervalText(const ColumnType& type, std::string_view s) {
  __int128 months = 0, days = 0, micros = 0;
  size_t pos = 0;
  bool any = false;
  while (pos < s.size()) {
    while (pos < s.size() && s[pos] == ' ') ++pos;
    if (pos >= s.size()) break;
    const size_t end = std::min(s.find(' ', pos), s.size());
    const std::string_view token = s.substr(pos, end - pos);
    if (token.find(':') != std::string_view::npos) {
      size_t p = 0;
      bool negative = false;
      if (token[0] == '+' || token[0] == '-') {
        negative = token[0] == '-';
        p = 1;
      }
      int64_t t = 0;
      if (!parseTimeOfDay(token, p, t) || p != token.size()) {
        return unreadableDateTime(type, s, "IntervalStyle", "postgres");
      }
      micros += negative ? -t : t;
      pos = end;
    } else {
      int64_t n = 0;
      size_t p = 0;
      bool negative = false;
      if (token[0] == '+' || token[0] == '-') {
        negative = token[0] == '-';
        p = 1;
      }
      if (!parseDigits(token, p, n) || p != token.size()) {
        return unreadableDateTime(type, s, "IntervalStyle", "postgres");
      }
      if (negative) n = -n;
      size_t unit_start = end;
      while (unit_start < s.size() && s[unit_start] == ' ') ++unit_start;
      const size_t unit_end = std::min(s.find(' ', unit_start), s.size());
      const std::string_view unit = s.substr(unit_start, unit_end - unit_start);
      if (unit.starts_with("year")) {
        months += static_cast<__int128>(n) * 12;
      } else if (unit.starts_with("mon")) {
        months += n;
      } else if (unit.starts_with("day")) {
        days += n;
      } else {
        return unreadableDateTime(type, s, "IntervalStyle", "postgres");
      }
      pos = unit_end;
    }
    any = true;
  }
  if (!any) return badText(type, s);
  return months * kDaysPerMonth * kMicrosPerDay + days * kMicrosPerDay + micros;
}

int hexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

Result<std::string> parseByteaText(const ColumnType& type, std::string_view s) {
  std::string out;
  if (s.starts_with("\\x")) {
    if (s.size() % 2 != 0) return badText(type, s);
    for (size_t i = 2; i + 1 < s.size(); i += 2) {
      const int hi = hexValue(s[i]);
      const int lo = hexValue(s[i + 1]);
      if (hi < 0 || lo < 0) return badText(type, s);
      out.push_back(static_cast<char>(hi * 16 + lo));
    }
    return out;
  }
  // bytea_output = escape: "\\" is a backslash, "\ooo" an octal byte.
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\\') {
      out.push_back(s[i]);
    } else if (i + 1 < s.size() && s[i + 1] == '\\') {
      out.push_back('\\');
      ++i;
    } else if (i + 3 < s.size() + 0 && s[i + 1] >= '0' && s[i + 1] <= '3' && s[i + 2] >= '0' &&
               s[i + 2] <= '7' && s[i + 3] >= '0' && s[i + 3] <= '7') {
      out.push_back(
          static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0')));
      i += 3;
    } else {
      return badText(type, s);
    }
  }
  return out;
}

Result<double> parseFloatText(const ColumnType& type, std::string_view s) {
  if (s == "NaN") return std::numeric_limits<double>::quiet_NaN();
  if (s == "Infinity") return std::numeric_limits<double>::infinity();
  if (s == "-Infinity") return -std::numeric_limits<double>::infinity();
  std::string_view digits = s;
  if (!digits.empty() && digits.front() == '+') digits.remove_prefix(1);
  double v = 0;
  if (type.oid == pg_type::kFloat4) {
    float f = 0;
    const auto r = std::from_chars(digits.data(), digits.data() + digits.size(), f);
    if (r.ec != std::errc() || r.ptr != digits.data() + digits.size()) return badText(type, s);
    v = f;
  } else {
    const auto r = std::from_chars(digits.data(), digits.data() + digits.size(), v);
    if (r.ec != std::errc() || r.ptr != digits.data() + digits.size()) return badText(type, s);
  }
  return v;
}

Result<bool> parseBoolText(const ColumnType& type, std::string_view s) {
  std::string lower;
  for (char c : s) lower.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  if (lower == "t" || lower == "true" || lower == "yes" || lower == "on" || lower == "1") {
    return true;
  }
  if (lower == "f" || lower == "false" || lower == "no" || lower == "off" || lower == "0") {
    return false;
  }
  return badText(type, s);
}

ValueKey intKey(int64_t v) {
  ValueKey k;
  k.tag = ValueKey::Tag::kInt;
  k.integer = v;
  return k;
}
ValueKey wideKey(__int128 v) {
  ValueKey k;
  k.tag = ValueKey::Tag::kWide;
  k.wide = v;
  return k;
}
ValueKey doubleKey(double v) {
  ValueKey k;
  k.tag = ValueKey::Tag::kDouble;
  k.real = v == 0 ? 0.0 : v;  // -0 = 0
  return k;
}
ValueKey bytesKey(std::string v, bool collated) {
  ValueKey k;
  k.tag = collated ? ValueKey::Tag::kCollated : ValueKey::Tag::kBytes;
  k.bytes = std::move(v);
  return k;
}

// timetz orders by UTC time, then by zone (timetz_cmp_internal): both packed into one number.
// `zone_west` is Postgres's zone: seconds west of UTC.
ValueKey timeTzKey(int64_t micros, int64_t zone_west) {
  const __int128 utc =
      static_cast<__int128>(micros) + static_cast<__int128>(zone_west) * kMicrosPerSecond;
  return wideKey(utc * (int64_t{1} << 32) + (zone_west + (int64_t{1} << 31)));
}

Result<ValueKey> decodeText(const ColumnType& type, std::string_view s) {
  switch (type.oid) {
    case pg_type::kInt2:
    case pg_type::kInt4:
    case pg_type::kInt8:
    case pg_type::kOid: {
      int64_t v = 0;
      std::string_view digits = s;
      if (!digits.empty() && digits.front() == '+') digits.remove_prefix(1);
      const auto r = std::from_chars(digits.data(), digits.data() + digits.size(), v);
      if (r.ec != std::errc() || r.ptr != digits.data() + digits.size()) return badText(type, s);
      return intKey(v);
    }
    case pg_type::kFloat4:
    case pg_type::kFloat8: {
      auto v = parseFloatText(type, s);
      if (!v.ok()) return std::move(v).error();
      return doubleKey(*v);
    }
    case pg_type::kNumeric: {
      auto d = Decimal::parseText(s);
      if (!d.ok()) return std::move(d).error();
      ValueKey k;
      k.tag = ValueKey::Tag::kDecimal;
      k.decimal = std::move(*d);
      return k;
    }
    case pg_type::kBool: {
      auto b = parseBoolText(type, s);
      if (!b.ok()) return std::move(b).error();
      return intKey(*b ? 1 : 0);
    }
    case pg_type::kText:
    case pg_type::kVarchar:
      return bytesKey(std::string(s), true);
    case pg_type::kBpchar: {
      std::string_view trimmed = s;
      while (!trimmed.empty() && trimmed.back() == ' ') trimmed.remove_suffix(1);
      return bytesKey(std::string(trimmed), true);
    }
    case pg_type::kName:
      return bytesKey(std::string(s), true);
    case pg_type::kChar: {
      // charout prints bytes with the high bit set as "\ooo".
      if (s.size() == 4 && s[0] == '\\') {
        auto decoded = parseByteaText(type, s);
        if (!decoded.ok()) return std::move(decoded).error();
        return bytesKey(std::move(*decoded), false);
      }
      return bytesKey(std::string(s.substr(0, 1)), false);
    }
    case pg_type::kBytea: {
      auto bytes = parseByteaText(type, s);
      if (!bytes.ok()) return std::move(bytes).error();
      return bytesKey(std::move(*bytes), false);
    }
    case pg_type::kUuid: {
      std::string bytes;
      for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '-' || s[i] == '{' || s[i] == '}') continue;
        const int hi = hexValue(s[i]);
        const int lo = i + 1 < s.size() ? hexValue(s[i + 1]) : -1;
        if (hi < 0 || lo < 0) return badText(type, s);
        bytes.push_back(static_cast<char>(hi * 16 + lo));
        ++i;
      }
      if (bytes.size() != 16) return badText(type, s);
      return bytesKey(std::move(bytes), false);
    }
    case pg_type::kDate: {
      auto days = parseDateTimeText(type, s, false, false);
      if (!days.ok()) return std::move(days).error();
      return intKey(*days);
    }
    case pg_type::kTimestamp:
    case pg_type::kTimestampTz: {
      auto micros = parseDateTimeText(type, s, true, type.oid == pg_type::kTimestampTz);
      if (!micros.ok()) return std::move(micros).error();
      return intKey(*micros);
    }
    case pg_type::kTime: {
      size_t pos = 0;
      int64_t micros = 0;
      if (!parseTimeOfDay(s, pos, micros) || pos != s.size()) return badText(type, s);
      return intKey(micros);
    }
    case pg_type::kTimeTz: {
      size_t pos = 0;
      int64_t micros = 0;
      int64_t east = 0;
      if (!parseTimeOfDay(s, pos, micros) || !parseZoneOffset(s, pos, east) || pos != s.size()) {
        return badText(type, s);
      }
      return timeTzKey(micros, -east);
    }
    case pg_type::kInterval: {
      auto span = parseIntervalText(type, s);
      if (!span.ok()) return std::move(span).error();
      return wideKey(*span);
    }
    default:
      break;
  }
  return Error::make("0A000", "cannot compare values of " + typeName(type.oid) + " across shards");
}

Result<ValueKey> decodeBinary(const ColumnType& type, std::string_view b) {
  auto need = [&](size_t n) { return b.size() == n; };
  switch (type.oid) {
    case pg_type::kInt2:
      if (!need(2)) return badBinary(type);
      return intKey(static_cast<int16_t>(readBigEndian(b)));
    case pg_type::kInt4:
      if (!need(4)) return badBinary(type);
      return intKey(static_cast<int32_t>(readBigEndian(b)));
    case pg_type::kInt8:
      if (!need(8)) return badBinary(type);
      return intKey(static_cast<int64_t>(readBigEndian(b)));
    case pg_type::kOid:
      if (!need(4)) return badBinary(type);
      return intKey(static_cast<int64_t>(readBigEndian(b)));
    case pg_type::kFloat4:
      if (!need(4)) return badBinary(type);
      return doubleKey(std::bit_cast<float>(static_cast<uint32_t>(readBigEndian(b))));
    case pg_type::kFloat8:
      if (!need(8)) return badBinary(type);
      return doubleKey(std::bit_cast<double>(readBigEndian(b)));
    case pg_type::kNumeric: {
      auto d = Decimal::parseBinary(b);
      if (!d.ok()) return std::move(d).error();
      ValueKey k;
      k.tag = ValueKey::Tag::kDecimal;
      k.decimal = std::move(*d);
      return k;
    }
    case pg_type::kBool:
      if (!need(1)) return badBinary(type);
      return intKey(b[0] != 0 ? 1 : 0);
    case pg_type::kText:
    case pg_type::kVarchar:
      return bytesKey(std::string(b), true);
    case pg_type::kBpchar: {
      std::string_view trimmed = b;
      while (!trimmed.empty() && trimmed.back() == ' ') trimmed.remove_suffix(1);
      return bytesKey(std::string(trimmed), true);
    }
    case pg_type::kName:
      return bytesKey(std::string(b), true);
    case pg_type::kChar:
    case pg_type::kBytea:
      return bytesKey(std::string(b), false);
    case pg_type::kUuid:
      if (!need(16)) return badBinary(type);
      return bytesKey(std::string(b), false);
    case pg_type::kDate:
      if (!need(4)) return badBinary(type);
      return intKey(static_cast<int32_t>(readBigEndian(b)));
    case pg_type::kTime:
    case pg_type::kTimestamp:
    case pg_type::kTimestampTz:
      if (!need(8)) return badBinary(type);
      return intKey(static_cast<int64_t>(readBigEndian(b)));
    case pg_type::kTimeTz:
      if (!need(12)) return badBinary(type);
      return timeTzKey(static_cast<int64_t>(readBigEndian(b.substr(0, 8))),
                       static_cast<int32_t>(readBigEndian(b.substr(8, 4))));
    case pg_type::kInterval: {
      if (!need(16)) return badBinary(type);
      const auto micros = static_cast<int64_t>(readBigEndian(b.substr(0, 8)));
      const auto days = static_cast<int32_t>(readBigEndian(b.substr(8, 4)));
      const auto months = static_cast<int32_t>(readBigEndian(b.substr(12, 4)));
      return wideKey(static_cast<__int128>(months) * kDaysPerMonth * kMicrosPerDay +
                     static_cast<__int128>(days) * kMicrosPerDay + micros);
    }
    default:
      break;
  }
  return Error::make("0A000", "cannot compare values of " + typeName(type.oid) + " across shards");
}

template <typename T>
int threeWay(const T& a, const T& b) {
  return a < b ? -1 : (a > b ? 1 : 0);
}

}  // namespace

ValueClass classifyType(int32_t oid) {
  switch (oid) {
    case pg_type::kInt2:
    case pg_type::kInt4:
    case pg_type::kInt8:
    case pg_type::kOid:
      return ValueClass::kInteger;
    case pg_type::kFloat4:
    case pg_type::kFloat8:
      return ValueClass::kFloat;
    case pg_type::kNumeric:
      return ValueClass::kNumeric;
    case pg_type::kBool:
      return ValueClass::kBool;
    case pg_type::kText:
    case pg_type::kVarchar:
    case pg_type::kBpchar:
    case pg_type::kName:  // "C" by default, but collatable: text::name keeps text's collation
      return ValueClass::kCollatedText;
    case pg_type::kChar:
    case pg_type::kBytea:
    case pg_type::kUuid:
      return ValueClass::kBytewise;
    case pg_type::kDate:
      return ValueClass::kDate;
    case pg_type::kTime:
      return ValueClass::kTime;
    case pg_type::kTimeTz:
      return ValueClass::kTimeTz;
    case pg_type::kTimestamp:
    case pg_type::kTimestampTz:
      return ValueClass::kTimestamp;
    case pg_type::kInterval:
      return ValueClass::kInterval;
    default:
      return ValueClass::kOther;
  }
}

std::string typeName(int32_t oid) {
  switch (oid) {
    case pg_type::kBool:
      return "boolean";
    case pg_type::kBytea:
      return "bytea";
    case pg_type::kChar:
      return "\"char\"";
    case pg_type::kName:
      return "name";
    case pg_type::kInt8:
      return "bigint";
    case pg_type::kInt2:
      return "smallint";
    case pg_type::kInt4:
      return "integer";
    case pg_type::kText:
      return "text";
    case pg_type::kOid:
      return "oid";
    case pg_type::kFloat4:
      return "real";
    case pg_type::kFloat8:
      return "double precision";
    case pg_type::kBpchar:
      return "character";
    case pg_type::kVarchar:
      return "character varying";
    case pg_type::kDate:
      return "date";
    case pg_type::kTime:
      return "time without time zone";
    case pg_type::kTimestamp:
      return "timestamp without time zone";
    case pg_type::kTimestampTz:
      return "timestamp with time zone";
    case pg_type::kInterval:
      return "interval";
    case pg_type::kTimeTz:
      return "time with time zone";
    case pg_type::kNumeric:
      return "numeric";
    case pg_type::kUuid:
      return "uuid";
    default:
      return "type " + std::to_string(oid);
  }
}

int16_t typeLength(int32_t oid) {
  switch (oid) {
    case pg_type::kBool:
    case pg_type::kChar:
      return 1;
    case pg_type::kInt2:
      return 2;
    case pg_type::kInt4:
    case pg_type::kOid:
    case pg_type::kFloat4:
    case pg_type::kDate:
      return 4;
    case pg_type::kInt8:
    case pg_type::kFloat8:
    case pg_type::kTime:
    case pg_type::kTimestamp:
    case pg_type::kTimestampTz:
      return 8;
    case pg_type::kTimeTz:
      return 12;
    case pg_type::kInterval:
    case pg_type::kUuid:
      return 16;
    case pg_type::kName:
      return 64;
    default:
      return -1;
  }
}

int32_t arrayTypeOf(int32_t oid) {
  switch (oid) {
    case pg_type::kBool:
      return 1000;
    case pg_type::kBytea:
      return 1001;
    case pg_type::kChar:
      return 1002;
    case pg_type::kName:
      return 1003;
    case pg_type::kInt2:
      return 1005;
    case pg_type::kInt4:
      return 1007;
    case pg_type::kText:
      return 1009;
    case pg_type::kBpchar:
      return 1014;
    case pg_type::kVarchar:
      return 1015;
    case pg_type::kInt8:
      return 1016;
    case pg_type::kFloat4:
      return 1021;
    case pg_type::kFloat8:
      return 1022;
    case pg_type::kOid:
      return 1028;
    case pg_type::kTimestamp:
      return 1115;
    case pg_type::kDate:
      return 1182;
    case pg_type::kTime:
      return 1183;
    case pg_type::kTimestampTz:
      return 1185;
    case pg_type::kInterval:
      return 1187;
    case pg_type::kNumeric:
      return 1231;
    case pg_type::kTimeTz:
      return 1270;
    case pg_type::kUuid:
      return 2951;
    default:
      return 0;
  }
}

Result<ValueKey> decodeValue(const ColumnType& type, std::string_view value) {
  return type.binary() ? decodeBinary(type, value) : decodeText(type, value);
}

int compareKeys(const ValueKey& a, const ValueKey& b, const Collation& collation) {
  switch (a.tag) {
    case ValueKey::Tag::kInt:
      return threeWay(a.integer, b.integer);
    case ValueKey::Tag::kWide:
      return threeWay(a.wide, b.wide);
    case ValueKey::Tag::kDouble: {
      // float8_cmp_internal: NaN equals NaN and is above every other value.
      const bool a_nan = std::isnan(a.real);
      const bool b_nan = std::isnan(b.real);
      if (a_nan || b_nan) return a_nan == b_nan ? 0 : (a_nan ? 1 : -1);
      return threeWay(a.real, b.real);
    }
    case ValueKey::Tag::kDecimal:
      return a.decimal.compare(b.decimal);
    case ValueKey::Tag::kBytes:
      return compareBytes(a.bytes, b.bytes);
    case ValueKey::Tag::kCollated:
      return collation.compare(a.bytes, b.bytes);
  }
  return 0;
}

void appendEqualityBytes(const ValueKey& key, std::string& out) {
  char buffer[16];
  switch (key.tag) {
    case ValueKey::Tag::kInt:
      std::memcpy(buffer, &key.integer, 8);
      out.append(buffer, 8);
      return;
    case ValueKey::Tag::kWide:
      std::memcpy(buffer, &key.wide, 16);
      out.append(buffer, 16);
      return;
    case ValueKey::Tag::kDouble: {
      const double canonical =
          std::isnan(key.real) ? std::numeric_limits<double>::quiet_NaN() : key.real;
      std::memcpy(buffer, &canonical, 8);
      out.append(buffer, 8);
      return;
    }
    case ValueKey::Tag::kDecimal: {
      const std::string text = key.decimal.equalityKey();
      const auto n = static_cast<uint32_t>(text.size());
      out.append(reinterpret_cast<const char*>(&n), 4);
      out += text;
      return;
    }
    case ValueKey::Tag::kBytes:
    case ValueKey::Tag::kCollated: {
      // Deterministic collations call only identical strings equal.
      const auto n = static_cast<uint32_t>(key.bytes.size());
      out.append(reinterpret_cast<const char*>(&n), 4);
      out += key.bytes;
      return;
    }
  }
}

Status requireOrderable(const ColumnType& type, size_t column, std::string_view what) {
  if (type.value_class() != ValueClass::kOther) return {};
  return Error::make("0A000",
                     "cannot " + std::string(what) + " column " + std::to_string(column + 1) +
                         " of " + typeName(type.oid) + " across shards",
                     "shardgate orders and compares integers, floats, numeric, boolean, text, "
                     "bytea, uuid, date, time, timestamp and interval values itself.",
                     "Route the query to one shard (filter on the sharding key) or cast the column "
                     "to one of those types.");
}

Status requireExactFloats(const ColumnType& type, size_t column, std::string_view what,
                          int extra_float_digits) {
  if (extra_float_digits >= 1 || type.binary() || type.value_class() != ValueClass::kFloat) {
    return {};
  }
  return Error::make("0A000",
                     "cannot " + std::string(what) + " column " + std::to_string(column + 1) +
                         " of " + typeName(type.oid) + " across shards with extra_float_digits " +
                         std::to_string(extra_float_digits),
                     "Below 1 the shards print floats rounded, and values that differ may print "
                     "alike; shardgate would merge the rounded values.",
                     "SET extra_float_digits = 1 (the default) for this query, or route it to one "
                     "shard.");
}

}  // namespace shardgate::executor
