// Per-worker metric cells (written lock-free by the worker's thread) and their aggregation into
// Prometheus metric families at scrape time.
#pragma once

#include <prometheus/metric_family.h>

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "backends/pool_metrics.h"
#include "common/relaxed_metrics.h"
#include "planner/query_router.h"

namespace shardgate::proxy {

// How a statement was routed (the `route` label). Append new kinds before kCount and name them
// in routeKindName().
enum class RouteKind : uint8_t {
  kDirect,           // one shard, chosen by the sharding key
  kAny,              // any shard could run it (the session's current one, or the default shard)
  kPassthrough,      // not analysed: a database of one server, or a statement the server judges
                     // (syntax errors, statements in a failed transaction)
  kLocal,            // answered by shardgate itself (EXPLAIN (ROUTE), SET/SHOW shardgate.*)
  kFanOut,           // several shards, rows concatenated
  kFanOutAggregate,  // several shards, aggregates finished by shardgate
  kFanOutSort,       // several shards, a k-way merge of sorted rows (and LIMIT, DISTINCT)
  kMultiWrite,       // INSERT / UPDATE / DELETE on several shards, tags summed
  kBroadcastDdl,     // DDL on every shard
  kCopySplit,        // COPY FROM STDIN split by key
  kCopyFanOut,       // COPY TO STDOUT from several shards
  kCount,
};
inline constexpr size_t kRouteKinds = static_cast<size_t>(RouteKind::kCount);
std::string_view routeKindName(RouteKind kind);

// Client connections by state (the `state` label of shardgate_client_connections).
enum class ClientState : uint8_t {
  kActive,   // holds a server connection, or has a statement or transaction running
  kIdle,     // logged in, nothing running, no server held
  kWaiting,  // waiting for a server connection from a pool
  kLogin,    // startup and authentication
  kCount,
};
inline constexpr size_t kClientStates = static_cast<size_t>(ClientState::kCount);
std::string_view clientStateName(ClientState state);

// Label values of queries without one shard (shardgate_queries_total{shard=...}).
inline constexpr std::string_view kNoShard = "none";      // answered by shardgate
inline constexpr std::string_view kManyShards = "multi";  // run on several shards

// One shard of one database, on one worker.
struct ShardCells {
  std::array<metrics::Counter, kRouteKinds> queries;
  metrics::DurationHistogram duration;  // request sent to the shard until its ReadyForQuery
};

// One database, on one worker.
struct DatabaseCells {
  std::array<metrics::Counter, kRouteKinds> transactions;
};

// Everything one worker measures. The worker's thread is the only writer of every cell; the
// scrape thread reads them. Cells are created lazily (by name, so a reload that adds databases,
// shards or pools just adds cells) and never removed, so references to them stay valid for the
// worker's life. Creation takes mutex_, which only the scrape takes too: lookups of existing
// cells, on the worker thread, need no lock because no other thread changes the maps.
class WorkerMetrics {
 public:
  WorkerMetrics() = default;
  WorkerMetrics(const WorkerMetrics&) = delete;
  WorkerMetrics& operator=(const WorkerMetrics&) = delete;

  // ---- worker thread ----
  DatabaseCells& database(std::string_view name);
  ShardCells& shard(std::string_view database, std::string_view shard);
  // The cells of the pool for (database, user, shard, role); role is "primary" or "replica<i>".
  backends::PoolMetrics& pool(std::string_view database, std::string_view user,
                              std::string_view shard, std::string_view role);
  // An ErrorResponse sent to a client; counted by SQLSTATE class (its first two characters).
  void countError(std::string_view sqlstate);
  // The analysis cache's cumulative statistics (copied in the worker's periodic sweep).
  void noteRouterStats(const planner::QueryRouter::Stats& stats);
  void setClients(const std::array<int64_t, kClientStates>& counts);

  metrics::Counter bytes_received;            // from clients
  metrics::Counter bytes_sent;                // to clients
  metrics::DurationHistogram query_duration;  // a statement's arrival to its ReadyForQuery
  metrics::DurationHistogram pool_wait;
  // Deadlocks broken: clients waiting for each other's pool connections, and through row locks
  // on several shards (each counts its victim).
  metrics::Counter pool_deadlocks;
  metrics::Counter lock_deadlocks;

  // ---- scrape thread ----
  // Sums of the cells of any number of workers, by label values.
  struct Totals {
    std::array<int64_t, kClientStates> clients{};
    // (database, user, shard, role) -> active, idle, connecting, waiting clients
    std::map<std::array<std::string, 4>, std::array<int64_t, 4>> server_connections;
    std::map<std::array<std::string, 3>, uint64_t> queries;       // (database, route, shard)
    std::map<std::array<std::string, 2>, uint64_t> transactions;  // (database, route)
    std::map<std::string, uint64_t> errors;                       // by SQLSTATE class
    std::map<std::array<std::string, 2>, metrics::DurationHistogram::Snapshot>
        shard_duration;  // (database, shard)
    metrics::DurationHistogram::Snapshot query_duration;
    metrics::DurationHistogram::Snapshot pool_wait;
    uint64_t bytes_received = 0;
    uint64_t bytes_sent = 0;
    uint64_t cache_hits = 0;
    uint64_t cache_misses = 0;
    uint64_t pool_deadlocks = 0;
    uint64_t lock_deadlocks = 0;
  };
  void addTo(Totals& totals) const;

 private:
  struct PoolEntry {
    std::array<std::string, 4> labels;  // database, user, shard, role
    backends::PoolMetrics cells;
  };

  mutable std::mutex mutex_;  // creation of cells vs the scrape
  std::map<std::string, std::unique_ptr<DatabaseCells>, std::less<>> databases_;
  // By (database, shard) joined with '\x1f'.
  std::map<std::string, std::unique_ptr<ShardCells>, std::less<>> shards_;
  std::map<std::string, std::unique_ptr<PoolEntry>, std::less<>> pools_;
  std::map<std::string, std::unique_ptr<metrics::Counter>, std::less<>> errors_;
  std::array<metrics::Gauge, kClientStates> clients_;
  metrics::Counter cache_hits_;
  metrics::Counter cache_misses_;
  std::string key_;  // scratch for composite keys
};

// What the background probe found (see proxy/server_probe.h), for the scrape.
struct ProbeResults {
  // (database, shard, role) -> 1 up / 0 down
  std::map<std::array<std::string, 3>, int> server_up;
  // (database, table, shard) -> rows, bytes
  std::map<std::array<std::string, 3>, std::pair<int64_t, int64_t>> tables;
};

// The Prometheus families (names, help, types, labels) of worker totals and probe results.
std::vector<prometheus::MetricFamily> buildFamilies(const WorkerMetrics::Totals& totals,
                                                    const ProbeResults& probes);

}  // namespace shardgate::proxy
