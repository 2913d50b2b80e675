// The fuzz drivers: codec round trips, and a real ClientSession on a real loop in front of an
// in-process fake shard, checked for well-formed output and a clean shutdown.
#include "tests/fuzz/fuzz_drivers.h"

#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <typeinfo>
#include <variant>
#include <vector>

#include "backends/pool.h"
#include "common/log.h"
#include "conf/config_loader.h"
#include "proxy/client_session.h"
#include "proxy/proxy_server.h"
#include "proxy/wire/backend_messages.h"
#include "proxy/wire/framing.h"
#include "proxy/wire/frontend_messages.h"
#include "proxy/wire/protocol.h"
#include "proxy/worker.h"
#include "tests/fuzz/fake_shard.h"

namespace shardgate::fuzz {

namespace {

// ---- codec ----------------------------------------------------------------------------------

// The config's default, so the fuzzers frame exactly as the proxy does.
constexpr uint32_t kMaxMessageSize = 64u << 20;

std::string hex(std::string_view bytes, size_t limit = 64) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < bytes.size() && i < limit; ++i) {
    auto b = static_cast<unsigned char>(bytes[i]);
    out += digits[b >> 4];
    out += digits[b & 15];
  }
  if (bytes.size() > limit) out += "...";
  return out;
}

// Decodes `payload` as T; what decodes must encode back to the same payload, and what does not
// must come with an error that says why.
template <typename T>
void roundTrip(std::string_view payload, size_t header, std::string_view name,
               const Reporter& report) {
  Result<T> decoded = T::decode(payload);
  if (!decoded.ok()) {
    if (decoded.error().message.empty()) {
      report(std::string(name) + ": decode error without a message");
    }
    return;
  }
  std::string encoded;
  decoded->encode(encoded);
  if (encoded.size() < header || std::string_view(encoded).substr(header) != payload) {
    report(std::string(name) + ": decode+encode does not give back the payload: in " +
           hex(payload) + " out " +
           hex(std::string_view(encoded).substr(std::min(header, encoded.size()))));
  }
}

template <typename... T>
void roundTripTyped(std::string_view payload, const Reporter& report) {
  (roundTrip<T>(payload, 5, typeid(T).name(), report), ...);
}

template <typename... T>
void roundTripUntyped(std::string_view payload, const Reporter& report) {
  (roundTrip<T>(payload, 4, typeid(T).name(), report), ...);
}

void checkFrame(const wire::FrameResult& framed, std::string_view buf, size_t header,
                const Reporter& report) {
  switch (framed.status) {
    case wire::FrameStatus::kComplete:
      if (framed.frame.size > buf.size() ||
          framed.frame.size != framed.frame.payload.size() + header ||
          framed.frame.payload.data() != buf.data() + header) {
        report("framing: complete frame inconsistent with the buffer");
      }
      if (header == 4 && (framed.frame.size < 8 || framed.frame.size > 10000)) {
        report("framing: startup packet of " + std::to_string(framed.frame.size) + " bytes");
      }
      break;
    case wire::FrameStatus::kNeedMore:
      if (framed.needed != 0 && framed.needed <= buf.size()) {
        report("framing: asks for " + std::to_string(framed.needed) + " bytes but has " +
               std::to_string(buf.size()));
      }
      break;
    case wire::FrameStatus::kInvalid:
      if (framed.error.sqlstate != "08P01" || framed.error.severity != "FATAL" ||
          framed.error.message.empty()) {
        report("framing: invalid frame without a FATAL 08P01 error");
      }
      break;
  }
}

// ---- the session's world --------------------------------------------------------------------

std::string configText(bool transaction_pooling, uint16_t shard_port) {
  std::string text = R"([general]
listen_addr = "127.0.0.1"
port = 6432
workers = 1
)";
  text += transaction_pooling ? "pool_mode = \"transaction\"\nmax_message_size = 8192\n"
                              : "pool_mode = \"session\"\n";
  text += R"(
[[users]]
name = "trusty"
auth_method = "trust"

