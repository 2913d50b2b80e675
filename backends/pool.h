// A pool of connections to one Postgres server for one (database, user, shard, role), on one
// worker.
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <unordered_set>
#include <vector>

#include "backends/pool_deadlock.h"
#include "backends/pool_metrics.h"
#include "backends/server_connection.h"

namespace shardgate::backends {

struct PoolSettings {
  uint32_t max_size = 20;  // connections this worker may open
  uint32_t min_idle = 0;
  uint32_t connect_timeout_ms = 5000;
  uint32_t query_wait_timeout_ms = 120000;
  uint32_t idle_timeout_ms = 600000;
  uint32_t lifetime_ms = 3600000;
};

// Someone waiting for a connection (a client session).
class PoolWaiter {
 public:
  virtual ~PoolWaiter() = default;
  virtual void onServerAcquired(ServerConnection* server) = 0;
  virtual void onServerUnavailable(const Error& error) = 0;
  // When its current wait began (monotonic ms), for SHOW CLIENTS.
  uint64_t waitStartedMs() const { return wait_started_ms_; }

 private:
  friend class Pool;
  uint64_t wait_started_ms_ = 0;
  uint64_t wait_started_ns_ = 0;  // for the pool wait histogram
};

// Decides whether a waiter may have a connection at all: a worker sets one on its pools while an
// admin command (PAUSE, KILL, DISABLE) holds back or refuses clients that are logging in.
class PoolGate {
 public:
  enum class Verdict {
    kAdmit,   // served as usual
    kHold,    // kept aside until Pool::admitHeld() (e.g. RESUME)
    kRefuse,  // told onServerUnavailable(error)
  };
  virtual ~PoolGate() = default;
  // Fills `error` for kRefuse.
  virtual Verdict admit(PoolWaiter* waiter, Error& error) = 0;
  // What a waiter held for query_wait_timeout (`timeout_ms`) is told when it stops waiting.
  virtual Error heldTooLong(PoolWaiter* waiter, uint32_t timeout_ms) const = 0;
};

struct PoolStats {
  uint32_t idle = 0;
  uint32_t active = 0;  // held by a client or running an internal statement
  uint32_t connecting = 0;
  uint32_t waiting_clients = 0;  // in the queue, or held by the gate
  uint64_t connections_opened = 0;
  uint64_t connect_failures = 0;
};

class Pool {
 public:
  enum class Release {
    kClean,  // the holder left it clean: straight back to idle
    kReset,  // run DISCARD ALL first (session pooling)
    kClose,  // state unknown: close it
  };

  Pool(LoopContext& context, ServerEndpoint endpoint, PoolSettings settings);
  ~Pool();
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  const ServerEndpoint& endpoint() const { return endpoint_; }
  // Where this pool reports its connection counts (refreshed by sweep()) and wait times; the
  // cells must outlive the pool.
  void setMetrics(PoolMetrics* metrics) { metrics_ = metrics; }

  // Hands a connection to `waiter`, now (before returning) or later. A waiter that goes away
  // first must call cancelWait(). With a gate set, the gate may hold the waiter back or refuse it.
  void acquire(PoolWaiter* waiter, uint64_t now_ms);
  // Null: every waiter is admitted (the hot path asks nothing). The gate must outlive the pool.
  void setGate(PoolGate* gate) { gate_ = gate; }
  // The gate may have opened: the waiters it held ask it again, in the order they came.
  void admitHeld(uint64_t now_ms);
  void cancelWait(PoolWaiter* waiter);
  void release(ServerConnection* server, Release how, uint64_t now_ms);

  // Timeouts: connect, query wait, idle, lifetime; and topping up min_idle.
  void sweep(uint64_t now_ms);
  // Closes every connection (idle now, held ones as soon as released).
  void closeAll();
  // A reload changed this pool's server or settings: close idle connections now and the others
  // when released; clients already waiting are still served. Deletable once drained().
  void drain();
  bool draining() const { return draining_; }
  bool drained() const { return all_.empty() && waiters_.empty() && held_.empty(); }
  // RECONNECT: every connection open now is closed instead of being reused, idle ones at once, the
  // others when released (or when their login completes); new ones are opened as needed. Holders
  // are not disturbed.
  void reconnect();
  // Whether `server` is to be closed when released (PgBouncer's close_needed).
  bool closeNeeded(const ServerConnection* server) const {
    return server->id() < retire_before_id_ || draining_ || closing_all_;
  }
  // A reload changed only timeouts: they apply from now on.
  void updateSettings(const PoolSettings& settings) { settings_ = settings; }

  // The parameters the server reported at login (from the most recent login), for clients' logins.
  const ServerParameters& serverParameters() const { return server_parameters_; }
  PoolStats stats() const;
  // For deadlock detection: whether only a holder giving a connection back can serve the waiters,
  // and who holds each connection.
  PoolWaitState waitState() const;
  size_t size() const { return all_.size(); }
  // For the admin console (SHOW SERVERS, SHOW POOLS, SHOW SHARDS).
  const PoolSettings& settings() const { return settings_; }
  const std::unordered_set<ServerConnection*>& connections() const { return all_; }
  uint64_t oldestWaitStartMs() const {
    return waiters_.empty() ? 0 : waiters_.front()->wait_started_ms_;
  }
  bool lastLoginFailed() const { return last_login_failed_; }
  // A client's login may be answered from serverParameters() without a connection of its own: a
  // server has logged in, the latest attempt did not fail, and no admin command holds logins back.
  bool answersLoginsWithoutServer() const {
    return gate_ == nullptr && !server_parameters_.empty() && !last_login_failed_;
  }
  // The most recent login failed, less than `window_ms` ago.
  bool loginFailedWithin(uint64_t now_ms, uint64_t window_ms) const {
    return last_login_failed_ && now_ms - last_login_failed_at_ms_ < window_ms;
  }

  // From ServerConnection.
  void onServerLogin(ServerConnection* server, const Status& status);
  void onServerClosed(ServerConnection* server);

 private:
  void openConnection(uint64_t now_ms);
  void handOut(ServerConnection* server, uint64_t now_ms);
  void makeIdle(ServerConnection* server, uint64_t now_ms);
  void serveWaiters(uint64_t now_ms);
  void retire(ServerConnection* server);
  // Asks the gate about `waiter`; false when it was held back or refused.
  bool passGate(PoolWaiter* waiter, uint64_t now_ms);

  LoopContext& context_;
  ServerEndpoint endpoint_;
  PoolSettings settings_;
  uint64_t next_id_ = 1;
  std::unordered_set<ServerConnection*> all_;
  std::vector<ServerConnection*>
      idle_;  // most recently used last (LIFO keeps few connections warm)
  std::deque<PoolWaiter*> waiters_;
  PoolGate* gate_ = nullptr;
  std::deque<PoolWaiter*> held_;  // held back by the gate
  // Connections with a lower id were open at the last RECONNECT: closed when released. Ids grow
  // (next_id_), so this one number marks them all without a flag per connection.
  uint64_t retire_before_id_ = 0;
  uint32_t connecting_ = 0;
  bool closing_all_ = false;
  bool draining_ = false;
  bool last_login_failed_ = false;  // the most recent login attempt failed (server down?)
  uint64_t last_login_failed_at_ms_ = 0;
  ServerParameters server_parameters_;
  uint64_t connections_opened_ = 0;
  uint64_t connect_failures_ = 0;
  PoolMetrics* metrics_ = nullptr;
  PoolStats published_;  // what metrics_ holds of this pool's counts
  void publishMetrics(const PoolStats& now);
};

uint64_t monotonicMs();

}  // namespace shardgate::backends
