// ClientSession's transactions that span shards: the connections parked while other shards run,
// the statements every shard of the transaction runs (savepoints, settings), and its end on each.
#include <algorithm>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/ascii.h"
#include "proxy/client_session.h"
#include "proxy/client_session_internal.h"
#include "proxy/session_features.h"
#include "proxy/wire/backend_messages.h"
#include "proxy/wire/framing.h"
#include "proxy/wire/frontend_messages.h"
#include "proxy/worker.h"

namespace shardgate::proxy {

namespace {

// The statement that does `action` to savepoint `name`.
std::string savepointSql(planner::TransactionAction action, std::string_view name) {
  using Action = planner::TransactionAction;
  const char* verb = action == Action::kSavepoint ? "SAVEPOINT "
                     : action == Action::kRelease ? "RELEASE SAVEPOINT "
                                                  : "ROLLBACK TO SAVEPOINT ";
  return verb + quoteIdentifier(name);
}

}  // namespace

void ClientSession::park(backends::ServerConnection* server, backends::Pool* pool, uint32_t shard) {
  parked_.push_back(std::make_unique<ParkedServer>(*this, server, pool, shard));
}

backends::ServerConnection* ClientSession::unpark(uint32_t shard, backends::Pool** pool) {
  for (auto it = parked_.begin(); it != parked_.end(); ++it) {
    if ((*it)->shard != shard || (*it)->server == nullptr) continue;
    backends::ServerConnection* server = (*it)->server;
    *pool = (*it)->pool;
    server->detach();
    parked_.erase(it);
    return server;
  }
  return nullptr;
}

void ClientSession::onParkedServerLost(ParkedServer* parked, const Error& error) {
  const uint32_t shard = parked->shard;
  std::erase_if(parked_, [parked](const auto& p) { return p.get() == parked; });
  // That shard's part of the transaction is gone: the transaction cannot commit any more.
  Error e = error;
  e.detail = "the connection to " + planner::shardName(*database_, shard) +
             " broke inside a transaction that spans shards";
  fatal(e);
}

void ClientSession::closeParked() {
  for (auto& parked : parked_) {
    if (parked->server == nullptr) continue;
    parked->pool->release(parked->server, backends::Pool::Release::kClose, context().nowMs());
  }
  parked_.clear();
}

backends::Pool::Release ClientSession::idleRelease() const {
  return transactionPooling() ? backends::Pool::Release::kClean : backends::Pool::Release::kReset;
}

void ClientSession::rollBackFailedTransactionShards() {
  // Not while something else drives the parked connections or may still need them: the end of
  // the transaction, a statement every shard runs, a multi-shard statement, an extended batch
  // (its Sync ends what it spread), or an open savepoint a ROLLBACK TO could return to.
  if (transaction_status_ != 'E' || parked_.empty() || ending_parked_ || committing_spread_ ||
      every_shard_run_ != EveryShardRun::kNone || multi_run_ || batch_open_ || batch_spread_ ||
      !txn_savepoints_.empty() || !savepoint_marks_.empty() || txn_replay_has_savepoint_) {
    return;
  }
  std::vector<std::unique_ptr<ParkedServer>> parked = std::move(parked_);
  parked_.clear();
  for (auto& p : parked) {
    if (p->server == nullptr) continue;
    if (p->server->owesReplies()) {  // not expected of a parked connection: not to be trusted
      p->server->detach();
      p->pool->release(p->server, backends::Pool::Release::kClose, context().nowMs());
      continue;
    }
    rollBackAndRelease(p->server, p->pool, idleRelease());
  }
  // The held connection too, when the error came from another shard's (a multi-shard statement's,
  // or a statement every shard ran): its part is still open. One that failed itself is kept: its
  // locks are free already, and it answers the rest of the transaction as Postgres words it. (A
  // session that keeps its server, session pooling, keeps it.)
  if (server_ != nullptr && transactionPooling() && server_->transactionStatus() == 'T' &&
      !server_->owesReplies() && outstanding_ == 0 && !syncing_server_) {
    backends::ServerConnection* server = server_;
    server_ = nullptr;
    current_target_.reset();
    rollBackAndRelease(server, pool_, idleRelease());
  }
}

// What a shard joining the open transaction runs first: BEGIN as the client wrote it, what ran
// before the transaction was bound to a shard, and the settings changed in it since (they hold on
// the shards that join it too).
std::string ClientSession::transactionJoinSql() const {
  std::string sql =
      (txn_begin_sql_.empty() ? std::string("BEGIN") : txn_begin_sql_) + txn_replay_sql_;
  auto savepoint = txn_savepoints_.begin();
  const auto savepoints_up_to = [&](size_t changes) {
    for (; savepoint != txn_savepoints_.end() && savepoint->changes_mark <= changes; ++savepoint) {
      sql += "\n; SAVEPOINT " + quoteIdentifier(savepoint->name);
    }
  };
  for (size_t i = 0; i < changes_in_transaction_.size(); ++i) {
    savepoints_up_to(i);
    const SettingChange& change = changes_in_transaction_[i];
    switch (change.kind) {
      case SettingChange::Kind::kSet:
      case SettingChange::Kind::kLocal:
        sql += "\n; " + change.statement;
        break;
      case SettingChange::Kind::kReset:
        sql += "\n; RESET " + change.name;
        break;
      case SettingChange::Kind::kResetAll:
        sql += "\n; RESET ALL";
        break;
    }
  }
  savepoints_up_to(SIZE_MAX);
  return sql;
}

// A BEGIN in a batch that shardgate already runs as its own transaction over shards (a
// multi-shard portal was bound while the batch's server was still held): spreadStatement refuses
// it, as it does once the batch ran on both shards. Run on the held server, it would only warn,
// and the client's transaction would commit at the batch's Sync.
bool ClientSession::beginsInSpreadBatch(const planner::RouteDecision& decision) const {
  return batch_spread_ && decision.transaction == planner::TransactionAction::kBegin;
}

// BEGIN on its own in a simple query, outside a transaction, with no shard connection held (as
// under transaction pooling between transactions): answered here, and sent to a shard only with
// the transaction's first statement, on the shard that statement needs (resume_transaction_,
// which onServerAcquired sends first in the same write). The BEGIN costs no round trip of its
// own, and no ROLLBACK when the first statement needs another shard than the last one used.
// On a primary, Postgres fails a BEGIN only for its syntax, which is not routed here; a replica
// also refuses SERIALIZABLE: a BEGIN READ ONLY that may go to one is not deferred (its error,
// from an internal query, would not reach the client, and the transaction would not begin).
// The transaction's start (now(), xact_start) is when the first statement reaches its shard.
bool ClientSession::deferBegin(const planner::RouteDecision& decision, std::string_view sql) {
  if (decision.transaction != planner::TransactionAction::kBegin ||
      decision.kind != planner::RouteDecision::Kind::kAnyShard ||
      decision.role != planner::Role::kPrimary || decision.several_statements ||
      transaction_status_ != 'I' || server_ != nullptr || waiting_for_server_ || batch_open_ ||
      !transactionPooling() || state_ != State::kReady) {
    return false;
  }
  metrics_.transactionBegunHere();  // (the shard that runs the transaction is sent it uncounted)
  startDeferredTransaction(std::string(sql));
  txn_read_only_ = decision.begins_read_only_transaction;
  std::string reply;
  wire::CommandComplete{decision.start_transaction ? "START TRANSACTION" : "BEGIN"}.encode(reply);
  answerStatementHere(std::move(reply), /*extended=*/false, /*fails=*/false);
  return true;
}

namespace {
// Whether a simple query may be a transaction statement a pass-through session answers itself (a
// BEGIN it defers, or the end of a transaction no server runs yet): its first word says so, and it
// is plain ASCII without quotes, dollar signs or backslashes (no transaction statement needs them,
// and then the parser and the server cannot disagree on where statements end). Cheap: every
// simple query between transactions is asked.
bool mayBeTransactionStatement(std::string_view sql) {
  constexpr size_t kLongest = 8;  // "rollback"
  char buffer[kLongest];
  size_t at = 0;
  const std::string_view word = nextKeyword(sql, at, buffer, kLongest);
  if (word != "begin" && word != "start" && word != "commit" && word != "end" &&
      word != "rollback" && word != "abort") {
    return false;
  }
  return std::none_of(sql.begin(), sql.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u >= 0x80 || u == 0 || c == '\'' || c == '"' || c == '$' || c == '\\';
  });
}
}  // namespace

