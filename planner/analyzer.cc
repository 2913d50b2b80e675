// Analyzer: walks libpg_query's tree of one statement and records tables, key conditions,
// co-location equalities, inserted keys, writes and the SELECT's shape (see analyzer.h).
#include "planner/analyzer.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>

#include <algorithm>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include "parser/node_helpers.h"

namespace shardgate::planner {
namespace {

using conf::KeyType;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using parser::NodeList;
using pg_query::Node;

constexpr std::string_view kStackDepthState = sqlstate::kStatementTooComplex;

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

// Built-in functions that write, take locks or otherwise must run on a primary.
bool isWriteFunction(std::string_view name) {
  static const std::unordered_set<std::string_view> kNames = {
      "nextval",
      "setval",
      "pg_advisory_lock",
      "pg_advisory_lock_shared",
      "pg_advisory_xact_lock",
      "pg_advisory_xact_lock_shared",
      "pg_try_advisory_lock",
      "pg_try_advisory_lock_shared",
      "pg_try_advisory_xact_lock",
      "pg_try_advisory_xact_lock_shared",
      "pg_advisory_unlock",
      "pg_advisory_unlock_shared",
      "pg_advisory_unlock_all",
      "pg_notify",
      "txid_current",
      "pg_current_xact_id",
      "set_config",
      "lo_create",
      "lo_creat",
      "lo_import",
      "lo_unlink",
      "lo_from_bytea",
      "lo_put",
      "lo_truncate",
      "lo_truncate64",
      "lowrite",
      "lo_open",
      "pg_logical_emit_message",
      "pg_create_logical_replication_slot",
      "pg_create_physical_replication_slot",
      "pg_drop_replication_slot",
      "pg_switch_wal",
      "pg_create_restore_point",
      "pg_stat_reset",
      "pg_stat_reset_shared",
      "pg_stat_reset_single_table_counters",
      "pg_stat_reset_single_function_counters",
      "pg_terminate_backend",
      "pg_cancel_backend",
      "pg_reload_conf",
      "pg_rotate_logfile",
      "pg_promote",
      "dblink_exec",
      "pg_import_system_collations",
  };
  return kNames.count(name) > 0;
}

bool isAggregateFunction(std::string_view name) {
  static const std::unordered_set<std::string_view> kNames = {"count",
                                                              "sum",
                                                              "avg",
                                                              "min",
                                                              "max",
                                                              "array_agg",
                                                              "string_agg",
                                                              "bool_and",
                                                              "bool_or",
                                                              "every",
                                                              "bit_and",
                                                              "bit_or",
                                                              "bit_xor",
                                                              "json_agg",
                                                              "jsonb_agg",
                                                              "json_object_agg",
                                                              "jsonb_object_agg",
                                                              "xmlagg",
                                                              "stddev",
                                                              "stddev_pop",
                                                              "stddev_samp",
                                                              "variance",
                                                              "var_pop",
                                                              "var_samp",
                                                              "corr",
                                                              "covar_pop",
                                                              "covar_samp",
                                                              "regr_avgx",
                                                              "regr_avgy",
                                                              "regr_count",
                                                              "regr_intercept",
                                                              "regr_r2",
                                                              "regr_slope",
                                                              "regr_sxx",
                                                              "regr_sxy",
                                                              "regr_syy",
                                                              "percentile_cont",
                                                              "percentile_disc",
                                                              "mode",
                                                              "range_agg",
                                                              "range_intersect_agg"};
  return kNames.count(name) > 0;
}

// COLLATE "C", "POSIX" or "ucs_basic": bytewise order, the order range and list sharding of text
// keys use (conf/sharding.h).
bool isBytewiseCollation(const pg_query::CollateClause& c) {
  const std::optional<std::string_view> name = parser::lastName(c.collname());
  return name && (*name == "C" || *name == "POSIX" || *name == "ucs_basic");
}

// A FROM entry visible to column references.
struct Entry {
  std::string_view name;    // alias, else relation name
  std::string_view schema;  // the relation's schema when there is no alias
  int32_t table = -1;       // table occurrence; -1 for subqueries, CTEs, functions
};

struct Scope {
  int32_t parent = -1;
  std::vector<Entry> entries;
  std::vector<int32_t> level_tables;  // occurrences in this level's FROM
  std::vector<std::string_view> ctes;
  bool using_join = false;  // JOIN ... USING / NATURAL: unqualified names may be merged columns
  bool from_item = false;   // a subquery in its parent's FROM (its tables are the parent's rows)
  // Key equalities of this level's WHERE between one of its tables and an outer one:
  // (inner, outer).
  std::vector<std::pair<int32_t, int32_t>> correlated;
};

class Analyzer {
 public:
  Analyzer(const conf::Database& db, const LiteralTemplate* literals, QueryAnalysis& out,
           size_t max_depth)
      : db_(db), lit_(literals), out_(out), max_depth_(max_depth) {}

  Status run(const Node& stmt) {
    const int32_t root = newScope(-1);
    analyzeTop(stmt, root);
    if (depth_error_) {
      return Error::make(
          kStackDepthState, "stack depth limit exceeded",
          "the statement nests more than " + std::to_string(max_depth_) + " levels deep");
    }
    // Each table's conditions from every WHERE / ON that filters it, AND-ed.
    for (size_t t = 0; t < out_.tables.size(); ++t) {
      const std::vector<int32_t>& roots = table_preds_[t];
      if (roots.empty()) continue;
      out_.tables[t].predicate =
          roots.size() == 1 ? roots[0] : combine(KeyPredicate::Op::kAnd, roots);
    }
    out_.templated = lit_ != nullptr && !template_unsafe_;
    markOuterLevel();
    return {};
  }

 private:
  // Scope 1 is the outermost statement's level (scope 0 holds nothing); FROM subqueries of an
  // outer level are outer too.
  void markOuterLevel() {
    std::vector<bool> outer(scopes_.size(), false);
    for (size_t s = 1; s < scopes_.size(); ++s) {
      const int32_t parent = scopes_[s].parent;
      outer[s] = s == 1 || (scopes_[s].from_item && parent >= 0 && outer[parent]);
      if (!outer[s]) continue;
      for (const int32_t t : scopes_[s].level_tables) out_.tables[t].outer_level = true;
    }
  }

  // ---- scopes and tables ----

  int32_t newScope(int32_t parent) {
    scopes_.push_back(Scope{});
    scopes_.back().parent = parent;
    return static_cast<int32_t>(scopes_.size() - 1);
  }

  bool isVisibleCte(std::string_view name, int32_t scope) const {
    for (int32_t s = scope; s >= 0; s = scopes_[s].parent) {
      for (std::string_view c : scopes_[s].ctes) {
        if (c == name) return true;
      }
    }
    return false;
  }

  int32_t addTable(const pg_query::RangeVar& rv, int32_t scope, bool written,
                   bool add_entry = true) {
    TableRef t;
    t.schema = rv.schemaname();
    t.name = rv.relname();
    if (rv.has_alias()) t.alias = rv.alias().aliasname();
    t.written = written;
    if (const conf::ShardedTable* st = db_.findShardedTable(t.schema, t.name)) {
      t.table_class = TableClass::kSharded;
      t.key_column = st->column;
      t.key_type = st->key_type;
      t.strategy = st->strategy;
    } else if (db_.isReferenceTable(t.schema, t.name)) {
      t.table_class = TableClass::kReference;
    }
    out_.tables.push_back(std::move(t));
    table_preds_.emplace_back();
    renamed_columns_.push_back(add_entry && rv.has_alias() && rv.alias().colnames_size() > 0
                                   ? &rv.alias().colnames()
                                   : nullptr);
    const auto index = static_cast<int32_t>(out_.tables.size() - 1);
    if (!add_entry) return index;  // `rv` does not outlive the analysis (DROP TABLE names)
    Entry e;
    e.table = index;
    if (rv.has_alias()) {
      e.name = rv.alias().aliasname();
    } else {
      e.name = rv.relname();
      e.schema = rv.schemaname();
    }
    scopes_[scope].entries.push_back(e);
    return index;
  }

  void noteWrite(std::string_view why) {
    if (!out_.writes) out_.write_reason = std::string(why);
    out_.writes = true;
  }

  // ---- values ----

