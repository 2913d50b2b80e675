// ProxyServer: starts one Worker per configured thread and coordinates their shutdown.
#include "proxy/proxy_server.h"

#include "common/log.h"
#include "proxy/worker.h"

namespace shardgate::proxy {

ProxyServer::ProxyServer(conf::ConfigPtr config) : config_(std::move(config)) {}

ProxyServer::~ProxyServer() {
  for (auto& worker : workers_) worker->join();
  workers_.clear();
}

Status ProxyServer::start() {
  const conf::General& g = config_->general;
  uint32_t count = std::max<uint32_t>(1, g.workers);
  for (uint32_t i = 0; i < count; ++i) {
    auto worker = std::make_unique<Worker>(*this, i, config_);
    Status listening = worker->listen(g.listen_addr, g.port);
    if (!listening.ok()) return listening;
    workers_.push_back(std::move(worker));
  }
  for (auto& worker : workers_) worker->start();
  spdlog::info("event=listening address={} port={} workers={} pool_mode={}", g.listen_addr, g.port,
               count, g.pool_mode == conf::PoolMode::kSession ? "session" : "transaction");
  return {};
}

void ProxyServer::shutdown(uint32_t timeout_ms) {
  for (auto& worker : workers_) worker->postShutdown(timeout_ms);
}

void ProxyServer::wait() {
  for (auto& worker : workers_) worker->join();
}

bool ProxyServer::tryAddClient() {
  uint32_t current = clients_.fetch_add(1, std::memory_order_relaxed);
  if (current >= config_->general.max_client_conn) {
    clients_.fetch_sub(1, std::memory_order_relaxed);
    return false;
  }
  return true;
}

void ProxyServer::removeClient() {
  clients_.fetch_sub(1, std::memory_order_relaxed);
}

}  // namespace shardgate::proxy
