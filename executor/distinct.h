// Distinct: SELECT DISTINCT across shards; a row passes the first time its visible values are
// seen (equal as Postgres's equality operators say: 1.0 = 1.00, 'a ' = 'a' for char(n)).
#pragma once

#include <string>
#include <unordered_set>
#include <vector>

#include "executor/memory_budget.h"
#include "executor/row.h"
#include "executor/value.h"

namespace shardgate::executor {

// Appends the equality key of `columns` of `row` (NULLs equal to each other, as DISTINCT and
// GROUP BY treat them) to `out`.
template <typename Row>
Status appendRowKey(const Row& row, const std::vector<uint32_t>& columns,
                    const std::vector<ColumnType>& types, std::string& out) {
  for (uint32_t column : columns) {
    const Cell c = row.cell(column);
    if (!c) {
      out.push_back('N');
      continue;
    }
    out.push_back('V');
    auto key = decodeValue(types[column], *c);
    if (!key.ok()) return std::move(key).error();
    appendEqualityBytes(*key, out);
  }
  return {};
}

class DistinctFilter {
 public:
  DistinctFilter(std::vector<uint32_t> columns, std::vector<ColumnType> types, MemoryBudget* budget)
      : columns_(std::move(columns)), types_(std::move(types)), budget_(budget) {}

  // 0A000 when a column's type cannot be compared by shardgate.
  static Status validate(const std::vector<uint32_t>& columns,
                         const std::vector<ColumnType>& types);

  // True the first time the row's values are seen; the set's growth is charged to the budget.
  template <typename Row>
  Result<bool> firstOccurrence(const Row& row) {
    std::string key;
    Status s = appendRowKey(row, columns_, types_, key);
    if (!s.ok()) return std::move(s).error();
    const size_t cost = key.size() + 48;  // node, hash and string overhead
    if (!seen_.insert(std::move(key)).second) return false;
    Status charged = budget_->charge(cost);
    if (!charged.ok()) return std::move(charged).error();
    return true;
  }

  static std::string describe() { return "Distinct(hash on the client's columns)"; }

 private:
  std::vector<uint32_t> columns_;
  std::vector<ColumnType> types_;
  MemoryBudget* budget_;
  std::unordered_set<std::string> seen_;
};

}  // namespace shardgate::executor
