// MultiShardPlan: how a statement that needs several shards runs — the SQL each shard gets and how
// shardgate merges their results into the one answer a single Postgres would give.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "planner/copy_split.h"
#include "planner/query_analysis.h"

namespace shardgate::planner {

// An expression shardgate evaluates itself after the merge (HAVING), over the merged row.
// Columns refer to the merged row (see MergePlan); constants are in Postgres text form.
struct MergeExpression {
  enum class Kind : uint8_t {
    kColumn,    // merged row column `column`
    kConstant,  // `text` (type `type_oid`, 0: unknown literal, typed from the other operand)
    kNull,
    kAnd,
    kOr,
    kNot,
    kCompare,     // children[0] `op` children[1]; op: "=", "<>", "<", "<=", ">", ">="
    kArithmetic,  // children[0] `op` children[1]; op: "+", "-", "*", "/"
    kIsNull,
    kIsNotNull,
  };
  Kind kind = Kind::kNull;
  uint32_t column = 0;
  std::string text;
  int32_t type_oid = 0;
  std::string op;
  std::vector<MergeExpression> children;
};

// An aggregate the shards compute in part and shardgate finishes. Its partial state is in shard
// result columns `inputs`; the finished value replaces column inputs[0] of the merged row (the
// other inputs become hidden).
struct MergeAggregate {
  enum class Kind : uint8_t {
    kCount,      // inputs: [count]            -> sum of counts (bigint); 0 on empty input
    kSum,        // inputs: [sum]              -> exact sum, the shards' result type; NULL if none
    kMin,        // inputs: [min]
    kMax,        // inputs: [max]
    kAvg,        // inputs: [sum, count]       -> sum / count as Postgres's avg (numeric for
                 //                               integer and numeric input, float8 for floats)
                 //  optional 3rd input: the sum in float8 when the argument is real (NULL
                 //  otherwise): avg(real) sums in double precision, sum(real) in real
    kBoolAnd,    // inputs: [bool_and]
    kBoolOr,     // inputs: [bool_or]
    kVariance,   // inputs: [count, sum, sum of squares] (sum and sum of squares as numeric);
                 //                               `function` says which: variance, var_samp,
                 //                               var_pop, stddev, stddev_samp, stddev_pop
                 //  optional 4th input: a NULL of the argument's type (its column type tells
                 //  it: over real and double precision the merge refuses)
    kDistinct,   // inputs: [value]: the shards return each group's distinct values (the value is
                 //                  a grouping column of the shard query); shardgate applies
                 //                  `function` (count, sum, avg, min, max, ...) over the distinct
                 //                  values of each group
    kStringAgg,  // inputs: [partial string_agg, delimiter] -> concatenated with the delimiter
    kArrayAgg,   // inputs: [partial array_agg]             -> arrays concatenated
    // With the aggregate's own ORDER BY: each shard returns array_agg(value ORDER BY ...) and,
    // per `order` key, array_agg(key ORDER BY ...) (same order, so position i of every array
    // belongs to one row, up to ties); shardgate merges the elements of all shards by the keys.
    kOrderedStringAgg,  // inputs: [array of values, delimiter (a constant)] -> text or bytea
    kOrderedArrayAgg,   // inputs: [array of values]                         -> the array
  };
  // One key of the aggregate's own ORDER BY. kOrdered*: `column` is the shard column holding the
  // key's array. kDistinct (string_agg/array_agg): at most one key, the value itself (column =
  // inputs[0]); none: ascending, NULLs last.
  struct OrderKey {
    uint32_t column = 0;
    bool descending = false;
    bool nulls_first = false;
  };
  Kind kind = Kind::kCount;
  std::string function;  // lower-case name as written: "count", "stddev_samp", ...
  std::vector<uint32_t> inputs;
  std::vector<OrderKey> order;
  // The type the client sees for this column (0: the shard column's own type). avg over integers
  // is numeric (1700) although its first input (sum) may be bigint.
  int32_t result_type_oid = 0;
};

struct MergeSortKey {
  uint32_t column = 0;  // merged row column
  bool descending = false;
  bool nulls_first = false;  // Postgres's default: NULLS LAST for ASC, NULLS FIRST for DESC
  // A position in SELECT *'s columns: the planner cannot name its expression, so no collation
  // probe (MergeCollation) tells its collation; shardgate refuses to order text by it.
  bool collation_unknown = false;
};

// Text the merge orders (sort keys, min/max, ordered aggregates, HAVING comparisons) or matches
// (GROUP BY, DISTINCT: byte for byte, right for deterministic collations; shardgate refuses the
// collations it does not know, among them ICU's nondeterministic ones) in merged column `column`
// is ordered in the collation that shard column `probe` names:
//   pg_collation_for(CASE WHEN false THEN concat(<the column's expression>) END)
// is the expression's collation name ("default", "C", ...), the same on every row, and costs the
// shards nothing per row (Postgres folds the CASE into a typed NULL that keeps the collation;
// concat takes any type, and a collatable argument's collation becomes its result's).
struct MergeCollation {
  uint32_t column = 0;
  uint32_t probe = 0;
};

// How the shards' results become the client's result. Steps, in order:
//   1. rows from all shards ("shard rows": the columns of the shard SQL's result)
//   2. aggregate (if `aggregate`): group by `group_columns`, finish `aggregates` → one merged row
//      per group (a query without GROUP BY yields exactly one row, also on empty input)
//   3. `having` filters merged rows
//   4. `distinct` removes duplicate rows (over the visible columns)
//   5. `sort` orders them (without aggregation: a k-way merge of the shards' sorted streams)
//   6. `offset` rows skipped, then at most `limit` rows
//   7. `visible_columns` projected: the client's columns, in order (hidden ones dropped)
// Without aggregation, the merged row is the shard row. With aggregation, a merged-row column
// that is neither a group column nor an aggregate's input is never produced (the planner makes
// every non-aggregate column of a GROUP BY query a group column, and refuses them without one).
struct MergePlan {
  bool aggregate = false;
  std::vector<uint32_t> group_columns;
  std::vector<MergeAggregate> aggregates;
  std::optional<MergeExpression> having;
  bool distinct = false;
  std::vector<MergeSortKey> sort;
  std::vector<MergeCollation> collations;  // hidden probe columns; text columns not listed are
                                           // ordered in the database's collation
  std::optional<ValueRef> limit;   // evaluated when the statement runs (literal, constant, param)
  std::optional<ValueRef> offset;  // (the shard SQL already asks each shard for limit + offset)
  std::vector<uint32_t> visible_columns;  // empty: all shard columns, as they are
  // With SELECT * shardgate does not know how many columns the shards return, so hidden sort
  // columns go first: the first `leading_hidden` shard columns are hidden, the client's columns
  // are all the others (visible_columns is then empty). Sort keys refer to them as usual.
  uint32_t leading_hidden = 0;
  // How many columns the shard SQL returns (visible and hidden); 0: unknown (SELECT *). Tells the
  // proxy how many result formats the shards' Bind needs.
  uint32_t shard_columns = 0;
  std::vector<std::string> explain;  // one line per step, for EXPLAIN (ROUTE) and goldens
};

// Which parameters a statement's text refers to, outside quotes, dollar quotes and comments
// (scan.l's rules): element n-1 is true if $n appears.
std::vector<bool> referencedParameters(std::string_view sql);

// What each target shard runs.
struct ShardStatement {
  ShardStatement() = default;
  ShardStatement(uint32_t s, std::string q, std::vector<int32_t> p = {})
      : shard(s),
        sql(std::move(q)),
        params(std::move(p)),
        referenced_params(referencedParameters(sql)) {}