  // The value of a constant, parameter or NULL (possibly cast), or nullopt if `n` is something
  // else (a column, an expression).
  std::optional<ValueRef> valueOf(const Node& n) {
    if (n.has_a_const()) return constValue(n.a_const());
    if (n.has_collate_clause()) {
      // Another collation may make unequal bytes compare equal (nondeterministic collations).
      const pg_query::CollateClause& c = n.collate_clause();
      if (!isBytewiseCollation(c) || !c.has_arg() || !enter()) return std::nullopt;
      std::optional<ValueRef> v = valueOf(c.arg());
      leave();
      if (v) v->bytewise = true;
      return v;
    }
    if (n.has_param_ref()) {
      ValueRef v;
      v.kind = ValueRef::Kind::kParam;
      v.index = n.param_ref().number();
      return v;
    }
    if (n.has_type_cast()) {
      const pg_query::TypeCast& tc = n.type_cast();
      if (!tc.has_arg()) return std::nullopt;
      const Node& arg = tc.arg();
      if (!arg.has_a_const() && !arg.has_param_ref()) {
        // A cast of a cast of a value is a value, but not one worth evaluating.
        if (arg.has_type_cast() && enter()) {
          const bool inner_value = valueOf(arg).has_value();
          leave();
          if (inner_value) return unknownValue();
        }
        return std::nullopt;
      }
      std::optional<ValueRef> v = valueOf(arg);
      if (!v) return std::nullopt;
      bool is_array = false;
      const std::optional<KeyType> type = keyTypeOfTypeName(tc.type_name(), is_array);
      if (v->kind == ValueRef::Kind::kNull) return v;
      // varchar(2) 'abc' is 'ab': a length shardgate does not apply is a value it does not know.
      if (!type || tc.type_name().typmods_size() > 0) return unknownValue();
      v->cast = true;
      v->cast_type = *type;
      v->is_array = is_array;
      return v;
    }
    return std::nullopt;
  }

  static ValueRef unknownValue() { return ValueRef{}; }

  std::optional<ValueRef> constValue(const pg_query::A_Const& c) {
    ValueRef v;
    if (c.isnull()) {
      v.kind = ValueRef::Kind::kNull;
      return v;
    }
    std::string inline_text;
    if (c.has_ival()) {
      v.token = ValueRef::Token::kInteger;
      inline_text = std::to_string(c.ival().ival());
    } else if (c.has_fval()) {
      v.token = ValueRef::Token::kNumeric;
      inline_text = c.fval().fval();
    } else if (c.has_sval()) {
      v.token = ValueRef::Token::kString;
      inline_text = c.sval().sval();
    } else {
      return unknownValue();  // booleans and bit strings are never sharding keys
    }
    if (lit_ != nullptr && c.location() >= 0) {
      int negations = 0;
      const std::optional<size_t> idx =
          lit_->literalForConstant(static_cast<size_t>(c.location()), negations);
      if (idx) {
        const LiteralKind kind = lit_->literals()[*idx].kind;
        const bool consistent =
            (v.token == ValueRef::Token::kInteger && kind == LiteralKind::kInteger) ||
            (v.token == ValueRef::Token::kNumeric && kind != LiteralKind::kString) ||
            (v.token == ValueRef::Token::kString && kind == LiteralKind::kString && negations == 0);
        if (consistent) {
          v.kind = ValueRef::Kind::kLiteral;
          v.index = static_cast<int32_t>(*idx);
          v.negate = negations % 2 == 1;
          v.token = kind == LiteralKind::kInteger   ? ValueRef::Token::kInteger
                    : kind == LiteralKind::kNumeric ? ValueRef::Token::kNumeric
                                                    : ValueRef::Token::kString;
          return v;
        }
      }
      markInline(static_cast<size_t>(c.location()));
    }
    v.kind = ValueRef::Kind::kConstant;
    v.text = std::move(inline_text);
    return v;
  }

  // A constant copied into the analysis is safe for a template only when it comes from keywords
  // or identifiers (SET x = on, BEGIN READ ONLY), which the template keeps verbatim.
  void markInline(size_t location) {
    if (lit_ == nullptr) return;
    const std::string_view sql = lit_->sql();
    const bool from_word = location < sql.size() &&
                           ((sql[location] >= 'a' && sql[location] <= 'z') ||
                            (sql[location] >= 'A' && sql[location] <= 'Z') || sql[location] == '_');
    if (!from_word) template_unsafe_ = true;
  }

  // A constant whose value decides the analysis itself (EXPLAIN options, transaction modes):
  // its text, inline; a literal there ties the analysis to the exact text.
  std::optional<std::string> decidingConstant(const Node& n) {
    if (n.has_a_const()) {
      const pg_query::A_Const& c = n.a_const();
      if (lit_ != nullptr && c.location() >= 0) {
        int negations = 0;
        if (lit_->literalForConstant(static_cast<size_t>(c.location()), negations)) {
          template_unsafe_ = true;
        } else {
          markInline(static_cast<size_t>(c.location()));
        }
      }
      if (c.isnull()) return std::nullopt;
      if (c.has_ival()) return std::to_string(c.ival().ival());
      if (c.has_fval()) return c.fval().fval();
      if (c.has_sval()) return c.sval().sval();
      if (c.has_boolval()) return c.boolval().boolval() ? "true" : "false";
      return std::nullopt;
    }
    // Bare Integer / Float / String nodes carry no location: they may come from a literal
    // (EXPLAIN (ANALYZE 1)), so a template cannot stand for the text.
    if (lit_ != nullptr) template_unsafe_ = true;
    if (n.has_boolean()) return n.boolean().boolval() ? "true" : "false";
    if (n.has_string()) return n.string().sval();
    if (n.has_integer()) return std::to_string(n.integer().ival());
    if (n.has_float_()) return n.float_().fval();
    return std::nullopt;
  }

  static bool truthy(const std::optional<std::string>& v, bool if_absent) {
    if (!v) return if_absent;
    const std::string s = lower(*v);
    return s == "1" || s == "true" || s == "on" || s == "yes" || s == "t" || s == "y";
  }

  // ---- column references ----

  // The sharded table occurrence whose key column `n` is (a column reference, possibly cast to a
  // type of the same family), resolved like Postgres resolves names: innermost scope first. An
  // unqualified name counts only when exactly one sharded table of the innermost scope with
  // entries has that key column (any other table with such a column makes Postgres report an
  // ambiguity); otherwise the reference is left unresolved, which only ever costs a narrower route.
  std::optional<int32_t> keyColumn(const Node& n, int32_t scope, bool* bytewise = nullptr) const {
    const Node* col = &n;
    if (bytewise != nullptr) *bytewise = false;
    if (n.has_collate_clause()) {
      if (!isBytewiseCollation(n.collate_clause()) || !n.collate_clause().has_arg()) {
        return std::nullopt;
      }
      if (bytewise != nullptr) *bytewise = true;
      col = &n.collate_clause().arg();
    }
    std::optional<KeyType> cast;
    if (col->has_type_cast()) {
      const Node& tcn = *col;
      bool is_array = false;
      cast = keyTypeOfTypeName(tcn.type_cast().type_name(), is_array);
      // key::varchar(2) = 'ab' holds for keys other than 'ab'.
      if (!cast || is_array || !tcn.type_cast().has_arg() ||
          tcn.type_cast().type_name().typmods_size() > 0) {
        return std::nullopt;
      }
      col = &tcn.type_cast().arg();
    }
    if (!col->has_column_ref()) return std::nullopt;
    const std::optional<int32_t> t = resolveColumn(col->column_ref().fields(), scope);
    if (!t) return std::nullopt;
    if (cast && !sameKeyFamily(*cast, out_.tables[*t].key_type)) return std::nullopt;
    return t;
  }

  // Whether `column`, a column name of table occurrence `t`, is its sharding key. An alias column
  // list (FROM t AS x(a, b)) renames the table's first columns: a name in it stands for a column
  // whose position shardgate does not know, so it is never taken for the key (the statement then
  // goes to every shard its other conditions allow); the table's other columns keep their names.
  bool namesKey(int32_t t, std::string_view column) const {
    const TableRef& ref = out_.tables[t];
    if (ref.table_class != TableClass::kSharded || ref.key_column != column) return false;
    if (const NodeList* renamed = renamed_columns_[t]) {
      for (const Node& n : *renamed) {
        const std::optional<std::string_view> name = parser::stringValue(n);
        if (!name || *name == column) return false;
      }
    }
    return true;
  }

  std::optional<int32_t> resolveColumn(const NodeList& fields, int32_t scope) const {
    std::string_view parts[3];
    const int n = fields.size();
    if (n < 1 || n > 3) return std::nullopt;
    for (int i = 0; i < n; ++i) {
      const std::optional<std::string_view> s = parser::stringValue(fields[i]);
      if (!s) return std::nullopt;
      parts[i] = *s;
    }
    const std::string_view column = parts[n - 1];
    for (int32_t s = scope; s >= 0; s = scopes_[s].parent) {
      const Scope& sc = scopes_[s];
      if (n == 1) {
        if (sc.entries.empty()) continue;
        std::optional<int32_t> found;
        int matches = 0;
        for (const Entry& e : sc.entries) {
          if (e.table < 0 || !namesKey(e.table, column)) continue;
          ++matches;
          found = e.table;
        }
        if (matches == 1 && !sc.using_join) return found;
        return std::nullopt;
      }
      for (const Entry& e : sc.entries) {
        const bool match = n == 2
                               ? e.name == parts[0]
                               : (!e.schema.empty() && e.schema == parts[0] && e.name == parts[1]);
        if (!match) continue;
        if (e.table < 0 || !namesKey(e.table, column)) return std::nullopt;
        return e.table;
      }
    }
    return std::nullopt;
  }

