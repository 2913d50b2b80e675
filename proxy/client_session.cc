// ClientSession: what a client sees of shardgate, from the startup packet to Terminate.
#include "proxy/client_session.h"

#include <variant>

#include "backends/cancel_request.h"
#include "common/log.h"
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

namespace {
// Output a client has not read yet, past which its shard connection stops reading.
constexpr size_t kClientBufferLimit = 1u << 20;
// Input a shard connection has not taken yet, past which the client stops being read.
constexpr size_t kServerBufferLimit = 1u << 20;

bool isFalseValue(std::string_view v) {
  return v == "false" || v == "0" || v == "off" || v == "no" || v == "f" || v == "n";
}
}  // namespace

ClientSession::ClientSession(Worker& worker, uint64_t id, uint64_t now_ms)
    : TcpConnection(worker.context()), worker_(worker), id_(id), connected_at_ms_(now_ms) {}

ClientSession::~ClientSession() = default;

void ClientSession::start() {
  uv_tcp_nodelay(handle(), 1);
  counted_ = true;
  worker_.addSession(this);
  startReading();
}

void ClientSession::refuse(const Error& error) {
  worker_.addSession(this);
  fatal(error);
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
  closeAfterFlush();
}

void ClientSession::terminate(const Error& error) {
  fatal(error);
}

// ---- startup ---------------------------------------------------------------------------------

size_t ClientSession::onData(std::string_view data) {
  switch (state_) {
    case State::kStartup:
      return handleStartupPhase(data);
    case State::kAuthenticating:
      return handleAuthPhase(data);
    case State::kLoggingIn:
      return 0;  // kept until the login completes
    case State::kReady:
      return handleClientMessages(data);
    case State::kClosed:
      return data.size();
  }
  return data.size();
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
    if (std::holds_alternative<wire::SslRequest>(*packet) ||
        std::holds_alternative<wire::GssEncRequest>(*packet)) {
      send("N");  // no TLS or GSS encryption (yet): the client goes on in plain text
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

void ClientSession::handleStartupMessage(const wire::StartupMessage& startup) {
  int32_t minor = startup.protocol_version & 0xffff;
  std::vector<std::string> unrecognized;
  SettingList startup_settings;
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
      startup_settings.emplace_back(name, value);
    }
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

  user_ = worker_.config().findUser(user_name_);
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
  database_ = worker_.config().findDatabase(database_name_);
  if (database_ == nullptr || user_ == nullptr) {
    fatal(Error::fatal(sqlstate::kInvalidCatalogName,
                       "database \"" + database_name_ + "\" does not exist"));
    return;
  }
  state_ = State::kLoggingIn;
  transaction_pooling_ = worker_.config().general.pool_mode == conf::PoolMode::kTransaction;
  // Until routing lands, a logical database is served by its first shard's primary.
  pool_ = &worker_.pool(*database_, *user_, 0);
  waiting_for_server_ = true;
  pool_->acquire(this, backends::monotonicMs());
}

void ClientSession::onServerAcquired(backends::ServerConnection* server) {
  waiting_for_server_ = false;
  server_ = server;
  server_->attach(this);
  if (state_ == State::kLoggingIn) {
    settings_.startFrom(pool_->serverParameters());
    syncServer([this] { finishLogin(); });
  } else {
    syncServer([this] { processPending(); });
  }
}

void ClientSession::onServerUnavailable(const Error& error) {
  waiting_for_server_ = false;
  Error e = error;
  if (e.detail.empty()) e.detail = "shardgate could not get a connection to the shard";
  if (state_ == State::kReady && e.severity != "FATAL") {
    // Transaction pooling: the client stays; what it sent fails as if a server had failed it.
    e.severity = "ERROR";
    failing_ = std::move(e);
    processPending();
    return;
  }
  fatal(e);
}

void ClientSession::syncServer(std::function<void()> then) {
  const void* tag = settings_.tag(worker_.settingsInterner());
  std::vector<std::string> evictions = server_->statements().takeEvictions();
  if (tag != nullptr && server_->settingsTag() == tag && evictions.empty()) {
    then();  // the hot path: this connection already has this session's settings
    return;
  }
  std::string sql = settings_.syncSql(*server_);
  for (const std::string& name : evictions) {
    if (!sql.empty()) sql += "; ";
    sql += "DEALLOCATE " + name;
  }
  if (sql.empty()) {
    server_->setSettingsTag(tag);
    then();
    return;
  }
  syncing_server_ = true;
  server_->runInternal(sql, [this, tag, then = std::move(then)](Status status) {
    syncing_server_ = false;
    if (!status.ok()) {
      fatal(status.error());
      return;
    }
    settings_.markSynced(*server_);
    // ParameterStatus replies to the SETs moved the server to what the client asked for.
    server_->setSettingsTag(tag);
    then();
  });
}

void ClientSession::finishLogin() {
  // What the client sees is what the server now has: its startup settings applied.
  settings_.setReported(server_->parameters());
  for (const auto& [name, value] : server_->parameters()) {
    wire::writeParameterStatus(outputBuffer(), name, value);
  }
  auto key = worker_.server().cancelRegistry().add(CancelTarget{worker_.index(), id_});
  cancel_pid_ = key.process_id;
  cancel_secret_ = key.secret_key;
  wire::BackendKeyData{cancel_pid_, cancel_secret_}.encode(outputBuffer());
  transaction_status_ = server_->transactionStatus();
  wire::writeReadyForQuery(outputBuffer(), transaction_status_);
  scheduleFlush();
  state_ = State::kReady;
  spdlog::debug("event=client_login session={} user={} database={}", id_, user_name_,
                database_name_);
  maybeReleaseServer();
  processPending();
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
        wire::writeReadyForQuery(outputBuffer(), transaction_status_);
        break;
      case wire::fe::kSync:
        if (!failed_batch_) wire::writeError(outputBuffer(), *failing_);
        wire::writeReadyForQuery(outputBuffer(), transaction_status_);
        failed_batch_ = false;
        break;
      default:  // part of an extended batch: one error for the batch
        if (!failed_batch_) wire::writeError(outputBuffer(), *failing_);
        failed_batch_ = true;
        break;
    }
  }
  scheduleFlush();
  if (!failed_batch_ && used == data.size()) failing_.reset();  // the next request tries again
  return used;
}

