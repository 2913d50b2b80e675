// route_microbench: CPU cost of the planner's per-statement work on a cache hit (Google Benchmark):
// the literal scan, a simple-protocol routing and a Bind-time routing of pgbench's keyed SELECT.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "planner/query_router.h"
#include "tests/unit/planner_test_support.h"

namespace shardgate::planner {
namespace {

constexpr std::string_view kPgbenchSelect =
    "SELECT abalance FROM pgbench_accounts WHERE aid = 173045;";

// Statements differing only in their key, as pgbench -M simple sends them.
std::vector<std::string> keyedSelects() {
  std::vector<std::string> out;
  for (int i = 0; i < 64; ++i) {
    out.push_back("SELECT abalance FROM pgbench_accounts WHERE aid = " +
                  std::to_string(100003 * i + 17) + ";");
  }
  return out;
}

// The planner tests' "app" database (conf/demo.toml and more tables) and a router for it, as a
// worker sets it up (one-shard decisions without their reasons).
struct AppRouter {
  AppRouter() { router.setDescribeDecisions(false); }
  const conf::ConfigPtr config = testing::loadTestConfig();
  const conf::Database& db = testing::appDb(config);
  QueryRouter router;
};

constexpr std::string_view kPgbenchPrepared =
    "SELECT abalance FROM pgbench_accounts WHERE aid = $1;";

void BM_LiteralTemplateScan(benchmark::State& state) {
  LiteralTemplate scanner;
  for (auto _ : state) {
    benchmark::DoNotOptimize(scanner.scan(kPgbenchSelect, "Tapp"));
  }
}
BENCHMARK(BM_LiteralTemplateScan);

void BM_RouteSimpleCached(benchmark::State& state) {
  AppRouter app;
  QueryRouter& router = app.router;
  const std::vector<std::string> texts = keyedSelects();
  const SessionRouteContext ctx;
  size_t i = 0;
  for (auto _ : state) {
    Result<RouteDecision> d = router.routeSimple(app.db, texts[i++ % texts.size()], ctx);
    benchmark::DoNotOptimize(d);
  }
  if (router.stats().misses != 1) state.SkipWithError("the template cache missed");
}
BENCHMARK(BM_RouteSimpleCached);

void BM_RouteBound(benchmark::State& state) {
  AppRouter app;
  Result<std::shared_ptr<const QueryAnalysis>> analysis =
      app.router.prepare(app.db, kPgbenchPrepared, {});
  if (!analysis.ok()) {
    state.SkipWithError("prepare failed");
    return;
  }
  std::vector<std::string> keys;
  for (int i = 0; i < 64; ++i) keys.push_back(std::to_string(100003 * i + 17));
  BindParameters params;
  params.values.resize(1);
  const SessionRouteContext ctx;
  size_t i = 0;
  for (auto _ : state) {
    params.values[0] = std::string_view(keys[i++ % keys.size()]);
    Result<RouteDecision> d = app.router.routeBound(app.db, **analysis, params, ctx);
    benchmark::DoNotOptimize(d);
  }
}
BENCHMARK(BM_RouteBound);

// The analysis lookup every Bind of a prepared statement makes (text + parameter types).
void BM_PrepareCached(benchmark::State& state) {
  AppRouter app;
  const std::vector<int32_t> types;
  for (auto _ : state) {
    Result<std::shared_ptr<const QueryAnalysis>> a =
        app.router.prepare(app.db, kPgbenchPrepared, types);
    benchmark::DoNotOptimize(a);
  }
  if (app.router.stats().misses != 1) state.SkipWithError("the analysis cache missed");
}
BENCHMARK(BM_PrepareCached);

}  // namespace
}  // namespace shardgate::planner

BENCHMARK_MAIN();
