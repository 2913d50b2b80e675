// LiteralTemplate: a hand-written subset of Postgres 15's scanner (scan.l) that finds literals.
#include "planner/literal_template.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>

#include "common/sql_text.h"

namespace shardgate::planner {
namespace {

constexpr char kPlaceholder = '\x01';

// Character classes of scan.l, as a table (the scan runs on every statement).
enum : uint8_t {
  kDigit = 2,       // (space is isSqlSpace, in common/sql_text.h)
  kIdentStart = 4,  // [A-Za-z\200-\377_]
  kIdentCont = 8,   // ident_start, digits, $
  kOp = 16,         // op_chars
  kSelf = 32,       // self
};
constexpr std::array<uint8_t, 256> makeClasses() {
  std::array<uint8_t, 256> t{};
  for (int c = '0'; c <= '9'; ++c) t[c] |= kDigit;
  for (int c = 0; c < 256; ++c) {
    if (isSqlIdentStart(static_cast<char>(c))) t[c] |= kIdentStart;
    if (isSqlIdentCont(static_cast<char>(c))) t[c] |= kIdentCont;
  }
  for (const char c : std::string_view("~!@#^&|`?+-*/%<>="))
    t[static_cast<unsigned char>(c)] |= kOp;
  for (const char c : std::string_view(",()[].;:")) t[static_cast<unsigned char>(c)] |= kSelf;
  return t;
}
constexpr std::array<uint8_t, 256> kClasses = makeClasses();

inline bool isDigit(unsigned char c) {
  return kClasses[c] & kDigit;
}
inline bool isIdentStart(unsigned char c) {
  return kClasses[c] & kIdentStart;
}
inline bool isIdentCont(unsigned char c) {
  return kClasses[c] & kIdentCont;
}
inline bool isOpChar(unsigned char c) {
  return kClasses[c] & kOp;
}
inline bool isSelfChar(unsigned char c) {
  return kClasses[c] & kSelf;
}

bool equalsLower(std::string_view word, std::string_view lower) {
  if (word.size() != lower.size()) return false;
  for (size_t i = 0; i < word.size(); ++i) {
    char c = word[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c != lower[i]) return false;
  }
  return true;
}

// Type names whose parenthesised modifiers are read as numbers by the grammar itself (float(p)
// even picks float4 or float8 by value): literals there stay in the template verbatim.
bool isTypmodKeyword(std::string_view word) {
  // Every word of every statement is asked about: the candidates are picked by length first.
  switch (word.size()) {
    case 3:
      return equalsLower(word, "dec") || equalsLower(word, "bit");
    case 4:
      return equalsLower(word, "char") || equalsLower(word, "time");
    case 5:
      return equalsLower(word, "float") || equalsLower(word, "nchar");
    case 6:
      return equalsLower(word, "second");
    case 7:
      return equalsLower(word, "numeric") || equalsLower(word, "decimal") ||
             equalsLower(word, "varchar") || equalsLower(word, "varying");
    case 8:
      return equalsLower(word, "interval");
    case 9:
      return equalsLower(word, "character") || equalsLower(word, "timestamp") ||
             equalsLower(word, "localtime");
    case 12:
      return equalsLower(word, "current_time");
    case 14:
      return equalsLower(word, "localtimestamp");
    case 17:
      return equalsLower(word, "current_timestamp");
    default:
      return false;
  }
}

// Whether the decimal digits (no sign, leading zeros allowed) fit in int32, as strtoint decides
// between ICONST and FCONST in scan.l's process_integer_literal.
bool fitsInt32(std::string_view digits) {
  size_t k = 0;
  while (k + 1 < digits.size() && digits[k] == '0') ++k;
  digits.remove_prefix(k);
  if (digits.size() < 10) return true;
  if (digits.size() > 10) return false;
  return digits <= std::string_view("2147483647");
}

}  // namespace

bool isValidUtf8Text(std::string_view sql) {
  const auto* p = reinterpret_cast<const unsigned char*>(sql.data());
  const size_t n = sql.size();
  size_t i = 0;
  while (i < n) {
    // Eight ASCII bytes, none of them NUL, at a time: most statements are all ASCII.
    constexpr uint64_t kHighBits = 0x8080808080808080ull;
    constexpr uint64_t kLowBits = 0x0101010101010101ull;
    if (i + 8 <= n) {
      uint64_t word;
      std::memcpy(&word, p + i, sizeof word);
      if ((word & kHighBits) == 0 && ((word - kLowBits) & ~word & kHighBits) == 0) {
        i += 8;
        continue;
      }
    }
    const unsigned char c = p[i];
    if (c < 0x80) {
      if (c == 0) return false;
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
      cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + len > n) return false;
    for (size_t k = 1; k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) return false;
      cp = cp << 6 | (p[i + k] & 0x3F);
    }
    // Overlong forms, surrogates and code points past U+10FFFF are invalid.
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF)) {
      return false;
    }
    i += len;
  }
  return true;
}

