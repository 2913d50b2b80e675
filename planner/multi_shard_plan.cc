// MultiShardPlan helpers: what a shard statement's text refers to, found once per plan.
#include "planner/multi_shard_plan.h"

namespace shardgate::planner {

namespace {
bool isDigit(char c) {
  return c >= '0' && c <= '9';
}
// scan.l's ident_start / ident_cont (bytes >= 0x80 belong to multibyte identifiers); '$' continues
// an identifier too, so "a$1" is one word, not a parameter.
bool isIdentStart(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
         static_cast<unsigned char>(c) >= 0x80;
}
bool isIdentCont(char c) {
  return isIdentStart(c) || isDigit(c) || c == '$';
}
// Postgres caps parameter numbers at 65535 (a Bind's Int16 count): a longer number is no
// parameter shardgate could bind.
constexpr size_t kMaxParameter = 65535;

// The end of the quoted text that opens at `i` with `quote` (' or "): just past the closing quote,
// or the end of `sql` when it never closes. A doubled quote stands for one; `backslash_escapes`
// (E'...') makes a backslash take the next byte literally.
size_t skipQuoted(std::string_view sql, size_t i, char quote, bool backslash_escapes) {
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
  return sql.size();
}

// The end of the block comment that opens at `i` ("/*"); they nest in Postgres.
size_t skipBlockComment(std::string_view sql, size_t i) {
  int depth = 0;
  size_t j = i;
  while (j + 1 < sql.size()) {
    if (sql[j] == '/' && sql[j + 1] == '*') {
      ++depth;
      j += 2;
    } else if (sql[j] == '*' && sql[j + 1] == '/') {
      j += 2;
      if (--depth == 0) return j;
    } else {
      ++j;
    }
  }
  return sql.size();
}

// The length of a dollar-quote delimiter ("$$", "$tag$") starting at `i`, or 0 if none starts
// there.
size_t dollarDelimiterLength(std::string_view sql, size_t i) {
  size_t j = i + 1;
  if (j < sql.size() && isIdentStart(sql[j])) {
    ++j;
    while (j < sql.size() && isIdentCont(sql[j]) && sql[j] != '$') ++j;
  }
  return j < sql.size() && sql[j] == '$' ? j + 1 - i : 0;
}
}  // namespace

std::vector<bool> referencedParameters(std::string_view sql) {
  std::vector<bool> used;
  size_t i = 0;
  while (i < sql.size()) {
    const char c = sql[i];
    const bool after_word = i > 0 && isIdentCont(sql[i - 1]);
    if (c == '\'' || c == '"') {
      // E'...' (not the end of a longer word such as "name'") takes backslash escapes.
      const bool escapes = c == '\'' && i > 0 && (sql[i - 1] == 'E' || sql[i - 1] == 'e') &&
                           !(i > 1 && isIdentCont(sql[i - 2]));
      i = skipQuoted(sql, i, c, escapes);
    } else if (c == '-' && i + 1 < sql.size() && sql[i + 1] == '-') {
      while (i < sql.size() && sql[i] != '\n') ++i;
    } else if (c == '/' && i + 1 < sql.size() && sql[i + 1] == '*') {
      i = skipBlockComment(sql, i);
    } else if (c == '$' && !after_word && i + 1 < sql.size() && isDigit(sql[i + 1])) {
      size_t n = 0;
      size_t j = i + 1;
      while (j < sql.size() && isDigit(sql[j])) {
        if (n <= kMaxParameter) n = n * 10 + static_cast<size_t>(sql[j] - '0');
        ++j;
      }
      if (n >= 1 && n <= kMaxParameter) {
        if (used.size() < n) used.resize(n, false);
        used[n - 1] = true;
      }
      i = j;
    } else if (const size_t delimiter = c == '$' && !after_word ? dollarDelimiterLength(sql, i) : 0;
               delimiter != 0) {
      // $tag$ ... $tag$: nothing inside is a parameter.
      const size_t close = sql.find(sql.substr(i, delimiter), i + delimiter);
      i = close == std::string_view::npos ? sql.size() : close + delimiter;
    } else {
      ++i;
    }
  }
  return used;
}

}  // namespace shardgate::planner
