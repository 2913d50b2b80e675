// MultiShardPlanner: builds the MultiShardPlan of a statement that needs several shards — the SQL
// each shard runs (the statement's tree edited and deparsed) and how their results are merged.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "conf/config.h"
#include "parser/parsed_query.h"
#include "planner/multi_shard_plan.h"
#include "planner/router.h"

namespace shardgate::planner {

// What the planner gets from the router: the statement as it is now (its literals, not those of
// the text a cached analysis was made from), the shards that run it and the Bind values.
struct MultiShardInput {
  const conf::Database* db = nullptr;
  const pg_query::Node* statement = nullptr;  // the statement (the query inside an EXPLAIN)
  std::string_view text;  // its text, sent unchanged when nothing needs rewriting ("": deparse)
  std::vector<uint32_t> shards;            // the shards that run it, ascending
  const BindParameters* params = nullptr;  // extended protocol, else nullptr
  std::string reason;                      // for MultiShardPlan::reason
  // The FROM tables' columns, for a GROUP BY name that is also another output column's name
  // (Postgres takes the input column first). A table not read yet is added to *column_lookups and
  // the plan is null: the router answers kNeedsLookup, then plans again. Without a provider such
  // a name gets 0A000 unless shardgate can tell otherwise.
  const ColumnOrderProvider* columns = nullptr;
  std::vector<ColumnOrderRequest>* column_lookups = nullptr;
};

// SELECT over sharded tables whose rows are on several shards. The caller has checked that each
// shard can compute its part of the answer alone (co-located joins, see the router); this checks
// the shape: aggregates it can finish, ORDER BY, LIMIT, DISTINCT, HAVING, ... Errors: 0A000 naming
// what cannot be answered exactly across shards. A null plan waits for in.column_lookups.
Result<std::shared_ptr<const MultiShardPlan>> planMultiShardRead(const MultiShardInput& in);

// UPDATE / DELETE (and INSERT with rows for one shard each... see planInsertSplit), or any
// statement that every target shard runs as it is: `kind` kWrite or kDdl.
Result<std::shared_ptr<const MultiShardPlan>> planSameStatement(const MultiShardInput& in,
                                                                MultiShardPlan::Kind kind,
                                                                bool replicated);

// A multi-row INSERT ... VALUES whose rows go to several shards: each shard gets the rows in
// `row_shards` (the shard of VALUES row i) in one INSERT. With parameters, each shard's INSERT
// uses only its rows' parameters, renumbered (ShardStatement::params).
Result<std::shared_ptr<const MultiShardPlan>> planInsertSplit(
    const MultiShardInput& in, const std::vector<uint32_t>& row_shards);

// DROP INDEX (the index may be on a sharded table: every shard; the default shard reports a
// missing index, the others drop it IF EXISTS), VACUUM / ANALYZE of every table: the plan, or
// nullopt for other statements (they stay on the default shard).
std::optional<std::shared_ptr<const MultiShardPlan>> planUtilityWithoutTables(
    const MultiShardInput& in);

// Nested SELECTs (subqueries, CTEs, derived tables) that read sharded tables and would give
// another answer per shard than over all rows: LIMIT, aggregates, DISTINCT, window functions, set
// operations — unless they are correlated with the outer row on the sharding key (so all the rows
// they see are on the outer row's shard) or grouped by it. 0A000 naming the first one found.
Status checkNestedSelects(const conf::Database& db, const pg_query::Node& statement);

// An outer join whose preserved side has no sharded table (a reference table, VALUES, a function)
// and whose other side has: every shard would return the unmatched rows. 0A000 naming the table.
Status checkReplicatedOuterJoins(const conf::Database& db, const pg_query::Node& statement);

// The column name Postgres gives a select-list expression without an alias (FigureColname):
// "count" for count(*), "name" for u.name, "?column?" for 1 + 1, ...
std::string figureColumnName(const pg_query::Node& expr);

// Whether `n` refers to a Bind parameter ($1) anywhere below it.
bool containsParameter(const pg_query::Node& n);

// Whether two expressions are the same tree (positions in the text aside).
bool sameExpression(const pg_query::Node& a, const pg_query::Node& b);

// The EXPLAIN (ROUTE) lines of a plan: shard SQL (shards with the same SQL on one line) and
// merge steps.
std::vector<std::string> describeMultiShardPlan(const conf::Database& db,
                                                const MultiShardPlan& plan);

// Whether rows of `a` and `b` with equal keys are always on the same shard (router.cc).
bool tablesCoLocated(const conf::ShardedTable& a, const conf::ShardedTable& b);

}  // namespace shardgate::planner
