// Worker: accepts clients on its own SO_REUSEPORT socket and serves them on its own loop.
#include "proxy/worker.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstring>

#include "backends/cancel_request.h"
#include "common/log.h"
#include "proxy/client_auth.h"
#include "proxy/client_session.h"
#include "proxy/lock_deadlock_watch.h"
#include "proxy/proxy_server.h"
#include "proxy/session_features.h"
#include "proxy/session_metrics.h"

namespace shardgate::proxy {

namespace {
constexpr uint64_t kSweepIntervalMs = 100;
}

Worker::Worker(ProxyServer& server, uint32_t index, conf::ConfigPtr config)
    : server_(server), index_(index), config_(std::move(config)) {
  uv_loop_init(&loop_);
  context_ = std::make_unique<LoopContext>(&loop_);
  uv_async_init(&loop_, &wakeup_,
                [](uv_async_t* handle) { static_cast<Worker*>(handle->data)->drainTasks(); });
  wakeup_.data = this;
  uv_timer_init(&loop_, &sweep_timer_);
  sweep_timer_.data = this;
  // Directory moves (shardgate.move_key) drop the key from every worker's cache.
  lookups_ = std::make_unique<RoutingLookups>(
      &loop_, [&server](std::function<void(RoutingLookups&)> task) {
        for (size_t i = 0; i < server.workerCount(); ++i) {
          Worker& w = server.worker(static_cast<uint32_t>(i));
          w.post([&w, task] { task(w.lookups()); });
        }
      });
  router_.setDirectoryLookup(lookups_.get());
  router_.setColumnOrderProvider(lookups_.get());
  router_.setDescribeDecisions(false);  // clients see reasons only through EXPLAIN (ROUTE)
}

Worker::~Worker() {
  join();
  draining_pools_.clear();
  pools_.clear();
  uv_loop_close(&loop_);
}

Status Worker::listen(const std::string& address, uint16_t port) {
  struct sockaddr_storage addr {};
  int family = AF_INET;
  if (uv_ip4_addr(address.c_str(), port, reinterpret_cast<struct sockaddr_in*>(&addr)) != 0) {
    if (uv_ip6_addr(address.c_str(), port, reinterpret_cast<struct sockaddr_in6*>(&addr)) != 0) {
      return Error::fatal(sqlstate::kConfigFileError,
                          "listen_addr \"" + address + "\" is not an IPv4 or IPv6 address");
    }
    family = AF_INET6;
  }
  int fd = ::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return Error::fatal(sqlstate::kInternalError, "socket(): " + std::string(strerror(errno)));
  int one = 1;
  // Every worker binds the same port; the kernel spreads new connections across them.
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
  socklen_t len = family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
  if (::bind(fd, reinterpret_cast<struct sockaddr*>(&addr), len) != 0 || ::listen(fd, 4096) != 0) {
    std::string why = strerror(errno);
    ::close(fd);
    return Error::fatal(sqlstate::kInternalError,
                        "cannot listen on " + address + ":" + std::to_string(port) + ": " + why);
  }
  uv_tcp_init(&loop_, &listener_);
  listener_.data = this;
  uv_tcp_open(&listener_, fd);
  int rc = uv_listen(reinterpret_cast<uv_stream_t*>(&listener_), 4096, &Worker::onConnection);
  if (rc < 0) {
    return Error::fatal(sqlstate::kInternalError, std::string("uv_listen: ") + uv_strerror(rc));
  }
  listening_ = true;
  return {};
}

Status Worker::listenUnix(int listening_fd) {
  int fd = ::fcntl(listening_fd, F_DUPFD_CLOEXEC, 0);
  if (fd < 0) {
    return Error::fatal(sqlstate::kInternalError, "dup(): " + std::string(strerror(errno)));
  }
  uv_pipe_init(&loop_, &unix_listener_, /*ipc=*/0);
  unix_listener_.data = this;
  unix_listening_ = true;  // from here on the handle must be closed, even if the rest fails
  int rc = uv_pipe_open(&unix_listener_, fd);
  if (rc == 0) {
    rc =
        uv_listen(reinterpret_cast<uv_stream_t*>(&unix_listener_), 4096, &Worker::onUnixConnection);
  }
  if (rc < 0) {
    return Error::fatal(sqlstate::kInternalError,
                        std::string("listening on the Unix socket: ") + uv_strerror(rc));
  }
  return {};
}

uint16_t Worker::listeningPort() {
  struct sockaddr_storage addr {};
  int len = sizeof(addr);
  if (!listening_ ||
      uv_tcp_getsockname(&listener_, reinterpret_cast<struct sockaddr*>(&addr), &len) != 0) {
    return 0;
  }
  if (addr.ss_family == AF_INET6) {
    return ntohs(reinterpret_cast<struct sockaddr_in6*>(&addr)->sin6_port);
  }
  return ntohs(reinterpret_cast<struct sockaddr_in*>(&addr)->sin_port);
}

void Worker::start() {
  uv_timer_start(
      &sweep_timer_, [](uv_timer_t* t) { static_cast<Worker*>(t->data)->sweep(); },
      kSweepIntervalMs, kSweepIntervalMs);
  thread_ = std::thread([this] { run(); });
}

void Worker::join() {
  if (thread_.joinable()) thread_.join();
}

void Worker::run() {
  uv_run(&loop_, UV_RUN_DEFAULT);
  // Let every close callback run.
  while (uv_run(&loop_, UV_RUN_NOWAIT) != 0) {
  }
}

void Worker::post(std::function<void()> task) {
  std::lock_guard lock(tasks_mutex_);
  if (wakeup_closed_) return;  // the worker has stopped; nothing left to act on
  tasks_.push_back(std::move(task));
  uv_async_send(&wakeup_);
}

void Worker::drainTasks() {
  std::vector<std::function<void()>> tasks;
  {
    std::lock_guard lock(tasks_mutex_);
    tasks.swap(tasks_);
  }
  for (auto& task : tasks) task();
}

void Worker::postCancel(uint64_t session_id) {
  post([this, session_id] {
    auto it = sessions_.find(session_id);
    if (it != sessions_.end()) it->second->cancelRunningQuery();
  });
}

void Worker::postLockDeadlock(backends::LockDeadlock deadlock) {
  post([this, deadlock = std::move(deadlock)] { breakLockDeadlock(deadlock); });
}

void Worker::postShutdown(uint32_t timeout_ms) {
  post([this, timeout_ms] { beginShutdown(timeout_ms); });
}

void Worker::onConnection(uv_stream_t* listener, int status) {
  auto* self = static_cast<Worker*>(listener->data);
  if (status < 0) {
    spdlog::warn("event=accept_failed worker={} error=\"{}\"", self->index_, uv_strerror(status));
    return;
  }
  self->accept(listener, TcpConnection::Transport::kTcp);
}

void Worker::onUnixConnection(uv_stream_t* listener, int status) {
  auto* self = static_cast<Worker*>(listener->data);
  if (status < 0) {
    spdlog::warn("event=accept_failed worker={} socket=unix error=\"{}\"", self->index_,
                 uv_strerror(status));
    return;
  }
  self->accept(listener, TcpConnection::Transport::kUnix);
}

void Worker::accept(uv_stream_t* listener, TcpConnection::Transport transport) {
  uint64_t now = backends::monotonicMs();
  auto* session = new ClientSession(*this, nextSessionId(), now, transport);
  if (uv_accept(listener, session->stream()) != 0) {
    session->close();
    return;
  }
  if (shutting_down_) {
    session->refuse(Error::fatal(sqlstate::kAdminShutdown, "shardgate is shutting down"));
    return;
  }
  if (!server_.tryAddClient()) {
    session->refuseAfterStartup(
        Error::fatal(sqlstate::kTooManyConnections, "sorry, too many clients already",
                     "max_client_conn is " + std::to_string(config_->general.max_client_conn)));
    return;
  }
  session->start();
}

uint64_t Worker::nextSessionId() {
  static std::atomic<uint64_t> next{1};
  return next.fetch_add(1, std::memory_order_relaxed);
}

Worker::PoolSpec Worker::poolSpec(const conf::Config& config, const conf::Database& database,
                                  const conf::User& user, uint32_t shard, int replica) const {
  PoolSpec spec;
  std::string role = replica < 0 ? "primary" : "replica" + std::to_string(replica);
  spec.key = database.name + '\x1f' + user.name + '\x1f' + std::to_string(shard) + '\x1f' + role;
  const conf::Shard& s = database.shards.at(shard);
  const conf::ServerAddress& address = replica < 0 ? s.primary : s.replicas.at(replica);
  backends::ServerEndpoint& endpoint = spec.endpoint;
  endpoint.host = address.host;
  endpoint.port = address.port;
  endpoint.database = address.database;
  endpoint.user = address.user;
  endpoint.password = address.password;
  endpoint.label = database.name + "/" + s.name + "/" + role;
  endpoint.tls_mode = address.tls_mode;
  endpoint.tls = server_.tls().servers;
  const conf::General& g = config.general;
  backends::PoolSettings& settings = spec.settings;
  // pool_size counts connections across all workers; each worker gets its share (at least one).
  uint32_t total = config.poolSize(database, user);
  uint32_t workers = std::max<uint32_t>(1, g.workers);
  settings.max_size = std::max<uint32_t>(1, (total + workers - 1) / workers);
  settings.min_idle = (g.min_pool_size + workers - 1) / workers;
  settings.connect_timeout_ms = g.connect_timeout_ms;
  settings.query_wait_timeout_ms = g.query_wait_timeout_ms;
  settings.idle_timeout_ms = g.idle_server_timeout_ms;
  settings.lifetime_ms = g.server_lifetime_ms;
  return spec;
}

bool Worker::sessionEffectFree(std::string_view sql) {
  // Bounds: a few hundred texts of ordinary length (a driver's statement set), at most ~1 MiB.
  constexpr size_t kMaxTexts = 512;
  constexpr size_t kMaxTextBytes = 2048;
  if (effect_free_texts_.find(sql) != effect_free_texts_.end()) return true;
  if (!sessionEffectsOf(sql).empty()) return false;
  if (sql.size() <= kMaxTextBytes) {
    if (effect_free_texts_.size() >= kMaxTexts) effect_free_texts_.clear();
    effect_free_texts_.emplace(sql);
  }
  return true;
}

backends::Pool& Worker::pool(const conf::Database& database, const conf::User& user, uint32_t shard,
                             int replica) {
  // Every routed statement looks its pool up: most find it among the last few found.
  for (const RecentPool& recent : recent_pools_) {
    if (recent.database == &database && recent.user == &user && recent.shard == shard &&
        recent.replica == replica) {
      return *recent.pool;
    }
  }
  backends::Pool& found = findOrCreatePool(database, user, shard, replica);
  recent_pools_[next_recent_pool_++ % recent_pools_.size()] =
      RecentPool{&database, &user, shard, replica, &found};
  return found;
}

void Worker::forgetRecentPools() {
  recent_pools_.fill(RecentPool{});
}

backends::Pool& Worker::findOrCreatePool(const conf::Database& database, const conf::User& user,
                                         uint32_t shard, int replica) {
  // The key is built in a buffer that keeps its capacity, so a hit allocates nothing.
  char number[16];
  pool_key_.assign(database.name).push_back('\x1f');
  pool_key_.append(user.name).push_back('\x1f');
  pool_key_.append(number, std::to_chars(number, number + sizeof number, shard).ptr);
  pool_key_.push_back('\x1f');
  if (replica < 0) {
    pool_key_.append("primary");
  } else {
    pool_key_.append("replica");
    pool_key_.append(number, std::to_chars(number, number + sizeof number, replica).ptr);
  }
  auto it = pools_.find(pool_key_);
  if (it != pools_.end()) return *it->second;
  std::string key = pool_key_;
  std::string role = replica < 0 ? "primary" : "replica" + std::to_string(replica);
  // The pool serves every session from now on, so it is made from the current configuration:
  // a transaction begun before a RELOAD asks with its own (older) one, whose address for the
  // shard may have changed (a failover); a pool made from it would keep the old server for all.
  const conf::Database* current = config_->findDatabase(database.name);
  const conf::User* current_user = config_->findUser(user.name);
  const bool use_current =
      current != nullptr && current_user != nullptr && shard < current->shards.size() &&
      (replica < 0 || static_cast<size_t>(replica) < current->shards[shard].replicas.size());
  const conf::Database& made_from = use_current ? *current : database;
  PoolSpec spec = poolSpec(*config_, made_from, use_current ? *current_user : user, shard, replica);
  auto pool = std::make_unique<backends::Pool>(*context_, std::move(spec.endpoint), spec.settings);
  pool->setMetrics(
      &metrics_->pool(made_from.name, user.name, made_from.shards.at(shard).name, role));
  if (gateNeeded()) pool->setGate(&login_gate_);
  auto& ref = *pool;
  pools_.emplace(std::move(key), std::move(pool));
  return ref;
}

int Worker::chooseReplica(const conf::Database& database, const conf::User& user, uint32_t shard) {
  const auto& replicas = database.shards.at(shard).replicas;
  if (replicas.empty()) return -1;
  const int count = static_cast<int>(replicas.size());
  switch (database.replica_policy) {
    case conf::ReplicaPolicy::kRandom:
      return static_cast<int>(uv_hrtime() % static_cast<uint64_t>(count));
    case conf::ReplicaPolicy::kLeastConnections: {
      int best = 0;
      uint32_t best_active = UINT32_MAX;
      for (int i = 0; i < count; ++i) {
        auto stats = pool(database, user, shard, i).stats();
        uint32_t active = stats.active + stats.connecting + stats.waiting_clients;
        if (active < best_active) {
          best = i;
          best_active = active;
        }
      }
      return best;
    }
    case conf::ReplicaPolicy::kRoundRobin:
      break;
  }
  return static_cast<int>(replica_round_robin_++ % static_cast<uint64_t>(count));
}

std::shared_ptr<const wire::ScramSecret> Worker::scramSecret(const conf::User& user) {
  auto it = scram_secrets_.find(user.name);
  if (it != scram_secrets_.end()) return it->second;
  // PBKDF2 runs once per user and worker, not per login.
  auto secret = scramSecretFor(user);
  std::shared_ptr<const wire::ScramSecret> shared =
      secret ? std::make_shared<const wire::ScramSecret>(std::move(*secret)) : nullptr;
  scram_secrets_.emplace(user.name, shared);
  return shared;
}

void Worker::addSession(ClientSession* session) {
  sessions_.emplace(session->id(), session);
}

void Worker::removeSession(ClientSession* session) {
  sessions_.erase(session->id());
  if (shutting_down_) finishIfDrained();
}

void Worker::breakPoolDeadlocks(uint64_t now_ms) {
  const uint32_t timeout_ms = config_->general.deadlock_timeout_ms;
  if (timeout_ms == 0) return;
  auto waitedLong = [&](const backends::Pool& pool) {
    const uint64_t since = pool.oldestWaitStartMs();
    return since != 0 && now_ms - since >= timeout_ms;
  };
  // Every sweep asks only this of each pool, unless someone has waited deadlock_timeout.
  bool any = std::any_of(pools_.begin(), pools_.end(),
                         [&](const auto& entry) { return waitedLong(*entry.second); }) ||
             std::any_of(draining_pools_.begin(), draining_pools_.end(),
                         [&](const auto& pool) { return waitedLong(*pool); });
  if (!any) return;
  std::vector<backends::PoolWaitState> states;
  for (const auto& [key, pool] : pools_) states.push_back(pool->waitState());
  for (const auto& pool : draining_pools_) states.push_back(pool->waitState());
  // The victim is the first of them to have waited deadlock_timeout, as in Postgres, where the
  // process whose deadlock_timeout runs out first finds the cycle and is the one to fail.
  backends::ConnectionHolder* victim = nullptr;
  for (backends::ConnectionHolder* holder : backends::deadlockedHolders(states)) {
    if (now_ms - holder->waitingSinceMs() < timeout_ms) continue;
    if (victim == nullptr || holder->waitingSinceMs() < victim->waitingSinceMs()) victim = holder;
  }
  if (victim == nullptr) return;
  std::vector<const backends::Pool*> awaited;
  victim->awaitedPools(awaited);
  std::string where;
  for (const backends::Pool* pool : awaited) {
    where += (where.empty() ? "" : ", ") + pool->endpoint().label;
  }
  spdlog::info("event=pool_deadlock waiting_for=\"{}\" pool_size={}", where,
               awaited.empty() ? 0 : awaited.front()->settings().max_size);
  metrics_->pool_deadlocks.add();
  victim->failWaits(Error::make(
      sqlstate::kDeadlockDetected, "deadlock detected",
      "This client waited " + std::to_string(now_ms - victim->waitingSinceMs()) +
          " ms for a server connection to " + where +
          " while holding connections of its own; every connection it waited for was held by "
          "clients waiting in turn for those.",
      "Retry the transaction. Larger pools (default_pool_size), or transactions that visit the "
      "shards in the same order, make this rarer."));
}

template <class Visit>
void Worker::forEachHeldConnection(Visit visit) {
  auto walk = [&](const backends::Pool& pool) {
    for (backends::ServerConnection* server : pool.connections()) {
      if (server->state() != backends::ServerConnection::State::kHeld || !server->sink()) continue;
      if (backends::ConnectionHolder* holder = server->sink()->holder()) {
        visit(server, holder->holderId());
      }
    }
  };
  for (const auto& [key, pool] : pools_) walk(*pool);
  for (const auto& pool : draining_pools_) walk(*pool);
}

void Worker::publishHeldBackends() {
  if (config_->general.deadlock_timeout_ms == 0 && !published_held_backends_) return;
  LockDeadlockWatch::Published published;
  if (config_->general.deadlock_timeout_ms != 0) {
    std::map<uint64_t, std::vector<const backends::ServerConnection*>> by_session;
    forEachHeldConnection([&](backends::ServerConnection* server, uint64_t session) {
      by_session[session].push_back(server);
    });
    for (const auto& [session, servers] : by_session) {
      if (servers.size() < 2) continue;
      backends::BackendHolder holder{index_, session, {}};
      for (const backends::ServerConnection* server : servers) {
        const backends::ServerEndpoint& endpoint = server->endpoint();
        std::string where = endpoint.where();
        holder.backends.push_back({where, server->backendPid()});
        published.servers.try_emplace(
            std::move(where),
            conf::ServerAddress{endpoint.host, endpoint.port, endpoint.database, endpoint.user,
                                endpoint.password, endpoint.tls_mode,
                                config_->general.server_tls_ca_file});
      }
      published.holders.push_back(std::move(holder));
    }
  }
  if (published.holders.empty() && !published_held_backends_) return;
  published_held_backends_ = !published.holders.empty();
  server_.lockDeadlockWatch().publish(index_, std::move(published));
}

void Worker::breakLockDeadlock(const backends::LockDeadlock& deadlock) {
  backends::ServerConnection* waiting = nullptr;
  forEachHeldConnection([&](backends::ServerConnection* server, uint64_t session) {
    if (session == deadlock.session && server->backendPid() == deadlock.waiting.pid &&
        server->owesReplies() && server->endpoint().where() == deadlock.waiting.server) {
      waiting = server;
    }
  });
  if (waiting == nullptr) return;  // its wait ended (or it left) since the watch looked
  std::string detail;
  for (const std::string& line : deadlock.cycle) detail += line + ".\n";
  detail +=
      "The locks are on different shards, so no shard could see the cycle; this "
      "statement (on " +
      waiting->endpoint().label + ") waited " + std::to_string(deadlock.waited_ms) + " ms.";
  waiting->noteCancelledForLockDeadlock(Error::make(
      sqlstate::kDeadlockDetected, "deadlock detected", detail,
      "Retry the transaction. Transactions that lock rows of several shards in the same order "
      "cannot deadlock this way."));
  backends::sendCancelRequest(context(), *waiting);
  metrics_->lock_deadlocks.add();
}

void Worker::sweep() {
  uint64_t now = backends::monotonicMs();
  // Sessions may close (and leave sessions_) while we walk; walk a snapshot of ids.
  std::vector<ClientSession*> snapshot;
  snapshot.reserve(sessions_.size());
  for (auto& [id, session] : sessions_) snapshot.push_back(session);
  for (ClientSession* session : snapshot) {
    if (session->closing()) {
      // A final error the client never takes (a full socket, a TLS handshake it stalled) must
      // not hold shutdown past its deadline.
      if (shutting_down_ && now >= shutdown_deadline_ms_) session->close();
      continue;
    }
    session->sweep(now);
    if (shutting_down_ && (session->idle() || now >= shutdown_deadline_ms_)) {
      session->terminate(Error::fatal(sqlstate::kAdminShutdown,
                                      "terminating connection due to administrator command",
                                      "shardgate is shutting down"));
    }
  }
  for (auto& [key, pool] : pools_) pool->sweep(now);
  sweepDrainingPools(now);
  breakPoolDeadlocks(now);
  publishHeldBackends();
  metrics_->setClients(countClientStates(sessions_));
  metrics_->noteRouterStats(router_.stats());
  if (shutting_down_) finishIfDrained();
}

void Worker::beginShutdown(uint32_t timeout_ms) {
  uint64_t deadline = backends::monotonicMs() + timeout_ms;
  if (shutting_down_) {
    // A second request (SIGINT after SIGTERM) may only bring the deadline closer.
    if (deadline < shutdown_deadline_ms_) {
      shutdown_deadline_ms_ = deadline;
      sweep();
    }
    return;
  }
  shutting_down_ = true;
  shutdown_deadline_ms_ = deadline;
  if (listening_) {
    uv_close(reinterpret_cast<uv_handle_t*>(&listener_), nullptr);
    listening_ = false;
  }
  if (unix_listening_) {
    uv_close(reinterpret_cast<uv_handle_t*>(&unix_listener_), nullptr);
    unix_listening_ = false;
  }
  sweep();
}

void Worker::finishIfDrained() {
  if (stopped_ || !sessions_.empty()) return;
  stopped_ = true;
  for (auto& [key, pool] : pools_) pool->closeAll();
  for (auto& pool : draining_pools_) pool->closeAll();
  uv_timer_stop(&sweep_timer_);
  uv_close(reinterpret_cast<uv_handle_t*>(&sweep_timer_), nullptr);
  {
    std::lock_guard lock(tasks_mutex_);
    wakeup_closed_ = true;
    uv_close(reinterpret_cast<uv_handle_t*>(&wakeup_), nullptr);
  }
  context_->close();
}

}  // namespace shardgate::proxy
