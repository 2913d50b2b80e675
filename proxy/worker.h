// A worker thread: its own libuv loop, listening socket (SO_REUSEPORT), client sessions and pools.
#pragma once

#include <uv.h>

#include <array>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "backends/lock_deadlock.h"
#include "backends/pool.h"
#include "backends/prepared_statements.h"
#include "common/result.h"
#include "common/tcp_connection.h"
#include "conf/config.h"
#include "planner/query_router.h"
#include "proxy/metrics.h"
#include "proxy/routing_lookups.h"
#include "proxy/session_settings.h"
#include "proxy/wire/frontend_messages.h"
#include "proxy/wire/scram.h"

namespace shardgate::proxy {

class ProxyServer;
class ClientSession;

class Worker {
 public:
  Worker(ProxyServer& server, uint32_t index, conf::ConfigPtr config);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Opens this worker's listening socket (called before start(), on the main thread).
  Status listen(const std::string& address, uint16_t port);
  // Also accepts clients on a Unix-domain socket that is already listening (every worker watches
  // its own duplicate of the one descriptor; the first to accept a client serves it).
  Status listenUnix(int listening_fd);
  // The port the listening socket is bound to (the configured one, or the kernel's pick for 0).
  uint16_t listeningPort();
  void start();
  void join();

  // Thread-safe: runs `task` on this worker's loop.
  void post(std::function<void()> task);
  // Thread-safe: asks the session to cancel its running query.
  void postCancel(uint64_t session_id);
  // Thread-safe: cancels the victim's statement waiting in a deadlock across shards (the client
  // gets 40P01), if it still waits there.
  void postLockDeadlock(backends::LockDeadlock deadlock);
  // Thread-safe: stop accepting; close idle clients now and busy ones once idle or at the deadline.
  void postShutdown(uint32_t timeout_ms);

  // Loop-thread API for sessions.
  uint32_t index() const { return index_; }
  ProxyServer& server() { return server_; }
  LoopContext& context() { return *context_; }
  const conf::Config& config() const { return *config_; }
  // The snapshot sessions keep (so their conf::Database / conf::User pointers stay valid).
  const conf::ConfigPtr& configPtr() const { return config_; }
  // The pool for one server of a shard: its primary (replica < 0) or replica number `replica`.
  backends::Pool& pool(const conf::Database& database, const conf::User& user, uint32_t shard,
                       int replica = -1);
  // A replica of `shard` for a read, by the database's replica_policy; -1 if it has none.
  int chooseReplica(const conf::Database& database, const conf::User& user, uint32_t shard);
  planner::QueryRouter& router() { return router_; }
  // This worker's metric cells (written on its thread only; see proxy/metrics.h).
  WorkerMetrics& metrics() { return *metrics_; }
  std::shared_ptr<const WorkerMetrics> metricsHandle() const { return metrics_; }
  // Directory entries and column orders the router needs (proxy/routing_lookups.h).
  RoutingLookups& lookups() { return *lookups_; }
  std::shared_ptr<const wire::ScramSecret> scramSecret(const conf::User& user);
  void addSession(ClientSession* session);
  void removeSession(ClientSession* session);
  // Unique across all workers (SHOW CLIENTS lists it, KILL_CLIENT takes it); thread-safe.
  static uint64_t nextSessionId();
  uint64_t nextUnnamedVersion() { return ++unnamed_versions_; }
  bool shuttingDown() const { return shutting_down_; }
  backends::StatementRegistry& statements() { return statements_; }
  // Scratch space for routing one Bind (ClientSession::routeBind): its vectors keep their
  // capacity, so routing an execution of a prepared statement allocates nothing for them. Valid
  // only within one call on this worker's thread.
  struct BindScratch {
    wire::BindView bind;
    planner::BindParameters params;
  };
  BindScratch& bindScratch() { return bind_scratch_; }
  // sessionEffectsOf(sql).empty(), remembered for the texts seen recently: drivers send the same
  // few statement texts in an unnamed Parse for every execution, and the lexical scan of each
  // was the largest cost of passing such a Parse on.
  bool sessionEffectFree(std::string_view sql);
  SettingsInterner& settingsInterner() { return settings_interner_; }

  // Reload and PAUSE (proxy/worker_control.cc), on the loop thread.
  // Switches to `config`: pools whose server or settings changed are drained and replaced;
  // sessions pick the new config up between transactions.
  void applyConfig(conf::ConfigPtr config);
  // PAUSE / RESUME of one database ("" = every database): new transactions and new clients wait.
  void pauseDatabase(const std::string& database);
  void resumeDatabase(const std::string& database);
  bool databasePaused(const std::string& database) const;
  // What a client held by PAUSE for query_wait_timeout gets: 57P03, FATAL at login.
  static Error pausedTooLong(const std::string& database, uint32_t timeout_ms, bool at_login);
  bool pausedAll() const { return paused_all_; }
  const std::vector<std::string>& pausedDatabases() const { return paused_databases_; }
  // A session whose next transaction waits for RESUME.
  void holdUntilResume(uint64_t session_id) { held_sessions_.push_back(session_id); }
  // RECONNECT: the database's server connections ("" = all) are closed as they are released.
  void reconnectDatabase(const std::string& database);
  // KILL: pauses the database ("" = every one) and ends its clients with `why` (the admin
  // console's own sessions excepted) and its server connections. Returns the clients ended.
  uint32_t killDatabase(const std::string& database, const Error& why);
  // KILL_CLIENT: ends session `id` with `why`; false if it is not on this worker.
  bool killSession(uint64_t id, const Error& why);
  // DISABLE / ENABLE: clients logging in to the database are refused; connected ones go on.
  void disableDatabase(const std::string& database);
  void enableDatabase(const std::string& database);
  bool databaseDisabled(const std::string& database) const;
  const std::vector<std::string>& disabledDatabases() const { return disabled_databases_; }
  // For the admin console's snapshots.
  const std::unordered_map<uint64_t, ClientSession*>& sessions() const { return sessions_; }
  const std::map<std::string, std::unique_ptr<backends::Pool>>& pools() const { return pools_; }
  const std::vector<std::unique_ptr<backends::Pool>>& drainingPools() const {
    return draining_pools_;
  }

