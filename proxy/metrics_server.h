// MetricsServer: the Prometheus /metrics endpoint (prometheus-cpp Exposer on general.metrics_port)
// serving the sums of every worker's metrics and the background probes' findings.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "common/result.h"
#include "conf/config.h"
#include "proxy/metrics.h"

namespace prometheus {
class Exposer;
}

namespace shardgate::proxy {

class ServerProbe;
class MetricsCollector;

class MetricsServer {
 public:
  // `workers`: every worker's metrics (kept alive by the server, so a scrape never reads freed
  // cells); `config`: the config in force (follows reloads).
  MetricsServer(std::vector<std::shared_ptr<const WorkerMetrics>> workers,
                std::function<conf::ConfigPtr()> config);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // Listens on address:port (port 0: a free port, see port()) and starts the probes.
  Status start(const std::string& address, uint16_t port);
  // The port /metrics is served on (0 before start()).
  uint16_t port() const;

 private:
  std::vector<std::shared_ptr<const WorkerMetrics>> workers_;
  std::function<conf::ConfigPtr()> config_;
  std::unique_ptr<ServerProbe> probe_;
  std::shared_ptr<MetricsCollector> collector_;
  std::unique_ptr<prometheus::Exposer> exposer_;
};

}  // namespace shardgate::proxy