  // ---- key predicates ----

  int32_t addValue(ValueRef v) {
    out_.values.push_back(std::move(v));
    return static_cast<int32_t>(out_.values.size() - 1);
  }

  int32_t addPredicate(KeyPredicate p) {
    out_.predicates.push_back(p);
    return static_cast<int32_t>(out_.predicates.size() - 1);
  }

  int32_t combine(KeyPredicate::Op op, const std::vector<int32_t>& kids) {
    KeyPredicate p;
    p.op = op;
    p.first = static_cast<uint32_t>(out_.children.size());
    p.count = static_cast<uint32_t>(kids.size());
    out_.children.insert(out_.children.end(), kids.begin(), kids.end());
    return addPredicate(p);
  }

  int32_t comparison(std::string_view op, ValueRef v) {
    KeyPredicate p;
    const int32_t idx = addValue(std::move(v));
    if (op == "=") {
      p.op = KeyPredicate::Op::kEqual;
      p.first = static_cast<uint32_t>(idx);
      p.count = 1;
      return addPredicate(p);
    }
    p.op = KeyPredicate::Op::kRange;
    if (op == "<" || op == "<=") {
      p.upper = idx;
      p.upper_inclusive = op == "<=";
    } else {
      p.lower = idx;
      p.lower_inclusive = op == ">=";
    }
    return addPredicate(p);
  }

  // Whether `<` on occurrence t's key orders as the sharding does. Text keys are ranged and listed
  // bytewise (COLLATE "C"); a column's own collation may order differently (en_US puts 'b'
  // before 'M'), so their ranges count only under an explicit bytewise COLLATE.
  bool orderIsBytewise(int32_t t, bool explicit_bytewise) const {
    const KeyType type = out_.tables[t].key_type;
    return (type != KeyType::kText && type != KeyType::kVarchar) || explicit_bytewise;
  }

  static std::string_view flip(std::string_view op) {
    if (op == "<") return ">";
    if (op == "<=") return ">=";
    if (op == ">") return "<";
    if (op == ">=") return "<=";
    return op;
  }

  int32_t listPredicate(const NodeList& items, const std::optional<ValueRef>& cast_from) {
    std::vector<ValueRef> vals;
    for (const Node& item : items) {
      std::optional<ValueRef> v = valueOf(item);
      if (!v || v->kind == ValueRef::Kind::kUnknown) return -1;
      if (cast_from && v->kind != ValueRef::Kind::kNull && !v->cast) {
        v->cast = true;
        v->cast_type = cast_from->cast_type;
      }
      vals.push_back(std::move(*v));
    }
    if (vals.empty()) return -1;
    KeyPredicate p;
    p.op = KeyPredicate::Op::kIn;
    p.first = static_cast<uint32_t>(out_.values.size());
    p.count = static_cast<uint32_t>(vals.size());
    for (ValueRef& v : vals) out_.values.push_back(std::move(v));
    return addPredicate(p);
  }

  // The condition `e` puts on occurrence t's key; -1 if none (every row of t may qualify).
  int32_t buildPredicate(const Node& e, int32_t t, int32_t scope) {
    if (!enter()) return -1;
    const int32_t p = buildPredicateInner(e, t, scope);
    leave();
    return p;
  }

  int32_t buildPredicateInner(const Node& e, int32_t t, int32_t scope) {
    if (e.has_bool_expr()) {
      const pg_query::BoolExpr& b = e.bool_expr();
      if (b.boolop() == pg_query::NOT_EXPR) return -1;
      std::vector<int32_t> kids;
      for (const Node& arg : b.args()) {
        const int32_t k = buildPredicate(arg, t, scope);
        if (b.boolop() == pg_query::OR_EXPR && k < 0) return -1;
        if (k >= 0) kids.push_back(k);
      }
      if (kids.empty()) return -1;
      if (kids.size() == 1) return kids[0];
      return combine(
          b.boolop() == pg_query::AND_EXPR ? KeyPredicate::Op::kAnd : KeyPredicate::Op::kOr, kids);
    }
    if (!e.has_a_expr()) return -1;
    const pg_query::A_Expr& a = e.a_expr();
    const std::optional<std::string_view> op = parser::lastName(a.name());
    if (!op) return -1;
    switch (a.kind()) {
      case pg_query::AEXPR_OP: {
        if (*op != "=" && *op != "<" && *op != "<=" && *op != ">" && *op != ">=") return -1;
        if (!a.has_lexpr() || !a.has_rexpr()) return -1;
        for (const bool key_left : {true, false}) {
          bool bytewise = false;
          if (keyColumn(key_left ? a.lexpr() : a.rexpr(), scope, &bytewise) != t) continue;
          std::optional<ValueRef> v = valueOf(key_left ? a.rexpr() : a.lexpr());
          if (!v || v->kind == ValueRef::Kind::kUnknown || v->is_array) continue;
          if (*op != "=" && !orderIsBytewise(t, bytewise || v->bytewise)) return -1;
          return comparison(key_left ? *op : flip(*op), std::move(*v));
        }
        return -1;
      }
      case pg_query::AEXPR_IN:
        if (*op != "=" || !a.has_lexpr() || keyColumn(a.lexpr(), scope) != t) return -1;
        if (!a.rexpr().has_list()) return -1;
        return listPredicate(a.rexpr().list().items(), std::nullopt);
      case pg_query::AEXPR_OP_ANY: {
        if (*op != "=" || !a.has_lexpr() || keyColumn(a.lexpr(), scope) != t) return -1;
        const Node& r = a.rexpr();
        if (r.has_a_array_expr()) return listPredicate(r.a_array_expr().elements(), std::nullopt);
        if (r.has_type_cast() && r.type_cast().arg().has_a_array_expr()) {
          bool is_array = false;
          const std::optional<KeyType> type =
              keyTypeOfTypeName(r.type_cast().type_name(), is_array);
          if (!type || !is_array) return -1;
          ValueRef cast;
          cast.cast = true;
          cast.cast_type = *type;
          return listPredicate(r.type_cast().arg().a_array_expr().elements(), cast);
        }
        std::optional<ValueRef> v = valueOf(r);
        if (!v || v->kind == ValueRef::Kind::kUnknown) return -1;
        if (v->kind == ValueRef::Kind::kLiteral || v->kind == ValueRef::Kind::kConstant) {
          if (v->token != ValueRef::Token::kString) return -1;
        }
        if (v->cast && !v->is_array) return -1;
        v->is_array = true;
        KeyPredicate p;
        p.op = KeyPredicate::Op::kAnyArray;
        p.first = static_cast<uint32_t>(addValue(std::move(*v)));
        p.count = 1;
        return addPredicate(p);
      }
      case pg_query::AEXPR_BETWEEN:
      case pg_query::AEXPR_BETWEEN_SYM: {
        bool bytewise = false;
        if (!a.has_lexpr() || keyColumn(a.lexpr(), scope, &bytewise) != t) return -1;
        if (!a.rexpr().has_list() || a.rexpr().list().items_size() != 2) return -1;
        std::optional<ValueRef> lo = valueOf(a.rexpr().list().items(0));
        std::optional<ValueRef> hi = valueOf(a.rexpr().list().items(1));
        if (!lo || !hi || lo->kind == ValueRef::Kind::kUnknown ||
            hi->kind == ValueRef::Kind::kUnknown || lo->is_array || hi->is_array) {
          return -1;
        }
        if (!orderIsBytewise(t, bytewise || (lo->bytewise && hi->bytewise))) return -1;
        const int32_t lo_idx = addValue(std::move(*lo));
        const int32_t hi_idx = addValue(std::move(*hi));
        KeyPredicate p;
        p.op = KeyPredicate::Op::kRange;
        p.lower = lo_idx;
        p.upper = hi_idx;
        const int32_t forward = addPredicate(p);
        if (a.kind() == pg_query::AEXPR_BETWEEN) return forward;
        std::swap(p.lower, p.upper);  // SYMMETRIC: either order
        const int32_t backward = addPredicate(p);
        return combine(KeyPredicate::Op::kOr, {forward, backward});
      }
      default:
        return -1;
    }
  }

  // ---- WHERE / ON conditions ----

  // Applies a WHERE or JOIN ... ON condition: key conditions on each occurrence in `filtered`
  // (the occurrences whose contributing rows must satisfy it), key equalities from its top-level
  // conjuncts, and the tables and functions inside it.
  void applyCondition(const Node& cond, int32_t scope, const std::vector<int32_t>& filtered,
                      bool where_clause) {
    collectEqualities(cond, scope, filtered, where_clause);
    for (int32_t t : filtered) {
      if (out_.tables[t].table_class != TableClass::kSharded) continue;
      const int32_t p = buildPredicate(cond, t, scope);
      if (p >= 0) table_preds_[t].push_back(p);
    }
    walk(cond, scope);
  }

