// MetricsServer: wires the worker metrics and the probes into a prometheus-cpp Exposer.
#include "proxy/metrics_server.h"

#include <prometheus/collectable.h>
#include <prometheus/exposer.h>

#include <exception>

#include "common/log.h"
#include "proxy/server_probe.h"

namespace shardgate::proxy {

// Runs on the Exposer's HTTP threads at each scrape: sums the workers' cells (each worker's mutex
// is held only while its cells are read) and adds the probes' latest findings.
class MetricsCollector final : public prometheus::Collectable {
 public:
  MetricsCollector(const std::vector<std::shared_ptr<const WorkerMetrics>>& workers,
                   const ServerProbe& probe)
      : workers_(workers), probe_(probe) {}

  std::vector<prometheus::MetricFamily> Collect() const override {
    // No exception may leave a scrape (prometheus-cpp would answer 500; nothing else to do).
    try {
      WorkerMetrics::Totals totals;
      for (const auto& worker : workers_) worker->addTo(totals);
      return buildFamilies(totals, probe_.results());
    } catch (const std::exception& e) {
      spdlog::error("event=metrics_scrape_failed error=\"{}\"", e.what());
      return {};
    }
  }

 private:
  const std::vector<std::shared_ptr<const WorkerMetrics>>& workers_;
  const ServerProbe& probe_;
};

MetricsServer::MetricsServer(std::vector<std::shared_ptr<const WorkerMetrics>> workers,
                             std::function<conf::ConfigPtr()> config)
    : workers_(std::move(workers)), config_(std::move(config)) {}

MetricsServer::~MetricsServer() {
  exposer_.reset();  // no scrape runs past here
  collector_.reset();
  if (probe_) probe_->stop();
}

Status MetricsServer::start(const std::string& address, uint16_t port) {
  probe_ = std::make_unique<ServerProbe>(config_);
  collector_ = std::make_shared<MetricsCollector>(workers_, *probe_);
  // civetweb's listening_ports syntax: an IPv6 address goes in brackets.
  std::string bind = address.find(':') != std::string::npos ? "[" + address + "]" : address;
  bind += ":" + std::to_string(port);
  try {
    // civetweb serves one connection per thread: with its default 30 s read timeout, two idle
    // connections (a port scanner, a half-open client) held both threads past any scrape timeout.
    // More threads, and idle connections dropped after 3 s (Prometheus asks at once).
    exposer_ = std::make_unique<prometheus::Exposer>(std::vector<std::string>{
        "listening_ports", bind, "num_threads", "6", "request_timeout_ms", "3000"});
  } catch (const std::exception& e) {
    return Error::fatal(sqlstate::kConfigFileError,
                        "cannot serve metrics on " + bind + ": " + e.what(),
                        "general.metrics_port " + std::to_string(port) + " may be in use");
  }
  exposer_->RegisterCollectable(collector_);
  probe_->start();
  spdlog::info("event=metrics_listening address={} port={}", address, this->port());
  return {};
}

uint16_t MetricsServer::port() const {
  if (!exposer_) return 0;
  auto ports = exposer_->GetListeningPorts();
  return ports.empty() ? 0 : static_cast<uint16_t>(ports.front());
}

}  // namespace shardgate::proxy
