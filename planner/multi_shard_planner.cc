// MultiShardPlanner: shard SQL by editing libpg_query trees and deparsing them, and the MergePlans
// that finish what the shards computed in part (see multi_shard_planner.h).
#include "planner/multi_shard_planner.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>

#include <algorithm>
#include <charconv>
#include <functional>
#include <limits>
#include <map>
#include <unordered_set>
#include <utility>

#include "parser/node_helpers.h"
#include "parser/parser.h"
#include "planner/analyzer.h"

namespace shardgate::planner {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using parser::NodeList;
using pg_query::Node;

// Trees deeper than this are not walked here (the analyzer has already bounded them; a statement
// this deep that also needs several shards is refused rather than risking the stack).
constexpr int kMaxWalkDepth = 2000;

Error notSupported(std::string message, std::string detail = {}, std::string hint = {}) {
  return Error::make(sqlstate::kFeatureNotSupported, std::move(message), std::move(detail),
                     std::move(hint));
}

Error tooDeep() {
  return Error::make(sqlstate::kStatementTooComplex,
                     "statement too complex to run on several shards",
                     "It nests more than " + std::to_string(kMaxWalkDepth) + " levels deep.");
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

// ---- generic tree walks ----

// Calls fn on every Node below message m (through intermediate messages); fn returns whether to
// descend into that node. Returns false if the tree is deeper than kMaxWalkDepth.
bool visitChildren(const Message& m, const std::function<bool(const Node&)>& fn, int depth) {
  if (depth > kMaxWalkDepth) return false;
  const google::protobuf::Reflection* r = m.GetReflection();
  std::vector<const FieldDescriptor*> fields;
  r->ListFields(m, &fields);
  for (const FieldDescriptor* f : fields) {
    if (f->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE) continue;
    const int size = f->is_repeated() ? r->FieldSize(m, f) : 1;
    for (int i = 0; i < size; ++i) {
      const Message& c = f->is_repeated() ? r->GetRepeatedMessage(m, f, i) : r->GetMessage(m, f);
      if (c.GetDescriptor() == Node::descriptor()) {
        if (!fn(static_cast<const Node&>(c))) continue;
      }
      if (!visitChildren(c, fn, depth + 1)) return false;
    }
  }
  return true;
}

// fn on n and (while fn returns true) everything below it.
bool walkTree(const Node& n, const std::function<bool(const Node&)>& fn) {
  if (!fn(n)) return true;
  return visitChildren(n, fn, 0);
}

void clearLocations(Message& m, int depth) {
  if (depth > kMaxWalkDepth) return;
  const google::protobuf::Reflection* r = m.GetReflection();
  std::vector<const FieldDescriptor*> fields;
  r->ListFields(m, &fields);
  for (const FieldDescriptor* f : fields) {
    if (f->cpp_type() == FieldDescriptor::CPPTYPE_INT32 && !f->is_repeated() &&
        (f->name() == "location" || f->name() == "stmt_location")) {
      r->ClearField(&m, f);
      continue;
    }
    if (f->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE) continue;
    if (f->is_repeated()) {
      for (int i = 0; i < r->FieldSize(m, f); ++i) {
        clearLocations(*r->MutableRepeatedMessage(&m, f, i), depth + 1);
      }
    } else {
      clearLocations(*r->MutableMessage(&m, f), depth + 1);
    }
  }
}

std::string functionName(const pg_query::FuncCall& f) {
  return lower(parser::lastName(f.funcname()).value_or(""));
}

bool isAggregateCall(const pg_query::FuncCall& f) {
  if (f.has_over()) return false;
  return isAggregateFunctionName(functionName(f)) || f.agg_star() || f.agg_distinct() ||
         f.agg_within_group() || f.agg_order_size() > 0 || f.has_agg_filter();
}

// Whether `n` has an aggregate (or window function) of its own level (not inside subqueries).
bool containsCall(const Node& n, bool window) {
  bool found = false;
  walkTree(n, [&](const Node& c) {
    if (found || c.has_sub_link() || c.has_select_stmt()) return false;
    if (c.has_func_call()) {
      const pg_query::FuncCall& f = c.func_call();
      if (window ? f.has_over() : isAggregateCall(f)) {
        found = true;
        return false;
      }
    }
    return true;
  });
  return found;
}
bool containsAggregate(const Node& n) {
  return containsCall(n, false);
}
bool containsWindow(const Node& n) {
  return containsCall(n, true);
}

bool containsParam(const Message& m) {
  bool found = false;
  visitChildren(
      m,
      [&](const Node& c) {
        if (c.has_param_ref()) found = true;
        return !found;
      },
      0);
  return found;
}

// Renumbers the ParamRefs below `m` in order of first use: renumbered maps the client's numbers
// to the new ones, `used` lists the client's numbers by new number. False if too deep.
bool renumberParams(Message& m, std::map<int32_t, int32_t>& renumbered, std::vector<int32_t>& used,
                    int depth) {
  if (depth > kMaxWalkDepth) return false;
  if (m.GetDescriptor() == pg_query::ParamRef::descriptor()) {
    auto& p = static_cast<pg_query::ParamRef&>(m);
    auto [it, fresh] = renumbered.emplace(p.number(), static_cast<int32_t>(used.size() + 1));
    if (fresh) used.push_back(p.number());
    p.set_number(it->second);
    return true;
  }
  const google::protobuf::Reflection* r = m.GetReflection();
  std::vector<const FieldDescriptor*> fields;
  r->ListFields(m, &fields);
  for (const FieldDescriptor* f : fields) {
    if (f->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE) continue;
    if (f->is_repeated()) {
      for (int i = 0; i < r->FieldSize(m, f); ++i) {
        if (!renumberParams(*r->MutableRepeatedMessage(&m, f, i), renumbered, used, depth + 1)) {
          return false;
        }
      }
    } else if (!renumberParams(*r->MutableMessage(&m, f), renumbered, used, depth + 1)) {
      return false;
    }
  }
  return true;
}

bool isStarTarget(const Node& t) {
  if (!t.has_res_target() || !t.res_target().has_val()) return false;
  const Node& v = t.res_target().val();
  return v.has_column_ref() && v.column_ref().fields_size() > 0 &&
         v.column_ref().fields(v.column_ref().fields_size() - 1).has_a_star();
}

// A short, readable form of an expression for messages.
std::string shown(const Node& expr) {
  pg_query::Node stmt;
  pg_query::SelectStmt* s = stmt.mutable_select_stmt();
  pg_query::ResTarget* rt = s->add_target_list()->mutable_res_target();
  rt->mutable_val()->CopyFrom(expr);
  Result<std::string> text = parser::deparseStatement(stmt);
  if (!text.ok()) return parser::nodeKindName(expr);
  std::string out = *text;
  if (out.rfind("SELECT ", 0) == 0) out = out.substr(7);
  return out;
}

// ---- values of LIMIT / OFFSET ----

struct CountValue {
  enum class Kind { kNone, kValue } kind = Kind::kNone;  // kNone: NULL / ALL / absent
  int64_t value = 0;
};

bool parseInt64(std::string_view text, int64_t& out) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t' || text.front() == '\n'))
    text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t' || text.back() == '\n'))
    text.remove_suffix(1);
  if (!text.empty() && text.front() == '+') text.remove_prefix(1);
  if (text.empty()) return false;
  const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc() && ptr == text.data() + text.size();
}

Result<CountValue> evalCount(const Node& n, const BindParameters* params, const char* clause) {
  CountValue v;
  const auto unsupported = [&] {
    return notSupported(std::string(clause) + " " + shown(n) + " across shards is not supported",
                        "shardgate evaluates " + std::string(clause) +
                            " itself when the statement runs on several shards: it must be an "
                            "integer constant or parameter.");
  };
  if (n.has_a_const()) {
    const pg_query::A_Const& c = n.a_const();
    if (c.isnull()) return v;
    if (c.has_ival()) {
      v.kind = CountValue::Kind::kValue;
      v.value = c.ival().ival();
      return v;
    }
    const std::string text = c.has_fval() ? c.fval().fval() : c.has_sval() ? c.sval().sval() : "";
    if (!parseInt64(text, v.value)) return unsupported();
    v.kind = CountValue::Kind::kValue;
    return v;
  }
  if (n.has_type_cast() && n.type_cast().has_arg()) {
    bool is_array = false;
    const std::optional<conf::KeyType> t = keyTypeOfTypeName(n.type_cast().type_name(), is_array);
    if (!t || !conf::isIntegerKey(*t) || is_array) return unsupported();
    return evalCount(n.type_cast().arg(), params, clause);
  }
  if (n.has_param_ref()) {
    const int number = n.param_ref().number();
    if (params == nullptr || number < 1 || static_cast<size_t>(number) > params->values.size()) {
      return unsupported();
    }
    const size_t i = static_cast<size_t>(number - 1);
    const std::optional<std::string_view>& value = params->values[i];
    if (!value) return v;
    const bool binary = params->formats.size() == 1  ? params->formats[0] == 1
                        : i < params->formats.size() ? params->formats[i] == 1
                                                     : false;
    if (!binary) {
      if (!parseInt64(*value, v.value)) return unsupported();
    } else {
      if (value->size() != 2 && value->size() != 4 && value->size() != 8) return unsupported();
      uint64_t bits = 0;
      for (const char ch : *value) bits = bits << 8 | static_cast<unsigned char>(ch);
      const int shift = 64 - 8 * static_cast<int>(value->size());
      v.value = static_cast<int64_t>(bits << shift) >> shift;  // sign-extend
    }
    v.kind = CountValue::Kind::kValue;
    return v;
  }
  return unsupported();
}

Node integerConstant(int64_t value) {
  Node n;
  if (value >= std::numeric_limits<int32_t>::min() &&
      value <= std::numeric_limits<int32_t>::max()) {
    n.mutable_a_const()->mutable_ival()->set_ival(static_cast<int32_t>(value));
  } else {
    n.mutable_a_const()->mutable_fval()->set_fval(std::to_string(value));
  }
  return n;
}

ValueRef constantRef(int64_t value) {
  ValueRef r;
  r.kind = ValueRef::Kind::kConstant;
  r.token = ValueRef::Token::kInteger;
  r.text = std::to_string(value);
  return r;
}

// ---- building expressions ----

Node withFunctionName(const Node& call, std::string_view name) {
  Node n = call;
  pg_query::FuncCall* f = n.mutable_func_call();
  f->clear_funcname();
  f->add_funcname()->mutable_string()->set_sval(std::string(name));
  f->set_agg_star(false);
  return n;
}

Node castToNumeric(const Node& arg) {
  Node n;
  pg_query::TypeCast* tc = n.mutable_type_cast();
  tc->mutable_arg()->CopyFrom(arg);
  tc->mutable_type_name()->add_names()->mutable_string()->set_sval("pg_catalog");
  tc->mutable_type_name()->add_names()->mutable_string()->set_sval("numeric");
  tc->mutable_type_name()->set_typemod(-1);
  return n;
}

Node binaryOp(std::string_view op, const Node& l, const Node& r) {
  Node n;
  pg_query::A_Expr* e = n.mutable_a_expr();
  e->set_kind(pg_query::AEXPR_OP);
  e->add_name()->mutable_string()->set_sval(std::string(op));
  e->mutable_lexpr()->CopyFrom(l);
  e->mutable_rexpr()->CopyFrom(r);
  return n;
}

Node typeCast(const Node& arg, std::string_view type) {
  Node n;
  pg_query::TypeCast* tc = n.mutable_type_cast();
  tc->mutable_arg()->CopyFrom(arg);
  tc->mutable_type_name()->add_names()->mutable_string()->set_sval("pg_catalog");
  tc->mutable_type_name()->add_names()->mutable_string()->set_sval(std::string(type));
  tc->mutable_type_name()->set_typemod(-1);
  return n;
}

// array_agg(arg) with the call's own ORDER BY and FILTER: the shard's elements in the aggregate's
// order, one per row the aggregate sees.
Node arrayAggOf(const Node& call, const Node& arg) {
  Node n = withFunctionName(call, "array_agg");
  pg_query::FuncCall* f = n.mutable_func_call();
  f->clear_args();
  f->add_args()->CopyFrom(arg);
  f->set_agg_distinct(false);
  return n;
}

// CASE WHEN false THEN x END: a NULL of x's type and collation. Postgres folds it while planning,
// so x is never evaluated.
Node neverEvaluated(const Node& x) {
  Node never;
  never.mutable_a_const()->mutable_boolval()->set_boolval(false);
  Node n;
  pg_query::CaseWhen* only = n.mutable_case_expr()->add_args()->mutable_case_when();
  only->mutable_expr()->CopyFrom(never);
  only->mutable_result()->CopyFrom(x);
  return n;
}

// The set-returning functions of pg_catalog a select list commonly holds. CASE may not contain
// one, so a probe of such an expression evaluates it (in step with the column it probes).
bool callsSetReturningFunction(const Node& x) {
  static const std::unordered_set<std::string> kSetReturning = {
      "unnest",
      "generate_series",
      "generate_subscripts",
      "regexp_matches",
      "regexp_split_to_table",
      "string_to_table",
      "json_array_elements",
      "json_array_elements_text",
      "jsonb_array_elements",
      "jsonb_array_elements_text",
      "json_each",
      "json_each_text",
      "jsonb_each",
      "jsonb_each_text",
      "json_object_keys",
      "jsonb_object_keys",
      "jsonb_path_query",
  };
  bool found = false;
  walkTree(x, [&](const Node& c) {
    if (found || c.has_sub_link()) return false;
    found = c.has_func_call() && kSetReturning.contains(functionName(c.func_call()));
    return !found;
  });
  return found;
}

// The MergeCollation probe of expression x: its collation's name (see MergeCollation). `once`: as
// a scalar subquery whose only outer reference Postgres folds away, it runs once per statement
// (an InitPlan), not once per row. Not for an aggregating query: there a grouped expression
// inside a subquery is an "ungrouped column" to Postgres (it runs once per group instead).
Node collationProbe(const Node& x, bool once) {
  Node concat;
  concat.mutable_func_call()->add_funcname()->mutable_string()->set_sval("concat");
  concat.mutable_func_call()->add_args()->CopyFrom(x);
  concat.mutable_func_call()->set_funcformat(pg_query::COERCE_EXPLICIT_CALL);
  const bool set_returning = callsSetReturningFunction(x);
  Node probe;
  pg_query::FuncCall* f = probe.mutable_func_call();
  f->add_funcname()->mutable_string()->set_sval("pg_collation_for");
  f->add_args()->CopyFrom(set_returning ? concat : neverEvaluated(concat));
  f->set_funcformat(pg_query::COERCE_EXPLICIT_CALL);
  // A set-returning function would return its rows inside the subquery: that probe stays in the
  // select list, evaluated in step with the column it probes.
  if (set_returning || !once) return probe;
  Node initplan;
  pg_query::SubLink* link = initplan.mutable_sub_link();
  link->set_sub_link_type(pg_query::EXPR_SUBLINK);
  pg_query::SelectStmt* select = link->mutable_subselect()->mutable_select_stmt();
  select->add_target_list()->mutable_res_target()->mutable_val()->CopyFrom(probe);
  select->set_limit_option(pg_query::LIMIT_OPTION_DEFAULT);
  select->set_op(pg_query::SETOP_NONE);
  return initplan;
}

// For avg(x): the sum of x in double precision when x is real, else sum(NULL) — avg(real) sums in
// double precision but sum(real) in real, and the planner does not know x's type. The choice is
//   sum(CASE WHEN v / '2' * '2' + v / '10000' / '10000' = v THEN x * 1::float8 END)
// with v = COALESCE(CASE WHEN false THEN x END, '1'), the number 1 in x's type. Postgres folds
// the condition while planning (v is a constant), so the shards pay nothing per row: in integers
// 1 / 2 * 2 is 0; in double precision and numeric 1 + 1e-8 is not 1; in real it is (and in
// interval, whose avg shardgate refuses anyway). Every type avg takes passes the type check.
Node realSumInFloat8(const Node& call) {
  const Node& x = call.func_call().args(0);
  const auto text = [](std::string_view t) {
    Node n;
    n.mutable_a_const()->mutable_sval()->set_sval(std::string(t));
    return n;
  };
  Node one;
  pg_query::CoalesceExpr* c = one.mutable_coalesce_expr();
  c->add_args()->CopyFrom(neverEvaluated(x));
  c->add_args()->CopyFrom(text("1"));
  const Node halved = binaryOp("*", binaryOp("/", one, text("2")), text("2"));
  const Node tiny = binaryOp("/", binaryOp("/", one, text("10000")), text("10000"));
  Node is_real = binaryOp("=", binaryOp("+", halved, tiny), one);
  Node float8_one;
  float8_one.mutable_a_const()->mutable_ival()->set_ival(1);
  Node choose;
  pg_query::CaseWhen* when = choose.mutable_case_expr()->add_args()->mutable_case_when();
  when->mutable_expr()->CopyFrom(is_real);
  when->mutable_result()->CopyFrom(binaryOp("*", x, typeCast(float8_one, "float8")));
  Node sum = withFunctionName(call, "sum");
  sum.mutable_func_call()->mutable_args(0)->CopyFrom(choose);
  return sum;
}

// A value that is the same for every row: a constant or a parameter, maybe cast.
bool isRowIndependent(const Node& n) {
  if (n.has_a_const() || n.has_param_ref()) return true;
  if (n.has_type_cast() && n.type_cast().has_arg()) return isRowIndependent(n.type_cast().arg());
  return false;
}

int32_t typeOidOfName(const pg_query::TypeName& t);

// A constant or parameter, maybe cast to a type whose input does not depend on the moment (a date
// or time literal may say 'now', which each shard would read at its own time).
bool isSameOnEveryShard(const Node& n) {
  if (n.has_a_const() || n.has_param_ref()) return true;
  if (!n.has_type_cast() || !n.type_cast().has_arg()) return false;
  switch (typeOidOfName(n.type_cast().type_name())) {
    case 0:     // a type the planner does not know
    case 1082:  // date
    case 1083:  // time
    case 1114:  // timestamp
    case 1184:  // timestamptz
      return false;
    default:
      return isSameOnEveryShard(n.type_cast().arg());
  }
}

int32_t typeOidOfName(const pg_query::TypeName& t) {
  if (t.array_bounds_size() > 0) return 0;
  const std::string n = lower(parser::lastName(t.names()).value_or(""));
  static const std::map<std::string, int32_t, std::less<>> kOids = {
      {"int2", 21},      {"smallint", 21},    {"int4", 23},          {"integer", 23},
      {"int", 23},       {"int8", 20},        {"bigint", 20},        {"numeric", 1700},
      {"decimal", 1700}, {"float4", 700},     {"real", 700},         {"float8", 701},
      {"text", 25},      {"varchar", 1043},   {"bool", 16},          {"boolean", 16},
      {"date", 1082},    {"timestamp", 1114}, {"timestamptz", 1184}, {"interval", 1186},
      {"uuid", 2950},    {"time", 1083},      {"bpchar", 1042},      {"money", 790},
  };
  const auto it = kOids.find(n);
  return it == kOids.end() ? 0 : it->second;
}

// ---- explain text ----

std::string col(uint32_t c) {
  return "$" + std::to_string(c + 1);
}

std::string expressionText(const MergeExpression& e) {
  switch (e.kind) {
    case MergeExpression::Kind::kColumn:
      return col(e.column);
    case MergeExpression::Kind::kConstant:
      return e.type_oid == 0 ? "'" + e.text + "'" : e.text;
    case MergeExpression::Kind::kNull:
      return "NULL";
    case MergeExpression::Kind::kAnd:
    case MergeExpression::Kind::kOr: {
      std::string s = "(";
      for (size_t i = 0; i < e.children.size(); ++i) {
        if (i > 0) s += e.kind == MergeExpression::Kind::kAnd ? " AND " : " OR ";
        s += expressionText(e.children[i]);
      }
      return s + ")";
    }
    case MergeExpression::Kind::kNot:
      return "NOT " + (e.children.empty() ? std::string("?") : expressionText(e.children[0]));
    case MergeExpression::Kind::kCompare:
    case MergeExpression::Kind::kArithmetic:
      if (e.children.size() != 2) return "?";
      return "(" + expressionText(e.children[0]) + " " + e.op + " " +
             expressionText(e.children[1]) + ")";
    case MergeExpression::Kind::kIsNull:
    case MergeExpression::Kind::kIsNotNull:
      return (e.children.empty() ? std::string("?") : expressionText(e.children[0])) +
             (e.kind == MergeExpression::Kind::kIsNull ? " IS NULL" : " IS NOT NULL");
  }
  return "?";
}

const char* aggregateKindName(MergeAggregate::Kind k) {
  switch (k) {
    case MergeAggregate::Kind::kCount:
      return "sum of counts";
    case MergeAggregate::Kind::kSum:
      return "sum";
    case MergeAggregate::Kind::kMin:
      return "min";
    case MergeAggregate::Kind::kMax:
      return "max";
    case MergeAggregate::Kind::kAvg:
      return "avg from sum and count";
    case MergeAggregate::Kind::kBoolAnd:
      return "bool_and";
    case MergeAggregate::Kind::kBoolOr:
      return "bool_or";
    case MergeAggregate::Kind::kVariance:
      return "from count, sum and sum of squares";
    case MergeAggregate::Kind::kDistinct:
      return "over distinct values";
    case MergeAggregate::Kind::kStringAgg:
      return "concatenated with delimiter";
    case MergeAggregate::Kind::kArrayAgg:
      return "arrays concatenated";
    case MergeAggregate::Kind::kOrderedStringAgg:
      return "elements merged by their order, joined with delimiter";
    case MergeAggregate::Kind::kOrderedArrayAgg:
      return "elements merged by their order";
  }
  return "?";
}

std::string columnList(const std::vector<uint32_t>& cols) {
  std::string s;
  for (size_t i = 0; i < cols.size(); ++i) s += (i ? ", " : "") + col(cols[i]);
  return s;
}

void fillExplain(MergePlan& m) {
  std::vector<std::string>& out = m.explain;
  out.clear();
  if (m.aggregate) {
    std::string s = "Aggregate: ";
    s += m.group_columns.empty() ? "one row" : "group by " + columnList(m.group_columns);
    for (const MergeAggregate& a : m.aggregates) {
      s += "; " + (a.inputs.empty() ? std::string("?") : col(a.inputs[0])) + " = " + a.function +
           " " + aggregateKindName(a.kind) + "(" + columnList(a.inputs) + ")";
      if (!a.order.empty()) {
        s += " order by ";
        for (size_t i = 0; i < a.order.size(); ++i) {
          const MergeAggregate::OrderKey& k = a.order[i];
          s += (i ? ", " : "") + col(k.column) + (k.descending ? " DESC" : "");
          if (k.nulls_first != k.descending) s += k.nulls_first ? " NULLS FIRST" : " NULLS LAST";
        }
      }
    }
    out.push_back(s);
  }
  if (m.having) out.push_back("Having: " + expressionText(*m.having));
  if (m.distinct) out.push_back("Distinct");
  if (!m.sort.empty()) {
    std::string s = m.aggregate ? "Sort: " : "Merge sorted streams: ";
    for (size_t i = 0; i < m.sort.size(); ++i) {
      const MergeSortKey& k = m.sort[i];
      s += (i ? ", " : "") + col(k.column) + (k.descending ? " DESC" : "");
      if (k.nulls_first != k.descending) s += k.nulls_first ? " NULLS FIRST" : " NULLS LAST";
    }
    out.push_back(s);
  } else if (!m.aggregate) {
    out.push_back("Concatenate");
  }
  if (m.limit || m.offset) {
    std::string s = "Limit: ";
    s += m.limit ? m.limit->text : "ALL";
    if (m.offset) s += " offset " + m.offset->text;
    out.push_back(s);
  }
  if (!m.visible_columns.empty()) {
    out.push_back("Project: " + columnList(m.visible_columns) + " (the rest are hidden)");
  } else if (m.leading_hidden > 0) {
    out.push_back("Project: drop the first " + std::to_string(m.leading_hidden) +
                  " columns (hidden)");
  }
}

Result<std::string> deparseNode(const Node& n) {
  return parser::deparseStatement(n);
}

std::string trimmed(std::string_view text) {
  size_t b = 0;
  while (b < text.size() &&
         (text[b] == ' ' || text[b] == '\t' || text[b] == '\n' || text[b] == '\r')) {
    ++b;
  }
  size_t e = text.size();
  while (e > b && (text[e - 1] == ' ' || text[e - 1] == '\t' || text[e - 1] == '\n' ||
                   text[e - 1] == '\r' || text[e - 1] == ';')) {
    --e;
  }
  return std::string(text.substr(b, e - b));
}

// ---- the SELECT rewrite ----

class ReadPlanner {
 public:
  ReadPlanner(const MultiShardInput& in, const pg_query::SelectStmt& s) : in_(in), s_(s) {}

