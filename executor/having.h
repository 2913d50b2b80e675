// Having: evaluates a MergeExpression (the HAVING clause taken off the shard query) over merged
// rows, with SQL's three-valued logic and numeric-aware comparisons and arithmetic.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "executor/column_collations.h"
#include "executor/row.h"
#include "executor/value.h"
#include "planner/multi_shard_plan.h"

namespace shardgate::executor {

class HavingFilter {
 public:
  HavingFilter(const planner::MergeExpression* expression, std::vector<ColumnType> column_types,
               std::shared_ptr<const ColumnCollations> collations)
      : expression_(expression),
        types_(std::move(column_types)),
        collations_(std::move(collations)) {}

  // XX000 for a column past the merged row; 0A000 for a node shardgate cannot evaluate.
  static Status validate(const planner::MergeExpression& expression,
                         const std::vector<ColumnType>& column_types);

  // True only when the condition is true (false and NULL drop the row, as in Postgres).
  Result<bool> passes(const MergedRow& row) const;

  static std::string describe(const planner::MergeExpression& expression);

 private:
  const planner::MergeExpression* expression_;
  std::vector<ColumnType> types_;
  std::shared_ptr<const ColumnCollations> collations_;
};

}  // namespace shardgate::executor
