// MemoryBudget: the bytes one merge may hold for state that cannot stream (hash aggregate groups,
// DISTINCT sets, rows sorted after aggregation), and the 53200 error past the cap.
#pragma once

#include <cstddef>
#include <string>

#include "common/result.h"

namespace shardgate::executor {

class MemoryBudget {
 public:
  explicit MemoryBudget(size_t limit) : limit_(limit) {}

  // Counts `bytes` more; 53200 once the total passes the cap (the merge then stops).
  Status charge(size_t bytes) {
    used_ += bytes;
    if (used_ <= limit_) return {};
    return Error::make(
        "53200",
        "out of memory: merging this multi-shard query needs more than " + std::to_string(limit_) +
            " bytes",
        "A multi-shard GROUP BY, aggregate, DISTINCT or ORDER BY after aggregation is merged in "
        "shardgate's memory, capped per query by general.max_merge_bytes (" +
            std::to_string(limit_) + " bytes).",
        "Filter on the sharding key to run the query on one shard, return fewer groups or rows, "
        "or raise general.max_merge_bytes.");
  }
  void release(size_t bytes) { used_ = bytes > used_ ? 0 : used_ - bytes; }
  size_t used() const { return used_; }
  size_t limit() const { return limit_; }

 private:
  size_t limit_;
  size_t used_ = 0;
};

}  // namespace shardgate::executor