  Result<std::shared_ptr<const MultiShardPlan>> plan() {
    if (Status st = checkShape(); !st.ok()) return std::move(st).error();
    for (const Node& t : s_.target_list()) {
      if (!t.has_res_target() || !t.res_target().has_val()) {
        return notSupported("this select list is not supported across shards");
      }
      originals_.push_back(&t.res_target());
      star_ = star_ || isStarTarget(t);
    }
    aggregated_ = s_.group_clause_size() > 0 || s_.has_having_clause();
    for (const pg_query::ResTarget* rt : originals_) {
      aggregated_ = aggregated_ || containsAggregate(rt->val());
    }
    for (const Node& sb : s_.sort_clause()) {
      if (sb.has_sort_by()) aggregated_ = aggregated_ || containsAggregate(sb.sort_by().node());
    }
    Result<CountValue> limit =
        s_.has_limit_count() ? evalCount(s_.limit_count(), in_.params, "LIMIT") : CountValue{};
    if (!limit.ok()) return std::move(limit).error();
    Result<CountValue> offset =
        s_.has_limit_offset() ? evalCount(s_.limit_offset(), in_.params, "OFFSET") : CountValue{};
    if (!offset.ok()) return std::move(offset).error();
    limit_ = *limit;
    offset_ = *offset;
    if (offset_.kind == CountValue::Kind::kValue && offset_.value == 0) {
      offset_.kind = CountValue::Kind::kNone;
    }

    auto plan = std::make_shared<MultiShardPlan>();
    plan->kind = MultiShardPlan::Kind::kRead;
    plan->reason = in_.reason;
    pg_query::Node shard;
    if (aggregated_) {
      if (Status st = planAggregated(); !st.ok()) return std::move(st).error();
      if (lookups_pending_) return std::shared_ptr<const MultiShardPlan>();
    } else {
      const bool needs_merge =
          s_.sort_clause_size() > 0 || limit_.kind != CountValue::Kind::kNone ||
          offset_.kind != CountValue::Kind::kNone || s_.distinct_clause_size() > 0;
      if (!needs_merge) {
        // Rows concatenated as they come: each shard runs the statement as the client wrote it.
        Result<std::string> sql =
            in_.text.empty() ? deparseNode(*in_.statement) : Result<std::string>(trimmed(in_.text));
        if (!sql.ok()) return std::move(sql).error();
        for (const uint32_t s : in_.shards) plan->statements.push_back({s, *sql});
        return std::shared_ptr<const MultiShardPlan>(std::move(plan));
      }
      if (Status st = planPlain(); !st.ok()) return std::move(st).error();
    }
    Result<std::string> sql = buildShardSql(shard);
    if (!sql.ok()) return std::move(sql).error();
    merge_.shard_columns = star_ ? 0 : static_cast<uint32_t>(columns_.size());
    fillExplain(merge_);
    for (const uint32_t s : in_.shards) plan->statements.push_back({s, *sql});
    plan->merge = std::make_shared<const MergePlan>(std::move(merge_));
    return std::shared_ptr<const MultiShardPlan>(std::move(plan));
  }