[[users]]
name = "scram"
password = "SCRAM-SHA-256$4096:c2hhcmRnYXRlLXNhbHQxNg==$0ZzQRwiH54iQ4aqwX6ctaymwERqzmu3JRfWLLJtSIiE=:vzfgNe5vza/NVu050k98IZYFZRzrT0Mhv/gjPRwzZ2g="

# md5("secret" || user): stored hashes keep PBKDF2 out of every run.
[[users]]
name = "md5user"
auth_method = "md5"
password = "md52aea419619857e8a27f0f7aa641db0c6"

[[users]]
name = "clear"
auth_method = "cleartext"
password = "md5900c2dcf4aeb997ef19a6dd4790902ae"

[[databases]]
name = "app"
  [[databases.shards]]
  primary = { host = "127.0.0.1", port = )";
  text += std::to_string(shard_port);
  text += R"(, database = "app", user = "postgres", password = "pw" }

# Two shards on the fake shard, users hashed on id: routing, multi-shard runs and batches that
# move between shards.
[[databases]]
name = "sharded"
default_shard = 0
  [[databases.shards]]
  primary = { host = "127.0.0.1", port = )";
  text += std::to_string(shard_port);
  text += R"(, database = "app", user = "postgres", password = "pw" }
  [[databases.shards]]
  primary = { host = "127.0.0.1", port = )";
  text += std::to_string(shard_port);
  text += R"(, database = "app", user = "postgres", password = "pw" }
  [[databases.sharded_tables]]
  name = "users"
  column = "id"
  type = "bigint"
  strategy = "hash"

# Nothing listens on port 1: connecting fails at once.
[[databases]]
name = "down"
  [[databases.shards]]
  primary = { host = "127.0.0.1", port = 1, database = "down", user = "postgres" }
)";
  return text;
}

// Built once per process: parsing the config every run would only measure toml++.
struct Environment {
  conf::ConfigPtr session_config;
  conf::ConfigPtr transaction_config;
  std::unique_ptr<proxy::ProxyServer> proxy;  // never started: it only lends its shared state

  Environment() {
    spdlog::set_level(spdlog::level::off);
    // Writes to a peer that left must fail with EPIPE, as in the shardgate binary.
    signal(SIGPIPE, SIG_IGN);
    uint16_t port = FakeShardListener::instance().port();
    auto parse = [&](bool transaction) {
      auto parsed = conf::parseConfig(configText(transaction, port), "fuzz.toml");
      if (!parsed.ok()) {
        std::fprintf(stderr, "fuzz config does not load: %s\n", parsed.error().message.c_str());
        std::abort();
      }
      return *parsed;
    };
    session_config = parse(false);
    transaction_config = parse(true);
    proxy = std::make_unique<proxy::ProxyServer>(session_config);
  }
};

Environment& environment() {
  static Environment env;
  return env;
}

// The client end of the session's socket: writes the fuzz input, collects what comes back.
class Client {
 public:
  explicit Client(int fd) : fd_(fd) {}
  ~Client() { close(); }

  // Returns the number of bytes the socket took (less when full, 0 when the session is gone).
  size_t write(std::string_view bytes) {
    if (fd_ < 0) return 0;
    ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK) gone_ = true;
      return 0;
    }
    return static_cast<size_t>(n);
  }
  void drain() {
    if (fd_ < 0 || eof_) return;
    char buf[16384];
    for (;;) {
      ssize_t n = ::recv(fd_, buf, sizeof buf, MSG_DONTWAIT);
      if (n > 0) {
        received_.append(buf, static_cast<size_t>(n));
        continue;
      }
      if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) eof_ = true;
      return;
    }
  }
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  bool open() const { return fd_ >= 0; }
  bool gone() const { return gone_; }
  const std::string& received() const { return received_; }

 private:
  int fd_;
  bool gone_ = false;
  bool eof_ = false;
  std::string received_;
};

