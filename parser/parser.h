// The parser API: libpg_query (Postgres's own grammar) behind parse / deparse / fingerprint /
// split.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "parser/parse_cache.h"
#include "parser/parsed_query.h"
#include "pg_query.pb.h"

namespace shardgate::parser {

// SQLSTATEs the parser reports besides sqlstate::kSyntaxError (not in common/error.h yet).
inline constexpr std::string_view kSqlstateStatementTooComplex = sqlstate::kStatementTooComplex;
inline constexpr std::string_view kSqlstateCharacterNotInRepertoire =
    sqlstate::kCharacterNotInRepertoire;  // bad UTF-8, NUL

// Deepest protobuf tree (in message levels: ParseResult > RawStmt > Node > SelectStmt > ...) that
// parse() produces and deparse() accepts. libpg_query walks trees recursively without a stack-depth
// check, so depth is bounded here; Postgres itself stops at a similar depth ("stack depth limit
// exceeded": ~4000 nested '+', ~2000 nested subqueries at the default max_stack_depth).
inline constexpr size_t kMaxTreeDepth = 10000;

// Parses a query string (one or more statements; SQL is expected in UTF-8).
// Errors: 42601 for syntax errors, with Postgres's message (e.g. 'syntax error at or near "SELEC"')
// and detail "at character N" (1-based, in characters, as Postgres counts its error position);
// 22021 for a NUL byte or invalid UTF-8 (Postgres's "invalid byte sequence for encoding" message);
// 54001 for statements nested deeper than kMaxTreeDepth. An empty or comment-only string parses to
// zero statements.
Result<std::shared_ptr<const ParsedQuery>> parse(std::string_view sql);

// Deparses a (possibly edited) tree back to SQL text: statements joined by "; ". Constants and
// names are quoted by libpg_query. The tree must be well formed — as parse() makes it, with edits
// that keep required parts set: libpg_query checks some things (a ResTarget without a value is an
// error) but dereferences others blindly (a RangeVar without relname, an empty Node inside a target
// list crash it). Empty Nodes cannot be refused wholesale: Postgres itself puts them in some lists
// (SELECT DISTINCT's distinct_clause is [{}]). Unset statement nodes are refused (XX000).
Result<std::string> deparse(const pg_query::ParseResult& tree);

// Deparses a single statement node (no trailing ';').
Result<std::string> deparseStatement(const pg_query::Node& stmt);

// libpg_query's fingerprint: equal for queries that differ only in constants (or $n parameters in
// their place), comments, whitespace, keyword case, the length of an IN list of constants, column
// aliases, or the order of the select list. Good for grouping statistics by query shape; NOT a plan
// cache key (SELECT a, b and SELECT b, a share it). Errors as for parse().
Result<uint64_t> fingerprint(std::string_view sql);

// Splits a multi-statement string with the parser, so ';' inside strings, comments, dollar quotes
// and CREATE RULE bodies is fine. Returns views into `sql`, one per statement, with the ranges of
// ParsedQuery::statementText (empty statements, as in ";;", are dropped). Errors as for parse().
Result<std::vector<std::string_view>> splitStatements(std::string_view sql);

}  // namespace shardgate::parser
