// What the files that implement ClientSession share, and no other code includes: the parked
// connection of a transaction that spans shards, and the errors and statements several of them
// make.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "backends/pool.h"
#include "backends/server_connection.h"
#include "common/error.h"
#include "planner/query_router.h"
#include "proxy/client_session.h"

namespace shardgate::proxy {

// A connection of a transaction that spans shards, waiting while other shards run statements. It
// is the connection's sink, so that a connection that breaks while parked is noticed.
class ClientSession::ParkedServer final : public backends::ServerSink {
 public:
  ParkedServer(ClientSession& session, backends::ServerConnection* server, backends::Pool* pool,
               uint32_t shard)
      : session_(session), server(server), pool(pool), shard(shard) {
    server->detach();  // from the session or the leg that ran its last statement
    server->attach(this);
  }

  // Nothing of the client's is owed while parked; internal statements swallow their replies.
  void onServerBytes(std::string_view) override {}
  void onServerReadyForQuery(char) override {}
  void onServerLost(const Error& error) override {
    server = nullptr;
    session_.onParkedServerLost(this, error);  // destroys this
  }
  bool sinkCongested() const override { return false; }
  void onStatementFailed(const std::string&) override {}
  backends::ConnectionHolder* holder() override { return &session_; }
  void onServerCommandComplete(std::string_view) override {}
  void onServerErrorResponse() override {}
  void onServerCaughtUp() override {}
  void onServerParameterStatus(std::string_view) override {}

  ClientSession& session_;
  backends::ServerConnection* server;
  backends::Pool* pool;
  uint32_t shard;
};

// What Postgres answers every statement of a failed transaction but its end.
Error failedTransactionError();

// Postgres's error for a Bind of a named portal that exists (only the unnamed one is replaced).
Error duplicatePortal(std::string_view portal);

// "name" as an SQL identifier, quoted.
std::string quoteIdentifier(std::string_view name);

// The CommandComplete tag of a savepoint statement.
std::string_view savepointTag(planner::TransactionAction action);

// Runs ROLLBACK or ROLLBACK TO on `server`, and once more if a cancel stopped it: the cancel
// shardgate sends for a statement of a failed multi-shard run can reach the server after that
// statement ended. The rollback undoes that statement anyway.
void runRollbackPastLateCancel(backends::ServerConnection* server, std::string sql,
                               std::function<void(Status)> done);

// Rolls back `server`'s transaction (past a late cancel) and gives it back to `pool`: as `how` when
// the rollback left it idle, closed otherwise. It needs nothing of the session, which may be gone
// by the time the ROLLBACK ends.
void rollBackAndRelease(backends::ServerConnection* server, backends::Pool* pool,
                        backends::Pool::Release how);

}  // namespace shardgate::proxy