 private:
  struct ShardColumn {
    Node val;
    std::string name;  // alias ("" none)
  };

  Status checkShape() const {
    if (s_.op() != pg_query::SETOP_NONE) {
      return notSupported(
          "UNION, INTERSECT and EXCEPT over sharded tables that need several shards are not "
          "supported",
          "Each branch would run on every shard; shardgate does not combine their results yet.",
          "Run each branch as its own query.");
    }
    if (s_.distinct_clause_size() > 0 &&
        !(s_.distinct_clause_size() == 1 &&
          s_.distinct_clause(0).node_case() == Node::NODE_NOT_SET)) {
      return notSupported("SELECT DISTINCT ON across shards is not supported",
                          "The rows DISTINCT ON keeps depend on rows of every shard.",
                          "Use GROUP BY with aggregates, or narrow the query to one shard.");
    }
    if (s_.window_clause_size() > 0) return windowError();
    for (const Node& t : s_.target_list()) {
      if (containsWindow(t)) return windowError();
    }
    for (const Node& t : s_.sort_clause()) {
      if (containsWindow(t)) return windowError();
    }
    if (s_.limit_option() == pg_query::LIMIT_OPTION_WITH_TIES) {
      return notSupported("FETCH ... WITH TIES across shards is not supported");
    }
    for (const Node& g : s_.group_clause()) {
      if (g.has_grouping_set()) {
        return notSupported("GROUPING SETS, ROLLUP and CUBE across shards are not supported", {},
                            "Run one query per grouping.");
      }
    }
    return {};
  }

  // What Postgres says too: the order of rows DISTINCT keeps is only defined by selected columns.
  static Error distinctOrderError() {
    return Error::make("42P10",
                       "for SELECT DISTINCT, ORDER BY expressions must appear in select list");
  }

  static Error windowError() {
    return notSupported("window functions over rows of several shards are not supported",
                        "A window function needs the rows of every shard in one place.",
                        "Narrow the query to one shard (a condition on the sharding key), or "
                        "compute it in the application.");
  }

  // Sort keys refer to columns of the merged row; `plain` also says how to sort on the shards.
  static MergeSortKey sortKey(const pg_query::SortBy& sb, uint32_t column) {
    MergeSortKey k;
    k.column = column;
    k.descending = sb.sortby_dir() == pg_query::SORTBY_DESC;
    k.nulls_first = sb.sortby_nulls() == pg_query::SORTBY_NULLS_FIRST  ? true
                    : sb.sortby_nulls() == pg_query::SORTBY_NULLS_LAST ? false
                                                                       : k.descending;
    return k;
  }

  Status checkSortItem(const pg_query::SortBy& sb) {
    if (sb.use_op_size() > 0) {
      return notSupported("ORDER BY ... USING across shards is not supported", {},
                          "Use ASC or DESC.");
    }
    return {};
  }

  // The original select-list item a sort or group item names: a position, an output column name
  // (when `by_name`) or the same expression. Errors: 42P10 for a position out of range.
  Result<std::optional<uint32_t>> matchTarget(const Node& e, bool by_name, const char* clause) {
    if (e.has_a_const() && !e.a_const().has_ival() && by_name) {
      // ORDER BY 'a', GROUP BY NULL: Postgres refuses them (shardgate's rewrite to positions
      // would not).
      return Error::make("42601", std::string("non-integer constant in ") + clause);
    }
    if (e.has_a_const() && e.a_const().has_ival()) {
      const int64_t k = e.a_const().ival().ival();
      if (star_) return std::optional<uint32_t>();
      if (k < 1 || static_cast<size_t>(k) > originals_.size()) {
        return Error::make("42P10", std::string(clause) + " position " + std::to_string(k) +
                                        " is not in select list");
      }
      return std::optional<uint32_t>(static_cast<uint32_t>(k - 1));
    }
    if (star_) return std::optional<uint32_t>();
    if (by_name && e.has_column_ref() && e.column_ref().fields_size() == 1) {
      const std::optional<std::string_view> name = parser::stringValue(e.column_ref().fields(0));
      if (name) {
        std::optional<uint32_t> found;
        int matches = 0;
        for (size_t i = 0; i < originals_.size(); ++i) {
          const pg_query::ResTarget& rt = *originals_[i];
          const std::string out = rt.name().empty() ? figureColumnName(rt.val()) : rt.name();
          if (out != *name) continue;
          if (found && !sameExpression(originals_[*found]->val(), rt.val())) {
            // Two output columns of that name, not the same expression: Postgres refuses it in
            // ORDER BY; GROUP BY takes an input column of that name first (below).
            if (std::string_view(clause) != "ORDER BY") return std::optional<uint32_t>();
            return Error::make(
                "42702", std::string(clause) + " \"" + std::string(*name) + "\" is ambiguous");
          }
          if (!found) {
            ++matches;
            found = static_cast<uint32_t>(i);
          }
        }
        if (matches == 1 && std::string_view(clause) == "GROUP BY" &&
            !namesColumn(originals_[*found]->val(), *name)) {
          // GROUP BY takes an input column before an output column of the same name.
          switch (inputColumnNamed(*name)) {
            case InputColumn::kNo:
              return found;
            case InputColumn::kYes:
              matches = 0;  // the expression: matched below, or a hidden group column
              break;
            case InputColumn::kPending:
              lookups_pending_ = true;
              return std::optional<uint32_t>();
            case InputColumn::kUnknown:
              return notSupported(
                  "GROUP BY " + std::string(*name) +
                      " across shards, where it may name an input column or the output column " +
                      std::string(*name),
                  "Postgres groups by an input column of that name if the FROM clause has one, "
                  "else by the output column; shardgate cannot tell which for this FROM clause.",
                  "Write the grouped expression, or its position in the select list.");
          }
        }
        if (matches == 1) return found;
        if (matches > 1) return std::optional<uint32_t>();
      }
    }
    for (size_t i = 0; i < originals_.size(); ++i) {
      if (sameExpression(originals_[i]->val(), e)) {
        return std::optional<uint32_t>(static_cast<uint32_t>(i));
      }
    }
    return std::optional<uint32_t>();
  }

  // Whether `e` is a column reference whose column is `name` (t.name, or name itself).
  static bool namesColumn(const Node& e, std::string_view name) {
    if (!e.has_column_ref()) return false;
    const std::optional<std::string_view> last = parser::lastName(e.column_ref().fields());
    return last && *last == name;
  }

  enum class InputColumn { kYes, kNo, kPending, kUnknown };

  // Whether the FROM clause has a column `name`, from the tables' columns in the catalog.
  InputColumn inputColumnNamed(std::string_view name) const {
    InputColumn result = InputColumn::kNo;
    for (const Node& item : s_.from_clause()) {
      const InputColumn r = fromItemHasColumn(item, name, 0);
      if (r == InputColumn::kYes) return r;
      if (r == InputColumn::kPending || result == InputColumn::kNo) result = r;
    }
    return result;
  }

  // Whether a FROM table name is one of the statement's CTEs (which hide tables of that name).
  bool namesCte(const pg_query::RangeVar& rv) const {
    if (!rv.schemaname().empty() || !s_.has_with_clause()) return false;
    for (const Node& cte : s_.with_clause().ctes()) {
      if (cte.has_common_table_expr() && cte.common_table_expr().ctename() == rv.relname()) {
        return true;
      }
    }
    return false;
  }

  InputColumn fromItemHasColumn(const Node& item, std::string_view name, int depth) const {
    if (depth > kMaxWalkDepth) return InputColumn::kUnknown;
    if (item.has_join_expr()) {
      const pg_query::JoinExpr& j = item.join_expr();
      if (j.has_alias() && j.alias().colnames_size() > 0) return InputColumn::kUnknown;
      const InputColumn l = fromItemHasColumn(j.larg(), name, depth + 1);
      if (l == InputColumn::kYes) return l;
      const InputColumn r = fromItemHasColumn(j.rarg(), name, depth + 1);
      if (r == InputColumn::kYes || l == InputColumn::kNo) return r;
      return r == InputColumn::kPending ? r : l;
    }
    // Subqueries, functions, VALUES, CTEs: their column names are not worked out here.
    if (!item.has_range_var()) return InputColumn::kUnknown;
    const pg_query::RangeVar& rv = item.range_var();
    if (namesCte(rv)) return InputColumn::kUnknown;
    if (in_.columns == nullptr) return InputColumn::kUnknown;
    const std::vector<std::string>* order = in_.columns->columnOrder(rv.schemaname(), rv.relname());
    if (order == nullptr) {
      if (in_.column_lookups == nullptr) return InputColumn::kUnknown;
      in_.column_lookups->push_back({rv.schemaname(), rv.relname()});
      return InputColumn::kPending;
    }
    // An alias column list renames the first columns.
    const int renamed = rv.has_alias() ? rv.alias().colnames_size() : 0;
    for (size_t i = 0; i < order->size(); ++i) {
      const std::optional<std::string_view> alias =
          static_cast<int>(i) < renamed
              ? parser::stringValue(rv.alias().colnames(static_cast<int>(i)))
              : std::nullopt;
      if (alias.value_or((*order)[i]) == name) return InputColumn::kYes;
    }
    return InputColumn::kNo;
  }