// Nothing to do right now: no callback due and no descriptor ready (libuv's epoll is
// level-triggered, so polling its descriptor consumes nothing).
bool loopQuiet(uv_loop_t* loop) {
  // A watcher started in this iteration (a connect, a read start) reaches epoll only at the next
  // poll, so until then epoll cannot report it ready: the queue must be empty (libuv's unix loop
  // keeps it as a circular list, empty when it points at itself).
  if (loop->watcher_queue[0] != static_cast<void*>(&loop->watcher_queue)) return false;
  if (uv_backend_timeout(loop) == 0) return false;
  struct pollfd p {};
  p.fd = uv_backend_fd(loop);
  p.events = POLLIN;
  // A request still active with nothing ready: work in libuv's thread pool (the shards' collation
  // read through libpq from the fake shard, which this loop serves) that wakes the loop when it
  // ends. Not quiet: wait a little for it, then run the loop again.
  const bool in_flight = loop->active_reqs.count != 0;
  return ::poll(&p, 1, in_flight ? 1 : 0) == 0 && !in_flight;
}

// Runs the loop until it is quiet (loopback delivery is immediate, so one client round trip
// through shardgate and the fake shard completes within one settle).
void settle(uv_loop_t* loop, Client& client) {
  for (int i = 0; i < 100000; ++i) {
    int alive = uv_run(loop, UV_RUN_NOWAIT);
    client.drain();
    if (alive == 0 || loopQuiet(loop)) return;
  }
}