  static bool contains(const std::vector<int32_t>& v, int32_t x) {
    return std::find(v.begin(), v.end(), x) != v.end();
  }

  void addEquality(int32_t narrowed, int32_t from) {
    if (narrowed == from) return;
    out_.equalities.push_back({narrowed, from});
  }

  void collectEqualities(const Node& cond, int32_t scope, const std::vector<int32_t>& filtered,
                         bool where_clause) {
    if (cond.has_bool_expr()) {
      if (cond.bool_expr().boolop() != pg_query::AND_EXPR || !enter()) return;
      for (const Node& arg : cond.bool_expr().args()) {
        collectEqualities(arg, scope, filtered, where_clause);
      }
      leave();
      return;
    }
    if (cond.has_a_expr()) {
      const pg_query::A_Expr& a = cond.a_expr();
      const std::optional<std::string_view> op = parser::lastName(a.name());
      if (a.kind() != pg_query::AEXPR_OP || !op || *op != "=") return;
      if (!a.has_lexpr() || !a.has_rexpr()) return;
      const std::optional<int32_t> l = keyColumn(a.lexpr(), scope);
      const std::optional<int32_t> r = keyColumn(a.rexpr(), scope);
      if (!l || !r) return;
      const bool l_filtered = contains(filtered, *l);
      const bool r_filtered = contains(filtered, *r);
      if (l_filtered) addEquality(*l, *r);
      if (r_filtered) addEquality(*r, *l);
      if (where_clause && l_filtered != r_filtered) {
        scopes_[scope].correlated.emplace_back(l_filtered ? *l : *r, l_filtered ? *r : *l);
      }
      return;
    }
    if (cond.has_sub_link() && cond.sub_link().sub_link_type() == pg_query::EXISTS_SUBLINK) {
      // EXISTS (SELECT ... WHERE inner.key = outer.key ...) as a top-level conjunct: the outer
      // rows that qualify have a matching inner row, so they follow the inner table's shards
      // (unless an aggregate makes the subquery return a row whatever it finds).
      const pg_query::SubLink& sl = cond.sub_link();
      if (!sl.subselect().has_select_stmt()) return;
      const pg_query::SelectStmt& sub = sl.subselect().select_stmt();
      const int32_t sub_scope = analyzeSelect(sub, scope);
      if (sub.op() != pg_query::SETOP_NONE || sub.group_clause_size() > 0 ||
          sub.has_having_clause() || hasAggregates(sub)) {
        return;
      }
      const auto correlated = scopes_[sub_scope].correlated;
      for (const auto& [inner, outer] : correlated) {
        if (contains(filtered, outer)) addEquality(outer, inner);
      }
      return;
    }
    if (cond.has_sub_link()) {
      // key IN (SELECT other.key ...) as a top-level conjunct is a semi-join on the keys.
      const pg_query::SubLink& sl = cond.sub_link();
      if (sl.sub_link_type() != pg_query::ANY_SUBLINK || !sl.has_testexpr()) return;
      if (sl.oper_name_size() > 0) {
        const std::optional<std::string_view> op = parser::lastName(sl.oper_name());
        if (!op || *op != "=") return;
      }
      const std::optional<int32_t> outer = keyColumn(sl.testexpr(), scope);
      if (!outer || !sl.subselect().has_select_stmt()) return;
      const pg_query::SelectStmt& sub = sl.subselect().select_stmt();
      const int32_t sub_scope = analyzeSelect(sub, scope);
      if (sub.op() != pg_query::SETOP_NONE || sub.target_list_size() != 1) return;
      const Node& target = sub.target_list(0);
      if (!target.has_res_target() || !target.res_target().has_val()) return;
      const std::optional<int32_t> inner = keyColumn(target.res_target().val(), sub_scope);
      if (!inner || !contains(scopes_[sub_scope].level_tables, *inner)) return;
      if (contains(filtered, *outer)) addEquality(*outer, *inner);
      addEquality(*inner, *outer);
    }
  }

  // ---- FROM ----

  void addFromItem(const Node& item, int32_t scope, std::vector<int32_t>& subtree) {
    if (item.has_range_var()) {
      const pg_query::RangeVar& rv = item.range_var();
      if (rv.schemaname().empty() && isVisibleCte(rv.relname(), scope)) {
        Entry e;
        e.name = rv.has_alias() ? std::string_view(rv.alias().aliasname())
                                : std::string_view(rv.relname());
        scopes_[scope].entries.push_back(e);
        return;
      }
      const int32_t t = addTable(rv, scope, false);
      scopes_[scope].level_tables.push_back(t);
      subtree.push_back(t);
      return;
    }
    if (item.has_join_expr()) {
      addJoin(item.join_expr(), scope, subtree);
      return;
    }
    if (item.has_range_subselect()) {
      const pg_query::RangeSubselect& rs = item.range_subselect();
      if (rs.subquery().has_select_stmt()) {
        const int32_t sub = analyzeSelect(rs.subquery().select_stmt(), scope);
        if (sub != scope) scopes_[sub].from_item = true;
      } else {
        walk(rs.subquery(), scope);
      }
      Entry e;
      if (rs.has_alias()) e.name = rs.alias().aliasname();
      scopes_[scope].entries.push_back(e);
      return;
    }
    if (item.has_range_table_sample()) {
      const pg_query::RangeTableSample& ts = item.range_table_sample();
      addFromItem(ts.relation(), scope, subtree);
      for (const Node& a : ts.args()) walk(a, scope);
      if (ts.has_repeatable()) walk(ts.repeatable(), scope);
      return;
    }
    if (item.has_range_function()) {
      const pg_query::RangeFunction& rf = item.range_function();
      for (const Node& f : rf.functions()) walk(f, scope);
      Entry e;
      if (rf.has_alias()) e.name = rf.alias().aliasname();
      scopes_[scope].entries.push_back(e);
      return;
    }
    walk(item, scope);
    Entry e;  // RangeTableFunc (XMLTABLE) and anything else: not a table
    if (item.has_range_table_func() && item.range_table_func().has_alias()) {
      e.name = item.range_table_func().alias().aliasname();
    }
    scopes_[scope].entries.push_back(e);
  }

  // The occurrence among `tables` whose key column is `column`, if exactly one.
  std::optional<int32_t> keyNamed(const std::vector<int32_t>& tables,
                                  std::string_view column) const {
    std::optional<int32_t> found;
    for (int32_t t : tables) {
      if (!namesKey(t, column)) continue;
      if (found) return std::nullopt;
      found = t;
    }
    return found;
  }

  void addJoin(const pg_query::JoinExpr& j, int32_t scope, std::vector<int32_t>& subtree) {
    std::vector<int32_t> left;
    std::vector<int32_t> right;
    addFromItem(j.larg(), scope, left);
    addFromItem(j.rarg(), scope, right);
    // The occurrences whose contributing rows the join condition filters: both sides of an inner
    // join, the nullable side of an outer join, none of a full join.
    std::vector<int32_t> filtered;
    switch (j.jointype()) {
      case pg_query::JOIN_INNER:
        filtered = left;
        filtered.insert(filtered.end(), right.begin(), right.end());
        break;
      case pg_query::JOIN_LEFT:
        filtered = right;
        break;
      case pg_query::JOIN_RIGHT:
        filtered = left;
        break;
      default:
        break;
    }
    if (j.is_natural() || j.using_clause_size() > 0) scopes_[scope].using_join = true;
    for (const Node& name : j.using_clause()) {
      const std::optional<std::string_view> col = parser::stringValue(name);
      if (!col) continue;
      const std::optional<int32_t> l = keyNamed(left, *col);
      const std::optional<int32_t> r = keyNamed(right, *col);
      if (!l || !r) continue;
      if (contains(filtered, *l)) addEquality(*l, *r);
      if (contains(filtered, *r)) addEquality(*r, *l);
    }
    if (j.has_quals()) applyCondition(j.quals(), scope, filtered, /*where_clause=*/false);
    if (j.has_alias()) {
      Entry e;
      e.name = j.alias().aliasname();
      scopes_[scope].entries.push_back(e);
    }
    subtree.insert(subtree.end(), left.begin(), left.end());
    subtree.insert(subtree.end(), right.begin(), right.end());
  }

  // ---- statements ----

  void analyzeWith(const pg_query::WithClause& with, int32_t scope) {
    for (const Node& n : with.ctes()) {
      if (!n.has_common_table_expr()) continue;
      const pg_query::CommonTableExpr& cte = n.common_table_expr();
      if (with.recursive()) scopes_[scope].ctes.push_back(cte.ctename());
      const Node& q = cte.ctequery();
      if (q.has_select_stmt()) {
        analyzeSelect(q.select_stmt(), scope);
      } else if (q.has_insert_stmt() || q.has_update_stmt() || q.has_delete_stmt() ||
                 q.has_merge_stmt()) {
        noteWrite("data-modifying WITH");
        analyzeDml(q, scope);
      } else {
        walk(q, scope);
      }
      if (!with.recursive()) scopes_[scope].ctes.push_back(cte.ctename());
    }
  }

