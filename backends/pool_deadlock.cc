// Deadlocks between clients that wait for each other's pooled connections.
#include "backends/pool_deadlock.h"

#include <algorithm>
#include <unordered_set>

namespace shardgate::backends {

std::vector<ConnectionHolder*> deadlockedHolders(const std::vector<PoolWaitState>& pools) {
  // Start from every exhausted pool as stuck and strike out, until nothing changes, each pool
  // with a holder that is not waiting on a pool still thought stuck: what is left cannot move.
  std::unordered_set<const Pool*> stuck;
  for (const PoolWaitState& p : pools) {
    if (p.exhausted && !p.holders.empty()) stuck.insert(p.pool);
  }
  std::vector<const Pool*> awaited;
  auto blocked = [&](const ConnectionHolder* holder) {
    if (holder == nullptr) return false;
    awaited.clear();
    holder->awaitedPools(awaited);
    return std::any_of(awaited.begin(), awaited.end(),
                       [&](const Pool* pool) { return stuck.count(pool) > 0; });
  };
  for (bool changed = true; changed && !stuck.empty();) {
    changed = false;
    for (const PoolWaitState& p : pools) {
      if (stuck.count(p.pool) == 0) continue;
      if (!std::all_of(p.holders.begin(), p.holders.end(), blocked)) {
        stuck.erase(p.pool);
        changed = true;
      }
    }
  }
  std::vector<ConnectionHolder*> holders;
  for (const PoolWaitState& p : pools) {
    if (stuck.count(p.pool) == 0) continue;
    for (ConnectionHolder* holder : p.holders) {
      if (std::find(holders.begin(), holders.end(), holder) == holders.end()) {
        holders.push_back(holder);
      }
    }
  }
  return holders;
}

}  // namespace shardgate::backends