// Runs the loop until shardgate has no handle left. False if it stays alive but idle: nothing
// here waits on a timer (the worker's sweep timer is never started), so an alive loop with
// nothing to do for this long will wait forever.
bool runUntilClosed(uv_loop_t* loop, Client& client) {
  constexpr auto kStuckAfter = std::chrono::milliseconds(25);
  auto quiet_since = std::chrono::steady_clock::time_point::max();
  for (;;) {
    int alive = uv_run(loop, UV_RUN_NOWAIT);
    client.drain();
    if (alive == 0) return true;
    if (!loopQuiet(loop)) {
      quiet_since = std::chrono::steady_clock::time_point::max();
      continue;
    }
    auto now = std::chrono::steady_clock::now();
    if (quiet_since == std::chrono::steady_clock::time_point::max()) quiet_since = now;
    if (now - quiet_since > kStuckAfter) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

// shardgate's handles still open on the loop (the fake shard's are not shardgate's business).
std::vector<uv_handle_t*> openHandles(uv_loop_t* loop, const FakeShard& shard) {
  struct Walk {
    const FakeShard* shard;
    std::vector<uv_handle_t*> handles;
  } walk{&shard, {}};
  uv_walk(
      loop,
      [](uv_handle_t* handle, void* arg) {
        auto* w = static_cast<Walk*>(arg);
        if (!uv_is_closing(handle) && !w->shard->owns(handle)) w->handles.push_back(handle);
      },
      &walk);
  return walk.handles;
}

// Names what keeps the loop alive, e.g. "server connection in state internal".
std::string describeOpenHandles(const std::vector<uv_handle_t*>& handles) {
  std::string out;
  for (uv_handle_t* handle : handles) {
    if (!out.empty()) out += ", ";
    if (handle->type != UV_TCP) {
      out += std::string(uv_handle_type_name(handle->type)) + " handle";
      continue;
    }
    // Every TCP handle shardgate opens here belongs to a TcpConnection (the worker never
    // listens in the harness).
    auto* connection = static_cast<TcpConnection*>(handle->data);
    if (auto* server = dynamic_cast<backends::ServerConnection*>(connection)) {
      out += std::string("server connection in state ") + backends::toString(server->state());
    } else if (auto* session = dynamic_cast<proxy::ClientSession*>(connection)) {
      out += "client session in state " + std::to_string(static_cast<int>(session->state()));
    } else {
      out += "tcp connection that is neither session nor server connection (a cancel request)";
    }
  }
  return out;
}

void feed(uv_loop_t* loop, Client& client, std::string_view chunk) {
  int stalls = 0;
  while (!chunk.empty() && !client.gone()) {
    size_t n = client.write(chunk);
    chunk.remove_prefix(n);
    if (n == 0) {
      // The socket is full: the session stopped reading (it is waiting for its server).
      if (client.gone() || ++stalls > 3) break;
    }
    settle(loop, client);
  }
  settle(loop, client);
}

uint32_t load32(const char* p) {
  return (static_cast<uint32_t>(static_cast<uint8_t>(p[0])) << 24) |
         (static_cast<uint32_t>(static_cast<uint8_t>(p[1])) << 16) |
         (static_cast<uint32_t>(static_cast<uint8_t>(p[2])) << 8) |
         static_cast<uint32_t>(static_cast<uint8_t>(p[3]));
}

// How many SSLRequest/GSSENCRequest packets open the client's stream: each gets one 'N'.
size_t leadingEncryptionRequests(std::string_view stream) {
  size_t count = 0;
  while (stream.size() >= 8 && load32(stream.data()) == 8) {
    auto code = static_cast<int32_t>(load32(stream.data() + 4));
    if (code != wire::kSslRequestCode && code != wire::kGssEncRequestCode) break;
    ++count;
    stream.remove_prefix(8);
  }
  return count;
}

std::string severityOf(std::string_view error_payload) {
  size_t pos = 0;
  while (pos < error_payload.size() && error_payload[pos] != '\0') {
    char field = error_payload[pos++];
    size_t nul = error_payload.find('\0', pos);
    if (nul == std::string_view::npos) return {};
    if (field == 'V' || field == 'S') return std::string(error_payload.substr(pos, nul - pos));
    pos = nul + 1;
  }
  return {};
}

// Own framing, independent of the codec under test.
}  // namespace

void checkSessionOutput(std::string_view out, size_t encryption_requests, const Reporter& report) {
  size_t pos = 0;
  // A session that closes at once (a CancelRequest pipelined behind the request, which a client
  // must not do) may drop its pending 'N's; one that goes on must have sent them all.
  while (pos < encryption_requests && pos < out.size() && out[pos] == 'N') ++pos;
  if (pos < encryption_requests && pos < out.size()) {
    report("output: expected 'N' for encryption request " + std::to_string(pos) + ", got " +
           hex(out.substr(pos, 8)));
    return;
  }
  bool fatal_seen = false;
  while (pos < out.size()) {
    std::string_view rest = out.substr(pos);
    if (rest.size() < 5) {
      report("output: ends with a partial message " + hex(rest));
      return;
    }
    const char type = rest[0];
    uint32_t length = load32(rest.data() + 1);
    if (length < 4 || length > (1u << 30)) {
      report("output: message with length " + std::to_string(length) + " at byte " +
             std::to_string(pos));
      return;
    }
    if (rest.size() < size_t{1} + length) {
      report("output: ends inside a message of type '" + std::string(1, type) + "'");
      return;
    }
    if (!wire::isBackendMessageType(type)) {
      report("output: not a backend message type: 0x" + hex(rest.substr(0, 1)) + " at byte " +
             std::to_string(pos));
      return;
    }
    if (fatal_seen && type != wire::be::kErrorResponse) {
      report("output: message type '" + std::string(1, type) + "' after a FATAL error");
      return;
    }
    if (type == wire::be::kErrorResponse && severityOf(rest.substr(5, length - 4)) == "FATAL") {
      fatal_seen = true;
    }
    pos += size_t{1} + length;
  }
}

namespace {

// A client socket with a fresh session on the other end; closed (open() false) if that failed.
std::unique_ptr<Client> connectClient(proxy::Worker& worker, const Reporter& report) {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    report("harness: socketpair failed");
    return std::make_unique<Client>(-1);
  }
  auto client = std::make_unique<Client>(fds[1]);
  // The session deletes itself once closed, like one the worker accepted.
  auto* session = new proxy::ClientSession(worker, worker.nextSessionId(), backends::monotonicMs());
  if (uv_tcp_open(session->handle(), fds[0]) != 0) {
    ::close(fds[0]);
    report("harness: uv_tcp_open failed");
    session->close();
    client->close();
  } else if (!environment().proxy->tryAddClient()) {
    report("harness: client count did not go back to 0 after an earlier run");
    session->close();
    client->close();
  } else {
    session->start();
  }
  return client;
}

// The type bytes of the whole messages in `out`.
std::string messageTypes(std::string_view out) {
  std::string types;
  while (out.size() >= 5) {
    size_t size = size_t{1} + load32(out.data() + 1);
    if (size < 5 || size > out.size()) break;
    types += out[0];
    out.remove_prefix(size);
  }
  return types;
}

// The text of the first ErrorResponse in `out` (its 'M' field), for reports; empty if none.
std::string firstErrorMessage(std::string_view out) {
  while (out.size() >= 5) {
    size_t size = size_t{1} + load32(out.data() + 1);
    if (size < 5 || size > out.size()) break;
    if (out[0] == wire::be::kErrorResponse) {
      auto error = wire::ErrorResponse::decode(out.substr(5, size - 5));
      return error.ok() ? std::string(error->field('C')) + " " + std::string(error->field('M'))
                        : std::string("(undecodable ErrorResponse)");
    }
    out.remove_prefix(size);
  }
  return {};
}

struct SessionSetup {
  unsigned char flags = 0;
};

SessionResult runSessionChunks(const SessionSetup& setup,
                               const std::vector<std::string_view>& chunks,
                               const Reporter& report) {
  Environment& env = environment();
  const bool transaction = setup.flags & kSessionTransactionPooling;
  FakeShardOptions shard_options;
  shard_options.ask_password = setup.flags & kSessionShardAsksPassword;
  shard_options.refuse_login = setup.flags & kSessionShardRefusesLogin;

  auto worker = std::make_unique<proxy::Worker>(
      *env.proxy, 0, transaction ? env.transaction_config : env.session_config);
  uv_loop_t* loop = worker->context().loop();
  auto shard = std::make_unique<FakeShard>(loop, FakeShardListener::instance().fd(), shard_options);
  if (!shard->listening()) report("harness: the fake shard cannot listen");

  std::unique_ptr<Client> client = connectClient(*worker, report);
  if (client->open()) {
    for (std::string_view chunk : chunks) feed(loop, *client, chunk);
    if (setup.flags & kSessionShutdownFirst) {
      worker->postShutdown(0);
      settle(loop, *client);
    }
  }
  client->close();
  settle(loop, *client);
  if ((setup.flags & kSessionSecondClient) && !(setup.flags & kSessionShutdownFirst) &&
      !shard_options.refuse_login) {
    // Whatever the first client left behind in the pool must not hurt the next one.
    std::unique_ptr<Client> second = connectClient(*worker, report);
    if (second->open()) {
      const bool pipelined = setup.flags & kSessionSecondClientPipelines;
      std::string startup, query;
      wire::StartupMessage{wire::kProtocolVersion30, {{"user", "trusty"}, {"database", "app"}}}
          .encode(startup);
      wire::Query{"SELECT 1"}.encode(query);
      if (pipelined) {
        feed(loop, *second, startup + query);
      } else {
        feed(loop, *second, startup);
        feed(loop, *second, query);
      }
      std::string types = messageTypes(second->received());
      if (std::count(types.begin(), types.end(), wire::be::kReadyForQuery) != 2) {
        size_t skipping = shard->connectionsSkippingUntilSync();
        report(std::string("second client: no answer to its SELECT ") +
               (pipelined ? "(sent with its startup packet, to a warm pool)"
                          : "(sent after its login)") +
               ", got only '" + types + "'" +
               (skipping ? "; a shard connection is skipping until Sync" : "") +
               (types.find(wire::be::kErrorResponse) != std::string::npos
                    ? "; error: " + firstErrorMessage(second->received()) +
                          "; the shard's last statement: " +
                          (shard->statementsRun().empty() ? std::string("none")
                                                          : shard->statementsRun().back())
                    : std::string()));
      }
    }
    second->close();
    settle(loop, *second);
  }
  worker->postShutdown(0);
  bool ended = runUntilClosed(loop, *client);
  std::vector<uv_handle_t*> stuck = openHandles(loop, *shard);
  if (!ended || !stuck.empty()) {
    // An open handle that is not active (no read, write or connect pending) does not keep the
    // loop running, but it is never closed either: the worker's uv_loop_close() fails and the
    // object behind it leaks.
    report(std::string(ended ? "shutdown: the worker's loop ended with handles still open: "
                             : "shutdown: the worker cannot finish, its loop waits forever on: ") +
           describeOpenHandles(stuck));
    // Go on (when the reporter lets us) with a clean slate: close what is stuck.
    for (uv_handle_t* handle : stuck) {
      if (handle->type == UV_TCP) {
        static_cast<TcpConnection*>(handle->data)->close();
      } else {
        uv_close(handle, nullptr);
      }
    }
    if (!runUntilClosed(loop, *client)) {
      report("harness: shardgate's handles do not close even when closed by force");
      (void)shard.release();  // freeing what libuv still references would only add noise
      (void)worker.release();
      return SessionResult{client->received(), {}};
    }
  }
  shard->close();
  if (!runUntilClosed(loop, *client) || !shard->closed()) {
    report("harness: the fake shard did not close");
    (void)shard.release();
    (void)worker.release();
    return SessionResult{client->received(), {}};
  }
  FakeShardListener::instance().drainBacklog();
  SessionResult result{client->received(), shard->statementsRun()};
  shard.reset();
  worker.reset();

  std::string stream;
  for (std::string_view chunk : chunks) stream.append(chunk);
  checkSessionOutput(client->received(), leadingEncryptionRequests(stream), report);
  if (env.proxy->clientCount() != 0) {
    report("accounting: " + std::to_string(env.proxy->clientCount()) +
           " client(s) still counted after the session closed");
  }
  if (env.proxy->cancelRegistry().size() != 0) {
    report("accounting: cancel key left registered after the session closed");
  }
  return result;
}

}  // namespace

