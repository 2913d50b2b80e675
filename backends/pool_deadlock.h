// Deadlocks between clients that wait for each other's pooled connections, which nothing but
// query_wait_timeout would otherwise end.
#pragma once

#include <cstdint>
#include <vector>

#include "common/error.h"

namespace shardgate::backends {

class Pool;

// Whoever holds pooled connections and may wait for more (a client session): what deadlock
// detection asks of the holder of a connection (ServerSink::holder()).
class ConnectionHolder {
 public:
  virtual ~ConnectionHolder() = default;
  // Appends the pools it waits on for a connection before it can go on (none: not waiting).
  virtual void awaitedPools(std::vector<const Pool*>& out) const = 0;
  // When its current wait began (monotonic ms; meaningful while it waits).
  virtual uint64_t waitingSinceMs() const = 0;
  // Ends its waits with `error`: it was chosen to break a deadlock.
  virtual void failWaits(const Error& error) = 0;
  // Which client session it is (a lock deadlock's victim is found by it: see lock_deadlock.h).
  virtual uint64_t holderId() const = 0;
};

// A pool as deadlock detection sees it.
struct PoolWaitState {
  const Pool* pool = nullptr;
  // No idle connection, none being opened, no room for another, and clients waiting: only a
  // holder giving a connection back lets a waiter go on.
  bool exhausted = false;
  // The holder of each of its connections; nullptr where none can be named (a connection logging
  // in, idle, or running shardgate's own statement), which will come free by itself.
  std::vector<ConnectionHolder*> holders;
};

// The holders caught in a deadlock: each holds a connection of an exhausted pool whose every
// connection is held by a holder waiting on such a pool, so none of them can go on until one
// gives up. Empty when there is none. (A holder waits on any one connection of a pool, and needs
// every pool it waits on: a pool is stuck while all its holders wait on some stuck pool; this
// finds the largest such set.)
std::vector<ConnectionHolder*> deadlockedHolders(const std::vector<PoolWaitState>& pools);

}  // namespace shardgate::backends
