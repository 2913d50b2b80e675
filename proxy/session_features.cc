// A lexical scan for session-level features: words outside literals and comments, per statement.
#include "proxy/session_features.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cctype>
#include <string>
#include <vector>

#include "common/ascii.h"
#include "common/sql_text.h"
#include "parser/node_helpers.h"
#include "parser/parser.h"
#include "proxy/session_settings.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace shardgate::proxy {

namespace {

// ASCII only, inline: this runs on every character of every simple Query (libc's isalnum and
// tolower are calls that consult the locale). Bytes past ASCII (identifiers in UTF-8) are word
// characters, as in Postgres's scanner.
constexpr std::array<bool, 256> kWordChars = [] {
  std::array<bool, 256> table{};
  for (int u = 0; u < 256; ++u)
    table[static_cast<size_t>(u)] = isSqlIdentCont(static_cast<char>(u));
  return table;
}();

bool isWordChar(char c) {
  return kWordChars[static_cast<unsigned char>(c)];
}

// What the scan keeps of one statement, without allocating: its first few words (lower-cased,
// truncated) and whether words that matter anywhere in it were seen.
class StatementWords {
 public:
  static constexpr size_t kKept = 6;  // SET SESSION TIME ZONE DEFAULT is five
  static constexpr size_t kWordLength = 32;

  void add(std::string_view word) {
    if (count_ >= kKept && !mayMatterLater(word.front())) {
      // Past the first words only a few matter (pg_advisory_lock..., WITH HOLD, INTO TEMP): the
      // rest, most words of a long statement, are not copied (every simple query is scanned).
      previous_ = Previous::kOther;
      ++count_;
      return;
    }
    char lowered[kWordLength];
    size_t n = std::min(word.size(), kWordLength);
    for (size_t i = 0; i < n; ++i) {
      lowered[i] = asciiLower(word[i]);
    }
    std::string_view w(lowered, n);
    noteFunctionName(w);
    if (w == "temp" || w == "temporary") temp_word_ = true;
    if (w == "execute") execute_word_ = true;
    // The session's temporary schema by name: CREATE TABLE pg_temp.t, CREATE FUNCTION pg_temp.f.
    if (w == "pg_temp" || w.substr(0, 8) == "pg_temp_") temp_schema_ = true;
    if (previous_ == Previous::kWith && w == "hold") with_hold_ = true;
    if (previous_ == Previous::kInto && (w == "temp" || w == "temporary")) into_temp_ = true;
    previous_ = w == "with" ? Previous::kWith : w == "into" ? Previous::kInto : Previous::kOther;
    if (count_ < kKept) {
      std::copy(lowered, lowered + n, words_[count_]);
      lengths_[count_] = n;
    }
    ++count_;
  }
  // The session-level functions, also when their name is a quoted identifier
  // ("pg_advisory_lock"(1)): `name` lower-cased.
  void noteFunctionName(std::string_view name) {
    if (name.substr(0, 16) == "pg_advisory_lock" || name.substr(0, 20) == "pg_try_advisory_lock") {
      advisory_lock_ = true;
    }
  }
  void clear() { *this = StatementWords(); }
  bool empty() const { return count_ == 0; }
  std::string_view at(size_t i) const {
    return i < std::min(count_, kKept) ? std::string_view(words_[i], lengths_[i])
                                       : std::string_view();
  }
  bool advisoryLock() const { return advisory_lock_; }
  bool withHold() const { return with_hold_; }
  bool intoTemp() const { return into_temp_; }
  bool tempSchema() const { return temp_schema_; }
  bool tempWord() const { return temp_word_; }  // TEMP or TEMPORARY anywhere
  bool executeWord() const { return execute_word_; }
  // A set_config() call that may change a setting for the session (see sessionSetConfigAt).
  void noteSessionSetConfig() { session_set_config_ = true; }
  bool sessionSetConfig() const { return session_set_config_; }

