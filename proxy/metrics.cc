// WorkerMetrics: lazily created per-worker cells; their sums become Prometheus families.
#include "proxy/metrics.h"

#include <limits>

namespace shardgate::proxy {

namespace {
constexpr char kKeySeparator = '\x1f';  // never in a database, user or shard name we label with

template <class Map, class Make>
auto& findOrCreate(std::mutex& mutex, Map& map, std::string_view key, Make make) {
  auto it = map.find(key);
  if (it != map.end()) return *it->second;
  std::lock_guard lock(mutex);
  return *map.emplace(std::string(key), make()).first->second;
}

std::array<std::string, 2> splitPair(const std::string& key) {
  size_t at = key.find(kKeySeparator);
  if (at == std::string::npos) return {key, ""};
  return {key.substr(0, at), key.substr(at + 1)};
}

prometheus::ClientMetric::Label label(std::string name, std::string value) {
  return prometheus::ClientMetric::Label{std::move(name), std::move(value)};
}

prometheus::MetricFamily family(std::string name, std::string help, prometheus::MetricType type) {
  prometheus::MetricFamily f;
  f.name = std::move(name);
  f.help = std::move(help);
  f.type = type;
  return f;
}

prometheus::ClientMetric counterMetric(std::vector<prometheus::ClientMetric::Label> labels,
                                       double value) {
  prometheus::ClientMetric m;
  m.label = std::move(labels);
  m.counter.value = value;
  return m;
}

prometheus::ClientMetric gaugeMetric(std::vector<prometheus::ClientMetric::Label> labels,
                                     double value) {
  prometheus::ClientMetric m;
  m.label = std::move(labels);
  m.gauge.value = value;
  return m;
}

prometheus::ClientMetric histogramMetric(std::vector<prometheus::ClientMetric::Label> labels,
                                         const metrics::DurationHistogram::Snapshot& s) {
  prometheus::ClientMetric m;
  m.label = std::move(labels);
  uint64_t cumulative = 0;
  for (size_t i = 0; i < metrics::DurationHistogram::kBuckets; ++i) {
    cumulative += s.counts[i];
    prometheus::ClientMetric::Bucket bucket;
    bucket.cumulative_count = cumulative;
    bucket.upper_bound = i < metrics::kDurationBucketsSeconds.size()
                             ? metrics::kDurationBucketsSeconds[i]
                             : std::numeric_limits<double>::infinity();
    m.histogram.bucket.push_back(bucket);
  }
  m.histogram.sample_count = cumulative;
  m.histogram.sample_sum = static_cast<double>(s.sum_ns) / 1e9;
  return m;
}
}  // namespace

std::string_view routeKindName(RouteKind kind) {
  switch (kind) {
    case RouteKind::kDirect:
      return "direct";
    case RouteKind::kAny:
      return "any";
    case RouteKind::kPassthrough:
      return "passthrough";
    case RouteKind::kLocal:
      return "local";
    case RouteKind::kFanOut:
      return "fan_out";
    case RouteKind::kFanOutAggregate:
      return "fan_out_aggregate";
    case RouteKind::kFanOutSort:
      return "fan_out_sort";
    case RouteKind::kMultiWrite:
      return "multi_write";
    case RouteKind::kBroadcastDdl:
      return "broadcast_ddl";
    case RouteKind::kCopySplit:
      return "copy_split";
    case RouteKind::kCopyFanOut:
      return "copy_fan_out";
    case RouteKind::kCount:
      break;
  }
  return "unknown";
}

std::string_view clientStateName(ClientState state) {
  switch (state) {
    case ClientState::kActive:
      return "active";
    case ClientState::kIdle:
      return "idle";
    case ClientState::kWaiting:
      return "waiting";
    case ClientState::kLogin:
      return "login";
    case ClientState::kCount:
      break;
  }
  return "unknown";
}

// ---- worker thread ---------------------------------------------------------------------------

DatabaseCells& WorkerMetrics::database(std::string_view name) {
  return findOrCreate(mutex_, databases_, name, [] { return std::make_unique<DatabaseCells>(); });
}

ShardCells& WorkerMetrics::shard(std::string_view database, std::string_view shard) {
  key_.assign(database).push_back(kKeySeparator);
  key_.append(shard);
  return findOrCreate(mutex_, shards_, key_, [] { return std::make_unique<ShardCells>(); });
}

backends::PoolMetrics& WorkerMetrics::pool(std::string_view database, std::string_view user,
                                           std::string_view shard, std::string_view role) {
  key_.assign(database).push_back(kKeySeparator);
  key_.append(user).push_back(kKeySeparator);
  key_.append(shard).push_back(kKeySeparator);
  key_.append(role);
  PoolEntry& entry = findOrCreate(mutex_, pools_, key_, [&] {
    auto e = std::make_unique<PoolEntry>();
    e->labels = {std::string(database), std::string(user), std::string(shard), std::string(role)};
    e->cells.wait = &pool_wait;
    return e;
  });
  return entry.cells;
}

void WorkerMetrics::countError(std::string_view sqlstate) {
  std::string_view error_class = sqlstate.substr(0, 2);
  if (error_class.size() < 2) error_class = "XX";
  findOrCreate(mutex_, errors_, error_class, [] {
    return std::make_unique<metrics::Counter>();
  }).add();
}

void WorkerMetrics::noteRouterStats(const planner::QueryRouter::Stats& stats) {
  cache_hits_.set(stats.template_hits + stats.exact_hits);
  cache_misses_.set(stats.misses);
}

void WorkerMetrics::setClients(const std::array<int64_t, kClientStates>& counts) {
  for (size_t i = 0; i < kClientStates; ++i) clients_[i].set(counts[i]);
}

// ---- scrape thread ---------------------------------------------------------------------------

void WorkerMetrics::addTo(Totals& totals) const {
  std::lock_guard lock(mutex_);
  for (size_t i = 0; i < kClientStates; ++i) totals.clients[i] += clients_[i].value();
  for (const auto& [key, entry] : pools_) {
    auto& sums = totals.server_connections[entry->labels];
    sums[0] += entry->cells.active.value();
    sums[1] += entry->cells.idle.value();
    sums[2] += entry->cells.connecting.value();
    sums[3] += entry->cells.waiting_clients.value();
  }
  for (const auto& [key, cells] : shards_) {
    auto [database, shard] = splitPair(key);
    for (size_t r = 0; r < kRouteKinds; ++r) {
      uint64_t n = cells->queries[r].value();
      if (n == 0) continue;  // a route a shard never saw is not a series
      totals.queries[{database, std::string(routeKindName(static_cast<RouteKind>(r))), shard}] += n;
    }
    // The pseudo-shards of local and multi-shard queries have no shard requests of their own.
    if (shard != kNoShard && shard != kManyShards) {
      totals.shard_duration[{database, shard}] += cells->duration.snapshot();
    }
  }
  for (const auto& [name, cells] : databases_) {
    for (size_t r = 0; r < kRouteKinds; ++r) {
      uint64_t n = cells->transactions[r].value();
      if (n == 0) continue;
      totals.transactions[{name, std::string(routeKindName(static_cast<RouteKind>(r)))}] += n;
    }
  }
  for (const auto& [error_class, counter] : errors_) totals.errors[error_class] += counter->value();
  totals.query_duration += query_duration.snapshot();
  totals.pool_wait += pool_wait.snapshot();
  totals.bytes_received += bytes_received.value();
  totals.bytes_sent += bytes_sent.value();
  totals.cache_hits += cache_hits_.value();
  totals.cache_misses += cache_misses_.value();
  totals.pool_deadlocks += pool_deadlocks.value();
  totals.lock_deadlocks += lock_deadlocks.value();
}

std::vector<prometheus::MetricFamily> buildFamilies(const WorkerMetrics::Totals& totals,
                                                    const ProbeResults& probes) {
  using prometheus::MetricType;
  std::vector<prometheus::MetricFamily> out;

  auto clients = family("shardgate_client_connections",
                        "Client connections by state (active, idle, waiting for a server, login).",
                        MetricType::Gauge);
  for (size_t i = 0; i < kClientStates; ++i) {
    clients.metric.push_back(
        gaugeMetric({label("state", std::string(clientStateName(static_cast<ClientState>(i))))},
                    static_cast<double>(totals.clients[i])));
  }
  out.push_back(std::move(clients));

  auto servers = family("shardgate_server_connections",
                        "Connections to shard servers by pool (database, user, shard, role) and "
                        "state (active, idle, connecting).",
                        MetricType::Gauge);
  auto waiting = family("shardgate_pool_waiting_clients",
                        "Clients waiting for a connection of each pool.", MetricType::Gauge);
  static const char* kServerStates[] = {"active", "idle", "connecting"};
  for (const auto& [labels, sums] : totals.server_connections) {
    for (size_t s = 0; s < 3; ++s) {
      servers.metric.push_back(gaugeMetric(
          {label("database", labels[0]), label("user", labels[1]), label("shard", labels[2]),
           label("role", labels[3]), label("state", kServerStates[s])},
          static_cast<double>(sums[s])));
    }
    waiting.metric.push_back(gaugeMetric({label("database", labels[0]), label("user", labels[1]),
                                          label("shard", labels[2]), label("role", labels[3])},
                                         static_cast<double>(sums[3])));
  }
  out.push_back(std::move(servers));
  out.push_back(std::move(waiting));

  auto queries = family("shardgate_queries_total",
                        "Statements run, by database, route kind and shard (simple Query messages "
                        "and extended-protocol Executes).",
                        MetricType::Counter);
  for (const auto& [labels, n] : totals.queries) {
    queries.metric.push_back(counterMetric(
        {label("database", labels[0]), label("route", labels[1]), label("shard", labels[2])},
        static_cast<double>(n)));
  }
  out.push_back(std::move(queries));

  auto transactions = family("shardgate_transactions_total",
                             "Transactions completed (explicit, or a statement in autocommit), by "
                             "database and route kind.",
                             MetricType::Counter);
  for (const auto& [labels, n] : totals.transactions) {
    transactions.metric.push_back(counterMetric(
        {label("database", labels[0]), label("route", labels[1])}, static_cast<double>(n)));
  }
  out.push_back(std::move(transactions));

  auto errors = family("shardgate_errors_total",
                       "ErrorResponses sent to clients (the shards' and shardgate's own), by "
                       "SQLSTATE class.",
                       MetricType::Counter);
  for (const auto& [error_class, n] : totals.errors) {
    errors.metric.push_back(
        counterMetric({label("sqlstate_class", error_class)}, static_cast<double>(n)));
  }
  out.push_back(std::move(errors));

  auto duration = family("shardgate_query_duration_seconds",
                         "Statement duration as the client sees it: from its arrival to its "
                         "ReadyForQuery.",
                         MetricType::Histogram);
  duration.metric.push_back(histogramMetric({}, totals.query_duration));
  out.push_back(std::move(duration));

  auto shard_duration =
      family("shardgate_shard_query_duration_seconds",
             "Time from a request sent to a shard until its ReadyForQuery.", MetricType::Histogram);
  for (const auto& [labels, snapshot] : totals.shard_duration) {
    shard_duration.metric.push_back(
        histogramMetric({label("database", labels[0]), label("shard", labels[1])}, snapshot));
  }
  out.push_back(std::move(shard_duration));

  auto pool_wait = family("shardgate_pool_wait_seconds",
                          "Time a client waited for a server connection from a pool (0 when one "
                          "was idle).",
                          MetricType::Histogram);
  pool_wait.metric.push_back(histogramMetric({}, totals.pool_wait));
  out.push_back(std::move(pool_wait));

  auto deadlocks = family("shardgate_deadlocks_total",
                          "Deadlocks shardgate broke by failing one client's wait with 40P01: "
                          "clients waiting for each other's pool connections (kind pool), or for "
                          "each other's row locks on different shards (kind lock).",
                          MetricType::Counter);
  deadlocks.metric.push_back(
      counterMetric({label("kind", "pool")}, static_cast<double>(totals.pool_deadlocks)));
  deadlocks.metric.push_back(
      counterMetric({label("kind", "lock")}, static_cast<double>(totals.lock_deadlocks)));
  out.push_back(std::move(deadlocks));

  auto single = [&](std::string name, std::string help, MetricType type, double value) {
    auto f = family(std::move(name), std::move(help), type);
    f.metric.push_back(type == MetricType::Counter ? counterMetric({}, value)
                                                   : gaugeMetric({}, value));
    out.push_back(std::move(f));
  };
  single("shardgate_bytes_received_total", "Bytes received from clients.", MetricType::Counter,
         static_cast<double>(totals.bytes_received));
  single("shardgate_bytes_sent_total", "Bytes sent to clients.", MetricType::Counter,
         static_cast<double>(totals.bytes_sent));
  single("shardgate_analysis_cache_hits_total",
         "Statements routed from the analysis cache (no parse).", MetricType::Counter,
         static_cast<double>(totals.cache_hits));
  single("shardgate_analysis_cache_misses_total", "Statements parsed and analysed.",
         MetricType::Counter, static_cast<double>(totals.cache_misses));

  auto up = family("shardgate_server_up",
                   "1 if the shard server answered the last probe (SELECT 1), else 0.",
                   MetricType::Gauge);
  for (const auto& [labels, value] : probes.server_up) {
    up.metric.push_back(gaugeMetric(
        {label("database", labels[0]), label("shard", labels[1]), label("role", labels[2])},
        value));
  }
  out.push_back(std::move(up));

  auto rows = family("shardgate_table_rows",
                     "Rows of each sharded table on each shard (pg_class.reltuples; an exact "
                     "count for small or never analysed tables).",
                     MetricType::Gauge);
  auto bytes = family("shardgate_table_bytes",
                      "Size of each sharded table on each shard, with indexes and TOAST "
                      "(pg_total_relation_size).",
                      MetricType::Gauge);
  for (const auto& [labels, values] : probes.tables) {
    std::vector<prometheus::ClientMetric::Label> l = {
        label("database", labels[0]), label("table", labels[1]), label("shard", labels[2])};
    rows.metric.push_back(gaugeMetric(l, static_cast<double>(values.first)));
    bytes.metric.push_back(gaugeMetric(l, static_cast<double>(values.second)));
  }
  out.push_back(std::move(rows));
  out.push_back(std::move(bytes));
  return out;
}

}  // namespace shardgate::proxy