  // SELECT DISTINCT * ... ORDER BY a column: the column is one of *'s, so sorting by it (as a
  // hidden column) changes no row's distinctness; Postgres allows it too.
  bool columnOfBareStar(const Node& e) const {
    if (!e.has_column_ref() || originals_.size() != 1) return false;
    const Node& only = originals_[0]->val();
    return only.has_column_ref() && only.column_ref().fields_size() == 1 &&
           only.column_ref().fields(0).has_a_star();
  }

  // The select-list item whose explicit alias a bare ORDER BY name is (with SELECT *, where
  // positions are unknown).
  const pg_query::ResTarget* aliasNamed(const Node& e) const {
    if (!star_ || !e.has_column_ref() || e.column_ref().fields_size() != 1) return nullptr;
    const std::optional<std::string_view> name = parser::stringValue(e.column_ref().fields(0));
    if (!name) return nullptr;
    const pg_query::ResTarget* found = nullptr;
    for (const pg_query::ResTarget* rt : originals_) {
      if (rt->name() != *name) continue;
      if (found != nullptr) return nullptr;
      found = rt;
    }
    return found;
  }

  // ---- without aggregation: the shards sort and limit, shardgate merges ----

  Status planPlain() {
    // Hidden sort columns: appended, or (SELECT *: unknown width) put first.
    std::vector<std::pair<const pg_query::SortBy*, std::optional<uint32_t>>> keys;
    std::vector<ShardColumn> hidden;
    for (const Node& n : s_.sort_clause()) {
      if (!n.has_sort_by()) continue;
      const pg_query::SortBy& sb = n.sort_by();
      if (Status st = checkSortItem(sb); !st.ok()) return st;
      Result<std::optional<uint32_t>> m = matchTarget(sb.node(), true, "ORDER BY");
      if (!m.ok()) return std::move(m).error();
      std::optional<uint32_t> column = *m;
      if (!column && star_ && sb.node().has_a_const() && sb.node().a_const().has_ival()) {
        keys.push_back({&sb, std::nullopt});  // position among the client's columns
        continue;
      }
      if (!column) {
        if (s_.distinct_clause_size() > 0 && !columnOfBareStar(sb.node())) {
          return distinctOrderError();
        }
        if (const pg_query::ResTarget* aliased = aliasNamed(sb.node())) {
          hidden.push_back({aliased->val(), {}});  // SELECT *, f(x) AS y ... ORDER BY y
          keys.push_back({&sb, std::nullopt});
          continue;
        }
        hidden.push_back({sb.node(), {}});
        keys.push_back({&sb, std::nullopt});
        continue;
      }
      keys.push_back({&sb, column});
    }
    const uint32_t n = static_cast<uint32_t>(originals_.size());
    // Each sort key's expression, for its collation probe (none for a position in SELECT *).
    std::vector<const Node*> expressions;
    uint32_t next_hidden = 0;
    for (auto& [sb, column] : keys) {
      if (column) {
        expressions.push_back(&originals_[*column]->val());
      } else if (star_ && sb->node().has_a_const() && sb->node().a_const().has_ival()) {
        expressions.push_back(nullptr);
      } else {
        expressions.push_back(&hidden[next_hidden++].val);
      }
    }
    // SELECT *: the probes go first too, after the hidden sort columns.
    std::vector<bool> probed(keys.size(), false);
    uint32_t probes = 0;
    for (size_t i = 0; i < keys.size(); ++i) {
      probed[i] = star_ && expressions[i] != nullptr && needsCollationProbe(*expressions[i]);
      probes += probed[i] ? 1 : 0;
    }
    const uint32_t lead = star_ ? static_cast<uint32_t>(hidden.size()) + probes : 0;
    next_hidden = 0;
    for (auto& [sb, column] : keys) {
      uint32_t merged = 0;
      bool position_in_star = false;
      if (column) {
        merged = lead + *column;
      } else if (star_ && sb->node().has_a_const() && sb->node().a_const().has_ival()) {
        const int64_t k = sb->node().a_const().ival().ival();
        if (k < 1) {
          return Error::make("42P10",
                             "ORDER BY position " + std::to_string(k) + " is not in select list");
        }
        merged = lead + static_cast<uint32_t>(k - 1);
        position_in_star = true;
      } else {
        merged = star_ ? next_hidden : n + next_hidden;
        ++next_hidden;
      }
      merge_.sort.push_back(sortKey(*sb, merged));
      merge_.sort.back().collation_unknown = position_in_star;
    }
    if (star_) {
      columns_ = hidden;
      for (size_t i = 0; i < keys.size(); ++i) {
        if (!probed[i]) continue;
        merge_.collations.push_back(
            {merge_.sort[i].column, static_cast<uint32_t>(columns_.size())});
        columns_.push_back({collationProbe(*expressions[i], true), {}});
      }
      for (const pg_query::ResTarget* rt : originals_) columns_.push_back({rt->val(), rt->name()});
      merge_.leading_hidden = lead;
    } else {
      for (const pg_query::ResTarget* rt : originals_) columns_.push_back({rt->val(), rt->name()});
      for (ShardColumn& h : hidden) columns_.push_back(std::move(h));
      for (const MergeSortKey& k : merge_.sort) addCollationProbe(k.column);
      // DISTINCT compares the rows of several shards: under a collation shardgate does not know
      // (a nondeterministic ICU one calls 'a' and 'A' equal) it must refuse.
      if (s_.distinct_clause_size() > 0) {
        for (uint32_t c = 0; c < n; ++c) addCollationProbe(c);
      }
      if (columns_.size() > n) {
        for (uint32_t i = 0; i < n; ++i) merge_.visible_columns.push_back(i);
      }
    }
    merge_.distinct = s_.distinct_clause_size() > 0;
    shard_distinct_ = merge_.distinct;
    // The shards sort by the merged columns' positions: the same order, on the columns the k-way
    // merge compares.
    for (const MergeSortKey& k : merge_.sort) {
      pg_query::SortBy sb;
      sb.mutable_node()->CopyFrom(integerConstant(static_cast<int64_t>(k.column) + 1));
      sb.set_sortby_dir(k.descending ? pg_query::SORTBY_DESC : pg_query::SORTBY_DEFAULT);
      const bool default_nulls = k.nulls_first == k.descending;
      sb.set_sortby_nulls(default_nulls   ? pg_query::SORTBY_NULLS_DEFAULT
                          : k.nulls_first ? pg_query::SORTBY_NULLS_FIRST
                                          : pg_query::SORTBY_NULLS_LAST);
      shard_sort_.push_back(std::move(sb));
    }
    // LIMIT n OFFSET m: every shard returns its first n + m rows; shardgate skips m, keeps n.
    if (limit_.kind == CountValue::Kind::kValue) {
      const int64_t m = offset_.kind == CountValue::Kind::kValue ? offset_.value : 0;
      int64_t sum = 0;
      if (limit_.value >= 0 && m >= 0 && !__builtin_add_overflow(limit_.value, m, &sum)) {
        shard_limit_ = sum;
      } else if (limit_.value < 0) {
        shard_limit_ = limit_.value;  // the shards report Postgres's error
      }
    } else if (offset_.kind == CountValue::Kind::kValue && offset_.value < 0) {
      shard_offset_ = offset_.value;  // ditto
    }
    setLimits();
    return {};
  }

  void setLimits() {
    if (limit_.kind == CountValue::Kind::kValue) merge_.limit = constantRef(limit_.value);
    if (offset_.kind == CountValue::Kind::kValue) merge_.offset = constantRef(offset_.value);
  }

  // ---- with aggregation: the shards compute partial aggregates per group ----

  Status planAggregated() {
    if (star_) {
      return notSupported("SELECT * with aggregates across shards is not supported", {},
                          "List the columns.");
    }
    const uint32_t n = static_cast<uint32_t>(originals_.size());
    columns_.resize(n);
    std::vector<bool> is_group(n, false);
    const bool grouped = s_.group_clause_size() > 0;
    // GROUP BY items: select-list columns, or hidden columns.
    for (const Node& g : s_.group_clause()) {
      Result<std::optional<uint32_t>> m = matchTarget(g, true, "GROUP BY");
      if (!m.ok()) return std::move(m).error();
      if (lookups_pending_) return {};
      if (*m) {
        is_group[**m] = true;
        continue;
      }
      hidden_groups_.push_back(g);
    }
    for (uint32_t i = 0; i < n; ++i) {
      const pg_query::ResTarget& rt = *originals_[i];
      const Node& v = rt.val();
      if (!containsAggregate(v)) {
        // Without GROUP BY, a constant or parameter is the same in every shard's one row: the
        // merged rows are grouped by it, which keeps them one group.
        if (!grouped && !isSameOnEveryShard(v)) {
          return notSupported(
              "column " + shownTarget(i) +
                  " is neither an aggregate nor grouped, in a query that aggregates across shards",
              "Without GROUP BY every column of an aggregating query must be an aggregate when "
              "it runs on several shards.",
              "Select the aggregates only.");
        }
        // A column that is not an aggregate is a group key (or depends on one only): grouping
        // the merged rows by it too gives the same groups.
        is_group[i] = true;
        columns_[i] = {v, rt.name()};
        continue;
      }
      if (!v.has_func_call() || !isAggregateCall(v.func_call())) {
        return notSupported(
            "expression " + shownTarget(i) + " over aggregates across shards is not supported",
            "shardgate finishes plain aggregates (count, sum, avg, ...) after the shards "
            "computed them in part, not expressions over them.",
            "Select the aggregates themselves and compute the expression in the application.");
      }
      const std::string name = rt.name().empty() ? figureColumnName(v) : rt.name();
      Result<uint32_t> c = planAggregate(v, i, name);
      if (!c.ok()) return std::move(c).error();
    }
    for (uint32_t i = 0; i < n; ++i) {
      if (is_group[i]) merge_.group_columns.push_back(i);
    }
    for (const Node& g : hidden_groups_) {
      merge_.group_columns.push_back(addHidden(g));
    }
    if (s_.has_having_clause()) {
      Result<MergeExpression> h = havingExpression(s_.having_clause());
      if (!h.ok()) return std::move(h).error();
      merge_.having = std::move(h).value();
    }
    for (const Node& node : s_.sort_clause()) {
      if (!node.has_sort_by()) continue;
      const pg_query::SortBy& sb = node.sort_by();
      if (Status st = checkSortItem(sb); !st.ok()) return st;
      Result<uint32_t> c = mergedColumnOf(sb.node(), true, "ORDER BY");
      if (!c.ok()) return std::move(c).error();
      if (s_.distinct_clause_size() > 0 && *c >= n) return distinctOrderError();
      merge_.sort.push_back(sortKey(sb, *c));
    }
    merge_.aggregate = true;
    merge_.distinct = s_.distinct_clause_size() > 0;
    addAggregatedCollationProbes();
    if (columns_.size() > n) {
      for (uint32_t i = 0; i < n; ++i) merge_.visible_columns.push_back(i);
    }
    setLimits();
    return {};
  }

  std::string shownTarget(uint32_t i) const {
    const pg_query::ResTarget& rt = *originals_[i];
    return rt.name().empty() ? shown(rt.val()) : "\"" + rt.name() + "\"";
  }

  // A hidden probe of merged column `column`'s collation (see MergeCollation), once per column.
  void addCollationProbe(uint32_t column) {
    for (const MergeCollation& c : merge_.collations) {
      if (c.column == column) return;
    }
    if (!needsCollationProbe(columns_[column].val)) return;
    const Node probe = collationProbe(columns_[column].val, !aggregated_);
    merge_.collations.push_back({column, addHidden(probe)});
  }

  // A constant or parameter is the same on every row (nothing to order; and concat($1) would
  // leave Postgres no type for an untyped $1). The sharding key of an integer or uuid key type
  // has no collation: the common ORDER BY id needs no probe.
  bool needsCollationProbe(const Node& e) const {
    return !isRowIndependent(e) && !isUncollatedShardKey(e);
  }

