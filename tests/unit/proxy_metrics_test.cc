// Unit tests for the metric cells and their aggregation into Prometheus families.
#include <gtest/gtest.h>
#include <prometheus/text_serializer.h>

#include <cmath>
#include <string>
#include <thread>

#include "common/relaxed_metrics.h"
#include "proxy/metrics.h"

namespace shardgate::proxy {
namespace {

const prometheus::MetricFamily* findFamily(const std::vector<prometheus::MetricFamily>& families,
                                           const std::string& name) {
  for (const auto& f : families)
    if (f.name == name) return &f;
  return nullptr;
}

// The value of the series of `family` whose labels include all of `labels`.
const prometheus::ClientMetric* findSeries(
    const prometheus::MetricFamily& family,
    const std::vector<std::pair<std::string, std::string>>& labels) {
  for (const auto& m : family.metric) {
    bool all = true;
    for (const auto& [name, value] : labels) {
      bool found = false;
      for (const auto& l : m.label) found |= l.name == name && l.value == value;
      all &= found;
    }
    if (all) return &m;
  }
  return nullptr;
}

TEST(RelaxedMetrics, HistogramBuckets) {
  metrics::DurationHistogram h;
  h.observeNs(0);                // first bucket (<= 100 us)
  h.observeNs(100'000);          // exactly 100 us: still the first (le is inclusive)
  h.observeNs(100'001);          // second
  h.observeNs(120'000'000'000);  // two minutes: +Inf
  auto s = h.snapshot();
  EXPECT_EQ(s.counts[0], 2u);
  EXPECT_EQ(s.counts[1], 1u);
  EXPECT_EQ(s.counts[metrics::DurationHistogram::kBuckets - 1], 1u);
  EXPECT_EQ(s.count(), 4u);
  EXPECT_EQ(s.sum_ns, 100'000u + 100'001u + 120'000'000'000u);
}

TEST(RelaxedMetrics, GaugeAddsAndSets) {
  metrics::Gauge g;
  g.add(3);
  g.add(-5);
  EXPECT_EQ(g.value(), -2);
  g.set(7);
  EXPECT_EQ(g.value(), 7);
}

TEST(WorkerMetrics, CellsAreStableAndSharedByName) {
  WorkerMetrics w;
  ShardCells& a = w.shard("app", "shard0");
  ShardCells& b = w.shard("app", "shard1");
  EXPECT_NE(&a, &b);
  EXPECT_EQ(&a, &w.shard("app", "shard0"));
  EXPECT_EQ(&w.database("app"), &w.database("app"));
  auto& pool = w.pool("app", "alice", "shard0", "primary");
  EXPECT_EQ(&pool, &w.pool("app", "alice", "shard0", "primary"));
  EXPECT_EQ(pool.wait, &w.pool_wait);
}

TEST(WorkerMetrics, TotalsSumWorkers) {
  WorkerMetrics w1, w2;
  w1.shard("app", "shard0").queries[static_cast<size_t>(RouteKind::kDirect)].add(3);
  w2.shard("app", "shard0").queries[static_cast<size_t>(RouteKind::kDirect)].add(4);
  w2.shard("app", "shard1").queries[static_cast<size_t>(RouteKind::kAny)].add(1);
  w1.database("app").transactions[static_cast<size_t>(RouteKind::kDirect)].add(2);
  w1.countError("42P01");
  w2.countError("42601");
  w2.countError("08006");
  w1.countError("");  // malformed: counted as XX
  w1.bytes_received.add(100);
  w2.bytes_received.add(50);
  w1.query_duration.observeNs(1'000'000);
  w2.query_duration.observeNs(3'000'000);
  w1.shard("app", "shard0").duration.observeNs(500'000);
  auto& p1 = w1.pool("app", "alice", "shard0", "primary");
  auto& p2 = w2.pool("app", "alice", "shard0", "primary");
  p1.active.add(2);
  p2.active.add(1);
  p2.idle.add(4);
  w1.setClients({1, 2, 0, 0});
  w2.setClients({0, 3, 1, 0});
  planner::QueryRouter::Stats stats;
  stats.template_hits = 5;
  stats.exact_hits = 1;
  stats.misses = 2;
  w1.noteRouterStats(stats);

  WorkerMetrics::Totals t;
  w1.addTo(t);
  w2.addTo(t);
  EXPECT_EQ((t.queries[{"app", "direct", "shard0"}]), 7u);
  EXPECT_EQ((t.queries[{"app", "any", "shard1"}]), 1u);
  EXPECT_EQ((t.transactions[{"app", "direct"}]), 2u);
  EXPECT_EQ(t.errors["42"], 2u);
  EXPECT_EQ(t.errors["08"], 1u);
  EXPECT_EQ(t.errors["XX"], 1u);
  EXPECT_EQ(t.bytes_received, 150u);
  EXPECT_EQ(t.query_duration.count(), 2u);
  EXPECT_EQ(t.query_duration.sum_ns, 4'000'000u);
  EXPECT_EQ((t.server_connections[{"app", "alice", "shard0", "primary"}][0]), 3);
  EXPECT_EQ((t.server_connections[{"app", "alice", "shard0", "primary"}][1]), 4);
  EXPECT_EQ(t.clients[static_cast<size_t>(ClientState::kIdle)], 5);
  EXPECT_EQ(t.clients[static_cast<size_t>(ClientState::kWaiting)], 1);
  EXPECT_EQ(t.cache_hits, 6u);
  EXPECT_EQ(t.cache_misses, 2u);
}

TEST(WorkerMetrics, FamiliesHaveNamesLabelsAndHistograms) {
  WorkerMetrics w;
  w.shard("app", "shard0").queries[static_cast<size_t>(RouteKind::kDirect)].add(3);
  w.shard("app", std::string(kNoShard)).queries[static_cast<size_t>(RouteKind::kLocal)].add(1);
  w.shard("app", "shard0").duration.observeNs(2'000'000);  // 2 ms
  w.countError("23505");
  w.lock_deadlocks.add();
  w.pool("app", "alice", "shard0", "replica0").connecting.add(1);
  WorkerMetrics::Totals t;
  w.addTo(t);
  ProbeResults probes;
  probes.server_up[{"app", "shard0", "primary"}] = 1;
  probes.server_up[{"app", "shard1", "primary"}] = 0;
  probes.tables[{"app", "users", "shard0"}] = {42, 8192};
  auto families = buildFamilies(t, probes);

  for (const char* name :
       {"shardgate_client_connections", "shardgate_server_connections", "shardgate_queries_total",
        "shardgate_transactions_total", "shardgate_errors_total",
        "shardgate_query_duration_seconds", "shardgate_shard_query_duration_seconds",
        "shardgate_pool_wait_seconds", "shardgate_bytes_received_total",
        "shardgate_bytes_sent_total", "shardgate_analysis_cache_hits_total",
        "shardgate_analysis_cache_misses_total", "shardgate_server_up", "shardgate_table_rows",
        "shardgate_table_bytes", "shardgate_deadlocks_total"}) {
    EXPECT_NE(findFamily(families, name), nullptr) << name;
  }

  const auto* queries = findFamily(families, "shardgate_queries_total");
  ASSERT_NE(queries, nullptr);
  EXPECT_EQ(queries->type, prometheus::MetricType::Counter);
  const auto* direct =
      findSeries(*queries, {{"database", "app"}, {"route", "direct"}, {"shard", "shard0"}});
  ASSERT_NE(direct, nullptr);
  EXPECT_EQ(direct->counter.value, 3);
  const auto* local = findSeries(*queries, {{"route", "local"}, {"shard", "none"}});
  ASSERT_NE(local, nullptr);
  EXPECT_EQ(local->counter.value, 1);
  // Routes a shard never saw are not series.
  EXPECT_EQ(findSeries(*queries, {{"route", "any"}}), nullptr);

  // Pseudo-shards get no shard duration series.
  const auto* shard_duration = findFamily(families, "shardgate_shard_query_duration_seconds");
  ASSERT_NE(shard_duration, nullptr);
  ASSERT_EQ(shard_duration->metric.size(), 1u);
  const auto& h = shard_duration->metric[0].histogram;
  EXPECT_EQ(h.sample_count, 1u);
  EXPECT_DOUBLE_EQ(h.sample_sum, 0.002);
  ASSERT_EQ(h.bucket.size(), metrics::DurationHistogram::kBuckets);
  EXPECT_TRUE(std::isinf(h.bucket.back().upper_bound));
  EXPECT_EQ(h.bucket.back().cumulative_count, 1u);
  // Cumulative: 0 up to 1 ms, 1 from 2.5 ms on.
  for (const auto& b : h.bucket) EXPECT_EQ(b.cumulative_count, b.upper_bound >= 0.0025 ? 1u : 0u);

  const auto* errors = findFamily(families, "shardgate_errors_total");
  ASSERT_NE(findSeries(*errors, {{"sqlstate_class", "23"}}), nullptr);

  const auto* deadlocks = findFamily(families, "shardgate_deadlocks_total");
  ASSERT_NE(deadlocks, nullptr);
  EXPECT_EQ(deadlocks->type, prometheus::MetricType::Counter);
  ASSERT_NE(findSeries(*deadlocks, {{"kind", "lock"}}), nullptr);
  EXPECT_EQ(findSeries(*deadlocks, {{"kind", "lock"}})->counter.value, 1);
  ASSERT_NE(findSeries(*deadlocks, {{"kind", "pool"}}), nullptr);
  EXPECT_EQ(findSeries(*deadlocks, {{"kind", "pool"}})->counter.value, 0);

  const auto* servers = findFamily(families, "shardgate_server_connections");
  const auto* connecting = findSeries(*servers, {{"role", "replica0"}, {"state", "connecting"}});
  ASSERT_NE(connecting, nullptr);
  EXPECT_EQ(connecting->gauge.value, 1);

  const auto* up = findFamily(families, "shardgate_server_up");
  ASSERT_EQ(up->metric.size(), 2u);
  EXPECT_EQ(findSeries(*up, {{"shard", "shard1"}})->gauge.value, 0);
  const auto* rows = findFamily(families, "shardgate_table_rows");
  EXPECT_EQ(findSeries(*rows, {{"table", "users"}, {"shard", "shard0"}})->gauge.value, 42);

  // The text format prometheus-cpp writes (what Prometheus scrapes).
  std::string text = prometheus::TextSerializer().Serialize(families);
  EXPECT_NE(text.find("shardgate_shard_query_duration_seconds_bucket{database=\"app\",shard="
                      "\"shard0\",le=\"+Inf\"} 1"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("shardgate_query_duration_seconds_count 0"), std::string::npos);
}

TEST(WorkerMetrics, ScrapeWhileTheWorkerWrites) {
  // The worker creates cells and counts while a scraper sums: no torn maps, counts only grow.
  WorkerMetrics w;
  std::atomic<bool> done{false};
  std::thread worker([&] {
    for (int i = 0; i < 20000; ++i) {
      w.shard("app", "shard" + std::to_string(i % 50)).queries[0].add();
      w.countError(i % 2 ? "42601" : "08006");
      w.query_duration.observeNs(static_cast<uint64_t>(i));
    }
    done = true;
  });
  uint64_t last = 0;
  while (!done) {
    WorkerMetrics::Totals t;
    w.addTo(t);
    uint64_t total = 0;
    for (const auto& [labels, n] : t.queries) total += n;
    EXPECT_GE(total, last);
    last = total;
  }
  worker.join();
  WorkerMetrics::Totals t;
  w.addTo(t);
  uint64_t total = 0;
  for (const auto& [labels, n] : t.queries) total += n;
  EXPECT_EQ(total, 20000u);
  EXPECT_EQ(t.query_duration.count(), 20000u);
}

}  // namespace
}  // namespace shardgate::proxy
