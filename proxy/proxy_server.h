// The whole proxy: configuration, workers, and the state they share (cancel keys, client count).
#pragma once

#include <atomic>
#include <memory>
#include <vector>

#include "common/result.h"
#include "conf/config.h"
#include "proxy/cancel_registry.h"

namespace shardgate::proxy {

class Worker;

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

  const conf::Config& config() const { return *config_; }
  CancelRegistry& cancelRegistry() { return cancel_registry_; }
  Worker& worker(uint32_t index) { return *workers_.at(index); }
  size_t workerCount() const { return workers_.size(); }

  // Client connection accounting across workers (max_client_conn).
  bool tryAddClient();
  void removeClient();
  uint32_t clientCount() const { return clients_.load(std::memory_order_relaxed); }

 private:
  conf::ConfigPtr config_;
  CancelRegistry cancel_registry_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::atomic<uint32_t> clients_{0};
};

}  // namespace shardgate::proxy