// A pass-through session (one server, nothing to route) defers a BEGIN as a routed one does
// (deferBegin): the transaction's first statement takes it to the server, in the same write. A
// COMMIT or ROLLBACK of a transaction no server runs yet (deferred, or failed before its first
// statement got a server) is answered here too, as Postgres would. Only a simple query that is
// nothing but that statement, read by the parser (a malformed one goes to the server, which
// reports it). Returns the bytes used: the Query, or 0.
size_t ClientSession::answerPassThroughTransactionStatement(std::string_view data) {
  if (data.empty() || data[0] != wire::fe::kQuery || !transactionPooling() || batch_open_) {
    return 0;
  }
  wire::Frame frame;
  if (wire::peekTyped(data, worker_.config().general.max_message_size, frame) !=
      wire::FrameStatus::kComplete) {
    return 0;
  }
  std::string_view sql = frame.payload;
  if (sql.empty() || sql.back() != '\0') return 0;
  sql.remove_suffix(1);
  if (!mayBeTransactionStatement(sql)) return 0;
  Result<planner::RouteDecision> decision =
      worker_.router().routeSimple(*database_, sql, routeContext());
  if (!decision.ok() || decision->several_statements) return 0;
  using Action = planner::TransactionAction;
  if (decision->transaction == Action::kBegin) {
    // The server is Postgres's only judge of a BEGIN it runs later, and its error would not reach
    // the client: a hot standby (a read-only server configured as the database's) refuses
    // SERIALIZABLE and READ WRITE at BEGIN. Those go to the server at once.
    if (containsIgnoreCase(sql, "serializable") || containsIgnoreCase(sql, "write")) return 0;
    return deferBegin(*decision, sql) ? frame.size : 0;
  }
  if ((decision->transaction != Action::kCommit && decision->transaction != Action::kRollback) ||
      transaction_status_ == 'I' || resume_transaction_.empty()) {
    return 0;
  }
  const bool failed = transaction_status_ == 'E';
  const bool commits = !failed && decision->transaction == Action::kCommit;
  metrics_.answeredHere();
  endTransactionHere(failed, decision->chain);
  std::string reply;
  wire::CommandComplete{commits ? "COMMIT" : "ROLLBACK"}.encode(reply);
  answerStatementHere(std::move(reply), /*extended=*/false, /*fails=*/false);
  return frame.size;
}

