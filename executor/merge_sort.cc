// k-way merge of sorted shard streams (see merge_sort.h).
#include "executor/merge_sort.h"

namespace shardgate::executor {

Status MergeSortState::push(size_t shard, ShardRow row) {
  auto keys = order_.decode(row);
  if (!keys.ok()) return std::move(keys).error();
  queued_bytes_[shard] += row.bytes();
  queues_[shard].push_back(Entry{std::move(row), std::move(*keys)});
  return {};
}

bool MergeSortState::popNext(ShardRow& out) {
  // Few shards: a linear scan over the heads costs less than keeping a heap in order. Ties go to
  // the lower shard, which keeps the merge deterministic.
  size_t best = queues_.size();
  for (size_t shard = 0; shard < queues_.size(); ++shard) {
    if (queues_[shard].empty()) {
      if (!finished_[shard]) return false;
      continue;
    }
    if (best == queues_.size() ||
        order_.compare(queues_[shard].front().keys, queues_[best].front().keys) < 0) {
      best = shard;
    }
  }
  if (best == queues_.size()) return false;
  Entry& head = queues_[best].front();
  queued_bytes_[best] -= std::min(queued_bytes_[best], head.row.bytes());
  out = std::move(head.row);
  queues_[best].pop_front();
  return true;
}

bool MergeSortState::exhausted() const {
  for (size_t shard = 0; shard < queues_.size(); ++shard) {
    if (!finished_[shard] || !queues_[shard].empty()) return false;
  }
  return true;
}

}  // namespace shardgate::executor
