// Deadlocks through row and table locks that span shards: a client's transaction holds locks on
// one shard's server and waits for a lock on another's, where a second client's transaction
// waits in turn for the first. Each server sees only one waiter, so its own deadlock detector
// never finds the cycle; this puts the servers' lock waits together with which backends belong
// to one client.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace shardgate::backends {

// A backend of a Postgres server. Pids are unique per server, so the server is part of the name
// (ServerEndpoint::where(): two shards on one server share its pids).
struct BackendRef {
  std::string server;
  int32_t pid = 0;
  bool operator==(const BackendRef&) const = default;
};

// The server connections one client session holds: the backends of its transaction on each
// shard (only sessions holding two or more can join shards into a cycle).
struct BackendHolder {
  uint32_t worker = 0;   // the worker thread the session runs on
  uint64_t session = 0;  // its id
  std::vector<BackendRef> backends;
};

// A backend waiting for a lock (a row of the server's pg_locks that is not granted), and the
// backends that block it (pg_blocking_pids).
struct LockWait {
  BackendRef waiter;
  std::vector<int32_t> blockers;  // pids on the waiter's server
  uint64_t waited_ms = 0;         // since pg_locks.waitstart
};

struct LockDeadlock {
  uint32_t worker = 0;
  uint64_t session = 0;
  BackendRef waiting;  // the victim's backend whose lock wait is to end
  uint64_t waited_ms = 0;
  // One line per wait of the cycle, from the victim's on: "Process P on S waits for a lock
  // held by process Q" (each with its shardgate client, for a session holding several).
  std::vector<std::string> cycle;
};

// A cycle of lock waits that no server sees whole: it passes through a session that is waited
// for on one of its backends and waits on another (of another server, or of another database of
// the same server). Its victim is the session whose wait Postgres would have failed had it seen
// the whole cycle: each wait checks for a deadlock once, `timeout_ms` after it began, so the
// victim is the first member whose check comes after the cycle closed (after the last wait of it
// began), once that check is due; when that member is a backend of no session of ours, the last
// of ours to begin waiting. nullopt when there is no such cycle or that check is still to come.
// A cycle a server sees whole is left to that server's own detector.
std::optional<LockDeadlock> findLockDeadlock(const std::vector<BackendHolder>& holders,
                                             const std::vector<LockWait>& waits,
                                             uint64_t timeout_ms);

}  // namespace shardgate::backends
