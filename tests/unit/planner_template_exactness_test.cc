// The literal-template cache must never route differently from a full parse: thousands of
// generated statements are routed through a warm cache and compared with an uncached parse.
// Also prints what a cached routing costs (benchmark-style, no timing assertions).
#include <gtest/gtest.h>

#include <chrono>
#include <random>

#include "planner/query_router.h"
#include "tests/unit/planner_test_support.h"

namespace shardgate::planner {
namespace {

using testing::describeResult;

// Statement shapes; each {} is replaced by a random value of the kind after it:
// {i} integer, {s} string literal, {f} numeric, {v} any of those or NULL.
const char* const kShapes[] = {
    "SELECT * FROM users WHERE id = {i}",
    "SELECT * FROM users WHERE id = {v}",
    "SELECT * FROM users WHERE id = -{i}",
    "SELECT * FROM users WHERE id = - -{i}",
    "SELECT * FROM users WHERE id = {s}",
    "SELECT * FROM users WHERE id = {s}::bigint",
    "SELECT * FROM users WHERE id = {f}",
    "SELECT * FROM users WHERE id IN ({i}, {i}, {i})",
    "SELECT * FROM users WHERE id = ANY(ARRAY[{i}, {i}])",
    "SELECT * FROM users WHERE id = ANY({s})",
    "SELECT * FROM users WHERE (id = {i} OR id = {i}) AND name = {s}",
    "SELECT * FROM users u JOIN orders o ON o.user_id = u.id WHERE u.id = {i} LIMIT {i}",
    "SELECT * FROM users u JOIN orders o ON true WHERE u.id = {i} AND o.user_id = {i}",
    "SELECT * FROM events WHERE id BETWEEN {i} AND {i}",
    "SELECT * FROM events WHERE id > {i} AND id <= {v}",
    "SELECT * FROM metrics WHERE id < {i}",
    "SELECT * FROM tenants WHERE region = {s}",
    "SELECT * FROM tenants WHERE region IN ({s}, {s})",
    "SELECT * FROM tenants WHERE region > {s} COLLATE \"C\" AND region < {s}",
    "SELECT * FROM warehouses WHERE code = {i}",
    "SELECT * FROM documents WHERE slug = {s}",
    "SELECT * FROM devices WHERE id = {s}",
    "SELECT * FROM accounts WHERE id = {i}",
    "SELECT abalance FROM pgbench_accounts WHERE aid = {i};",
    "UPDATE pgbench_accounts SET abalance = abalance + {i} WHERE aid = {i};",
    "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ({i}, {i}, {i}, {i}, "
    "CURRENT_TIMESTAMP);",
    "INSERT INTO users (id, name) VALUES ({v}, {s}), ({i}, {s})",
    "INSERT INTO users VALUES ({i}, {s}, {s})",
    "UPDATE users SET id = {i} WHERE id = {i}",
    "DELETE FROM users WHERE id = {i} RETURNING *",
    "SELECT * FROM users WHERE id = {i}; SELECT * FROM orders WHERE user_id = {i}",
    "BEGIN; UPDATE users SET name = {s} WHERE id = {i}; COMMIT",
    "EXPLAIN (ROUTE) SELECT * FROM users WHERE id = {i}",
    "SET shardgate.read_preference = {s}",
    "SELECT * FROM users WHERE id = {i} /* {s} */ -- {i}",
    "SELECT {i}::numeric(10, 2), {s}::varchar(3) FROM users WHERE id = {i}",
    "SELECT * FROM users WHERE id = {i} ORDER BY {i} OFFSET {i}",
};

class Generator {
 public:
  explicit Generator(uint32_t seed) : rng_(seed) {}

  std::string fill(std::string_view shape) {
    std::string out;
    for (size_t i = 0; i < shape.size(); ++i) {
      if (shape[i] == '{' && i + 2 < shape.size() && shape[i + 2] == '}') {
        out += value(shape[i + 1]);
        i += 2;
      } else {
        out += shape[i];
      }
    }
    return out;
  }

 private:
  std::string value(char kind) {
    if (kind == 'v') {
      const char kinds[] = {'i', 's', 'f', 'n'};
      kind = kinds[pick(4)];
      if (kind == 'n') return "NULL";
    }
    switch (kind) {
      case 'i': {
        static const char* const kEdges[] = {"0",
                                             "1",
                                             "2147483647",
                                             "2147483648",
                                             "999999",
                                             "1000000",
                                             "500",
                                             "499",
                                             "9223372036854775807",
                                             "9223372036854775808",
                                             "99999999999999999999",
                                             "007"};
        if (pick(3) == 0) return kEdges[pick(std::size(kEdges))];
        return std::to_string(pick(2000000));
      }
      case 'f': {
        static const char* const kNums[] = {"4.0", "1.5", "1e3", ".5", "2.", "12345678901234"};
        return kNums[pick(std::size(kNums))];
      }
      case 's': {
        static const char* const kStrings[] = {"'eu'",
                                               "'us'",
                                               "'uk'",
                                               "'mars'",
                                               "'it''s'",
                                               "'42'",
                                               "' 7 '",
                                               "'abc'",
                                               "'{1,2}'",
                                               "'{3,\"4\"}'",
                                               "'replica'",
                                               "'primary'",
                                               "'z\xc3\xbcrich'",
                                               "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'",
                                               "'{A0EEBC99-9C0B4EF8-BB6D6BB9-BD380A11}'",
                                               "''",
                                               "'9223372036854775808'"};
        return kStrings[pick(std::size(kStrings))];
      }
      default:
        return "?";
    }
  }
  size_t pick(size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng_); }

