// Router: evaluates QueryAnalyses with the statement's literal and parameter values and the
// session's state, and decides where the statement goes (RouteDecision).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "conf/config.h"
#include "planner/literal_template.h"
#include "planner/multi_shard_plan.h"
#include "planner/multi_shard_plan_cache.h"
#include "planner/query_analysis.h"

namespace shardgate::planner {

// What the session knows about itself when a statement arrives.
struct SessionRouteContext {
  conf::ReadPreference read_preference = conf::ReadPreference::kPrimary;
  bool in_transaction = false;  // an explicit transaction block is open
  bool transaction_wrote = false;
  bool transaction_read_only = false;         // BEGIN READ ONLY / SET TRANSACTION READ ONLY
  std::optional<uint32_t> transaction_shard;  // the shard the open transaction is bound to
  // The proxy can hold a connection per shard in one transaction: a statement for another shard
  // than transaction_shard joins the transaction there instead of being refused.
  bool transaction_may_span_shards = false;
  // The client's client_encoding sends text as the shards store it (see
  // requireKeyInServerEncoding).
  bool client_utf8 = true;
};

// The values of an extended-protocol Bind, with the parameter types from Parse.
struct BindParameters {
  std::vector<std::optional<std::string_view>> values;  // nullopt: NULL
  std::vector<int16_t> formats;  // Bind's format codes: none (all text), one (for all), or one each
  std::vector<int32_t> type_oids;  // from Parse; 0 or missing: unspecified
};

enum class Role { kPrimary, kReplica };

// A key of a directory-sharded table whose shard the router does not know yet.
struct DirectoryKeyRequest {
  const conf::ShardedTable* table = nullptr;  // points into the Database passed to the router
  conf::KeyValue key;
  // An INSERT brings the key and the directory has no row for it, under fallback "hash": the proxy
  // records the hash shard in the directory (unless another row won the race) before routing
  // again, so that every worker and every later statement agree on the key's shard.
  bool place = false;
};

// A table whose column order is needed (INSERT without a column list).
struct ColumnOrderRequest {
  std::string schema;  // as written in the statement (empty: unqualified, resolve by search_path)
  std::string table;
};

struct RouteDecision {
  enum class Kind {
    kShard,             // run the statement, unchanged, on `shard`
    kAnyShard,          // any shard can run it (the proxy picks one)
    kExplainRoute,      // EXPLAIN (ROUTE): answer `explain_lines` as rows, run nothing
    kShardgateSetting,  // SET / SHOW / RESET shardgate.*: the proxy answers it
    kNeedsLookup,       // look up `directory_lookups` / `column_order_lookups`, then route again
    kMultiShard,        // run `multi` on several shards and merge (see MultiShardPlan)
  };
  Kind kind = Kind::kAnyShard;
  uint32_t shard = 0;  // kShard
  Role role = Role::kPrimary;
  bool primary_fallback = false;  // kReplica under prefer_replica: the primary may serve it when
                                  // no replica is usable
  bool writes = false;            // for transaction_wrote tracking
  bool begins_read_only_transaction = false;  // BEGIN READ ONLY / SET TRANSACTION READ ONLY seen
  TransactionAction transaction = TransactionAction::kNone;  // of the (last) statement
  bool chain = false;  // COMMIT / ROLLBACK AND CHAIN: the next transaction begins at once
  bool several_statements = false;  // a simple query of more than one statement
  bool start_transaction = false;   // the BEGIN is spelt START TRANSACTION (its tag)
  std::string savepoint_name;       // SAVEPOINT / RELEASE / ROLLBACK TO sent as a query of its own
  bool resets_session = false;      // RESET ALL / DISCARD ALL: shardgate.* settings reset too
  bool changes_setting = false;     // SET / RESET of a server setting (it reaches one connection)
  // The query is one SET / RESET / SET CONSTRAINTS statement: its CommandComplete tag (a
  // transaction over several shards runs it on each of them).
  std::string setting_tag;
  std::vector<std::string> explain_lines;  // kExplainRoute
  // kShardgateSetting: the lower-case name, and for kSet the validated value.
  SettingAction setting_action = SettingAction::kNone;
  std::string setting_name, setting_value;
  bool setting_local = false;  // SET LOCAL
  // kNeedsLookup
  std::vector<DirectoryKeyRequest> directory_lookups;
  std::vector<ColumnOrderRequest> column_order_lookups;
  bool needs_collation = false;  // the shards' collation, which a merge orders text by
  // kMultiShard
  std::shared_ptr<const MultiShardPlan> multi;
  std::string reason;  // one line: "users.id = 42 -> shard1" (for logs and EXPLAIN)
};

// The shard of directory-sharded keys, as far as the proxy has looked them up (a per-worker cache
// filled by asynchronous queries of conf::DirectoryConfig::table on its shard's primary).
class DirectoryLookup {
 public:
  struct Answer {
    std::optional<uint32_t> shard;  // nullopt: the directory has no row for the key
  };
  virtual ~DirectoryLookup() = default;
  // nullopt: not looked up yet (the router then answers kNeedsLookup listing the key).
  virtual std::optional<Answer> find(const conf::ShardedTable& table,
                                     const conf::KeyValue& key) const = 0;
};

// The column order of tables, as far as the proxy has read it from the catalog (attnum order of
// the columns that are not dropped).
class ColumnOrderProvider {
 public:
  virtual ~ColumnOrderProvider() = default;
  // nullptr: not known yet (the router then answers kNeedsLookup listing the table).
  virtual const std::vector<std::string>* columnOrder(std::string_view schema,
                                                      std::string_view table) const = 0;
};

// Where the values of one routing come from.
struct RouteInputs {
  const LiteralTemplate* literals = nullptr;  // the scan of the text (for ValueRef::kLiteral)
  const BindParameters* params = nullptr;     // extended protocol
  const DirectoryLookup* directory = nullptr;
  const ColumnOrderProvider* columns = nullptr;
  MultiShardPlanCache* plans = nullptr;  // multi-shard read plans built before (nullptr: none)
  // Whether one-shard decisions carry their reason. Building it (key values shown as SQL
  // literals, table labels) costs more than the routing itself, and the proxy shows it nowhere but
  // in EXPLAIN (ROUTE), which describes itself regardless; errors always name their conditions.
  bool describe = true;
};

// Routes the statements of one query string (one for the extended protocol). Several statements
// must all go to one shard (or any). Errors: 0A000 for statements that need several shards, or a
// shard other than the transaction's; 22023 (no shard for an inserted key, bad shardgate.*
// value), 22P02 / 22P03 / 22003 (key values Postgres would reject too), 23502 (NULL key in an
// INSERT), 42704 (unknown shardgate.* setting).
Result<RouteDecision> routeStatements(const conf::Database& db,
                                      const std::vector<const QueryAnalysis*>& statements,
                                      const RouteInputs& inputs, const SessionRouteContext& ctx);

// Whether the config facts a (cached) analysis relied on still hold for `db`.
bool analysisMatchesConfig(const conf::Database& db, const QueryAnalysis& analysis);

// A one-line description of a decision for logs and golden tests:
// "shard1 replica read: users.id = 42 -> shard1".
std::string describeDecision(const conf::Database& db, const RouteDecision& d);

// Shard i's name ("shard1"; "#7" if i is out of range).
std::string shardName(const conf::Database& db, uint32_t shard);

}  // namespace shardgate::planner