bool LiteralTemplate::scan(std::string_view sql, std::string_view prefix) {
  sql_ = sql;
  literals_.clear();
  if (sql.size() >= UINT32_MAX || !isValidUtf8Text(sql)) return false;

  const size_t n = sql.size();
  // The template is written in place, into room for the longest one the text can give: tokens
  // keep their length or shrink to one space, and a literal's placeholder is at most one byte
  // longer than the literal. key_ is cut to the written length at the end.
  key_.resize(prefix.size() + 2 * n + 1);
  char* const out = key_.data();
  std::memcpy(out, prefix.data(), prefix.size());
  size_t written = prefix.size();
  const auto put = [&](char c) { out[written++] = c; };
  const auto putText = [&](std::string_view text) {
    std::memcpy(out + written, text.data(), text.size());
    written += text.size();
  };
  const size_t token_start = written;
  size_t i = 0;
  bool pending_space = false;
  bool after_type_keyword = false;  // the previous token was a typmod keyword
  int typmod_depth = 0;             // > 0: inside the parentheses after one

  const auto addLiteral = [&](size_t begin, size_t end, LiteralKind kind) {
    if (typmod_depth > 0) {
      putText(sql.substr(begin, end - begin));
      return;
    }
    literals_.push_back({static_cast<uint32_t>(begin), static_cast<uint32_t>(end - begin), kind});
    put(kPlaceholder);
    put(kind == LiteralKind::kInteger ? 'I' : kind == LiteralKind::kNumeric ? 'F' : 'S');
  };

  while (i < n) {
    const size_t before = i;
    if (!skipSqlSpaceAndComments(sql, i)) return false;
    if (i != before) pending_space = true;
    if (i >= n) break;
    if (pending_space && written > token_start) put(' ');
    pending_space = false;
    const bool was_type_keyword = after_type_keyword;
    after_type_keyword = false;

    const unsigned char c = sql[i];
    const unsigned char next = i + 1 < n ? sql[i + 1] : 0;
    if (isIdentStart(c)) {
      size_t j = i + 1;
      while (j < n && isIdentCont(sql[j])) ++j;
      const std::string_view word = sql.substr(i, j - i);
      // E'..', B'..', X'..', N'..' and U&'..' / U&".." have their own escape rules.
      if (j < n && sql[j] == '\'') return false;
      if (word.size() == 1 && (c == 'U' || c == 'u') && j + 1 < n && sql[j] == '&' &&
          (sql[j + 1] == '\'' || sql[j + 1] == '"')) {
        return false;
      }
      putText(word);
      after_type_keyword = isTypmodKeyword(word);
      i = j;
    } else if (isDigit(c) || (c == '.' && isDigit(next))) {
      size_t j = i;
      bool integer = true;
      while (j < n && isDigit(sql[j])) ++j;
      if (j < n && sql[j] == '.') {
        if (j + 1 < n && sql[j + 1] == '.') return false;  // "1..": scan.l's decimalfail
        integer = false;
        ++j;
        while (j < n && isDigit(sql[j])) ++j;
      }
      if (j < n && (sql[j] == 'e' || sql[j] == 'E')) {
        size_t k = j + 1;
        if (k < n && (sql[k] == '+' || sql[k] == '-')) ++k;
        if (k >= n || !isDigit(sql[k])) return false;  // realfail / trailing junk
        while (k < n && isDigit(sql[k])) ++k;
        integer = false;
        j = k;
      }
      // Postgres 15 rejects "trailing junk after numeric literal" (123abc, 1.2.3, 1$).
      if (j < n && (isIdentCont(sql[j]) || sql[j] == '.')) return false;
      const LiteralKind kind = integer && fitsInt32(sql.substr(i, j - i)) ? LiteralKind::kInteger
                                                                          : LiteralKind::kNumeric;
      addLiteral(i, j, kind);
      i = j;
    } else if (c == '\'') {
      size_t j = i + 1;
      for (;;) {
        const size_t q = sql.find('\'', j);
        if (q == std::string_view::npos) return false;
        if (q + 1 < n && sql[q + 1] == '\'') {
          j = q + 2;
          continue;
        }
        j = q + 1;
        break;
      }
      // 'a'<newline>'b' is one literal in Postgres; without a newline it is a syntax error.
      // Either way, such texts are not templated.
      size_t k = j;
      if (!skipSqlSpaceAndComments(sql, k)) return false;
      if (k < n && sql[k] == '\'') return false;
      addLiteral(i, j, LiteralKind::kString);
      i = j;
    } else if (c == '"') {
      size_t j = i + 1;
      for (;;) {
        const size_t q = sql.find('"', j);
        if (q == std::string_view::npos) return false;
        if (q + 1 < n && sql[q + 1] == '"') {
          j = q + 2;
          continue;
        }
        j = q + 1;
        break;
      }
      if (j == i + 2) return false;  // zero-length delimited identifier
      putText(sql.substr(i, j - i));
      i = j;
    } else if (c == '$') {
      if (!isDigit(next)) return false;  // dollar quoting
      size_t j = i + 1;
      while (j < n && isDigit(sql[j])) ++j;
      if (j < n && isIdentCont(sql[j])) return false;
      putText(sql.substr(i, j - i));
      i = j;
    } else if (isOpChar(c)) {
      put(static_cast<char>(c));
      ++i;
    } else if (isSelfChar(c)) {
      if (c == '(') {
        if (typmod_depth > 0) {
          ++typmod_depth;
        } else if (was_type_keyword) {
          typmod_depth = 1;
        }
      } else if (c == ')' && typmod_depth > 0) {
        --typmod_depth;
      }
      put(static_cast<char>(c));
      ++i;
    } else {
      return false;
    }
  }
  key_.resize(written);
  return true;
}

