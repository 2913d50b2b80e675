// One connection to a Postgres server: login (trust, cleartext, md5, SCRAM), pass-through of
// replies to the client that holds it, and internal statements (parameter sync, reset).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "backends/prepared_statements.h"
#include "backends/reply_queue.h"
#include "common/result.h"
#include "common/tcp_connection.h"
#include "conf/config.h"

namespace shardgate::backends {

class Pool;
class ConnectionHolder;

// Where and as whom shardgate logs in to one Postgres server.
struct ServerEndpoint {
  std::string host;
  uint16_t port = 5432;
  std::string database;
  std::string user;
  std::string password;
  std::string label;  // "<database>/<shard>/<role>", for logs and error details
  // TLS: disable sends no SSLRequest; otherwise `tls` is the client context to use (its CA
  // decides whether the certificate is checked). Unix sockets never use TLS.
  conf::ServerTlsMode tls_mode = conf::ServerTlsMode::kDisable;
  std::shared_ptr<const TlsContext> tls;

  bool unixSocket() const { return conf::isUnixSocketDirectory(host); }
  std::string unixSocketPath() const { return conf::unixSocketPath(host, port); }
  // "host:port", or the socket's path.
  std::string where() const {
    return unixSocket() ? unixSocketPath() : host + ":" + std::to_string(port);
  }
};

// The party holding a server connection: it receives what the server says.
class ServerSink {
 public:
  virtual ~ServerSink() = default;
  // Whole protocol messages to pass on unchanged.
  virtual void onServerBytes(std::string_view bytes) = 0;
  // A ReadyForQuery was passed on (its bytes were the last of the preceding onServerBytes call).
  virtual void onServerReadyForQuery(char transaction_status) = 0;
  // The connection broke while held; the sink must drop its pointer (the connection is closing).
  virtual void onServerLost(const Error& error) = 0;
  // True while the sink's own output is over its limit; the server then stops reading.
  virtual bool sinkCongested() const = 0;
  // A Parse the client sent failed (or was skipped after an earlier error): the client no
  // longer has `client_name` prepared.
  virtual void onStatementFailed(const std::string& client_name) = 0;
  // The server rejected shardgate's Parse of `statement` (one the client parsed, answered by
  // shardgate), and no server ever accepted it: the client does not have it under any name.
  virtual void onStatementRejected(const std::shared_ptr<PreparedStatement>& /*statement*/) {}
  // A Close of the client's statement `client_name`, answered by shardgate, was skipped by the
  // server after an earlier error: the client has `statement` under that name again.
  virtual void onCloseSkipped(const std::string& /*client_name*/,
                              const std::shared_ptr<PreparedStatement>& /*statement*/) {}
  // A CommandComplete passed on (its tag, e.g. "SELECT 1", "LISTEN", "DISCARD ALL").
  virtual void onServerCommandComplete(std::string_view tag) = 0;
  // An ErrorResponse passed on.
  virtual void onServerErrorResponse() = 0;
  // A ReadyForQuery the sink never sees (of a statement shardgate injected) left nothing owed.
  virtual void onServerCaughtUp() = 0;
  // A ParameterStatus passed on (its payload: name and value, NUL-terminated).
  virtual void onServerParameterStatus(std::string_view payload) = 0;
  // Everything written to the server went out (a COPY's rows: the sink may read more of them).
  virtual void onServerWriteDrained() {}
  // Who holds the connection through this sink, for deadlock detection (nullptr: none to name).
  virtual ConnectionHolder* holder() { return nullptr; }
};

using ServerParameters = std::map<std::string, std::string, std::less<>>;

class ServerConnection final : public TcpConnection {
 public:
  enum class State {
    kConnecting,  // TCP connect in progress
    kLoggingIn,   // startup and authentication
    kIdle,        // logged in, in the pool
    kHeld,        // attached to a sink, passing replies through
    kInternal,    // running an internal statement, replies swallowed
    kClosed,
  };

  ServerConnection(LoopContext& context, Pool* pool, const ServerEndpoint& endpoint, uint64_t id,
                   uint64_t now_ms);

  // Starts connecting; the pool hears the outcome through Pool::onServerLogin.
  void connect();

  State state() const { return state_; }
  uint64_t id() const { return id_; }
  const ServerEndpoint& endpoint() const { return endpoint_; }
  int32_t backendPid() const { return backend_pid_; }
  int32_t backendSecret() const { return backend_secret_; }
  // The address a TCP connection reached (where a CancelRequest for its backend goes); nullptr
  // for a Unix socket or before the connection is made.
  const struct sockaddr* connectedAddress() const;
  char transactionStatus() const { return transaction_status_; }
  // The SQLSTATE of the last ErrorResponse passed to the sink (for the errors metric).
  std::string_view lastErrorSqlstate() const { return {last_error_sqlstate_, 5}; }
  const ServerParameters& parameters() const { return parameters_; }
  uint64_t createdAtMs() const { return created_at_ms_; }
  // When the try at the current address began (creation, for the first): connect_timeout applies
  // to each address separately, as in libpq.
  uint64_t attemptStartedAtMs() const { return attempt_started_at_ms_; }
  // Gives up on an address that has not answered within the connect timeout and goes on to the
  // host's next one; false when there is none left (or the TCP connection was already made), and
  // the connection has timed out for good.
  bool tryNextAddressAfterTimeout(uint32_t timeout_ms);
  // For the error of a connection that timed out for good: what each address gave ("addr:
  // error, ..., addr: timed out after N ms"); empty when the host has a single address.
  std::string timedOutAttempts(uint32_t timeout_ms) const;
  uint64_t lastUsedAtMs() const { return last_used_at_ms_; }
  void touch(uint64_t now_ms) { last_used_at_ms_ = now_ms; }

