// QueryAnalysis: what the Analyzer learns from one statement, in a form the Router can evaluate
// again and again (values are references to literals and parameters, never baked in).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "conf/config.h"
#include "parser/parsed_query.h"

namespace shardgate::planner {

// Whether values of key types a and b compare and hash alike (the integer types; text and
// varchar; uuid), so a cast or parameter type of one family keeps a key of the other meaningful.
inline bool sameKeyFamily(conf::KeyType a, conf::KeyType b) {
  const auto family = [](conf::KeyType t) {
    if (conf::isIntegerKey(t)) return 0;
    return t == conf::KeyType::kUuid ? 2 : 1;
  };
  return family(a) == family(b);
}

enum class StatementKind : uint8_t {
  kEmpty,             // an empty query string (or only comments)
  kSelect,            // SELECT, VALUES, TABLE (also DECLARE CURSOR, whose query this is)
  kInsert,            // INSERT (also ... ON CONFLICT)
  kUpdate,            // UPDATE
  kDelete,            // DELETE
  kMerge,             // MERGE
  kCopy,              // COPY
  kTransaction,       // BEGIN, COMMIT, ROLLBACK, SAVEPOINT, ... (see TransactionAction)
  kSet,               // SET (including SET TRANSACTION ...), not shardgate.*
  kReset,             // RESET, RESET ALL
  kShow,              // SHOW
  kShardgateSetting,  // SET / SHOW / RESET shardgate.* (answered by the proxy)
  kCursor,            // FETCH, MOVE, CLOSE
  kSqlPrepared,       // SQL-level PREPARE / EXECUTE
  kSessionCommand,    // DEALLOCATE, DISCARD: no table, any shard
  kListen,            // LISTEN, UNLISTEN, NOTIFY: the default shard's primary
  kUtility,           // everything else: DDL, VACUUM, LOCK, CALL, DO, ...
};

enum class TransactionAction : uint8_t {
  kNone,
  kBegin,  // BEGIN / START TRANSACTION
  kCommit,
  kRollback,
  kSavepoint,
  kRelease,
  kRollbackTo,
  kPrepare,  // PREPARE TRANSACTION
  kCommitPrepared,
  kRollbackPrepared,
};

enum class SettingAction : uint8_t { kNone, kSet, kShow, kReset };

// How EXPLAIN wraps the statement (the analysis is that of the inner statement).
enum class ExplainMode : uint8_t {
  kNone,
  kPlain,    // EXPLAIN: nothing runs
  kAnalyze,  // EXPLAIN ANALYZE: the statement runs
  kRoute,    // EXPLAIN (ROUTE): shardgate answers with the route
};

enum class TableClass : uint8_t { kSharded, kReference, kUnsharded };

// Where a value comes from when the statement is routed.
struct ValueRef {
  enum class Kind : uint8_t {
    kLiteral,     // literal `index` of the statement's LiteralTemplate (its text at route time)
    kConstant,    // `text`, fixed in the analysis (only in analyses cached by exact text)
    kParam,       // parameter $`index`
    kNull,        // NULL
    kSameColumn,  // the column itself (SET id = id, SET id = excluded.id): no change
    kUnknown,     // an expression shardgate does not evaluate
    kDefault,     // DEFAULT in VALUES or SET
  };
  Kind kind = Kind::kUnknown;
  enum class Token : uint8_t { kInteger, kNumeric, kString };  // for kLiteral / kConstant
  Token token = Token::kString;
  bool negate = false;    // an odd number of unary minus signs folded into the number
  bool is_array = false;  // the value is an array (= ANY(...)), in array text or binary form
  bool cast = false;      // a cast to `cast_type` was written on the value
  bool bytewise = false;  // COLLATE "C" (or "POSIX", "ucs_basic") was written on the value
  conf::KeyType cast_type = conf::KeyType::kBigint;
  int32_t index = 0;  // kLiteral: literal index; kParam: parameter number (1-based)
  std::string text;   // kConstant
};

// A condition on one table occurrence's sharding key, as a tree stored flat in
// QueryAnalysis::predicates; children and values are index ranges into QueryAnalysis::children and
// QueryAnalysis::values.
struct KeyPredicate {
  enum class Op : uint8_t {
    kEqual,     // key = values[first]
    kIn,        // key IN (values[first .. first+count))
    kAnyArray,  // key = ANY(values[first]), an array value
    kRange,     // lower / upper bounds (values index, -1: unbounded)
    kAnd,
    kOr,
  };
  Op op = Op::kEqual;
  uint32_t first = 0;
  uint32_t count = 0;
  int32_t lower = -1;
  int32_t upper = -1;
  bool lower_inclusive = true;
  bool upper_inclusive = true;
};

// One occurrence of a table in the statement (a self-join has two). The config facts the analysis
// relied on are kept, so that a cached analysis is noticed to be stale after a config reload.
struct TableRef {
  std::string schema;  // as written (empty: unqualified)
  std::string name;
  std::string alias;  // empty if none
  TableClass table_class = TableClass::kUnsharded;
  std::string key_column;  // kSharded
  conf::KeyType key_type = conf::KeyType::kBigint;
  conf::Strategy strategy = conf::Strategy::kHash;
  bool written = false;    // target of INSERT / UPDATE / DELETE / MERGE / COPY FROM, or DDL
  bool locked = false;     // FOR UPDATE / FOR SHARE
  int32_t predicate = -1;  // its key condition (-1: none: every row may matter)
  int32_t insert = -1;     // index into QueryAnalysis::inserts for an INSERT target
  bool current_of =
      false;  // UPDATE / DELETE ... WHERE CURRENT OF: rows of the transaction's cursor
  // In the FROM of the outermost statement (or of a FROM subquery of it, or the UPDATE / DELETE
  // target), not in a subquery, CTE or set-operation branch: a table whose rows each shard can
  // split the statement's work by.
  bool outer_level = false;
  std::vector<ValueRef> key_assignments;  // UPDATE SET key = ..., ON CONFLICT DO UPDATE SET key
  // "schema.table" or "table", as written.
  std::string display() const { return schema.empty() ? name : schema + "." + name; }
  // The key column as the statement would qualify it: "u.id" with an alias, else "users.id".
  std::string qualifiedKey() const { return (alias.empty() ? name : alias) + "." + key_column; }
};

// The rows an INSERT writes: the key value of each row, or every cell when the table's column
// order is needed to find the key (INSERT without a column list).
struct InsertRows {
  int32_t table = -1;
  bool column_list = true;         // false: cells hold `width` values per row
  bool key_in_column_list = true;  // false: the key column was not listed (it gets its default)
  uint32_t rows = 0;
  uint32_t width = 1;
  std::vector<ValueRef> cells;        // rows * width
  std::vector<int32_t> cell_sources;  // per cell: a table occurrence whose key this cell copies
                                      // (INSERT ... SELECT other.key), else -1
  bool from_select = false;           // INSERT ... SELECT (rows = 1 stands for all of them)
  bool default_values = false;        // INSERT ... DEFAULT VALUES
};

// `narrowed`'s key equals `from`'s key on every row that matters (a join, IN or correlated
// equality on both sharding keys), so if the two tables are co-located, narrowed's rows are on
// from's shards.
struct KeyEquality {
  int32_t narrowed = -1;
  int32_t from = -1;
};

// ORDER BY item recorded for the multi-shard executor.
struct OrderItem {
  std::string expression;  // column name as written, or "" for an ordinal / other expression
  std::optional<ValueRef> ordinal;  // ORDER BY 2
  bool descending = false;
  std::optional<bool> nulls_first;
};

// The shape of the outermost SELECT, for the multi-shard executor (later issue).
struct SelectShape {
  bool aggregates = false;
  bool window_functions = false;
  std::vector<std::string> aggregate_functions;
  size_t group_by_items = 0;
  bool having = false;
  std::vector<OrderItem> order_by;
  std::optional<ValueRef> limit;
  std::optional<ValueRef> offset;
  bool distinct = false;
  bool distinct_on = false;
  bool set_operation = false;  // UNION / INTERSECT / EXCEPT
};

struct QueryAnalysis {
  StatementKind kind = StatementKind::kEmpty;
  ExplainMode explain = ExplainMode::kNone;
  TransactionAction transaction = TransactionAction::kNone;
  bool chain = false;                  // COMMIT / ROLLBACK AND CHAIN
  bool start_transaction = false;      // START TRANSACTION, whose tag is not BEGIN's
  std::string savepoint_name;          // SAVEPOINT / RELEASE / ROLLBACK TO: the savepoint's name
  bool read_only_transaction = false;  // BEGIN READ ONLY / SET TRANSACTION READ ONLY
  bool resets_session = false;         // RESET ALL / DISCARD ALL
  bool sets_constraints = false;       // SET CONSTRAINTS (kind kSet: it holds for the transaction)
  bool writes = false;                 // modifies data or needs the primary (see Analyzer)
  std::string write_reason;            // why it writes: "UPDATE", "nextval()", "FOR UPDATE", ...