  // Whether `e` is the sharding key column of a FROM table whose key type (from the config) has
  // no collation.
  bool isUncollatedShardKey(const Node& e) const {
    if (!e.has_column_ref() || in_.db == nullptr) return false;
    const auto& fields = e.column_ref().fields();
    if (fields.empty() || fields.size() > 2) return false;
    const std::optional<std::string_view> column = parser::stringValue(fields[fields.size() - 1]);
    const std::optional<std::string_view> qualifier =
        fields.size() == 2 ? parser::stringValue(fields[0]) : std::nullopt;
    if (!column || (fields.size() == 2 && !qualifier)) return false;
    bool found = false;
    for (const Node& item : s_.from_clause()) {
      found = found || fromItemHasUncollatedKey(item, qualifier, *column, 0);
    }
    return found;
  }

  bool fromItemHasUncollatedKey(const Node& item, std::optional<std::string_view> qualifier,
                                std::string_view column, int depth) const {
    if (depth > kMaxWalkDepth) return false;
    if (item.has_join_expr()) {
      const pg_query::JoinExpr& j = item.join_expr();
      // A join alias hides the tables' names; USING merges columns: neither is followed.
      if (j.has_alias() || j.using_clause_size() > 0) return false;
      return fromItemHasUncollatedKey(j.larg(), qualifier, column, depth + 1) ||
             fromItemHasUncollatedKey(j.rarg(), qualifier, column, depth + 1);
    }
    if (!item.has_range_var()) return false;
    const pg_query::RangeVar& rv = item.range_var();
    if (rv.has_alias() && rv.alias().colnames_size() > 0) return false;  // renamed columns
    const std::string& visible = rv.has_alias() ? rv.alias().aliasname() : rv.relname();
    if (qualifier && *qualifier != visible) return false;
    if (namesCte(rv)) return false;
    const conf::ShardedTable* t = in_.db->findShardedTable(rv.schemaname(), rv.relname());
    return t != nullptr && t->column == column &&
           (conf::isIntegerKey(t->key_type) || t->key_type == conf::KeyType::kUuid);
  }

  // Probes for every column the aggregated merge orders or groups text by: sort keys, min and
  // max, the keys of ordered and DISTINCT aggregates, HAVING comparisons, group keys. Counts,
  // sums, averages and the like have no collation to probe.
  void addAggregatedCollationProbes() {
    std::vector<uint32_t> ordered;
    std::vector<bool> uncollated(columns_.size(), false);
    for (const MergeAggregate& a : merge_.aggregates) {
      switch (a.kind) {
        case MergeAggregate::Kind::kMin:
        case MergeAggregate::Kind::kMax:
          ordered.push_back(a.inputs[0]);
          break;
        case MergeAggregate::Kind::kDistinct:
          // The distinct values are ordered for min, max and the listing aggregates.
          if (a.function == "min" || a.function == "max" || a.function == "string_agg" ||
              a.function == "array_agg") {
            ordered.push_back(a.inputs[0]);
          } else {
            uncollated[a.inputs[0]] = true;
          }
          break;
        case MergeAggregate::Kind::kStringAgg:
        case MergeAggregate::Kind::kArrayAgg:
          break;  // concatenated in arrival order; a sort key on them is probed below
        case MergeAggregate::Kind::kOrderedStringAgg:
        case MergeAggregate::Kind::kOrderedArrayAgg:
          for (const MergeAggregate::OrderKey& k : a.order) ordered.push_back(k.column);
          break;
        default:
          uncollated[a.inputs[0]] = true;
          break;
      }
    }
    for (const MergeSortKey& k : merge_.sort) {
      if (!uncollated[k.column]) ordered.push_back(k.column);
    }
    if (merge_.having) comparedColumns(*merge_.having, uncollated, ordered);
    // Groups (and DISTINCT rows) of several shards are matched byte for byte: right for every
    // deterministic collation; the probe makes shardgate refuse one it does not know.
    for (uint32_t c : merge_.group_columns) ordered.push_back(c);
    for (uint32_t c : ordered) addCollationProbe(c);
  }

  static void comparedColumns(const MergeExpression& e, const std::vector<bool>& uncollated,
                              std::vector<uint32_t>& out) {
    if (e.kind == MergeExpression::Kind::kCompare) {
      for (const MergeExpression& side : e.children) {
        if (side.kind == MergeExpression::Kind::kColumn && !uncollated[side.column]) {
          out.push_back(side.column);
        }
      }
    }
    for (const MergeExpression& child : e.children) comparedColumns(child, uncollated, out);
  }

  uint32_t addHidden(const Node& val) {
    columns_.push_back({val, {}});
    return static_cast<uint32_t>(columns_.size() - 1);
  }

  // Puts column `c` at select-list slot `slot` (the client's column), or appends it hidden.
  uint32_t place(std::optional<uint32_t> slot, Node val, const std::string& name) {
    if (slot) {
      columns_[*slot] = {std::move(val), name};
      return *slot;
    }
    return addHidden(val);
  }

  // An aggregate the shards compute in part. Returns the merged column that holds its result.
  Result<uint32_t> planAggregate(const Node& call, std::optional<uint32_t> slot,
                                 const std::string& name) {
    for (const auto& [planned, column] : planned_) {
      if (!slot && sameExpression(planned, call)) return column;
    }
    const pg_query::FuncCall& f = call.func_call();
    const std::string fn = functionName(f);
    if (f.funcname_size() == 2 &&
        parser::stringValue(f.funcname(0)).value_or("") != std::string_view("pg_catalog")) {
      return notSupported("aggregate " + parser::dottedName(f.funcname()) +
                          "() across shards is not supported");
    }
    if (f.agg_within_group()) {
      return notSupported(
          "ordered-set aggregate " + fn + "() (WITHIN GROUP) across shards is not supported",
          "It needs the rows of every shard in one place.",
          "Narrow the query to one shard, or compute it in the application.");
    }
    // The order of the rows changes nothing for these; string_agg and array_agg are merged by it.
    const bool order_free = fn == "count" || fn == "min" || fn == "max" || fn == "bool_and" ||
                            fn == "bool_or" || fn == "every";
    const bool listing = fn == "string_agg" || fn == "array_agg";
    if (f.agg_order_size() > 0 && !order_free && !listing) {
      return notSupported(
          fn + "() with ORDER BY inside the aggregate across shards is not "
               "supported",
          "shardgate merges the shards' partial results by the aggregate's "
          "ORDER BY only for string_agg and array_agg.",
          "Drop the ORDER BY inside " + fn + "(), or narrow the query to one shard.");
    }
    for (const Node& o : f.agg_order()) {
      if (!o.has_sort_by()) return notSupported(fn + "() with this ORDER BY across shards");
      const pg_query::SortBy& sb = o.sort_by();
      if (sb.use_op_size() > 0) {
        return notSupported(fn + "(... ORDER BY ... USING) across shards is not supported", {},
                            "Use ASC or DESC.");
      }
    }
    if (listing && fn == "string_agg" && f.args_size() == 2 && !isRowIndependent(f.args(1)) &&
        (f.agg_distinct() || f.agg_order_size() > 0)) {
      return notSupported(
          "string_agg() with a delimiter that is not a constant or parameter, with DISTINCT or "
          "ORDER BY, across shards is not supported",
          {}, "Use a constant delimiter, or narrow the query to one shard.");
    }
    if (f.func_variadic()) return notSupported("VARIADIC aggregate calls across shards");
    MergeAggregate a;
    a.function = fn;
    // An unchanged call keeps the client's alias (or none: Postgres names it the same); a
    // rewritten one is named as the client's would be.
    const std::string kept = slot ? originals_[*slot]->name() : std::string();
    const auto visible = [&](const Node& v) {
      return place(slot, v, sameExpression(v, call) ? kept : name);
    };
    if (f.agg_distinct()) {
      if (f.has_agg_filter()) {
        return notSupported(fn + "(DISTINCT ...) FILTER (...) across shards is not supported");
      }
      const bool finished = fn == "count" || fn == "sum" || fn == "avg" || fn == "min" ||
                            fn == "max" || fn == "bool_and" || fn == "bool_or" || fn == "every" ||
                            fn == "array_agg";
      if (!(f.args_size() == 1 && finished) && !(fn == "string_agg" && f.args_size() == 2)) {
        return notSupported(fn + "(DISTINCT ...) across shards is not supported",
                            "shardgate finishes count, sum, avg, min, max, bool_and, bool_or, "
                            "every, string_agg and array_agg over DISTINCT values.");
      }
      // Postgres requires a DISTINCT aggregate's ORDER BY to name its arguments; shardgate merges
      // the one ordered by the value itself (the delimiter is a constant).
      if (listing && (f.agg_order_size() > 1 ||
                      (f.agg_order_size() == 1 &&
                       !sameExpression(f.agg_order(0).sort_by().node(), f.args(0))))) {
        return notSupported(fn + "(DISTINCT ... ORDER BY ...) across shards is supported only "
                                 "ordered by the aggregated value",
                            {}, "Order by the value, or narrow the query to one shard.");
      }
      // The shards group by the value as well and return each group's distinct values.
      a.kind = MergeAggregate::Kind::kDistinct;
      a.inputs.push_back(place(slot, f.args(0), name));
      if (listing && f.agg_order_size() == 1) {
        const MergeSortKey k = sortKey(f.agg_order(0).sort_by(), a.inputs[0]);
        a.order.push_back({k.column, k.descending, k.nulls_first});
      }
      if (fn == "string_agg") a.inputs.push_back(addHidden(f.args(1)));
      bool known = false;
      for (const Node& d : distinct_values_) known = known || sameExpression(d, f.args(0));
      if (!known) distinct_values_.push_back(f.args(0));
    } else if (fn == "count" || fn == "sum" || fn == "min" || fn == "max" || fn == "bool_and" ||
               fn == "every" || fn == "bool_or") {
      a.kind = fn == "count"     ? MergeAggregate::Kind::kCount
               : fn == "sum"     ? MergeAggregate::Kind::kSum
               : fn == "min"     ? MergeAggregate::Kind::kMin
               : fn == "max"     ? MergeAggregate::Kind::kMax
               : fn == "bool_or" ? MergeAggregate::Kind::kBoolOr
                                 : MergeAggregate::Kind::kBoolAnd;
      a.inputs.push_back(visible(call));
    } else if (fn == "avg") {
      if (f.args_size() != 1)
        return notSupported("avg() with " + std::to_string(f.args_size()) +
                            " arguments across shards");
      a.kind = MergeAggregate::Kind::kAvg;
      a.inputs.push_back(visible(withFunctionName(call, "sum")));
      a.inputs.push_back(addHidden(withFunctionName(call, "count")));
      a.inputs.push_back(addHidden(realSumInFloat8(call)));
    } else if (fn == "variance" || fn == "var_samp" || fn == "var_pop" || fn == "stddev" ||
               fn == "stddev_samp" || fn == "stddev_pop") {
      if (f.args_size() != 1) return notSupported(fn + "() across shards");
      a.kind = MergeAggregate::Kind::kVariance;
      a.inputs.push_back(visible(withFunctionName(call, "count")));
      const Node x = castToNumeric(f.args(0));
      Node sum = withFunctionName(call, "sum");
      sum.mutable_func_call()->mutable_args(0)->CopyFrom(x);
      a.inputs.push_back(addHidden(sum));
      Node squares = withFunctionName(call, "sum");
      squares.mutable_func_call()->mutable_args(0)->CopyFrom(binaryOp("*", x, x));
      a.inputs.push_back(addHidden(squares));
      // The argument's type, from max() of a NULL of it (an aggregate: allowed beside the others
      // without GROUP BY): over floats Postgres's result is double precision from its own
      // algorithm, which the exact sums cannot reproduce (shardgate refuses it).
      Node type_probe;
      type_probe.mutable_func_call()->add_funcname()->mutable_string()->set_sval("max");
      type_probe.mutable_func_call()->add_args()->CopyFrom(neverEvaluated(f.args(0)));
      type_probe.mutable_func_call()->set_funcformat(pg_query::COERCE_EXPLICIT_CALL);
      a.inputs.push_back(addHidden(type_probe));
    } else if (listing && f.agg_order_size() > 0) {
      if (f.args_size() != (fn == "string_agg" ? 2 : 1)) {
        return notSupported(fn + "() across shards");
      }
      // Each shard returns its elements in the aggregate's order, with the keys beside them;
      // shardgate merges the elements of all shards by the keys.
      a.kind = fn == "string_agg" ? MergeAggregate::Kind::kOrderedStringAgg
                                  : MergeAggregate::Kind::kOrderedArrayAgg;
      a.inputs.push_back(visible(arrayAggOf(call, f.args(0))));
      if (fn == "string_agg") a.inputs.push_back(addHidden(f.args(1)));
      for (const Node& o : f.agg_order()) {
        const pg_query::SortBy& sb = o.sort_by();
        // A key that is the value itself is read from the values' array.
        const uint32_t keys = sameExpression(sb.node(), f.args(0))
                                  ? a.inputs[0]
                                  : addHidden(arrayAggOf(call, sb.node()));
        const MergeSortKey k = sortKey(sb, keys);
        a.order.push_back({k.column, k.descending, k.nulls_first});
      }
    } else if (fn == "string_agg") {
      if (f.args_size() != 2) return notSupported("string_agg() across shards");
      a.kind = MergeAggregate::Kind::kStringAgg;
      a.inputs.push_back(visible(call));
      a.inputs.push_back(addHidden(f.args(1)));
    } else if (fn == "array_agg") {
      if (f.args_size() != 1) return notSupported("array_agg() across shards");
      a.kind = MergeAggregate::Kind::kArrayAgg;
      a.inputs.push_back(visible(call));
    } else {
      return notSupported(
          "aggregate " + fn + "() across shards is not supported",
          "shardgate finishes count, sum, avg, min, max, bool_and, bool_or, "
          "every, stddev, variance, string_agg and array_agg (all but stddev and "
          "variance also over DISTINCT values) from the shards' partial results.",
          "Narrow the query to one shard, or compute " + fn + "() in the application.");
    }
    merge_.aggregates.push_back(a);
    planned_.emplace_back(call, a.inputs[0]);
    return a.inputs[0];
  }