  int32_t analyzeSelect(const pg_query::SelectStmt& s, int32_t parent) {
    if (analyzed_.count(&s) > 0) return analyzed_[&s];
    const int32_t sc = newScope(parent);
    analyzed_[&s] = sc;
    if (!enter()) return sc;
    if (s.has_with_clause()) analyzeWith(s.with_clause(), sc);
    if (s.op() != pg_query::SETOP_NONE) {
      if (s.has_larg()) analyzeSelect(s.larg(), sc);
      if (s.has_rarg()) analyzeSelect(s.rarg(), sc);
    }
    std::vector<int32_t> subtree;
    for (const Node& item : s.from_clause()) addFromItem(item, sc, subtree);
    if (s.has_where_clause()) {
      const std::vector<int32_t> level = scopes_[sc].level_tables;
      applyCondition(s.where_clause(), sc, level, /*where_clause=*/true);
    }
    walkList(s.target_list(), sc);
    walkList(s.distinct_clause(), sc);
    walkList(s.group_clause(), sc);
    if (s.has_having_clause()) walk(s.having_clause(), sc);
    walkList(s.window_clause(), sc);
    walkList(s.values_lists(), sc);
    walkList(s.sort_clause(), sc);
    if (s.has_limit_offset()) walk(s.limit_offset(), sc);
    if (s.has_limit_count()) walk(s.limit_count(), sc);
    if (s.locking_clause_size() > 0) {
      noteWrite("FOR UPDATE / FOR SHARE");
      for (const Node& lc : s.locking_clause()) {
        if (!lc.has_locking_clause()) continue;
        const auto& rels = lc.locking_clause().locked_rels();
        for (const Entry& e : scopes_[sc].entries) {
          if (e.table < 0) continue;
          bool named = rels.empty();
          for (const Node& r : rels) {
            if (r.has_range_var() && r.range_var().relname() == e.name) named = true;
          }
          if (named) out_.tables[e.table].locked = true;
        }
      }
    }
    if (s.has_into_clause() && s.into_clause().has_rel()) {
      noteWrite("SELECT INTO");
      addTable(s.into_clause().rel(), sc, true);
    }
    leave();
    return sc;
  }

  void analyzeDml(const Node& stmt, int32_t parent) {
    if (stmt.has_insert_stmt()) {
      analyzeInsert(stmt.insert_stmt(), parent);
    } else if (stmt.has_update_stmt()) {
      analyzeUpdate(stmt.update_stmt(), parent);
    } else if (stmt.has_delete_stmt()) {
      analyzeDelete(stmt.delete_stmt(), parent);
    } else if (stmt.has_merge_stmt()) {
      analyzeMerge(stmt.merge_stmt(), parent);
    }
  }

  // A SET target of UPDATE or ON CONFLICT DO UPDATE that assigns the key column of `t`.
  void noteAssignment(const pg_query::ResTarget& rt, int32_t t, bool on_conflict) {
    TableRef& ref = out_.tables[t];
    if (ref.table_class != TableClass::kSharded || rt.name() != ref.key_column) return;
    if (rt.indirection_size() > 0) {  // SET key[1] = ..., SET key.field = ...
      ref.key_assignments.push_back(unknownValue());
      return;
    }
    const Node* val = rt.has_val() ? &rt.val() : nullptr;
    if (val != nullptr && val->has_multi_assign_ref()) {
      const pg_query::MultiAssignRef& m = val->multi_assign_ref();
      val = nullptr;
      if (m.source().has_row_expr() && m.colno() >= 1 &&
          m.colno() <= m.source().row_expr().args_size()) {
        val = &m.source().row_expr().args(m.colno() - 1);
      }
    }
    ValueRef v;
    if (val == nullptr) {
      v = unknownValue();
    } else if (val->has_set_to_default()) {
      v.kind = ValueRef::Kind::kDefault;
    } else if (val->has_column_ref()) {
      const NodeList& f = val->column_ref().fields();
      const std::optional<std::string_view> col = parser::lastName(f);
      const std::optional<std::string_view> qual =
          f.size() == 2 ? parser::stringValue(f[0]) : std::nullopt;
      const std::string_view self =
          ref.alias.empty() ? std::string_view(ref.name) : std::string_view(ref.alias);
      const bool same =
          col && *col == ref.key_column &&
          (f.size() == 1 || (qual && (*qual == self || (on_conflict && *qual == "excluded"))));
      if (same) v.kind = ValueRef::Kind::kSameColumn;
    } else if (std::optional<ValueRef> c = valueOf(*val)) {
      v = std::move(*c);
    }
    ref.key_assignments.push_back(std::move(v));
  }

  void analyzeInsert(const pg_query::InsertStmt& s, int32_t parent) {
    const int32_t sc = newScope(parent);
    noteWrite("INSERT");
    if (s.has_with_clause()) analyzeWith(s.with_clause(), sc);
    const int32_t t = addTable(s.relation(), sc, true);
    const bool sharded = out_.tables[t].table_class == TableClass::kSharded;

    InsertRows rows;
    rows.table = t;
    int key_position = -1;
    if (s.cols_size() > 0) {
      for (int i = 0; i < s.cols_size(); ++i) {
        const Node& c = s.cols(i);
        if (c.has_res_target() && c.res_target().indirection_size() == 0 &&
            c.res_target().name() == out_.tables[t].key_column) {
          key_position = i;
        }
      }
      rows.key_in_column_list = key_position >= 0;
    } else {
      rows.column_list = false;
    }

    if (!s.has_select_stmt()) {
      rows.default_values = true;
    } else if (s.select_stmt().has_select_stmt()) {
      const pg_query::SelectStmt& src = s.select_stmt().select_stmt();
      const bool plain_values = src.values_lists_size() > 0 && src.op() == pg_query::SETOP_NONE &&
                                src.from_clause_size() == 0 && !src.has_with_clause();
      if (plain_values) {
        const int32_t vsc = newScope(sc);
        uint32_t width = 0;
        for (const Node& row : src.values_lists()) {
          if (row.has_list()) width = std::max<uint32_t>(width, row.list().items_size());
        }
        rows.width = rows.column_list ? 1 : std::max<uint32_t>(width, 1);
        for (const Node& row : src.values_lists()) {
          if (!row.has_list()) continue;
          const NodeList& items = row.list().items();
          ++rows.rows;
          if (rows.column_list) {
            rows.cells.push_back(key_position >= 0 && key_position < items.size()
                                     ? cellValue(items[key_position])
                                     : defaultValue());
            rows.cell_sources.push_back(-1);
          } else {
            for (uint32_t i = 0; i < rows.width; ++i) {
              rows.cells.push_back(static_cast<int>(i) < items.size() ? cellValue(items[i])
                                                                      : defaultValue());
              rows.cell_sources.push_back(-1);
            }
          }
          for (const Node& item : items) walk(item, vsc);
        }
      } else {
        rows.from_select = true;
        rows.rows = 1;
        const int32_t ssc = analyzeSelect(src, sc);
        const bool simple = src.op() == pg_query::SETOP_NONE && src.values_lists_size() == 0;
        const int n = src.target_list_size();
        rows.width = rows.column_list ? 1 : std::max(n, 1);
        const auto cellFor = [&](int i, ValueRef& v, int32_t& source) {
          source = -1;
          v = unknownValue();
          if (!simple || i < 0 || i >= n || !src.target_list(i).has_res_target()) return;
          const pg_query::ResTarget& rt = src.target_list(i).res_target();
          if (!rt.has_val()) return;
          if (std::optional<ValueRef> c = valueOf(rt.val())) {
            v = std::move(*c);
            return;
          }
          const std::optional<int32_t> from = keyColumn(rt.val(), ssc);
          if (from && contains(scopes_[ssc].level_tables, *from)) source = *from;
        };
        // SELECT * hides the positions of the columns.
        const bool has_star =
            std::any_of(src.target_list().begin(), src.target_list().end(), isStarTarget);
        for (uint32_t i = 0; i < rows.width; ++i) {
          ValueRef v;
          int32_t source = -1;
          const int pos = rows.column_list ? key_position : static_cast<int>(i);
          if (!has_star) cellFor(pos, v, source);
          rows.cells.push_back(std::move(v));
          rows.cell_sources.push_back(source);
        }
      }
    } else {
      walk(s.select_stmt(), sc);
    }
    if (sharded) {
      out_.inserts.push_back(std::move(rows));
      out_.tables[t].insert = static_cast<int32_t>(out_.inserts.size() - 1);
    }

    if (s.has_on_conflict_clause()) {
      out_.on_conflict = true;
      const pg_query::OnConflictClause& oc = s.on_conflict_clause();
      const int32_t csc = newScope(sc);
      Entry target;
      target.name = s.relation().has_alias() ? std::string_view(s.relation().alias().aliasname())
                                             : std::string_view(s.relation().relname());
      scopes_[csc].entries.push_back(target);  // not a table entry: a single row, no routing
      Entry excluded;
      excluded.name = "excluded";
      scopes_[csc].entries.push_back(excluded);
      for (const Node& n : oc.target_list()) {
        if (n.has_res_target()) noteAssignment(n.res_target(), t, true);
        walk(n, csc);
      }
      if (oc.has_where_clause()) walk(oc.where_clause(), csc);
    }
    if (s.returning_list_size() > 0) {
      out_.returning = true;
      walkList(s.returning_list(), sc);
    }
  }