// The client's transaction ends here, not on a server (none runs it, or shardgate ended its
// shards' parts): what the session knew of it goes. AND CHAIN begins the next one, deferred to
// its first statement, with the first one's BEGIN options unless that failed (Postgres 15 then
// begins it with the defaults).
void ClientSession::endTransactionHere(bool failed, bool chain) {
  std::string chained_begin =
      failed || txn_begin_sql_.empty() ? std::string("BEGIN") : std::move(txn_begin_sql_);
  forgetTransaction();
  metrics_.transactionEndedHere();
  if (chain) startDeferredTransaction(std::move(chained_begin));
}

// The session is in a transaction that `begin_sql` begins on the first shard it runs on.
void ClientSession::startDeferredTransaction(std::string begin_sql) {
  transaction_status_ = 'T';
  txn_begin_sql_ = std::move(begin_sql);
  resume_transaction_ = txn_begin_sql_;
}

// The client's transaction has begun here only: no shard runs it yet.
bool ClientSession::beginDeferred() const {
  return transaction_status_ == 'T' && server_ == nullptr && !waiting_for_server_ &&
         parked_.empty() && !txn_bound_ && !resume_transaction_.empty();
}

// COMMIT or ROLLBACK of a transaction no shard has run: spreadStatement answers it here, as it
// does when no connection holds a transaction over shards any more (AND CHAIN defers the next
// one's BEGIN in turn).
bool ClientSession::endsDeferredTransaction(const planner::RouteDecision& decision) const {
  return (decision.transaction == planner::TransactionAction::kCommit ||
          decision.transaction == planner::TransactionAction::kRollback) &&
         !decision.several_statements && beginDeferred();
}