const Reporter& abortingReporter() {
  static const Reporter reporter = [](std::string_view what) {
    // SHARDGATE_FUZZ_IGNORE="text|other text": reports containing one of these are known bugs
    // already handed over; fuzzing goes on past them (each is printed once).
    static std::vector<std::string> ignored = [] {
      std::vector<std::string> list;
      const char* env = std::getenv("SHARDGATE_FUZZ_IGNORE");
      std::string_view rest = env ? env : "";
      while (!rest.empty()) {
        size_t bar = rest.find('|');
        if (bar != 0) list.emplace_back(rest.substr(0, bar));
        rest = bar == std::string_view::npos ? std::string_view() : rest.substr(bar + 1);
      }
      return list;
    }();
    static std::vector<std::string> seen;
    for (const std::string& known : ignored) {
      if (what.find(known) == std::string_view::npos) continue;
      if (std::find(seen.begin(), seen.end(), what) == seen.end()) {
        seen.emplace_back(what);
        std::fprintf(stderr, "==shardgate-fuzz== ignored (SHARDGATE_FUZZ_IGNORE): %.*s\n",
                     static_cast<int>(what.size()), what.data());
      }
      return;
    }
    std::fprintf(stderr, "==shardgate-fuzz== property violated: %.*s\n",
                 static_cast<int>(what.size()), what.data());
    std::abort();
  };
  return reporter;
}