  // The merged column an ORDER BY or HAVING operand stands for: a select-list column, an
  // aggregate (planned as hidden columns if not selected) or a group key (a hidden group column).
  Result<uint32_t> mergedColumnOf(const Node& e, bool by_name, const char* clause) {
    Result<std::optional<uint32_t>> m = matchTarget(e, by_name, clause);
    if (!m.ok()) return std::move(m).error();
    if (*m) return **m;
    if (e.has_func_call() && isAggregateCall(e.func_call())) {
      return planAggregate(e, std::nullopt, {});
    }
    if (containsAggregate(e)) {
      return notSupported(std::string(clause) + " " + shown(e) +
                              " (an expression over aggregates) across shards is not supported",
                          {}, "Select the aggregates themselves.");
    }
    for (size_t i = 0; i < hidden_groups_.size(); ++i) {
      if (sameExpression(hidden_groups_[i], e)) {
        // Hidden group columns were appended in order after the planned select list.
        for (uint32_t c = static_cast<uint32_t>(originals_.size()); c < columns_.size(); ++c) {
          if (sameExpression(columns_[c].val, e)) return c;
        }
      }
    }
    // A group key (Postgres allows only those here): grouping by it too changes no group.
    const uint32_t c = addHidden(e);
    merge_.group_columns.push_back(c);
    hidden_groups_.push_back(e);
    return c;
  }

  Result<MergeExpression> havingExpression(const Node& e) {
    MergeExpression out;
    if (e.has_bool_expr()) {
      const pg_query::BoolExpr& b = e.bool_expr();
      out.kind = b.boolop() == pg_query::AND_EXPR  ? MergeExpression::Kind::kAnd
                 : b.boolop() == pg_query::OR_EXPR ? MergeExpression::Kind::kOr
                                                   : MergeExpression::Kind::kNot;
      for (const Node& a : b.args()) {
        Result<MergeExpression> c = havingExpression(a);
        if (!c.ok()) return c;
        out.children.push_back(std::move(c).value());
      }
      return out;
    }
    if (e.has_a_expr() && e.a_expr().kind() == pg_query::AEXPR_OP && e.a_expr().has_lexpr() &&
        e.a_expr().has_rexpr()) {
      std::string op(parser::lastName(e.a_expr().name()).value_or(""));
      if (op == "!=") op = "<>";
      if (op == "=" || op == "<>" || op == "<" || op == "<=" || op == ">" || op == ">=") {
        out.kind = MergeExpression::Kind::kCompare;
      } else if (op == "+" || op == "-" || op == "*" || op == "/") {
        out.kind = MergeExpression::Kind::kArithmetic;
      } else {
        return havingError(e);
      }
      out.op = op;
      for (const Node* side : {&e.a_expr().lexpr(), &e.a_expr().rexpr()}) {
        Result<MergeExpression> c = havingExpression(*side);
        if (!c.ok()) return c;
        out.children.push_back(std::move(c).value());
      }
      return out;
    }
    if (e.has_null_test() && e.null_test().has_arg()) {
      out.kind = e.null_test().nulltesttype() == pg_query::IS_NULL
                     ? MergeExpression::Kind::kIsNull
                     : MergeExpression::Kind::kIsNotNull;
      Result<MergeExpression> c = havingExpression(e.null_test().arg());
      if (!c.ok()) return c;
      out.children.push_back(std::move(c).value());
      return out;
    }
    if (e.has_a_const()) return constant(e.a_const(), 0);
    if (e.has_type_cast() && e.type_cast().has_arg() && e.type_cast().arg().has_a_const()) {
      const int32_t oid = typeOidOfName(e.type_cast().type_name());
      if (oid == 0) return havingError(e);
      return constant(e.type_cast().arg().a_const(), oid);
    }
    if (e.has_param_ref()) return parameter(e.param_ref().number(), e);
    if (e.has_type_cast() && e.type_cast().has_arg() && e.type_cast().arg().has_param_ref()) {
      Result<MergeExpression> p = parameter(e.type_cast().arg().param_ref().number(), e);
      if (!p.ok()) return p;
      const int32_t oid = typeOidOfName(e.type_cast().type_name());
      if (oid == 0) return havingError(e);
      p->type_oid = oid;
      return p;
    }
    if (e.has_sub_link() || containsWindow(e)) return havingError(e);
    if (e.has_column_ref() || e.has_func_call() || containsAggregate(e) || matchesSelectList(e)) {
      if (!e.has_func_call() && containsAggregate(e)) return havingError(e);
      Result<uint32_t> c = mergedColumnOf(e, false, "HAVING");
      if (!c.ok()) return std::move(c).error();
      out.kind = MergeExpression::Kind::kColumn;
      out.column = *c;
      return out;
    }
    return havingError(e);
  }

  bool matchesSelectList(const Node& e) const {
    for (const pg_query::ResTarget* rt : originals_) {
      if (sameExpression(rt->val(), e)) return true;
    }
    return false;
  }

  static Error havingError(const Node& e) {
    return notSupported("HAVING with " + shown(e) + " across shards is not supported",
                        "shardgate evaluates HAVING itself after merging the shards' groups; it "
                        "knows comparisons, + - * /, AND, OR, NOT, IS [NOT] NULL over aggregates, "
                        "group keys, constants and parameters.",
                        "Simplify the condition, or filter in the application.");
  }

  static Result<MergeExpression> constant(const pg_query::A_Const& c, int32_t oid) {
    MergeExpression out;
    if (c.isnull()) {
      out.kind = MergeExpression::Kind::kNull;
      return out;
    }
    out.kind = MergeExpression::Kind::kConstant;
    out.type_oid = oid;
    if (c.has_ival()) {
      out.text = std::to_string(c.ival().ival());
      if (oid == 0) out.type_oid = 23;
    } else if (c.has_fval()) {
      out.text = c.fval().fval();
      int64_t ignored = 0;
      if (oid == 0) out.type_oid = parseInt64(out.text, ignored) ? 20 : 1700;
    } else if (c.has_sval()) {
      out.text = c.sval().sval();
    } else if (c.has_boolval()) {
      out.text = c.boolval().boolval() ? "true" : "false";
      if (oid == 0) out.type_oid = 16;
    } else {
      return notSupported("HAVING with a bit-string constant across shards is not supported");
    }
    return out;
  }

  Result<MergeExpression> parameter(int number, const Node& e) const {
    const BindParameters* p = in_.params;
    if (p == nullptr || number < 1 || static_cast<size_t>(number) > p->values.size()) {
      return havingError(e);
    }
    const size_t i = static_cast<size_t>(number - 1);
    MergeExpression out;
    if (!p->values[i]) {
      out.kind = MergeExpression::Kind::kNull;
      return out;
    }
    const bool binary = p->formats.size() == 1  ? p->formats[0] == 1
                        : i < p->formats.size() ? p->formats[i] == 1
                                                : false;
    if (binary) {
      return notSupported("HAVING with a binary-format parameter across shards is not supported",
                          {}, "Send $" + std::to_string(number) + " in text format.");
    }
    out.kind = MergeExpression::Kind::kConstant;
    out.text = std::string(*p->values[i]);
    out.type_oid = i < p->type_oids.size() ? p->type_oids[i] : 0;
    return out;
  }

  Result<std::string> buildShardSql(pg_query::Node& stmt) {
    pg_query::SelectStmt* s = stmt.mutable_select_stmt();
    s->CopyFrom(s_);
    s->clear_target_list();
    for (const ShardColumn& c : columns_) {
      pg_query::ResTarget* rt = s->add_target_list()->mutable_res_target();
      rt->mutable_val()->CopyFrom(c.val);
      if (!c.name.empty()) rt->set_name(c.name);
    }
    s->clear_sort_clause();
    s->clear_limit_count();
    s->clear_limit_offset();
    if (aggregated_) {
      // Groups are finished by shardgate: no HAVING, ORDER BY, LIMIT or DISTINCT on the shards.
      s->clear_having_clause();
      s->clear_distinct_clause();
      s->set_limit_option(pg_query::LIMIT_OPTION_DEFAULT);
      for (const Node& d : distinct_values_) {
        bool grouped = false;
        for (const Node& g : s_.group_clause()) grouped = grouped || sameExpression(g, d);
        if (!grouped) s->add_group_clause()->CopyFrom(d);
      }
    } else {
      if (!shard_distinct_) s->clear_distinct_clause();
      for (const pg_query::SortBy& sb : shard_sort_) {
        s->add_sort_clause()->mutable_sort_by()->CopyFrom(sb);
      }
      if (shard_limit_) {
        s->mutable_limit_count()->CopyFrom(integerConstant(*shard_limit_));
        s->set_limit_option(pg_query::LIMIT_OPTION_COUNT);
      } else {
        s->set_limit_option(pg_query::LIMIT_OPTION_DEFAULT);
      }
      if (shard_offset_) s->mutable_limit_offset()->CopyFrom(integerConstant(*shard_offset_));
    }
    return deparseNode(stmt);
  }

  const MultiShardInput& in_;
  const pg_query::SelectStmt& s_;
  std::vector<const pg_query::ResTarget*> originals_;
  bool star_ = false;
  bool aggregated_ = false;
  CountValue limit_;
  CountValue offset_;
  std::vector<ShardColumn> columns_;
  std::vector<Node> hidden_groups_;
  bool lookups_pending_ = false;  // a GROUP BY name waits for in_.column_lookups
  std::vector<Node> distinct_values_;
  std::vector<std::pair<Node, uint32_t>> planned_;  // aggregate call -> merged column
  std::vector<pg_query::SortBy> shard_sort_;
  std::optional<int64_t> shard_limit_;
  std::optional<int64_t> shard_offset_;
  bool shard_distinct_ = false;
  MergePlan merge_;
};

// ---- nested SELECTs ----

class NestedChecker {
 public:
  explicit NestedChecker(const conf::Database& db) : db_(db) {}

  Status checkStatement(const Node& stmt) {
    if (stmt.has_select_stmt()) return checkSelect(stmt.select_stmt(), false);
    if (stmt.has_update_stmt() || stmt.has_delete_stmt() || stmt.has_insert_stmt()) {
      // The write's own level: its target and FROM / USING tables are outer tables.
      Scope scope;
      if (stmt.has_update_stmt()) {
        addRangeVar(stmt.update_stmt().relation(), scope);
        for (const Node& f : stmt.update_stmt().from_clause()) addFromItem(f, scope);
      } else if (stmt.has_delete_stmt()) {
        addRangeVar(stmt.delete_stmt().relation(), scope);
        for (const Node& f : stmt.delete_stmt().using_clause()) addFromItem(f, scope);
      }
      scopes_.push_back(std::move(scope));
      Status st = walkBelow(stmt);
      scopes_.pop_back();
      return st;
    }
    return walkBelow(stmt);
  }

