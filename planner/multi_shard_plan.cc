// MultiShardPlan helpers: what a shard statement's text refers to, found once per plan.
#include "planner/multi_shard_plan.h"

namespace shardgate::planner {

namespace {
bool isDigit(char c) {
  return c >= '0' && c <= '9';
}
bool isIdentifierChar(char c) {
  return isDigit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
// Postgres caps parameter numbers at 65535 (a Bind's Int16 count): a longer number is no
// parameter shardgate could bind.
constexpr size_t kMaxParameter = 65535;
}  // namespace

std::vector<bool> referencedParameters(std::string_view sql) {
  std::vector<bool> used;
  char quote = 0;
  for (size_t i = 0; i < sql.size(); ++i) {
    const char c = sql[i];
    if (quote != 0) {
      if (c == quote) quote = 0;  // a doubled quote reopens at once: the same state
      continue;
    }
    if (c == '\'' || c == '"') {
      quote = c;
    } else if (c == '-' && i + 1 < sql.size() && sql[i + 1] == '-') {
      while (i < sql.size() && sql[i] != '\n') ++i;
    } else if (c == '$' && i + 1 < sql.size() && isDigit(sql[i + 1]) &&
               (i == 0 || !isIdentifierChar(sql[i - 1]))) {
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
      i = j - 1;
    }
  }
  return used;
}

}  // namespace shardgate::planner
