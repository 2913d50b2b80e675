// Analyzer: turns one parsed statement into a QueryAnalysis for a database's sharding config.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "common/result.h"
#include "conf/config.h"
#include "parser/parsed_query.h"
#include "planner/literal_template.h"
#include "planner/query_analysis.h"

namespace shardgate::planner {

// Deepest expression nesting the analyzer walks (it recurses; Postgres itself stops at a few
// thousand levels). Deeper statements get 54001, as Postgres reports them.
inline constexpr size_t kMaxAnalysisDepth = 5000;

// Analyses statement `index` of `parsed` for `db`.
//
// `literals`, if given, is the LiteralTemplate scan of parsed->sql: constants the analysis needs
// are then recorded as references to those literals, and the analysis (QueryAnalysis::templated)
// serves every text with the same template. Without it (or where a constant cannot be tied to one
// literal), constants are copied into the analysis, which then belongs to this exact text.
// `param_types` are the parameter type OIDs from Parse (0: unspecified).
//
// What counts as a write (QueryAnalysis::writes): INSERT, UPDATE, DELETE, MERGE, COPY FROM,
// SELECT ... FOR UPDATE / FOR SHARE / INTO, data-modifying WITH, DDL and other utility statements,
// LISTEN / NOTIFY, and calls of built-in functions with side effects (nextval, setval, advisory
// locks, pg_notify, txid_current, large-object writes, ...). User-defined functions are assumed
// read-only: one that writes fails on a replica with Postgres's read-only error.
//
// Errors: 54001 for statements nested deeper than max_depth (kMaxAnalysisDepth). Everything the
// router may refuse depends on values or on the session and is reported when routing.
Result<std::shared_ptr<const QueryAnalysis>> analyzeStatement(
    const conf::Database& db, const std::shared_ptr<const parser::ParsedQuery>& parsed,
    size_t index, const LiteralTemplate* literals, const std::vector<int32_t>& param_types,
    size_t max_depth = kMaxAnalysisDepth);

// Whether `name` (lower case) is a built-in aggregate function.
bool isAggregateFunctionName(std::string_view name);

// The key type a type name denotes (int2/smallint, int4/integer, int8/bigint, text, varchar,
// uuid), if any; `is_array` is set for T[].
std::optional<conf::KeyType> keyTypeOfTypeName(const pg_query::TypeName& type, bool& is_array);

}  // namespace shardgate::planner
