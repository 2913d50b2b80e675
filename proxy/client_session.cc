// ClientSession: what a client sees of shardgate, from the startup packet to Terminate. Its
// transactions over several shards are in client_session_spanning.cc, its multi-shard statements
// in client_session_multi_shard.cc, its lookups in client_session_lookups.cc.
#include "proxy/client_session.h"

#include <algorithm>
#include <variant>

#include "backends/cancel_request.h"
#include "common/log.h"
#include "common/sql_text.h"
#include "planner/sharding_function.h"
#include "proxy/admin_console.h"
#include "proxy/client_session_internal.h"
#include "proxy/proxy_server.h"
#include "proxy/session_features.h"
#include "proxy/sql_prepared.h"
#include "proxy/wire/backend_messages.h"
#include "proxy/wire/framing.h"
#include "proxy/wire/frontend_messages.h"
#include "proxy/wire/payload.h"
#include "proxy/wire/protocol.h"
#include "proxy/worker.h"

namespace shardgate::proxy {

// ---- shared with the other ClientSession files (client_session_internal.h) ------------------

Error failedTransactionError() {
  return Error::make("25P02",
                     "current transaction is aborted, commands ignored until end of transaction "
                     "block");
}

std::string quoteIdentifier(std::string_view name) {
  std::string out = "\"";
  for (char c : name) {
    out += c;
    if (c == '"') out += '"';
  }
  return out + "\"";
}

std::string_view savepointTag(planner::TransactionAction action) {
  using Action = planner::TransactionAction;
  return action == Action::kSavepoint ? "SAVEPOINT"
         : action == Action::kRelease ? "RELEASE"
                                      : "ROLLBACK";
}

void runRollbackPastLateCancel(backends::ServerConnection* server, std::string sql,
                               std::function<void(Status)> done) {
  server->runInternal(sql, [server, sql, done = std::move(done)](Status status) mutable {
    if (!status.ok() && status.error().sqlstate == sqlstate::kQueryCanceled) {
      server->runInternal(sql, std::move(done));
      return;
    }
    done(std::move(status));
  });
}

void rollBackAndRelease(backends::ServerConnection* server, backends::Pool* pool,
                        backends::Pool::Release how) {
  server->detach();
  runRollbackPastLateCancel(server, "ROLLBACK", [pool, server, how](Status status) {
    // (One the ROLLBACK left in a transaction, the pool closes whatever `how` says.)
    pool->release(server, status.ok() ? how : backends::Pool::Release::kClose,
                  backends::monotonicMs());
  });
}

Error duplicatePortal(std::string_view portal) {
  return Error::make(sqlstate::kDuplicateCursor,
                     "portal \"" + std::string(portal) + "\" already exists");
}

namespace {

// Postgres's IsTransactionExitStmt: what a failed transaction still accepts.
bool endsTransaction(planner::TransactionAction action) {
  using Action = planner::TransactionAction;
  return action == Action::kCommit || action == Action::kRollback ||
         action == Action::kRollbackTo || action == Action::kPrepare;
}

bool isFalseValue(std::string_view v) {
  return v == "false" || v == "0" || v == "off" || v == "no" || v == "f" || v == "n";
}

// prefer_replica passes over a replica this long after a failed login, then tries it again.
constexpr uint64_t kReplicaRetryMs = 5000;

// Fails the server's transaction (shardgate's own query, its error swallowed): what the client
// sent before a refused statement must not commit.
constexpr std::string_view kFailTransaction =
    "DO $$BEGIN RAISE EXCEPTION 'statement refused by shardgate'; END$$";

// Whether CommandComplete `tag` is the reply to a statement that does `action` (a COMMIT of a
// failed transaction answers ROLLBACK).
bool answersControl(planner::TransactionAction action, std::string_view tag) {
  using Action = planner::TransactionAction;
  switch (action) {
    case Action::kCommit:
      return tag == "COMMIT" || tag == "ROLLBACK";
    case Action::kRollback:
      return tag == "ROLLBACK";
    default:
      return tag == savepointTag(action);
  }
}

// Whether the message at the start of `rest` (bytes the client sent after the current one) is a
// complete Sync.
bool syncComesNext(std::string_view rest, uint32_t max_size) {
  wire::Frame next;
  return wire::peekTyped(rest, max_size, next) == wire::FrameStatus::kComplete &&
         next.type == wire::fe::kSync;
}

// Whether a Bind's payload binds the unnamed statement (its portal name, then an empty name).
bool bindsUnnamedStatement(std::string_view payload) {
  const size_t portal_end = payload.find('\0');
  return portal_end != std::string_view::npos && portal_end + 1 < payload.size() &&
         payload[portal_end + 1] == '\0';
}

}  // namespace

ClientSession::ClientSession(Worker& worker, uint64_t id, uint64_t now_ms, Transport transport)
    : TcpConnection(worker.context(), transport),
      worker_(worker),
      id_(id),
      connected_at_ms_(now_ms),
      metrics_(worker.metrics(), worker.configPtr()) {}

ClientSession::~ClientSession() = default;

void ClientSession::start() {
  if (transport() == Transport::kTcp) uv_tcp_nodelay(handle(), 1);
  meterTraffic(&worker_.metrics().bytes_received, &worker_.metrics().bytes_sent);
  counted_ = true;
  worker_.addSession(this);
  startReading();
}

void ClientSession::refuse(const Error& error) {
  worker_.addSession(this);
  fatal(error);
}

// As Postgres and PgBouncer do, the refusal comes after the SSLRequest's answer and the startup
// packet: sent at once, it lands where libpq expects the one-byte TLS answer, and psql shows
// "error response during SSL exchange" instead of the reason. (A CancelRequest still works.)
void ClientSession::refuseAfterStartup(Error error) {
  refusal_ = std::make_unique<Error>(std::move(error));
  if (transport() == Transport::kTcp) uv_tcp_nodelay(handle(), 1);
  worker_.addSession(this);
  startReading();
}

void ClientSession::fatal(const Error& error) {
  if (state_ == State::kClosed) return;
  Error e = error;
  e.severity = "FATAL";
  spdlog::info("event=client_error session={} user={} database={} error=\"{}\"", id_, user_name_,
               database_name_, e.describe());
  releaseServer(/*client_left=*/true);
  state_ = State::kClosed;
  wire::writeError(outputBuffer(), e);
  metrics_.countError(e.sqlstate);
  closeAfterFlush();
}

void ClientSession::terminate(const Error& error) {
  fatal(error);
}

// ---- startup ---------------------------------------------------------------------------------

size_t ClientSession::onData(std::string_view data) {
  // A phase may end in the middle of the data (a query pipelined with the startup packet, with
  // the login completing at once): go on with the next phase's handler.
  size_t used = 0;
  while (used < data.size()) {
    State before = state_;
    size_t n = 0;
    switch (state_) {
      case State::kStartup:
        n = handleStartupPhase(data.substr(used));
        break;
      case State::kAuthenticating:
        n = handleAuthPhase(data.substr(used));
        break;
      case State::kLoggingIn:
        return used;  // kept until the login completes
      case State::kReady:
        n = handleClientMessages(data.substr(used));
        break;
      case State::kClosed:
        return data.size();
    }
    used += n;
    if (state_ == before || state_ == State::kClosed)
      return state_ == State::kClosed ? data.size() : used;
  }
  return used;
}

size_t ClientSession::handleStartupPhase(std::string_view data) {
  size_t used = 0;
  const uint32_t max_size = worker_.config().general.max_message_size;
  while (state_ == State::kStartup && used < data.size()) {
    wire::FrameResult framed = wire::frameUntyped(data.substr(used), max_size);
    if (framed.status == wire::FrameStatus::kNeedMore) break;
    if (framed.status == wire::FrameStatus::kInvalid) {
      fatal(framed.error);
      return data.size();
    }
    used += framed.frame.size;
    auto packet = wire::decodeStartupPacket(framed.frame.payload);
    if (!packet.ok()) {
      fatal(packet.error());
      return data.size();
    }
    if (std::holds_alternative<wire::SslRequest>(*packet)) {
      if (!answerSslRequest(used < data.size())) return data.size();
      continue;
    }
    if (std::holds_alternative<wire::GssEncRequest>(*packet)) {
      send("N");  // no GSS encryption: the client goes on in plain text (or asks for TLS)
      continue;
    }
    if (auto* cancel = std::get_if<wire::CancelRequest>(&*packet)) {
      auto target = worker_.server().cancelRegistry().find(cancel->process_id, cancel->secret_key);
      if (target) {
        worker_.server().worker(target->worker).postCancel(target->session_id);
      } else {
        spdlog::info("event=cancel_ignored reason=unknown_key pid={}", cancel->process_id);
      }
      state_ = State::kClosed;
      close();  // the protocol wants no reply
      return data.size();
    }
    handleStartupMessage(std::get<wire::StartupMessage>(*packet));
  }
  return used;
}

bool ClientSession::answerSslRequest(bool more_input) {
  if (tls()) {
    fatal(Error::fatal(sqlstate::kProtocolViolation, "SSLRequest on a connection already in TLS"));
    return false;
  }
  // Postgres does not offer TLS on its Unix-domain socket either.
  std::shared_ptr<const TlsContext> context =
      transport() == Transport::kTcp ? worker_.server().tls().clients : nullptr;
  if (!context) {
    send("N");  // the client goes on in plain text, or gives up if it insists on TLS
    return true;
  }
  if (more_input) {
    // Bytes the client sent before the handshake could be injected by anyone on the path
    // (CVE-2021-23214): Postgres refuses them, and so do we.
    fatal(
        Error::fatal(sqlstate::kProtocolViolation, "received unencrypted data after SSL request"));
    return false;
  }
  auto session = TlsSession::serverSide(std::move(context));
  if (!session.ok()) {
    fatal(session.error());
    return false;
  }
  send("S");
  startTls(std::move(*session));
  return true;
}

void ClientSession::handleStartupMessage(const wire::StartupMessage& startup) {
  if (refusal_) {
    fatal(*refusal_);
    return;
  }
  // The same source as the SSLRequest's answer: both follow a RELOAD together.
  if (!tls() && transport() == Transport::kTcp && worker_.server().tls().clients_must_use_tls) {
    fatal(Error::fatal(sqlstate::kInvalidAuthorization,
                       "shardgate accepts only TLS connections (client_tls_sslmode = require)", "",
                       "connect with sslmode=require"));
    return;
  }
  int32_t minor = startup.protocol_version & 0xffff;
  std::vector<std::string> unrecognized;
  // Postgres applies `options` first, then the packet's own settings (which win), whatever their
  // order in the packet.
  SettingList startup_settings;
  SettingList packet_settings;
  for (const auto& [name, value] : startup.parameters) {
    if (name == "user") {
      user_name_ = value;
    } else if (name == "database") {
      database_name_ = value;
    } else if (name == "replication") {
      if (!isFalseValue(value)) {
        fatal(Error::fatal(sqlstate::kProtocolViolation,
                           "shardgate does not support replication connections",
                           "replication=" + value + " was requested",
                           "connect to the shard's Postgres server directly for replication"));
        return;
      }
    } else if (name == "options") {
      auto options = parseOptionsParameter(value);
      if (!options.ok()) {
        fatal(options.error());
        return;
      }
      for (auto& setting : *options) startup_settings.push_back(std::move(setting));
    } else if (name.rfind("_pq_.", 0) == 0) {
      unrecognized.push_back(name);
    } else {
      if (!isValidSettingName(name)) {
        fatal(Error::fatal(sqlstate::kProtocolViolation,
                           "invalid startup parameter name \"" + name + "\""));
        return;
      }
      packet_settings.emplace_back(name, value);
    }
  }
  for (auto& setting : packet_settings) startup_settings.push_back(std::move(setting));
  for (auto it = startup_settings.begin(); it != startup_settings.end();) {
    const StartupSettingUse use = startupSettingUse(it->first);
    if (use == StartupSettingUse::kRefuse) {
      fatal(Error::fatal(sqlstate::kCantChangeRuntimeParam,
                         "parameter \"" + it->first + "\" cannot be changed"));
      return;
    }
    it = use == StartupSettingUse::kIgnore ? startup_settings.erase(it) : it + 1;
  }
  if (user_name_.empty()) {
    fatal(Error::fatal(sqlstate::kInvalidAuthorization,
                       "no PostgreSQL user name specified in startup packet"));
    return;
  }
  if (database_name_.empty()) database_name_ = user_name_;
  settings_.setStartup(startup_settings);
  if (minor > 0 || !unrecognized.empty()) {
    wire::NegotiateProtocolVersion{wire::kProtocolVersion30, unrecognized}.encode(outputBuffer());
  }

  config_ = worker_.configPtr();
  user_ = config_->findUser(user_name_);
  auth_ = std::make_unique<ClientAuthenticator>(user_, user_name_,
                                                user_ ? worker_.scramSecret(*user_) : nullptr);
  state_ = State::kAuthenticating;
  if (auth_->begin(outputBuffer()) == ClientAuthenticator::Outcome::kAuthenticated) {
    authenticated();
  } else {
    scheduleFlush();
  }
}

size_t ClientSession::handleAuthPhase(std::string_view data) {
  size_t used = 0;
  const uint32_t max_size = worker_.config().general.max_message_size;
  while (state_ == State::kAuthenticating && used < data.size()) {
    wire::FrameResult framed = wire::frameTyped(data.substr(used), max_size);
    if (framed.status == wire::FrameStatus::kNeedMore) break;
    if (framed.status == wire::FrameStatus::kInvalid) {
      fatal(framed.error);
      return data.size();
    }
    used += framed.frame.size;
    if (framed.frame.type == wire::fe::kTerminate) {
      state_ = State::kClosed;
      close();
      return data.size();
    }
    if (framed.frame.type != wire::fe::kPassword) {
      fatal(Error::fatal(
          sqlstate::kProtocolViolation,
          std::string("expected password response, got message type '") + framed.frame.type + "'"));
      return data.size();
    }
    auto outcome = auth_->onMessage(framed.frame.payload, outputBuffer());
    if (!outcome.ok()) {
      spdlog::info("event=auth_failed session={} user={} database={} error=\"{}\"", id_, user_name_,
                   database_name_, outcome.error().describe());
      fatal(outcome.error());
      return data.size();
    }
    if (*outcome == ClientAuthenticator::Outcome::kAuthenticated) {
      authenticated();
    } else {
      scheduleFlush();
    }
  }
  return used;
}

void ClientSession::authenticated() {
  auth_.reset();
  wire::AuthenticationOk{}.encode(outputBuffer());
  scheduleFlush();
  if (database_name_ == kAdminDatabaseName && user_ != nullptr) {
    startAdminConsole();
    return;
  }
  database_ = config_->findDatabase(database_name_);
  if (database_ == nullptr || user_ == nullptr) {
    fatal(Error::fatal(sqlstate::kInvalidCatalogName,
                       "database \"" + database_name_ + "\" does not exist"));
    return;
  }
  metrics_.loggedIn(database_name_, user_name_);
  state_ = State::kLoggingIn;
  transaction_pooling_ = worker_.config().general.pool_mode == conf::PoolMode::kTransaction;
  useDatabase(user_, database_);
  if (loginWithoutServer()) return;
  waiting_for_server_ = true;
  pool_->acquire(this, context().nowMs());
}

// Transaction pooling, as PgBouncer does: the login is answered from what the pool's servers
// reported at their own logins, so that a client connecting while every server connection is busy
// is not queued behind them (and a reconnecting client costs no server round trip). Its startup
// settings reach a server with its first statement (syncServer). Not when a startup setting's
// reported value cannot be told without a server, nor before the pool has a server's answer.
bool ClientSession::loginWithoutServer() {
  if (!transaction_pooling_ || !pool_->answersLoginsWithoutServer()) return false;
  std::optional<backends::ServerParameters> reported =
      settings_.reportedAtLogin(pool_->serverParameters());
  if (!reported) return false;
  settings_.setReported(*reported);
  reportLogin(*reported, 'I');
  processPending();
  return true;
}

void ClientSession::onServerAcquired(backends::ServerConnection* server) {
  if (server_ != nullptr) {
    spdlog::warn("event=acquired_while_holding session={} held={} new={}", id_, server_->id(),
                 server->id());
  }
  waiting_for_server_ = false;
  server_ = server;
  server_->attach(this);
  metrics_.serverAcquired(context().nowNs());
  if (state_ == State::kLoggingIn) {
    settings_.startFrom(pool_->serverParameters());
    syncServer([this] { finishLogin(); });
  } else {
    syncServer([this] {
      if (!resume_transaction_.empty()) {
        // The open transaction moved here: begin it again; its replies are not the client's.
        SessionSettings::noteSentSql(*server_, resume_transaction_);
        sendOwnQuery(resume_transaction_);
        resume_transaction_.clear();
      }
      processPending();
    });
  }
}

void ClientSession::onServerUnavailable(const Error& error) {
  waiting_for_server_ = false;
  if (std::exchange(fallback_to_primary_, false) && state_ == State::kReady && current_target_ &&
      current_target_->replica >= 0 && error.severity != "FATAL") {
    spdlog::info("event=replica_unavailable_using_primary session={} shard={} error=\"{}\"", id_,
                 current_target_->shard, error.describe());
    current_target_->replica = -1;
    pool_ = &worker_.pool(*database_, *user_, current_target_->shard, -1);
    waiting_for_server_ = true;
    pool_->acquire(this, context().nowMs());  // may complete before it returns
    return;
  }
  if (!routing_ && transaction_status_ != 'I' && !resume_transaction_.empty()) {
    // A pass-through session's deferred BEGIN: its transaction fails here, as on any error, and
    // the server its next statement gets begins it failed (25P02 until it ends, as in Postgres;
    // answerPassThroughTransactionStatement answers its end without one). Failed already, it
    // stays so. A routed session answers for a failed transaction without a server
    // (spreadStatement).
    if (transaction_status_ == 'T') failDeferredTransaction();
  } else {
    // The BEGIN that was to open the transaction's part on that server has no server to run on:
    // kept, it would open a transaction on the next server the session gets, long after this one
    // ended (its ReadyForQuery would then say 'T' for good).
    resume_transaction_.clear();
  }
  Error e = error;
  if (e.detail.empty()) e.detail = "shardgate could not get a connection to the shard";
  if (state_ == State::kReady && e.severity != "FATAL") {
    // Transaction pooling: the client stays; what it sent fails as if a server had failed it.
    e.severity = "ERROR";
    if (batch_open_ || batch_spread_) {
      // A statement of an extended batch: as after any error in a batch, the rest of it is
      // skipped, and its transaction (the batch's own, or the client's) fails with it, so that
      // what ran on other shards rolls back.
      refuseStatement(e, /*extended_protocol=*/true);
      processPending();
      return;
    }
    // As any error does in Postgres, it aborts the open transaction: the shards it ran on so far
    // roll back (a COMMIT answers ROLLBACK), whatever else the client sends.
    if (transaction_status_ == 'T') transaction_status_ = 'E';
    rollBackFailedTransactionShards();
    failing_ = std::make_unique<Error>(std::move(e));
    processPending();
    return;
  }
  fatal(e);
}

void ClientSession::awaitedPools(std::vector<const backends::Pool*>& out) const {
  if (waiting_for_server_ && pool_ != nullptr) out.push_back(pool_);
  if (multi_run_) multi_run_->awaitedPools(out);
}

uint64_t ClientSession::waitingSinceMs() const {
  if (waiting_for_server_) return waitStartedMs();
  return multi_run_ ? multi_run_->waitingSinceMs() : 0;
}

void ClientSession::failWaits(const Error& error) {
  if (waiting_for_server_) {
    pool_->cancelWait(this);
    onServerUnavailable(error);  // may end the session: nothing of it is used after
    return;
  }
  if (multi_run_) multi_run_->failWaits(error);
}

// The session's user and database (at login, and after a reload at a transaction boundary): how
// its statements are routed and which pool serves them first.
void ClientSession::useDatabase(const conf::User* user, const conf::Database* database) {
  user_ = user;
  database_ = database;
  bool has_replicas = false;
  for (const auto& shard : database_->shards) has_replicas |= !shard.replicas.empty();
  // One shard without replicas: every statement goes to it, unparsed.
  routing_ = database_->shards.size() > 1 || has_replicas;
  manage_statements_ = transaction_pooling_ || routing_;
  current_target_ = Target{database_->default_shard, -1};
  pool_ = &worker_.pool(*database_, *user_, database_->default_shard);
}

void ClientSession::syncServer(std::function<void()> then) {
  // The hot path (every acquire under transaction pooling): the connection already has this
  // session's settings, so `then` runs at once, without wrapping it in another callback.
  const void* tag = settings_.tag(worker_.settingsInterner());
  if (tag != nullptr && server_->settingsTag() == tag && !server_->statements().hasEvictions()) {
    then();
    return;
  }
  syncing_server_ = true;
  syncSettings(server_, [this, then = std::move(then)](Status status) {
    syncing_server_ = false;
    if (!status.ok()) {
      fatal(status.error());
      return;
    }
    then();
  });
}

void ClientSession::syncSettings(backends::ServerConnection* server,
                                 std::function<void(Status)> then) {
  const void* tag = settings_.tag(worker_.settingsInterner());
  std::vector<std::string> evictions = server->statements().takeEvictions();
  if (tag != nullptr && server->settingsTag() == tag && evictions.empty()) {
    then({});  // the hot path: this connection already has this session's settings
    return;
  }
  std::string sql = settings_.syncSql(*server);
  for (const std::string& name : evictions) {
    if (!sql.empty()) sql += "; ";
    sql += "DEALLOCATE " + name;
  }
  if (sql.empty()) {
    server->setSettingsTag(tag);
    then({});
    return;
  }
  server->runInternal(sql, [this, server, tag, then = std::move(then)](Status status) {
    if (status.ok()) {
      settings_.markSynced(*server);
      // ParameterStatus replies to the SETs moved the server to what the client asked for.
      server->setSettingsTag(tag);
    }
    then(std::move(status));
  });
}

void ClientSession::finishLogin() {
  // What the client sees is what the server now has: its startup settings applied.
  settings_.setReported(server_->parameters());
  reportLogin(server_->parameters(), server_->transactionStatus());
  maybeReleaseServer();
  processPending();
}

// The end of a login: the reported settings, the cancel key and ReadyForQuery.
void ClientSession::reportLogin(const backends::ServerParameters& reported,
                                char transaction_status) {
  for (const auto& [name, value] : reported) {
    wire::writeParameterStatus(outputBuffer(), name, value);
  }
  auto key = worker_.server().cancelRegistry().add(CancelTarget{worker_.index(), id_});
  cancel_pid_ = key.process_id;
  cancel_secret_ = key.secret_key;
  wire::BackendKeyData{cancel_pid_, cancel_secret_}.encode(outputBuffer());
  transaction_status_ = transaction_status;
  wire::writeReadyForQuery(outputBuffer(), transaction_status_);
  scheduleFlush();
  state_ = State::kReady;
  // The login's messages grew the output buffer; many clients log in and then idle (application
  // pools), so it is freed once written (see onWriteDrained).
  release_buffers_when_drained_ = true;
  spdlog::info("event=client_login session={} user={} database={}", id_, user_name_,
               database_name_);
}

// ---- queries ---------------------------------------------------------------------------------

// No server could be had: every request the client has sent gets the error, the way Postgres
// answers a failed pipeline (one error per Query; one per extended batch, then ReadyForQuery
// at its Sync).
size_t ClientSession::failPendingRequests(std::string_view data) {
  const uint32_t max_size = worker_.config().general.max_message_size;
  size_t used = 0;
  wire::Frame frame;
  while (used < data.size()) {
    wire::FrameStatus status = wire::peekTyped(data.substr(used), max_size, frame);
    if (status == wire::FrameStatus::kNeedMore) break;
    if (status == wire::FrameStatus::kInvalid) {
      fatal(wire::frameTyped(data.substr(used), max_size).error);
      return data.size();
    }
    used += frame.size;
    switch (frame.type) {
      case wire::fe::kTerminate:
        state_ = State::kClosed;
        close();
        return data.size();
      case wire::fe::kQuery:
      case wire::fe::kFunctionCall:
        wire::writeError(outputBuffer(), *failing_);
        metrics_.countError(failing_->sqlstate);
        wire::writeReadyForQuery(outputBuffer(), transaction_status_);
        break;
      case wire::fe::kSync:
        if (!failed_batch_) {
          wire::writeError(outputBuffer(), *failing_);
          metrics_.countError(failing_->sqlstate);
        }
        wire::writeReadyForQuery(outputBuffer(), transaction_status_);
        failed_batch_ = false;
        break;
      default:  // part of an extended batch: one error for the batch
        if (!failed_batch_) {
          wire::writeError(outputBuffer(), *failing_);
          metrics_.countError(failing_->sqlstate);
        }
        failed_batch_ = true;
        break;
    }
  }
  scheduleFlush();
  if (!failed_batch_ && used == data.size()) failing_.reset();  // the next request tries again
  return used;
}

size_t ClientSession::handleClientMessages(std::string_view data) {
  if (admin_) return admin_->onData(data);
  if (!readyForNextTransaction(data)) return 0;
  if (failing_) return failPendingRequests(data);
  if (routing_) return routeClientMessages(data);
  if (server_ == nullptr && !waiting_for_server_) {
    // A loop rather than a call per message: a client may pipeline any number of BEGIN; COMMIT.
    size_t used = 0;
    while (used < data.size()) {
      const size_t n = answerPassThroughTransactionStatement(data.substr(used));
      if (n == 0) break;
      used += n;
      if (state_ != State::kReady || !readyForNextTransaction(data.substr(used))) return used;
    }
    // (What follows is no such statement: the call below goes on with it, not with this loop.)
    if (used > 0) return used + (used < data.size() ? handleClientMessages(data.substr(used)) : 0);
  }
  if (server_ == nullptr) {
    // Leaving needs no server.
    if (data[0] == wire::fe::kTerminate) {
      state_ = State::kClosed;
      close();
      return data.size();
    }
    if (!waiting_for_server_) {
      if (transaction_status_ != 'I') {
        // A transaction no server runs yet (a deferred BEGIN) holds no pool connection, so no
        // pool either: a RELOAD may have drained and freed the one pool_ named.
        pool_ = &worker_.pool(*database_, *user_, database_->default_shard);
      }
      waiting_for_server_ = true;
      pool_->acquire(this, context().nowMs());  // may complete before it returns
    }
  }
  if (server_ == nullptr || syncing_server_) return 0;  // kept until the server is ready
  return forwardClientMessages(data);
}

// ---- routing ---------------------------------------------------------------------------------

namespace {
// Errors of the parser itself (syntax, encoding, nesting), which a server reports better.
bool isParseError(const Error& error) {
  return error.sqlstate == sqlstate::kSyntaxError ||
         error.sqlstate == sqlstate::kCharacterNotInRepertoire ||
         error.sqlstate == sqlstate::kStatementTooComplex;
}

// How many parameters Postgres gives a statement: as many as Parse declared types for, or up to
// the highest $n its text uses if that is more.
size_t statementParameterCount(std::string_view query, size_t declared) {
  const std::vector<bool> referenced = planner::referencedParameters(query);
  const auto highest = std::find(referenced.rbegin(), referenced.rend(), true);
  return std::max(declared, static_cast<size_t>(referenced.rend() - highest));
}

// Postgres's 08P01 for a Bind of `supplied` values to a statement with `needed` parameters.
std::optional<Error> parameterCountError(size_t supplied, std::string_view statement,
                                         size_t needed) {
  if (supplied == needed) return std::nullopt;
  return Error::make(sqlstate::kProtocolViolation,
                     "bind message supplies " + std::to_string(supplied) +
                         " parameters, but prepared statement \"" + std::string(statement) +
                         "\" requires " + std::to_string(needed));
}

// The same for a multi-shard Bind, which shardgate answers itself. The shard statements tell the
// least there are; only more values than that need the client's text (`query`) read again, for a
// $n only shardgate evaluates (a LIMIT).
std::optional<Error> wrongParameterCount(const wire::Bind& bind,
                                         const planner::MultiShardPlan& plan, size_t declared,
                                         const std::string* query) {
  size_t needed = std::max(declared, planner::highestClientParameter(plan.statements));
  if (bind.params.size() > needed && query != nullptr) {
    needed = std::max(needed, statementParameterCount(*query, declared));
  }
  return parameterCountError(bind.params.size(), bind.statement, needed);
}

// Whether the message is an Execute of `portal` (well formed; a malformed one is refused later).
bool executesBoundPortal(char type, std::string_view payload, const std::string& portal) {
  if (type != wire::fe::kExecute) return false;
  auto execute = wire::Execute::decode(payload);
  return execute.ok() && execute->portal == portal;
}

// The portal a Bind names ("" for the unnamed one, or when the message is malformed: refused
// later).
std::string_view boundPortalName(std::string_view bind_payload) {
  wire::PayloadReader reader(bind_payload);
  std::string_view portal;
  return reader.readCString(portal) ? portal : std::string_view();
}

// Whether a statement that does `action` drops the named portals: COMMIT, ROLLBACK and PREPARE
// TRANSACTION end the transaction with them (an implicit one too); ROLLBACK TO drops those bound
// since its savepoint (which ones is not kept: all are forgotten, so that no Bind is refused
// wrongly).
bool endsPortals(planner::TransactionAction action) {
  using Action = planner::TransactionAction;
  return action == Action::kCommit || action == Action::kRollback || action == Action::kPrepare ||
         action == Action::kRollbackTo;
}

// Errors Postgres gives a Bind before it makes the portal, so before 42P03 for a name in use: no
// such statement, or not as many values as it has parameters.
bool failsBeforeItsPortal(const Error& error) {
  return error.sqlstate == sqlstate::kInvalidStatementName ||
         error.sqlstate == sqlstate::kProtocolViolation;
}

}  // namespace

Error ClientSession::notUtf8Statement() const {
  return Error::make(sqlstate::kFeatureNotSupported,
                     "shardgate reads statements in UTF-8; this one has non-ASCII characters in "
                     "client_encoding " +
                         std::string(settings_.reported("client_encoding").value_or("?")),
                     "Postgres converts the client's text to the database's encoding; shardgate "
                     "routes by the text and does not convert it.",
                     "SET client_encoding = 'UTF8'.");
}

// shardgate reads statements as Postgres does with standard_conforming_strings on. With it off,
// a backslash in a plain string literal escapes the next character, so a statement with a
// backslash could be read otherwise than the shards read it: routed by a key that is not one,
// rewritten with another value. Such a statement gets 0A000 rather than a wrong answer.
std::optional<Error> ClientSession::backslashesReadOtherwise(std::string_view sql) const {
  if (sql.find('\\') == std::string_view::npos) return std::nullopt;
  const std::optional<std::string_view> standard =
      settings_.reported("standard_conforming_strings");
  if (!standard || *standard != "off") return std::nullopt;
  return Error::make(sqlstate::kFeatureNotSupported,
                     "shardgate does not route statements with backslashes while "
                     "standard_conforming_strings is off",
                     "shardgate reads string literals as Postgres does with it on.",
                     "SET standard_conforming_strings = on, and write escapes as E'...'.");
}

// extra_float_digits as the open transaction has it: the session's, then its own SET, SET LOCAL
// and RESET (they count once it commits, but its statements see them now).
int ClientSession::extraFloatDigitsNow() const {
  int value = settings_.extraFloatDigits();
  for (const SettingChange& c : changes_in_transaction_) {
    const bool names_it = c.kind == SettingChange::Kind::kLocal
                              ? containsIgnoringCase(c.statement, "extra_float_digits")
                              : c.name == "extra_float_digits";
    if (c.kind == SettingChange::Kind::kResetAll ||
        (names_it && c.kind == SettingChange::Kind::kReset)) {
      value = 1;
    } else if (names_it) {
      value = SessionSettings::extraFloatDigitsSetBy(c.statement);
    }
  }
  return value;
}

bool ClientSession::clientSendsUtf8() const {
  return planner::clientEncodingIsUtf8(settings_.clientEncoding().value_or("UTF8"));
}

planner::SessionRouteContext ClientSession::routeContext() const {
  worker_.lookups().setSession(*database_, searchPathStatement(settings_.unreported()));
  planner::SessionRouteContext ctx;
  ctx.read_preference = readPreference();
  ctx.client_utf8 = clientSendsUtf8();
  ctx.in_transaction = transaction_status_ != 'I';
  ctx.transaction_wrote = txn_wrote_;
  ctx.transaction_read_only = txn_read_only_;
  if (txn_bound_ && current_target_) ctx.transaction_shard = current_target_->shard;
  ctx.transaction_may_span_shards = !pinned_;
  return ctx;
}

ClientSession::Target ClientSession::targetFor(const planner::RouteDecision& decision) {
  Target target;
  const bool wants_replica = decision.role == planner::Role::kReplica;
  if (decision.kind == planner::RouteDecision::Kind::kAnyShard) {
    // Any shard will do: stay where the session is, if that server has the role asked for.
    if (server_ && current_target_ && wants_replica == (current_target_->replica >= 0)) {
      return *current_target_;
    }
    target.shard = current_target_ ? current_target_->shard : database_->default_shard;
  } else {
    target.shard = decision.shard;
  }
  fallback_to_primary_ = false;
  if (decision.role == planner::Role::kReplica) {
    target.replica = replicaFor(target.shard, decision.primary_fallback);
    // prefer_replica: a replica that cannot be reached now sends the statement to the primary
    // instead (onServerUnavailable).
    fallback_to_primary_ = decision.primary_fallback && target.replica >= 0;
  }
  return target;
}

// The replica of `shard` a read goes to (-1: the primary). With `primary_fallback`
// (prefer_replica), one whose last login failed within kReplicaRetryMs is passed over.
int ClientSession::replicaFor(uint32_t shard, bool primary_fallback) {
  const int replica = worker_.chooseReplica(*database_, *user_, shard);
  if (replica >= 0 && primary_fallback &&
      worker_.pool(*database_, *user_, shard, replica)
          .loginFailedWithin(context().nowMs(), kReplicaRetryMs)) {
    return -1;
  }
  return replica;
}

// Terminate in the middle of a COPY FROM STDIN: the COPY fails on the server, as Postgres fails it
// ("unexpected message type 0x58 during COPY from stdin"), rather than waiting for rows that never
// come while it holds its connection and the table's lock.
void ClientSession::failCopyForTerminate() {
  if (server_ == nullptr || !server_->inCopyIn()) return;
  std::string fail;
  wire::CopyFail{"client terminated the connection during COPY from stdin"}.encode(fail);
  // The client's own Sync, if it sent one, was ignored during the COPY: this one ends the batch.
  if (server_->copyInFromExecute()) wire::Sync{}.encode(fail);
  server_->forward(fail);
}

// A statement of shardgate's own, sent to the held server in line with the client's requests:
// its replies, errors included, never reach the client.
void ClientSession::sendOwnQuery(std::string_view sql) {
  std::string query;
  wire::Query{std::string(sql)}.encode(query);
  server_->forward(query);
  server_->noteUnnamedStatementDropped();
  backends::ExpectedReply expected{
      backends::Reply::kReadyForQuery, backends::ReplyAction::kSwallow, nullptr, {}, {}};
  expected.inside_batch = batch_open_;
  server_->expect(std::move(expected));
}

// A Sync of shardgate's own, ending the held server's open batch; its ReadyForQuery is swallowed.
void ClientSession::sendOwnSync() {
  std::string sync;
  wire::Sync{}.encode(sync);
  server_->forward(sync);
  server_->expect(backends::ExpectedReply{
      backends::Reply::kReadyForQuery, backends::ReplyAction::kSwallow, nullptr, {}, {}});
}

// Replies shardgate makes itself go after whatever the held server still owes.
void ClientSession::answer(std::string bytes) {
  if (unnamed_parse_reply_pending_) {
    unnamed_parse_reply_pending_ = false;
    std::string reply;
    wire::ParseComplete{}.encode(reply);
    bytes.insert(0, reply);
  }
  if (server_ && server_->owesReplies()) {
    server_->expect(backends::ExpectedReply{backends::Reply::kReadyForQuery,
                                            backends::ReplyAction::kSynthesize,
                                            nullptr,
                                            {},
                                            std::move(bytes)});
  } else {
    send(bytes);
  }
}

void ClientSession::answerPendingUnnamedParse() {
  if (unnamed_parse_reply_pending_) answer({});
}

void ClientSession::answerParse(const std::string& name) {
  std::string reply;
  wire::ParseComplete{}.encode(reply);
  auto statement = name.empty() ? statements_.end() : statements_.find(name);
  if (server_ && server_->owesReplies() && statement != statements_.end()) {
    // (As Postgres skips a Parse after an error up to the Sync, the server's error drops this
    // answer and the statement with it: onStatementFailed.)
    server_->expect(backends::ExpectedReply{backends::Reply::kParseComplete,
                                            backends::ReplyAction::kSynthesize, statement->second,
                                            name, std::move(reply)});
    return;
  }
  answer(std::move(reply));
}

// The client's Parse of statement `name`, on the held server under the statement's server name:
// the server's ParseComplete or error is the client's answer. A server that has the statement
// already is not asked again.
void ClientSession::parseOnServer(const std::shared_ptr<backends::PreparedStatement>& statement,
                                  const std::string& name) {
  using backends::ExpectedReply;
  using backends::Reply;
  using backends::ReplyAction;
  batch_open_ = true;  // (the Parse opens a batch on the server, as any extended message does)
  if (server_->statements().has(statement->id())) {
    server_->statements().touch(statement->id());
    if (server_->transactionStatus() == 'E' && !server_->owesReplies() &&
        !endsTransaction(transactionControlOf(statement->query()))) {
      // A failed transaction: Postgres refuses the Parse (25P02) and skips the rest of the batch.
      // The connection has the statement under its server name, so the server is asked with the
      // same text as its unnamed statement; the error forgets the client's name again.
      std::string parse;
      wire::Parse{"", statement->query(), statement->paramTypes()}.encode(parse);
      server_->forward(parse);
      server_->noteUnnamedStatementDropped();  // (a failed Parse drops it too)
      server_->expect(
          ExpectedReply{Reply::kParseComplete, ReplyAction::kForward, nullptr, name, {}});
      return;
    }
    std::string reply;
    wire::ParseComplete{}.encode(reply);
    // With the statement and name: skipped after an earlier error, it defines nothing.
    server_->expect(ExpectedReply{Reply::kParseComplete, ReplyAction::kSynthesize, statement, name,
                                  std::move(reply)});
    return;
  }
  server_->forward(statement->parseMessage());
  server_->statements().add(statement);
  server_->expect(ExpectedReply{Reply::kParseComplete, ReplyAction::kForward, statement, name, {}});
}

// A Bind or Describe of a named statement whose own Parse (the client's, answered by the server)
// an earlier request still owes: whether that Parse succeeded decides whether the statement
// exists (26000 if not, as on Postgres), so the message must wait for the answer.
bool ClientSession::owesOwnParse(char type, std::string_view payload) const {
  if (server_ == nullptr || !server_->owesReplies() ||
      (type != wire::fe::kBind && type != wire::fe::kDescribe)) {
    return false;
  }
  wire::PayloadReader reader(payload);
  std::string_view name;
  uint8_t kind = 0;
  const bool read = type == wire::fe::kBind
                        ? reader.readCString(name) && reader.readCString(name)  // portal, statement
                        : reader.readInt8(kind) && kind == 'S' && reader.readCString(name);
  if (!read || name.empty()) return false;
  auto statement = statements_.find(std::string(name));
  return statement != statements_.end() && server_->owesClientParseEarlier(*statement->second);
}

// Where a routed session's named Parse is checked: a query (SELECT, INSERT, UPDATE, DELETE)
// whose tables are all on the held server's shard, or on the default shard when no server is held
// outside a transaction (every table is there: the sharded and reference tables are on every
// shard). nullopt: answered here, unchecked (the statement's first Bind meets its errors), as
// for other statements, which Postgres checks only when they run.
std::optional<ClientSession::Target> ClientSession::parseCheckTarget(
    const planner::QueryAnalysis& analysis) const {
  using planner::StatementKind;
  if (analysis.kind != StatementKind::kSelect && analysis.kind != StatementKind::kInsert &&
      analysis.kind != StatementKind::kUpdate && analysis.kind != StatementKind::kDelete) {
    return std::nullopt;
  }
  if (analysis.explain != planner::ExplainMode::kNone || analysis.unsupported) return std::nullopt;
  const bool on_every_shard = std::none_of(
      analysis.tables.begin(), analysis.tables.end(),
      [](const auto& table) { return table.table_class == planner::TableClass::kUnsharded; });
  if (server_ != nullptr) {
    if (!current_target_ || batch_spread_) return std::nullopt;
    if (on_every_shard || current_target_->shard == database_->default_shard) {
      return current_target_;
    }
    return std::nullopt;
  }
  if ((transaction_status_ != 'I' && !beginDeferred()) || !parked_.empty() || batch_spread_ ||
      pinned_) {
    return std::nullopt;
  }
  return Target{database_->default_shard, -1};
}

// No shard runs the transaction yet: the one that gets it (for a message that is not routed, as
// a Describe) has it fail at once, and answers as Postgres would in a failed transaction.
void ClientSession::failDeferredTransaction() {
  resume_transaction_ += "\n; ";
  resume_transaction_ += kFailTransaction;
}

void ClientSession::refuseStatement(const Error& error, bool extended_protocol) {
  std::string reply;
  wire::writeError(reply, error);
  metrics_.countError(error.sqlstate);
  // Postgres aborts the (explicit or implicit) transaction on an error: make the held server's
  // fail too, so that nothing the client sent before the refused statement commits. Parked
  // connections roll back now, or when the failed transaction ends
  // (rollBackFailedTransactionShards).
  if (server_ && (transaction_status_ != 'I' || batch_open_)) {
    sendOwnQuery(kFailTransaction);
  } else if (beginDeferred()) {
    failDeferredTransaction();
  }
  // The batch's settings changes are undone with it (the server's Sync ends it).
  if (server_ && extended_protocol) refused_request_ = ready_sent_ + 1;
  if (transaction_status_ != 'I') transaction_status_ = 'E';
  rollBackFailedTransactionShards();
  if (extended_protocol) {
    answer(std::move(reply));
    skipping_to_sync_ = true;  // as Postgres does after an error in a batch
    return;
  }
  wire::writeReadyForQuery(reply, transaction_status_);
  answer(std::move(reply));
}

// RESET shardgate.read_preference, RESET ALL, DISCARD ALL: the configured preference again.
void ClientSession::resetReadPreference() {
  read_preference_override_.reset();
  read_preference_local_.reset();
}

conf::ReadPreference ClientSession::readPreference() const {
  if (read_preference_local_) return *read_preference_local_;
  return read_preference_override_.value_or(conf::Config::readPreference(*database_, *user_));
}

// SET / SHOW / RESET shardgate.read_preference, answered here. SET LOCAL lasts until the
// transaction ends; a SET or RESET in a transaction supersedes it (as in Postgres) and is kept
// even if the transaction rolls back (unlike Postgres: see README).
void ClientSession::answerShardgateSetting(const planner::RouteDecision& decision) {
  std::string reply;
  switch (decision.setting_action) {
    case planner::SettingAction::kSet:
      if (decision.setting_local) {
        if (transaction_status_ == 'I') {
          Error warning = Error::make("25P01", "SET LOCAL can only be used in transaction blocks");
          warning.severity = "WARNING";
          wire::writeNotice(reply, warning);
        } else {
          read_preference_local_ = conf::parseReadPreference(decision.setting_value);
        }
      } else {
        read_preference_override_ = conf::parseReadPreference(decision.setting_value);
        read_preference_local_.reset();
      }
      wire::CommandComplete{"SET"}.encode(reply);
      break;
    case planner::SettingAction::kReset:
      resetReadPreference();
      wire::CommandComplete{"RESET"}.encode(reply);
      break;
    default: {
      const conf::ReadPreference preference = readPreference();
      wire::RowDescription description;
      wire::FieldDescription field;
      field.name = decision.setting_name;
      field.type_oid = 25;  // text
      field.type_size = -1;
      field.type_modifier = -1;
      description.fields.push_back(field);
      description.encode(reply);
      wire::DataRow{{std::string(conf::readPreferenceName(preference))}}.encode(reply);
      wire::CommandComplete{"SHOW"}.encode(reply);
      break;
    }
  }
  wire::writeReadyForQuery(reply, transaction_status_);
  answer(std::move(reply));
}

void ClientSession::answerExplainRoute(const planner::RouteDecision& decision) {
  std::string reply;
  wire::RowDescription description;
  wire::FieldDescription field;
  field.name = "QUERY PLAN";
  field.type_oid = 25;
  field.type_size = -1;
  field.type_modifier = -1;
  description.fields.push_back(field);
  description.encode(reply);
  for (const std::string& line : decision.explain_lines) wire::DataRow{{line}}.encode(reply);
  wire::CommandComplete{"EXPLAIN"}.encode(reply);
  wire::writeReadyForQuery(reply, transaction_status_);
  answer(std::move(reply));
}

// Ends an extended batch of only Parse / Describe on the held server with a Sync whose
// ReadyForQuery is swallowed; the pending input is processed again once the server caught up.
void ClientSession::endDescribeOnlyBatch() {
  sendOwnSync();
  batch_open_ = false;
  batch_part_ended_ = true;
  server_->notifyWhenCaughtUp();
}

// A statement of an open extended batch needs another shard than the batch's part so far. The
// batch is one transaction (implicit, or the client's own), so it spreads like a transaction
// that spans shards: this shard's part must have been answered (a Flush makes the server send
// what it holds until the Sync) and have succeeded; then it is parked and the batch goes on
// elsewhere. An implicit transaction is made explicit here first (BEGIN inside the batch makes
// what ran so far part of it), so that no shard's part commits before the client's Sync
// (endSpreadBatch). False: not now (the caller waits, or skips to the Sync after a failure).
bool ClientSession::spreadBatch() {
  if (pinned_) {
    refuseStatement(Error::make(sqlstate::kFeatureNotSupported,
                                "statements in one extended-protocol batch need different shards",
                                "the session is pinned to one shard connection by a "
                                "session-level feature (" +
                                    pin_reason_ + ")",
                                "send a Sync between statements for different shards"),
                    /*extended_protocol=*/true);
    return false;
  }
  if (server_->owesReplies()) {
    std::string flush;
    wire::Flush{}.encode(flush);
    server_->forward(flush);
    server_->notifyWhenCaughtUp();
    return false;
  }
  if (server_->transactionStatus() == 'E') {
    // A failed transaction: its server refuses the batch's statements; the rest of the batch is
    // skipped here, wherever it would have run. (An error inside this batch made the message loop
    // skip to the Sync already: batchFailedOnServer.)
    skipping_to_sync_ = true;  // endSpreadBatch reads this as the batch's failure
    return false;
  }
  if (batch_began_transaction_ && batch_binds_ == 1 && !txn_bound_) {
    // Only the client's BEGIN ran here (pgjdbc sends it with the transaction's first statement):
    // the transaction starts over on the shard it needs, as after a BEGIN sent on its own.
    if (transaction_status_ == 'I') {
      sendOwnSync();
      transaction_status_ = 'T';
    }
    return true;
  }
  settleBatchChangesSoFar();
  joinBatchToTransaction();
  txn_bound_ = true;  // this shard's part stays in the transaction (parked)
  return true;
}

// The open batch's statements so far have all succeeded on the held server, and the batch goes on
// as a transaction over shards: the settings they changed hold in it from here on, also on the
// shards that join it (transactionJoinSql), not only once the client's Sync is answered. Should
// the batch fail later, its transaction rolls back and takes them with it.
void ClientSession::settleBatchChangesSoFar() {
  settleChangesOfRequest(ready_sent_ + 1);
}

void ClientSession::settleChangesOfRequest(uint64_t ready_index, uint64_t before_seq) {
  while (!changes_in_flight_.empty() && changes_in_flight_.front().ready_index == ready_index &&
         changes_in_flight_.front().seq < before_seq) {
    joinTransactionChanges(changes_in_flight_.front().changes);
    changes_in_flight_.pop_front();
  }
}

void ClientSession::joinTransactionChanges(std::vector<SettingChange>& changes) {
  changes_in_transaction_.insert(changes_in_transaction_.end(),
                                 std::make_move_iterator(changes.begin()),
                                 std::make_move_iterator(changes.end()));
}

// The batch's statements so far ran on the held server (which has answered them all), and it
// goes on elsewhere. If the client's BEGIN was among them, the batch is in that transaction:
// this server's part of the batch ends with a Sync of shardgate's, and the transaction goes on
// after the client's Sync. Otherwise the batch's implicit transaction is made explicit (BEGIN
// inside the batch takes in what ran so far), and it ends at the client's Sync (endSpreadBatch).
void ClientSession::joinBatchToTransaction() {
  if (transaction_status_ != 'I') return;
  if (batch_began_transaction_) {
    sendOwnSync();
    transaction_status_ = 'T';  // shardgate's view until the server's next ReadyForQuery
  } else {
    sendOwnQuery("BEGIN");
    spreadImplicitBatch();
  }
}

// The open batch has no BEGIN of the client's: shardgate runs it as a transaction of its own over
// the shards, begun with BEGIN on each (transactionJoinSql) and ended at the client's Sync
// (endSpreadBatch), which the client then sees as 'I' again.
void ClientSession::spreadImplicitBatch() {
  batch_spread_ = true;
  txn_begin_sql_ = "BEGIN";
  transaction_status_ = 'T';
}

// The client's Sync ends a batch spread over shards: the current server's part is synced, then
// every shard commits its part in turn (or all roll back if one failed), and the Sync is
// answered as Postgres answers it for an implicit transaction. A commit that fails rolls back the
// shards not yet committed, and its error goes to the client. False: not yet (the Sync is
// processed again when the shards have answered).
bool ClientSession::endSpreadBatch() {
  if (waiting_for_server_ || syncing_server_ || ending_parked_) return false;
  if (server_ != nullptr) {
    if (!batch_spread_synced_) {
      sendOwnSync();
      batch_spread_synced_ = true;
    }
    if (server_->owesReplies()) {
      server_->notifyWhenCaughtUp();
      return false;
    }
  }
  if (server_ != nullptr || !parked_.empty()) {
    // Failed: an error from a server (request_failed_ lasts until a ReadyForQuery reaches the
    // client, which none does inside the batch), or one shardgate answered (it skipped to this
    // Sync). What is known now is all there is: the current server has answered everything.
    bool failed = request_failed_ || skipping_to_sync_ || transaction_status_ == 'E' ||
                  (server_ != nullptr && server_->transactionStatus() != 'T');
    if (server_ != nullptr) {
      park(server_, pool_, current_target_->shard);
      server_ = nullptr;
      current_target_.reset();
    }
    // As for a COMMIT over shards: deferred constraints and triggers are checked on every shard
    // before any commits, and a client that leaves from here on does not stop the commit half way
    // (Postgres runs a batch whose Sync it has to the end).
    committing_spread_ = !failed;
    if (!failed && parked_.size() > 1) {
      if (every_shard_run_ == EveryShardRun::kRunning) return false;
      if (every_shard_run_ == EveryShardRun::kNone) {
        every_shard_run_ = EveryShardRun::kRunning;
        runOnNextParked(nullptr, "SET CONSTRAINTS ALL IMMEDIATE", /*rolls_back=*/false);
        return false;  // the Sync comes again when every shard has checked
      }
      every_shard_run_ = EveryShardRun::kNone;
      if (every_shard_error_) {
        spread_end_error_ = std::move(every_shard_error_);
        failed = true;
      }
    }
    ending_parked_ = true;
    batch_spread_failed_ = failed;
    endNextParked(failed ? "ROLLBACK" : "COMMIT");
    return false;
  }
  // The client's Sync, answered here, settles what the batch SET as its ReadyForQuery would have
  // (every server has answered all it owed by now).
  ++ready_sent_;
  request_failed_ = spread_end_error_ != nullptr || batch_spread_failed_;
  rollback_seen_ = false;
  settleSettingChanges('I');
  std::string reply;
  if (spread_end_error_) {
    metrics_.countError(spread_end_error_->sqlstate);
    wire::writeError(reply, *spread_end_error_);
  }
  wire::writeReadyForQuery(reply, 'I');
  spread_end_error_.reset();
  batch_spread_ = false;
  batch_spread_synced_ = false;
  batch_spread_failed_ = false;
  batch_open_ = false;
  batch_part_ended_ = false;
  batch_executes_ = false;
  batch_began_transaction_ = false;
  batch_binds_ = 0;
  multi_bound_.reset();
  skipping_to_sync_ = false;
  request_failed_ = false;
  forgetTransaction();
  send(reply);
  return true;
}

// A transaction shardgate ended itself (on several shards): what the session knew of it goes.
void ClientSession::forgetTransaction() {
  committing_spread_ = false;
  resume_transaction_.clear();  // a BEGIN still owed to a server joins no transaction now
  changes_in_transaction_.clear();
  savepoint_marks_.clear();
  transaction_status_ = 'I';
  forgetTransactionRoute();
  dropPortals();
}

// What routing knew of the open transaction: the shard it is bound to, how it began, ...
void ClientSession::forgetTransactionRoute() {
  read_preference_local_.reset();
  txn_bound_ = false;
  txn_wrote_ = false;
  txn_read_only_ = false;
  txn_begin_sql_.clear();
  txn_replay_sql_.clear();
  txn_replay_has_savepoint_ = false;
  txn_savepoints_.clear();
  named_portals_.clear();  // a transaction's portals end with it
}

// Gets the session onto `target`'s server: kReady when it is held and ready now; kWait when the
// session must wait (for owed replies, a release, an acquisition or a settings sync), after
// which the pending input is processed again; kRefused when the statement was answered with an
// error as its protocol needs (the extended protocol's with skipping_to_sync_ set, its batch
// failing on the server included).
ClientSession::MoveOutcome ClientSession::moveTo(const Target& target, bool extended_protocol) {
  const auto ready = [this] { return syncing_server_ ? MoveOutcome::kWait : MoveOutcome::kReady; };
  if (server_ && current_target_ && *current_target_ == target) return ready();
  if (waiting_for_server_ || syncing_server_) return MoveOutcome::kWait;
  if (server_) {
    if (batch_open_ && !batch_executes_) {
      // Only Parse / Describe so far (asyncpg describes a statement before binding it): end
      // that batch on this server, then move.
      endDescribeOnlyBatch();
      return MoveOutcome::kWait;
    }
    if (batch_open_ && !spreadBatch()) {
      return skipping_to_sync_ ? MoveOutcome::kRefused : MoveOutcome::kWait;
    }
    if (server_->owesReplies()) {
      server_->notifyWhenCaughtUp();  // the move waits for the replies
      return MoveOutcome::kWait;
    }
    if (pinned_) {
      refuseStatement(
          Error::make(sqlstate::kFeatureNotSupported,
                      "this session is pinned to one shard connection",
                      "it used a session-level feature (" + pin_reason_ + ") on shard " +
                          planner::shardName(*database_, current_target_->shard),
                      "run the statement in another session"),
          extended_protocol);
      return MoveOutcome::kRefused;
    }
    backends::ServerConnection* server = server_;
    server_ = nullptr;
    bool in_transaction = transaction_status_ != 'I';
    if (in_transaction && txn_bound_) {
      // The transaction spans shards: this shard's part waits, parked, for the end.
      park(server, pool_, current_target_->shard);
    } else if (in_transaction) {
      // Only BEGIN and statements any shard can run have happened: start over on the shard the
      // transaction really needs.
      resume_transaction_ =
          (txn_begin_sql_.empty() ? std::string("BEGIN") : txn_begin_sql_) + txn_replay_sql_;
      rollBackAndRelease(server, pool_, idleRelease());
    } else {
      pool_->release(server, idleRelease(), context().nowMs());
    }
  }
  if (transaction_status_ != 'I') {
    backends::Pool* parked_pool = nullptr;
    if (backends::ServerConnection* parked = unpark(target.shard, &parked_pool)) {
      // Back to a shard this transaction already runs on.
      current_target_ = target;
      pool_ = parked_pool;
      server_ = parked;
      server_->attach(this);
      return MoveOutcome::kReady;
    }
    if (txn_bound_ || !parked_.empty()) {
      // The shard joins the transaction: it begins there as it began on the first one.
      resume_transaction_ = transactionJoinSql();
    }
  }
  current_target_ = target;
  pool_ = &worker_.pool(*database_, *user_, target.shard, target.replica);
  waiting_for_server_ = true;
  pool_->acquire(this, context().nowMs());  // may complete before it returns
  return server_ != nullptr ? ready() : MoveOutcome::kWait;
}

size_t ClientSession::routeClientMessages(std::string_view data) {
  const uint32_t max_size = worker_.config().general.max_message_size;
  size_t used = 0;
  wire::Frame frame;
  while (used < data.size()) {
    if (waiting_for_server_ || syncing_server_) return used;
    // The rest waits for the multi-shard statement running (unless it is a COPY taking rows).
    if (multi_run_ && !multi_run_->acceptsCopyData()) return used;
    if (lookup_wait_ && lookup_wait_->waiting())
      return used;  // routed again once the lookups answer
    wire::FrameStatus status = wire::peekTyped(data.substr(used), max_size, frame);
    if (status == wire::FrameStatus::kNeedMore) break;
    if (status == wire::FrameStatus::kInvalid) {
      fatal(wire::frameTyped(data.substr(used), max_size).error);
      return data.size();
    }
    const char type = frame.type;
    std::string_view message = data.substr(used, frame.size);
    if (multi_run_) {
      if (type == wire::fe::kCopyData || type == wire::fe::kCopyDone ||
          type == wire::fe::kCopyFail) {
        if (multi_run_->copyCongested(worker_.config().general.client_buffer_limit)) {
          // The shards take rows more slowly: stop reading until they drain (TCP slows the
          // client), so what shardgate holds stays bounded.
          paused_for_copy_ = true;
          stopReading();
          return used;
        }
        used += frame.size;
        multi_run_->copyFromClient(type, frame.payload);
        continue;
      }
      if (type == wire::fe::kFlush || type == wire::fe::kSync) {
        used += frame.size;  // ignored during COPY, as Postgres does
        continue;
      }
      fatal(Error::fatal(sqlstate::kProtocolViolation, std::string("unexpected message type '") +
                                                           type + "' during COPY from stdin"));
      return data.size();
    }
    if (server_ == nullptr && (type == wire::fe::kCopyData || type == wire::fe::kCopyDone ||
                               type == wire::fe::kCopyFail)) {
      used += frame.size;  // after a failed COPY: dropped, as Postgres drops them
      continue;
    }
    if (type == wire::fe::kTerminate) {
      failCopyForTerminate();
      if (outstanding_ > 0 && !batch_open_) {
        // What the client sent before Terminate still runs to its end, as in Postgres (even in
        // the same packet); then the session closes (onServerReadyForQuery). An unsynced batch
        // is rolled back by leaving, as Postgres does.
        terminating_ = true;
        stopReading();
        return data.size();
      }
      releaseServer(/*client_left=*/true);
      state_ = State::kClosed;
      close();
      return data.size();
    }
    if (type == wire::fe::kSync && transaction_status_ == 'I' && !batch_began_transaction_) {
      named_portals_.clear();  // the batch's implicit transaction ends here, and its portals
    }
    const bool describes_portal_first =
        multi_bound_ && multi_bound_->describe && !multi_bound_->executed;
    if (batch_spread_ && type == wire::fe::kSync && !describes_portal_first) {
      // (A portal over shards described before this Sync is run first, below, for its columns.)
      if (!endSpreadBatch()) return used;
      used += frame.size;
      continue;
    }
    // The ones this session would answer itself (Parse, Close) are skipped too, not answered.
    if (batchFailedOnServer()) skipping_to_sync_ = true;
    if (skipping_to_sync_) {
      unnamed_parse_reply_pending_ = false;  // its Parse is skipped with it, as on Postgres
      if (type != wire::fe::kSync) {
        used += frame.size;
        continue;
      }
      skipping_to_sync_ = false;
      batch_part_ended_ = false;
      if (!server_) {
        answerSync();
        used += frame.size;
        continue;
      }
    }

    if (type == wire::fe::kClose && !named_portals_.empty()) {
      // A closed portal's name may be bound again (read again after a wait: no matter).
      wire::PayloadReader reader(frame.payload);
      uint8_t kind = 0;
      std::string_view name;
      if (reader.readInt8(kind) && kind == 'P' && reader.readCString(name)) {
        std::erase(named_portals_, name);
      }
    }
    if (!suspended_portals_.empty() || !bound_portals_.empty() || !completed_portals_.empty()) {
      const PortalStep step = continueKeptPortal(type, frame.payload);
      if (step == PortalStep::kWait) return used;
      if (step == PortalStep::kAnswered) {
        used += frame.size;
        continue;
      }
    }
    // The collation read at Bind may have been dropped by a reload since: read it again first.
    if (multi_bound_ && !multi_bound_->executed && awaitCollation(multi_bound_->decision)) {
      return used;
    }
    if (multi_bound_ && multi_bound_->describe && !multi_bound_->executed &&
        !executesBoundPortal(type, frame.payload, multi_bound_->bind.portal)) {
      // The portal was described and the client wants the answer before any Execute of it: at a
      // Sync or Flush, or because another message follows, whose replies come after that one.
      if (!readyForMultiShard()) return used;
      describeBoundPortalNow();
      continue;  // the message is read again once the run has ended
    }
    if (multi_bound_ &&
        handleMultiShardBatchMessage(type, frame.payload,
                                     syncComesNext(data.substr(used + frame.size), max_size))) {
      used += frame.size;
      continue;
    }

    // (awaitOwedReplies flushes the batch this message is in, which has no Sync yet.)
    if (owesOwnParse(type, frame.payload) && awaitOwedReplies()) return used;

    // Where does this message run?
    std::optional<Target> target;
    if (transaction_status_ == 'E' && server_ != nullptr && parked_.empty() &&
        server_->transactionStatus() == 'E') {
      // A failed transaction: its server refuses everything but the end of it (25P02). Unless
      // a pipelined ROLLBACK or COMMIT still owes its reply: then the transaction may be over,
      // and the statement must be routed once the server says so.
      if (type == wire::fe::kQuery && !batch_open_ && awaitOwedReplies()) return used;
      if (type == wire::fe::kBind) {
        // The server ends the failed transaction at a COMMIT or ROLLBACK and runs the rest of the
        // batch on its own: what follows in the batch must be for this server, or be refused.
        auto decision = routeBind(frame.payload);
        if (decision.ok() && failed_transaction_ended_in_batch_ &&
            decision->kind != planner::RouteDecision::Kind::kAnyShard &&
            !(decision->kind == planner::RouteDecision::Kind::kShard && current_target_ &&
              decision->shard == current_target_->shard)) {
          used += frame.size;
          refuseStatement(Error::make(sqlstate::kFeatureNotSupported,
                                      "a statement for other shards cannot follow the end of a "
                                      "failed transaction in the same extended-protocol batch",
                                      decision->reason, "send a Sync after the ROLLBACK"),
                          /*extended_protocol=*/true);
          continue;
        }
        if (decision.ok() && (decision->transaction == planner::TransactionAction::kCommit ||
                              decision->transaction == planner::TransactionAction::kRollback)) {
          failed_transaction_ended_in_batch_ = true;
        }
      }
      target = current_target_;
    } else if (type == wire::fe::kQuery) {
      std::string_view sql = frame.payload;
      if (sql.empty() || sql.find('\0') + 1 != sql.size()) {
        // Not one NUL-terminated string: routed by the text up to a NUL, the statement could go
        // where its bytes do not belong. Postgres answers these with an ERROR too.
        used += frame.size;
        refuseStatement(
            Error::make(sqlstate::kProtocolViolation, sql.find('\0') == std::string_view::npos
                                                          ? "invalid string in message"
                                                          : "invalid message format"),
            /*extended_protocol=*/false);
        continue;
      }
      sql.remove_suffix(1);
      if (std::optional<Error> error = backslashesReadOtherwise(sql)) {
        if (awaitOwedReplies()) return used;
        used += frame.size;
        refuseStatement(*error, /*extended_protocol=*/false);
        continue;
      }
      if (!suspended_portals_.empty() && answerMoveOnKeptPortal(sql)) {
        used += frame.size;
        continue;
      }
      if (interceptShardgateCall(sql)) {  // shardgate.move_key(...)
        used += frame.size;
        continue;
      }
      auto decision = worker_.router().routeSimple(*database_, sql, routeContext());
      if (!decision.ok() && decision.error().sqlstate == sqlstate::kCharacterNotInRepertoire &&
          !clientSendsUtf8()) {
        // Not UTF-8, in the client's encoding: Postgres would convert it, but shardgate cannot
        // read it, and a server it picked blindly could be the wrong shard for it.
        decision = notUtf8Statement();
      }
      if (!decision.ok() && isParseError(decision.error())) {
        // Postgres words (and positions) its own syntax errors: let a server report it.
        target =
            server_ && current_target_ ? *current_target_ : Target{database_->default_shard, -1};
      } else if (!decision.ok()) {
        if (awaitOwedReplies()) return used;
        used += frame.size;
        refuseStatement(decision.error(), /*extended_protocol=*/false);
        continue;
      } else if ((decision->kind == planner::RouteDecision::Kind::kExplainRoute ||
                  decision->kind == planner::RouteDecision::Kind::kShardgateSetting ||
                  (decision->kind == planner::RouteDecision::Kind::kAnyShard && !txn_bound_ &&
                   !batch_open_)) &&
                 awaitOwedReplies()) {
        // (A statement any shard runs, in a transaction not bound to a shard yet, is replayed
        // where the transaction moves: whether it is in one, a pipelined BEGIN's reply tells.)
        return used;
      } else if (decision->kind == planner::RouteDecision::Kind::kNeedsLookup &&
                 awaitLookups(*decision)) {
        return used;
      } else if (deferBegin(*decision, sql)) {
        used += frame.size;
        continue;
      } else if (SpreadOutcome outcome = spreadIfNeeded(*decision, false, sql);
                 outcome != SpreadOutcome::kRun) {
        if (outcome == SpreadOutcome::kWait) return used;
        used += frame.size;
        continue;
      } else if (decision->kind == planner::RouteDecision::Kind::kMultiShard) {
        if (awaitCollation(*decision) || !readyForMultiShard()) return used;
        used += frame.size;
        startMultiShard(*decision, nullptr, /*describe=*/true);
        continue;
      } else if (!handleDecision(*decision, sql, /*extended_protocol=*/false, target)) {
        used += frame.size;
        continue;
      }
    } else if (type == wire::fe::kBind) {
      const std::string_view portal = boundPortalName(frame.payload);
      // (Bound earlier in the transaction, maybe on another shard's server or here.)
      const bool portal_in_use = !portal.empty() && portalBound(portal);
      auto decision = routeBind(frame.payload, /*check_count=*/portal_in_use);
      if (portal_in_use && (decision.ok() || !failsBeforeItsPortal(decision.error()))) {
        used += frame.size;
        refuseStatement(duplicatePortal(portal), /*extended_protocol=*/true);
        continue;
      }
      if (decision.ok() && endsPortals(decision->transaction)) {
        // The transaction (or what ran since a savepoint) ends before the batch's next Bind.
        named_portals_.clear();
      }
      // A statement over several shards is answered here, its ParseComplete with its Bind's
      // answer (answer()); not before, as it may wait for owed replies first, which may say that
      // the transaction failed (then its Parse fails with 25P02: on the server it goes to, or
      // here in a transaction over shards).
      const bool answered_with_bind =
          decision.ok() && decision->kind == planner::RouteDecision::Kind::kMultiShard;
      if (unnamed_parse_reply_pending_ && transaction_status_ == 'E' && decision.ok() &&
          !endsTransaction(decision->transaction)) {
        // The transaction failed before this batch (as the replies waited for have told): Postgres
        // refuses the statement's Parse with 25P02, so no ParseComplete.
        unnamed_parse_reply_pending_ = false;
      }
      if (unnamed_parse_reply_pending_ && !answered_with_bind &&
          (!decision.ok() || decision->kind != planner::RouteDecision::Kind::kShard ||
           decision->transaction != planner::TransactionAction::kNone)) {
        // Only a statement passed to one shard has its Parse sent there with its Bind (also in a
        // transaction over shards, which may have begun at this very Bind: its Parse's error,
        // or the 25P02 of a failed transaction, then comes without a ParseComplete first).
        answerPendingUnnamedParse();
      }
      if (!decision.ok()) {
        used += frame.size;
        refuseStatement(decision.error(), /*extended_protocol=*/true);
        continue;
      }
      if (decision->kind == planner::RouteDecision::Kind::kNeedsLookup && awaitLookups(*decision)) {
        return used;
      }
      if (SpreadOutcome outcome = spreadIfNeeded(*decision, true, last_bound_text_);
          outcome != SpreadOutcome::kRun) {
        if (outcome == SpreadOutcome::kWait) return used;
        used += frame.size;
        continue;
      }
      if (decision->kind == planner::RouteDecision::Kind::kMultiShard) {
        if (awaitCollation(*decision) || !readyForMultiShard()) return used;
        used += frame.size;
        auto bind = wire::Bind::decode(frame.payload);  // routeBind decoded it already
        const std::string* query = nullptr;
        const std::vector<int32_t>* types = nullptr;
        boundStatement(bind->statement, query, types);  // routeBind found it
        // (A decision without a plan is refused at Execute: startMultiShard.)
        if (std::optional<Error> error =
                decision->multi
                    ? wrongParameterCount(*bind, *decision->multi, types ? types->size() : 0, query)
                    : std::nullopt) {
          // The shards would say so only at Execute; shardgate answers this Bind itself.
          refuseStatement(*error, /*extended_protocol=*/true);
          continue;
        }
        multi_bound_ = std::make_unique<BoundMultiShard>();
        multi_bound_->decision = std::move(decision).value();
        multi_bound_->bind = std::move(bind).value();
        notePortalBound(multi_bound_->bind.portal);
        std::string reply;
        wire::BindComplete{}.encode(reply);
        answer(std::move(reply));
        continue;
      }
      std::string_view statement_text = last_bound_text_;
      if (!handleDecision(*decision, statement_text, /*extended_protocol=*/true, target)) {
        used += frame.size;
        continue;
      }
    } else if (type == wire::fe::kParse) {
      // Statements are prepared where they are bound: remembered and answered here.
      {
        auto parse = wire::Parse::decode(frame.payload);
        if (!parse.ok()) {
          fatal(parse.error());
          return data.size();
        }
        if (std::optional<Error> error = backslashesReadOtherwise(parse->query)) {
          used += frame.size;  // (before the analysis, which reads the text otherwise)
          refuseStatement(*error, /*extended_protocol=*/true);
          continue;
        }
        auto analysis = worker_.router().prepare(*database_, parse->query, parse->param_types);
        used += frame.size;
        if (!analysis.ok()) {
          const bool not_utf8 = analysis.error().sqlstate == sqlstate::kCharacterNotInRepertoire &&
                                !clientSendsUtf8();
          refuseStatement(not_utf8 ? notUtf8Statement() : analysis.error(),
                          /*extended_protocol=*/true);
          continue;
        }
        if (transaction_status_ == 'E' && !endsTransaction((*analysis)->transaction)) {
          // Postgres refuses the Parse itself in a failed transaction, as any statement but its
          // end.
          refuseStatement(failedTransactionError(),
                          /*extended_protocol=*/true);
          continue;
        }
        if (!parse->name.empty() && statements_.count(parse->name) > 0) {
          refuseStatement(Error::make(sqlstate::kDuplicatePreparedStatement,
                                      "prepared statement \"" + parse->name + "\" already exists"),
                          /*extended_protocol=*/true);
          continue;
        }
        // A named statement is parsed by a shard that has its tables, where one can be had, so
        // that a missing table or column fails the Parse as on Postgres (not its first Bind).
        const std::optional<Target> parse_target =
            parse->name.empty() ? std::nullopt : parseCheckTarget(**analysis);
        if (parse_target) {
          const MoveOutcome move = moveTo(*parse_target, /*extended_protocol=*/true);
          if (move == MoveOutcome::kWait) return used - frame.size;  // read again, unchanged
          if (move == MoveOutcome::kRefused) continue;
        }
        if (!worker_.sessionEffectFree(parse->query)) {
          // (Session pooling pins at Parse: a spread batch or transaction's end gives back the
          // connections it moved between, the one a Bind pinned among them.)
          noteParsedEffects(parse->name, sessionEffectsOf(parse->query),
                            /*pin_at_bind=*/transaction_pooling_);
        } else {
          forgetStatementEffects(parse->name);
        }
        rememberParse(*parse);
        metrics_.statementText(type, frame.payload);
        wire::Frame next;
        if (parse->name.empty() &&
            wire::peekTyped(data.substr(used), max_size, next) == wire::FrameStatus::kComplete &&
            next.type == wire::fe::kBind && bindsUnnamedStatement(next.payload)) {
          unnamed_parse_reply_pending_ = true;  // (drivers' Parse, Bind, Execute of a statement)
        } else if (parse_target) {
          parseOnServer(statements_.at(parse->name), parse->name);
        } else {
          answerParse(parse->name);
        }
        continue;
      }
    } else if (server_ == nullptr) {
      if (type == wire::fe::kSync) {
        used += frame.size;
        answerSync();
        continue;
      }
      if (type == wire::fe::kFlush) {
        used += frame.size;
        continue;
      }
      if (type == wire::fe::kClose) {
        auto close_msg = wire::Close::decode(frame.payload);
        if (close_msg.ok() && close_msg->kind == 'S') statements_.erase(close_msg->name);
        used += frame.size;
        std::string reply;
        wire::CloseComplete{}.encode(reply);
        send(reply);
        continue;
      }
      target = Target{database_->default_shard, -1};
    }
    if (target) {
      const MoveOutcome move = moveTo(*target, /*extended_protocol=*/type != wire::fe::kQuery);
      if (move != MoveOutcome::kReady) {
        if (move == MoveOutcome::kRefused && type == wire::fe::kQuery) {
          used += frame.size;  // answered with its error and ReadyForQuery
          continue;
        }
        if (skipping_to_sync_) continue;  // refused, or its batch failed: skipped to the Sync
        return used;
      }
    }
    if (server_ == nullptr) return used;
    // The server is held and in line: pass the message on, as the unrouted path does.
    size_t consumed = forwardClientMessages(message);
    if (closing() || state_ == State::kClosed) return data.size();
    if (consumed == 0) return used;
    used += consumed;
    if (type == wire::fe::kQuery || type == wire::fe::kBind) noteRoutedStatement();
  }
  return used;
}

// Applies a routing decision. Returns true if the statement must run on `target`; false if it
// was answered here.
bool ClientSession::handleDecision(const planner::RouteDecision& decision, std::string_view sql,
                                   bool extended_protocol, std::optional<Target>& target) {
  using Kind = planner::RouteDecision::Kind;
  metrics_.routeDecided(decision);
  switch (decision.kind) {
    case Kind::kExplainRoute:
      if (extended_protocol) {
        refuseStatement(
            Error::make(sqlstate::kFeatureNotSupported,
                        "EXPLAIN (ROUTE) is answered in the simple query protocol only"),
            true);
      } else {
        answerExplainRoute(decision);
      }
      return false;
    case Kind::kShardgateSetting:
      if (extended_protocol) {
        refuseStatement(
            Error::make(sqlstate::kFeatureNotSupported,
                        "shardgate.* settings are handled in the simple query protocol only"),
            true);
      } else {
        answerShardgateSetting(decision);
      }
      return false;
    case Kind::kNeedsLookup:  // awaitLookups() could not get the answers
      refuseStatement(lookupWait().takeError(), extended_protocol);
      return false;
    default:
      break;
  }
  target = targetFor(decision);
  pending_decision_ = PendingRoute{decision.kind == Kind::kShard, decision.writes,
                                   decision.begins_read_only_transaction, decision.resets_session};
  // Noted once the server has run it (a savepoint's CommandComplete comes only in a transaction
  // block), not by transaction_status_, which lags behind pipelined queries. (A simple Query of
  // several statements notes its COMMIT and ROLLBACK statements itself: applyQueryEffects.)
  if (!decision.savepoint_name.empty() ||
      (extended_protocol && (decision.transaction == planner::TransactionAction::kCommit ||
                             decision.transaction == planner::TransactionAction::kRollback))) {
    expectControl(decision.transaction, decision.savepoint_name, txn_bound_);
  }
  // (A batch that began with BEGIN is in its transaction before the server says so.)
  const bool in_transaction =
      transaction_status_ != 'I' || (extended_protocol && batch_began_transaction_);
  pending_replay_sql_.clear();
  // An extended statement is replayed only without parameters (its text is then all of it).
  // (Checked last: the scan of the text is for the rare statement that may be replayed.)
  // (Not the BEGIN itself: a Bind of BEGIN that waited for a server comes here again, after
  // batch_began_transaction_ was set by its first pass.)
  if (in_transaction && !txn_bound_ && decision.kind == planner::RouteDecision::Kind::kAnyShard &&
      decision.transaction != planner::TransactionAction::kBegin &&
      (!extended_protocol || sql.find('$') == std::string_view::npos)) {
    // Runs in a transaction not yet bound to a shard: replayed if the transaction moves, and
    // where it spreads.
    pending_replay_sql_ = std::string(sql);
    // (Noted before it runs: a failed SAVEPOINT only keeps a failed transaction's shards waiting.)
    if (decision.transaction == planner::TransactionAction::kSavepoint) {
      txn_replay_has_savepoint_ = true;
    }
  }
  if (decision.transaction == planner::TransactionAction::kBegin && transaction_status_ == 'I') {
    txn_begin_sql_ = std::string(sql);
  }
  if (extended_protocol && transaction_status_ != 'I' &&
      (decision.transaction == planner::TransactionAction::kCommit ||
       decision.transaction == planner::TransactionAction::kRollback ||
       decision.transaction == planner::TransactionAction::kPrepare)) {
    // The server ends the transaction here and runs the rest of the batch as a new implicit one
    // (if this fails, the rest is skipped): shardgate's view follows at once (noteRoutedStatement).
    pending_decision_->ends_transaction = true;
  }
  if (extended_protocol && transaction_status_ == 'I') {
    if (decision.transaction == planner::TransactionAction::kBegin) {
      batch_began_transaction_ = true;
    } else if (decision.transaction == planner::TransactionAction::kCommit ||
               decision.transaction == planner::TransactionAction::kRollback ||
               decision.transaction == planner::TransactionAction::kPrepare) {
      batch_began_transaction_ = false;
    }
  }
  return true;
}

// After a routed statement was passed to its server: what it tells about the transaction.
void ClientSession::noteRoutedStatement() {
  if (!pending_decision_) return;
  const PendingRoute& d = *pending_decision_;
  if (d.binds_shard) txn_bound_ = true;
  if (!pending_replay_sql_.empty()) {
    txn_replay_sql_ += "\n; " + pending_replay_sql_;  // (a line break ends a -- comment)
    pending_replay_sql_.clear();
  }
  if (d.writes) txn_wrote_ = true;
  if (d.begins_read_only_transaction) txn_read_only_ = true;
  if (d.resets_session) resetReadPreference();
  if (d.ends_transaction) {
    transaction_status_ = 'I';
    forgetTransactionRoute();
    batch_began_transaction_ = false;
  }
  pending_decision_.reset();
}

// The unnamed statement was parsed before this server was held (or on another one): parse it
// here first, its ParseComplete swallowed.
void ClientSession::ensureUnnamedPrepared() {
  if (unnamed_version_ == 0 || server_->hasUnnamedStatement(this, unnamed_version_)) {
    answerPendingUnnamedParse();
    return;
  }
  std::string parse;
  wire::Parse{"", unnamed_query_, unnamed_types_}.encode(parse);
  server_->forward(parse);
  // The client's own ParseComplete when it is still owed: the server's, or its error.
  const bool for_client = std::exchange(unnamed_parse_reply_pending_, false);
  server_->expect(backends::ExpectedReply{
      backends::Reply::kParseComplete,
      for_client ? backends::ReplyAction::kForward : backends::ReplyAction::kSwallow,
      nullptr,
      {},
      {}});
  server_->setUnnamedStatement(this, unnamed_version_);
}

bool ClientSession::rememberPlainUnnamedParse(std::string_view payload) {
  wire::PayloadReader reader(payload);
  std::string_view name, query;
  int16_t count = 0;
  if (!reader.readCString(name) || !name.empty() || !reader.readCString(query) ||
      !reader.readInt16(count) || count < 0 ||
      reader.remaining() != static_cast<size_t>(count) * 4) {
    return false;
  }
  // Drivers send the same text again and again: once found free of session effects, it is not
  // looked up again.
  if (!unnamed_effect_free_ || query != unnamed_query_) {
    if (!worker_.sessionEffectFree(query)) return false;
    unnamed_query_.assign(query);
    unnamed_effect_free_ = true;
  }
  forgetStatementEffects(std::string());
  unnamed_types_.resize(static_cast<size_t>(count));
  for (int32_t& oid : unnamed_types_) reader.readInt32(oid);
  unnamed_version_ = worker_.nextUnnamedVersion();
  server_->setUnnamedStatement(this, unnamed_version_);
  return true;
}

// Which clients' prepared statements this session may share (StatementRegistry): those with the
// same settings (an interned state, so its address), or none when the interner is full (an odd
// number, which no address is).
uint64_t ClientSession::statementScope() {
  const void* tag = settings_.tag(worker_.settingsInterner());
  return tag != nullptr ? reinterpret_cast<uintptr_t>(tag) : (id_ << 1 | 1);
}

void ClientSession::rememberParse(const wire::Parse& parse) {
  if (parse.name.empty()) {
    unnamed_effect_free_ = false;  // not known: it was not checked
    unnamed_query_ = parse.query;
    unnamed_types_ = parse.param_types;
    unnamed_version_ = worker_.nextUnnamedVersion();  // unique in the worker, unlike `this`
    return;
  }
  statements_[parse.name] =
      worker_.statements().intern(parse.query, parse.param_types, statementScope());
}

// Routes a Bind with its parameter values, through the statement's cached analysis.
Result<planner::RouteDecision> ClientSession::routeBind(std::string_view payload,
                                                        bool check_count) {
  // Every execution of a prepared statement comes here: the Bind is read as views into the
  // payload, into the worker's scratch vectors, so routing it allocates nothing of its own.
  Worker::BindScratch& scratch = worker_.bindScratch();
  wire::BindView& bind = scratch.bind;
  if (Status read = bind.decode(payload); !read.ok()) return std::move(read).error();
  const std::string* query = nullptr;
  const std::vector<int32_t>* types = nullptr;
  if (!boundStatement(bind.statement, query, types)) {
    return Error::make(sqlstate::kInvalidStatementName,
                       "prepared statement \"" + std::string(bind.statement) + "\" does not exist");
  }
  last_bound_text_ = *query;
  auto analysis = worker_.router().prepare(*database_, *query, *types);
  if (!analysis.ok()) return analysis.error();
  planner::BindParameters& params = scratch.params;
  params.formats = bind.param_formats;
  params.type_oids = *types;
  params.values = bind.params;
  auto decision = worker_.router().routeBound(*database_, **analysis, params, routeContext());
  // Not routed for want of a value the Bind lacks, or a statement shardgate may answer or run
  // itself (transaction control, SET), or refuse (check_count): Postgres's error for a wrong
  // count comes first. (Others go to a server, which checks.)
  if (check_count || !decision.ok() || decision->transaction != planner::TransactionAction::kNone ||
      decision->changes_setting) {
    const size_t needed = statementParameterCount(*query, types->size());
    if (decision.ok() ? bind.params.size() != needed : bind.params.size() < needed) {
      return *parameterCountError(bind.params.size(), bind.statement, needed);
    }
  }
  return decision;
}

size_t ClientSession::forwardClientMessages(std::string_view data) {
  const uint32_t max_size = worker_.config().general.max_message_size;
  size_t used = 0;
  size_t run_start = 0;
  auto passRun = [&](size_t end) {
    if (end > run_start) server_->forward(data.substr(run_start, end - run_start));
    run_start = end;
  };
  // Postgres resets to the startup packet's values; the pooled connection resets to its own. The
  // client's go back right after the message just read, in a statement whose replies it never
  // sees but for the ParameterStatus messages that tell it the values.
  auto restoreStartupValuesAfter = [&](std::string sql) {
    if (sql.empty()) return;
    passRun(used);
    sendOwnQuery(sql);
  };
  wire::Frame frame;
  while (used < data.size() && server_ != nullptr) {
    wire::FrameStatus status = wire::peekTyped(data.substr(used), max_size, frame);
    if (status == wire::FrameStatus::kNeedMore) break;
    if (status == wire::FrameStatus::kInvalid) {
      passRun(used);
      fatal(wire::frameTyped(data.substr(used), max_size).error);
      return data.size();
    }
    const char type = frame.type;
    const size_t start = used;
    used += frame.size;
    if (batchFailedOnServer() && type != wire::fe::kSync && type != wire::fe::kTerminate) {
      // The server ignores it: so does the session (no statement remembered or forgotten, no
      // answer of its own, nothing owed). Postgres skipped the Parse before it too.
      unnamed_parse_reply_pending_ = false;
      passRun(start);
      run_start = used;
      continue;
    }
    // (A routed session checked before routing the message: routeClientMessages.)
    if (manage_statements_ && !routing_ && owesOwnParse(type, frame.payload)) {
      passRun(start);  // before the wait's Flush, which must make the server answer them too
      if (awaitOwedReplies()) return start;
    }
    metrics_.clientMessage(type, frame.payload, *database_,
                           current_target_ ? current_target_->shard : database_->default_shard,
                           lastReadNs());
    if (type == wire::fe::kSync || type == wire::fe::kQuery || type == wire::fe::kFunctionCall) {
      // Each ends with its own ReadyForQuery (a Query or FunctionCall inside a batch ends it too).
      batch_open_ = false;
      batch_part_ended_ = false;
      failed_transaction_ended_in_batch_ = false;
      batch_executes_ = false;
      batch_began_transaction_ = false;
      batch_binds_ = 0;
    } else if (type == wire::fe::kParse || type == wire::fe::kBind || type == wire::fe::kDescribe ||
               type == wire::fe::kExecute || type == wire::fe::kClose) {
      batch_open_ = true;  // an extended batch in progress until its Sync
      batch_executes_ |= type == wire::fe::kBind || type == wire::fe::kExecute;
    }
    // CopyData / CopyDone / CopyFail belong to the COPY that began them: a simple Query's (no
    // batch), or an Execute's (its batch is open already).
    // A simple Query destroys the unnamed statement, whoever parsed it.
    if (type == wire::fe::kQuery) server_->noteUnnamedStatementDropped();
    switch (type) {
      case wire::fe::kQuery: {
        if (!manage_statements_) {  // one server for good: nothing to track
          ++ready_sent_;
          ++outstanding_;
          server_->expect(backends::Reply::kReadyForQuery);
          break;
        }
        std::string_view sql = frame.payload;
        if (!sql.empty() && sql.back() == '\0') sql.remove_suffix(1);
        SessionEffects effects = sessionEffectsOf(sql);
        if (effects.sql_prepared && transaction_pooling_ && server_->owesReplies()) {
          // PREPARE and DEALLOCATE may be answered here, with the transaction status that the
          // replies still owed will tell (a BEGIN or a failure before them): they wait for those.
          passRun(start);
          awaiting_caught_up_ = true;
          server_->notifyWhenCaughtUp();
          return start;
        }
        applyQueryEffects(effects);
        if (effects.sql_prepared && transaction_pooling_) {  // session pooling keeps the names
          passRun(start);
          forwardSqlPrepared(sql, data.substr(start, used - start));
          run_start = used;
        } else {
          ++ready_sent_;
          ++outstanding_;
          server_->expect(backends::Reply::kReadyForQuery);
        }
        if (effects.resetsAnything()) {
          restoreStartupValuesAfter(settings_.startupSql(effects.resets_all, effects.resets));
        }
        break;
      }
      case wire::fe::kSync:
      case wire::fe::kFunctionCall:
        ++ready_sent_;
        ++outstanding_;
        server_->expect(backends::Reply::kReadyForQuery);
        if (bound_effects_ && bound_effects_->pending && type == wire::fe::kSync) {
          // (The batch's RESET / DISCARD ALL, through the extended protocol.)
          restoreStartupValuesAfter(
              settings_.startupSql(bound_effects_->all_at_sync, bound_effects_->at_sync));
          bound_effects_->pending = bound_effects_->all_at_sync = false;
          bound_effects_->at_sync.clear();
        }
        break;
      case wire::fe::kExecute:
        if (!bound_settings_.empty()) settingsExecuted(frame.payload);
        server_->expect(backends::Reply::kExecution);
        break;
      case wire::fe::kFlush:
      case wire::fe::kCopyData:
      case wire::fe::kCopyDone:
      case wire::fe::kCopyFail:
        break;
      case wire::fe::kParse:
      case wire::fe::kBind:
      case wire::fe::kDescribe:
      case wire::fe::kClose:
        passRun(start);
        if (!forwardStatementMessage(type, data.substr(start, used - start), frame.payload)) {
          return data.size();
        }
        run_start = used;
        break;
      case wire::fe::kTerminate:
        passRun(start);
        failCopyForTerminate();
        if (outstanding_ > 0 && !batch_open_) {
          // What the client sent before Terminate still runs to its end, as in Postgres; then
          // the session closes (finishTerminate).
          terminating_ = true;
          stopReading();
          return data.size();
        }
        releaseServer(/*client_left=*/true);
        state_ = State::kClosed;
        close();
        return data.size();
      default:
        passRun(start);
        fatal(Error::fatal(sqlstate::kProtocolViolation,
                           "invalid frontend message type " +
                               std::to_string(static_cast<int>(static_cast<unsigned char>(type)))));
        return data.size();
    }
  }
  passRun(used);
  if (server_ && server_->unsentBytes() > worker_.config().general.client_buffer_limit) {
    paused_for_server_ = true;
    stopReading();
  }
  return used;
}

// Parse, Bind, Describe and Close name prepared statements. Under transaction pooling the
// client's names are replaced by the shared server-side name, and the statement is prepared on
// whichever connection runs it; under session pooling they pass unchanged.
bool ClientSession::forwardStatementMessage(char type, std::string_view message,
                                            std::string_view payload) {
  using backends::ExpectedReply;
  using backends::Reply;
  using backends::ReplyAction;
  auto pass = [&](Reply reply) {
    server_->forward(message);
    server_->expect(reply);
    return true;
  };
  auto malformed = [&](const Error& error) {
    fatal(error);
    return false;
  };

  switch (type) {
    case wire::fe::kParse: {
      if (!manage_statements_) return pass(Reply::kParseComplete);
      if (rememberPlainUnnamedParse(payload)) return pass(Reply::kParseComplete);
      auto parse = wire::Parse::decode(payload);
      if (!parse.ok()) return malformed(parse.error());
      SessionEffects effects = sessionEffectsOf(parse->query);
      if (effects.sql_prepared) {
        // EXECUTE and DEALLOCATE sent as extended-protocol statements (psycopg's statement cache
        // deallocates this way): rename EXECUTE's statement; forget DEALLOCATE's and send the
        // server a statement with no effect in its place (its tag is DO, not DEALLOCATE).
        SqlPreparedPlan plan =
            planSqlPrepared(parse->query, statements_, worker_.statements(), statementScope(),
                            [this](uint64_t id) { return server_->statements().has(id); });
        // (A forward that defines nothing: EXECUTE, or the error of a name defined twice.)
        if (plan.action == SqlPreparedPlan::Action::kForward && plan.defines.empty()) {
          for (const auto& statement : plan.needed) server_->ensurePrepared(statement);
          parse->query = plan.sql;
        } else if (plan.action == SqlPreparedPlan::Action::kAnswer && !plan.forgets.empty()) {
          statements_.erase(plan.forgets);
          parse->query = "DO $$BEGIN END$$";
        } else if (plan.action != SqlPreparedPlan::Action::kPassThrough) {
          effects.pin_reason = "PREPARE through the extended protocol";
        }
      }
      const bool sql_prepared = effects.sql_prepared;
      noteParsedEffects(parse->name, std::move(effects), /*pin_at_bind=*/false);
      if (parse->name.empty()) {
        rememberParse(*parse);
        server_->setUnnamedStatement(this, unnamed_version_);
        if (!sql_prepared) return pass(Reply::kParseComplete);
        std::string rewritten;
        parse->encode(rewritten);
        server_->forward(rewritten);
        server_->expect(Reply::kParseComplete);
        return true;
      }
      auto statement =
          worker_.statements().intern(parse->query, parse->param_types, statementScope());
      auto existing = statements_.find(parse->name);
      if (existing != statements_.end()) {
        // Postgres refuses a second statement of the same name; let the server say so, by
        // preparing the existing one again under its server name.
        server_->ensurePrepared(existing->second, /*check_result=*/false);
        server_->forward(existing->second->parseMessage());
        server_->expect(Reply::kParseComplete);
        return true;
      }
      statements_.emplace(parse->name, statement);
      parseOnServer(statement, parse->name);
      return true;
    }
    case wire::fe::kBind: {
      if (!manage_statements_) return pass(Reply::kBindComplete);
      // Bind: portal name, statement name, then parameters we pass on untouched.
      wire::PayloadReader reader(payload);
      std::string_view portal, name;
      if (!reader.readCString(portal) || !reader.readCString(name)) {
        return malformed(Error::fatal(sqlstate::kProtocolViolation, "invalid Bind message"));
      }
      if (routing_) notePortalBound(portal);
      ++batch_binds_;
      if (!statement_settings_.empty() || !bound_settings_.empty()) settingsBound(name, portal);
      if (bound_effects_) effectsBound(name);
      // (A routed session notes them when routing them.)
      if (name.empty()) {
        if (!routing_) noteBoundControl(unnamed_query_);
        ensureUnnamedPrepared();
        return pass(Reply::kBindComplete);
      }
      auto it = statements_.find(std::string(name));
      if (it == statements_.end()) return pass(Reply::kBindComplete);  // the server will judge
      if (!routing_) noteBoundControl(it->second->query());
      server_->ensurePrepared(it->second);
      std::string rewritten;
      {
        wire::MessageWriter writer(rewritten, wire::fe::kBind);
        writer.cstring(portal)
            .cstring(it->second->serverName())
            .bytes(payload.substr(payload.size() - reader.remaining()));
        writer.finish();
      }
      server_->forward(rewritten);
      server_->expect(Reply::kBindComplete);
      return true;
    }
    case wire::fe::kDescribe:
    case wire::fe::kClose: {
      Reply reply = type == wire::fe::kDescribe ? Reply::kDescription : Reply::kCloseComplete;
      if (!manage_statements_) return pass(reply);
      // Describe and Close: a kind byte ('S' or 'P') and a name.
      wire::PayloadReader reader(payload);
      uint8_t kind = 0;
      std::string_view target_name;
      if (!reader.readInt8(kind) || !reader.readCString(target_name) || !reader.atEnd() ||
          (kind != 'S' && kind != 'P')) {
        return malformed(
            Error::fatal(sqlstate::kProtocolViolation, "invalid Describe or Close message"));
      }
      if (kind == 'S' && target_name.empty() && type == wire::fe::kDescribe) {
        ensureUnnamedPrepared();
      }
      if (kind != 'S' || target_name.empty()) return pass(reply);
      auto it = statements_.find(std::string(target_name));
      if (it == statements_.end()) return pass(reply);  // the server gives the error (or no-op)
      if (type == wire::fe::kClose) {
        // The server keeps it for other clients; this client just forgets it (unless the server
        // skips the Close after an earlier error: onCloseSkipped).
        std::shared_ptr<backends::PreparedStatement> closed = std::move(it->second);
        statements_.erase(it);
        std::string complete;
        wire::CloseComplete{}.encode(complete);
        server_->expect(ExpectedReply{Reply::kCloseComplete, ReplyAction::kSynthesize,
                                      std::move(closed), std::string(target_name),
                                      std::move(complete)});
        return true;
      }
      server_->ensurePrepared(it->second);
      std::string rewritten;
      wire::Describe{'S', it->second->serverName()}.encode(rewritten);
      server_->forward(rewritten);
      // With the statement: the shape of its result the client is told is noted on it.
      server_->expect(ExpectedReply{reply, ReplyAction::kForward, it->second, {}, {}});
      return true;
    }
    default:
      return pass(Reply::kReadyForQuery);
  }
}

void ClientSession::applySessionEffects(std::string pin_reason,
                                        std::vector<SettingChange> changes) {
  if (pinned_ || (pin_reason.empty() && changes.empty())) return;
  if (!pin_reason.empty()) {
    pinned_ = true;
    pin_reason_ = std::move(pin_reason);
    spdlog::info("event=client_pinned session={} user={} database={} reason=\"{}\"", id_,
                 user_name_, database_name_, pin_reason_);
    return;
  }
  SessionSettings::noteSent(*server_, changes);
  // The Query (or the batch) being forwarded is the next one to end with ReadyForQuery.
  changes_in_flight_.push_back(
      ChangesInFlight{ready_sent_ + 1, change_entries_sent_++, std::move(changes)});
}

// A statement without effects on the session now has `name`: what an earlier one of that name
// would have done when bound goes.
void ClientSession::forgetStatementEffects(const std::string& name) {
  if (!statement_settings_.empty()) statement_settings_.erase(name);
  if (bound_effects_) {
    bound_effects_->pins.erase(name);
    bound_effects_->resets.erase(name);
  }
}

// pin_at_bind: a routed session's Parse, answered by shardgate: the statement's Bind decides the
// connection a pin keeps.
void ClientSession::noteParsedEffects(const std::string& name, SessionEffects effects,
                                      bool pin_at_bind) {
  forgetStatementEffects(name);
  if (effects.pin_reason.empty() && !effects.resetsAnything()) {
    if (!effects.changes.empty()) statement_settings_[name] = std::move(effects.changes);
    return;
  }
  // RESET puts back the startup packet's values with a statement of shardgate's own after it,
  // which cannot go inside the client's batch: it pins the session too.
  std::string pin_reason =
      effects.pin_reason.empty() ? "RESET through the extended protocol" : effects.pin_reason;
  if (!bound_effects_ && (pin_at_bind || effects.pin_reason.empty())) {
    bound_effects_ = std::make_unique<BoundEffects>();
  }
  if (effects.pin_reason.empty()) {
    bound_effects_->resets[name] = {effects.resets_all, std::move(effects.resets)};
  }
  if (pin_at_bind) {
    bound_effects_->pins[name] = std::move(pin_reason);
  } else {
    applySessionEffects(std::move(pin_reason), {});
  }
}

// A Bind of a statement with effects that take hold when bound (see BoundEffects).
void ClientSession::effectsBound(std::string_view statement_name) {
  const std::string name(statement_name);
  if (auto pin = bound_effects_->pins.find(name); pin != bound_effects_->pins.end()) {
    applySessionEffects(pin->second, {});
  }
  auto it = bound_effects_->resets.find(name);
  if (it == bound_effects_->resets.end()) return;
  // At the batch's Sync the startup packet's values of what it reset are put back, as Postgres
  // resets to them.
  bound_effects_->all_at_sync |= it->second.first;
  for (const std::string& reset : it->second.second) bound_effects_->at_sync.push_back(reset);
  bound_effects_->pending = true;
}

bool ClientSession::boundStatement(std::string_view name, const std::string*& query,
                                   const std::vector<int32_t>*& types) const {
  if (name.empty()) {
    query = &unnamed_query_;
    types = &unnamed_types_;
    return true;
  }
  auto it = statements_.find(std::string(name));
  if (it == statements_.end()) return false;
  query = &it->second->query();
  types = &it->second->paramTypes();
  return true;
}

void ClientSession::applyQueryEffects(SessionEffects& effects) {
  if (effects.controls.empty() || effects.changes.empty() || !effects.pin_reason.empty() ||
      pinned_) {
    applySessionEffects(std::move(effects.pin_reason), std::move(effects.changes));
    return;
  }
  // (effects.changes are in the order of their statements.)
  auto change = effects.changes.begin();
  const auto changes_before = [&](uint32_t statement_index) {
    std::vector<SettingChange> group;
    while (change != effects.changes.end() && change->statement_index < statement_index) {
      group.push_back(std::move(*change++));
    }
    return group;
  };
  for (const SessionEffects::Control& control : effects.controls) {
    applySessionEffects({}, changes_before(control.statement_index));
    expectControl(control.action, {}, /*transaction_bound=*/false);
  }
  applySessionEffects({}, changes_before(UINT32_MAX));
}

void ClientSession::noteBoundControl(std::string_view query) {
  if (const auto action = transactionControlOf(query);
      action != planner::TransactionAction::kNone) {
    expectControl(action, {}, /*transaction_bound=*/false);
  }
}

void ClientSession::expectControl(planner::TransactionAction action, std::string name,
                                  bool transaction_bound) {
  controls_in_flight_.push_back(
      {ready_sent_ + 1, action, std::move(name), change_entries_sent_, transaction_bound});
}

void ClientSession::settingsBound(std::string_view statement_name, std::string_view portal) {
  // (The Bind replaces the unnamed portal; a named one bound again fails, as would its Execute.)
  std::erase_if(bound_settings_, [&](const auto& entry) { return entry.first == portal; });
  auto it = statement_settings_.find(std::string(statement_name));
  if (it == statement_settings_.end()) return;
  bound_settings_.emplace_back(std::string(portal), it->second);
}

// A SET bound and never executed changes nothing on Postgres: its changes count at the Execute.
void ClientSession::settingsExecuted(std::string_view execute_payload) {
  wire::PayloadReader reader(execute_payload);
  std::string_view portal;
  if (!reader.readCString(portal)) return;
  auto entry = std::find_if(bound_settings_.begin(), bound_settings_.end(),
                            [&](const auto& bound) { return bound.first == portal; });
  if (entry == bound_settings_.end()) return;
  // Counted if the batch's Sync finds no error.
  applySessionEffects({}, std::move(entry->second));
  bound_settings_.erase(entry);
}

// PREPARE / EXECUTE / DEALLOCATE under transaction pooling: client names become the shared
// server-side names; a PREPARE the connection already has, and a DEALLOCATE, are answered here.
void ClientSession::forwardSqlPrepared(std::string_view sql, std::string_view message) {
  using backends::ExpectedReply;
  using backends::Reply;
  using backends::ReplyAction;
  SqlPreparedPlan plan =
      planSqlPrepared(sql, statements_, worker_.statements(), statementScope(),
                      [this](uint64_t id) { return server_->statements().has(id); });
  if (plan.action == SqlPreparedPlan::Action::kAnswer && transaction_status_ == 'E') {
    plan.action = SqlPreparedPlan::Action::kPassThrough;  // the server says the transaction failed
  }
  switch (plan.action) {
    case SqlPreparedPlan::Action::kPin:
      applySessionEffects(plan.pin_reason, {});
      [[fallthrough]];
    case SqlPreparedPlan::Action::kPassThrough:
      server_->forward(message);
      break;
    case SqlPreparedPlan::Action::kAnswer: {
      if (!plan.defines.empty()) statements_[plan.defines] = plan.defined;
      if (!plan.forgets.empty()) statements_.erase(plan.forgets);
      std::string reply;
      wire::CommandComplete{plan.tag}.encode(reply);
      wire::writeReadyForQuery(reply, transaction_status_);
      server_->expect(
          ExpectedReply{Reply::kReadyForQuery, ReplyAction::kSynthesize, nullptr, {}, reply});
      return;  // nothing was sent: no ReadyForQuery to wait for
    }
    case SqlPreparedPlan::Action::kForward: {
      for (const auto& statement : plan.needed) server_->ensurePrepared(statement);
      std::string query;
      wire::Query{plan.sql}.encode(query);
      server_->forward(query);
      server_->noteUnnamedStatementDropped();
      ++ready_sent_;
      ++outstanding_;
      if (plan.defined) {
        statements_[plan.defines] = plan.defined;
        server_->statements().add(plan.defined);
      }
      server_->expect(ExpectedReply{
          Reply::kReadyForQuery, ReplyAction::kForward, plan.defined, plan.defines, {}});
      return;
    }
  }
  ++ready_sent_;
  ++outstanding_;
  server_->expect(Reply::kReadyForQuery);
}

// At each ReadyForQuery: settings changes whose statement succeeded move into the open
// transaction, and a transaction's changes count once it commits.
void ClientSession::settleSettingChanges(char transaction_status) {
  ++ready_received_;
  if (refused_request_ == ready_received_) request_failed_ = true;
  std::erase_if(controls_in_flight_, [this](const ControlInFlight& op) {
    return op.ready_index <= ready_received_;  // not answered by the server: failed or skipped
  });
  // One entry per statement that changes settings: an extended batch may hold several, all
  // ended by this ReadyForQuery. (Those before a COMMIT, ROLLBACK or savepoint statement in it
  // were settled by that statement.)
  while (!changes_in_flight_.empty() && changes_in_flight_.front().ready_index <= ready_received_) {
    auto changes = std::move(changes_in_flight_.front().changes);
    const bool ended_here = changes_in_flight_.front().ready_index == ready_received_;
    changes_in_flight_.pop_front();
    if (ended_here && !request_failed_) joinTransactionChanges(changes);
  }
  if (rollback_seen_ && transaction_status == 'T') undoChangesSinceSavepoint();
  std::string restored;
  for (const auto& [name, value] : reported_restored_in_request_) {
    // Not when the server reported a newer value since (a SET after the ROLLBACK).
    auto now = settings_.reported(name);
    if (now && *now == value) wire::ParameterStatus{name, value}.encode(restored);
  }
  reported_restored_in_request_.clear();
  // (A failed transaction ('E') keeps its changes: a ROLLBACK TO may make it usable again.)
  if (transaction_status == 'I') {
    endTransactionChanges(rollback_seen_ || request_failed_, restored);
  }
  if (!restored.empty()) send(restored);
  rollback_seen_ = false;
  request_failed_ = false;
}

// A COMMIT, ROLLBACK or savepoint statement noted by expectControl has run (its CommandComplete
// `tag`), after the settings changes settled before it.
void ClientSession::runTransactionControl(planner::TransactionAction action,
                                          const std::string& name, bool transaction_bound,
                                          std::string_view tag) {
  using Action = planner::TransactionAction;
  switch (action) {
    case Action::kSavepoint:
      savepoint_marks_.push_back(changes_in_transaction_.size());
      break;
    case Action::kRelease:
      if (!savepoint_marks_.empty()) savepoint_marks_.pop_back();
      break;
    case Action::kRollbackTo:
      undoChangesSinceSavepoint();
      break;
    case Action::kCommit:
    case Action::kRollback:
      // (COMMIT of a failed transaction rolls back: its tag says ROLLBACK.) The changes made
      // after it in the same request belong to the next transaction, or to the request's own.
      if (tag == "COMMIT") {
        std::string unused;  // a commit restores nothing
        endTransactionChanges(/*rolled_back=*/false, unused);
      } else {
        rollBackInRequest();
      }
      return;
    default:
      return;
  }
  if (transaction_bound) noteSavepoint(action, name, changes_in_transaction_.size());
}

// A ROLLBACK that ran in the middle of a request: the transaction's settings changes go, and the
// reported settings it changed are given back at the request's ReadyForQuery (where Postgres
// reports them), unless reported anew by then.
void ClientSession::rollBackInRequest() {
  for (const auto& [name, value] : reported_before_txn_) {
    auto now = settings_.reported(name);
    if (now && *now == value) continue;  // the server that rolled back reported it already
    reported_restored_in_request_.emplace_back(name, value);
    settings_.noteReported(name, value);
  }
  reported_before_txn_.clear();
  changes_in_transaction_.clear();
  savepoint_marks_.clear();
}

// ROLLBACK TO SAVEPOINT: what was set since the savepoint is undone; the savepoint stays.
void ClientSession::undoChangesSinceSavepoint() {
  const size_t keep = savepoint_marks_.empty() ? 0 : savepoint_marks_.back();
  changes_in_transaction_.resize(std::min(keep, changes_in_transaction_.size()));
}

void ClientSession::onServerCaughtUp() {
  maybeReleaseServer();
  // A move to another shard, or an SQL PREPARE / DEALLOCATE, may have been waiting for these
  // replies.
  const bool awaited = std::exchange(awaiting_caught_up_, false);
  if ((routing_ || awaited) && pendingInputBytes() > 0) processPending();
}

void ClientSession::onServerBytes(std::string_view bytes) {
  send(bytes);
}

void ClientSession::onServerErrorResponse() {
  request_failed_ = true;
  if (server_) metrics_.countError(server_->lastErrorSqlstate());
}

void ClientSession::onServerParameterStatus(std::string_view payload) {
  // What the server reports while we hold it is the client's view of its settings.
  auto status = wire::ParameterStatus::decode(payload);
  if (!status.ok()) return;
  if (transaction_status_ != 'I') {
    noteReportedInTransaction(status->name, status->value);
  } else {
    settings_.noteReported(status->name, status->value);
  }
}

void ClientSession::noteReportedInTransaction(const std::string& name, const std::string& value) {
  auto before = settings_.reported(name);
  if (before && *before != value &&
      std::none_of(reported_before_txn_.begin(), reported_before_txn_.end(),
                   [&](const auto& saved) { return saved.first == name; })) {
    reported_before_txn_.emplace_back(name, *before);
  }
  settings_.noteReported(name, value);
}

// The transaction ended (or COMMIT AND CHAIN committed it): its settings changes count for the
// session unless it rolled back; what it reported is put back in `reply` if it did.
void ClientSession::endTransactionChanges(bool rolled_back, std::string& reply) {
  if (!rolled_back && !changes_in_transaction_.empty()) {
    settings_.commit(changes_in_transaction_, server_);
  }
  if (!reported_before_txn_.empty()) endReportedChanges(rolled_back, reply);
  changes_in_transaction_.clear();
  savepoint_marks_.clear();
}

void ClientSession::endReportedChanges(bool rolled_back, std::string& reply) {
  if (rolled_back) {
    for (const auto& [name, value] : reported_before_txn_) {
      auto now = settings_.reported(name);
      if (now && *now == value) continue;  // the server that rolled back reported it already
      wire::ParameterStatus{name, value}.encode(reply);
      settings_.noteReported(name, value);
    }
  }
  reported_before_txn_.clear();
}

void ClientSession::onServerCommandComplete(std::string_view tag) {
  // ROLLBACK TO drops the portals bound since its savepoint: which ones is not kept, so a Bind of
  // any name may follow (a duplicate of an older one then goes to the server to judge).
  if (tag == "ROLLBACK" && !named_portals_.empty()) named_portals_.clear();
  // (Which of them ROLLBACK TO drops is not kept either: none is answered for any more.)
  if (tag == "ROLLBACK") completed_portals_.clear();
  // A statement noted by expectControl: the settings changed before it in its request settle
  // now (the rest of the request's at its ReadyForQuery), and it acts on them. The changes of a
  // transaction count from its COMMIT, also when COMMIT AND CHAIN begins the next one at once.
  if (!controls_in_flight_.empty() &&
      controls_in_flight_.front().ready_index == ready_received_ + 1 &&
      answersControl(controls_in_flight_.front().action, tag)) {
    ControlInFlight op = std::move(controls_in_flight_.front());
    controls_in_flight_.erase(controls_in_flight_.begin());
    settleChangesOfRequest(ready_received_ + 1, op.changes_seq);
    runTransactionControl(op.action, op.name, op.transaction_bound, tag);
    return;
  }
  // Not noted (no settings changed around it in its request, as far as shardgate could tell).
  if (tag == "ROLLBACK") {
    rollback_seen_ = true;  // of the transaction, or to a savepoint: ReadyForQuery tells which
  } else if (tag == "COMMIT" && !rollback_seen_) {
    std::string unused;  // a commit restores nothing
    endTransactionChanges(/*rolled_back=*/request_failed_, unused);
  } else if (tag == "SAVEPOINT") {
    savepoint_marks_.push_back(changes_in_transaction_.size());
  } else if (tag == "RELEASE") {
    if (!savepoint_marks_.empty()) savepoint_marks_.pop_back();
  } else if (tag == "DISCARD ALL") {
    statements_.clear();
    settings_.resetAll();
    if (server_) settings_.markResetOnServer(*server_);
  } else if (tag == "DEALLOCATE ALL") {
    statements_.clear();
  }
}

void ClientSession::onStatementFailed(const std::string& client_name) {
  statements_.erase(client_name);
}

void ClientSession::onStatementRejected(
    const std::shared_ptr<backends::PreparedStatement>& statement) {
  std::erase_if(statements_, [&](const auto& entry) { return entry.second == statement; });
}

void ClientSession::onCloseSkipped(const std::string& client_name,
                                   const std::shared_ptr<backends::PreparedStatement>& statement) {
  statements_[client_name] = statement;
}

void ClientSession::onServerReadyForQuery(char transaction_status) {
  if (outstanding_ > 0) --outstanding_;
  failed_transaction_ended_in_batch_ = false;
  transaction_status_ = transaction_status;
  if (transaction_status != 'T') committing_spread_ = false;
  metrics_.readyForQuery(transaction_status, outstanding_, context().nowNs());
  if (transaction_status == 'I') {
    forgetTransactionRoute();
    dropPortals();
  }
  settleSettingChanges(transaction_status);
  if (transaction_status == 'E') rollBackFailedTransactionShards();
  if (terminating_ && outstanding_ == 0) {
    releaseServer(/*client_left=*/true);
    state_ = State::kClosed;
    close();
    return;
  }
  resumeInputForServer();
  maybeReleaseServer();
}

void ClientSession::maybeReleaseServer() {
  if (!transactionPooling() || server_ == nullptr || state_ != State::kReady) return;
  // An open batch (no Sync yet) keeps its server: the server is inside the batch's implicit
  // transaction, even when it has answered everything so far (a Flush, or a Describe asyncpg sends
  // before binding).
  if (outstanding_ != 0 || transaction_status_ != 'I' || batch_open_ || server_->owesReplies() ||
      syncing_server_ || pendingInputBytes() != 0) {
    return;
  }
  backends::ServerConnection* server = server_;
  server_ = nullptr;
  pool_->release(server, backends::Pool::Release::kClean, context().nowMs());
}

void ClientSession::onServerLost(const Error& error) {
  server_ = nullptr;
  if (state_ == State::kClosed) return;
  if (transactionPooling() && outstanding_ == 0 && !batch_open_ && transaction_status_ == 'I') {
    return;  // nothing of the client's was on it; the next statement gets another connection
  }
  fatal(error);
}

bool ClientSession::sinkCongested() const {
  return unsentBytes() > worker_.config().general.client_buffer_limit;
}

void ClientSession::onWriteDrained() {
  if (release_buffers_when_drained_ && server_ == nullptr && releaseIdleBuffers()) {
    release_buffers_when_drained_ = false;
  }
  if (multi_run_) multi_run_->resume();
  if (server_) server_->resumeIfPaused();
  if (resumeInputForServer()) processPending();
}

void ClientSession::onServerWriteDrained() {
  // The only wake-up of a client paused in the middle of a message larger than the buffer limit:
  // the server has not answered yet (it is still reading that message), and the client, waiting
  // for the answer, sends nothing more.
  if (resumeInputForServer()) processPending();
}

bool ClientSession::resumeInputForServer() {
  if (!paused_for_server_) return false;
  if (server_ && server_->unsentBytes() > worker_.config().general.client_buffer_limit) {
    return false;
  }
  paused_for_server_ = false;
  startReading();
  return true;
}

// ---- leaving ---------------------------------------------------------------------------------

bool ClientSession::idle() const {
  return state_ != State::kReady ||
         (outstanding_ == 0 && transaction_status_ == 'I' && multi_run_ == nullptr);
}

void ClientSession::releaseServer(bool client_left) {
  if (client_left && multi_run_) multi_run_->abandon();
  if (client_left) closeParked();
  if (waiting_for_server_ && pool_) {
    pool_->cancelWait(this);
    waiting_for_server_ = false;
  }
  if (server_ == nullptr) return;
  backends::ServerConnection* server = server_;
  server_ = nullptr;
  uint64_t now = context().nowMs();
  // A batch without its Sync leaves the server skipping input after an error, or inside an
  // implicit transaction: never reused.
  bool clean = state_ == State::kReady && outstanding_ == 0 && !batch_open_ && !syncing_server_ &&
               server->state() == backends::ServerConnection::State::kHeld &&
               server->transactionStatus() == 'I' && !server->owesReplies() &&
               server->unsentBytes() == 0;
  if (!clean && client_left && outstanding_ > 0 &&
      server->state() == backends::ServerConnection::State::kHeld) {
    // Stop the work the departed client started; the connection is closed, never reused dirty.
    backends::sendCancelRequest(worker_.context(), *server);
  }
  // A session that kept the connection to itself may have left anything on it: reset it.
  pool_->release(server, clean ? idleRelease() : backends::Pool::Release::kClose, now);
}

void ClientSession::cancelRunningQuery() {
  if (state_ == State::kReady && multi_run_) multi_run_->cancel();
  if (state_ != State::kReady || server_ == nullptr || outstanding_ == 0) return;
  backends::sendCancelRequest(worker_.context(), *server_);
}

void ClientSession::sweep(uint64_t now_ms) {
  finished_multi_runs_.clear();  // never inside their own callbacks: this is the sweep timer
  if (multi_run_ && multi_run_->acceptsCopyData() && pendingInputBytes() > 0) {
    processPending();  // rows held back while the shards were congested
  }
  resumeCopyInput();  // a backstop: the shards' drain normally does it
  const uint32_t wait = worker_.config().general.query_wait_timeout_ms;
  if (held_by_pause_ && wait != 0 && now_ms - held_since_ms_ >= wait) {
    // PAUSE held the next statement as long as a pool queue may: it fails; the session stays (the
    // worker's list of held sessions may still name it: resumeAfterPause then does nothing).
    held_by_pause_ = false;
    failing_ =
        std::make_unique<Error>(Worker::pausedTooLong(database_name_, wait, /*at_login=*/false));
    processPending();
  }
  uint32_t timeout = worker_.config().general.client_login_timeout_ms;
  if ((state_ == State::kStartup || state_ == State::kAuthenticating) && timeout &&
      now_ms - connected_at_ms_ >= timeout) {
    fatal(Error::fatal(sqlstate::kProtocolViolation, "client login timeout",
                       "login not completed within " + std::to_string(timeout) + " ms"));
  }
}

namespace {
// Whether `input` is whole messages, the last a Terminate: a client that said goodbye after its
// requests (and closed at once) rather than one that vanished.
bool endsWithTerminate(std::string_view input, uint32_t max_size) {
  wire::Frame frame;
  char last = 0;
  while (!input.empty()) {
    if (wire::peekTyped(input, max_size, frame) != wire::FrameStatus::kComplete) return false;
    last = frame.type;
    input.remove_prefix(frame.size);
  }
  return last == wire::fe::kTerminate;
}
}  // namespace

void ClientSession::onDisconnect(int /*status*/) {
  if (state_ == State::kReady && !admin_ &&
      endsWithTerminate(pendingInput(), worker_.config().general.max_message_size)) {
    // Postgres runs what came before Terminate, even in the packet the client closed after:
    // so do we, dropping only the answers.
    dropOutput();
    processPending();
    return;
  }
  if (state_ == State::kReady && !admin_ &&
      ((committing_spread_ &&
        (ending_parked_ || every_shard_run_ == EveryShardRun::kRunning || outstanding_ > 0)) ||
       (multi_run_ && multi_run_->committing()))) {
    // A COMMIT that has begun on some shards of the transaction ends on all of them, as one
    // Postgres finishes a COMMIT it received: the client's going is a Terminate after it.
    // (Leaving now would roll back the shards not yet committed.)
    std::string terminate;
    wire::Terminate{}.encode(terminate);
    appendPendingInput(terminate);
    dropOutput();
    processPending();
    return;
  }
  releaseServer(/*client_left=*/true);
  state_ = State::kClosed;
  close();
}

void ClientSession::onClosed() {
  if (!user_name_.empty()) {
    spdlog::info("event=client_closed session={} user={} database={} duration_ms={}", id_,
                 user_name_, database_name_, context().nowMs() - connected_at_ms_);
  }
  releaseServer(/*client_left=*/true);
  if (cancel_pid_ != 0) worker_.server().cancelRegistry().remove(cancel_pid_);
  worker_.removeSession(this);
  if (counted_) worker_.server().removeClient();
}

}  // namespace shardgate::proxy
