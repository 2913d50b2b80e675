// RowOrder: compares rows by an ORDER BY (columns, DESC, NULLS FIRST/LAST) as Postgres orders
// them; sort keys are decoded once per row.
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

using DecodedKeys = std::vector<std::optional<ValueKey>>;  // nullopt: NULL

class RowOrder {
 public:
  RowOrder() = default;
  RowOrder(std::vector<planner::MergeSortKey> keys, std::vector<ColumnType> column_types,
           std::shared_ptr<const ColumnCollations> collations)
      : keys_(std::move(keys)),
        types_(std::move(column_types)),
        collations_(std::move(collations)) {}

  // 0A000 for a sort column of a type shardgate cannot order, or of text in a collation it cannot
  // tell (MergeSortKey::collation_unknown); XX000 for a column past the row.
  static Status validate(const std::vector<planner::MergeSortKey>& keys,
                         const std::vector<ColumnType>& column_types);

  template <typename Row>
  Result<DecodedKeys> decode(const Row& row) const {
    DecodedKeys out;
    out.reserve(keys_.size());
    for (const auto& key : keys_) {
      const Cell c = row.cell(key.column);
      if (!c) {
        out.emplace_back(std::nullopt);
        continue;
      }
      auto v = decodeValue(types_[key.column], *c);
      if (!v.ok()) return std::move(v).error();
      out.emplace_back(std::move(*v));
    }
    return out;
  }
  int compare(const DecodedKeys& a, const DecodedKeys& b) const;
  bool empty() const { return keys_.empty(); }

  static std::string describeKeys(const std::vector<planner::MergeSortKey>& keys);

 private:
  std::vector<planner::MergeSortKey> keys_;
  std::vector<ColumnType> types_;
  std::shared_ptr<const ColumnCollations> collations_;
};

}  // namespace shardgate::executor
