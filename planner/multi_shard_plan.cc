// MultiShardPlan helpers: what a shard statement's text refers to, found once per plan.
#include "planner/multi_shard_plan.h"

#include <algorithm>

#include "common/sql_text.h"

namespace shardgate::planner {

namespace {
bool isDigit(char c) {
  return c >= '0' && c <= '9';
}
// Postgres caps parameter numbers at 65535 (a Bind's Int16 count): a longer number is no
// parameter shardgate could bind.
constexpr size_t kMaxParameter = 65535;

}  // namespace

std::vector<bool> referencedParameters(std::string_view sql) {
  std::vector<bool> used;
  size_t i = 0;
  while (i < sql.size()) {
    if (const size_t next = skipSqlNonCode(sql, i); next != i) {
      i = next;
    } else if (sql[i] == '$' && i + 1 < sql.size() && isDigit(sql[i + 1]) &&
               !(i > 0 && isSqlIdentCont(sql[i - 1]))) {
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
    } else {
      ++i;
    }
  }
  return used;
}

size_t highestClientParameter(const std::vector<ShardStatement>& statements) {
  size_t highest = 0;
  for (const ShardStatement& s : statements) {
    if (s.params.empty()) {
      highest = std::max(highest, s.referenced_params.size());  // the client's numbering
    } else {
      highest = std::max(highest,
                         static_cast<size_t>(*std::max_element(s.params.begin(), s.params.end())));
    }
  }
  return highest;
}

}  // namespace shardgate::planner
