// What one client session reports to its worker's metrics: each statement's route, shard and
// duration, transactions, errors; and the slow-query log.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/ring_queue.h"
#include "conf/config.h"
#include "planner/router.h"
#include "proxy/metrics.h"

namespace shardgate::proxy {

class ClientSession;

// Lives in its session and runs on its worker's thread. The hot path per statement is a counter
// add, a queue push and pop, two histogram observations and one clock read (at ReadyForQuery; a
// statement's arrival time is the time stamp of the read that brought it).
class SessionMetrics {
 public:
  // `config` is the worker's current config (it changes on reload; read at each statement).
  SessionMetrics(WorkerMetrics& worker, const conf::ConfigPtr& config)
      : worker_(worker), config_(config) {}

  // Login completed.
  void loggedIn(std::string_view database, std::string_view user);
  // The router decided where the next statement (simple Query, or Bind) runs. Statements
  // shardgate answers itself (EXPLAIN (ROUTE), shardgate.* settings) are counted here.
  void routeDecided(const planner::RouteDecision& decision);
  // A statement shardgate answered itself, sent to no shard (route "local").
  void answeredHere();
  // A BEGIN shardgate answered itself: its transaction counts as "local" unless its statements
  // go further. One that shardgate ends itself (no server's ReadyForQuery tells) is counted then.
  void transactionBegunHere();
  void transactionEndedHere() { endTransactionIfIdle('I'); }
  // A client message is being passed to the server of `db`'s shard `shard`; the session read it
  // at `arrival_ns` (uv_hrtime). Counts Query and Execute; starts timing Query, Sync and
  // FunctionCall (each ends with a ReadyForQuery).
  void clientMessage(char type, std::string_view payload, const conf::Database& db, uint32_t shard,
                     uint64_t arrival_ns);
  // Parse messages the session answers itself (routed sessions prepare where they bind): only
  // their text is remembered, for the slow-query log.
  void statementText(char type, std::string_view payload);
  // A server connection was handed to the session (requests sent from now on wait no longer).
  // Times are uv_hrtime nanoseconds (LoopContext::nowNs).
  void serverAcquired(uint64_t now);
  // A ReadyForQuery reached the client; `outstanding` requests are still waiting for theirs.
  void readyForQuery(char transaction_status, uint32_t outstanding, uint64_t now);
  // An ErrorResponse went to the client.
  void countError(std::string_view sqlstate) { worker_.countError(sqlstate); }
  // A statement run outside clientMessage (the multi-shard executor): `shard` is the one shard it
  // ran on, or none for several.
  void countQuery(const conf::Database& db, RouteKind route, std::optional<uint32_t> shard);
  // A multi-shard statement (MultiShardRun), which passes neither clientMessage() nor a server's
  // ReadyForQuery: started (counted; timed from `arrival_ns`, the read that brought it) and
  // finished (its ReadyForQuery, or the end of its part of an extended batch).
  void multiShardStarted(const conf::Database& db, RouteKind route, uint64_t arrival_ns,
                         std::string_view sql);
  void multiShardFinished(char transaction_status, uint64_t now);

 private:
  struct Request {
    uint64_t arrival_ns = 0;
    uint64_t sent_ns = 0;
    ShardCells* shard = nullptr;
    uint32_t shard_index = 0;
    std::string text;    // only with the slow-query log on
    std::string params;  // ... and log_parameters: the Bind's values
  };
  ShardCells& shardCells(const conf::Database& db, uint32_t shard);
  void noteRoute(RouteKind route);
  void logSlow(std::string_view shard, const std::string& text, const std::string& params,
               uint64_t duration_ns);
  void endTransactionIfIdle(char transaction_status);
  bool slowLogOn() const { return config_->general.slow_query_ms != 0; }
  std::string clip(std::string_view text) const;

  WorkerMetrics& worker_;
  const conf::ConfigPtr& config_;
  std::string database_, user_;
  DatabaseCells* database_cells_ = nullptr;
  // Shard cells by shard index, for the database (config snapshot) last seen.
  const conf::Database* cached_db_ = nullptr;
  std::vector<ShardCells*> shard_cells_;
  std::vector<std::string> shard_names_;

  RouteKind route_ = RouteKind::kPassthrough;   // of the statement being sent
  std::optional<RouteKind> transaction_route_;  // the widest route in the open transaction
  uint64_t acquired_ns_ = 0;
  RingQueue<Request> requests_;    // sent, waiting for their ReadyForQuery (oldest first)
  uint64_t multi_arrival_ns_ = 0;  // the multi-shard statement running
  std::string multi_text_;

  // Slow-query log: statement texts as the client prepared them, and the last Bind's.
  std::string unnamed_text_;
  std::unordered_map<std::string, std::string> named_texts_;
  std::string bound_text_;
  std::string bound_params_;
};

// Counts a worker's sessions by state (the worker's periodic sweep).
std::array<int64_t, kClientStates> countClientStates(
    const std::unordered_map<uint64_t, ClientSession*>& sessions);

}  // namespace shardgate::proxy
