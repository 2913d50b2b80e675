// MergeSort: a k-way merge of the shards' sorted row streams (each shard ran the ORDER BY): the
// smallest head row goes next once every shard still running has a row queued. Each shard's
// queue is bounded (wantsMore), so memory does not grow with the result.
#pragma once

#include <deque>
#include <string>
#include <vector>

#include "executor/row_order.h"

namespace shardgate::executor {

class MergeSortState {
 public:
  // Bytes a shard may have queued before wantsMore() asks the caller to stop reading it; a shard
  // with an empty queue is always read, so the merge never waits on a shard it paused.
  static constexpr size_t kShardQueueBytes = 256 * 1024;

  MergeSortState(RowOrder order, size_t shard_count)
      : order_(std::move(order)),
        queues_(shard_count),
        queued_bytes_(shard_count, 0),
        finished_(shard_count, false) {}

  Status push(size_t shard, ShardRow row);
  void finish(size_t shard) { finished_[shard] = true; }
  bool wantsMore(size_t shard) const {
    return queues_[shard].empty() || queued_bytes_[shard] < kShardQueueBytes;
  }
  // The next row in order, if it can be known now: false when some running shard's queue is
  // empty (its next row might be smaller) or every queue is empty.
  bool popNext(ShardRow& out);
  bool exhausted() const;  // every shard finished and every queue empty

  static std::string describe(const std::vector<planner::MergeSortKey>& keys) {
    return "MergeSort(k-way merge of the shards' sorted streams on " +
           RowOrder::describeKeys(keys) + ")";
  }

 private:
  struct Entry {
    ShardRow row;
    DecodedKeys keys;
  };
  RowOrder order_;
  std::vector<std::deque<Entry>> queues_;
  std::vector<size_t> queued_bytes_;
  std::vector<bool> finished_;
};

}  // namespace shardgate::executor