ClientSession::SpreadOutcome ClientSession::spreadIfNeeded(const planner::RouteDecision& decision,
                                                           bool extended,
                                                           std::string_view statement_text) {
  if (!spreadTransaction() && !beginsInSpreadBatch(decision) &&
      !endsDeferredTransaction(decision)) {
    return SpreadOutcome::kRun;
  }
  return spreadStatement(decision, extended, statement_text);
}

bool ClientSession::spreadTransaction() const {
  if (transaction_status_ == 'I') return false;
  return !parked_.empty() || ending_parked_ || spread_end_error_ ||
         (server_ == nullptr && !beginDeferred()) ||
         (transaction_status_ == 'E' &&
          (server_ == nullptr || server_->transactionStatus() != 'E'));
}

ClientSession::SpreadOutcome ClientSession::spreadStatement(const planner::RouteDecision& decision,
                                                            bool extended,
                                                            std::string_view statement_text) {
  using Action = planner::TransactionAction;
  if (ending_parked_) return SpreadOutcome::kWait;
  if (batch_spread_ && decision.transaction == Action::kBegin) {
    // The batch's implicit transaction already runs on several shards as shardgate's own.
    refuseStatement(Error::make(sqlstate::kFeatureNotSupported,
                                "BEGIN inside an extended-protocol batch that already ran on "
                                "several shards is not supported",
                                "", "send a Sync before BEGIN"),
                    extended);
    return SpreadOutcome::kAnswered;
  }
  if (decision.transaction == Action::kCommit || decision.transaction == Action::kRollback) {
    // Whether it ends here, and how, depends on the status the owed replies tell.
    if (awaitOwedReplies()) return SpreadOutcome::kWait;
    if (decision.chain && decision.transaction == Action::kCommit && transaction_status_ == 'T' &&
        (!parked_.empty() || batch_spread_)) {
      // Each shard would commit, but only the held one would begin the next transaction (with
      // the old one's characteristics): refused before anything commits.
      refuseStatement(Error::make(sqlstate::kFeatureNotSupported,
                                  "COMMIT AND CHAIN in a transaction over several shards is not "
                                  "supported",
                                  "", "COMMIT, then BEGIN the next transaction."),
                      extended);
      return SpreadOutcome::kAnswered;
    }
    const bool ends_implicit = batch_spread_;  // Postgres warns: no transaction in progress
    if (ends_implicit && server_ != nullptr && transaction_status_ != 'E' && !spread_end_error_) {
      // The batch's implicit transaction (made explicit by shardgate) ends here on every shard,
      // the held one too.
      if (!parkHeldServer()) return SpreadOutcome::kWait;
    }
    if (!parked_.empty()) {
      const bool commit = decision.transaction == Action::kCommit && transaction_status_ != 'E';
      committing_spread_ = commit;
      if (commit && !batch_open_) {
        // Deferred constraints and triggers are checked on every shard before any of them
        // commits: one that fails there would otherwise fail its shard's COMMIT after others had
        // committed. (A failure at the COMMIT itself can still split it: no two-phase commit.
        // A COMMIT inside an extended-protocol batch is not checked first yet.)
        if (every_shard_run_ == EveryShardRun::kDone && every_shard_error_) {
          every_shard_run_ = EveryShardRun::kNone;
          spread_end_error_ = std::move(every_shard_error_);
          ending_parked_ = true;
          endNextParked("ROLLBACK");  // then the COMMIT comes again and answers the error
          return SpreadOutcome::kWait;
        }
        if (std::optional<SpreadOutcome> running =
                runOnEveryShard("SET CONSTRAINTS ALL IMMEDIATE", extended, /*rolls_back=*/false)) {
          return *running;  // the COMMIT comes again when every shard has checked
        }
      }
      ending_parked_ = true;
      endNextParked(commit ? "COMMIT" : "ROLLBACK");
      return SpreadOutcome::kWait;  // the statement comes again once they have ended
    }
    const bool failed = transaction_status_ == 'E' || spread_end_error_ != nullptr;
    if (!failed && server_ != nullptr) return SpreadOutcome::kRun;  // server_ ends it as usual
    // End it here: roll back what is still held, and answer as Postgres would.
    if (server_) {
      backends::ServerConnection* server = server_;
      server_ = nullptr;
      current_target_.reset();
      rollBackAndRelease(server, pool_, idleRelease());
    }
    std::string reply;
    const bool spread_end_error_was = spread_end_error_ != nullptr;
    const bool commits = !failed && !spread_end_error_ && decision.transaction == Action::kCommit;
    if (spread_end_error_) {
      wire::writeError(reply, *spread_end_error_);
    } else {
      if (commits && !changes_in_transaction_.empty()) {
        settings_.commit(changes_in_transaction_, nullptr);
      }
      if (ends_implicit) {
        Error warning = Error::make("25P01", "there is no transaction in progress");
        warning.severity = "WARNING";
        wire::writeNotice(reply, warning);
        batch_spread_ = false;  // the rest of the batch is a new implicit transaction
      }
      wire::CommandComplete{commits ? "COMMIT" : "ROLLBACK"}.encode(reply);
    }
    endReportedChanges(!commits, reply);
    spread_end_error_.reset();
    // (A chained transaction's reads stay on primaries, as its BEGIN may say SERIALIZABLE, which
    // a replica refuses.)
    endTransactionHere(failed, decision.chain && !ends_implicit);
    answerStatementHere(std::move(reply), extended, spread_end_error_was);
    return SpreadOutcome::kAnswered;
  }
  if (!decision.savepoint_name.empty() && !batch_spread_ &&
      (transaction_status_ != 'E' || decision.transaction == Action::kRollbackTo) &&
      (server_ != nullptr || !parked_.empty())) {
    return spreadSavepoint(decision, extended);
  }
  if (transaction_status_ == 'E') {
    refuseStatement(failedTransactionError(), extended);
    return SpreadOutcome::kAnswered;
  }
  if (decision.changes_setting && !parked_.empty()) {
    if (!decision.setting_tag.empty()) return spreadSetting(decision, extended, statement_text);
    // With other statements in one query: those run on one shard's connection only.
    refuseStatement(Error::make(sqlstate::kFeatureNotSupported,
                                "SET or RESET in a query of several statements is not supported "
                                "in a transaction that runs on several shards",
                                "the setting would change on one shard's connection only",
                                "send the SET or RESET as a query of its own"),
                    extended);
    return SpreadOutcome::kAnswered;
  }
  if (decision.transaction == Action::kPrepare) {
    refuseStatement(Error::make(sqlstate::kFeatureNotSupported,
                                "PREPARE TRANSACTION is not supported in a transaction that spans "
                                "shards yet",
                                "the transaction runs on several shards"),
                    extended);
    return SpreadOutcome::kAnswered;
  }
  if (decision.transaction == Action::kSavepoint || decision.transaction == Action::kRelease ||
      decision.transaction == Action::kRollbackTo) {
    // spreadSavepoint took the others: one in a query of several statements, in an implicit
    // batch (where Postgres refuses savepoints too), or with no connection in the transaction.
    std::string detail = batch_spread_ ? "the extended-protocol batch has no BEGIN"
                         : decision.savepoint_name.empty() ? "it is part of a query of several "
                                                             "statements"
                                                           : "no shard connection holds the "
                                                             "transaction";
    refuseStatement(Error::make(sqlstate::kFeatureNotSupported,
                                "this savepoint statement is not supported in a transaction that "
                                "spans shards",
                                std::move(detail),
                                batch_spread_ ? "use savepoints inside BEGIN ... COMMIT"
                                              : "send it as a query of its own"),
                    extended);
    return SpreadOutcome::kAnswered;
  }
  return SpreadOutcome::kRun;
}