 private:
  enum class Previous { kOther, kWith, kInto };
  static bool mayMatterLater(char first) {
    const char c = asciiLower(first);
    return c == 'p' || c == 'w' || c == 'h' || c == 'i' || c == 't' || c == 'e';
  }
  char words_[kKept][kWordLength];
  size_t lengths_[kKept] = {};
  size_t count_ = 0;
  Previous previous_ = Previous::kOther;
  bool advisory_lock_ = false;
  bool with_hold_ = false;
  bool into_temp_ = false;
  bool temp_schema_ = false;
  bool temp_word_ = false;
  bool execute_word_ = false;
  bool session_set_config_ = false;
};

// Settings a session may change under transaction pooling: Postgres reports their value, so
// shardgate re-applies them on the next connection.
bool isReportedName(std::string_view name, std::string_view next) {
  if (name == "time" && next == "zone") return true;  // SET TIME ZONE
  if (name == "names") return true;                   // SET NAMES = client_encoding
  return isSyncedReportedSetting(name);
}

// Marker for a statement the parser must look at: a session-level SET/RESET of a setting
// Postgres does not report.
constexpr std::string_view kNeedsParse = "\x01parse";
// Marker for PREPARE / EXECUTE / DEALLOCATE.
constexpr std::string_view kSqlPrepared = "\x01prepared";
// Markers for resets: DISCARD ALL, and RESET x / SET x TO DEFAULT of a reported setting (the
// verdict is followed by the setting's name).
constexpr std::string_view kResetsAll = "\x01resets-all";
constexpr std::string_view kResetsReported = "\x01resets:";
// Marker for SET LOCAL / SET CONSTRAINTS / SET TRANSACTION, followed by that command's name: kept
// for the transaction (kLocal) as the client wrote it, without a parse (some applications send a
// SET LOCAL in every transaction).
constexpr std::string_view kTransactionScoped = "\x01transaction:";

std::string judgeStatement(const StatementWords& w) {
  std::string_view first = w.at(0);
  if (first == "listen") return "LISTEN";
  if ((first == "prepare" && w.at(1) != "transaction") || first == "execute" ||
      first == "deallocate") {
    return std::string(kSqlPrepared);
  }
  if (first == "declare" && w.withHold()) return "WITH HOLD cursor";
  if (first == "create") {
    size_t i = 1;
    if (w.at(i) == "or" && w.at(i + 1) == "replace") i += 2;  // CREATE OR REPLACE TEMP VIEW
    if (w.at(i) == "local" || w.at(i) == "global") ++i;
    if (w.at(i) == "temp" || w.at(i) == "temporary") return "temporary table";
  }
  // EXPLAIN ANALYZE CREATE TEMP TABLE ... AS runs the CREATE (its options may come first).
  if (first == "explain" && w.tempWord()) return "temporary table";
  // EXPLAIN EXECUTE p, CREATE TABLE t AS EXECUTE p: the client's statement name is renamed.
  if ((first == "explain" || first == "create") && w.executeWord()) {
    return std::string(kSqlPrepared);
  }
  if (first == "discard" && w.at(1) == "all") return std::string(kResetsAll);
  if (first == "set" || first == "reset") {
    size_t i = 1;
    // Inside its transaction only, but a shard that joins the transaction must run it too
    // (shardgate.* settings are shardgate's own: answered, never sent).
    if (first == "set" && w.at(i) == "local") {
      return w.at(i + 1) == "shardgate" ? "" : std::string(kTransactionScoped) + "SET LOCAL";
    }
    if (w.at(i) == "session" && w.at(i + 1) != "authorization") ++i;
    std::string_view name = w.at(i);
    if (first == "set" && i == 1 && (name == "transaction" || name == "constraints")) {
      return std::string(kTransactionScoped) +
             (name == "transaction" ? "SET TRANSACTION" : "SET CONSTRAINTS");
    }
    if (name == "transaction" || name == "constraints") return "";  // RESET of those: an error
    if (name == "role" || name == "session") return "SET ROLE / SESSION AUTHORIZATION";
    if (!isReportedName(name, w.at(i + 1))) return std::string(kNeedsParse);
    // SET TIME ZONE LOCAL is SET TIME ZONE DEFAULT: back to the session's startup value.
    const bool to_default = w.at(i + 1) == "default" || w.at(i + 2) == "default" ||
                            (name == "time" && w.at(i + 2) == "local");
    if (first == "reset" || to_default) {
      std::string_view canonical = name == "time"    ? "timezone"
                                   : name == "names" ? "client_encoding"
                                                     : name;
      return std::string(kResetsReported) + std::string(canonical);
    }
  }
  if (w.advisoryLock()) return "session advisory lock";
  if (w.intoTemp()) return "temporary table";
  if (w.tempSchema()) return "pg_temp object";
  if (w.sessionSetConfig()) return "set_config() of a session setting";
  return "";
}

// Whether the third argument of the set_config( call whose name ends just before `at` may be
// anything but true: is_local false, a parameter, an expression. Such a call changes the setting
// for the session, which shardgate does not see (the value is only known where it runs), so the
// session keeps its connection. A literal true (or 't', 'on', ...) keeps the change inside the
// transaction, which holds its connection anyway.
bool sessionSetConfigAt(std::string_view sql, size_t at) {
  if (!skipSqlSpaceAndComments(sql, at) || at == sql.size() || sql[at] != '(') return false;
  int depth = 0;
  int commas = 0;
  size_t third = 0;
  for (size_t i = at; i < sql.size();) {
    if (const size_t next = skipSqlNonCode(sql, i); next != i) {
      i = next;
      continue;
    }
    const char c = sql[i];
    if (c == '(') {
      ++depth;
    } else if (c == ')' && --depth == 0) {
      if (commas != 2) return true;  // not set_config(name, value, is_local): Postgres decides
      // One token (a literal or a word) between comments and spaces, or an expression.
      const std::string_view arg = sql.substr(third, i - third);
      size_t from = 0;
      skipSqlSpaceAndComments(arg, from);
      size_t to = skipSqlNonCode(arg, from);
      if (to == from) {
        while (to < arg.size() && isWordChar(arg[to])) ++to;
      }
      size_t rest = to;
      if (!skipSqlSpaceAndComments(arg, rest) || rest != arg.size()) return true;
      std::string lowered(arg.substr(from, to - from));
      for (char& ch : lowered) ch = asciiLower(ch);
      static constexpr std::string_view kTrue[] = {"true",  "'t'", "'true'", "'on'",
                                                   "'yes'", "'y'", "'1'"};
      return std::find(std::begin(kTrue), std::end(kTrue), lowered) == std::end(kTrue);
    } else if (c == ',' && depth == 1 && ++commas == 2) {
      third = i + 1;
    }
    ++i;
  }
  return true;  // unterminated: Postgres rejects it, but do not count on that
}

// A quoted identifier, sql[start, end) with its quotes, that names a session-level function.
void noteQuotedName(StatementWords& words, std::string_view sql, size_t start, size_t end) {
  if (end < start + 2 || end - start > 40) return;  // longer than any name that matters
  std::string name(sql.substr(start + 1, end - start - 2));
  for (char& ch : name) ch = asciiLower(ch);
  words.noteFunctionName(name);
  if (name == "set_config" && sessionSetConfigAt(sql, end)) words.noteSessionSetConfig();
}

// Whether a DO block's text (its body a literal the word scan skips) may create what outlives
// it: temporary objects (TEMP, TEMPORARY, pg_temp), session advisory locks, session settings by
// set_config(), LISTEN. Any mention counts, dynamic SQL in strings included: the session then
// keeps its connection. (SET inside a DO block is not seen: see the README.)
bool doBlockMayKeepSessionState(std::string_view text) {
  std::string lowered(text);
  for (char& ch : lowered) ch = asciiLower(ch);
  for (const std::string_view word : {"temp", "advisory", "set_config", "listen"}) {
    if (lowered.find(word) != std::string::npos) return true;
  }
  return false;
}

planner::TransactionAction controlOfTransactionStmt(const pg_query::TransactionStmt& stmt) {
  using Action = planner::TransactionAction;
  switch (stmt.kind()) {
    case pg_query::TRANS_STMT_COMMIT:
      return Action::kCommit;
    case pg_query::TRANS_STMT_ROLLBACK:
      return Action::kRollback;
    case pg_query::TRANS_STMT_SAVEPOINT:
      return Action::kSavepoint;
    case pg_query::TRANS_STMT_RELEASE:
      return Action::kRelease;
    case pg_query::TRANS_STMT_ROLLBACK_TO:
      return Action::kRollbackTo;
    default:
      return Action::kNone;
  }
}

// The settings changes (or a reason to pin) in a statement string that needs parsing.
SessionEffects settingEffects(std::string_view sql) {
  SessionEffects effects;
  auto parsed = parser::parse(sql);
  if (!parsed.ok()) {
    // Postgres will reject it too; pin rather than guess what it would have changed.
    effects.pin_reason = "SET in a statement shardgate cannot parse";
    return effects;
  }
  for (size_t i = 0; i < (*parsed)->statementCount(); ++i) {
    const pg_query::Node& node = (*parsed)->statement(i);
    const auto index = static_cast<uint32_t>(i);
    // What holds until the end of the transaction: kept for the shards that join it later.
    const auto transaction_scoped = [&](std::string command) {
      // The client's text may end in a -- comment, which the newline ends where it is replayed.
      auto text = parser::deparseStatement(node);
      effects.changes.push_back(
          {SettingChange::Kind::kLocal, std::move(command),
           text.ok() ? *text : std::string((*parsed)->statementText(i)) + "\n", index});
    };
    if (node.has_transaction_stmt()) {
      if (const auto control = controlOfTransactionStmt(node.transaction_stmt());
          control != planner::TransactionAction::kNone) {
        effects.controls.push_back({index, control});
      }
      continue;
    }
    if (node.has_constraints_set_stmt()) {
      transaction_scoped("SET CONSTRAINTS");
      continue;
    }
    if (!node.has_variable_set_stmt()) continue;
    const pg_query::VariableSetStmt& set = node.variable_set_stmt();
    std::string name = set.name();
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (set.is_local()) {
      if (name.rfind("shardgate.", 0) != 0)
        transaction_scoped("SET LOCAL");  // shardgate.*: answered
      continue;
    }
    switch (set.kind()) {
      case pg_query::VAR_SET_VALUE: {
        if (isSyncedReportedSetting(name)) break;  // ParameterStatus carries it
        if (name == "role" || name == "session_authorization") {
          effects.pin_reason = "SET ROLE / SESSION AUTHORIZATION";
          return effects;
        }
        auto text = parser::deparseStatement(node);
        if (!text.ok()) {
          effects.pin_reason = "SET " + name;
          return effects;
        }
        effects.changes.push_back({SettingChange::Kind::kSet, name, *text, index});
        break;
      }
      case pg_query::VAR_SET_DEFAULT:
      case pg_query::VAR_RESET:
        if (isSyncedReportedSetting(name)) break;
        if (name == "role" || name == "session_authorization") {
          effects.pin_reason = "RESET ROLE / SESSION AUTHORIZATION";
          return effects;
        }
        effects.changes.push_back({SettingChange::Kind::kReset, name, {}, index});
        break;
      case pg_query::VAR_RESET_ALL:
        effects.changes.push_back({SettingChange::Kind::kResetAll, {}, {}, index});
        break;
      case pg_query::VAR_SET_MULTI:
        if (name == "transaction" || name == "transaction snapshot") {
          transaction_scoped("SET TRANSACTION");
          break;
        }
        effects.pin_reason = "SET SESSION CHARACTERISTICS";
        return effects;
      default:  // SET ... FROM CURRENT
        effects.pin_reason = "SET " + name + " FROM CURRENT";
        return effects;
    }
  }
  return effects;
}

// A statement whose first word is one of these can affect the session (judgeStatement).
bool startsSessionStatement(std::string_view first) {
  static constexpr std::string_view kWords[] = {"listen",  "prepare", "execute", "deallocate",
                                                "declare", "create",  "discard", "set",
                                                "reset",   "do",      "explain"};
  for (std::string_view w : kWords) {
    if (first == w) return true;
  }
  return false;
}

// The bytes the one-pass check below stops at: the last letters of "advisory", "temp" and
// "set_config" in either case (rarer in SQL than their first letters), and ';'.
constexpr std::array<bool, 256> kEffectProbeChars = [] {
  std::array<bool, 256> table{};
  for (const char c : std::string_view("yYpPgG;")) table[static_cast<unsigned char>(c)] = true;
  return table;
}();

// Whether the `lower_word.size()` bytes of `sql` that end at `last` (inclusive) spell
// `lower_word` (lower-case ASCII) in any case.
bool endsWordIgnoreCase(std::string_view sql, size_t last, std::string_view lower_word) {
  if (last + 1 < lower_word.size()) return false;
  const size_t start = last + 1 - lower_word.size();
  for (size_t j = 0; j < lower_word.size(); ++j) {
    if (asciiLower(sql[start + j]) != lower_word[j]) return false;
  }
  return true;
}

enum class Probe { kGoOn, kFree, kNotFree };

// The verdict at a byte kEffectProbeChars marks.
Probe probeAt(std::string_view sql, size_t at) {
  const char c = sql[at];
  if (c == ';') {
    return sql.find_first_not_of(" \t\r\n;", at) == std::string_view::npos ? Probe::kFree
                                                                           : Probe::kNotFree;
  }
  const bool found = (c == 'y' || c == 'Y')   ? endsWordIgnoreCase(sql, at, "advisory")
                     : (c == 'g' || c == 'G') ? endsWordIgnoreCase(sql, at, "set_config")
                                              : endsWordIgnoreCase(sql, at, "temp");
  return found ? Probe::kNotFree : Probe::kGoOn;
}

// The common case, answered without the word scan: one statement (no ';' but a trailing one),
// whose first word starts none of the statements above, and that names no advisory lock function,
// temporary table or set_config (the only words that matter anywhere in a statement). Anything
// else, a ';' inside a literal included, gets the full scan. Every simple Query passes here, so
// the text is read once, stopping only at the bytes kEffectProbeChars marks.
bool obviouslyEffectFree(std::string_view sql) {
  size_t i = 0;
  for (;;) {  // comments and space before the first word
    while (i < sql.size() && (sql[i] == ' ' || sql[i] == '\t' || sql[i] == '\r' || sql[i] == '\n'))
      ++i;
    if (i == sql.size() || (sql[i] != '-' && sql[i] != '/')) break;
    const size_t next = skipSqlNonCode(sql, i);
    if (next == i) break;
    i = next;
  }
  char first[16];
  size_t n = 0;
  while (i < sql.size() && isWordChar(sql[i])) {
    if (n == sizeof first) return false;
    first[n++] = asciiLower(sql[i++]);
  }
  if (startsSessionStatement(std::string_view(first, n))) return false;
  size_t at = 0;
#if defined(__SSE2__)
  // Sixteen bytes at a time: a mask of the probe bytes among them (x | 0x20 folds 'Y', 'P' and
  // 'G' onto 'y', 'p' and 'g', and no other byte onto any of them).
  const __m128i fold = _mm_set1_epi8(0x20);
  const __m128i y = _mm_set1_epi8('y');
  const __m128i p = _mm_set1_epi8('p');
  const __m128i g = _mm_set1_epi8('g');
  const __m128i semicolon = _mm_set1_epi8(';');
  for (; at + 16 <= sql.size(); at += 16) {
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(sql.data() + at));
    const __m128i folded = _mm_or_si128(bytes, fold);
    const __m128i hits =
        _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(folded, y), _mm_cmpeq_epi8(folded, p)),
                     _mm_or_si128(_mm_cmpeq_epi8(folded, g), _mm_cmpeq_epi8(bytes, semicolon)));
    for (auto mask = static_cast<unsigned>(_mm_movemask_epi8(hits)); mask != 0; mask &= mask - 1) {
      const Probe verdict = probeAt(sql, at + static_cast<size_t>(std::countr_zero(mask)));
      if (verdict != Probe::kGoOn) return verdict == Probe::kFree;
    }
  }