std::string LiteralTemplate::value(size_t i) const {
  std::string scratch;
  return std::string(valueView(i, scratch));
}

std::string_view LiteralTemplate::valueView(size_t i, std::string& scratch) const {
  const std::string_view raw = rawText(i);
  if (literals_[i].kind != LiteralKind::kString) return raw;
  const std::string_view body = raw.substr(1, raw.size() - 2);
  if (body.find('\'') == std::string_view::npos) return body;
  scratch.clear();
  for (size_t k = 0; k < body.size(); ++k) {
    scratch += body[k];
    if (body[k] == '\'') ++k;  // '' stands for one quote
  }
  return scratch;
}

std::optional<size_t> LiteralTemplate::literalAt(size_t offset) const {
  const auto it = std::lower_bound(
      literals_.begin(), literals_.end(), offset,
      [](const Literal& l, size_t off) { return static_cast<size_t>(l.offset) < off; });
  if (it == literals_.end() || it->offset != offset) return std::nullopt;
  return static_cast<size_t>(it - literals_.begin());
}

std::optional<size_t> LiteralTemplate::literalForConstant(size_t location, int& negations) const {
  negations = 0;
  size_t p = location;
  const size_t n = sql_.size();
  while (p < n && sql_[p] == '-' && !(p + 1 < n && sql_[p + 1] == '-')) {
    ++negations;
    ++p;
    if (!skipSqlSpaceAndComments(sql_, p)) return std::nullopt;
  }
  return literalAt(p);
}

}  // namespace shardgate::planner
