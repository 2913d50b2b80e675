// Per-worker caches behind the router's DirectoryLookup and ColumnOrderProvider, filled by
// blocking libpq queries on the libuv thread pool; sessions wait for them without blocking the
// loop.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/error.h"
#include "common/result.h"
#include "conf/config.h"
#include "planner/router.h"

namespace shardgate::proxy {

namespace catalog {
class Connection;
}

// A bounded map with least-recently-used eviction.
template <typename V>
class LruCache {
 public:
  explicit LruCache(size_t capacity) : capacity_(capacity) {}
  V* find(const std::string& key) {
    auto it = index_.find(key);
    if (it == index_.end()) return nullptr;
    order_.splice(order_.begin(), order_, it->second);
    return &it->second->second;
  }
  void put(const std::string& key, V value) {
    if (V* existing = find(key)) {
      *existing = std::move(value);
      return;
    }
    if (index_.size() >= capacity_ && !order_.empty()) {
      index_.erase(order_.back().first);
      order_.pop_back();
    }
    order_.emplace_front(key, std::move(value));
    index_[key] = order_.begin();
  }
  void erase(const std::string& key) {
    auto it = index_.find(key);
    if (it == index_.end()) return;
    order_.erase(it->second);
    index_.erase(it);
  }
  size_t size() const { return index_.size(); }

 private:
  size_t capacity_;
  std::list<std::pair<std::string, V>> order_;
  std::unordered_map<std::string, typename std::list<std::pair<std::string, V>>::iterator> index_;
};

// One per worker (loop thread only). The router reads the caches while it routes; a kNeedsLookup
// decision is handed to request(), which queries the shards in the thread pool (one lookup per
// key or table however many sessions wait for it) and calls back on the loop when all answered.
class RoutingLookups final : public planner::DirectoryLookup, public planner::ColumnOrderProvider {
 public:
  using Done = std::function<void(std::optional<Error>)>;
  // Runs a task on every worker's loop, this one's included (for cache invalidation).
  using Broadcast = std::function<void(std::function<void(RoutingLookups&)>)>;

  RoutingLookups(uv_loop_t* loop, Broadcast broadcast, size_t max_entries = 65536);
  ~RoutingLookups() override;
  RoutingLookups(const RoutingLookups&) = delete;
  RoutingLookups& operator=(const RoutingLookups&) = delete;

  // Before a statement is routed: whose statement it is (its database, and the statement that
  // sets its search_path, "" for the server's default), for the cache keys of columnOrder().
  void setSession(const conf::Database& db, std::string_view search_path_statement);

  // planner::DirectoryLookup
  std::optional<Answer> find(const conf::ShardedTable& table,
                             const conf::KeyValue& key) const override;
  // planner::ColumnOrderProvider
  const std::vector<std::string>* columnOrder(std::string_view schema,
                                              std::string_view table) const override;
  // The collation (datcollate, or "icu:" and the ICU locale) the shards of `database` order text
  // by, once a lookup with needs_collation read it (from every shard's primary: they must agree).
  // Kept for the worker's life; nullptr until read.
  const std::string* collation(const std::string& database) const;
  // The config changed (shard servers may have): collations are read again, and one being read
  // now is not kept.
  void forgetCollations();

  // Starts the lookups a kNeedsLookup decision lists, for the session set by setSession().
  // `done` runs on the loop once every one has answered, with the first error if any. Returns a
  // ticket for cancel(); 0 when nothing needed looking up (the caches already answer).
  uint64_t request(const planner::RouteDecision& decision, Done done);
  // shardgate.move_key: sets the directory row of `key`, then drops the key from every worker's
  // cache. The rows themselves are not moved.
  uint64_t moveKey(const conf::Database& db, const conf::ShardedTable& table, conf::KeyValue key,
                   uint32_t shard, Done done);
  // The waiter goes away (its session closed): `done` will not be called.
  void cancel(uint64_t ticket);

  // Drops a directory entry (cache key from directoryKey()) from this worker's cache.
  void forgetDirectoryEntry(const std::string& cache_key);

  struct Stats {
    uint64_t queries = 0;  // lookups run in the thread pool
    size_t directory_entries = 0;
    size_t column_entries = 0;
  };
  Stats stats() const;

