// ServerConnection: login state machine and the pass-through data path towards one Postgres server.
#include "backends/server_connection.h"

#include <netdb.h>

#include <cstring>
#include <variant>

#include "backends/pool.h"
#include "common/log.h"
#include "common/socket_address.h"
#include "proxy/wire/backend_messages.h"
#include "proxy/wire/framing.h"
#include "proxy/wire/frontend_messages.h"
#include "proxy/wire/md5.h"
#include "proxy/wire/protocol.h"
#include "proxy/wire/scram.h"

namespace shardgate::backends {

namespace {
// Messages from a server are bounded by Postgres itself; this only guards against a corrupt stream.
constexpr uint32_t kMaxServerMessage = 1u << 30;

Error lostError(const ServerEndpoint& endpoint, std::string what) {
  return Error::make(sqlstate::kConnectionFailure, "server connection lost: " + what,
                     "server " + endpoint.label + " (" + endpoint.where() + ")");
}

// Postgres's error for a prepared statement whose result type changed. Drivers know it by its
// routine (asyncpg's InvalidCachedStatementError, on which it prepares the statement again), not
// by its message, which may be translated.
wire::ErrorResponse changedResultTypeError() {
  wire::ErrorResponse error = wire::ErrorResponse::fromError(
      Error::make(sqlstate::kFeatureNotSupported, "cached plan must not change result type"));
  error.fields.emplace_back(wire::field::kFile, "plancache.c");
  error.fields.emplace_back(wire::field::kRoutine, "RevalidateCachedQuery");
  return error;
}

// Copies the SQLSTATE (field 'C') of an ErrorResponse payload into `out`; leaves `out` as it was
// if the payload has none of 5 characters.
void noteErrorSqlstate(std::string_view payload, char (&out)[5]) {
  size_t at = 0;
  while (at < payload.size() && payload[at] != '\0') {
    char code = payload[at++];
    size_t end = payload.find('\0', at);
    if (end == std::string_view::npos) return;
    if (code == 'C' && end - at == 5) {
      payload.copy(out, 5, at);
      return;
    }
    at = end + 1;
  }
}
}  // namespace

struct ServerConnection::ScramState {
  wire::ScramClient client;
  explicit ScramState(std::string password) : client(std::move(password)) {}
};

const char* toString(ServerConnection::State state) {
  switch (state) {
    case ServerConnection::State::kConnecting:
      return "connecting";
    case ServerConnection::State::kLoggingIn:
      return "login";
    case ServerConnection::State::kIdle:
      return "idle";
    case ServerConnection::State::kHeld:
      return "active";
    case ServerConnection::State::kInternal:
      return "internal";
    case ServerConnection::State::kClosed:
      return "closed";
  }
  return "?";
}

ServerConnection::ServerConnection(LoopContext& context, Pool* pool, const ServerEndpoint& endpoint,
                                   uint64_t id, uint64_t now_ms)
    : TcpConnection(context, endpoint.unixSocket() ? Transport::kUnix : Transport::kTcp),
      pool_(pool),
      endpoint_(endpoint),
      id_(id),
      created_at_ms_(now_ms),
      attempt_started_at_ms_(now_ms),
      last_used_at_ms_(now_ms) {
  connect_req_.data = this;
}

// A host name being resolved, in libuv's thread pool. It outlives a connection that closes
// first (the thread cannot be stopped): the answer then finds no owner and is dropped.
struct ServerConnection::PendingResolve {
  uv_getaddrinfo_t req{};
  ServerConnection* owner = nullptr;
};

void ServerConnection::connect() {
  if (endpoint_.unixSocket()) {
    // uv_pipe_connect reports every failure (a missing socket too) through the callback.
    uv_pipe_connect(&connect_req_, pipeHandle(), endpoint_.unixSocketPath().c_str(),
                    &ServerConnection::connectCallback);
    return;
  }
  struct sockaddr_storage addr {};
  if (uv_ip4_addr(endpoint_.host.c_str(), endpoint_.port,
                  reinterpret_cast<struct sockaddr_in*>(&addr)) == 0 ||
      uv_ip6_addr(endpoint_.host.c_str(), endpoint_.port,
                  reinterpret_cast<struct sockaddr_in6*>(&addr)) == 0) {
    addresses_.push_back(addr);
    connectNext();
    return;
  }
  auto pending = std::make_unique<PendingResolve>();
  pending->req.data = pending.get();
  pending->owner = this;
  struct addrinfo hints {};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  std::string port = std::to_string(endpoint_.port);
  int rc = uv_getaddrinfo(context().loop(), &pending->req, &ServerConnection::resolveCallback,
                          endpoint_.host.c_str(), port.c_str(), &hints);
  if (rc < 0) {
    fail(Error::make(sqlstate::kConnectionFailure,
                     "could not resolve server host \"" + endpoint_.host + "\"", uv_strerror(rc)));
    return;
  }
  resolving_ = pending.release();  // resolveCallback() owns it
}

void ServerConnection::resolveCallback(uv_getaddrinfo_t* req, int status, struct addrinfo* res) {
  std::unique_ptr<PendingResolve> pending(static_cast<PendingResolve*>(req->data));
  std::unique_ptr<struct addrinfo, void (*)(struct addrinfo*)> result(res, &uv_freeaddrinfo);
  ServerConnection* self = pending->owner;
  if (self == nullptr) return;  // closed while the name was being resolved
  self->resolving_ = nullptr;
  if (status < 0 || res == nullptr) {
    self->fail(Error::make(sqlstate::kConnectionFailure,
                           "could not resolve server host \"" + self->endpoint_.host + "\"",
                           uv_strerror(status)));
    return;
  }
  for (const struct addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    if (ai->ai_addr == nullptr || ai->ai_addrlen > sizeof(struct sockaddr_storage)) continue;
    struct sockaddr_storage addr {};
    std::memcpy(&addr, ai->ai_addr, ai->ai_addrlen);
    self->addresses_.push_back(addr);
  }
  self->connectNext();
}

// Connects to the next of the addresses the host has, in the resolver's order (as libpq goes
// through them: "localhost" may be ::1 first while the server listens on 127.0.0.1 only).
void ServerConnection::connectNext() {
  if (closing()) return;
  if (next_address_ >= addresses_.size()) {
    fail(Error::make(sqlstate::kConnectionFailure,
                     "could not resolve server host \"" + endpoint_.host + "\"",
                     "the name has no address"));
    return;
  }
  const auto* addr = reinterpret_cast<const struct sockaddr*>(&addresses_[next_address_++]);
  int rc = uv_tcp_connect(&connect_req_, handle(), addr, &ServerConnection::connectCallback);
  if (rc < 0) connectFailed(rc);
}

void ServerConnection::noteFailedAddress(std::string_view outcome) {
  if (!tried_.empty()) tried_ += ", ";
  tried_ += socketAddressText(addresses_[next_address_ - 1]);
  tried_ += ": ";
  tried_ += outcome;
}

bool ServerConnection::moveToNextAddress() {
  if (transport() != Transport::kTcp || next_address_ >= addresses_.size()) return false;
  spdlog::info("event=server_connect_next server={} id={} tried=\"{}\"", endpoint_.label, id_,
               tried_);
  attempt_started_at_ms_ = context().nowMs();  // the first try's clock started with the connection
  renewSocket();  // onSocketRenewed() tries the next address (closing cancels a pending connect)
  return true;
}

bool ServerConnection::tryNextAddressAfterTimeout(uint32_t timeout_ms) {
  // Only a connect still in flight moves on: once the TCP connection is made the server has
  // answered, and a slow login is the server's, not the address's.
  if (state_ != State::kConnecting || resolving_ != nullptr || next_address_ == 0 ||
      next_address_ >= addresses_.size() || closing()) {
    return false;
  }
  noteFailedAddress("timed out after " + std::to_string(timeout_ms) + " ms");
  return moveToNextAddress();
}

std::string ServerConnection::timedOutAttempts(uint32_t timeout_ms) const {
  if (addresses_.size() <= 1 || next_address_ == 0) return {};
  std::string text = tried_;
  if (!text.empty()) text += ", ";
  return text + socketAddressText(addresses_[next_address_ - 1]) + ": timed out after " +
         std::to_string(timeout_ms) + " ms";
}

void ServerConnection::connectFailed(int status) {
  const bool tcp = transport() == Transport::kTcp;
  if (tcp) noteFailedAddress(uv_strerror(status));
  if (moveToNextAddress()) return;
  fail(Error::make(sqlstate::kConnectionFailure,
                   "could not connect to server " + endpoint_.label + " at " + endpoint_.where(),
                   addresses_.size() > 1 ? tried_ : std::string(uv_strerror(status))));
}

void ServerConnection::onSocketRenewed() {
  connectNext();
}

const struct sockaddr* ServerConnection::connectedAddress() const {
  if (transport() != Transport::kTcp || state_ == State::kConnecting || next_address_ == 0) {
    return nullptr;
  }
  return reinterpret_cast<const struct sockaddr*>(&addresses_[next_address_ - 1]);
}

void ServerConnection::connectCallback(uv_connect_t* req, int status) {
  auto* self = static_cast<ServerConnection*>(req->data);
  if (status == UV_ECANCELED || self->closing()) return;
  if (status < 0) {
    self->connectFailed(status);
    return;
  }
  if (self->transport() == Transport::kTcp) uv_tcp_nodelay(self->handle(), 1);
  self->state_ = State::kLoggingIn;
  if (self->transport() == Transport::kTcp &&
      self->endpoint_.tls_mode != conf::ServerTlsMode::kDisable && self->endpoint_.tls) {
    self->awaiting_tls_answer_ = true;
    wire::SslRequest{}.encode(self->outputBuffer());
    self->scheduleFlush();
  } else {
    self->sendStartup();
  }
  self->startReading();
}

size_t ServerConnection::onTlsAnswer(std::string_view data) {
  awaiting_tls_answer_ = false;
  const char answer = data.front();
  if (answer == 'S') {
    if (data.size() > 1) {
      // Bytes before the handshake could come from anyone on the path (CVE-2021-23222).
      fail(lostError(endpoint_, "the server sent unencrypted data after accepting TLS"));
      return data.size();
    }
    auto session = TlsSession::clientSide(endpoint_.tls, endpoint_.host,
                                          endpoint_.tls_mode == conf::ServerTlsMode::kVerifyFull);
    if (!session.ok()) {
      fail(std::move(session).error());
      return data.size();
    }
    startTls(std::move(*session));
    sendStartup();  // queued in plain text, encrypted once the handshake is done
    return 1;
  }
  if (answer == 'N') {
    if (endpoint_.tls_mode != conf::ServerTlsMode::kPrefer) {
      fail(Error::fatal(sqlstate::kConnectionFailure,
                        "server " + endpoint_.label + " at " + endpoint_.where() +
                            " does not support TLS, and server_tls_sslmode = " +
                            std::string(conf::serverTlsModeName(endpoint_.tls_mode)),
                        "",
                        "turn ssl on in the server's configuration, or set server_tls_sslmode "
                        "to prefer"));
      return data.size();
    }
    sendStartup();
    return 1;
  }
  if (answer == 'E') return 0;  // an ErrorResponse (e.g. out of processes): the login loop reads it
  fail(lostError(endpoint_, std::string("unexpected answer '") + answer + "' to SSLRequest"));
  return data.size();
}

void ServerConnection::sendStartup() {
  wire::StartupMessage startup;
  startup.protocol_version = wire::kProtocolVersion30;
  // No application_name: a client that sets none must see Postgres's default (empty).
  startup.parameters = {{"user", endpoint_.user}, {"database", endpoint_.database}};
  startup.encode(outputBuffer());
  scheduleFlush();
}

size_t ServerConnection::onData(std::string_view data) {
  switch (state_) {
    case State::kHeld:
      return passThrough(data);
    case State::kInternal:
      return consumeInternal(data);
    default:
      break;
  }
  size_t used = 0;
  if (awaiting_tls_answer_ && !data.empty()) {
    used = onTlsAnswer(data);
    // TLS starts after the answer: nothing else can be in this read.
    if (closing() || tls() != nullptr) return data.size();
  }
  while (used < data.size() && !closing()) {
    if (state_ == State::kHeld) return used + passThrough(data.substr(used));
    if (state_ == State::kInternal) return used + consumeInternal(data.substr(used));
    wire::FrameResult framed = wire::frameTyped(data.substr(used), kMaxServerMessage);
    if (framed.status == wire::FrameStatus::kNeedMore) break;
    if (framed.status == wire::FrameStatus::kInvalid) {
      fail(lostError(endpoint_, "malformed message from server: " + framed.error.message));
      return data.size();
    }
    used += framed.frame.size;
    char type = framed.frame.type;
    std::string_view payload = framed.frame.payload;
    if (state_ == State::kLoggingIn) {
      Status st = handleLoginMessage(type, payload);
      if (!st.ok()) {
        fail(std::move(st).error());
        return data.size();
      }
      continue;
    }
    // Idle in the pool: only asynchronous messages may arrive.
    if (type == wire::be::kParameterStatus) {
      noteParameterStatus(payload);
    } else if (type == wire::be::kErrorResponse) {
      auto err = wire::ErrorResponse::decode(payload);
      std::string msg = err.ok() ? err->toError().describe() : std::string("unreadable error");
      spdlog::info("event=server_error_while_idle server={} error=\"{}\"", endpoint_.label, msg);
    }
  }
  return used;
}

Status ServerConnection::handleLoginMessage(char type, std::string_view payload) {
  switch (type) {
    case wire::be::kAuthentication:
      return handleAuthentication(payload);
    case wire::be::kParameterStatus:
      noteParameterStatus(payload);
      return {};
    case wire::be::kBackendKeyData: {
      auto key = wire::BackendKeyData::decode(payload);
      if (!key.ok()) return key.error();
      backend_pid_ = key->process_id;
      backend_secret_ = key->secret_key;
      return {};
    }
    case wire::be::kReadyForQuery: {
      auto ready = wire::ReadyForQuery::decode(payload);
      if (!ready.ok()) return ready.error();
      transaction_status_ = ready->status;
      state_ = State::kIdle;
      scram_.reset();
      if (pool_) pool_->onServerLogin(this, Status());
      return {};
    }
    case wire::be::kErrorResponse: {
      auto err = wire::ErrorResponse::decode(payload);
      if (!err.ok()) return err.error();
      Error e = err->toError();
      e.severity = "FATAL";
      if (e.detail.empty()) e.detail = "while logging in to server " + endpoint_.label;
      return e;
    }
    case wire::be::kNoticeResponse:
    case wire::be::kNegotiateProtocolVersion:
      return {};
    default:
      return lostError(endpoint_, std::string("unexpected message '") + type + "' during login");
  }
}

Status ServerConnection::handleAuthentication(std::string_view payload) {
  auto request = wire::decodeAuthentication(payload);
  if (!request.ok()) return request.error();
  auto passwordNeeded = [&]() -> Status {
    if (endpoint_.password.empty()) {
      return Error::fatal(
          sqlstate::kInvalidPassword,
          "server " + endpoint_.label + " asks for a password but none is configured",
          "set password for this server in the shardgate config");
    }
    return {};
  };
  return std::visit(
      [&](auto&& msg) -> Status {
        using T = std::decay_t<decltype(msg)>;
        if constexpr (std::is_same_v<T, wire::AuthenticationOk>) {
          return {};
        } else if constexpr (std::is_same_v<T, wire::AuthenticationCleartextPassword>) {
          if (auto st = passwordNeeded(); !st.ok()) return st;
          wire::PasswordMessage{endpoint_.password}.encode(outputBuffer());
          scheduleFlush();
          return {};
        } else if constexpr (std::is_same_v<T, wire::AuthenticationMd5Password>) {
          if (auto st = passwordNeeded(); !st.ok()) return st;
          std::string hash = wire::md5PasswordHash(endpoint_.user, endpoint_.password);
          std::string response =
              wire::md5SaltedResponse(hash, std::string_view(msg.salt.data(), msg.salt.size()));
          wire::PasswordMessage{response}.encode(outputBuffer());
          scheduleFlush();
          return {};
        } else if constexpr (std::is_same_v<T, wire::AuthenticationSasl>) {
          if (auto st = passwordNeeded(); !st.ok()) return st;
          bool offered = false;
          for (const auto& m : msg.mechanisms) offered |= (m == wire::ScramServer::kMechanism);
          if (!offered) {
            return Error::fatal(
                sqlstate::kFeatureNotSupported,
                "server " + endpoint_.label + " offers no SASL mechanism shardgate supports");
          }
          scram_ = std::make_unique<ScramState>(endpoint_.password);
          wire::SaslInitialResponse initial;
          initial.mechanism = std::string(wire::ScramServer::kMechanism);
          initial.data = scram_->client.clientFirstMessage();
          initial.encode(outputBuffer());
          scheduleFlush();
          return {};
        } else if constexpr (std::is_same_v<T, wire::AuthenticationSaslContinue>) {
          if (!scram_) return lostError(endpoint_, "unexpected SASL continue");
          auto final_msg = scram_->client.handleServerFirst(msg.data);
          if (!final_msg.ok()) return final_msg.error();
          wire::SaslResponse{*final_msg}.encode(outputBuffer());
          scheduleFlush();
          return {};
        } else if constexpr (std::is_same_v<T, wire::AuthenticationSaslFinal>) {
          if (!scram_) return lostError(endpoint_, "unexpected SASL final");
          return scram_->client.handleServerFinal(msg.data);
        } else {
          return Error::fatal(sqlstate::kFeatureNotSupported,
                              "server " + endpoint_.label +
                                  " asks for an authentication method shardgate does not support");
        }
      },
      *request);
}

void ServerConnection::noteParameterStatus(std::string_view payload) {
  auto status = wire::ParameterStatus::decode(payload);
  if (!status.ok()) return;
  std::string& value = parameters_[status->name];
  if (value != status->value) {
    value = std::move(status->value);
    settings_tag_ = nullptr;
  }
}

void ServerConnection::attach(ServerSink* sink) {
  if (sink_ != nullptr || state_ != State::kIdle) {
    spdlog::warn("event=attach_busy server={} id={} state={} old_sink={} new_sink={}",
                 endpoint_.label, id_, toString(state_), static_cast<void*>(sink_),
                 static_cast<void*>(sink));
  }
  if (debugLogging()) {
    spdlog::debug("event=server_attach server={} id={} sink={} owed={} pending={}", endpoint_.label,
                  id_, static_cast<void*>(sink), replies_.size(), pendingInputBytes());
  }
  sink_ = sink;
  state_ = State::kHeld;
  // Replies that arrived while idle were consumed already; anything kept is for the new holder.
  processPending();
}

void ServerConnection::detach() {
  if (debugLogging()) {
    spdlog::debug("event=server_detach server={} id={} sink={} owed={} state={}", endpoint_.label,
                  id_, static_cast<void*>(sink_), replies_.size(), toString(state_));
  }
  sink_ = nullptr;
  if (state_ == State::kHeld) state_ = State::kIdle;
  if (paused_for_sink_) {
    paused_for_sink_ = false;
    startReading();
  }
}

void ServerConnection::resumeIfPaused() {
  if (!paused_for_sink_ || closing()) return;
  paused_for_sink_ = false;
  startReading();
  processPending();
}

// The hot path: find message boundaries, pass byte ranges on without decoding rows.
size_t ServerConnection::passThrough(std::string_view data) {
  size_t used = 0;
  size_t run_start = 0;
  std::string synthetic;
  auto passRun = [&](size_t end) {
    if (end > run_start) sink_->onServerBytes(data.substr(run_start, end - run_start));
    run_start = end;
  };
  wire::Frame frame;
  while (used < data.size()) {
    wire::FrameStatus status = wire::peekTyped(data.substr(used), kMaxServerMessage, frame);
    if (status == wire::FrameStatus::kNeedMore) break;
    if (status == wire::FrameStatus::kInvalid) {
      auto framed = wire::frameTyped(data.substr(used), kMaxServerMessage);
      fail(lostError(endpoint_, "malformed message from server: " + framed.error.message));
      return data.size();
    }
    const char type = frame.type;
    const size_t start = used;
    used += frame.size;
    // Rows are by far the most common message: nothing to track, unless they are swallowed.
    if (type == wire::be::kDataRow &&
        (replies_.empty() || replies_.front().action != ReplyAction::kSwallow)) {
      continue;
    }
    bool for_client = trackReply(type, frame.payload, synthetic);
    if (!for_client) {
      passRun(start);
      run_start = used;
    }
    if (!synthetic.empty()) {
      passRun(used);
      sink_->onServerBytes(synthetic);
      synthetic.clear();
    }
    if (type == wire::be::kReadyForQuery && !for_client && replies_.empty()) {
      passRun(used);
      sink_->onServerCaughtUp();
      if (closing()) return data.size();
      if (state_ != State::kHeld) {
        return used + (state_ == State::kInternal ? consumeInternal(data.substr(used))
                                                  : onData(data.substr(used)));
      }
    }
    if (type == wire::be::kReadyForQuery && for_client) {
      passRun(used);
      sink_->onServerReadyForQuery(transaction_status_);
      // The holder may have released us (or closed us) in that callback.
      if (closing()) return data.size();
      if (state_ != State::kHeld) {
        return used + (state_ == State::kInternal ? consumeInternal(data.substr(used))
                                                  : onData(data.substr(used)));
      }
    }
  }
  passRun(used);
  if (sink_ && sink_->sinkCongested()) {
    paused_for_sink_ = true;
    stopReading();
  }
  if (notify_caught_up_ && replies_.empty() && sink_) {
    notify_caught_up_ = false;
    sink_->onServerCaughtUp();  // may release or close us: nothing below touches state
  }
  return used;
}

// Pops the head of the reply queue for a request the server skipped: a Parse it skipped left no
// statement, on the server or for the client.
template <class Skipped>
void ServerConnection::dropSkippedReplies(Skipped skipped) {
  std::vector<ExpectedReply> dropped;
  while (!replies_.empty() && skipped(replies_.front())) {
    dropped.push_back(std::move(replies_.front()));
    replies_.pop_front();
  }
  // Newest first: "Close S s; Parse s" skipped together leaves the client its old s.
  for (auto it = dropped.rbegin(); it != dropped.rend(); ++it) {
    const ExpectedReply& e = *it;
    // A check the server skipped: what waited for it follows (and is skipped too, up to a Sync).
    if (e.checks_shape) releaseHeld();
    if (e.reply == Reply::kParseComplete) {
      // A Parse sent failed or was skipped: the connection does not have the statement (unless
      // a later request parses it again: ensurePrepared). One shardgate answered (the
      // connection had it) leaves it there, and so does a client's Parse sent as another
      // statement (none here: the connection's own one stays).
      if (e.statement && e.action != ReplyAction::kSynthesize &&
          owedParseOf(*e.statement) == OwedParse::kNone) {
        statements_.remove(e.statement->id());
      }
      if (!e.client_statement_name.empty() && sink_) {
        sink_->onStatementFailed(e.client_statement_name);
      }
    } else if (e.reply == Reply::kCloseComplete && e.statement && sink_) {
      sink_->onCloseSkipped(e.client_statement_name, e.statement);
    }
  }
}

void ServerConnection::expect(ExpectedReply expected) {
  if (expected.action == ReplyAction::kSynthesize && replies_.empty()) {
    if (sink_) sink_->onServerBytes(expected.synthetic);
    return;
  }
  replies_.push_back(std::move(expected));
}

size_t ServerConnection::unsentBytes() const {
  size_t held = 0;
  for (size_t i = 0; i < held_.size(); ++i) held += held_[i].size();
  return TcpConnection::unsentBytes() + held;
}

// Where the server has yet to answer a Parse of `statement` (of a client's or shardgate's): none,
// in the request being sent, or in an earlier one (a ReadyForQuery is owed after it).
ServerConnection::OwedParse ServerConnection::owedParseOf(const PreparedStatement& statement,
                                                          bool forwarded_only) const {
  bool ready_after = false;
  for (size_t i = replies_.size(); i-- > 0;) {
    const ExpectedReply& e = replies_[i];
    if (e.reply == Reply::kReadyForQuery && e.action != ReplyAction::kSynthesize) {
      ready_after = true;
    } else if (e.reply == Reply::kParseComplete && e.action != ReplyAction::kSynthesize &&
               (!forwarded_only || e.action == ReplyAction::kForward) &&
               e.statement.get() == &statement) {
      return ready_after ? OwedParse::kEarlierRequest : OwedParse::kThisRequest;
    }
  }
  return OwedParse::kNone;
}

void ServerConnection::ensurePrepared(const std::shared_ptr<PreparedStatement>& statement,
                                      bool check_result) {
  if (statements_.has(statement->id())) {
    // Counted as prepared once its Parse is sent. Should that Parse be in an earlier request
    // still unanswered (pipelined), an error there may yet skip it: this request closes and
    // parses it again, which is right whether it was made or not.
    if (replies_.empty() || owedParseOf(*statement) != OwedParse::kEarlierRequest) {
      statements_.touch(statement->id());
      return;
    }
    std::string close;
    wire::Close{'S', statement->serverName()}.encode(close);
    forward(close);
    replies_.push_back(
        ExpectedReply{Reply::kCloseComplete, ReplyAction::kSwallow, nullptr, {}, {}});
  }
  forward(statement->parseMessage());
  // An SQL-level statement is prepared by a simple Query (PREPARE), answered up to ReadyForQuery.
  if (statement->sqlLevel()) noteUnnamedStatementDropped();
  Reply reply = statement->sqlLevel() ? Reply::kReadyForQuery : Reply::kParseComplete;
  replies_.push_back(ExpectedReply{reply, ReplyAction::kSwallow, statement, {}, {}});
  // Counted as prepared from now on, so a pipeline that binds it twice parses it once; an error
  // takes it out again.
  statements_.add(statement);
  if (!check_result || statement->sqlLevel() || !statement->described()) return;
  // Its clients were told the shape of its result, which this Parse may not give any more (a
  // table changed since): checked before the server sees what needs the statement (Postgres
  // checks at Bind and at Describe, before any row).
  std::string check;
  wire::Describe{'S', statement->serverName()}.encode(check);
  wire::Flush{}.encode(check);
  forward(check);
  ExpectedReply& slot = replies_.emplace_back();
  slot.reply = Reply::kDescription;
  slot.action = ReplyAction::kSwallow;
  slot.statement = statement;
  slot.checks_shape = true;
  held_.emplace_back();
}

void ServerConnection::releaseHeld() {
  if (held_.empty()) return;
  std::string segment = std::move(held_.front());
  held_.pop_front();
  if (!segment.empty()) send(segment);
}

bool ServerConnection::statementDescribed(char type, std::string_view payload,
                                          std::string& synthetic) {
  ExpectedReply& head = replies_.front();
  if (!head.checks_shape) {
    head.statement->noteDescribed(type, payload);
    const bool for_client = head.action != ReplyAction::kSwallow;
    popReply(synthetic);
    return for_client;
  }
  if (head.statement->sameResultShape(type, payload)) {
    popReply(synthetic);
    releaseHeld();
    return false;
  }
  // Prepared again here it has another result than its clients were told: closed, so that the
  // request that needs it fails on the server (which skips to the Sync, as after any error) and
  // gets the error Postgres gives for a prepared statement whose result type changed. New Parses
  // of its text get a statement of their own.
  std::string close;
  wire::Close{'S', head.statement->serverName()}.encode(close);
  send(close);
  statements_.remove(head.statement->id());
  head.statement->retire();
  head.statement.reset();
  head.reply = Reply::kCloseComplete;  // (still swallowed) the Close's reply comes next
  head.checks_shape = false;
  refuse_closed_statement_ = true;
  releaseHeld();
  return false;
}

void ServerConnection::popReply(std::string& synthetic) {
  replies_.pop_front();
  while (!replies_.empty() && replies_.front().action == ReplyAction::kSynthesize) {
    synthetic += replies_.front().synthetic;
    replies_.pop_front();
  }
}

bool ServerConnection::trackReply(char type, std::string_view payload, std::string& synthetic) {
  if (type == wire::be::kCopyInResponse) {
    copy_in_ = true;
    copy_in_from_execute_ = !replies_.empty() && replies_.front().reply == Reply::kExecution;
  } else if (copy_in_ && (type == wire::be::kCommandComplete || type == wire::be::kErrorResponse ||
                          type == wire::be::kReadyForQuery)) {
    copy_in_ = false;
  }
  switch (type) {
    case wire::be::kParameterStatus:
      noteParameterStatus(payload);
      if (sink_) sink_->onServerParameterStatus(payload);
      return true;
    case wire::be::kNoticeResponse:
    case wire::be::kNotificationResponse:
      return true;
    default:
      break;
  }
  if (replies_.empty()) return true;  // nothing owed: pass on whatever it is
  ExpectedReply& head = replies_.front();
  const bool for_client = head.action != ReplyAction::kSwallow;
  switch (type) {
    case wire::be::kParseComplete:
      if (head.statement) head.statement->notePrepared();
      popReply(synthetic);
      return for_client;
    case wire::be::kBindComplete:
    case wire::be::kCloseComplete:
    case wire::be::kPortalSuspended:
      popReply(synthetic);
      return for_client;
    case wire::be::kRowDescription:
    case wire::be::kNoData:
      if (head.reply != Reply::kDescription) return for_client;
      if (head.statement) return statementDescribed(type, payload, synthetic);
      popReply(synthetic);
      return for_client;
    case wire::be::kCommandComplete:
    case wire::be::kEmptyQueryResponse: {
      if (type == wire::be::kCommandComplete && sink_ && for_client) {
        std::string_view tag = payload.substr(0, payload.find('\0'));
        if (tag == "DISCARD ALL") {
          forgetSessionState();
        } else if (tag == "DEALLOCATE ALL") {
          statements_.clear();
        } else if (!tag.empty() && (tag[0] == 'A' || tag[0] == 'D' || tag[0] == 'C') &&
                   (tag.starts_with("ALTER ") || tag.starts_with("DROP ") ||
                    tag.starts_with("CREATE "))) {
          StatementRegistry::noteSchemaChange();
        }
        sink_->onServerCommandComplete(tag);
      }
      if (head.reply == Reply::kExecution) popReply(synthetic);
      return for_client;
    }
    case wire::be::kErrorResponse: {
      // Postgres skips every request up to the next Sync: so do the owed replies. A failed Parse
      // leaves no statement, on the server or for the client.
      bool pass = !(head.reply == Reply::kReadyForQuery && head.action == ReplyAction::kSwallow);
      if (pass && sink_) {
        noteErrorSqlstate(payload, last_error_sqlstate_);
        if (std::exchange(refuse_closed_statement_, false) &&
            std::string_view(last_error_sqlstate_, 5) == sqlstate::kInvalidStatementName) {
          changedResultTypeError().encode(synthetic);
          std::memcpy(last_error_sqlstate_, sqlstate::kFeatureNotSupported.data(), 5);
          pass = false;  // given in its place
        } else if (lock_deadlock_error_ &&
                   std::string_view(last_error_sqlstate_, 5) == sqlstate::kQueryCanceled) {
          wire::ErrorResponse::fromError(*lock_deadlock_error_).encode(synthetic);
          std::memcpy(last_error_sqlstate_, sqlstate::kDeadlockDetected.data(), 5);
          lock_deadlock_error_.reset();
          pass = false;  // given in its place
        }
        sink_->onServerErrorResponse();
      }
      auto realReady = [](const ExpectedReply& e) {
        return e.reply == Reply::kReadyForQuery && e.action != ReplyAction::kSynthesize;
      };
      if (head.reply == Reply::kParseComplete && head.statement &&
          head.client_statement_name.empty() && !head.statement->everPrepared() && sink_) {
        // shardgate's own Parse of a statement its client parsed (answered by shardgate) and no
        // server ever accepted: the client's Parse failed, as it would have on Postgres.
        sink_->onStatementRejected(head.statement);
      }
      if (head.reply == Reply::kReadyForQuery && head.statement) {
        statements_.remove(head.statement->id());  // an SQL PREPARE that failed
        if (!head.client_statement_name.empty() && sink_) {
          sink_->onStatementFailed(head.client_statement_name);
        }
      }
      // Requests shardgate answered itself in this batch are skipped too (their answers with it),
      // and so are its own Queries sent inside the batch, unless this is such a Query's error.
      const bool own_query_failed = head.reply == Reply::kReadyForQuery && head.inside_batch;
      dropSkippedReplies([&](const ExpectedReply& e) {
        return !realReady(e) || (e.inside_batch && !own_query_failed);
      });
      return pass;
    }
    case wire::be::kReadyForQuery:
      transaction_status_ = payload.empty() ? 'I' : payload[0];
      refuse_closed_statement_ = false;
      lock_deadlock_error_.reset();
      // Requests sent after an error and before the Sync were skipped by the server without a
      // reply (or the queue is out of step): resynchronise at the Sync.
      dropSkippedReplies([](const ExpectedReply& e) {
        return e.reply != Reply::kReadyForQuery || e.action == ReplyAction::kSynthesize;
      });
      if (!replies_.empty()) {
        bool pass = replies_.front().action != ReplyAction::kSwallow;
        popReply(synthetic);
        return pass;
      }
      return true;
    default:
      // ParameterDescription, CopyIn/Out/Both, CopyData/Done, FunctionCallResponse: part of a
      // reply still in progress.
      return for_client;
  }
}

void ServerConnection::runInternal(std::string_view sql, std::function<void(Status)> done) {
  if (!replies_.empty()) {
    spdlog::warn("event=internal_with_owed server={} id={} owed={} sql=\"{}\"", endpoint_.label,
                 id_, replies_.size(), sql.substr(0, 60));
  }
  noteUnnamedStatementDropped();
  state_before_internal_ = (state_ == State::kHeld) ? State::kHeld : State::kIdle;
  state_ = State::kInternal;
  internal_done_ = std::move(done);
  internal_error_.reset();
  wire::Query{std::string(sql)}.encode(outputBuffer());
  scheduleFlush();
}

size_t ServerConnection::consumeInternal(std::string_view data) {
  size_t used = 0;
  while (used < data.size() && state_ == State::kInternal) {
    wire::FrameResult framed = wire::frameTyped(data.substr(used), kMaxServerMessage);
    if (framed.status == wire::FrameStatus::kNeedMore) break;
    if (framed.status == wire::FrameStatus::kInvalid) {
      fail(lostError(endpoint_, "malformed message from server: " + framed.error.message));
      return data.size();
    }
    used += framed.frame.size;
    switch (framed.frame.type) {
      case wire::be::kParameterStatus:
        noteParameterStatus(framed.frame.payload);
        break;
      case wire::be::kErrorResponse:
        if (!internal_error_) {
          auto err = wire::ErrorResponse::decode(framed.frame.payload);
          internal_error_ =
              err.ok() ? err->toError() : Error::make(sqlstate::kInternalError, "unreadable error");
        }
        break;
      case wire::be::kReadyForQuery: {
        transaction_status_ = framed.frame.payload.empty() ? 'I' : framed.frame.payload[0];
        state_ = state_before_internal_;
        auto done = std::move(internal_done_);
        internal_done_ = nullptr;
        Status result = internal_error_ ? Status(*internal_error_) : Status();
        internal_error_.reset();
        if (done) done(std::move(result));
        if (closing()) return data.size();
        if (state_ != State::kInternal && used < data.size())
          return used + onData(data.substr(used));
        break;
      }
      default:
        break;  // CommandComplete, notices and the like are not the client's business
    }
  }
  return used;
}

void ServerConnection::fail(Error error) {
  if (state_ == State::kClosed) return;
  State previous = state_;
  state_ = State::kClosed;
  spdlog::info("event=server_closed server={} id={} state={} reason=\"{}\"", endpoint_.label, id_,
               toString(previous), error.describe());
  ServerSink* sink = sink_;
  sink_ = nullptr;
  auto done = std::move(internal_done_);
  internal_done_ = nullptr;
  close();
  if (previous == State::kConnecting || previous == State::kLoggingIn) {
    if (pool_) pool_->onServerLogin(this, error);
  } else if (done) {
    done(error);
  } else if (sink) {
    sink->onServerLost(error);
  }
}

void ServerConnection::terminate() {
  if (state_ == State::kClosed) return;
  const bool logged_in = state_ != State::kConnecting && state_ != State::kLoggingIn;
  state_ = State::kClosed;  // a write failure below finds the connection closed already
  sink_ = nullptr;
  if (logged_in) {
    // Tell the server we are leaving so it logs no "unexpected EOF".
    std::string bye;
    wire::Terminate{}.encode(bye);
    if (tls() != nullptr) {
      send(bye);  // in a TLS record, after whatever is queued, then close_notify
      sendCloseNotify();
      flushNow();
    } else {
      uv_buf_t buf = uv_buf_init(bye.data(), static_cast<unsigned>(bye.size()));
      uv_try_write(stream(), &buf, 1);
    }
  }
  close();
}

void ServerConnection::onDisconnect(int status) {
  if (tls() != nullptr && !tls()->failure().empty()) {
    fail(Error::fatal(sqlstate::kConnectionFailure,
                      "TLS with server " + endpoint_.label + " at " + endpoint_.where() + " failed",
                      tls()->failure()));
    return;
  }
  fail(lostError(endpoint_,
                 status == UV_EOF ? "server closed the connection" : uv_strerror(status)));
}

void ServerConnection::onClosed() {
  if (resolving_) resolving_->owner = nullptr;
  if (pool_) pool_->onServerClosed(this);
}

}  // namespace shardgate::backends
