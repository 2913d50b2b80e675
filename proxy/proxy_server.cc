// ProxyServer: starts one Worker per configured thread and coordinates their shutdown.
#include "proxy/proxy_server.h"

#include "common/log.h"
#include "conf/config_loader.h"
#include "proxy/metrics_server.h"
#include "proxy/worker.h"

namespace shardgate::proxy {

ProxyServer::ProxyServer(conf::ConfigPtr config) : config_(std::move(config)) {
  history_.push_back(config_);
  max_client_conn_.store(config_->general.max_client_conn, std::memory_order_relaxed);
}

conf::ConfigPtr ProxyServer::currentConfig() const {
  std::lock_guard lock(config_mutex_);
  return config_;
}

void ProxyServer::requestShutdown() {
  if (shutdown_handler_) shutdown_handler_();
}

ProxyServer::~ProxyServer() {
  for (auto& worker : workers_) worker->join();
  workers_.clear();
}

Status ProxyServer::start() {
  conf::ConfigPtr config = currentConfig();
  const conf::General& g = config->general;
  uint32_t count = std::max<uint32_t>(1, g.workers);
  for (uint32_t i = 0; i < count; ++i) {
    auto worker = std::make_unique<Worker>(*this, i, config);
    Status listening = worker->listen(g.listen_addr, g.port);
    if (!listening.ok()) return listening;
    workers_.push_back(std::move(worker));
  }
  if (g.metrics_port != 0) {
    std::vector<std::shared_ptr<const WorkerMetrics>> cells;
    for (auto& worker : workers_) cells.push_back(worker->metricsHandle());
    metrics_server_ =
        std::make_unique<MetricsServer>(std::move(cells), [this] { return currentConfig(); });
    Status serving = metrics_server_->start(g.listen_addr, g.metrics_port);
    if (!serving.ok()) return serving;
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

Result<conf::ConfigPtr> ProxyServer::reload() {
  std::lock_guard reload_lock(reload_mutex_);
  conf::ConfigPtr current = currentConfig();
  spdlog::info("event=reload_started source=\"{}\"", current->source_path);
  auto loaded = conf::loadConfigFile(current->source_path);
  if (!loaded.ok()) {
    spdlog::error("event=reload_failed source=\"{}\" error=\"{}\"", current->source_path,
                  loaded.error().message);
    return loaded.error();
  }
  conf::ConfigPtr next = *loaded;
  // The listening sockets and threads stay as they are until a restart.
  const conf::General& was = current->general;
  const conf::General& now = next->general;
  auto restart_needed = [](std::string_view key, const auto& old_value, const auto& new_value) {
    if (old_value != new_value) {
      spdlog::warn("event=reload_restart_needed key=general.{} old={} new={}", key, old_value,
                   new_value);
    }
  };
  restart_needed("listen_addr", was.listen_addr, now.listen_addr);
  restart_needed("port", was.port, now.port);
  restart_needed("workers", was.workers, now.workers);
  restart_needed("metrics_port", was.metrics_port, now.metrics_port);
  setLogLevel(now.log_level);
  setLogFormat(now.log_format == conf::LogFormat::kJson ? LogLineFormat::kJson
                                                        : LogLineFormat::kText);
  {
    std::lock_guard lock(config_mutex_);
    config_ = next;
    history_.push_back(next);
  }
  max_client_conn_.store(now.max_client_conn, std::memory_order_relaxed);
  for (auto& worker : workers_) {
    Worker* w = worker.get();
    w->post([w, next] { w->applyConfig(next); });
  }
  spdlog::info("event=reload_done source=\"{}\" databases={} users={} log_level={} log_format={}",
               next->source_path, next->databases.size(), next->users.size(), now.log_level,
               conf::logFormatName(now.log_format));
  return next;
}

bool ProxyServer::tryAddClient() {
  uint32_t current = clients_.fetch_add(1, std::memory_order_relaxed);
  if (current >= max_client_conn_.load(std::memory_order_relaxed)) {
    clients_.fetch_sub(1, std::memory_order_relaxed);
    return false;
  }
  return true;
}

void ProxyServer::removeClient() {
  clients_.fetch_sub(1, std::memory_order_relaxed);
}

}  // namespace shardgate::proxy