void runStartupPacket(std::string_view input, const Reporter& report) {
  std::string_view rest = input;
  for (int packets = 0; packets < 64 && !rest.empty(); ++packets) {
    wire::FrameResult framed = wire::frameUntyped(rest, kMaxMessageSize);
    checkFrame(framed, rest, 4, report);
    if (framed.status != wire::FrameStatus::kComplete) break;
    std::string_view payload = framed.frame.payload;
    auto packet = wire::decodeStartupPacket(payload);
    if (packet.ok()) {
      std::string encoded;
      std::visit([&](const auto& message) { message.encode(encoded); }, *packet);
      if (encoded != rest.substr(0, framed.frame.size)) {
        report("decodeStartupPacket: decode+encode does not give back the packet: in " +
               hex(rest.substr(0, framed.frame.size)) + " out " + hex(encoded));
      }
    } else if (packet.error().severity != "FATAL" || packet.error().message.empty()) {
      report("decodeStartupPacket: error is not FATAL or has no message");
    }
    roundTripUntyped<wire::StartupMessage, wire::SslRequest, wire::GssEncRequest,
                     wire::CancelRequest>(payload, report);
    rest.remove_prefix(framed.frame.size);
  }
  (void)runSessionChunks(SessionSetup{}, {input}, report);
}