bool ClientSession::parkHeldServer() {
  if (batch_open_) {  // its part of the batch ends here (the transaction goes on)
    sendOwnSync();
    batch_open_ = false;
    batch_executes_ = false;
  }
  if (server_->owesReplies()) {
    server_->notifyWhenCaughtUp();
    return false;
  }
  park(server_, pool_, current_target_->shard);
  server_ = nullptr;
  current_target_.reset();
  return true;
}

// SAVEPOINT, RELEASE or ROLLBACK TO in a transaction that spans shards (or failed on shardgate's
// refusal, its server still fine): it runs on every shard's connection in turn, the held one
// parked first, and is answered as Postgres answers it once all have run, or with the first
// shard's error (the transaction has then failed). Every shard has every savepoint: one that
// joins later makes them first (transactionJoinSql).
ClientSession::SpreadOutcome ClientSession::spreadSavepoint(const planner::RouteDecision& decision,
                                                            bool extended) {
  using Action = planner::TransactionAction;
  if (auto pending =
          runOnEveryShard(savepointSql(decision.transaction, decision.savepoint_name), extended,
                          /*rolls_back=*/decision.transaction == Action::kRollbackTo)) {
    return *pending;
  }
  if (decision.transaction == Action::kSavepoint) {
    savepoint_marks_.push_back(changes_in_transaction_.size());
  } else if (decision.transaction == Action::kRelease) {
    if (!savepoint_marks_.empty()) savepoint_marks_.pop_back();
  } else {
    undoChangesSinceSavepoint();
    named_portals_.clear();     // (see onServerCommandComplete)
    transaction_status_ = 'T';  // usable again
  }
  noteSavepoint(decision.transaction, decision.savepoint_name, changes_in_transaction_.size());
  std::string reply;
  // ROLLBACK TO puts back reported settings changed since the savepoint.
  if (decision.transaction == Action::kRollbackTo) reportParkedParameters(reply);
  wire::CommandComplete{std::string(savepointTag(decision.transaction))}.encode(reply);
  answerStatementHere(std::move(reply), extended);
  return SpreadOutcome::kAnswered;
}