  static bool isStarTarget(const Node& tl) {
    if (!tl.has_res_target() || !tl.res_target().has_val()) return false;
    const Node& v = tl.res_target().val();
    return v.has_column_ref() && v.column_ref().fields_size() > 0 &&
           v.column_ref().fields(v.column_ref().fields_size() - 1).has_a_star();
  }

  ValueRef cellValue(const Node& n) {
    if (n.has_set_to_default()) return defaultValue();
    if (std::optional<ValueRef> v = valueOf(n)) return std::move(*v);
    return unknownValue();
  }
  static ValueRef defaultValue() {
    ValueRef v;
    v.kind = ValueRef::Kind::kDefault;
    return v;
  }

  void analyzeUpdate(const pg_query::UpdateStmt& s, int32_t parent) {
    const int32_t sc = newScope(parent);
    noteWrite("UPDATE");
    if (s.has_with_clause()) analyzeWith(s.with_clause(), sc);
    const int32_t t = addTable(s.relation(), sc, true);
    scopes_[sc].level_tables.push_back(t);
    std::vector<int32_t> subtree;
    for (const Node& item : s.from_clause()) addFromItem(item, sc, subtree);
    applyWhere(s, sc, t);
    for (const Node& n : s.target_list()) {
      if (n.has_res_target()) noteAssignment(n.res_target(), t, false);
      walk(n, sc);
    }
    if (s.returning_list_size() > 0) {
      out_.returning = true;
      walkList(s.returning_list(), sc);
    }
  }

  template <typename Stmt>
  void applyWhere(const Stmt& s, int32_t sc, int32_t target) {
    if (!s.has_where_clause()) return;
    if (s.where_clause().has_current_of_expr()) {
      out_.tables[target].current_of = true;
      return;
    }
    const std::vector<int32_t> level = scopes_[sc].level_tables;
    applyCondition(s.where_clause(), sc, level, /*where_clause=*/true);
  }

  void analyzeDelete(const pg_query::DeleteStmt& s, int32_t parent) {
    const int32_t sc = newScope(parent);
    noteWrite("DELETE");
    if (s.has_with_clause()) analyzeWith(s.with_clause(), sc);
    const int32_t t = addTable(s.relation(), sc, true);
    scopes_[sc].level_tables.push_back(t);
    std::vector<int32_t> subtree;
    for (const Node& item : s.using_clause()) addFromItem(item, sc, subtree);
    applyWhere(s, sc, t);
    if (s.returning_list_size() > 0) {
      out_.returning = true;
      walkList(s.returning_list(), sc);
    }
  }

  void analyzeMerge(const pg_query::MergeStmt& s, int32_t parent) {
    const int32_t sc = newScope(parent);
    noteWrite("MERGE");
    if (s.has_with_clause()) analyzeWith(s.with_clause(), sc);
    const int32_t t = addTable(s.relation(), sc, true);
    std::vector<int32_t> subtree;
    if (s.has_source_relation()) addFromItem(s.source_relation(), sc, subtree);
    if (s.has_join_condition()) walk(s.join_condition(), sc);
    walkList(s.merge_when_clauses(), sc);
    if (out_.tables[t].table_class == TableClass::kSharded) {
      out_.unsupported_only_when_sharded = true;
      out_.unsupported =
          Error::make(sqlstate::kFeatureNotSupported,
                      "MERGE into sharded table " + out_.tables[t].display() + " is not supported",
                      "MERGE may insert rows whose keys belong to other shards.",
                      "Use INSERT ... ON CONFLICT, UPDATE and DELETE with a condition on " +
                          out_.tables[t].qualifiedKey() + ".");
    }
  }

  void analyzeCopy(const pg_query::CopyStmt& s, int32_t scope) {
    out_.kind = StatementKind::kCopy;
    if (s.has_query()) {
      if (s.query().has_select_stmt()) {
        analyzeSelect(s.query().select_stmt(), scope);
      } else {
        analyzeDml(s.query(), scope);
      }
      return;
    }
    if (!s.has_relation()) return;
    // The table is the statement's outermost level, as a SELECT's FROM would be.
    const int32_t level = newScope(scope);
    const int32_t t = addTable(s.relation(), level, s.is_from());
    scopes_[level].level_tables.push_back(t);
    if (s.is_from()) noteWrite("COPY FROM");
    if (s.has_where_clause()) walk(s.where_clause(), level);
    const TableRef& ref = out_.tables[t];
    if (ref.table_class == TableClass::kSharded && s.is_from()) {
      out_.copy_from_sharded = true;  // split by the router (see CopySplit)
    }
  }

  // COMMENT ON TABLE / COLUMN names its table by a name list: the table is changed.
  void addCommented(const pg_query::CommentStmt& c, int32_t scope) {
    const auto type = c.objtype();
    if (type != pg_query::OBJECT_TABLE && type != pg_query::OBJECT_COLUMN) return;
    if (!c.object().has_list()) return;
    const NodeList& names = c.object().list().items();
    const int table_names = names.size() - (type == pg_query::OBJECT_COLUMN ? 1 : 0);
    if (table_names < 1) return;
    pg_query::RangeVar rv;
    rv.set_relname(std::string(parser::stringValue(names[table_names - 1]).value_or("")));
    if (table_names >= 2) {
      rv.set_schemaname(std::string(parser::stringValue(names[table_names - 2]).value_or("")));
    }
    addTable(rv, scope, true, /*add_entry=*/false);
  }

  // DROP TABLE names tables by name lists, not RangeVars.
  void addDropped(const pg_query::DropStmt& d, int32_t scope) {
    const auto type = d.remove_type();
    if (type != pg_query::OBJECT_TABLE && type != pg_query::OBJECT_FOREIGN_TABLE &&
        type != pg_query::OBJECT_MATVIEW && type != pg_query::OBJECT_VIEW) {
      return;
    }
    for (const Node& obj : d.objects()) {
      if (!obj.has_list()) continue;
      const NodeList& names = obj.list().items();
      pg_query::RangeVar rv;
      if (names.size() == 1) {
        rv.set_relname(std::string(parser::stringValue(names[0]).value_or("")));
      } else if (names.size() >= 2) {
        rv.set_schemaname(std::string(parser::stringValue(names[names.size() - 2]).value_or("")));
        rv.set_relname(std::string(parser::stringValue(names[names.size() - 1]).value_or("")));
      }
      addTable(rv, scope, true, /*add_entry=*/false);
    }
  }

  void recordShape(const pg_query::SelectStmt& s) {
    SelectShape& shape = out_.shape;
    shape.set_operation = s.op() != pg_query::SETOP_NONE;
    if (s.distinct_clause_size() > 0) {
      const bool plain =
          s.distinct_clause_size() == 1 && s.distinct_clause(0).node_case() == Node::NODE_NOT_SET;
      shape.distinct = true;
      shape.distinct_on = !plain;
    }
    shape.group_by_items = static_cast<size_t>(s.group_clause_size());
    shape.having = s.has_having_clause();
    for (const Node& t : s.target_list()) findAggregates(t);
    if (s.has_having_clause()) findAggregates(s.having_clause());
    shape.aggregates = !shape.aggregate_functions.empty() || s.group_clause_size() > 0;
    for (const Node& n : s.sort_clause()) {
      if (!n.has_sort_by()) continue;
      const pg_query::SortBy& sb = n.sort_by();
      OrderItem item;
      if (sb.node().has_column_ref()) {
        item.expression = parser::dottedName(sb.node().column_ref().fields());
      } else if (sb.node().has_a_const()) {
        item.ordinal = valueOf(sb.node());
      }
      item.descending = sb.sortby_dir() == pg_query::SORTBY_DESC;
      if (sb.sortby_nulls() == pg_query::SORTBY_NULLS_FIRST) item.nulls_first = true;
      if (sb.sortby_nulls() == pg_query::SORTBY_NULLS_LAST) item.nulls_first = false;
      shape.order_by.push_back(std::move(item));
    }
    if (s.has_limit_count()) {
      shape.limit = valueOf(s.limit_count());
      if (!shape.limit) shape.limit = unknownValue();
    }
    if (s.has_limit_offset()) {
      shape.offset = valueOf(s.limit_offset());
      if (!shape.offset) shape.offset = unknownValue();
    }
  }