#endif
  for (; at < sql.size(); ++at) {
    if (!kEffectProbeChars[static_cast<unsigned char>(sql[at])]) continue;
    const Probe verdict = probeAt(sql, at);
    if (verdict != Probe::kGoOn) return verdict == Probe::kFree;
  }
  return true;
}

}  // namespace

// transactionControlOf from a statement's first three words (lower-case).
planner::TransactionAction transactionControlOfWords(std::string_view first,
                                                     std::string_view second,
                                                     std::string_view third) {
  using Action = planner::TransactionAction;
  if (first == "savepoint") return Action::kSavepoint;
  if (first == "release") return Action::kRelease;
  if (first == "commit" || first == "end") {
    return second == "prepared" ? Action::kNone : Action::kCommit;
  }
  if (first == "rollback" || first == "abort") {
    if (second == "prepared") return Action::kNone;
    // ROLLBACK [WORK | TRANSACTION] TO [SAVEPOINT] name
    const bool to =
        second == "to" || ((second == "work" || second == "transaction") && third == "to");
    return to ? Action::kRollbackTo : Action::kRollback;
  }
  return Action::kNone;
}

SessionEffects sessionEffectsOf(std::string_view sql) {
  if (obviouslyEffectFree(sql)) return {};
  StatementWords words;
  bool needs_parse = false;
  SessionEffects effects;
  size_t statement_start = 0;
  // `end`: where the statement judged ends (its ';', or the end of the string).
  uint32_t statement_index = 0;  // of the statement judged (empty ones are not counted)
  auto judge = [&](size_t end) {
    if (words.empty()) {  // nothing but space or comments: Postgres runs no statement for it
      statement_start = end + 1;
      return true;
    }
    const uint32_t index = statement_index++;
    if (const auto control = transactionControlOfWords(words.at(0), words.at(1), words.at(2));
        control != planner::TransactionAction::kNone) {
      effects.controls.push_back({index, control});
    }
    std::string verdict = judgeStatement(words);
    if (verdict.empty() && words.at(0) == "do" &&
        doBlockMayKeepSessionState(sql.substr(statement_start, end - statement_start))) {
      verdict = "DO block with temporary objects, advisory locks, set_config or LISTEN";
    }
    words.clear();
    const size_t start = statement_start;
    statement_start = end + 1;
    if (verdict == kNeedsParse) {
      needs_parse = true;
    } else if (verdict.rfind(kTransactionScoped, 0) == 0) {
      // The client's text may end in a -- comment, which the newline ends where it is replayed.
      std::string text(sql.substr(start, end - start));
      text += '\n';
      effects.changes.push_back({SettingChange::Kind::kLocal,
                                 verdict.substr(kTransactionScoped.size()), std::move(text),
                                 index});
    } else if (verdict == kSqlPrepared) {
      effects.sql_prepared = true;
    } else if (verdict == kResetsAll) {
      effects.resets_all = true;
    } else if (verdict.rfind(kResetsReported, 0) == 0) {
      effects.resets.push_back(verdict.substr(kResetsReported.size()));
    } else if (!verdict.empty()) {
      effects.pin_reason = std::move(verdict);
    }
    return effects.pin_reason.empty();
  };
  size_t i = 0;
  const size_t n = sql.size();
  while (i < n) {
    const char c = sql[i];
    if (const size_t next = skipSqlNonCode(sql, i); next != i) {
      // Literals, dollar quotes and comments hold no statement words. A quoted identifier may be
      // a function's name ("pg_advisory_lock"(1), "set_config"(...)).
      if (c == '"') noteQuotedName(words, sql, i, next);
      i = next;
    } else if (c == ';') {
      if (!judge(i)) return effects;
      ++i;
    } else if (isWordChar(c)) {
      size_t start = i;
      while (i < n && isWordChar(sql[i])) ++i;
      words.add(sql.substr(start, i - start));
      if (i - start == 10 && endsWordIgnoreCase(sql, i - 1, "set_config") &&
          sessionSetConfigAt(sql, i)) {
        words.noteSessionSetConfig();
      }
    } else {
      ++i;
    }
  }
  if (!judge(n)) return effects;
  if (needs_parse) {
    SessionEffects parsed = settingEffects(sql);
    effects.pin_reason = std::move(parsed.pin_reason);
    effects.changes = std::move(parsed.changes);
    effects.controls = std::move(parsed.controls);
    for (const SettingChange& change : effects.changes) {
      if (change.kind == SettingChange::Kind::kResetAll) effects.resets_all = true;
      if (change.kind == SettingChange::Kind::kReset) effects.resets.push_back(change.name);
    }
  }
  return effects;
}