// SET, RESET, SET LOCAL or SET CONSTRAINTS in a transaction that spans shards: it runs on every
// shard's connection in turn, as a savepoint does, and holds on the shards that join later
// (transactionJoinSql). A reported setting's new value reaches the client in a ParameterStatus,
// as from one server.
ClientSession::SpreadOutcome ClientSession::spreadSetting(const planner::RouteDecision& decision,
                                                          bool extended,
                                                          std::string_view statement_text) {
  SessionEffects effects = sessionEffectsOf(statement_text);
  if (!effects.pin_reason.empty()) {
    refuseStatement(
        Error::make(sqlstate::kFeatureNotSupported,
                    effects.pin_reason + " is not supported in a transaction that runs on several "
                                         "shards",
                    "it would pin the session to one shard's connection"),
        extended);
    return SpreadOutcome::kAnswered;
  }
  std::string sql(statement_text);
  if (effects.resetsAnything()) {
    // Postgres resets to the startup packet's values, which the pooled connections never saw.
    // (After a newline: the client's text may end in a -- comment.)
    std::string restore = settings_.startupSql(effects.resets_all, effects.resets);
    if (!restore.empty()) sql += "\n;" + restore;
  }
  if (auto pending = runOnEveryShard(sql, extended, /*rolls_back=*/false)) return *pending;
  std::string reply;
  if (batch_spread_) {
    // Postgres runs a batch without BEGIN outside a transaction block, and warns of a
    // transaction-scoped statement there; shardgate's shards ran it inside their BEGIN.
    for (const SettingChange& change : effects.changes) {
      if (change.kind != SettingChange::Kind::kLocal) continue;
      Error warning = Error::make("25P01", change.name + " can only be used in transaction blocks");
      warning.severity = "WARNING";
      wire::writeNotice(reply, warning);
    }
  }
  for (const auto& parked : parked_) {
    if (parked->server != nullptr) SessionSettings::noteSent(*parked->server, effects.changes);
  }
  reportParkedParameters(reply);
  joinTransactionChanges(effects.changes);
  if (decision.resets_session) resetReadPreference();
  wire::CommandComplete{decision.setting_tag}.encode(reply);
  answerStatementHere(std::move(reply), extended);
  return SpreadOutcome::kAnswered;
}