 private:
  struct Job;
  struct DirectoryEntry {
    std::optional<uint32_t> shard;
    uint64_t expires_ms = 0;  // 0: until evicted or invalidated
  };
  struct ColumnsEntry {
    std::vector<std::string> columns;
    uint64_t expires_ms = 0;
  };
  struct Ticket {
    size_t remaining = 0;
    std::optional<Error> error;
    Done done;
  };

  std::string directoryKey(const conf::Database& db, const conf::ShardedTable& table,
                           const conf::KeyValue& key) const;
  std::string columnKey(std::string_view db, std::string_view search_path, std::string_view schema,
                        std::string_view table) const;
  uint64_t newTicket(Done done);
  // Adds `ticket` as a waiter of the lookup `flight_key`; true if it is already running.
  bool join(const std::string& flight_key, uint64_t ticket);
  void submit(std::unique_ptr<Job> job);
  static void runJob(uv_work_t* req);
  static void afterJob(uv_work_t* req, int status);
  void finish(Job& job);
  void settle(uint64_t ticket, const std::optional<Error>& error,
              std::vector<std::pair<Done, std::optional<Error>>>& ready);

  uv_loop_t* loop_;
  Broadcast broadcast_;
  mutable LruCache<DirectoryEntry> directory_;
  mutable LruCache<ColumnsEntry> columns_;
  std::map<std::string, std::string> collations_;  // by database name
  uint64_t collations_generation_ = 0;             // bumped by forgetCollations()
  // The session being routed (setSession).
  const conf::Database* db_ = nullptr;
  std::string search_path_;
  mutable std::string scratch_key_;

  uint64_t next_ticket_ = 1;
  std::unordered_map<uint64_t, Ticket> tickets_;
  std::unordered_map<std::string, std::vector<uint64_t>> flights_;  // lookup -> waiting tickets
  // Bumped by every invalidation: a directory answer read before it is not cached.
  uint64_t generation_ = 0;
  // Idle libpq connections by conninfo (used by one job at a time).
  std::map<std::string, std::vector<std::unique_ptr<catalog::Connection>>> idle_;
  size_t running_ = 0;
  uint64_t queries_ = 0;
};

// A session's wait for routing lookups, or for a shardgate.move_key call it made.
class LookupWait {
 public:
  LookupWait() = default;
  ~LookupWait() { cancel(); }
  LookupWait(const LookupWait&) = delete;
  LookupWait& operator=(const LookupWait&) = delete;

  bool waiting() const { return ticket_ != 0; }
  // For a kNeedsLookup decision: true when the session must pause its input until `resume` runs
  // (it then routes the statement again); false when this statement's lookups failed or did not
  // settle, and takeError() says why.
  bool start(RoutingLookups& lookups, const planner::RouteDecision& decision,
             std::function<void()> resume);
  // shardgate.move_key: `reply` gets the outcome on the loop; the session pauses until then.
  void startMoveKey(RoutingLookups& lookups, const conf::Database& db,
                    const conf::ShardedTable& table, conf::KeyValue key, uint32_t shard,
                    std::function<void(std::optional<Error>)> reply);
  Error takeError();
  void cancel();

 private:
  RoutingLookups* lookups_ = nullptr;
  uint64_t ticket_ = 0;
  std::string last_signature_;       // the lookups of the last round
  std::optional<Error> last_error_;  // ... and how it ended
  bool resuming_ = false;            // routing again right after a round ended
  std::optional<Error> error_;
};

// A `SELECT shardgate.move_key('table', 'key', shard)` call (shard: index or name).
struct MoveKeyCall {
  const conf::ShardedTable* table = nullptr;
  conf::KeyValue key;
  uint32_t shard = 0;
};

// nullopt: `sql` is not a shardgate.move_key call. An error: it is one, but its arguments are
// wrong (22023, 42P01 for a table that is not directory-sharded).
std::optional<Result<MoveKeyCall>> parseMoveKeyCall(const conf::Database& db, std::string_view sql);

// The statement that gives a session its search_path ("" when it has the server's default).
std::string_view searchPathStatement(
    const std::map<std::string, std::string, std::less<>>& unreported_settings);

}  // namespace shardgate::proxy
