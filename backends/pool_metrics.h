// The metric cells one pool reports into (owned by its worker's metrics, see proxy/metrics.h).
#pragma once

#include "common/relaxed_metrics.h"

namespace shardgate::backends {

// Server connections of one (database, user, shard, role) on one worker, by state. Pools add and
// remove their own counts (not set them), so an old pool draining after a reload and its
// replacement can share the cells.
struct PoolMetrics {
  metrics::Gauge active;
  metrics::Gauge idle;
  metrics::Gauge connecting;
  metrics::Gauge waiting_clients;
  // Time from a client asking for a connection to getting one (0 when one was idle); the
  // worker's histogram, shared by its pools.
  metrics::DurationHistogram* wait = nullptr;
};

}  // namespace shardgate::backends