void ClientSession::reportParkedParameters(std::string& reply) {
  auto any = std::find_if(parked_.begin(), parked_.end(),
                          [](const auto& parked) { return parked->server != nullptr; });
  if (any == parked_.end()) return;
  for (const auto& [name, value] : (*any)->server->parameters()) {
    if (!isSyncedReportedSetting(name)) continue;
    auto seen = settings_.reported(name);
    if (seen && *seen == value) continue;
    noteReportedInTransaction(name, value);
    wire::ParameterStatus{name, value}.encode(reply);
  }
}

std::optional<ClientSession::SpreadOutcome> ClientSession::runOnEveryShard(std::string_view sql,
                                                                           bool extended,
                                                                           bool rolls_back) {
  if (every_shard_run_ == EveryShardRun::kRunning) return SpreadOutcome::kWait;
  if (every_shard_run_ == EveryShardRun::kDone) {  // the statement comes again: every shard ran it
    every_shard_run_ = EveryShardRun::kNone;
    if (!every_shard_error_) return std::nullopt;
    std::unique_ptr<Error> error = std::move(every_shard_error_);
    transaction_status_ = 'E';
    rollBackFailedTransactionShards();
    metrics_.countError(error->sqlstate);
    std::string reply;
    wire::writeError(reply, *error);
    answerStatementHere(std::move(reply), extended, /*fails=*/true);
    return SpreadOutcome::kAnswered;
  }
  // In an extended batch, an error among the replies the held server still owes means Postgres
  // skips this statement: they come first (the batch stays open), then the message loop skips to
  // the Sync (batchFailedOnServer) or the statement comes here again.
  if (extended && batch_open_ && awaitOwedReplies()) return SpreadOutcome::kWait;
  if (server_ != nullptr && !parkHeldServer()) return SpreadOutcome::kWait;
  every_shard_run_ = EveryShardRun::kRunning;
  runOnNextParked(nullptr, std::string(sql), rolls_back);
  return SpreadOutcome::kWait;  // the statement comes again when every shard has run it
}

