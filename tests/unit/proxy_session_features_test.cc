// sessionEffectsOf: which statements pin a session, change or reset its settings, or use SQL
// prepared statements; and that the shortcut for plain statements never misses one.
#include "proxy/session_features.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace shardgate::proxy {
namespace {

std::string verdict(std::string_view sql) {
  const SessionEffects e = sessionEffectsOf(sql);
  if (!e.pin_reason.empty()) return "pin: " + e.pin_reason;
  if (e.sql_prepared) return "prepared";
  if (e.resets_all) return "resets all";
  if (!e.resets.empty()) return "resets " + e.resets.front();
  if (!e.changes.empty()) return "changes " + e.changes.front().name;
  return "none";
}

TEST(SessionEffects, PlainStatementsHaveNone) {
  for (const char* sql :
       {"SELECT abalance FROM pgbench_accounts WHERE aid = 42;", "select 1",
        "  UPDATE t SET x = 1 WHERE id = 2", "INSERT INTO t VALUES (1)", "-- a comment\nSELECT 1",
        "/* block */ SELECT 1", "(SELECT 1)", "SELECT 'set x = 1; listen y'", "SELECT 1;  \n",
        "BEGIN", "COMMIT", "SET LOCAL shardgate.read_preference = replica"}) {
    EXPECT_EQ(verdict(sql), "none") << sql;
  }
}

// SET LOCAL, SET CONSTRAINTS and SET TRANSACTION end with their transaction (the session keeps
// nothing), but a shard that joins the transaction later runs them too: kept as kLocal, named by
// the command, with the client's text and a newline (a trailing -- comment cannot swallow what is
// replayed after it) -- without a parse. In a query that is parsed anyway, deparsed.
TEST(SessionEffects, TransactionScopedSettingsAreKeptForTheTransaction) {
  struct Case {
    const char* sql;
    const char* command;
    const char* statement;
  };
  for (const Case& c :
       {Case{"SET LOCAL statement_timeout = 5 -- why", "SET LOCAL",
             "SET LOCAL statement_timeout = 5 -- why\n"},
        Case{"set local TimeZone to 'a;b';", "SET LOCAL", "set local TimeZone to 'a;b'\n"},
        Case{"SET CONSTRAINTS ALL DEFERRED", "SET CONSTRAINTS", "SET CONSTRAINTS ALL DEFERRED\n"},
        Case{"SET TRANSACTION READ ONLY", "SET TRANSACTION", "SET TRANSACTION READ ONLY\n"},
        Case{"SET search_path = a; SET LOCAL work_mem = '7MB'", "SET LOCAL",
             "SET LOCAL work_mem TO \"7MB\""}}) {
    const SessionEffects e = sessionEffectsOf(c.sql);
    ASSERT_FALSE(e.changes.empty()) << c.sql;
    const SettingChange& local = e.changes.back();
    EXPECT_EQ(local.kind, SettingChange::Kind::kLocal) << c.sql;
    EXPECT_EQ(local.name, c.command) << c.sql;
    EXPECT_EQ(local.statement, c.statement) << c.sql;
    EXPECT_TRUE(e.pin_reason.empty() && !e.resetsAnything()) << c.sql;
  }
  EXPECT_EQ(verdict("RESET TRANSACTION"), "none");  // an error in Postgres; nothing to keep
}

// Each of these takes the full scan: the shortcut must not answer "none" for any of them.
TEST(SessionEffects, ShortcutMissesNothing) {
  EXPECT_EQ(verdict("LISTEN jobs"), "pin: LISTEN");
  EXPECT_EQ(verdict("  -- c\n  listen jobs"), "pin: LISTEN");
  EXPECT_EQ(verdict("/* c */ LISTEN jobs"), "pin: LISTEN");
  EXPECT_EQ(verdict("SELECT pg_advisory_lock(1)"), "pin: session advisory lock");
  EXPECT_EQ(verdict("select PG_TRY_ADVISORY_LOCK(1)"), "pin: session advisory lock");
  EXPECT_EQ(verdict("SELECT * INTO TEMP t FROM x"), "pin: temporary table");
  EXPECT_EQ(verdict("select * into temporary t from x"), "pin: temporary table");
  EXPECT_EQ(verdict("CREATE TEMP TABLE t (a int)"), "pin: temporary table");
  EXPECT_EQ(verdict("CREATE OR REPLACE TEMP VIEW v AS SELECT 1"), "pin: temporary table");
  EXPECT_EQ(verdict("create or replace temporary view v as select 1"), "pin: temporary table");
  EXPECT_EQ(verdict("CREATE TABLE pg_temp.t (a int)"), "pin: pg_temp object");
  EXPECT_EQ(verdict("CREATE FUNCTION PG_TEMP.f() RETURNS int LANGUAGE sql AS 'SELECT 1'"),
            "pin: pg_temp object");
  EXPECT_EQ(verdict("DECLARE c CURSOR WITH HOLD FOR SELECT 1"), "pin: WITH HOLD cursor");
  EXPECT_EQ(verdict("SELECT 1; LISTEN jobs"), "pin: LISTEN");
  EXPECT_EQ(verdict("SELECT ';'; LISTEN jobs"), "pin: LISTEN");
  EXPECT_EQ(verdict("PREPARE p AS SELECT 1"), "prepared");
  EXPECT_EQ(verdict("execute p"), "prepared");
  EXPECT_EQ(verdict("DISCARD ALL"), "resets all");
  EXPECT_EQ(verdict("RESET TimeZone"), "resets timezone");
  EXPECT_EQ(verdict("SET search_path = app"), "changes search_path");
  EXPECT_EQ(verdict("SELECT 1; SET search_path = app"), "changes search_path");
  // Mixed case, the word at the very end, and a ';' that only ends the text.
  EXPECT_EQ(verdict("SELECT Pg_AdViSoRy_LoCk(1);"), "pin: session advisory lock");
  EXPECT_EQ(verdict("SELECT a INTO tEmP"), "pin: temporary table");
  EXPECT_EQ(verdict("SELECT 1 ;; \n"), "none");
  EXPECT_EQ(verdict("SELECT 1;\x1b LISTEN jobs"), "pin: LISTEN");
}

// The shortcut reads sixteen bytes at a time: every word at every offset, blocks and tail.
TEST(SessionEffects, ShortcutFindsWordsAtEveryOffset) {
  for (size_t pad = 0; pad < 40; ++pad) {
    const std::string spaces(pad, ' ');
    SCOPED_TRACE(pad);
    EXPECT_EQ(verdict("SELECT " + spaces + "pg_advisory_lock(1)"), "pin: session advisory lock");
    EXPECT_EQ(verdict("SELECT " + spaces + "PG_ADVISORY_LOCK(1)"), "pin: session advisory lock");
    EXPECT_EQ(verdict("SELECT a INTO " + spaces + "TeMp t"), "pin: temporary table");
    EXPECT_EQ(verdict("SELECT 1" + spaces + "; LISTEN jobs"), "pin: LISTEN");
    EXPECT_EQ(verdict("SELECT " + spaces + "SET_CONFIG('a.b', 'c', false)"),
              "pin: set_config() of a session setting");
    EXPECT_EQ(verdict("SELECT abalance FROM t WHERE a = 1" + spaces + ";"), "none");
  }
}

// Postgres's quoting: what hides inside a nested comment, an E'' string with an escaped quote or a
// dollar-quoted string is no statement, so it neither pins nor resets a setting; a statement after
// such text still counts.
TEST(SessionEffects, QuotedAndCommentedTextIsNoStatement) {
  EXPECT_EQ(verdict("/* a /* b */ RESET TimeZone; */ SELECT 1"), "none");
  EXPECT_EQ(verdict("SELECT E'\\'; RESET TimeZone; --'"), "none");
  EXPECT_EQ(verdict("SELECT $$; RESET TimeZone; $$"), "none");
  EXPECT_EQ(verdict("SELECT $q$ $$; LISTEN x; $q$"), "none");
  EXPECT_EQ(verdict("/* a /* b */ c */ LISTEN jobs"), "pin: LISTEN");
  EXPECT_EQ(verdict("SELECT E'\\''; RESET TimeZone"), "resets timezone");
  EXPECT_EQ(verdict("SELECT $$x$$; RESET TimeZone"), "resets timezone");
}

// A COMMIT, ROLLBACK or savepoint statement settles only the changes before it in the string:
// each change and such statement says which statement it is, counted as Postgres runs them (no
// empty statements).
std::vector<std::pair<uint32_t, planner::TransactionAction>> controlsOf(const SessionEffects& e) {
  std::vector<std::pair<uint32_t, planner::TransactionAction>> out;
  for (const auto& c : e.controls) out.emplace_back(c.statement_index, c.action);
  return out;
}

TEST(SessionEffects, ChangesAndTransactionStatementsKnowTheirPlaces) {
  using Action = planner::TransactionAction;
  using Controls = std::vector<std::pair<uint32_t, Action>>;
  const SessionEffects e = sessionEffectsOf(
      "SET work_mem = '9MB'; SAVEPOINT s1; /* c */ ; SET LOCAL lock_timeout = 1;; savepoint s2; "
      "RESET work_mem; ROLLBACK TO s1; commit; SET work_mem = 1");
  ASSERT_EQ(e.changes.size(), 4u);
  EXPECT_EQ(e.changes[0].statement_index, 0u);
  EXPECT_EQ(e.changes[1].statement_index, 2u);  // SET LOCAL
  EXPECT_EQ(e.changes[2].statement_index, 4u);  // RESET work_mem
  EXPECT_EQ(e.changes[3].statement_index, 7u);
  EXPECT_EQ(controlsOf(e), (Controls{{1, Action::kSavepoint},
                                     {3, Action::kSavepoint},
                                     {5, Action::kRollbackTo},
                                     {6, Action::kCommit}}));
  // Without a parse (only a transaction-scoped change), the same count.
  const SessionEffects lexical =
      sessionEffectsOf(" ; SAVEPOINT a; SET LOCAL work_mem = 1; ABORT; release a; END");
  ASSERT_EQ(lexical.changes.size(), 1u);
  EXPECT_EQ(lexical.changes[0].statement_index, 1u);
  EXPECT_EQ(controlsOf(lexical), (Controls{{0, Action::kSavepoint},
                                           {2, Action::kRollback},
                                           {3, Action::kRelease},
                                           {4, Action::kCommit}}));
}

TEST(SessionEffects, TransactionControlOfAStatement) {
  using Action = planner::TransactionAction;
  EXPECT_EQ(transactionControlOf("COMMIT"), Action::kCommit);
  EXPECT_EQ(transactionControlOf("  end work"), Action::kCommit);
  EXPECT_EQ(transactionControlOf("commit and chain"), Action::kCommit);
  EXPECT_EQ(transactionControlOf("COMMIT PREPARED 'x'"), Action::kNone);
  EXPECT_EQ(transactionControlOf("ROLLBACK"), Action::kRollback);
  EXPECT_EQ(transactionControlOf("/* why */ abort;"), Action::kRollback);
  EXPECT_EQ(transactionControlOf("ROLLBACK PREPARED 'x'"), Action::kNone);
  EXPECT_EQ(transactionControlOf("rollback to s"), Action::kRollbackTo);
  EXPECT_EQ(transactionControlOf("ROLLBACK WORK TO SAVEPOINT s"), Action::kRollbackTo);
  EXPECT_EQ(transactionControlOf("ROLLBACK TRANSACTION TO a_savepoint_with_a_long_name"),
            Action::kRollbackTo);
  EXPECT_EQ(transactionControlOf("ROLLBACK TO a_savepoint_with_a_long_name"), Action::kRollbackTo);
  EXPECT_EQ(transactionControlOf("SAVEPOINT a_savepoint_with_a_long_name"), Action::kSavepoint);
  EXPECT_EQ(transactionControlOf("-- c\nRELEASE SAVEPOINT s"), Action::kRelease);
  for (const char* sql : {"SELECT 1", "SET x = 1", "savepoints", "ends", "", "   ", "/* open",
                          "rollbacks", "abortive", "CREATE TABLE commit (a int)", "rollback_x"}) {
    EXPECT_EQ(transactionControlOf(sql), Action::kNone) << sql;
  }
}

// set_config(name, value, false) changes the setting for the session where it runs, with a value
// shardgate does not see (often computed): the session keeps its connection, so the setting
// reaches no other client (the row-level-security "current tenant" pattern). Only a literal true
// as is_local keeps the change inside the transaction.
TEST(SessionEffects, SessionLevelSetConfigPins) {
  for (const char* sql :
       {"SELECT set_config('app.tenant', '42', false)",
        "select pg_catalog.set_config('search_path', '', false);",
        "SELECT set_config('app.tenant', $1, $2)", "SELECT set_config('a.b', 'c', is_local) FROM t",
        "SELECT set_config('a.b', 'c', 'off')", "SELECT set_config('a.b', 'c', /* true */ false)",
        "SELECT set_config('a.b', f(1, 2), false)",
        "SELECT 1, SET_CONFIG ( 'a.b' , 'c' , 0::bool )",
        "SELECT set_config('a.b', 'c', true), set_config('d.e', 'f', false)",
        "SELECT set_config('a.b', 'c')", "SELECT set_config('a.b', 'c', true"}) {
    EXPECT_EQ(verdict(sql), "pin: set_config() of a session setting") << sql;
  }
  for (const char* sql : {"SELECT set_config('request.jwt.claims', $1, true)",
                          "SELECT set_config('a.b', 'c', TRUE), set_config('d.e', 'f', 't')",
                          "select set_config('a.b', 'x,y)', 'on' /* local */)",
                          "SELECT current_setting('a.b')", "SELECT 'set_config(a, b, false)'",
                          "SELECT my_set_config('a', 'b', false)", "SELECT set_configuration(1)"}) {
    EXPECT_EQ(verdict(sql), "none") << sql;
  }
}

// What the lexical scan must not miss behind other syntax: a quoted function name, EXPLAIN
// ANALYZE running a CREATE TEMP, and DO blocks, whose bodies are literals.
TEST(SessionEffects, SessionStateBehindQuotesExplainAndDoPins) {
  EXPECT_EQ(verdict("SELECT \"pg_advisory_lock\"(4242)"), "pin: session advisory lock");
  EXPECT_EQ(verdict("SELECT pg_catalog.\"pg_try_advisory_lock\"(1)"), "pin: session advisory lock");
  EXPECT_EQ(verdict("SELECT \"set_config\"('search_path', 'x', false)"),
            "pin: set_config() of a session setting");
  EXPECT_EQ(verdict("SELECT \"set_config\"('search_path', 'x', true)"), "none");
  EXPECT_EQ(verdict("EXPLAIN ANALYZE CREATE TEMP TABLE shadow AS SELECT 1"),
            "pin: temporary table");
  EXPECT_EQ(verdict("explain (analyze, buffers, verbose) create temporary table t as select 1"),
            "pin: temporary table");
  const std::string in_do =
      "pin: DO block with temporary objects, advisory locks, set_config or LISTEN";
  EXPECT_EQ(verdict("DO $$BEGIN CREATE TEMP TABLE t (x int); END$$"), in_do);
  EXPECT_EQ(verdict("DO $$BEGIN PERFORM pg_advisory_lock(1); END$$"), in_do);
  EXPECT_EQ(verdict("do 'begin execute ''LISTEN jobs''; end'"), in_do);
  EXPECT_EQ(verdict("DO LANGUAGE plpgsql $b$BEGIN PERFORM set_config('a.b', 'c', false); END$b$"),
            in_do);
  EXPECT_EQ(verdict("DO $$BEGIN UPDATE t SET x = 1; END$$"), "none");
  EXPECT_EQ(verdict("EXPLAIN ANALYZE SELECT * FROM temps"), "none");
  EXPECT_EQ(verdict("SELECT \"advisory\" FROM t"), "none");
}

// Every spelling of "back to the session's default" of a reported setting.
TEST(SessionEffects, ResetsOfReportedSettingsInEverySpelling) {
  for (const char* sql :
       {"RESET TimeZone", "SET TimeZone TO DEFAULT", "SET TIME ZONE DEFAULT", "SET TIME ZONE LOCAL",
        "set session time zone local", "SET SESSION TIME ZONE DEFAULT",
        "SET SESSION TimeZone = DEFAULT", "SET SESSION TimeZone TO DEFAULT"}) {
    EXPECT_EQ(verdict(sql), "resets timezone") << sql;
  }
  EXPECT_EQ(verdict("SET TIME ZONE 'UTC'"), "none");
  EXPECT_EQ(verdict("SET SESSION DateStyle TO DEFAULT"), "resets datestyle");
}

// EXECUTE inside EXPLAIN or CREATE TABLE ... AS names a client's statement too.
TEST(SessionEffects, ExecuteInsideExplainOrCreateTableAsIsRenamed) {
  EXPECT_EQ(verdict("EXPLAIN ANALYZE EXECUTE p(41)"), "prepared");
  EXPECT_EQ(verdict("explain (costs off) execute p"), "prepared");
  EXPECT_EQ(verdict("CREATE TABLE t AS EXECUTE p(1)"), "prepared");
  EXPECT_EQ(verdict("EXPLAIN SELECT 1"), "none");
}

TEST(SessionEffects, WordsThatOnlyLookAlikeDoNotPin) {
  // "temp" and "advisory" inside other words or literals send the statement to the full scan,
  // which finds nothing.
  EXPECT_EQ(verdict("SELECT temperature FROM readings"), "none");
  EXPECT_EQ(verdict("SELECT 'pg_advisory_lock(1)'"), "none");
  EXPECT_EQ(verdict("SELECT advisory_notes FROM t"), "none");
  EXPECT_EQ(verdict("SELECT to_regclass('pg_temp.t') IS NULL"), "none");
  EXPECT_EQ(verdict("SELECT pg_temporary FROM t"), "none");
  EXPECT_EQ(verdict("CREATE OR REPLACE VIEW temps AS SELECT 1"), "none");
}

}  // namespace
}  // namespace shardgate::proxy
