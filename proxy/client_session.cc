// ClientSession: what a client sees of shardgate, from the startup packet to Terminate.
#include "proxy/client_session.h"

#include <variant>

#include "backends/cancel_request.h"
#include "common/log.h"
#include "proxy/proxy_server.h"
#include "proxy/worker.h"
#include "proxy/wire/backend_messages.h"
#include "proxy/wire/framing.h"
#include "proxy/wire/frontend_messages.h"
#include "proxy/wire/protocol.h"

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

void ClientSession::terminate(const Error& error) { fatal(error); }

// ---- startup ---------------------------------------------------------------------------------

size_t ClientSession::onData(std::string_view data) {
  switch (state_) {
    case State::kStartup: return handleStartupPhase(data);
    case State::kAuthenticating: return handleAuthPhase(data);
    case State::kLoggingIn: return 0;  // kept until the login completes
    case State::kReady: return forwardClientMessages(data);
    case State::kClosed: return data.size();
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
      for (auto& setting : *options) settings_.push_back(std::move(setting));
    } else if (name.rfind("_pq_.", 0) == 0) {
      unrecognized.push_back(name);
    } else {
      if (!isValidSettingName(name)) {
        fatal(Error::fatal(sqlstate::kProtocolViolation,
                           "invalid startup parameter name \"" + name + "\""));
        return;
      }
      settings_.emplace_back(name, value);
    }
  }
  if (user_name_.empty()) {
    fatal(Error::fatal(sqlstate::kInvalidAuthorization,
                       "no PostgreSQL user name specified in startup packet"));
    return;
  }
  if (database_name_.empty()) database_name_ = user_name_;
  if (minor > 0 || !unrecognized.empty()) {
    wire::NegotiateProtocolVersion{0, unrecognized}.encode(outputBuffer());
  }

  user_ = worker_.config().findUser(user_name_);
  auth_ = std::make_unique<ClientAuthenticator>(
      user_, user_name_, user_ ? worker_.scramSecret(*user_) : nullptr);
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
      fatal(Error::fatal(sqlstate::kProtocolViolation,
                         std::string("expected password response, got message type '") +
                             framed.frame.type + "'"));
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
  // Until routing lands, a logical database is served by its first shard's primary.
  pool_ = &worker_.pool(*database_, *user_, 0);
  waiting_for_server_ = true;
  pool_->acquire(this, backends::monotonicMs());
}

void ClientSession::onServerAcquired(backends::ServerConnection* server) {
  waiting_for_server_ = false;
  server_ = server;
  server_->attach(this);
  if (state_ != State::kLoggingIn) return;
  std::string sync_sql = settingsSyncSql(settings_, server_->parameters());
  if (sync_sql.empty()) {
    finishLogin();
    return;
  }
  server_->runInternal(sync_sql, [this](Status status) {
    if (!status.ok()) {
      fatal(status.error());
      return;
    }
    finishLogin();
  });
}

void ClientSession::onServerUnavailable(const Error& error) {
  waiting_for_server_ = false;
  Error e = error;
  if (e.detail.empty()) e.detail = "shardgate could not get a connection to the shard";
  fatal(e);
}

void ClientSession::finishLogin() {
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
  processPending();
}

// ---- queries ---------------------------------------------------------------------------------

size_t ClientSession::forwardClientMessages(std::string_view data) {
  const uint32_t max_size = worker_.config().general.max_message_size;
  size_t used = 0;
  size_t run_start = 0;
  auto passRun = [&]() {
    if (used > run_start && server_) server_->forward(data.substr(run_start, used - run_start));
    run_start = used;
  };
  while (used < data.size()) {
    wire::FrameResult framed = wire::frameTyped(data.substr(used), max_size);
    if (framed.status == wire::FrameStatus::kNeedMore) break;
    if (framed.status == wire::FrameStatus::kInvalid) {
      passRun();
      fatal(framed.error);
      return data.size();
    }
    char type = framed.frame.type;
    if (!wire::isFrontendMessageType(type)) {
      passRun();
      fatal(Error::fatal(sqlstate::kProtocolViolation,
                         "invalid frontend message type " + std::to_string(static_cast<int>(
                                                                static_cast<unsigned char>(type)))));
      return data.size();
    }
    if (type == wire::fe::kTerminate) {
      passRun();
      releaseServer(/*client_left=*/true);
      state_ = State::kClosed;
      close();
      return data.size();
    }
    if (type == wire::fe::kQuery || type == wire::fe::kSync || type == wire::fe::kFunctionCall) {
      ++outstanding_;
    }
    used += framed.frame.size;
  }
  passRun();
  if (server_ && server_->unsentBytes() > kServerBufferLimit) {
    paused_for_server_ = true;
    stopReading();
  }
  return used;
}

void ClientSession::onServerBytes(std::string_view bytes) { send(bytes); }

void ClientSession::onServerReadyForQuery(char transaction_status) {
  if (outstanding_ > 0) --outstanding_;
  transaction_status_ = transaction_status;
  // Session pooling: the server stays with the client until it leaves.
  if (paused_for_server_ && server_ && server_->unsentBytes() <= kServerBufferLimit) {
    paused_for_server_ = false;
    startReading();
  }
}

void ClientSession::onServerLost(const Error& error) {
  server_ = nullptr;
  if (state_ == State::kClosed) return;
  fatal(error);
}

bool ClientSession::sinkCongested() const { return unsentBytes() > kClientBufferLimit; }

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
  bool clean = state_ == State::kReady && outstanding_ == 0 &&
               server->state() == backends::ServerConnection::State::kHeld &&
               server->transactionStatus() == 'I' && server->unsentBytes() == 0;
  if (!clean && client_left && outstanding_ > 0 &&
      server->state() == backends::ServerConnection::State::kHeld) {
    // Stop the work the departed client started; the connection is closed, never reused dirty.
    backends::sendCancelRequest(worker_.context(), server->endpoint(), server->backendPid(),
                                server->backendSecret());
  }
  pool_->release(server, clean ? backends::Pool::Release::kReset : backends::Pool::Release::kClose,
                 now);
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
