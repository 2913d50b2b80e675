// The admin console: `psql dbname=shardgate` as an admin user gets PgBouncer's console commands
// (SHOW, RELOAD, PAUSE, RESUME, RECONNECT, KILL, DISABLE, ENABLE, SHUTDOWN...) instead of a
// database, with PgBouncer's column names.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/tcp_connection.h"

namespace shardgate::proxy {

class Worker;
struct WorkerSnapshot;

// The pseudo database name that selects the console (reserved by the config loader too).
inline constexpr std::string_view kAdminDatabaseName = "shardgate";

// One console session, owned by the ClientSession it took over. It lives on that session's
// worker loop; commands that need every worker's state post to each worker and finish when
// all have answered (meanwhile further input waits). Simple query protocol only.
class AdminConsole {
 public:
  AdminConsole(Worker& worker, TcpConnection& client, uint64_t session_id, std::string user);
  ~AdminConsole();
  AdminConsole(const AdminConsole&) = delete;
  AdminConsole& operator=(const AdminConsole&) = delete;

  // Sends what a client expects after authentication (parameters, ReadyForQuery).
  void start();
  // Client input once logged in; returns the bytes consumed (0 while a command is running).
  size_t onData(std::string_view data);

 private:
  // Runs one Query's text. The reply (rows or an error, then ReadyForQuery) is sent now or,
  // for commands that wait for the workers, later by finish().
  void runCommand(std::string_view text);
  void finish(std::string reply);
  void fail(std::string_view sqlstate, std::string message, std::string hint = {});

  void showHelp();
  void showVersion();
  void showConfig();
  void showLists();
  // Commands answered from every worker's snapshot.
  void withSnapshots(void (AdminConsole::*show)(const std::vector<WorkerSnapshot>&));
  void showDatabases(const std::vector<WorkerSnapshot>& snapshots);
  void showShards(const std::vector<WorkerSnapshot>& snapshots);
  void showPools(const std::vector<WorkerSnapshot>& snapshots);
  void showClients(const std::vector<WorkerSnapshot>& snapshots);
  void showServers(const std::vector<WorkerSnapshot>& snapshots);
  void showStats(const std::vector<WorkerSnapshot>& snapshots);
  void listsFrom(const std::vector<WorkerSnapshot>& snapshots);
  void reload();
  void pause(const std::string& database);
  void checkPaused(const std::string& database);
  void resume(const std::string& database);
  void reconnect(const std::string& database);
  void kill(const std::string& database);
  void killClient(uint64_t id);
  void setDisabled(const std::string& database, bool disabled);
  void shutdown();
  // Runs `each` on every worker, then answers with `tag` (a command that changes state only).
  void onEveryWorkerThenAnswer(std::function<void(Worker&)> each, std::string tag);

  std::vector<Worker*> allWorkers() const;

  Worker& worker_;
  TcpConnection& client_;
  uint64_t session_id_;
  std::string user_;
  bool busy_ = false;              // a command waits for the workers
  bool skipping_to_sync_ = false;  // an extended-protocol message was refused
  // Callbacks from other workers check this before touching the console (it may be gone).
  std::shared_ptr<AdminConsole*> self_;
  uv_timer_t* pause_timer_ = nullptr;  // PAUSE polls until running transactions end
  std::string pause_database_;
};

}  // namespace shardgate::proxy