size_t ClientSession::handleClientMessages(std::string_view data) {
  if (failing_) return failPendingRequests(data);
  if (server_ == nullptr) {
    // Leaving needs no server.
    if (data[0] == wire::fe::kTerminate) {
      state_ = State::kClosed;
      close();
      return data.size();
    }
    if (!waiting_for_server_) {
      waiting_for_server_ = true;
      pool_->acquire(this, backends::monotonicMs());  // may complete before it returns
    }
  }
  if (server_ == nullptr || syncing_server_) return 0;  // kept until the server is ready

  const uint32_t max_size = worker_.config().general.max_message_size;
  size_t used = 0;
  size_t run_start = 0;
  auto passRun = [&](size_t end) {
    if (end > run_start) server_->forward(data.substr(run_start, end - run_start));
    run_start = end;
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
    switch (type) {
      case wire::fe::kQuery: {
        if (!transaction_pooling_) {
          ++ready_sent_;
          ++outstanding_;
          server_->expect(backends::Reply::kReadyForQuery);
          break;
        }
        std::string_view sql = frame.payload;
        if (!sql.empty() && sql.back() == '\0') sql.remove_suffix(1);
        SessionEffects effects = sessionEffectsOf(sql);
        applySessionEffects(std::move(effects.pin_reason), std::move(effects.changes),
                            /*extended_protocol=*/false);
        if (effects.sql_prepared) {
          passRun(start);
          forwardSqlPrepared(sql, data.substr(start, used - start));
          run_start = used;
        } else {
          ++ready_sent_;
          ++outstanding_;
          server_->expect(backends::Reply::kReadyForQuery);
        }
        std::string sql_restore = effects.resetsAnything()
                                      ? settings_.startupSql(effects.resets_all, effects.resets)
                                      : std::string();
        if (!sql_restore.empty()) {
          // Postgres resets to the startup packet's values; the pooled connection resets to its
          // own. Put the client's back right after, in a statement whose replies it never sees
          // but for the ParameterStatus messages that tell it the values.
          passRun(used);
          std::string restore;
          wire::Query{sql_restore}.encode(restore);
          server_->forward(restore);
          server_->expect(backends::ExpectedReply{
              backends::Reply::kReadyForQuery, backends::ReplyAction::kSwallow, nullptr, {}, {}});
        }
        break;
      }
      case wire::fe::kSync:
      case wire::fe::kFunctionCall:
        ++ready_sent_;
        ++outstanding_;
        server_->expect(backends::Reply::kReadyForQuery);
        break;
      case wire::fe::kExecute:
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
  if (server_ && server_->unsentBytes() > kServerBufferLimit) {
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
      if (!transaction_pooling_) return pass(Reply::kParseComplete);
      auto parse = wire::Parse::decode(payload);
      if (!parse.ok()) return malformed(parse.error());
      SessionEffects effects = sessionEffectsOf(parse->query);
      if (effects.sql_prepared) {
        // EXECUTE and DEALLOCATE sent as extended-protocol statements (psycopg's statement cache
        // deallocates this way): rename EXECUTE's statement; forget DEALLOCATE's and send the
        // server a statement with no effect in its place (its tag is DO, not DEALLOCATE).
        SqlPreparedPlan plan =
            planSqlPrepared(parse->query, statements_, worker_.statements(),
                            [this](uint64_t id) { return server_->statements().has(id); });
        if (plan.action == SqlPreparedPlan::Action::kForward && !plan.needed.empty() &&
            plan.defines.empty()) {
          for (const auto& statement : plan.needed) server_->ensurePrepared(statement);
          parse->query = plan.sql;
        } else if (plan.action == SqlPreparedPlan::Action::kAnswer && !plan.forgets.empty()) {
          statements_.erase(plan.forgets);
          parse->query = "DO $$BEGIN END$$";
        } else if (plan.action != SqlPreparedPlan::Action::kPassThrough) {
          effects.pin_reason = "PREPARE through the extended protocol";
        }
      }
      applySessionEffects(std::move(effects.pin_reason), std::move(effects.changes),
                          /*extended_protocol=*/true);
      if (parse->name.empty()) {
        if (!effects.sql_prepared) return pass(Reply::kParseComplete);
        std::string rewritten;
        parse->encode(rewritten);
        server_->forward(rewritten);
        server_->expect(Reply::kParseComplete);
        return true;
      }
      auto statement = worker_.statements().intern(parse->query, parse->param_types);
      auto existing = statements_.find(parse->name);
      if (existing != statements_.end()) {
        // Postgres refuses a second statement of the same name; let the server say so, by
        // preparing the existing one again under its server name.
        server_->ensurePrepared(existing->second);
        server_->forward(existing->second->parseMessage());
        server_->expect(Reply::kParseComplete);
        return true;
      }
      statements_.emplace(parse->name, statement);
      if (server_->statements().has(statement->id())) {
        server_->statements().touch(statement->id());
        std::string reply;
        wire::ParseComplete{}.encode(reply);
        server_->expect(ExpectedReply{
            Reply::kParseComplete, ReplyAction::kSynthesize, nullptr, {}, std::move(reply)});
        return true;
      }
      server_->forward(statement->parseMessage());
      server_->statements().add(statement);
      server_->expect(
          ExpectedReply{Reply::kParseComplete, ReplyAction::kForward, statement, parse->name, {}});
      return true;
    }
    case wire::fe::kBind: {
      if (!transaction_pooling_) return pass(Reply::kBindComplete);
      // Bind: portal name, statement name, then parameters we pass on untouched.
      wire::PayloadReader reader(payload);
      std::string_view portal, name;
      if (!reader.readCString(portal) || !reader.readCString(name)) {
        return malformed(Error::fatal(sqlstate::kProtocolViolation, "invalid Bind message"));
      }
      auto it = name.empty() ? statements_.end() : statements_.find(std::string(name));
      if (it == statements_.end()) return pass(Reply::kBindComplete);  // the server will judge
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
      if (!transaction_pooling_) return pass(reply);
      auto target = wire::Describe::decode(payload);  // Close has the same layout
      if (!target.ok()) return malformed(target.error());
      if (target->kind != 'S' || target->name.empty()) return pass(reply);
      auto it = statements_.find(target->name);
      if (it == statements_.end()) return pass(reply);  // the server gives the error (or no-op)
      if (type == wire::fe::kClose) {
        // The server keeps it for other clients; this client just forgets it.
        statements_.erase(it);
        std::string complete;
        wire::CloseComplete{}.encode(complete);
        server_->expect(ExpectedReply{
            Reply::kCloseComplete, ReplyAction::kSynthesize, nullptr, {}, std::move(complete)});
        return true;
      }
      server_->ensurePrepared(it->second);
      std::string rewritten;
      wire::Describe{'S', it->second->serverName()}.encode(rewritten);
      server_->forward(rewritten);
      server_->expect(reply);
      return true;
    }
    default:
      return pass(Reply::kReadyForQuery);
  }
}

void ClientSession::applySessionEffects(std::string pin_reason, std::vector<SettingChange> changes,
                                        bool extended_protocol) {
  if (pinned_ || (pin_reason.empty() && changes.empty())) return;
  if (pin_reason.empty() && extended_protocol) pin_reason = "SET through the extended protocol";
  if (!pin_reason.empty()) {
    pinned_ = true;
    spdlog::info("event=client_pinned session={} user={} database={} reason=\"{}\"", id_,
                 user_name_, database_name_, pin_reason);
    return;
  }
  SessionSettings::noteSent(*server_, changes);
  // The Query being forwarded is the next one to end with ReadyForQuery.
  changes_in_flight_.emplace_back(ready_sent_ + 1, std::move(changes));
}

// PREPARE / EXECUTE / DEALLOCATE under transaction pooling: client names become the shared
// server-side names; a PREPARE the connection already has, and a DEALLOCATE, are answered here.
void ClientSession::forwardSqlPrepared(std::string_view sql, std::string_view message) {
  using backends::ExpectedReply;
  using backends::Reply;
  using backends::ReplyAction;
  SqlPreparedPlan plan =
      planSqlPrepared(sql, statements_, worker_.statements(),
                      [this](uint64_t id) { return server_->statements().has(id); });
  if (plan.action == SqlPreparedPlan::Action::kAnswer && transaction_status_ == 'E') {
    plan.action = SqlPreparedPlan::Action::kPassThrough;  // the server says the transaction failed
  }
  switch (plan.action) {
    case SqlPreparedPlan::Action::kPin:
      applySessionEffects(plan.pin_reason, {}, false);
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
  if (!changes_in_flight_.empty() && changes_in_flight_.front().first == ready_received_) {
    auto changes = std::move(changes_in_flight_.front().second);
    changes_in_flight_.pop_front();
    if (!request_failed_) {
      changes_in_transaction_.insert(changes_in_transaction_.end(),
                                     std::make_move_iterator(changes.begin()),
                                     std::make_move_iterator(changes.end()));
    }
  }
  if (rollback_seen_ && transaction_status == 'T') {
    // ROLLBACK TO SAVEPOINT: what was set since the savepoint is undone; the savepoint stays.
    size_t keep = savepoint_marks_.empty() ? 0 : savepoint_marks_.back();
    changes_in_transaction_.resize(std::min(keep, changes_in_transaction_.size()));
  }
  if (transaction_status == 'I') {
    if (!rollback_seen_ && !request_failed_ && !changes_in_transaction_.empty()) {
      settings_.commit(changes_in_transaction_, server_);
    }
    changes_in_transaction_.clear();
    savepoint_marks_.clear();
  } else if (transaction_status == 'E') {
    changes_in_transaction_.clear();  // the transaction can only roll back now
  }
  rollback_seen_ = false;
  request_failed_ = false;
}

void ClientSession::onServerBytes(std::string_view bytes) {
  send(bytes);
}

void ClientSession::onServerErrorResponse() {
  request_failed_ = true;
}

void ClientSession::onServerParameterStatus(std::string_view payload) {
  // What the server reports while we hold it is the client's view of its settings.
  auto status = wire::ParameterStatus::decode(payload);
  if (status.ok()) settings_.noteReported(status->name, status->value);
}

void ClientSession::onServerCommandComplete(std::string_view tag) {
  if (tag == "ROLLBACK") {
    rollback_seen_ = true;  // of the transaction, or to a savepoint: ReadyForQuery tells which
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

void ClientSession::onServerReadyForQuery(char transaction_status) {
  if (outstanding_ > 0) --outstanding_;
  transaction_status_ = transaction_status;
  settleSettingChanges(transaction_status);
  if (paused_for_server_ && server_ && server_->unsentBytes() <= kServerBufferLimit) {
    paused_for_server_ = false;
    startReading();
  }
  maybeReleaseServer();
}

void ClientSession::maybeReleaseServer() {
  if (!transactionPooling() || server_ == nullptr || state_ != State::kReady) return;
  if (outstanding_ != 0 || transaction_status_ != 'I' || server_->owesReplies() ||
      syncing_server_ || pendingInputBytes() != 0) {
    return;
  }
  backends::ServerConnection* server = server_;
  server_ = nullptr;
  pool_->release(server, backends::Pool::Release::kClean, backends::monotonicMs());
}

void ClientSession::onServerLost(const Error& error) {
  server_ = nullptr;
  if (state_ == State::kClosed) return;
  if (transactionPooling() && outstanding_ == 0 && transaction_status_ == 'I') {
    return;  // nothing of the client's was on it; the next statement gets another connection
  }
  fatal(error);
}

bool ClientSession::sinkCongested() const {
  return unsentBytes() > kClientBufferLimit;
}

void ClientSession::onWriteDrained() {
  if (server_) server_->resumeIfPaused();
  if (paused_for_server_ && server_ && server_->unsentBytes() <= kServerBufferLimit) {
    paused_for_server_ = false;
    startReading();
    processPending();
  }
}

// ---- leaving ---------------------------------------------------------------------------------

bool ClientSession::idle() const {
  return state_ != State::kReady || (outstanding_ == 0 && transaction_status_ == 'I');
}

void ClientSession::releaseServer(bool client_left) {
  if (waiting_for_server_ && pool_) {
    pool_->cancelWait(this);
    waiting_for_server_ = false;
  }
  if (server_ == nullptr) return;
  backends::ServerConnection* server = server_;
  server_ = nullptr;
  uint64_t now = backends::monotonicMs();
  bool clean = state_ == State::kReady && outstanding_ == 0 && !syncing_server_ &&
               server->state() == backends::ServerConnection::State::kHeld &&
               server->transactionStatus() == 'I' && !server->owesReplies() &&
               server->unsentBytes() == 0;
  if (!clean && client_left && outstanding_ > 0 &&
      server->state() == backends::ServerConnection::State::kHeld) {
    // Stop the work the departed client started; the connection is closed, never reused dirty.
    backends::sendCancelRequest(worker_.context(), server->endpoint(), server->backendPid(),
                                server->backendSecret());
  }
  // A session that kept the connection to itself may have left anything on it: reset it.
  auto how = !clean                               ? backends::Pool::Release::kClose
             : (transaction_pooling_ && !pinned_) ? backends::Pool::Release::kClean
                                                  : backends::Pool::Release::kReset;
  pool_->release(server, how, now);
}

void ClientSession::cancelRunningQuery() {
  if (state_ != State::kReady || server_ == nullptr || outstanding_ == 0) return;
  backends::sendCancelRequest(worker_.context(), server_->endpoint(), server_->backendPid(),
                              server_->backendSecret());
}

void ClientSession::sweep(uint64_t now_ms) {
  uint32_t timeout = worker_.config().general.client_login_timeout_ms;
  if ((state_ == State::kStartup || state_ == State::kAuthenticating) && timeout &&
      now_ms - connected_at_ms_ >= timeout) {
    fatal(Error::fatal(sqlstate::kProtocolViolation, "client login timeout",
                       "login not completed within " + std::to_string(timeout) + " ms"));
  }
}

void ClientSession::onDisconnect(int /*status*/) {
  releaseServer(/*client_left=*/true);
  state_ = State::kClosed;
  close();
}

void ClientSession::onClosed() {
  releaseServer(/*client_left=*/true);
  if (cancel_pid_ != 0) worker_.server().cancelRegistry().remove(cancel_pid_);
  worker_.removeSession(this);
  if (counted_) worker_.server().removeClient();
}

}  // namespace shardgate::proxy
