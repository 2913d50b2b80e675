// Postgres's lexical rules (scan.l) that shardgate's own quick scans of SQL text share.
#pragma once

#include <cstddef>
#include <string_view>

namespace shardgate {

// scan.l's ident_start: [A-Za-z\200-\377_] (bytes past ASCII belong to multibyte identifiers).
constexpr bool isSqlIdentStart(char c) {
  const auto u = static_cast<unsigned char>(c);
  return (u >= 'a' && u <= 'z') || (u >= 'A' && u <= 'Z') || u == '_' || u >= 0x80;
}

// scan.l's ident_cont: ident_start, digits and '$' (so "a$1" is one word, not a parameter).
constexpr bool isSqlIdentCont(char c) {
  return isSqlIdentStart(c) || (c >= '0' && c <= '9') || c == '$';
}

// The end of the block comment that opens at `i` ("/*"), just past its "*/": block comments nest
// in Postgres. npos when it never closes.
inline size_t skipSqlBlockComment(std::string_view sql, size_t i) {
  int depth = 0;
  while (i + 1 < sql.size()) {
    if (sql[i] == '/' && sql[i + 1] == '*') {
      ++depth;
      i += 2;
    } else if (sql[i] == '*' && sql[i + 1] == '/') {
      i += 2;
      if (--depth == 0) return i;
    } else {
      ++i;
    }
  }
  return std::string_view::npos;
}

// scan.l's space: [ \t\n\r\f] (\v is not whitespace before Postgres 16).
constexpr bool isSqlSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f';
}

// Skips whitespace and comments from `i`; false on an unterminated block comment.
inline bool skipSqlSpaceAndComments(std::string_view sql, size_t& i) {
  const size_t n = sql.size();
  while (i < n) {
    const char c = sql[i];
    if (isSqlSpace(c)) {
      ++i;
    } else if (c == '-' && i + 1 < n && sql[i + 1] == '-') {
      while (i < n && sql[i] != '\n' && sql[i] != '\r') ++i;
    } else if (c == '/' && i + 1 < n && sql[i + 1] == '*') {
      const size_t end = skipSqlBlockComment(sql, i);
      if (end == std::string_view::npos) return false;
      i = end;
    } else {
      break;
    }
  }
  return true;
}

// Whether `text` holds `lower_needle` in any letter case (ASCII).
inline bool containsIgnoringCase(std::string_view text, std::string_view lower_needle) {
  if (lower_needle.size() > text.size()) return false;
  for (size_t i = 0; i + lower_needle.size() <= text.size(); ++i) {
    size_t k = 0;
    while (k < lower_needle.size()) {
      const char c = text[i + k];
      if ((c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c) != lower_needle[k]) break;
      ++k;
    }
    if (k == lower_needle.size()) return true;
  }
  return false;
}

// Whether the statement's first word (after whitespace and comments) is `lower_keyword`, in any
// case.
inline bool sqlStartsWithKeyword(std::string_view sql, std::string_view lower_keyword) {
  size_t i = 0;
  if (!skipSqlSpaceAndComments(sql, i) || sql.size() - i < lower_keyword.size()) return false;
  for (size_t k = 0; k < lower_keyword.size(); ++k) {
    const char c = sql[i + k];
    if ((c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c) != lower_keyword[k]) {
      return false;
    }
  }
  const size_t end = i + lower_keyword.size();
  return end == sql.size() || !isSqlIdentCont(sql[end]);
}

// The end of the quoted text that opens at `i` with `quote` (' or "): just past the closing quote,
// or npos when it never closes. A doubled quote stands for one; with `backslash_escapes` (E'...')
// a backslash takes the next byte literally.
inline size_t skipSqlQuoted(std::string_view sql, size_t i, char quote, bool backslash_escapes) {
  for (size_t j = i + 1; j < sql.size(); ++j) {
    if (backslash_escapes && sql[j] == '\\') {
      ++j;
    } else if (sql[j] == quote) {
      if (j + 1 < sql.size() && sql[j + 1] == quote) {
        ++j;
      } else {
        return j + 1;
      }
    }
  }
  return std::string_view::npos;
}

// The length of a dollar-quote delimiter ("$$", "$tag$") that starts at `i`, or 0 if none does.
// "$1" is a parameter, not a delimiter: a tag cannot start with a digit.
inline size_t sqlDollarDelimiterLength(std::string_view sql, size_t i) {
  if (i >= sql.size() || sql[i] != '$') return 0;
  size_t j = i + 1;
  if (j < sql.size() && isSqlIdentStart(sql[j])) {
    ++j;
    while (j < sql.size() && isSqlIdentCont(sql[j]) && sql[j] != '$') ++j;
  }
  return j < sql.size() && sql[j] == '$' ? j + 1 - i : 0;
}

// Where the code resumes after what starts at `i`, when that is text in which no keyword,
// parameter or ';' counts: a string literal ('...', E'...' with backslash escapes), a quoted
// identifier, a dollar-quoted string, a "--" comment or a block comment (nested). Returns `i` when
// none starts there, and sql.size() when it never ends.
inline size_t skipSqlNonCode(std::string_view sql, size_t i) {
  const size_t n = sql.size();
  if (i >= n) return i;
  const char c = sql[i];
  const bool after_word = i > 0 && isSqlIdentCont(sql[i - 1]);
  size_t end = i;
  if (c == '\'' || c == '"') {
    // E'...' takes backslash escapes, unless the E ends a longer word ("name'x'" is no E string).
    const bool escapes = c == '\'' && i > 0 && (sql[i - 1] == 'E' || sql[i - 1] == 'e') &&
                         !(i > 1 && isSqlIdentCont(sql[i - 2]));
    end = skipSqlQuoted(sql, i, c, escapes);
  } else if (c == '-' && i + 1 < n && sql[i + 1] == '-') {
    end = sql.find('\n', i);
  } else if (c == '/' && i + 1 < n && sql[i + 1] == '*') {
    end = skipSqlBlockComment(sql, i);
  } else if (const size_t delimiter = after_word ? 0 : sqlDollarDelimiterLength(sql, i);
             delimiter != 0) {
    const size_t close = sql.find(sql.substr(i, delimiter), i + delimiter);
    end = close == std::string_view::npos ? close : close + delimiter;
  }
  return end == std::string_view::npos ? n : end;
}

}  // namespace shardgate