  // Whether a SELECT level computes aggregates (it then returns a row even from no rows).
  bool hasAggregates(const pg_query::SelectStmt& s) {
    const SelectShape saved = out_.shape;
    out_.shape.aggregate_functions.clear();
    for (const Node& t : s.target_list()) findAggregates(t);
    const bool found = !out_.shape.aggregate_functions.empty();
    out_.shape = saved;
    return found;
  }

  // Aggregates and window functions of one SELECT level (not inside subqueries).
  void findAggregates(const Node& n) {
    if (n.has_sub_link() || n.has_select_stmt() || !enter()) return;
    if (n.has_func_call()) {
      const pg_query::FuncCall& f = n.func_call();
      if (f.has_over()) {
        out_.shape.window_functions = true;
      } else {
        const std::string name = lower(parser::lastName(f.funcname()).value_or(""));
        if (isAggregateFunction(name) || f.agg_star() || f.agg_distinct() || f.agg_within_group() ||
            f.agg_order_size() > 0 || f.has_agg_filter()) {
          out_.shape.aggregate_functions.push_back(name);
        }
      }
    }
    forEachChild(n, [this](const Node& c) { findAggregates(c); });
    leave();
  }

  void analyzeTransaction(const pg_query::TransactionStmt& t) {
    out_.kind = StatementKind::kTransaction;
    out_.chain = t.chain();
    switch (t.kind()) {
      case pg_query::TRANS_STMT_BEGIN:
      case pg_query::TRANS_STMT_START:
        out_.transaction = TransactionAction::kBegin;
        out_.start_transaction = t.kind() == pg_query::TRANS_STMT_START;
        break;
      case pg_query::TRANS_STMT_COMMIT:
        out_.transaction = TransactionAction::kCommit;
        break;
      case pg_query::TRANS_STMT_ROLLBACK:
        out_.transaction = TransactionAction::kRollback;
        break;
      case pg_query::TRANS_STMT_SAVEPOINT:
        out_.transaction = TransactionAction::kSavepoint;
        break;
      case pg_query::TRANS_STMT_RELEASE:
        out_.transaction = TransactionAction::kRelease;
        break;
      case pg_query::TRANS_STMT_ROLLBACK_TO:
        out_.transaction = TransactionAction::kRollbackTo;
        break;
      case pg_query::TRANS_STMT_PREPARE:
        out_.transaction = TransactionAction::kPrepare;
        break;
      case pg_query::TRANS_STMT_COMMIT_PREPARED:
        out_.transaction = TransactionAction::kCommitPrepared;
        break;
      case pg_query::TRANS_STMT_ROLLBACK_PREPARED:
        out_.transaction = TransactionAction::kRollbackPrepared;
        break;
      default:
        break;
    }
    if (out_.transaction == TransactionAction::kSavepoint ||
        out_.transaction == TransactionAction::kRelease ||
        out_.transaction == TransactionAction::kRollbackTo) {
      out_.savepoint_name = t.savepoint_name();
    }
    for (const Node& o : t.options()) {
      if (o.has_def_elem() && o.def_elem().defname() == "transaction_read_only") {
        out_.read_only_transaction = truthy(
            o.def_elem().has_arg() ? decidingConstant(o.def_elem().arg()) : std::nullopt, true);
      }
    }
  }

  void analyzeSet(const pg_query::VariableSetStmt& v) {
    const std::string name = lower(v.name());
    if (name.rfind("shardgate.", 0) == 0) {
      out_.kind = StatementKind::kShardgateSetting;
      out_.setting_name = name;
      out_.setting_local = v.is_local();
      switch (v.kind()) {
        case pg_query::VAR_SET_VALUE:
          out_.setting_action = SettingAction::kSet;
          if (v.args_size() != 1) {
            out_.unsupported = Error::make(sqlstate::kInvalidParameterValue,
                                           "SET " + name + " takes only one argument");
          } else {
            out_.setting_value = valueOf(v.args(0));
            if (!out_.setting_value) out_.setting_value = unknownValue();
          }
          break;
        case pg_query::VAR_SET_DEFAULT:
        case pg_query::VAR_RESET:
          out_.setting_action = SettingAction::kReset;
          break;
        default:
          out_.setting_action = SettingAction::kSet;
          out_.unsupported = Error::make(sqlstate::kFeatureNotSupported,
                                         "SET " + name + " FROM CURRENT is not supported");
          break;
      }
      return;
    }
    if (v.kind() == pg_query::VAR_RESET || v.kind() == pg_query::VAR_RESET_ALL) {
      out_.kind = StatementKind::kReset;
      out_.resets_session = v.kind() == pg_query::VAR_RESET_ALL;
      return;
    }
    out_.kind = StatementKind::kSet;
    if (v.kind() == pg_query::VAR_SET_MULTI && name == "transaction") {
      for (const Node& o : v.args()) {
        if (o.has_def_elem() && o.def_elem().defname() == "transaction_read_only") {
          out_.read_only_transaction = truthy(
              o.def_elem().has_arg() ? decidingConstant(o.def_elem().arg()) : std::nullopt, true);
        }
      }
    } else if (v.kind() == pg_query::VAR_SET_VALUE && name == "transaction_read_only" &&
               v.args_size() == 1) {
      out_.read_only_transaction = truthy(decidingConstant(v.args(0)), false);
    }
  }

  void analyzeExplain(const pg_query::ExplainStmt& e, int32_t scope) {
    out_.explain = ExplainMode::kPlain;
    bool route = false;
    bool analyze = false;
    for (const Node& o : e.options()) {
      if (!o.has_def_elem()) continue;
      const std::string opt = lower(o.def_elem().defname());
      const std::optional<std::string> arg =
          o.def_elem().has_arg() ? decidingConstant(o.def_elem().arg()) : std::nullopt;
      if (opt == "route") route = truthy(arg, true);
      if (opt == "analyze") analyze = truthy(arg, true);
    }
    out_.explain = route     ? ExplainMode::kRoute
                   : analyze ? ExplainMode::kAnalyze
                             : ExplainMode::kPlain;
    analyzeTopInner(e.query(), scope);
    if (out_.explain == ExplainMode::kPlain) {
      out_.writes = false;  // EXPLAIN without ANALYZE runs nothing
      out_.write_reason.clear();
    }
  }

  void analyzeTop(const Node& stmt, int32_t scope) {
    if (stmt.has_explain_stmt()) {
      analyzeExplain(stmt.explain_stmt(), scope);
      return;
    }
    analyzeTopInner(stmt, scope);
  }

  void analyzeTopInner(const Node& stmt, int32_t scope) {
    switch (stmt.node_case()) {
      case Node::kSelectStmt:
        out_.kind = StatementKind::kSelect;
        analyzeSelect(stmt.select_stmt(), scope);
        recordShape(stmt.select_stmt());
        return;
      case Node::kInsertStmt:
        out_.kind = StatementKind::kInsert;
        analyzeInsert(stmt.insert_stmt(), scope);
        return;
      case Node::kUpdateStmt:
        out_.kind = StatementKind::kUpdate;
        analyzeUpdate(stmt.update_stmt(), scope);
        return;
      case Node::kDeleteStmt:
        out_.kind = StatementKind::kDelete;
        analyzeDelete(stmt.delete_stmt(), scope);
        return;
      case Node::kMergeStmt:
        out_.kind = StatementKind::kMerge;
        analyzeMerge(stmt.merge_stmt(), scope);
        return;
      case Node::kCopyStmt:
        analyzeCopy(stmt.copy_stmt(), scope);
        return;
      case Node::kTransactionStmt:
        analyzeTransaction(stmt.transaction_stmt());
        return;
      case Node::kVariableSetStmt:
        analyzeSet(stmt.variable_set_stmt());
        return;
      case Node::kConstraintsSetStmt:
        out_.kind = StatementKind::kSet;
        out_.sets_constraints = true;
        return;
      case Node::kVariableShowStmt: {
        const std::string name = lower(stmt.variable_show_stmt().name());
        if (name.rfind("shardgate.", 0) == 0) {
          out_.kind = StatementKind::kShardgateSetting;
          out_.setting_action = SettingAction::kShow;
          out_.setting_name = name;
        } else {
          out_.kind = StatementKind::kShow;
        }
        return;
      }
      case Node::kDeclareCursorStmt:
        out_.kind = StatementKind::kSelect;
        if (stmt.declare_cursor_stmt().query().has_select_stmt()) {
          analyzeSelect(stmt.declare_cursor_stmt().query().select_stmt(), scope);
        } else {
          walk(stmt.declare_cursor_stmt().query(), scope);
        }
        return;
      case Node::kFetchStmt:
      case Node::kClosePortalStmt:
        out_.kind = StatementKind::kCursor;
        return;
      case Node::kPrepareStmt:
      case Node::kExecuteStmt:
        out_.kind = StatementKind::kSqlPrepared;
        return;
      case Node::kDeallocateStmt:
        out_.kind = StatementKind::kSessionCommand;
        return;
      case Node::kDiscardStmt:
        out_.kind = StatementKind::kSessionCommand;
        out_.resets_session = stmt.discard_stmt().target() == pg_query::DISCARD_ALL;
        return;
      case Node::kListenStmt:
      case Node::kUnlistenStmt:
      case Node::kNotifyStmt:
        out_.kind = StatementKind::kListen;
        noteWrite("LISTEN / NOTIFY");
        return;
      case Node::kDropStmt:
        out_.kind = StatementKind::kUtility;
        noteWrite("DDL");
        addDropped(stmt.drop_stmt(), scope);
        return;
      case Node::kCommentStmt:
        out_.kind = StatementKind::kUtility;
        noteWrite("utility statement");
        addCommented(stmt.comment_stmt(), scope);
        return;
      case Node::NODE_NOT_SET:
        out_.kind = StatementKind::kEmpty;
        return;
      default:
        out_.kind = StatementKind::kUtility;
        noteWrite("utility statement");
        utility_ = true;
        walk(stmt, scope);
        return;
    }
  }

