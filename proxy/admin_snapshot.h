// What the admin console shows, gathered from every worker: per-worker snapshots of clients,
// server connections and pools, taken on each worker's own loop (no locks on the hot path).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "backends/pool.h"
#include "proxy/worker.h"

namespace shardgate::proxy {

struct ClientSnapshot {
  uint64_t id = 0;
  const void* ptr = nullptr;   // identifies the session (PgBouncer's ptr column)
  const void* link = nullptr;  // the server connection it holds, if any
  const void* pool = nullptr;  // the pool that connection (or its wait) belongs to
  std::string user;
  std::string database;
  // login (startup, authentication), active (holds a server), waiting (for a server),
  // paused (held by PAUSE), idle (between transactions), admin (on the admin console)
  std::string state;
  std::string addr;
  int port = 0;
  std::string local_addr;
  int local_port = 0;
  uint64_t connected_at_ms = 0;   // monotonic
  uint64_t waiting_since_ms = 0;  // monotonic: waiting for a server or held by PAUSE; 0 if not
  std::string application_name;
  std::string tls;  // "TLSv1.3/TLS_AES_256_GCM_SHA384", "" in plain text
  size_t prepared_statements = 0;
  std::string shard;  // the shard of the held (or last) server, "" if none
  bool in_transaction = false;
};

struct ServerSnapshot {
  const void* ptr = nullptr;
  const void* link = nullptr;  // the client session holding it, if any
  uint64_t id = 0;
  std::string pool_label;  // database/shard/role
  std::string state;       // login, idle, active, closed
  std::string addr;
  int port = 0;
  std::string local_addr;
  int local_port = 0;
  uint64_t created_at_ms = 0;    // monotonic
  uint64_t last_used_at_ms = 0;  // monotonic
  int32_t backend_pid = 0;
  std::string tls;  // as ClientSnapshot::tls
  size_t prepared_statements = 0;
  bool draining = false;      // its pool was replaced by a reload
  bool close_needed = false;  // closed when released (a reload or RECONNECT / KILL)
};

struct PoolSnapshot {
  std::string database;
  std::string user;
  uint32_t shard_index = 0;
  std::string shard;  // the shard's name
  std::string role;   // primary, replica0, replica1, ...
  std::string host;
  int port = 0;
  backends::PoolStats stats;
  uint32_t clients_active = 0;  // sessions holding one of its connections
  uint64_t oldest_wait_started_ms = 0;
  uint32_t max_size = 0;
  bool last_login_failed = false;
  std::vector<ServerSnapshot> servers;
};

struct WorkerSnapshot {
  uint32_t worker = 0;
  uint64_t now_ms = 0;  // monotonic, when taken
  std::vector<ClientSnapshot> clients;
  std::vector<PoolSnapshot> pools;            // the pools in use
  std::vector<ServerSnapshot> draining;       // connections of pools a reload replaced
  std::vector<std::string> paused_databases;  // "*" = all
  std::vector<std::string> disabled_databases;
  // From the worker's metric cells (proxy/metrics.h), by database: for SHOW STATS.
  std::map<std::string, uint64_t> transactions;
  std::map<std::string, uint64_t> queries;
};

// Takes `worker`'s snapshot; on its loop thread only.
WorkerSnapshot takeSnapshot(Worker& worker);

// Runs `each` on every worker's loop, then `done` with the results (in worker order) on `home`'s
// loop. A worker that has stopped never answers, and then `done` never runs: only the admin
// console uses this, and a stopping worker closes it anyway.
template <typename T>
void onEveryWorker(const std::vector<Worker*>& workers, Worker& home,
                   std::function<T(Worker&)> each, std::function<void(std::vector<T>)> done) {
  struct Gathering {
    std::mutex mutex;  // taken once per worker per admin command
    std::vector<T> results;
    size_t remaining;
    std::function<T(Worker&)> each;
    std::function<void(std::vector<T>)> done;
  };
  auto gathering = std::make_shared<Gathering>();
  gathering->results.resize(workers.size());
  gathering->remaining = workers.size();
  gathering->each = std::move(each);
  gathering->done = std::move(done);
  if (workers.empty()) {
    home.post([gathering] { gathering->done({}); });
    return;
  }
  Worker* home_worker = &home;
  for (size_t i = 0; i < workers.size(); ++i) {
    Worker* worker = workers[i];
    worker->post([gathering, worker, home_worker, i] {
      T result = gathering->each(*worker);
      bool last = false;
      {
        std::lock_guard lock(gathering->mutex);
        gathering->results[i] = std::move(result);
        last = --gathering->remaining == 0;
      }
      if (last) {
        home_worker->post([gathering] { gathering->done(std::move(gathering->results)); });
      }
    });
  }
}

}  // namespace shardgate::proxy
