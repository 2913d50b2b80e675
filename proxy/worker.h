// A worker thread: its own libuv loop, listening socket (SO_REUSEPORT), client sessions and pools.
#pragma once

#include <uv.h>

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "backends/pool.h"
#include "backends/prepared_statements.h"
#include "common/result.h"
#include "common/tcp_connection.h"
#include "conf/config.h"
#include "planner/query_router.h"
#include "proxy/session_settings.h"
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
  // The port the listening socket is bound to (the configured one, or the kernel's pick for 0).
  uint16_t listeningPort();
  void start();
  void join();

  // Thread-safe: runs `task` on this worker's loop.
  void post(std::function<void()> task);
  // Thread-safe: asks the session to cancel its running query.
  void postCancel(uint64_t session_id);
  // Thread-safe: stop accepting; close idle clients now and busy ones once idle or at the deadline.
  void postShutdown(uint32_t timeout_ms);

  // Loop-thread API for sessions.
  uint32_t index() const { return index_; }
  ProxyServer& server() { return server_; }
  LoopContext& context() { return *context_; }
  const conf::Config& config() const { return *config_; }
  // The pool for one server of a shard: its primary (replica < 0) or replica number `replica`.
  backends::Pool& pool(const conf::Database& database, const conf::User& user, uint32_t shard,
                       int replica = -1);
  // A replica of `shard` for a read, by the database's replica_policy; -1 if it has none.
  int chooseReplica(const conf::Database& database, const conf::User& user, uint32_t shard);
  planner::QueryRouter& router() { return router_; }
  std::shared_ptr<const wire::ScramSecret> scramSecret(const conf::User& user);
  void addSession(ClientSession* session);
  void removeSession(ClientSession* session);
  uint64_t nextSessionId() { return next_session_id_++; }
  uint64_t nextUnnamedVersion() { return ++unnamed_versions_; }
  bool shuttingDown() const { return shutting_down_; }
  backends::StatementRegistry& statements() { return statements_; }
  SettingsInterner& settingsInterner() { return settings_interner_; }

 private:
  static void onConnection(uv_stream_t* listener, int status);
  void run();
  void drainTasks();
  void sweep();
  void beginShutdown(uint32_t timeout_ms);
  void finishIfDrained();

  ProxyServer& server_;
  uint32_t index_;
  conf::ConfigPtr config_;
  uv_loop_t loop_;
  std::unique_ptr<LoopContext> context_;
  uv_tcp_t listener_;
  bool listening_ = false;
  uv_async_t wakeup_;
  uv_timer_t sweep_timer_;
  std::thread thread_;

  std::mutex tasks_mutex_;
  std::vector<std::function<void()>> tasks_;
  bool wakeup_closed_ = false;  // guarded by tasks_mutex_

  uint64_t next_session_id_ = 1;
  uint64_t unnamed_versions_ = 0;
  std::unordered_map<uint64_t, ClientSession*> sessions_;
  std::map<std::string, std::unique_ptr<backends::Pool>> pools_;
  std::map<std::string, std::shared_ptr<const wire::ScramSecret>> scram_secrets_;
  backends::StatementRegistry statements_;
  SettingsInterner settings_interner_;
  planner::QueryRouter router_;
  uint64_t replica_round_robin_ = 0;

  bool shutting_down_ = false;
  uint64_t shutdown_deadline_ms_ = 0;
  bool stopped_ = false;
};

}  // namespace shardgate::proxy