  std::mt19937 rng_;
};

TEST(PlannerTemplateExactness, TemplateRoutingEqualsParseRouting) {
  const conf::ConfigPtr config = testing::loadTestConfig();
  const conf::Database& db = testing::appDb(config);
  testing::FakeDirectory directory;
  testing::FakeColumns columns;
  QueryRouter cached;
  QueryRouter fresh;
  for (QueryRouter* r : {&cached, &fresh}) {
    r->setDirectoryLookup(&directory);
    r->setColumnOrderProvider(&columns);
  }
  SessionRouteContext contexts[3];
  contexts[1].read_preference = conf::ReadPreference::kReplica;
  contexts[2].in_transaction = true;
  contexts[2].transaction_shard = 1;

  Generator gen(20240611);
  size_t compared = 0;
  for (int round = 0; round < 150; ++round) {
    for (const char* shape : kShapes) {
      const std::string sql = gen.fill(shape);
      const SessionRouteContext& ctx = contexts[round % 3];
      const std::vector<std::string> via_cache =
          describeResult(db, cached.routeSimple(db, sql, ctx));
      const std::vector<std::string> via_parse =
          describeResult(db, fresh.routeSimpleUncached(db, sql, ctx));
      ASSERT_EQ(via_cache, via_parse) << sql;
      ++compared;
    }
  }
  const QueryRouter::Stats s = cached.stats();
  std::cout << "[ exactness] " << compared << " statements; template hits " << s.template_hits
            << ", exact hits " << s.exact_hits << ", misses " << s.misses << "\n";
  EXPECT_GT(s.template_hits, compared * 8 / 10);
}

template <typename Fn>
double nanosPerCall(size_t iterations, Fn&& fn) {
  const auto start = std::chrono::steady_clock::now();
  for (size_t i = 0; i < iterations; ++i) fn(i);
  const auto elapsed = std::chrono::steady_clock::now() - start;
  return std::chrono::duration<double, std::nano>(elapsed).count() /
         static_cast<double>(iterations);
}

TEST(PlannerBenchmark, CachedRoutingCost) {
  const conf::ConfigPtr config = testing::loadTestConfig();
  const conf::Database& db = testing::appDb(config);
  QueryRouter router;
  const SessionRouteContext ctx;
  constexpr size_t kIterations = 200000;
  std::vector<std::string> texts;
  for (size_t i = 0; i < 1024; ++i) {
    texts.push_back("SELECT abalance FROM pgbench_accounts WHERE aid = " +
                    std::to_string(i * 7919 % 100000 + 1) + ";");
  }
  ASSERT_TRUE(router.routeSimple(db, texts[0], ctx).ok());
  size_t shard_sum = 0;
  const double simple_ns = nanosPerCall(kIterations, [&](size_t i) {
    Result<RouteDecision> r = router.routeSimple(db, texts[i % texts.size()], ctx);
    shard_sum += r->shard;
  });

  const std::string update =
      "UPDATE pgbench_accounts SET abalance = abalance + -4711 WHERE aid = 4711;";
  const double update_ns = nanosPerCall(
      kIterations, [&](size_t) { shard_sum += router.routeSimple(db, update, ctx)->shard; });

  Result<std::shared_ptr<const QueryAnalysis>> prepared =
      router.prepare(db, "SELECT abalance FROM pgbench_accounts WHERE aid = $1", {23});
  ASSERT_TRUE(prepared.ok());
  std::vector<std::string> keys;
  for (uint32_t i = 0; i < 1024; ++i) {
    const uint32_t v = i * 7919 % 100000 + 1;
    keys.push_back(std::string{static_cast<char>(v >> 24), static_cast<char>(v >> 16),
                               static_cast<char>(v >> 8), static_cast<char>(v)});
  }
  BindParameters bind;
  bind.formats = {1};
  bind.type_oids = {23};
  bind.values.resize(1);
  const double bound_ns = nanosPerCall(kIterations, [&](size_t i) {
    bind.values[0] = keys[i % keys.size()];
    shard_sum += router.routeBound(db, **prepared, bind, ctx)->shard;
  });

  const double miss_ns = nanosPerCall(2000, [&](size_t i) {
    QueryRouter cold;
    shard_sum += cold.routeSimple(db, texts[i % texts.size()], ctx)->shard;
  });
  std::cout << "[ bench    ] routeSimple, template hit (pgbench SELECT): " << simple_ns
            << " ns/statement\n"
            << "[ bench    ] routeSimple, template hit (pgbench UPDATE): " << update_ns
            << " ns/statement\n"
            << "[ bench    ] routeBound, cached analysis (binary int4 key): " << bound_ns
            << " ns/statement\n"
            << "[ bench    ] routeSimple, cache miss (parse + analyse): " << miss_ns
            << " ns/statement\n"
            << "[ bench    ] (checksum " << shard_sum << ")\n";
  EXPECT_GT(router.stats().template_hits, kIterations);
}

}  // namespace
}  // namespace shardgate::planner