  // Pass-through: replies go to `sink` until detach().
  void attach(ServerSink* sink);
  void detach();
  ServerSink* sink() const { return sink_; }
  // The statement running here waits in a deadlock across shards and is about to be cancelled
  // (the caller sends the CancelRequest): its cancellation error reaches the sink as `error`.
  void noteCancelledForLockDeadlock(Error error) {
    lock_deadlock_error_ = std::make_unique<Error>(std::move(error));
  }
  // Client bytes for the server (whole messages). Held back while a statement prepared again
  // here is checked (ensurePrepared): what follows it waits for the check's answer.
  void forward(std::string_view bytes) {
    if (held_.empty()) {
      send(bytes);
    } else {
      held_.back().append(bytes);
    }
  }
  // TcpConnection's, and what is held back for a check (hides TcpConnection::unsentBytes).
  size_t unsentBytes() const;
  // Records the reply owed for a request just forwarded (or, for kSynthesize, stands in for it:
  // if nothing is owed before it, the synthetic reply goes to the sink at once).
  void expect(ExpectedReply expected);
  // The common case (several per transaction), filled in place: a queue slot is either new or
  // recycled with no statement and empty strings.
  void expect(Reply reply) {
    ExpectedReply& slot = replies_.emplace_back();
    slot.reply = reply;
    slot.action = ReplyAction::kForward;
  }
  bool owesReplies() const { return !replies_.empty(); }
  // The server sent CopyInResponse and waits for the client's rows (until CopyDone or CopyFail).
  bool inCopyIn() const { return copy_in_; }
  // That COPY was begun by an Execute: the server ignores Syncs during it, so after its end one
  // more Sync is needed for the ReadyForQuery.
  bool copyInFromExecute() const { return copy_in_from_execute_; }
  // After DISCARD ALL: no prepared statements, settings or unnamed statement of anyone's.
  void forgetSessionState() {
    statements_.clear();
    applied_settings_.clear();
    settings_tag_ = nullptr;
    unnamed_owner_ = nullptr;
  }
  // Asks for onServerCaughtUp() once nothing is owed any more.
  void notifyWhenCaughtUp() { notify_caught_up_ = true; }
  // Makes sure `statement` is prepared here, injecting a Parse whose reply is swallowed if not.
  // If its result was described to a client, a Describe and a Flush go with the Parse, and what
  // the client sends next waits for the answer: should the result have another shape now (a
  // table changed), the request that needs the statement gets Postgres's 0A000 "cached plan must
  // not change result type" instead of rows the client was not told of.
  // (`check_result` false: the caller only wants the server to refuse a Parse of the same name.)
  void ensurePrepared(const std::shared_ptr<PreparedStatement>& statement,
                      bool check_result = true);
  ServerStatementCache& statements() { return statements_; }
  // Whether a request before the one being sent still owes the client's own Parse of
  // `statement` (its answer forwarded to the client, not one of ensurePrepared's).
  bool owesClientParseEarlier(const PreparedStatement& statement) const {
    return owedParseOf(statement, /*forwarded_only=*/true) == OwedParse::kEarlierRequest;
  }
  // Settings shardgate (or a client) set on this connection that Postgres does not report.
  std::map<std::string, std::string, std::less<>>& appliedSettings() {
    settings_tag_ = nullptr;  // the caller may change them
    return applied_settings_;
  }
  // Identifies the session settings this connection is known to match (see
  // proxy/session_settings.h); null when unknown. Any settings change clears it.
  const void* settingsTag() const { return settings_tag_; }
  // Whose unnamed statement this connection has (owner and its version), so a Bind of the
  // unnamed statement on another connection can parse it there first.
  void setUnnamedStatement(const void* owner, uint64_t version) {
    unnamed_owner_ = owner;
    unnamed_version_ = version;
  }
  bool hasUnnamedStatement(const void* owner, uint64_t version) const {
    return unnamed_owner_ == owner && unnamed_version_ == version && version != 0;
  }
  // Postgres dropped the unnamed statement: a simple Query was sent, or a Parse of it failed.
  void noteUnnamedStatementDropped() {
    unnamed_owner_ = nullptr;
    unnamed_version_ = 0;
  }
  void setSettingsTag(const void* tag) { settings_tag_ = tag; }
  const std::map<std::string, std::string, std::less<>>& appliedSettings() const {
    return applied_settings_;
  }
  // The sink drained its output: resume reading if congestion had paused it.
  void resumeIfPaused();