  // ---- the generic walk: tables, subqueries and functions anywhere in an expression ----

  bool enter() {
    if (++depth_ > max_depth_) {
      depth_error_ = true;
      --depth_;
      return false;
    }
    return true;
  }
  void leave() { --depth_; }

  void walkList(const NodeList& list, int32_t scope) {
    for (const Node& n : list) walk(n, scope);
  }

  void walk(const Node& n, int32_t scope) {
    if (depth_error_ || !enter()) return;
    switch (n.node_case()) {
      case Node::NODE_NOT_SET:
      case Node::kColumnRef:
      case Node::kAConst:
      case Node::kParamRef:
      case Node::kString:
      case Node::kInteger:
      case Node::kFloat:
        break;
      case Node::kSelectStmt:
        analyzeSelect(n.select_stmt(), scope);
        break;
      case Node::kInsertStmt:
      case Node::kUpdateStmt:
      case Node::kDeleteStmt:
      case Node::kMergeStmt:
        noteWrite("data-modifying statement");
        analyzeDml(n, scope);
        break;
      case Node::kRangeVar:
        // Only utility statements reach a RangeVar here (SELECT, INSERT, ... handle theirs).
        addTable(n.range_var(), scope, utility_);
        break;
      case Node::kFuncCall: {
        const pg_query::FuncCall& f = n.func_call();
        const std::string name = lower(parser::lastName(f.funcname()).value_or(""));
        if (isWriteFunction(name)) noteWrite(name + "()");
        forEachChild(n, [&](const Node& c) { walk(c, scope); });
        break;
      }
      case Node::kDropStmt:
        addDropped(n.drop_stmt(), scope);
        break;
      default:
        forEachChild(
            n, [&](const Node& c) { walk(c, scope); },
            [&](const pg_query::RangeVar& rv) { addTable(rv, scope, utility_); });
        break;
    }
    leave();
  }

  // Calls fn on every Node directly below `n` (through intermediate non-Node messages). RangeVars
  // that are plain message fields (CREATE TABLE's relation, ...) go to `on_range_var`.
  template <typename Fn>
  static void forEachChild(const Node& n, Fn&& fn) {
    forEachChild(n, fn, [](const pg_query::RangeVar&) {});
  }
  template <typename Fn, typename RvFn>
  static void forEachChild(const Node& n, Fn&& fn, RvFn&& on_range_var) {
    if (n.node_case() == Node::NODE_NOT_SET) return;
    const FieldDescriptor* f =
        Node::descriptor()->FindFieldByNumber(static_cast<int>(n.node_case()));
    if (f == nullptr || f->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE) return;
    forEachNodeIn(n.GetReflection()->GetMessage(n, f), fn, on_range_var);
  }

  template <typename Fn, typename RvFn>
  static void forEachNodeIn(const Message& m, Fn& fn, RvFn& on_range_var) {
    const google::protobuf::Reflection* r = m.GetReflection();
    std::vector<const FieldDescriptor*> fields;
    r->ListFields(m, &fields);
    for (const FieldDescriptor* f : fields) {
      if (f->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE) continue;
      const bool is_node = f->message_type() == Node::descriptor();
      const bool is_range_var = f->message_type() == pg_query::RangeVar::descriptor();
      const int size = f->is_repeated() ? r->FieldSize(m, f) : 1;
      for (int i = 0; i < size; ++i) {
        const Message& c = f->is_repeated() ? r->GetRepeatedMessage(m, f, i) : r->GetMessage(m, f);
        if (is_node) {
          fn(static_cast<const Node&>(c));
        } else if (is_range_var) {
          on_range_var(static_cast<const pg_query::RangeVar&>(c));
        } else {
          forEachNodeIn(c, fn, on_range_var);
        }
      }
    }
  }

  const conf::Database& db_;
  const LiteralTemplate* lit_;
  QueryAnalysis& out_;
  std::vector<Scope> scopes_;
  std::vector<std::vector<int32_t>> table_preds_;
  // Per table occurrence: the column list of its alias (FROM t AS x(a, b)), else nullptr.
  std::vector<const NodeList*> renamed_columns_;
  std::unordered_map<const pg_query::SelectStmt*, int32_t> analyzed_;
  bool template_unsafe_ = false;
  bool utility_ = false;
  size_t max_depth_;
  size_t depth_ = 0;
  bool depth_error_ = false;
};

}  // namespace

bool isAggregateFunctionName(std::string_view name) {
  return isAggregateFunction(name);
}

std::optional<KeyType> keyTypeOfTypeName(const pg_query::TypeName& type, bool& is_array) {
  is_array = type.array_bounds_size() > 0;
  if (type.setof() || type.pct_type()) return std::nullopt;
  const std::optional<std::string_view> name = parser::lastName(type.names());
  if (!name) return std::nullopt;
  if (type.names_size() == 2) {
    const std::optional<std::string_view> schema = parser::stringValue(type.names(0));
    if (!schema || *schema != "pg_catalog") return std::nullopt;
  } else if (type.names_size() != 1) {
    return std::nullopt;
  }
  const std::string n = lower(*name);
  if (n == "int2" || n == "smallint") return KeyType::kSmallint;
  if (n == "int4" || n == "integer" || n == "int") return KeyType::kInteger;
  if (n == "int8" || n == "bigint") return KeyType::kBigint;
  if (n == "text") return KeyType::kText;
  if (n == "varchar") return KeyType::kVarchar;
  if (n == "uuid") return KeyType::kUuid;
  return std::nullopt;
}

const char* QueryAnalysis::kindName() const {
  switch (kind) {
    case StatementKind::kEmpty:
      return "empty";
    case StatementKind::kSelect:
      return "SELECT";
    case StatementKind::kInsert:
      return "INSERT";
    case StatementKind::kUpdate:
      return "UPDATE";
    case StatementKind::kDelete:
      return "DELETE";
    case StatementKind::kMerge:
      return "MERGE";
    case StatementKind::kCopy:
      return "COPY";
    case StatementKind::kTransaction:
      return "transaction control";
    case StatementKind::kSet:
      return "SET";
    case StatementKind::kReset:
      return "RESET";
    case StatementKind::kShow:
      return "SHOW";
    case StatementKind::kShardgateSetting:
      return "shardgate setting";
    case StatementKind::kCursor:
      return "cursor command";
    case StatementKind::kSqlPrepared:
      return "PREPARE / EXECUTE";
    case StatementKind::kSessionCommand:
      return "session command";
    case StatementKind::kListen:
      return "LISTEN / NOTIFY";
    case StatementKind::kUtility:
      return "utility";
  }
  return "?";
}

Result<std::shared_ptr<const QueryAnalysis>> analyzeStatement(
    const conf::Database& db, const std::shared_ptr<const parser::ParsedQuery>& parsed,
    size_t index, const LiteralTemplate* literals, const std::vector<int32_t>& param_types,
    size_t max_depth) {
  auto out = std::make_shared<QueryAnalysis>();
  out->parsed = parsed;
  out->statement_index = index;
  out->param_types = param_types;
  if (!parsed || index >= parsed->statementCount()) {
    out->kind = StatementKind::kEmpty;
    return std::shared_ptr<const QueryAnalysis>(std::move(out));
  }
  Analyzer analyzer(db, literals, *out, max_depth);
  Status status = analyzer.run(parsed->statement(index));
  if (!status.ok()) return std::move(status).error();
  return std::shared_ptr<const QueryAnalysis>(std::move(out));
}

}  // namespace shardgate::planner