std::string_view nextKeyword(std::string_view sql, size_t& at, char* buffer, size_t longest) {
  if (!skipSqlSpaceAndComments(sql, at)) return {};
  size_t n = 0;
  while (at < sql.size() && isSqlIdentCont(sql[at])) {
    if (n == longest) return {};
    buffer[n++] = asciiLower(sql[at++]);
  }
  return {buffer, n};
}

planner::TransactionAction transactionControlOf(std::string_view sql) {
  size_t i = 0;
  const auto next_word = [&](char* buffer, size_t longest) {
    return nextKeyword(sql, i, buffer, longest);
  };
  constexpr size_t kLongestFirst = 9;  // "savepoint"
  char first_buffer[kLongestFirst];
  const std::string_view first = next_word(first_buffer, kLongestFirst);
  // Every Bind of a statement comes here without routing: most stop at this first word.
  if (first != "commit" && first != "end" && first != "rollback" && first != "abort") {
    return transactionControlOfWords(first, {}, {});  // SAVEPOINT, RELEASE or none
  }
  constexpr size_t kLongestNext = 11;  // "transaction"
  char second_buffer[kLongestNext];
  char third_buffer[kLongestNext];
  const std::string_view second = next_word(second_buffer, kLongestNext);
  const std::string_view third =
      second.empty() ? std::string_view() : next_word(third_buffer, kLongestNext);
  return transactionControlOfWords(first, second, third);
}

}  // namespace shardgate::proxy
