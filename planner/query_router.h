// QueryRouter: the planner's entry point for the proxy — analysis caches (literal templates for the
// simple protocol, text + parameter types for Parse) in front of the Analyzer and the Router.
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/result.h"
#include "conf/config.h"
#include "planner/literal_template.h"
#include "planner/multi_shard_plan_cache.h"
#include "planner/query_analysis.h"
#include "planner/router.h"

namespace shardgate::planner {

// One per worker thread (not thread-safe): holds the parse/analysis cache.
//
// Simple-protocol statements are cached by their literal template (see LiteralTemplate): a hit
// costs one scan of the text, one hash lookup and the routing itself, and routes exactly as a
// fresh parse would. Texts that cannot be templated, and analyses that depend on a literal's value
// in ways a template cannot express, are cached by their exact text. Every hit is checked against
// the current config (a reloaded config that changes a table's sharding re-analyses the statement),
// so the caches need no flushing on reload.
class QueryRouter {
 public:
  explicit QueryRouter(size_t cache_entries = 4096);
  QueryRouter(const QueryRouter&) = delete;
  QueryRouter& operator=(const QueryRouter&) = delete;

  // Simple protocol: the whole query string (one or more statements).
  Result<RouteDecision> routeSimple(const conf::Database& db, std::string_view sql,
                                    const SessionRouteContext& ctx);

  // Extended protocol: analyse at Parse (cached by text + param types), route at Bind. Errors:
  // parse errors (42601, ...), 42601 for more than one statement (as Postgres says: "cannot insert
  // multiple commands into a prepared statement").
  Result<std::shared_ptr<const QueryAnalysis>> prepare(const conf::Database& db,
                                                       std::string_view sql,
                                                       const std::vector<int32_t>& param_types);
  Result<RouteDecision> routeBound(const conf::Database& db, const QueryAnalysis& analysis,
                                   const BindParameters& params, const SessionRouteContext& ctx);

  // Lookups the proxy fills asynchronously (nullptr: none; the router then answers kNeedsLookup
  // for directory keys, and refuses INSERTs without a column list into sharded tables). The
  // objects must outlive the router or be reset first.
  void setDirectoryLookup(const DirectoryLookup* lookup) { directory_ = lookup; }
  void setColumnOrderProvider(const ColumnOrderProvider* provider) { columns_ = provider; }
  // Whether one-shard decisions carry their reason (RouteInputs::describe; on by default).
  void setDescribeDecisions(bool describe) { describe_ = describe; }

  // The same as routeSimple without any cache: parse, analyse with constants inline, route.
  // (The reference the template cache is tested against.)
  Result<RouteDecision> routeSimpleUncached(const conf::Database& db, std::string_view sql,
                                            const SessionRouteContext& ctx);

  struct Stats {
    uint64_t template_hits = 0;  // served by a template entry
    uint64_t exact_hits = 0;     // served by an exact-text entry
    uint64_t misses = 0;         // parsed and analysed
    size_t entries = 0;
  };
  Stats stats() const;
  void clear();

 private:
  struct Entry {
    std::vector<std::shared_ptr<const QueryAnalysis>> statements;
    bool exact_only = false;  // a template marker: look the text up by its exact bytes
  };
  using Lru = std::list<std::pair<std::string, std::shared_ptr<const Entry>>>;

  // The entry stays in the cache (and alive) until the next insert().
  const Entry* lookup(std::string_view key);
  void insert(std::string key, std::shared_ptr<const Entry> entry);
  static bool matchesConfig(const conf::Database& db, const Entry& entry);
  // Routes a cached entry (matchesConfig holds for it).
  Result<RouteDecision> routeEntry(const conf::Database& db, const Entry& entry,
                                   const LiteralTemplate* literals, const BindParameters* params,
                                   const SessionRouteContext& ctx);
  Result<std::shared_ptr<const Entry>> analyzeText(const conf::Database& db, std::string_view sql,
                                                   const LiteralTemplate* literals,
                                                   const std::vector<int32_t>& param_types);
  std::string& keyFor(char tag, const conf::Database& db, std::string_view text);
  void rememberPrepared(const conf::Database& db, std::string_view sql,
                        const std::vector<int32_t>& param_types, const Entry& entry);

  size_t max_entries_;
  size_t max_query_bytes_ = 64 * 1024;
  Lru lru_;
  // Keys are views of the strings in lru_ (list nodes do not move).
  std::unordered_map<std::string_view, Lru::iterator> index_;
  LiteralTemplate scanner_;
  std::string prefix_;
  std::string key_;
  std::vector<const QueryAnalysis*> statements_;  // reused by routeEntry
  const DirectoryLookup* directory_ = nullptr;
  const ColumnOrderProvider* columns_ = nullptr;
  MultiShardPlanCache plans_;
  // prepare()'s last answer (see there).
  std::shared_ptr<const QueryAnalysis> last_prepared_;
  const conf::Database* last_prepared_db_ = nullptr;
  uint64_t last_prepared_generation_ = 0;
  std::string last_prepared_sql_;
  std::vector<int32_t> last_prepared_types_;
  bool describe_ = true;
  Stats stats_;
};

}  // namespace shardgate::planner
