// SQL-level PREPARE / EXECUTE / DEALLOCATE under transaction pooling: client names map to the
// same shared server-side statements as protocol-level ones (Postgres keeps both in one
// namespace), so a statement prepared one way can be used the other way too.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "backends/prepared_statements.h"
#include "common/result.h"

namespace shardgate::proxy {

using ClientStatements =
    std::unordered_map<std::string, std::shared_ptr<backends::PreparedStatement>>;

// What to do with a simple Query that uses PREPARE, EXECUTE or DEALLOCATE.
struct SqlPreparedPlan {
  enum class Action {
    kForward,      // send `sql` (rewritten to server names) after preparing `needed` on the server
    kAnswer,       // answer with `tag` without asking the server (already prepared / forgotten)
    kPassThrough,  // send the client's text unchanged (unknown names: the server gives the error)
    kPin,          // a shape shardgate does not rewrite: keep the session on its connection
  };
  Action action = Action::kPassThrough;
  std::string sql;
  std::string tag;  // kAnswer: the CommandComplete tag
  // Statements the server must have before `sql` runs.
  std::vector<std::shared_ptr<backends::PreparedStatement>> needed;
  // kForward of a PREPARE: the client name it defines, and the statement behind it.
  std::string defines;
  std::shared_ptr<backends::PreparedStatement> defined;
  // DEALLOCATE of a known name: the client name to forget.
  std::string forgets;
  std::string pin_reason;
};

// Plans a Query. `statements` are the client's (read only here); `server_has` tells whether the
// connection that will run it already has a statement.
SqlPreparedPlan planSqlPrepared(std::string_view sql, const ClientStatements& statements,
                                backends::StatementRegistry& registry, uint64_t scope,
                                const std::function<bool(uint64_t)>& server_has);

}  // namespace shardgate::proxy