void runFrontendMessages(std::string_view input, const Reporter& report) {
  std::string_view rest = input;
  for (int messages = 0; messages < 256 && !rest.empty(); ++messages) {
    wire::FrameResult framed = wire::frameTyped(rest, kMaxMessageSize);
    checkFrame(framed, rest, 5, report);
    if (framed.status != wire::FrameStatus::kComplete) break;
    std::string_view payload = framed.frame.payload;
    (void)wire::isFrontendMessageType(framed.frame.type);
    roundTripTyped<wire::Query, wire::Parse, wire::Bind, wire::Describe, wire::Execute, wire::Close,
                   wire::Sync, wire::Flush, wire::Terminate, wire::CopyData, wire::CopyDone,
                   wire::CopyFail, wire::PasswordMessage, wire::SaslInitialResponse,
                   wire::SaslResponse, wire::FunctionCall>(payload, report);
    // The backend decoders parse what shards send; the same bytes exercise them for free.
    roundTripTyped<wire::AuthenticationOk, wire::AuthenticationCleartextPassword,
                   wire::AuthenticationMd5Password, wire::AuthenticationSasl,
                   wire::AuthenticationSaslContinue, wire::AuthenticationSaslFinal,
                   wire::BackendKeyData, wire::ParameterStatus, wire::ReadyForQuery,
                   wire::NegotiateProtocolVersion, wire::RowDescription, wire::DataRow,
                   wire::CommandComplete, wire::EmptyQueryResponse, wire::ErrorResponse,
                   wire::NoticeResponse, wire::ParseComplete, wire::BindComplete,
                   wire::CloseComplete, wire::NoData, wire::PortalSuspended,
                   wire::ParameterDescription, wire::CopyInResponse, wire::CopyOutResponse,
                   wire::CopyBothResponse, wire::NotificationResponse, wire::FunctionCallResponse>(
        payload, report);
    (void)wire::decodeAuthentication(payload);
    if (auto bind = wire::Bind::decode(payload); bind.ok()) {
      for (size_t i = 0; i <= bind->params.size(); ++i) (void)bind->paramFormat(i);
    }
    rest.remove_prefix(framed.frame.size);
  }
}

SessionResult runSession(std::string_view input, const Reporter& report) {
  unsigned char header[kSessionHeaderSize] = {};
  for (size_t i = 0; i < kSessionHeaderSize && i < input.size(); ++i) {
    header[i] = static_cast<unsigned char>(input[i]);
  }
  std::string_view body = input.substr(std::min(input.size(), kSessionHeaderSize));
  std::vector<size_t> cuts;
  for (size_t i = 1; i < kSessionHeaderSize; ++i) {
    size_t cut = header[i] * body.size() / 256;
    if (cut > 0 && cut < body.size()) cuts.push_back(cut);
  }
  std::sort(cuts.begin(), cuts.end());
  cuts.erase(std::unique(cuts.begin(), cuts.end()), cuts.end());
  std::vector<std::string_view> chunks;
  size_t from = 0;
  for (size_t cut : cuts) {
    chunks.push_back(body.substr(from, cut - from));
    from = cut;
  }
  chunks.push_back(body.substr(from));
  return runSessionChunks(SessionSetup{header[0]}, chunks, report);
}

}  // namespace shardgate::fuzz