 private:
  struct Scope {
    std::map<std::string, const conf::ShardedTable*, std::less<>> entries;  // name -> table
  };

  void addRangeVar(const pg_query::RangeVar& rv, Scope& scope) const {
    const conf::ShardedTable* t = db_.findShardedTable(rv.schemaname(), rv.relname());
    // An alias column list (t AS x(a, b)) renames columns whose positions shardgate does not
    // know: no name of the entry is taken for its key (as in the analyzer).
    if (rv.has_alias() && rv.alias().colnames_size() > 0) t = nullptr;
    scope.entries[rv.has_alias() ? rv.alias().aliasname() : rv.relname()] = t;
  }

  void addFromItem(const Node& item, Scope& scope) const {
    if (item.has_range_var()) {
      addRangeVar(item.range_var(), scope);
    } else if (item.has_join_expr()) {
      addFromItem(item.join_expr().larg(), scope);
      addFromItem(item.join_expr().rarg(), scope);
      if (item.join_expr().has_alias())
        scope.entries[item.join_expr().alias().aliasname()] = nullptr;
    } else if (item.has_range_subselect() && item.range_subselect().has_alias()) {
      scope.entries[item.range_subselect().alias().aliasname()] = nullptr;
    }
  }

  // Walks everything below `n`, checking each nested SELECT.
  Status walkBelow(const Message& n) {
    Status result;
    const bool ok = visitChildren(
        n,
        [&](const Node& c) {
          if (!result.ok()) return false;
          if (c.has_select_stmt()) {
            result = checkSelect(c.select_stmt(), true);
            return false;
          }
          return true;
        },
        0);
    if (!ok && result.ok()) return tooDeep();
    return result;
  }

  bool readsSharded(const pg_query::SelectStmt& s) const {
    bool found = false;
    visitChildren(
        s,
        [&](const Node& c) {
          if (c.has_range_var() && db_.findShardedTable(c.range_var().schemaname(),
                                                        c.range_var().relname()) != nullptr) {
            found = true;
          }
          return !found;
        },
        0);
    return found;
  }

  Status checkSelect(const pg_query::SelectStmt& s, bool nested) {
    if (nested && readsSharded(s)) {
      if (s.op() != pg_query::SETOP_NONE && !(s.op() == pg_query::SETOP_UNION && s.all())) {
        return notSupported(
            "UNION, INTERSECT or EXCEPT in a subquery over sharded tables that need several "
            "shards is not supported",
            "Each shard would combine only its own rows.", "Use UNION ALL, or run it per shard.");
      }
      const std::string problem = rowSetProblem(s);
      if (!problem.empty() && !keyed(s, problem)) {
        return notSupported(
            problem +
                " in a subquery over sharded tables that need several shards is not "
                "supported",
            "Each shard would compute the subquery over its own rows only.",
            "Correlate the subquery with the outer table on the sharding key, group it by the "
            "sharding key, or narrow the statement to one shard.");
      }
    }
    Scope scope;
    for (const Node& f : s.from_clause()) addFromItem(f, scope);
    scopes_.push_back(std::move(scope));
    Status st;
    if (s.op() != pg_query::SETOP_NONE) {
      st = checkSelect(s.larg(), true);
      if (st.ok()) st = checkSelect(s.rarg(), true);
      if (st.ok() && s.has_with_clause()) st = walkBelow(s.with_clause());
    } else {
      st = walkBelow(s);
    }
    scopes_.pop_back();
    return st;
  }

  static std::string rowSetProblem(const pg_query::SelectStmt& s) {
    if (s.has_limit_count() &&
        !(s.limit_count().has_a_const() && s.limit_count().a_const().isnull())) {
      return "LIMIT";
    }
    if (s.has_limit_offset()) return "OFFSET";
    if (s.distinct_clause_size() > 0) return "DISTINCT";
    if (s.window_clause_size() > 0) return "a window function";
    for (const Node& t : s.target_list()) {
      if (containsWindow(t)) return "a window function";
    }
    if (s.group_clause_size() > 0 || s.has_having_clause()) return "GROUP BY";
    for (const Node& t : s.target_list()) {
      if (containsAggregate(t)) return "an aggregate";
    }
    return {};
  }

  // The sharded table of this level that column reference `ref` names the key of.
  const conf::ShardedTable* localKey(const pg_query::ColumnRef& ref, const Scope& local) const {
    const int n = ref.fields_size();
    if (n == 0 || n > 2) return nullptr;
    const std::optional<std::string_view> column = parser::stringValue(ref.fields(n - 1));
    if (!column) return nullptr;
    if (n == 2) {
      const std::optional<std::string_view> q = parser::stringValue(ref.fields(0));
      if (!q) return nullptr;
      const auto it = local.entries.find(*q);
      if (it == local.entries.end() || it->second == nullptr) return nullptr;
      return it->second->column == *column ? it->second : nullptr;
    }
    const conf::ShardedTable* found = nullptr;
    for (const auto& [name, t] : local.entries) {
      if (t != nullptr && t->column == *column) {
        if (found != nullptr) return nullptr;
        found = t;
      }
    }
    return found;
  }

  // The outer sharded table whose key `ref` names (qualified by an enclosing level's entry).
  const conf::ShardedTable* outerKey(const pg_query::ColumnRef& ref, const Scope& local) const {
    if (ref.fields_size() != 2) return nullptr;
    const std::optional<std::string_view> q = parser::stringValue(ref.fields(0));
    const std::optional<std::string_view> column = parser::stringValue(ref.fields(1));
    if (!q || !column || local.entries.count(*q) > 0) return nullptr;
    for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it) {
      const auto e = it->entries.find(*q);
      if (e == it->entries.end()) continue;
      if (e->second == nullptr || e->second->column != *column) return nullptr;
      return e->second;
    }
    return nullptr;
  }

  // Whether the SELECT's rows for one outer row (or group) all live on one shard: a WHERE
  // conjunct equating this level's sharding key with a co-located outer key, or (for aggregates)
  // GROUP BY the sharding key.
  bool keyed(const pg_query::SelectStmt& s, const std::string& problem) const {
    Scope local;
    for (const Node& f : s.from_clause()) addFromItem(f, local);
    if (problem == "GROUP BY" || problem == "an aggregate") {
      for (const Node& g : s.group_clause()) {
        if (g.has_column_ref() && localKey(g.column_ref(), local) != nullptr) return true;
      }
    }
    if (!s.has_where_clause()) return false;
    std::vector<const Node*> conjuncts{&s.where_clause()};
    for (size_t i = 0; i < conjuncts.size() && i < 1000; ++i) {
      const Node& c = *conjuncts[i];
      if (c.has_bool_expr() && c.bool_expr().boolop() == pg_query::AND_EXPR) {
        for (const Node& a : c.bool_expr().args()) conjuncts.push_back(&a);
        continue;
      }
      if (!c.has_a_expr() || c.a_expr().kind() != pg_query::AEXPR_OP) continue;
      if (parser::lastName(c.a_expr().name()).value_or("") != std::string_view("=")) continue;
      const Node& l = c.a_expr().lexpr();
      const Node& r = c.a_expr().rexpr();
      if (!l.has_column_ref() || !r.has_column_ref()) continue;
      for (const bool left_local : {true, false}) {
        const conf::ShardedTable* in = localKey((left_local ? l : r).column_ref(), local);
        const conf::ShardedTable* out = outerKey((left_local ? r : l).column_ref(), local);
        if (in != nullptr && out != nullptr && tablesCoLocated(*in, *out)) return true;
      }
    }
    return false;
  }

  const conf::Database& db_;
  std::vector<Scope> scopes_;
};

// FROM items whose rows every shard has (reference tables, VALUES, functions) must not be the
// preserved side of an outer join with sharded rows: each shard would add the rows that match none
// of its own.
class OuterJoinChecker {
 public:
  explicit OuterJoinChecker(const conf::Database& db) : db_(db) {}

  Status checkSelect(const pg_query::SelectStmt& s, int depth = 0) {
    if (depth > kMaxWalkDepth) return tooDeep();
    if (s.op() != pg_query::SETOP_NONE) return {};
    for (const Node& item : s.from_clause()) {
      Result<bool> r = item_(item, depth + 1);
      if (!r.ok()) return std::move(r).error();
    }
    return {};
  }

 private:
  // Whether the item has sharded rows; errors for a replicated preserved side.
  Result<bool> item_(const Node& item, int depth) {
    if (depth > kMaxWalkDepth) return tooDeep();
    if (item.has_range_var()) {
      return db_.findShardedTable(item.range_var().schemaname(), item.range_var().relname()) !=
             nullptr;
    }
    if (item.has_range_subselect()) {
      const Node& q = item.range_subselect().subquery();
      if (!q.has_select_stmt()) return false;
      if (Status st = checkSelect(q.select_stmt(), depth + 1); !st.ok()) return st.error();
      bool sharded = false;
      visitChildren(
          q,
          [&](const Node& c) {
            if (c.has_range_var() && db_.findShardedTable(c.range_var().schemaname(),
                                                          c.range_var().relname()) != nullptr) {
              sharded = true;
            }
            return !sharded;
          },
          0);
      return sharded;
    }
    if (!item.has_join_expr()) return false;
    const pg_query::JoinExpr& j = item.join_expr();
    Result<bool> l = item_(j.larg(), depth + 1);
    if (!l.ok()) return l;
    Result<bool> r = item_(j.rarg(), depth + 1);
    if (!r.ok()) return r;
    const bool bad = (j.jointype() == pg_query::JOIN_LEFT && !*l && *r) ||
                     (j.jointype() == pg_query::JOIN_RIGHT && *l && !*r) ||
                     (j.jointype() == pg_query::JOIN_FULL && *l != *r);
    if (bad) {
      const Node& kept =
          j.jointype() == pg_query::JOIN_RIGHT || (j.jointype() == pg_query::JOIN_FULL && *l)
              ? j.rarg()
              : j.larg();
      const std::string what = kept.has_range_var()
                                   ? "table " + parser::qualifiedName(kept.range_var())
                                   : std::string("a FROM item without sharded tables");
      return notSupported(
          "outer join that keeps every row of " + what +
              " (on every shard) with rows of sharded tables is not supported across shards",
          "Each shard would add the rows of " + what + " that match none of its own rows.",
          "Put the sharded table on the kept side or use an inner join, or narrow the query to "
          "one shard.");
    }
    return *l || *r;
  }

  const conf::Database& db_;
};

}  // namespace

Status checkReplicatedOuterJoins(const conf::Database& db, const pg_query::Node& statement) {
  if (statement.has_select_stmt()) return OuterJoinChecker(db).checkSelect(statement.select_stmt());
  if (statement.has_insert_stmt() && statement.insert_stmt().has_select_stmt() &&
      statement.insert_stmt().select_stmt().has_select_stmt()) {
    return OuterJoinChecker(db).checkSelect(statement.insert_stmt().select_stmt().select_stmt());
  }
  return {};
}

bool sameExpression(const Node& a, const Node& b) {
  if (a.node_case() != b.node_case()) return false;
  Node ca = a;
  Node cb = b;
  clearLocations(ca, 0);
  clearLocations(cb, 0);
  std::string sa;
  std::string sb;
  ca.SerializeToString(&sa);
  cb.SerializeToString(&sb);
  return sa == sb;
}