  // Runs `sql` as a simple query whose replies are swallowed; ParameterStatus updates are kept.
  // `done` gets the first error, if any, once ReadyForQuery arrives. The server must be held or
  // idle; it returns to the state it had.
  void runInternal(std::string_view sql, std::function<void(Status)> done);

  // Closes the connection for good (the pool forgets it).
  void terminate();
  // The pool is going away: no more calls into it.
  void orphan() { pool_ = nullptr; }

 protected:
  size_t onData(std::string_view data) override;
  void onDisconnect(int status) override;
  void onClosed() override;
  void onWriteDrained() override {
    if (sink_) sink_->onServerWriteDrained();
  }

 private:
  static void connectCallback(uv_connect_t* req, int status);
  struct PendingResolve;
  static void resolveCallback(uv_getaddrinfo_t* req, int status, struct addrinfo* res);
  void connectNext();
  // A connect failed (libuv error code): the next address, or the connection fails.
  void connectFailed(int status);
  void onSocketRenewed() override;
  void sendStartup();
  Status handleLoginMessage(char type, std::string_view payload);
  Status handleAuthentication(std::string_view payload);
  size_t passThrough(std::string_view data);
  // Updates the reply queue for one server message; false if the message is not for the client.
  // Appends to `synthetic` replies that stand in for requests the server never saw.
  bool trackReply(char type, std::string_view payload, std::string& synthetic);
  void popReply(std::string& synthetic);
  // The Describe of a statement (the client's, or a check of ensurePrepared's) was answered.
  bool statementDescribed(char type, std::string_view payload, std::string& synthetic);
  enum class OwedParse : uint8_t { kNone, kThisRequest, kEarlierRequest };
  // forwarded_only: only the client's own Parse (its answer forwarded to the client).
  OwedParse owedParseOf(const PreparedStatement& statement, bool forwarded_only = false) const;
  // A check was answered (or skipped): what was held back behind it goes to the server.
  void releaseHeld();
  // Pops the owed replies of requests the server skipped after an error (while `skipped` says
  // so), and undoes, newest first, what their requests changed in the statements (the
  // connection's and the client's).
  template <class Skipped>
  void dropSkippedReplies(Skipped skipped);
  size_t consumeInternal(std::string_view data);
  void noteParameterStatus(std::string_view payload);
  void fail(Error error);
  // Adds "addr: outcome" for the address just tried to tried_.
  void noteFailedAddress(std::string_view outcome);
  // Starts on the host's next address, if there is one (TCP only).
  bool moveToNextAddress();
  // The server's one-byte answer to our SSLRequest: 'S' starts TLS, 'N' goes on in plain text
  // unless TLS is required. Returns the bytes used.
  size_t onTlsAnswer(std::string_view data);

  Pool* pool_;
  ServerEndpoint endpoint_;
  uint64_t id_;
  State state_ = State::kConnecting;
  State state_before_internal_ = State::kIdle;
  ServerSink* sink_ = nullptr;
  int32_t backend_pid_ = 0;
  int32_t backend_secret_ = 0;
  char transaction_status_ = 'I';
  char last_error_sqlstate_[5] = {'X', 'X', '0', '0', '0'};
  ServerParameters parameters_;
  uint64_t created_at_ms_;
  uint64_t attempt_started_at_ms_;
  uint64_t last_used_at_ms_;
  uv_connect_t connect_req_;
  PendingResolve* resolving_ = nullptr;             // owned by its callback
  std::vector<struct sockaddr_storage> addresses_;  // the host's addresses, tried in order
  size_t next_address_ = 0;
  std::string tried_;  // "addr: error" of each failed attempt, for the final error
  struct ScramState;
  std::unique_ptr<ScramState> scram_;
  std::function<void(Status)> internal_done_;
  std::optional<Error> internal_error_;
  bool paused_for_sink_ = false;
  bool awaiting_tls_answer_ = false;
  ReplyQueue replies_;
  // Bytes held back behind the checks of ensurePrepared still unanswered: the front segment goes
  // to the server when the oldest check is answered, and so on (a check sent while another is
  // unanswered is in the segment before its own).
  RingQueue<std::string> held_;
  // A check found the statement's result changed and closed it here: the error of the request
  // that needed it (26000, no such statement) is given as Postgres's 0A000.
  bool refuse_closed_statement_ = false;
  // The running statement is being cancelled to break a deadlock across shards: its 57014 is
  // given as this error (40P01) instead. Cleared at the next ReadyForQuery.
  std::unique_ptr<Error> lock_deadlock_error_;
  ServerStatementCache statements_;
  std::map<std::string, std::string, std::less<>> applied_settings_;
  const void* settings_tag_ = nullptr;
  bool notify_caught_up_ = false;
  bool copy_in_ = false;
  bool copy_in_from_execute_ = false;
  const void* unnamed_owner_ = nullptr;
  uint64_t unnamed_version_ = 0;
};

const char* toString(ServerConnection::State state);

}  // namespace shardgate::backends
