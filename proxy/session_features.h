// What a statement does to its session beyond its transaction: settings it changes (which
// shardgate re-applies on the next server connection under transaction pooling) and features that
// only work while the session keeps one server connection (LISTEN, session advisory locks,
// WITH HOLD cursors, temporary tables, SQL PREPARE, SET ROLE...), which pin the client to it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "planner/query_analysis.h"

namespace shardgate::proxy {

struct SettingChange {
  // kLocal: SET LOCAL, SET CONSTRAINTS, SET TRANSACTION: it ends with its transaction, but a shard
  // that joins the transaction later must run it too.
  enum class Kind { kSet, kReset, kResetAll, kLocal };
  Kind kind = Kind::kSet;
  // The setting, lower-case (empty for kResetAll); kLocal: the command, as Postgres names it in
  // its warnings ("SET LOCAL", "SET CONSTRAINTS", "SET TRANSACTION").
  std::string name;
  // kSet: the statement that sets it, as deparsed ("SET search_path TO a"); kLocal: the statement
  // as the client wrote it, then a newline (deparsed when the query had to be parsed anyway).
  std::string statement;
  // Its statement's place in the query string (0-based; empty statements are not counted, as
  // Postgres runs none for them).
  uint32_t statement_index = 0;
};

struct SessionEffects {
  std::string pin_reason;  // non-empty: the session must keep its server connection
  std::vector<SettingChange> changes;
  // A statement is PREPARE, EXECUTE or DEALLOCATE: under transaction pooling the names are
  // shardgate's to manage.
  bool sql_prepared = false;
  // RESET (ALL), SET ... TO DEFAULT or DISCARD ALL: Postgres resets to the startup packet's
  // values, which a pooled connection never saw, so shardgate must put them back.
  bool resets_all = false;
  std::vector<std::string> resets;  // names (lower-case) of single settings reset
  // The statements that end the transaction or act on a savepoint (transactionControlOf), by
  // their places in the string (statement_index): settings changed before one are settled by
  // it, those after it are not.
  struct Control {
    uint32_t statement_index = 0;
    planner::TransactionAction action = planner::TransactionAction::kNone;
  };
  std::vector<Control> controls;
  bool resetsAnything() const { return resets_all || !resets.empty(); }
  bool empty() const {
    return pin_reason.empty() && changes.empty() && !sql_prepared && !resetsAnything();
  }
};

// A cheap lexical scan first (words outside literals and comments, per statement); only a string
// that SETs or RESETs a setting Postgres does not report is parsed. Errs towards pinning: a false
// pin costs pooling efficiency, a missed one would lose session state.
SessionEffects sessionEffectsOf(std::string_view sql);

// The word at `at` (after space and comments), lower-cased into `buffer`, `at` moved past it;
// empty when there is none, or when it is longer than `longest` letters (then it is none of the
// keywords a caller looks for).
std::string_view nextKeyword(std::string_view sql, size_t& at, char* buffer, size_t longest);

// What a statement does to the transaction block, by its first words: kCommit (COMMIT, END),
// kRollback (ROLLBACK, ABORT), kRollbackTo, kSavepoint, kRelease; kNone for anything else, COMMIT
// PREPARED and ROLLBACK PREPARED included (they end no transaction of the session's). Cheap:
// most statements are judged by their first word alone.
planner::TransactionAction transactionControlOf(std::string_view sql);

}  // namespace shardgate::proxy