  std::vector<TableRef> tables;
  std::vector<KeyPredicate> predicates;
  std::vector<int32_t> children;
  std::vector<ValueRef> values;
  std::vector<KeyEquality> equalities;
  std::vector<InsertRows> inserts;
  SelectShape shape;
  bool returning = false;
  bool on_conflict = false;
  bool copy_from_sharded = false;  // COPY <sharded table> FROM: rows split by key (see CopySplit)

  // kShardgateSetting
  SettingAction setting_action = SettingAction::kNone;
  std::string setting_name;  // "shardgate.read_preference" (lower case)
  std::optional<ValueRef> setting_value;
  bool setting_local = false;  // SET LOCAL

  // A statement shardgate refuses whatever the values (e.g. MERGE into a sharded table): the
  // router reports it (EXPLAIN (ROUTE) shows it).
  std::optional<Error> unsupported;
  bool unsupported_only_when_sharded = false;  // ...and only if the database has several shards

  // Whether the analysis refers to literals by their position in a LiteralTemplate (it can then
  // serve every text with the same template); false: constants are inline, the analysis belongs
  // to this exact text.
  bool templated = false;
  std::vector<int32_t> param_types;  // from Parse (0: unspecified)

  // The parse this came from (kept for re-analysis after a config change, and for rewrites later).
  std::shared_ptr<const parser::ParsedQuery> parsed;
  size_t statement_index = 0;

  const char* kindName() const;
};

}  // namespace shardgate::planner