std::string figureColumnName(const Node& e) {
  switch (e.node_case()) {
    case Node::kColumnRef: {
      const auto& f = e.column_ref().fields();
      if (f.empty()) break;
      if (const std::optional<std::string_view> s = parser::stringValue(f[f.size() - 1])) {
        return std::string(*s);
      }
      break;
    }
    case Node::kAIndirection: {
      const auto& ind = e.a_indirection().indirection();
      if (!ind.empty()) {
        if (const std::optional<std::string_view> s = parser::stringValue(ind[ind.size() - 1])) {
          return std::string(*s);
        }
      }
      return figureColumnName(e.a_indirection().arg());
    }
    case Node::kFuncCall:
      return std::string(parser::lastName(e.func_call().funcname()).value_or("?column?"));
    case Node::kAExpr:
      if (e.a_expr().kind() == pg_query::AEXPR_NULLIF) return "nullif";
      break;
    case Node::kTypeCast: {
      const std::string inner = figureColumnName(e.type_cast().arg());
      if (inner != "?column?") return inner;
      return std::string(parser::lastName(e.type_cast().type_name().names()).value_or("?column?"));
    }
    case Node::kCollateClause:
      return figureColumnName(e.collate_clause().arg());
    case Node::kGroupingFunc:
      return "grouping";
    case Node::kSubLink: {
      const pg_query::SubLink& s = e.sub_link();
      if (s.sub_link_type() == pg_query::EXISTS_SUBLINK) return "exists";
      if (s.sub_link_type() == pg_query::ARRAY_SUBLINK) return "array";
      if ((s.sub_link_type() == pg_query::EXPR_SUBLINK ||
           s.sub_link_type() == pg_query::MULTIEXPR_SUBLINK) &&
          s.subselect().has_select_stmt() && s.subselect().select_stmt().target_list_size() > 0 &&
          s.subselect().select_stmt().target_list(0).has_res_target()) {
        const pg_query::ResTarget& rt = s.subselect().select_stmt().target_list(0).res_target();
        return rt.name().empty() ? figureColumnName(rt.val()) : rt.name();
      }
      break;
    }
    case Node::kCaseExpr:
      return "case";
    case Node::kAArrayExpr:
      return "array";
    case Node::kRowExpr:
      return "row";
    case Node::kCoalesceExpr:
      return "coalesce";
    case Node::kMinMaxExpr:
      return e.min_max_expr().op() == pg_query::IS_GREATEST ? "greatest" : "least";
    default:
      break;
  }
  return "?column?";
}

Result<std::shared_ptr<const MultiShardPlan>> planMultiShardRead(const MultiShardInput& in) {
  if (in.statement == nullptr || !in.statement->has_select_stmt()) {
    return notSupported("this statement cannot run on several shards");
  }
  return ReadPlanner(in, in.statement->select_stmt()).plan();
}

// DDL that Postgres runs inside a transaction block; others (CREATE INDEX CONCURRENTLY, VACUUM,
// REINDEX CONCURRENTLY, ...) are not listed.
bool isTransactionalDdl(const Node& statement) {
  if (statement.has_index_stmt()) return !statement.index_stmt().concurrent();
  if (statement.has_drop_stmt()) return !statement.drop_stmt().concurrent();
  return statement.has_create_stmt() || statement.has_alter_table_stmt() ||
         statement.has_truncate_stmt() || statement.has_comment_stmt() ||
         statement.has_rename_stmt() || statement.has_create_seq_stmt() ||
         statement.has_alter_seq_stmt() || statement.has_grant_stmt() ||
         statement.has_create_trig_stmt() || statement.has_rule_stmt();
}

// What in `statement` each server would compute for itself (random values, clocks, sequences,
// transaction ids, physical row addresses): a description, or nullopt.
std::optional<std::string> perServerValue(const Node& statement) {
  static const std::unordered_set<std::string> kFunctions = {"random",
                                                             "random_normal",
                                                             "setseed",
                                                             "gen_random_uuid",
                                                             "gen_random_bytes",
                                                             "uuid_generate_v1",
                                                             "uuid_generate_v1mc",
                                                             "uuid_generate_v4",
                                                             "clock_timestamp",
                                                             "statement_timestamp",
                                                             "transaction_timestamp",
                                                             "now",
                                                             "timeofday",
                                                             "nextval",
                                                             "setval",
                                                             "currval",
                                                             "lastval",
                                                             "txid_current",
                                                             "txid_current_if_assigned",
                                                             "pg_current_xact_id",
                                                             "pg_current_xact_id_if_assigned",
                                                             "pg_backend_pid",
                                                             "inet_server_addr",
                                                             "inet_server_port",
                                                             "pg_postmaster_start_time",
                                                             "pg_conf_load_time",
                                                             "pg_current_wal_lsn"};
  static const std::unordered_set<std::string> kSystemColumns = {"ctid", "xmin", "xmax", "cmin",
                                                                 "cmax"};
  std::optional<std::string> found;
  walkTree(statement, [&](const Node& n) {
    if (found) return false;
    if (n.has_func_call() && kFunctions.contains(functionName(n.func_call()))) {
      found = functionName(n.func_call()) + "()";
    } else if (n.has_sqlvalue_function()) {
      const auto op = n.sqlvalue_function().op();
      if (op != pg_query::SVFOP_CURRENT_ROLE && op != pg_query::SVFOP_CURRENT_USER &&
          op != pg_query::SVFOP_USER && op != pg_query::SVFOP_SESSION_USER &&
          op != pg_query::SVFOP_CURRENT_CATALOG && op != pg_query::SVFOP_CURRENT_SCHEMA) {
        found = "the current date or time";
      }
    } else if (n.has_column_ref()) {
      const std::optional<std::string_view> last = parser::lastName(n.column_ref().fields());
      if (last && kSystemColumns.contains(lower(*last))) found = "system column " + lower(*last);
    }
    return !found;
  });
  return found;
}

Result<std::shared_ptr<const MultiShardPlan>> planSameStatement(const MultiShardInput& in,
                                                                MultiShardPlan::Kind kind,
                                                                bool replicated) {
  if (replicated && in.statement != nullptr) {
    // Every copy of a reference table must end up the same: each shard would compute its own.
    if (std::optional<std::string> value = perServerValue(*in.statement)) {
      return notSupported(
          "writing to a reference table with " + *value + " is not supported",
          "Each shard holds a copy and would compute its own value, so the copies would differ.",
          "Compute the value first and write it as a literal or parameter.");
    }
  }
  auto plan = std::make_shared<MultiShardPlan>();
  plan->kind = kind;
  plan->replicated = replicated;
  plan->reason = in.reason;
  plan->transactional = kind == MultiShardPlan::Kind::kDdl && in.statement != nullptr &&
                        isTransactionalDdl(*in.statement);
  std::string sql;
  if (in.text.empty()) {
    if (in.statement == nullptr) return notSupported("this statement cannot run on several shards");
    Result<std::string> d = deparseNode(*in.statement);
    if (!d.ok()) return std::move(d).error();
    sql = std::move(d).value();
  } else {
    sql = trimmed(in.text);
  }
  for (const uint32_t s : in.shards) plan->statements.push_back({s, sql});
  return std::shared_ptr<const MultiShardPlan>(std::move(plan));
}

Result<std::shared_ptr<const MultiShardPlan>> planInsertSplit(
    const MultiShardInput& in, const std::vector<uint32_t>& row_shards) {
  if (in.statement == nullptr || !in.statement->has_insert_stmt() ||
      !in.statement->insert_stmt().has_select_stmt() ||
      !in.statement->insert_stmt().select_stmt().has_select_stmt()) {
    return notSupported("this INSERT cannot be split across shards");
  }
  const pg_query::InsertStmt& ins = in.statement->insert_stmt();
  const pg_query::SelectStmt& values = ins.select_stmt().select_stmt();
  if (static_cast<size_t>(values.values_lists_size()) != row_shards.size()) {
    return Error::make(sqlstate::kInternalError, "INSERT rows and their shards do not match");
  }
  const bool params = containsParam(ins);
  auto plan = std::make_shared<MultiShardPlan>();
  plan->kind = MultiShardPlan::Kind::kWrite;
  plan->reason = in.reason;
  for (const uint32_t shard : in.shards) {
    Node stmt = *in.statement;
    pg_query::SelectStmt* v =
        stmt.mutable_insert_stmt()->mutable_select_stmt()->mutable_select_stmt();
    v->clear_values_lists();
    for (size_t r = 0; r < row_shards.size(); ++r) {
      if (row_shards[r] == shard)
        v->add_values_lists()->CopyFrom(values.values_lists(static_cast<int>(r)));
    }
    if (v->values_lists_size() == 0) continue;
    std::vector<int32_t> used;
    if (params) {
      // This shard's rows use only some parameters: they become $1, $2, ... in order of use.
      std::map<int32_t, int32_t> renumbered;
      if (!renumberParams(stmt, renumbered, used, 0)) return tooDeep();
    }
    Result<std::string> sql = deparseNode(stmt);
    if (!sql.ok()) return std::move(sql).error();
    plan->statements.push_back({shard, std::move(sql).value(), std::move(used)});
  }
  // RETURNING rows come back in VALUES order, as from one Postgres (clients such as ORMs pair
  // returned ids with their rows by position). ON CONFLICT may return no row for some: then the
  // rows cannot be paired and come as the shards send them.
  if (ins.returning_list_size() > 0 && !ins.has_on_conflict_clause()) {
    for (const uint32_t shard : row_shards) {
      for (size_t i = 0; i < plan->statements.size(); ++i) {
        if (plan->statements[i].shard == shard) {
          plan->returning_statements.push_back(static_cast<uint32_t>(i));
          break;
        }
      }
    }
  }
  return std::shared_ptr<const MultiShardPlan>(std::move(plan));
}

std::optional<std::shared_ptr<const MultiShardPlan>> planUtilityWithoutTables(
    const MultiShardInput& in) {
  if (in.statement == nullptr || in.db == nullptr) return std::nullopt;
  const Node& n = *in.statement;
  auto plan = std::make_shared<MultiShardPlan>();
  plan->kind = MultiShardPlan::Kind::kDdl;
  plan->reason = in.reason;
  const std::string text = trimmed(in.text);
  if (n.has_drop_stmt() && n.drop_stmt().remove_type() == pg_query::OBJECT_INDEX) {
    // The index may belong to a sharded table (on every shard) or to an unsharded one (on the
    // default shard only): the default shard says whether it exists, the others drop it if so.
    std::string if_exists = text;
    if (!n.drop_stmt().missing_ok()) {
      Node copy = n;
      copy.mutable_drop_stmt()->set_missing_ok(true);
      Result<std::string> d = deparseNode(copy);
      if (!d.ok()) return std::nullopt;
      if_exists = std::move(d).value();
    }
    for (const uint32_t s : in.shards) {
      plan->statements.push_back({s, s == in.db->default_shard ? text : if_exists});
    }
    return std::shared_ptr<const MultiShardPlan>(std::move(plan));
  }
  if (n.has_vacuum_stmt() && n.vacuum_stmt().rels_size() == 0) {
    for (const uint32_t s : in.shards) plan->statements.push_back({s, text});
    return std::shared_ptr<const MultiShardPlan>(std::move(plan));
  }
  return std::nullopt;
}

Status checkNestedSelects(const conf::Database& db, const pg_query::Node& statement) {
  return NestedChecker(db).checkStatement(statement);
}

std::vector<std::string> describeMultiShardPlan(const conf::Database& db,
                                                const MultiShardPlan& plan) {
  std::vector<std::string> out;
  std::vector<bool> done(plan.statements.size(), false);
  for (size_t i = 0; i < plan.statements.size(); ++i) {
    if (done[i]) continue;
    const ShardStatement& st = plan.statements[i];
    std::string shards = shardName(db, st.shard);
    for (size_t j = i + 1; j < plan.statements.size(); ++j) {
      if (!done[j] && plan.statements[j].sql == st.sql && plan.statements[j].params == st.params) {
        shards += ", " + shardName(db, plan.statements[j].shard);
        done[j] = true;
      }
    }
    std::string params;
    for (size_t p = 0; p < st.params.size(); ++p) {
      params +=
          (p ? ", $" : " with $") + std::to_string(st.params[p]) + " as $" + std::to_string(p + 1);
    }
    out.push_back("Shard SQL (" + shards + params + "): " + st.sql);
  }
  switch (plan.kind) {
    case MultiShardPlan::Kind::kRead:
      if (!plan.merge) {
        out.push_back("Merge: concatenate");
      } else {
        for (const std::string& line : plan.merge->explain) out.push_back("Merge: " + line);
      }
      break;
    case MultiShardPlan::Kind::kWrite:
      out.push_back(plan.replicated ? "Merge: one shard's result (every shard holds a copy)"
                                    : "Merge: command tags summed, RETURNING rows concatenated");
      break;
    case MultiShardPlan::Kind::kDdl:
      out.push_back("Merge: one command tag; a failure names its shard");
      break;
    case MultiShardPlan::Kind::kCopyIn:
      out.push_back(plan.replicated ? "Merge: every row to every shard, one shard's count"
                                    : "Merge: rows split by key, counts summed");
      break;
    case MultiShardPlan::Kind::kCopyOut:
      out.push_back("Merge: rows passed on as they arrive, counts summed");
      break;
  }
  return out;
}

bool containsParameter(const pg_query::Node& n) {
  return n.has_param_ref() || containsParam(n);
}

}  // namespace shardgate::planner
