// findLockDeadlock: lock waits of several servers, joined by the sessions that hold backends on
// more than one, searched for a cycle.
#include "backends/lock_deadlock.h"

#include <algorithm>
#include <cstdint>
#include <deque>
#include <map>
#include <utility>

namespace shardgate::backends {

namespace {

// The wait-for graph: a node per session that holds backends on several servers (nodes
// 0..holders-1), and one per other backend seen in a wait.
class WaitGraph {
 public:
  WaitGraph(const std::vector<BackendHolder>& holders, const std::vector<LockWait>& waits)
      : holders_(holders), out_(holders.size()) {
    for (size_t h = 0; h < holders.size(); ++h) {
      for (const BackendRef& backend : holders[h].backends) {
        node_of_.emplace(std::make_pair(backend.server, backend.pid), h);
      }
    }
    for (size_t w = 0; w < waits.size(); ++w) {
      const LockWait& wait = waits[w];
      size_t from = node(wait.waiter.server, wait.waiter.pid);
      for (int32_t blocker : wait.blockers) {
        size_t to = node(wait.waiter.server, blocker);
        if (to != from) out_[from].push_back(Edge{w, blocker, to});
      }
    }
  }

  struct Edge {
    size_t wait;      // index into the waits
    int32_t blocker;  // the pid waited for
    size_t to;
  };

  bool isHolder(size_t node) const { return node < holders_.size(); }
  size_t nodes() const { return out_.size(); }

  // The shortest cycle through `start` (its edges in order, the first leaving `start`); empty
  // if there is none.
  std::vector<Edge> cycleThrough(size_t start) const {
    std::vector<std::optional<std::pair<size_t, Edge>>> came_from(out_.size());  // (node, edge)
    std::deque<size_t> queue{start};
    std::vector<bool> seen(out_.size(), false);
    seen[start] = true;
    while (!queue.empty()) {
      size_t node = queue.front();
      queue.pop_front();
      for (const Edge& edge : out_[node]) {
        if (edge.to == start) {
          std::vector<Edge> cycle{edge};
          for (size_t at = node; at != start; at = came_from[at]->first) {
            cycle.push_back(came_from[at]->second);
          }
          return {cycle.rbegin(), cycle.rend()};
        }
        if (seen[edge.to]) continue;
        seen[edge.to] = true;
        came_from[edge.to] = std::make_pair(node, edge);
        queue.push_back(edge.to);
      }
    }
    return {};
  }

  // The session owning a backend, if one of the holders does.
  std::optional<size_t> holderOf(const std::string& server, int32_t pid) const {
    auto it = node_of_.find(std::make_pair(server, pid));
    if (it == node_of_.end() || !isHolder(it->second)) return std::nullopt;
    return it->second;
  }

 private:
  size_t node(const std::string& server, int32_t pid) {
    auto [it, added] = node_of_.emplace(std::make_pair(server, pid), out_.size());
    if (added) out_.emplace_back();
    return it->second;
  }

  const std::vector<BackendHolder>& holders_;
  std::map<std::pair<std::string, int32_t>, size_t> node_of_;
  std::vector<std::vector<Edge>> out_;
};

// "123", or "123 (shardgate client 7)" for a backend of a session holding several.
std::string describeBackend(const WaitGraph& graph, const std::vector<BackendHolder>& holders,
                            const std::string& server, int32_t pid) {
  std::string text = std::to_string(pid);
  if (auto holder = graph.holderOf(server, pid)) {
    text += " (shardgate client " + std::to_string(holders[*holder].session) + ")";
  }
  return text;
}

}  // namespace

std::optional<LockDeadlock> findLockDeadlock(const std::vector<BackendHolder>& holders,
                                             const std::vector<LockWait>& waits,
                                             uint64_t timeout_ms) {
  WaitGraph graph(holders, waits);
  std::optional<LockDeadlock> best;
  for (size_t start = 0; start < holders.size(); ++start) {
    std::vector<WaitGraph::Edge> cycle = graph.cycleThrough(start);
    // Postgres sees a cycle whose every session waits on the backend that blocks the one before;
    // it is hidden from it when a session is waited for on one backend and waits on another
    // (another server, or another database of the same one).
    bool hidden = false;
    for (size_t i = 0; i < cycle.size(); ++i) {
      const LockWait& into = waits[cycle[i].wait];
      const BackendRef waited_for{into.waiter.server, cycle[i].blocker};
      hidden = hidden || !(waits[cycle[(i + 1) % cycle.size()].wait].waiter == waited_for);
    }
    if (!hidden) continue;  // none, or a server's own (it finds those itself)
    // The cycle closed when its last wait began. A wait whose deadlock_timeout ran out before
    // that found no cycle then (Postgres checks each wait once); of the others, the first whose
    // timeout runs out finds it.
    uint64_t closed_for_ms = UINT64_MAX;
    for (const WaitGraph::Edge& edge : cycle) {
      closed_for_ms = std::min(closed_for_ms, waits[edge.wait].waited_ms);
    }
    // When that check is another client's (a backend of no session of ours, which shardgate
    // cannot cancel), the victim is the last of ours to begin waiting.
    std::optional<size_t> first;   // index into the cycle
    std::optional<size_t> latest;  // the same, for the fallback
    for (size_t i = 0; i < cycle.size(); ++i) {
      const LockWait& wait = waits[cycle[i].wait];
      if (!graph.holderOf(wait.waiter.server, wait.waiter.pid)) continue;
      if (!latest || waits[cycle[*latest].wait].waited_ms > wait.waited_ms) latest = i;
      if (wait.waited_ms > closed_for_ms + timeout_ms) continue;  // checked before it closed
      if (!first || waits[cycle[*first].wait].waited_ms < wait.waited_ms) first = i;
    }
    if (!first) first = latest;
    if (!first) continue;
    const LockWait& wait = waits[cycle[*first].wait];
    if (wait.waited_ms < timeout_ms) continue;  // its check is still to come
    if (best && best->waited_ms >= wait.waited_ms) continue;
    const size_t holder = *graph.holderOf(wait.waiter.server, wait.waiter.pid);
    LockDeadlock found;
    found.worker = holders[holder].worker;
    found.session = holders[holder].session;
    found.waiting = wait.waiter;
    found.waited_ms = wait.waited_ms;
    for (size_t k = 0; k < cycle.size(); ++k) {
      const WaitGraph::Edge& edge = cycle[(*first + k) % cycle.size()];
      const BackendRef& waiter = waits[edge.wait].waiter;
      found.cycle.push_back("Process " +
                            describeBackend(graph, holders, waiter.server, waiter.pid) + " on " +
                            waiter.server + " waits for a lock held by process " +
                            describeBackend(graph, holders, waiter.server, edge.blocker));
    }
    best = std::move(found);
  }
  return best;
}

}  // namespace shardgate::backends
