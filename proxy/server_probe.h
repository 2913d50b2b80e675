// ServerProbe: a background thread that checks every shard server through libpq (SELECT 1) and
// reads the row counts and sizes of sharded tables on each shard, for the metrics endpoint.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>

#include "conf/config.h"
#include "proxy/metrics.h"

namespace shardgate::proxy {

class ServerProbe {
 public:
  // `config` returns the config in force (it follows reloads); called on the probe thread.
  explicit ServerProbe(std::function<conf::ConfigPtr()> config);
  ~ServerProbe();
  ServerProbe(const ServerProbe&) = delete;
  ServerProbe& operator=(const ServerProbe&) = delete;

  void start();
  void stop();
  // What the latest rounds found (thread-safe).
  ProbeResults results() const;

 private:
  void run();
  void checkServers(const conf::Config& config);
  void readTableStats(const conf::Config& config);

  std::function<conf::ConfigPtr()> config_;
  std::thread thread_;
  mutable std::mutex mutex_;  // guards everything below
  std::condition_variable wake_;
  bool stopping_ = false;
  ProbeResults results_;
};

}  // namespace shardgate::proxy
