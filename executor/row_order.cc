// ORDER BY comparisons for merges (see row_order.h).
#include "executor/row_order.h"

namespace shardgate::executor {

Status RowOrder::validate(const std::vector<planner::MergeSortKey>& keys,
                          const std::vector<ColumnType>& column_types) {
  for (const auto& key : keys) {
    if (key.column >= column_types.size()) {
      return Error::make("XX000", "multi-shard plan sorts on column " +
                                      std::to_string(key.column + 1) + " of a " +
                                      std::to_string(column_types.size()) + "-column result");
    }
    Status s = requireOrderable(column_types[key.column], key.column, "sort on");
    if (!s.ok()) return s;
    if (key.collation_unknown &&
        column_types[key.column].value_class() == ValueClass::kCollatedText) {
      return Error::make("0A000",
                         "ORDER BY a position of SELECT * across shards is not supported for a "
                         "text column",
                         "shardgate merges text in the sorted column's collation, and cannot "
                         "tell which column of * the position names.",
                         "Name the column in ORDER BY instead of its position.");
    }
  }
  return {};
}

int RowOrder::compare(const DecodedKeys& a, const DecodedKeys& b) const {
  for (size_t i = 0; i < keys_.size(); ++i) {
    const auto& key = keys_[i];
    const bool a_null = !a[i].has_value();
    const bool b_null = !b[i].has_value();
    int c = 0;
    if (a_null || b_null) {
      if (a_null && b_null) continue;
      // NULLS FIRST / LAST hold whatever the direction.
      c = a_null ? (key.nulls_first ? -1 : 1) : (key.nulls_first ? 1 : -1);
      return c;
    }
    c = compareKeys(*a[i], *b[i], collations_->of(key.column));
    if (c != 0) return key.descending ? -c : c;
  }
  return 0;
}

std::string RowOrder::describeKeys(const std::vector<planner::MergeSortKey>& keys) {
  std::string s;
  for (const auto& key : keys) {
    if (!s.empty()) s += ", ";
    s += "column " + std::to_string(key.column);
    if (key.descending) s += " DESC";
    // Only the non-default NULLS placement is spelled out, as Postgres's EXPLAIN does.
    if (key.nulls_first != key.descending) s += key.nulls_first ? " NULLS FIRST" : " NULLS LAST";
  }
  return s;
}

}  // namespace shardgate::executor
