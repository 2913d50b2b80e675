// ClientSession's side of operations: the admin console hand-over, config reload between
// transactions, PAUSE, and what SHOW CLIENTS / SHOW SERVERS see of a session.
#include "common/log.h"
#include "common/socket_address.h"
#include "proxy/admin_console.h"
#include "proxy/admin_snapshot.h"
#include "proxy/client_session.h"
#include "proxy/wire/backend_messages.h"
#include "proxy/wire/protocol.h"
#include "proxy/worker.h"

namespace shardgate::proxy {

namespace {

void socketAddress(TcpConnection& connection, bool peer, std::string& addr, int& port) {
  if (connection.transport() == TcpConnection::Transport::kUnix) {
    addr = "unix";  // as PgBouncer shows Unix-socket peers; there is no port
    return;
  }
  uv_tcp_t* handle = connection.handle();
  struct sockaddr_storage storage {};
  int len = sizeof(storage);
  auto* sa = reinterpret_cast<struct sockaddr*>(&storage);
  int rc = peer ? uv_tcp_getpeername(handle, sa, &len) : uv_tcp_getsockname(handle, sa, &len);
  if (rc != 0) return;
  socketAddressParts(storage, addr, port);
}

const char* serverStateName(backends::ServerConnection::State state, bool idle) {
  using State = backends::ServerConnection::State;
  switch (state) {
    case State::kConnecting:
    case State::kLoggingIn:
      return "login";
    case State::kClosed:
      return "closed";
    default:
      return idle ? "idle" : "active";
  }
}

}  // namespace

void ClientSession::startAdminConsole() {
  if (!user_->admin) {
    spdlog::info("event=auth_failed session={} user={} database={} reason=not_admin", id_,
                 user_name_, database_name_);
    fatal(Error::fatal(sqlstate::kInvalidAuthorization,
                       "user \"" + user_name_ + "\" is not an admin user",
                       "only users with admin = true in the configuration may use the \"" +
                           std::string(kAdminDatabaseName) + "\" admin console"));
    return;
  }
  state_ = State::kReady;
  admin_ = std::make_unique<AdminConsole>(worker_, *this, id_, user_name_);
  admin_->start();
  spdlog::info("event=admin_login session={} user={}", id_, user_name_);
}

bool ClientSession::readyForNextTransaction(std::string_view data) {
  if (waiting_for_server_ || syncing_server_ || outstanding_ != 0 || transaction_status_ != 'I' ||
      batch_open_ || failing_ || multi_run_ || state_ != State::kReady) {
    return true;
  }
  if (server_ != nullptr && transactionPooling()) return true;  // pipelined: same transaction turn
  if (!data.empty() && data[0] == wire::fe::kTerminate) return true;
  if (worker_.databasePaused(database_name_)) {
    if (!held_by_pause_) {
      held_by_pause_ = true;
      held_since_ms_ = backends::monotonicMs();
      worker_.holdUntilResume(id_);
      spdlog::debug("event=client_paused session={} database={}", id_, database_name_);
    }
    return false;
  }
  if (server_ != nullptr || config_ == worker_.configPtr()) return true;
  // A reload happened: the next transaction uses the new config.
  conf::ConfigPtr next = worker_.configPtr();
  const conf::User* user = next->findUser(user_name_);
  const conf::Database* database = next->findDatabase(database_name_);
  if (user == nullptr || database == nullptr) {
    fatal(user == nullptr
              ? Error::fatal(sqlstate::kInvalidAuthorization,
                             "user \"" + user_name_ + "\" was removed from the configuration")
              : Error::fatal(
                    sqlstate::kInvalidCatalogName,
                    "database \"" + database_name_ + "\" was removed from the configuration"));
    return false;
  }
  config_ = std::move(next);
  useDatabase(user, database);
  return true;
}

void ClientSession::resumeAfterPause() {
  if (!held_by_pause_) return;
  held_by_pause_ = false;
  processPending();
}

ClientSnapshot ClientSession::adminSnapshot() const {
  ClientSnapshot c;
  c.id = id_;
  c.ptr = this;
  c.user = user_name_;
  c.database = database_name_;
  c.link = server_;
  c.pool = (server_ != nullptr || waiting_for_server_) ? pool_ : nullptr;
  c.in_transaction = transaction_status_ != 'I';
  if (admin_) {
    c.state = "admin";
  } else if (state_ == State::kStartup || state_ == State::kAuthenticating ||
             state_ == State::kLoggingIn) {
    c.state = "login";
  } else if (held_by_pause_) {
    c.state = "paused";
  } else if (waiting_for_server_) {
    c.state = "waiting";
  } else if (server_ != nullptr) {
    c.state = "active";
  } else {
    c.state = "idle";
  }
  auto* self = const_cast<ClientSession*>(this);
  socketAddress(*self, /*peer=*/true, c.addr, c.port);
  socketAddress(*self, /*peer=*/false, c.local_addr, c.local_port);
  c.connected_at_ms = connected_at_ms_;
  if (waiting_for_server_) {
    c.waiting_since_ms = waitStartedMs();
  } else if (held_by_pause_) {
    c.waiting_since_ms = held_since_ms_;
  }
  if (auto app = settings_.reported("application_name")) c.application_name = *app;
  c.prepared_statements = statements_.size();
  if (tls() != nullptr) c.tls = tls()->describe();
  if (current_target_ && database_ != nullptr &&
      current_target_->shard < database_->shards.size()) {
    c.shard = database_->shards[current_target_->shard].name;
    if (current_target_->replica >= 0)
      c.shard += "/replica" + std::to_string(current_target_->replica);
  }
  return c;
}

WorkerSnapshot takeSnapshot(Worker& worker) {
  WorkerSnapshot snapshot;
  snapshot.worker = worker.index();
  snapshot.now_ms = backends::monotonicMs();
  std::unordered_map<const void*, const void*> holder;  // server -> the session holding it
  for (const auto& [id, session] : worker.sessions()) {
    if (session->closing()) continue;
    snapshot.clients.push_back(session->adminSnapshot());
    const ClientSnapshot& c = snapshot.clients.back();
    if (c.link != nullptr) holder[c.link] = c.ptr;
  }
  auto server_snapshot = [&](backends::ServerConnection* server, bool idle, bool draining) {
    ServerSnapshot s;
    s.ptr = server;
    auto it = holder.find(server);
    s.link = it == holder.end() ? nullptr : it->second;
    s.id = server->id();
    s.pool_label = server->endpoint().label;
    s.state = serverStateName(server->state(), idle);
    s.addr = server->endpoint().host;
    s.port = server->endpoint().port;
    socketAddress(*server, /*peer=*/false, s.local_addr, s.local_port);
    s.created_at_ms = server->createdAtMs();
    s.last_used_at_ms = server->lastUsedAtMs();
    s.backend_pid = server->backendPid();
    s.prepared_statements = server->statements().size();
    if (server->tls() != nullptr) s.tls = server->tls()->describe();
    s.draining = draining;
    return s;
  };
  for (const auto& [key, pool] : worker.pools()) {
    PoolSnapshot p;
    // key: database \x1f user \x1f shard index \x1f role (Worker::poolSpec)
    std::vector<std::string> parts;
    size_t start = 0;
    for (;;) {
      size_t end = key.find('\x1f', start);
      parts.push_back(key.substr(start, end == std::string::npos ? end : end - start));
      if (end == std::string::npos) break;
      start = end + 1;
    }
    if (parts.size() != 4) continue;
    p.database = parts[0];
    p.user = parts[1];
    p.shard_index = static_cast<uint32_t>(std::strtoul(parts[2].c_str(), nullptr, 10));
    p.role = parts[3];
    const std::string& label = pool->endpoint().label;  // database/shard/role
    size_t first = label.find('/');
    size_t last = label.rfind('/');
    p.shard = first != std::string::npos && last > first ? label.substr(first + 1, last - first - 1)
                                                         : parts[2];
    p.host = pool->endpoint().host;
    p.port = pool->endpoint().port;
    p.stats = pool->stats();
    p.oldest_wait_started_ms = pool->oldestWaitStartMs();
    p.max_size = pool->settings().max_size;
    p.last_login_failed = pool->lastLoginFailed();
    for (const ClientSnapshot& c : snapshot.clients) {
      if (c.pool == pool.get() && c.link != nullptr) ++p.clients_active;
    }
    for (backends::ServerConnection* server : pool->connections()) {
      p.servers.push_back(server_snapshot(server, holder.count(server) == 0, false));
    }
    snapshot.pools.push_back(std::move(p));
  }
  for (const auto& pool : worker.drainingPools()) {
    for (backends::ServerConnection* server : pool->connections()) {
      snapshot.draining.push_back(server_snapshot(server, holder.count(server) == 0, true));
    }
  }
  WorkerMetrics::Totals totals;
  worker.metricsHandle()->addTo(totals);
  for (const auto& [labels, count] : totals.transactions) snapshot.transactions[labels[0]] += count;
  for (const auto& [labels, count] : totals.queries) snapshot.queries[labels[0]] += count;
  if (worker.pausedAll()) snapshot.paused_databases.push_back("*");
  for (const std::string& db : worker.pausedDatabases()) snapshot.paused_databases.push_back(db);
  return snapshot;
}

}  // namespace shardgate::proxy
