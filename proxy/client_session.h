// One client connection: the startup, authentication and query-forwarding state machine.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "backends/pool.h"
#include "backends/prepared_statements.h"
#include "backends/server_connection.h"
#include "common/ring_queue.h"
#include "common/tcp_connection.h"
#include "conf/config.h"
#include "planner/query_router.h"
#include "proxy/client_auth.h"
#include "proxy/multi_shard_run.h"
#include "proxy/routing_lookups.h"
#include "proxy/session_metrics.h"
#include "proxy/session_settings.h"
#include "proxy/startup_parameters.h"
#include "proxy/wire/frontend_messages.h"

namespace shardgate::proxy {

class Worker;
class AdminConsole;
struct ClientSnapshot;

// States and the transitions each allows:
//   kStartup        → kStartup (SSLRequest answered 'S' and TLS, or 'N'), kAuthenticating,
//                     closed (CancelRequest, bad packet)
//   kAuthenticating → kLoggingIn (credentials accepted), closed (wrong password, bad message)
//   kLoggingIn      → kReady (a server was acquired and brought in line with the client's
//                     settings, and its parameters reported), closed (no server)
//   kReady          → closed (Terminate, disconnect, server lost, protocol violation)
// In kReady the session holds a server connection while a transaction runs (transaction
// pooling) or for its whole life (session pooling, or pinned by a session-level feature), passes
// client messages to it and its replies back.
class ClientSession final : public TcpConnection,
                            public backends::ServerSink,
                            public backends::PoolWaiter,
                            public backends::ConnectionHolder,
                            public MultiShardHost {
 public:
  enum class State { kStartup, kAuthenticating, kLoggingIn, kReady, kClosed };

  ClientSession(Worker& worker, uint64_t id, uint64_t now_ms,
                Transport transport = Transport::kTcp);
  ~ClientSession() override;

  void start();
  uint64_t id() const { return id_; }
  State state() const { return state_; }

  // Refuses the connection at once (too many clients, shutting down).
  // Accepted only to refuse it with `error` once its startup packet has come.
  void refuseAfterStartup(Error error);
  void refuse(const Error& error);
  // A CancelRequest with this session's key arrived.
  void cancelRunningQuery();
  // Called periodically by the worker: the login timeout.
  void sweep(uint64_t now_ms);
  // True when the session holds no open transaction or running query.
  bool idle() const;
  bool waitingForServer() const { return waiting_for_server_; }
  SessionMetrics& metrics() { return metrics_; }
  void terminate(const Error& error);
  // Admin console and reload (proxy/session_control.cc).
  // What SHOW CLIENTS shows of this session; `server` is the connection it holds, if any.
  ClientSnapshot adminSnapshot() const;
  bool adminConsole() const { return admin_ != nullptr; }
  const std::string& databaseName() const { return database_name_; }
  // RESUME: input held by PAUSE is processed.
  void resumeAfterPause();

 protected:
  size_t onData(std::string_view data) override;
  void onDisconnect(int status) override;
  void onWriteDrained() override;
  void onClosed() override;

  // ServerSink
  void onServerBytes(std::string_view bytes) override;
  void onServerReadyForQuery(char transaction_status) override;
  void onServerLost(const Error& error) override;
  bool sinkCongested() const override;
  void onStatementFailed(const std::string& client_name) override;
  void onCloseSkipped(const std::string& client_name,
                      const std::shared_ptr<backends::PreparedStatement>& statement) override;
  void onStatementRejected(const std::shared_ptr<backends::PreparedStatement>& statement) override;
  void onServerCommandComplete(std::string_view tag) override;
  void onServerErrorResponse() override;
  void onServerParameterStatus(std::string_view payload) override;
  void onServerCaughtUp() override;
  void onServerWriteDrained() override;
  backends::ConnectionHolder* holder() override { return this; }

  // PoolWaiter
  void onServerAcquired(backends::ServerConnection* server) override;
  void onServerUnavailable(const Error& error) override;

  // ConnectionHolder (deadlock detection): its own wait for a connection, or its multi-shard
  // statement's.
  void awaitedPools(std::vector<const backends::Pool*>& out) const override;
  uint64_t waitingSinceMs() const override;
  void failWaits(const Error& error) override;
  uint64_t holderId() const override { return id_; }

  // MultiShardHost
  backends::Pool& multiShardPool(uint32_t shard, planner::Role role) override;
  void multiShardSync(backends::ServerConnection* server,
                      std::function<void(Status)> then) override;
  void multiShardOutput(std::string_view bytes) override;
  bool multiShardClientCongested() const override;
  void multiShardFinished(const std::optional<Error>& error) override;
  LoopContext& multiShardLoop() override;
  void multiShardCopyReady() override;
  void multiShardCopyDrained() override;
  backends::ServerConnection* multiShardTakeServer(uint32_t shard, backends::Pool** pool) override;
  void multiShardKeepServer(uint32_t shard, backends::ServerConnection* server,
                            backends::Pool* pool) override;
  void multiShardReturnHeldServer(uint32_t shard, backends::ServerConnection* server,
                                  backends::Pool* pool) override;
  std::string multiShardShardName(uint32_t shard) const override;
  backends::ConnectionHolder* multiShardHolder() override { return this; }

 private:
  size_t handleStartupPhase(std::string_view data);
  // Answers 'S' and starts TLS, or 'N'; false when the session failed (more_input: bytes came
  // after the request).
  bool answerSslRequest(bool more_input);
  void handleStartupMessage(const wire::StartupMessage& startup);
  size_t handleAuthPhase(std::string_view data);
  void authenticated();
  void finishLogin();
  bool loginWithoutServer();
  void reportLogin(const backends::ServerParameters& reported, char transaction_status);
  // dbname=shardgate: the admin console takes over the session (admin users only).
  void startAdminConsole();
  // Before a new transaction (no server held, none open): picks up a reloaded config, and waits
  // while the database is paused. False: the input waits (for RESUME).
  bool readyForNextTransaction(std::string_view data);

  // kReady: frame client messages; get a server first if none is held.
  size_t handleClientMessages(std::string_view data);
  size_t forwardClientMessages(std::string_view data);

  // Routing (a database with several shards, or replicas): where each statement runs.
  struct Target {
    uint32_t shard = 0;
    int replica = -1;  // -1: the primary
    bool operator==(const Target&) const = default;
  };
  size_t routeClientMessages(std::string_view data);
  planner::SessionRouteContext routeContext() const;
  int replicaFor(uint32_t shard, bool primary_fallback);
  Target targetFor(const planner::RouteDecision& decision);
  bool handleDecision(const planner::RouteDecision& decision, std::string_view sql,
                      bool extended_protocol, std::optional<Target>& target);
  Result<planner::RouteDecision> routeBind(std::string_view payload, bool check_count = false);
  // kReady: the server is held and in line; kWait: the message is read again once the session can
  // go on; kRefused: the statement was answered with an error (see moveTo).
  enum class MoveOutcome { kReady, kWait, kRefused };
  MoveOutcome moveTo(const Target& target, bool extended_protocol);
  void failCopyForTerminate();
  void sendOwnQuery(std::string_view sql);
  void sendOwnSync();
  void endDescribeOnlyBatch();
  // An extended batch with a statement for another shard than its part so far (see the .cc).
  bool spreadBatch();
  // Makes what the open batch ran on the held server part of a transaction over shards.
  void joinBatchToTransaction();
  void settleBatchChangesSoFar();
  void spreadImplicitBatch();
  bool endSpreadBatch();
  void forgetTransaction();
  void forgetTransactionRoute();
  void noteRoutedStatement();
  uint64_t statementScope();
  void rememberParse(const wire::Parse& parse);
  // The hot path's Parse: the unnamed statement of an ordinary query (no session effects), its
  // text and types remembered in buffers that keep their capacity. False: it needs the full path.
  bool rememberPlainUnnamedParse(std::string_view payload);
  void ensureUnnamedPrepared();
  void answer(std::string bytes);
  // ParseComplete for a Parse remembered here (routed databases), after what the held server
  // still owes: an error there skips it, and the client then does not have the statement.
  void answerParse(const std::string& name);
  void parseOnServer(const std::shared_ptr<backends::PreparedStatement>& statement,
                     const std::string& name);
  std::optional<Target> parseCheckTarget(const planner::QueryAnalysis& analysis) const;
  bool owesOwnParse(char type, std::string_view payload) const;
  // The ParseComplete of an unnamed Parse whose Bind follows it at once, while it is not known
  // yet whether the shard that prepares it gives it (so that an error there replaces it, as on
  // Postgres), or shardgate must: answered before any reply of shardgate's own.
  void answerPendingUnnamedParse();
  void refuseStatement(const Error& error, bool extended_protocol);
  void answerShardgateSetting(const planner::RouteDecision& decision);
  void answerExplainRoute(const planner::RouteDecision& decision);
  // Routing lookups and shardgate.move_key (proxy/client_session_lookups.cc).
  // kNeedsLookup: true when the session pauses until the lookups answer (the statement is then
  // routed again); false when they cannot help (lookup_wait_.takeError() says why).
  bool awaitLookups(const planner::RouteDecision& decision);
  // A multi-shard plan that merges orders text by the shards' collation, read once per worker in
  // the thread pool (never on the loop: a hung shard would stall every client of the worker).
  // True while the statement waits for it; false when it is known, or when reading it failed
  // (startMultiShard then refuses with lookup_wait_'s error).
  bool awaitCollation(const planner::RouteDecision& decision);
  LookupWait& lookupWait();
  // True when `sql` was a shardgate.move_key call, answered (or being answered) here.
  bool interceptShardgateCall(std::string_view sql);
  size_t failPendingRequests(std::string_view data);
  // Passes one client message to the held server, renaming prepared statements under
  // transaction pooling. Returns false if the session ended.
  bool forwardMessage(char type, std::string_view message, std::string_view payload);
  bool forwardStatementMessage(char type, std::string_view message, std::string_view payload);
  // Makes the held server match this session's settings, then carries on with `then`.
  void syncServer(std::function<void()> then);
  // Makes `server` match this session's settings; `then` runs at once if it already does.
  void syncSettings(backends::ServerConnection* server, std::function<void(Status)> then);

  // Multi-shard statements (see MultiShardRun).
  // Whether the session can start one now; false: it waits (the message stays unread).
  bool readyForMultiShard();
  bool awaitOwedReplies();
  void keepBoundPortal();
  // Starts `decision`'s statement on its shards; `bind` is the client's Bind (extended protocol).
  void startMultiShard(const planner::RouteDecision& decision, const wire::Bind* bind,
                       bool describe);
  // Extended protocol: the Describe / Execute / Close / Sync after a multi-shard Bind. Returns
  // false if the message is not part of that batch (it is then handled as usual).
  // sync_follows: the client's next message, already received, is a Sync.
  bool handleMultiShardBatchMessage(char type, std::string_view payload, bool sync_follows);
  // Execute / Describe / Close of a multi-shard portal kept from an earlier batch (bound_portals_,
  // suspended_portals_); a Bind or Query drops the portal it replaces. False: the message is
  // handled as usual.
  enum class PortalStep { kNotKept, kAnswered, kWait };
  PortalStep continueKeptPortal(char type, std::string_view payload);
  // A message other than its Execute (a Sync, a Flush, another statement) came after a
  // multi-shard portal's Describe: runs it for its columns, keeping its rows for a later Execute
  // (a write is refused instead).
  void describeBoundPortalNow();
  // A Sync shardgate answers itself: ReadyForQuery after whatever the held server still owes,
  // and, outside a transaction block, the end of the batch's portals (as Postgres ends them).
  void answerSync();
  void dropPortals();
  // What another suspended portal may still keep, within general.max_merge_bytes.
  uint64_t suspendedPortalBudget() const;

  // A transaction that spans shards holds one connection per shard: server_ for the shard the
  // last statement ran on, the others parked (see ParkedServer).
  class ParkedServer;
  void park(backends::ServerConnection* server, backends::Pool* pool, uint32_t shard);
  backends::ServerConnection* unpark(uint32_t shard, backends::Pool** pool);
  void onParkedServerLost(ParkedServer* parked, const Error& error);
  // Parks the held server with the transaction's others once it has answered all it owes (its
  // part of an open batch synced first). False: not yet, the caller waits for the replies.
  bool parkHeldServer();
  // COMMIT / ROLLBACK of a transaction with parked connections ends it on each of them in turn,
  // then the client's statement ends it on server_ (or shardgate answers it).
  void endNextParked(std::string sql);
  // A client that left mid-transaction: its parked connections are closed, never reused dirty.
  void closeParked();
  // How a connection the session is done with goes back to its pool once idle: as it is under
  // transaction pooling, reset (DISCARD ALL) when the session kept it and may have left state on
  // it.
  backends::Pool::Release idleRelease() const;
  // A transaction over several shards that failed can only roll back (no savepoint is open to
  // return to): its shards' connections roll back and go back to the pool at once, so that their
  // locks are free from the error on, as a failed Postgres transaction's are. Only a held server
  // that failed itself stays, to answer the rest of the transaction.
  void rollBackFailedTransactionShards();
  // Whether the open transaction spans shards (or failed on a shard other than server_'s).
  bool spreadTransaction() const;
  bool beginsInSpreadBatch(const planner::RouteDecision& decision) const;
  // A BEGIN answered here and not yet sent to any shard (see deferBegin in the .cc).
  bool deferBegin(const planner::RouteDecision& decision, std::string_view sql);
  size_t answerPassThroughTransactionStatement(std::string_view data);
  void failDeferredTransaction();
  void startDeferredTransaction(std::string begin_sql);
  void endTransactionHere(bool failed, bool chain);
  bool beginDeferred() const;
  bool endsDeferredTransaction(const planner::RouteDecision& decision) const;
  std::string transactionJoinSql() const;
  void useDatabase(const conf::User* user, const conf::Database* database);
  void resumeCopyInput();
  // Reading from the client, paused while the server's unsent bytes were over the buffer limit,
  // starts again once they are under it (or the server is gone). True if it restarted.
  bool resumeInputForServer();
  // A statement in such a transaction: COMMIT / ROLLBACK end it on every shard, and so do
  // savepoint statements; in a failed one everything else gets 25P02 (as Postgres answers).
  // kRun: the caller routes the statement as usual; kAnswered: it was answered (or refused) here;
  // kWait: not yet, the message is read again when the session can go on.
  // `statement_text`: the client's text of the statement (the Query's, or the bound statement's).
  enum class SpreadOutcome { kRun, kAnswered, kWait };
  SpreadOutcome spreadStatement(const planner::RouteDecision& decision, bool extended,
                                std::string_view statement_text);
  // spreadStatement's outcome for a statement it must run or answer (a transaction over shards,
  // a BEGIN in a batch shardgate spread, the end of a deferred transaction); kRun for others.
  SpreadOutcome spreadIfNeeded(const planner::RouteDecision& decision, bool extended,
                               std::string_view statement_text);
  SpreadOutcome spreadSavepoint(const planner::RouteDecision& decision, bool extended);
  SpreadOutcome spreadSetting(const planner::RouteDecision& decision, bool extended,
                              std::string_view statement_text);
  // A statement every shard's connection of the transaction must run (a savepoint, a setting):
  // the held connection is parked, then each parked one runs `sql` in turn, and the client's
  // statement is read again. kWait until then; nullopt once all ran it; kAnswered when a shard
  // failed it: the client got the first shard's error, and the transaction has failed, as in
  // Postgres. `rolls_back`: `sql` is a ROLLBACK TO, run again if a late cancel stopped it.
  std::optional<SpreadOutcome> runOnEveryShard(std::string_view sql, bool extended,
                                               bool rolls_back);
  // Runs the statement on the parked connection after `previous` (nullptr: the first).
  void runOnNextParked(const backends::ServerConnection* previous, std::string sql,
                       bool rolls_back);
  // The reported settings (application_name, TimeZone, ...) whose value on the transaction's
  // parked connections differs from what the client saw: noted, and a ParameterStatus each in
  // `reply` (after a statement shardgate ran on every shard, whose own ParameterStatus it read).
  void reportParkedParameters(std::string& reply);
  // A reported setting (ParameterStatus) has a new value in the open transaction: the value the
  // client had before it is kept for a rollback (endReportedChanges).
  void noteReportedInTransaction(const std::string& name, const std::string& value);
  // A savepoint statement succeeded: txn_savepoints_ follows it.
  // changes_mark: the length changes_in_transaction_ has once the settings changed before it
  // are in.
  void noteSavepoint(planner::TransactionAction action, const std::string& name,
                     size_t changes_mark);
  void undoChangesSinceSavepoint();
  // A statement's reply made here (no ReadyForQuery): after BindComplete in the extended
  // protocol (the rest of the batch answered as for a bound statement, an error at its Execute),
  // else with ReadyForQuery.
  void answerStatementHere(std::string reply, bool extended, bool fails = false);
  void maybeReleaseServer();
  // Acts on a statement's session-level effects: pins the session, or records the settings it
  // changes (kept once its transaction commits).
  void applySessionEffects(std::string pin_reason, std::vector<SettingChange> changes);
  // Parse in the extended protocol: a statement's effects happen where it is bound. Pinning
  // features pin now; the settings a SET changes are remembered by statement, by portal at each
  // Bind of it (settingsBound), and count at each Execute of that portal (settingsExecuted).
  void noteParsedEffects(const std::string& name, SessionEffects effects, bool pin_at_bind);
  void settingsBound(std::string_view statement_name, std::string_view portal);
  void settingsExecuted(std::string_view execute_payload);
  void effectsBound(std::string_view statement_name);
  void forgetStatementEffects(const std::string& name);
  // A statement that ends the transaction or acts on a savepoint, bound in a batch: the
  // settings changed before it in the batch are settled by it, those after it are not
  // (expectControl). Without routing (one shard), the statement's first words tell.
  void noteBoundControl(std::string_view query);
  // A simple Query's effects: its settings changes, each statement's apart when the Query also
  // holds transaction or savepoint statements (in their order, for expectControl).
  void applyQueryEffects(SessionEffects& effects);
  // The statement being sent ends the transaction or acts on savepoint `name`: when the server
  // answers it, the settings changed before it in its request settle into the transaction first
  // (onServerCommandComplete).
  void expectControl(planner::TransactionAction action, std::string name, bool transaction_bound);
  // The settings changes of the request ending with ReadyForQuery number `ready_index` that were
  // sent before change entry `before_seq` ran: they join the open transaction.
  void settleChangesOfRequest(uint64_t ready_index, uint64_t before_seq = UINT64_MAX);
  void joinTransactionChanges(std::vector<SettingChange>& changes);
  void runTransactionControl(planner::TransactionAction action, const std::string& name,
                             bool transaction_bound, std::string_view tag);
  void rollBackInRequest();
  // The text and parameter types of the statement a Bind names: the unnamed one, or one the
  // client prepared. False when the client has none of that name.
  bool boundStatement(std::string_view name, const std::string*& query,
                      const std::vector<int32_t>*& types) const;
  // The open transaction ended: committed, its reported settings stay; rolled back, those the
  // client does not have back yet are put back, and ParameterStatus messages appended to `reply`
  // tell it.
  void endTransactionChanges(bool rolled_back, std::string& reply);
  void endReportedChanges(bool rolled_back, std::string& reply);
  void forwardSqlPrepared(std::string_view sql, std::string_view message);
  void settleSettingChanges(char transaction_status);
  void fatal(const Error& error);
  void releaseServer(bool client_left);
  bool transactionPooling() const { return transaction_pooling_ && !pinned_; }

  Worker& worker_;
  uint64_t id_;
  State state_ = State::kStartup;
  uint64_t connected_at_ms_;
  SessionMetrics metrics_;
  bool counted_ = false;
  bool transaction_pooling_ = false;
  bool pinned_ = false;             // a session-level feature holds the server for good
  std::string pin_reason_;          // the feature that pinned it (for errors)
  bool routing_ = false;            // statements are routed (several shards, or replicas)
  bool manage_statements_ = false;  // prepared statements renamed and prepared where they run
  bool unnamed_parse_reply_pending_ = false;  // see answerPendingUnnamedParse

  std::string user_name_;
  std::string database_name_;
  // The config snapshot user_ and database_ point into; a reload swaps it between transactions.
  conf::ConfigPtr config_;
  const conf::User* user_ = nullptr;
  const conf::Database* database_ = nullptr;
  std::unique_ptr<AdminConsole> admin_;  // dbname=shardgate
  bool held_by_pause_ = false;
  uint64_t held_since_ms_ = 0;  // when PAUSE began holding its next statement
  SessionSettings settings_;
  std::unique_ptr<ClientAuthenticator> auth_;
  int32_t cancel_pid_ = 0;
  int32_t cancel_secret_ = 0;
  // Named prepared statements, by the client's names.
  std::unordered_map<std::string, std::shared_ptr<backends::PreparedStatement>> statements_;
  // The statements (by name, "" for the unnamed one) that SET settings, and what they set
  // (pgjdbc sends SET extra_float_digits this way at connect). Usually empty.
  std::unordered_map<std::string, std::vector<SettingChange>> statement_settings_;
  // Portals bound to such a statement, with its changes, until executed.
  std::vector<std::pair<std::string, std::vector<SettingChange>>> bound_settings_;
  // Effects of prepared statements that take hold when they are bound. pins: a routed session's
  // statements that pin it (LISTEN, WITH HOLD cursors, ...), pinned to the connection their Bind
  // goes to (at Parse it may hold another shard's). resets: statements that RESET or DISCARD ALL
  // (they pin too): what each resets, and what the open batch's Binds of them reset, put back at
  // its Sync. Null until such a statement is prepared.
  struct BoundEffects {
    std::unordered_map<std::string, std::string> pins;
    std::unordered_map<std::string, std::pair<bool, std::vector<std::string>>> resets;
    bool all_at_sync = false;
    std::vector<std::string> at_sync;
    bool pending = false;
  };
  std::unique_ptr<BoundEffects> bound_effects_;

  backends::Pool* pool_ = nullptr;
  backends::ServerConnection* server_ = nullptr;
  bool waiting_for_server_ = false;
  bool awaiting_caught_up_ = false;  // a Query waits for the held server's owed replies
  bool syncing_server_ = false;
  // Queries and Syncs sent whose ReadyForQuery has not come back yet.
  uint32_t outstanding_ = 0;
  char transaction_status_ = 'I';
  bool paused_for_server_ = false;
  bool paused_for_copy_ = false;  // COPY rows wait for the shards' connections to drain
  bool terminating_ = false;      // Terminate arrived; the requests before it are still running
  bool release_buffers_when_drained_ = false;  // logged in: free the buffers once all is written

  // Settings changes waiting for their outcome: per statement, by the ordinal of the
  // ReadyForQuery that ends its request (ready_index) and the order they were sent in (seq); then
  // per open transaction.
  struct ChangesInFlight {
    uint64_t ready_index = 0;
    uint64_t seq = 0;
    std::vector<SettingChange> changes;
  };
  RingQueue<ChangesInFlight> changes_in_flight_;
  uint64_t change_entries_sent_ = 0;  // the seq of the next entry
  std::vector<SettingChange> changes_in_transaction_;
  uint64_t ready_sent_ = 0;      // requests sent that end with ReadyForQuery
  uint64_t ready_received_ = 0;  // ReadyForQuery messages received
  bool request_failed_ = false;  // an ErrorResponse since the last ReadyForQuery
  // The request (by the ReadyForQuery that ends it) in whose batch shardgate refused a statement
  // itself: it failed as if the server had (0: none).
  uint64_t refused_request_ = 0;
  // A server's error in the open extended batch: Postgres ignores every message up to the Sync,
  // and so does the session (both message loops). Not an error of an earlier request whose
  // ReadyForQuery is still owed (a failed batch's Sync, with the next batch pipelined behind
  // it): the server runs the open batch after that Sync as usual. (Its part that shardgate ended
  // on a server with a Sync of its own, to move, counts: batch_part_ended_.)
  bool batchFailedOnServer() const {
    return request_failed_ && (batch_open_ || batch_part_ended_) && ready_received_ == ready_sent_;
  }
  bool rollback_seen_ = false;  // a ROLLBACK (of the transaction or to a savepoint) since then
  // Reported settings (application_name, TimeZone, ...) as the client saw them before the open
  // transaction changed them: a rollback shardgate answers, or one on another shard's connection
  // than the SET's, must give them back (endReportedChanges).
  std::vector<std::pair<std::string, std::string>> reported_before_txn_;
  // Given back by a ROLLBACK in the middle of a request: told to the client at its
  // ReadyForQuery, unless the server reported a newer value since (a SET after the ROLLBACK).
  std::vector<std::pair<std::string, std::string>> reported_restored_in_request_;
  std::vector<size_t> savepoint_marks_;  // changes_in_transaction_ sizes at each SAVEPOINT
  // Savepoints made since the open transaction was bound to a shard (those before are in
  // txn_replay_sql_): a shard that joins the transaction makes them too, after the settings
  // changed before each (changes_mark), so that ROLLBACK TO / RELEASE can run on every shard.
  struct TransactionSavepoint {
    std::string name;
    size_t changes_mark = 0;
  };
  std::vector<TransactionSavepoint> txn_savepoints_;
  // COMMIT / ROLLBACK / SAVEPOINT / RELEASE / ROLLBACK TO passed to the held server, by the
  // ordinal of the ReadyForQuery that ends their request: their CommandComplete settles the
  // settings changed before them (seq below changes_seq) and updates savepoint_marks_ and
  // txn_savepoints_; those left at that ReadyForQuery failed or were skipped.
  struct ControlInFlight {
    uint64_t ready_index = 0;
    planner::TransactionAction action = planner::TransactionAction::kNone;
    std::string name;
    uint64_t changes_seq = 0;
    bool transaction_bound = false;  // txn_savepoints_ follows it (else txn_replay_sql_ has it)
  };
  std::vector<ControlInFlight> controls_in_flight_;
  // A statement in a transaction that spans shards that runs on each shard in turn
  // (runOnEveryShard): running, then done (with the first shard's error, if any).
  enum class EveryShardRun : uint8_t { kNone, kRunning, kDone };
  EveryShardRun every_shard_run_ = EveryShardRun::kNone;
  std::unique_ptr<Error> every_shard_error_;

  // Routing state.
  std::optional<Target> current_target_;
  std::optional<conf::ReadPreference> read_preference_override_;  // SET shardgate.read_preference
  // SET LOCAL shardgate.read_preference: until the transaction ends (forgetTransactionRoute).
  std::optional<conf::ReadPreference> read_preference_local_;
  conf::ReadPreference readPreference() const;
  void resetReadPreference();
  bool clientSendsUtf8() const;  // client_encoding is UTF8 (or SQL_ASCII)
  int extraFloatDigitsNow() const;
  Error notUtf8Statement() const;
  std::optional<Error> backslashesReadOtherwise(std::string_view sql) const;
  // What the statement just routed tells about the transaction once it ran (noteRoutedStatement):
  // the few facts of its RouteDecision that matter, not a copy of the whole decision.
  struct PendingRoute {
    bool binds_shard = false;  // kShard: the transaction is bound to that shard
    bool writes = false;
    bool begins_read_only_transaction = false;
    bool resets_session = false;
    bool ends_transaction = false;  // COMMIT / ROLLBACK inside an extended batch
  };
  std::optional<PendingRoute> pending_decision_;
  // Directory / column-order lookups, shardgate.move_key: made on first use (lookupWait()), so
  // that sessions that never need one stay small.
  std::unique_ptr<LookupWait> lookup_wait_;
  bool txn_bound_ = false;  // a statement that needs its shard ran in the open transaction
  bool txn_wrote_ = false;
  bool txn_read_only_ = false;
  std::string txn_begin_sql_;       // how the open transaction began (replayed if it moves)
  std::string resume_transaction_;  // BEGIN to run on the next server before anything else
  std::string txn_replay_sql_;      // shard-independent statements of the unbound transaction
  bool txn_replay_has_savepoint_ = false;  // ... and a SAVEPOINT is among them
  std::string pending_replay_sql_;
  bool skipping_to_sync_ = false;  // a routing error in an extended batch
  bool batch_open_ = false;        // extended messages sent since the last Sync
  // endDescribeOnlyBatch ended the open batch's part on its server: the client's batch goes on
  // (until its Sync), and an error in that part fails it.
  bool batch_part_ended_ = false;
  bool batch_executes_ = false;  // ... among them a Bind or Execute
  // The open batch runs on several shards as one transaction that shardgate began on each (the
  // client's was implicit): it ends at the client's Sync (endSpreadBatch).
  bool batch_spread_ = false;
  bool batch_spread_synced_ = false;  // the current server got its Sync for it
  bool batch_spread_failed_ = false;  // ... and its shards are rolling back
  // The client's own BEGIN ran in the open batch (pgjdbc sends it with the first statement of a
  // transaction): a batch spread over shards is then that transaction, which outlives the Sync.
  bool batch_began_transaction_ = false;
  uint32_t batch_binds_ = 0;          // Binds the open batch sent to its server so far
  std::string unnamed_query_;         // the unnamed statement (prepared where it is bound)
  bool unnamed_effect_free_ = false;  // ... was found free of session effects
  std::vector<int32_t> unnamed_types_;
  uint64_t unnamed_version_ = 0;
  std::string last_bound_text_;

  // Multi-shard statements: the one running, those that finished (freed by the next sweep, never
  // inside their own callbacks), and an extended-protocol one bound but not yet executed.
  std::unique_ptr<MultiShardRun> multi_run_;
  std::vector<std::unique_ptr<MultiShardRun>> finished_multi_runs_;
  struct BoundMultiShard {
    planner::RouteDecision decision;
    wire::Bind bind;
    bool describe = false;
    bool executed = false;
    // Execute's row limit (0: none): the client gets the first max_rows rows, then PortalSuspended
    // if there were that many; the rest is kept (up to general.max_merge_bytes) for the portal's
    // next Executes, and becomes a SuspendedPortal when the run ends.
    int32_t max_rows = 0;
    int32_t rows_sent = 0;
    bool suspended = false;
    std::string row_description;  // as sent to the client (empty: it did not ask)
    std::string rest;             // the DataRow messages past the limit
    bool rest_dropped = false;    // ... larger than general.max_merge_bytes
    uint64_t rest_budget = 0;     // how large `rest` may grow (set at its first row)
    bool keep_all_rows = false;   // run for a Describe (describeBoundPortalNow): no row is sent
    std::string tag_command;      // the result's tag without its row count ("INSERT 0 ")
    // Answered by shardgate itself (the end of a transaction spanning shards): Execute gets this
    // instead of running anything, Describe gets NoData.
    std::optional<std::string> local_reply;
    bool local_reply_fails = false;  // it is an error: the rest of the batch is skipped
  };
  std::unique_ptr<BoundMultiShard> multi_bound_;  // a pointer: idle sessions stay small

  // A multi-shard portal stopped by Execute's row limit: its later Executes get the next rows from
  // here, each part tagged with its own count as Postgres tags them (asyncpg's cursors).
  struct SuspendedPortal {
    std::string name;
    std::string row_description;  // for a Describe of the portal (empty: never sent)
    std::string rows;             // DataRow messages, from offset `next` on not yet sent
    size_t next = 0;
    bool dropped = false;     // the rest was larger than general.max_merge_bytes
    std::string tag_command;  // the tag before its count: "SELECT ", "UPDATE ", "INSERT 0 "
  };
  std::vector<SuspendedPortal> suspended_portals_;  // oldest first
  // A multi-shard portal run to its end by one Execute: Postgres keeps it until the transaction
  // ends (the unnamed one until the next Bind), and answers a later Execute with no rows ("SELECT
  // 0"), or 55000 for a write. The shards no longer have it, so shardgate answers for it.
  struct CompletedPortal {
    std::string name;
    bool writes = false;
    std::string row_description;  // as the client got it (empty: it did not describe it)
  };
  std::vector<CompletedPortal> completed_portals_;  // oldest first
  PortalStep answerCompletedPortal(std::vector<CompletedPortal>::iterator portal, char type);
  // Its next rows (all for max_rows 0), as Postgres answers an Execute of a suspended portal.
  void executeSuspendedPortal(std::vector<SuspendedPortal>::iterator portal, int32_t max_rows);
  static int32_t takeKeptRows(SuspendedPortal& portal, int32_t max_rows, std::string* out);
  bool answerMoveOnKeptPortal(std::string_view sql);
  // Multi-shard portals bound in an earlier batch of the transaction, not executed yet.
  std::vector<std::unique_ptr<BoundMultiShard>> bound_portals_;  // oldest first
  // Routed: the named portals bound in the open transaction, on any shard's server or here. A
  // second Bind of one gets 42P03, as on Postgres, wherever the first went (a server sees only
  // its own). Forgotten at the transaction's end, at their Close, and at ROLLBACK TO.
  std::vector<std::string> named_portals_;
  void notePortalBound(std::string_view portal);
  bool portalBound(std::string_view portal) const;

  std::vector<std::unique_ptr<ParkedServer>> parked_;
  // A COMMIT of a transaction over several shards is under way (see onDisconnect).
  // The statement waiting for a replica may go to the primary instead (prefer_replica).
  bool multi_fallback_to_primary_ = false;  // the same, for the multi-shard run's shards
  bool fallback_to_primary_ = false;
  std::unique_ptr<Error> refusal_;  // refuseAfterStartup
  bool committing_spread_ = false;
  // The open batch ended its failed transaction (COMMIT / ROLLBACK) on the held server.
  bool failed_transaction_ended_in_batch_ = false;
  bool ending_parked_ = false;  // COMMIT / ROLLBACK running on parked connections
  // ... and it failed on one: the client's end gets it. The two errors are pointers because they
  // are rare and an Error is 160 bytes: idle sessions stay small.
  std::unique_ptr<Error> spread_end_error_;

  // Set when no server could be had: the requests already sent fail with it.
  std::unique_ptr<Error> failing_;
  bool failed_batch_ = false;  // an extended batch got its error; the rest waits for Sync
};

}  // namespace shardgate::proxy
