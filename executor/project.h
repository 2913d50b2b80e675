// Project: the client's columns, in the client's order; hidden sort keys and aggregate inputs
// the shards returned for the merge are dropped here.
#pragma once

#include <algorithm>
#include <numeric>
#include <string>
#include <vector>

#include "executor/row.h"

namespace shardgate::executor {

class Projection {
 public:
  // `visible` empty: every merged column as it is.
  Projection(const std::vector<uint32_t>& visible, size_t merged_columns) : columns_(visible) {
    if (columns_.empty()) {
      columns_.resize(merged_columns);
      std::iota(columns_.begin(), columns_.end(), 0u);
    }
    identity_ = columns_.size() == merged_columns;
    for (size_t i = 0; identity_ && i < columns_.size(); ++i) identity_ = columns_[i] == i;
  }

  const std::vector<uint32_t>& columns() const { return columns_; }
  // Every column, in order: a shard row can be forwarded byte for byte.
  bool identity() const { return identity_; }

  void append(const ShardRow& row, std::string& out) const {
    if (identity_) {
      appendFramedDataRow(row.payload(), out);
    } else {
      appendDataRow(row, columns_, out);
    }
  }
  void append(const MergedRow& row, std::string& out) const { appendDataRow(row, columns_, out); }

  static std::string describe(const std::vector<uint32_t>& visible, uint32_t leading_hidden = 0) {
    if (visible.empty() && leading_hidden > 0) {
      return "Project(columns from " + std::to_string(leading_hidden) + " on)";
    }
    if (visible.empty()) return "";
    std::string s = "Project(columns";
    for (uint32_t c : visible) s += " " + std::to_string(c);
    return s + ")";
  }

 private:
  std::vector<uint32_t> columns_;
  bool identity_ = true;
};

}  // namespace shardgate::executor