  uint32_t shard = 0;
  std::string sql;
  // Extended protocol: empty when `sql` takes the client's parameters as they are. Otherwise `sql`
  // uses only some of them, renumbered: its $i is the client's $params[i-1] (value, format and
  // type) — a multi-row INSERT split by shard, each shard's rows with their own parameters.
  std::vector<int32_t> params;
  // The parameters `sql` uses (see referencedParameters), found once with the plan: a Bind value
  // it does not use gets a type Postgres accepts anything for.
  std::vector<bool> referenced_params;
};

// The highest of the client's parameter numbers `statements` use (0: none), read from what each
// found once with the plan: a Bind must bring at least that many values.
size_t highestClientParameter(const std::vector<ShardStatement>& statements);

// A statement that runs on several shards.
struct MultiShardPlan {
  enum class Kind : uint8_t {
    kRead,     // SELECT: results merged by `merge`
    kWrite,    // INSERT / UPDATE / DELETE: command tags summed, RETURNING rows concatenated
    kDdl,      // utility statement on every target: one tag; a failure names the shard
    kCopyIn,   // COPY ... FROM STDIN: the client's rows split by `copy`, "COPY n" summed
    kCopyOut,  // COPY ... TO STDOUT: every shard's rows passed on as they come, "COPY n" summed
  };
  Kind kind = Kind::kRead;
  std::vector<ShardStatement> statements;  // one per target shard, in shard order
  std::shared_ptr<const MergePlan> merge;  // kRead; nullptr: concatenate as rows arrive
  std::shared_ptr<const CopySplit> copy;   // kCopyIn
  // kCopyOut: the COPY's format. A CSV header or a binary file header goes to the client once,
  // and a binary file's trailer once at the end.
  bool copy_out_binary = false;
  bool copy_out_header = false;
  std::string reason;  // one line, for logs and EXPLAIN (ROUTE)
  // kWrite / kDdl on a reference table: every shard does the same to its copy, so the client gets
  // one shard's result (command tag, RETURNING rows), not the sum of all.
  bool replicated = false;
  // A multi-row INSERT ... RETURNING split by shard: for each VALUES row, in order, the index in
  // `statements` of the statement that inserts it. Each returns its rows in its VALUES order, so
  // the RETURNING rows are held and sent in the client's order. Empty: sent as they arrive.
  std::vector<uint32_t> returning_statements;
  // kDdl that Postgres runs inside a transaction block (not CREATE INDEX CONCURRENTLY, VACUUM,
  // ...): outside the client's own transaction each shard runs it in one, and all commit only if
  // every shard succeeded, so a failure on one shard leaves no shard changed.
  bool transactional = false;
};

}  // namespace shardgate::planner
