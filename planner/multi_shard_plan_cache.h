// MultiShardPlanCache: a worker's recently built multi-shard read plans, so a statement that runs
// again (the same text, shards and LIMIT values) reuses its immutable plan instead of editing and
// deparsing its tree again.
#pragma once

#include <cstddef>
#include <list>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "planner/multi_shard_plan.h"

namespace shardgate::planner {

// One per worker thread (not thread-safe). Keys are built by the router from everything the plan
// depends on: the config generation, the shards, the statement text and the values of parameters
// the plan reads (LIMIT $1). Least recently used plans go first.
class MultiShardPlanCache {
 public:
  explicit MultiShardPlanCache(size_t max_entries = 512) : max_entries_(max_entries) {}
  MultiShardPlanCache(const MultiShardPlanCache&) = delete;
  MultiShardPlanCache& operator=(const MultiShardPlanCache&) = delete;

  std::shared_ptr<const MultiShardPlan> find(std::string_view key) {
    auto it = index_.find(key);
    if (it == index_.end()) return nullptr;
    lru_.splice(lru_.begin(), lru_, it->second);  // most recently used first
    ++hits_;
    return it->second->second;
  }

  void insert(std::string key, std::shared_ptr<const MultiShardPlan> plan) {
    if (max_entries_ == 0 || index_.count(key) > 0) return;
    lru_.emplace_front(std::move(key), std::move(plan));
    index_.emplace(lru_.front().first, lru_.begin());
    while (lru_.size() > max_entries_) {
      index_.erase(lru_.back().first);
      lru_.pop_back();
    }
  }

  void clear() {
    index_.clear();
    lru_.clear();
  }
  size_t size() const { return lru_.size(); }
  size_t hits() const { return hits_; }

 private:
  using Lru = std::list<std::pair<std::string, std::shared_ptr<const MultiShardPlan>>>;
  size_t max_entries_;
  Lru lru_;
  std::unordered_map<std::string_view, Lru::iterator> index_;  // views of lru_'s keys
  size_t hits_ = 0;
};

}  // namespace shardgate::planner