void ClientSession::runOnNextParked(const backends::ServerConnection* previous, std::string sql,
                                    bool rolls_back) {
  auto next = parked_.begin();
  if (previous != nullptr) {
    next = std::find_if(parked_.begin(), parked_.end(),
                        [previous](const auto& p) { return p->server == previous; });
    if (next != parked_.end()) ++next;
  }
  while (next != parked_.end() && (*next)->server == nullptr) ++next;
  if (next == parked_.end()) {
    every_shard_run_ = EveryShardRun::kDone;
    processPending();
    return;
  }
  backends::ServerConnection* server = (*next)->server;
  const uint32_t shard = (*next)->shard;
  auto ran = [this, server, shard, sql, rolls_back](Status status) {
    if (status.ok()) {
      runOnNextParked(server, sql, rolls_back);
      return;
    }
    Error e = status.error();
    const std::string where = "on " + planner::shardName(*database_, shard);
    e.detail = e.detail.empty() ? where : e.detail + "\n" + where;
    every_shard_error_ = std::make_unique<Error>(std::move(e));
    every_shard_run_ = EveryShardRun::kDone;
    processPending();
  };
  if (rolls_back) {
    runRollbackPastLateCancel(server, sql, std::move(ran));
  } else {
    server->runInternal(sql, std::move(ran));
  }
}

void ClientSession::noteSavepoint(planner::TransactionAction action, const std::string& name,
                                  size_t changes_mark) {
  using Action = planner::TransactionAction;
  if (action == Action::kSavepoint) {
    txn_savepoints_.push_back({name, changes_mark});
    return;
  }
  // The most recent savepoint of that name; none: one made before the transaction was bound, so
  // every savepoint here is newer and goes.
  auto it = std::find_if(txn_savepoints_.rbegin(), txn_savepoints_.rend(),
                         [&name](const TransactionSavepoint& sp) { return sp.name == name; });
  if (it == txn_savepoints_.rend()) {
    txn_savepoints_.clear();
    return;
  }
  // RELEASE drops it and the newer ones; ROLLBACK TO drops the newer ones only.
  auto first_gone = action == Action::kRelease ? std::prev(it.base()) : it.base();
  txn_savepoints_.erase(first_gone, txn_savepoints_.end());
}

void ClientSession::answerStatementHere(std::string reply, bool extended, bool fails) {
  if (extended) {
    // The rest of the batch (Describe, Execute, Sync) is answered as for a bound statement.
    multi_bound_ = std::make_unique<BoundMultiShard>();
    multi_bound_->local_reply = std::move(reply);
    multi_bound_->local_reply_fails = fails;
    std::string bind_complete;
    wire::BindComplete{}.encode(bind_complete);
    answer(std::move(bind_complete));
    return;
  }
  wire::writeReadyForQuery(reply, transaction_status_);
  answer(std::move(reply));
}

// Ends the parked connections' transactions one after the other; the first failure turns the
// rest into ROLLBACKs and becomes the client's error.
void ClientSession::endNextParked(std::string sql) {
  while (!parked_.empty() && parked_.front()->server == nullptr) parked_.erase(parked_.begin());
  if (parked_.empty()) {
    ending_parked_ = false;
    processPending();  // the client's COMMIT / ROLLBACK, now for server_ alone
    return;
  }
  backends::ServerConnection* server = parked_.front()->server;
  auto ended = [this, server, sql](Status status) {
    std::unique_ptr<ParkedServer> parked;
    for (auto it = parked_.begin(); it != parked_.end(); ++it) {
      if ((*it)->server == server) {
        parked = std::move(*it);
        parked_.erase(it);
        break;
      }
    }
    std::string next = sql;
    if (!status.ok() && !spread_end_error_) {
      Error e = status.error();
      std::string where = parked ? planner::shardName(*database_, parked->shard) : "a shard";
      e.detail = e.detail.empty() ? sql + " failed on " + where
                                  : e.detail + "\n" + sql + " failed on " + where;
      spread_end_error_ = std::make_unique<Error>(std::move(e));
      next = "ROLLBACK";
    }
    if (parked && parked->server) {
      server->detach();
      // (The pool closes one the statement left in a transaction.)
      parked->pool->release(server, status.ok() ? idleRelease() : backends::Pool::Release::kClose,
                            context().nowMs());
    }
    endNextParked(next);
  };
  if (sql == "ROLLBACK") {
    runRollbackPastLateCancel(server, sql, std::move(ended));
  } else {
    server->runInternal(sql, std::move(ended));
  }
}

}  // namespace shardgate::proxy
