// The whole proxy: configuration, workers, and the state they share (cancel keys, client count).
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "common/result.h"
#include "common/tls.h"
#include "conf/config.h"
#include "proxy/cancel_registry.h"

namespace shardgate::proxy {

class Worker;
class MetricsServer;
class LockDeadlockWatch;

class ProxyServer {
 public:
  explicit ProxyServer(conf::ConfigPtr config);
  ~ProxyServer();

  // Opens the listening sockets and starts the workers.
  Status start();
  // Graceful: stop accepting, let running transactions finish (up to timeout_ms), then stop.
  void shutdown(uint32_t timeout_ms);
  // Waits until every worker has stopped.
  void wait();

  // The config in force (RELOAD swaps it). Thread-safe; every snapshot loaded stays alive for the
  // process's life, so the reference stays valid (reloads are rare and configs small).
  const conf::Config& config() const { return *currentConfig(); }
  conf::ConfigPtr currentConfig() const;

  // SIGHUP and the admin console's RELOAD (any thread): loads and validates the config file
  // again. A bad file changes nothing (the error is logged and returned); a good one becomes the
  // config of every worker between statements, and the log level and format follow it.
  Result<conf::ConfigPtr> reload();
  // The admin console's SHUTDOWN (any thread): what SIGTERM does. main() installs the handler.
  void setShutdownHandler(std::function<void()> handler) { shutdown_handler_ = std::move(handler); }
  void requestShutdown();
  // The TLS contexts a config asks for, made together so that they always belong to one config.
  struct TlsContexts {
    std::shared_ptr<const TlsContext> clients;  // client_tls_*; null for disable
    bool clients_must_use_tls = false;          // client_tls_sslmode = require
    std::shared_ptr<const TlsContext> servers;  // server_tls_*; null for disable
  };
  // Loads the files general names (for start, RELOAD and --check-config).
  static Result<TlsContexts> loadTls(const conf::General& general);
  // Those in force (RELOAD swaps them). Any thread; read per connection, never per query.
  TlsContexts tls() const;

  CancelRegistry& cancelRegistry() { return cancel_registry_; }
  // Deadlocks through locks on several shards (made by start(), before the workers run).
  LockDeadlockWatch& lockDeadlockWatch() { return *lock_deadlock_watch_; }
  Worker& worker(uint32_t index) { return *workers_.at(index); }
  size_t workerCount() const { return workers_.size(); }

  // Client connection accounting across workers (max_client_conn).
  bool tryAddClient();
  void removeClient();
  uint32_t clientCount() const { return clients_.load(std::memory_order_relaxed); }

 private:
  mutable std::mutex config_mutex_;  // guards config_, history_, the TLS contexts; never per query
  conf::ConfigPtr config_;
  TlsContexts tls_;
  std::string server_tls_ca_stamp_;  // the CA file's size and mtime when tls_.servers was made
  // Whether a reload can keep tls_.servers (same mode, same CA file, unchanged on disk): pools
  // compare it, and a new one makes them reconnect.
  bool sameServerTls(const conf::General& was, const conf::General& now) const;
  std::vector<conf::ConfigPtr> history_;
  std::mutex reload_mutex_;  // one reload at a time (SIGHUP and RELOAD may race)
  std::atomic<uint32_t> max_client_conn_{0};
  std::function<void()> shutdown_handler_;
  CancelRegistry cancel_registry_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::unique_ptr<MetricsServer> metrics_server_;  // general.metrics_port != 0
  std::unique_ptr<LockDeadlockWatch> lock_deadlock_watch_;
  std::string
      unix_socket_path_;  // the socket file we made (general.unix_socket_dir), removed at exit
  std::atomic<uint32_t> clients_{0};
};

}  // namespace shardgate::proxy