 private:
  static void onConnection(uv_stream_t* listener, int status);
  static void onUnixConnection(uv_stream_t* listener, int status);
  void accept(uv_stream_t* listener, TcpConnection::Transport transport);
  void run();
  void drainTasks();
  void sweep();
  void beginShutdown(uint32_t timeout_ms);
  // What pool() builds for one server of a shard under `config` (the reload compares them).
  struct PoolSpec {
    std::string key;
    backends::ServerEndpoint endpoint;
    backends::PoolSettings settings;
  };
  PoolSpec poolSpec(const conf::Config& config, const conf::Database& database,
                    const conf::User& user, uint32_t shard, int replica) const;
  void sweepDrainingPools(uint64_t now_ms);
  // Clients waiting deadlock_timeout for connections held by each other: one of them gets 40P01.
  void breakPoolDeadlocks(uint64_t now_ms);
  // Calls visit(connection, session id) for each server connection a client session holds.
  template <class Visit>
  void forEachHeldConnection(Visit visit);
  // Tells the lock-deadlock watch which sessions hold connections on several servers.
  void publishHeldBackends();
  bool published_held_backends_ = false;  // the last publication was not empty
  void breakLockDeadlock(const backends::LockDeadlock& deadlock);
  // pool() without its memo of recent lookups; forgetRecentPools empties the memo.
  backends::Pool& findOrCreatePool(const conf::Database& database, const conf::User& user,
                                   uint32_t shard, int replica);
  void forgetRecentPools();
  void finishIfDrained();
  // Logins to a paused database wait and to a disabled one are refused: the pools ask this gate
  // while any database is paused or disabled, and nothing otherwise (refreshPoolGates).
  class LoginGate final : public backends::PoolGate {
   public:
    explicit LoginGate(const Worker& worker) : worker_(worker) {}
    Verdict admit(backends::PoolWaiter* waiter, Error& error) override;
    Error heldTooLong(backends::PoolWaiter* waiter, uint32_t timeout_ms) const override;

   private:
    const Worker& worker_;
  };
  bool gateNeeded() const {
    return paused_all_ || !paused_databases_.empty() || !disabled_databases_.empty();
  }
  void refreshPoolGates();

  ProxyServer& server_;
  uint32_t index_;
  conf::ConfigPtr config_;
  uv_loop_t loop_;
  std::unique_ptr<LoopContext> context_;
  uv_tcp_t listener_;
  bool listening_ = false;
  uv_pipe_t unix_listener_;
  bool unix_listening_ = false;
  uv_async_t wakeup_;
  uv_timer_t sweep_timer_;
  std::thread thread_;

  std::mutex tasks_mutex_;
  std::vector<std::function<void()>> tasks_;
  bool wakeup_closed_ = false;  // guarded by tasks_mutex_

  uint64_t unnamed_versions_ = 0;
  std::unordered_map<uint64_t, ClientSession*> sessions_;
  LoginGate login_gate_{*this};  // before the pools, which point to it
  std::map<std::string, std::unique_ptr<backends::Pool>> pools_;
  std::string pool_key_;  // pool()'s lookup key, built in place (a routed statement per lookup)
  // The pools pool() found last, by the config objects and numbers it was asked with. Forgotten
  // when a config is applied (pools may be replaced; a later config's objects may reuse the
  // addresses of a freed one's).
  struct RecentPool {
    const conf::Database* database = nullptr;
    const conf::User* user = nullptr;
    uint32_t shard = 0;
    int replica = 0;
    backends::Pool* pool = nullptr;
  };
  std::array<RecentPool, 8> recent_pools_{};
  size_t next_recent_pool_ = 0;
  BindScratch bind_scratch_;
  struct TextHash {
    using is_transparent = void;
    size_t operator()(std::string_view text) const { return std::hash<std::string_view>{}(text); }
  };
  // Texts known to have no session-level effect; bounded (cleared when full).
  std::unordered_set<std::string, TextHash, std::equal_to<>> effect_free_texts_;
  std::map<std::string, std::shared_ptr<const wire::ScramSecret>> scram_secrets_;
  backends::StatementRegistry statements_;
  SettingsInterner settings_interner_;
  planner::QueryRouter router_;
  std::shared_ptr<WorkerMetrics> metrics_ = std::make_shared<WorkerMetrics>();
  std::unique_ptr<RoutingLookups> lookups_;  // set as router_'s directory and column reader
  uint64_t replica_round_robin_ = 0;

  // Reload: pools replaced by a reload, kept until their connections are released.
  std::vector<std::unique_ptr<backends::Pool>> draining_pools_;
  // PAUSE: all databases, or these; the sessions waiting for RESUME.
  bool paused_all_ = false;
  std::vector<std::string> paused_databases_;
  std::vector<uint64_t> held_sessions_;
  std::vector<std::string> disabled_databases_;  // DISABLE

  bool shutting_down_ = false;
  uint64_t shutdown_deadline_ms_ = 0;
  bool stopped_ = false;
};

}  // namespace shardgate::proxy
