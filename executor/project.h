// Project: the client's columns, in the client's order; hidden sort keys and aggregate inputs
// the shards returned for the merge are dropped here.
#pragma once

#include <algorithm>
#include <numeric>
#include <optional>
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
    // The last columns in order (SELECT * behind hidden sort keys): the row's tail is copied whole.
    const size_t lead = merged_columns - columns_.size();
    if (!identity_ && !columns_.empty() && merged_columns > columns_.size()) {
      bool tail = true;
      for (size_t i = 0; tail && i < columns_.size(); ++i) tail = columns_[i] == lead + i;
      if (tail) tail_from_ = lead;
    }
  }

  const std::vector<uint32_t>& columns() const { return columns_; }
  // Every column, in order: a shard row can be forwarded byte for byte.
  bool identity() const { return identity_; }

  void append(const ShardRow& row, std::string& out) const {
    if (identity_) {
      appendFramedDataRow(row.payload(), out);
    } else if (tail_from_ && row.size() > *tail_from_) {
      const std::string_view tail = row.columnsFrom(*tail_from_);
      const auto length = static_cast<uint32_t>(4 + 2 + tail.size());
      const auto count = static_cast<uint16_t>(columns_.size());
      const char header[7] = {'D',
                              static_cast<char>(length >> 24),
                              static_cast<char>(length >> 16),
                              static_cast<char>(length >> 8),
                              static_cast<char>(length),
                              static_cast<char>(count >> 8),
                              static_cast<char>(count)};
      out.append(header, sizeof header);
      out.append(tail);
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
  std::optional<size_t> tail_from_;  // columns_ is merged columns tail_from_.. in order
};

}  // namespace shardgate::executor
