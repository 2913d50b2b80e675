// HAVING evaluation after the merge (see having.h).
#include "executor/having.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>

namespace shardgate::executor {
namespace {

using Expr = planner::MergeExpression;

// A value during evaluation.
struct Value {
  enum class Kind : uint8_t { kNull, kBool, kInteger, kNumeric, kFloat, kTyped, kUntyped };
  Kind kind = Kind::kNull;
  bool boolean = false;
  __int128 integer = 0;
  int bytes = 8;  // kInteger: smallint 2, integer 4, bigint 8 (arithmetic overflows as they do)
  Decimal numeric;
  double real = 0;
  ColumnType type;   // kTyped: a column or typed constant of another type
  ValueKey key;      // kTyped
  std::string text;  // kUntyped: a literal typed by the other operand
};

Error cannotEvaluate(std::string what) {
  return Error::make("0A000", "cannot evaluate HAVING across shards: " + std::move(what), {},
                     "Filter on the sharding key to run the query on one shard.");
}

Result<Value> fromKey(const ColumnType& type, ValueKey key) {
  Value v;
  switch (type.value_class()) {
    case ValueClass::kBool:
      v.kind = Value::Kind::kBool;
      v.boolean = key.integer != 0;
      return v;
    case ValueClass::kInteger:
      v.kind = Value::Kind::kInteger;
      v.integer = key.integer;
      v.bytes = type.oid == pg_type::kInt2 ? 2 : type.oid == pg_type::kInt4 ? 4 : 8;
      return v;
    case ValueClass::kNumeric:
      v.kind = Value::Kind::kNumeric;
      v.numeric = std::move(key.decimal);
      return v;
    case ValueClass::kFloat:
      v.kind = Value::Kind::kFloat;
      v.real = key.real;
      return v;
    default:
      v.kind = Value::Kind::kTyped;
      v.type = type;
      v.key = std::move(key);
      return v;
  }
}

Result<Value> typedFromText(int32_t type_oid, std::string_view text) {
  ColumnType type{type_oid, 0};
  auto key = decodeValue(type, text);
  if (!key.ok()) return std::move(key).error();
  return fromKey(type, std::move(*key));
}

bool isNumber(const Value& v) {
  return v.kind == Value::Kind::kInteger || v.kind == Value::Kind::kNumeric ||
         v.kind == Value::Kind::kFloat;
}

Decimal asDecimal(const Value& v) {
  return v.kind == Value::Kind::kNumeric ? v.numeric : Decimal::fromInteger(BigInt(v.integer));
}

double asDouble(const Value& v) {
  switch (v.kind) {
    case Value::Kind::kFloat:
      return v.real;
    case Value::Kind::kInteger:
      return static_cast<double>(v.integer);
    default: {
      if (v.numeric.isNaN()) return std::numeric_limits<double>::quiet_NaN();
      if (v.numeric.kind() == Decimal::Kind::kPositiveInfinity) return HUGE_VAL;
      if (v.numeric.kind() == Decimal::Kind::kNegativeInfinity) return -HUGE_VAL;
      return std::strtod(v.numeric.toText().c_str(), nullptr);  // HUGE_VAL past double's range
    }
  }
}

// An untyped literal takes the other operand's type (Postgres's unknown-literal resolution).
Status resolveUntyped(Value& v, const Value& other) {
  if (v.kind != Value::Kind::kUntyped) return {};
  int32_t oid = pg_type::kText;
  switch (other.kind) {
    case Value::Kind::kBool:
      oid = pg_type::kBool;
      break;
    case Value::Kind::kInteger:
      oid = other.bytes == 2 ? pg_type::kInt2 : other.bytes == 4 ? pg_type::kInt4 : pg_type::kInt8;
      break;
    case Value::Kind::kNumeric:
      oid = pg_type::kNumeric;
      break;
    case Value::Kind::kFloat:
      oid = pg_type::kFloat8;
      break;
    case Value::Kind::kTyped:
      oid = other.type.oid;
      break;
    default:
      break;
  }
  auto typed = typedFromText(oid, v.text);
  if (!typed.ok()) return std::move(typed).error();
  v = std::move(*typed);
  return {};
}

int threeWay(double a, double b) {
  const bool an = std::isnan(a), bn = std::isnan(b);
  if (an || bn) return an == bn ? 0 : (an ? 1 : -1);
  return a < b ? -1 : (a > b ? 1 : 0);
}

Result<int> compareValues(Value a, Value b, const Collation& collation) {
  Status s = resolveUntyped(a, b);
  if (!s.ok()) return std::move(s).error();
  s = resolveUntyped(b, a);
  if (!s.ok()) return std::move(s).error();
  if (isNumber(a) && isNumber(b)) {
    if (a.kind == Value::Kind::kFloat || b.kind == Value::Kind::kFloat) {
      return threeWay(asDouble(a), asDouble(b));
    }
    if (a.kind == Value::Kind::kInteger && b.kind == Value::Kind::kInteger) {
      return a.integer < b.integer ? -1 : (a.integer > b.integer ? 1 : 0);
    }
    return asDecimal(a).compare(asDecimal(b));
  }
  if (a.kind == Value::Kind::kBool && b.kind == Value::Kind::kBool) {
    return static_cast<int>(a.boolean) - static_cast<int>(b.boolean);
  }
  if (a.kind == Value::Kind::kTyped && b.kind == Value::Kind::kTyped &&
      a.type.value_class() == b.type.value_class()) {
    return compareKeys(a.key, b.key, collation);
  }
  return cannotEvaluate("comparison of values of different types");
}

Result<Value> arithmetic(const std::string& op, Value a, Value b) {
  Status s = resolveUntyped(a, b);
  if (!s.ok()) return std::move(s).error();
  s = resolveUntyped(b, a);
  if (!s.ok()) return std::move(s).error();
  if (!isNumber(a) || !isNumber(b)) return cannotEvaluate("arithmetic on non-numeric values");
  Value out;
  if (a.kind == Value::Kind::kFloat || b.kind == Value::Kind::kFloat) {
    const double x = asDouble(a), y = asDouble(b);
    out.kind = Value::Kind::kFloat;
    if (op == "+")
      out.real = x + y;
    else if (op == "-")
      out.real = x - y;
    else if (op == "*")
      out.real = x * y;
    else if (op == "/") {
      if (y == 0) return Error::make("22012", "division by zero");
      out.real = x / y;
    } else {
      return cannotEvaluate("operator " + op);
    }
    return out;
  }
  if (a.kind == Value::Kind::kInteger && b.kind == Value::Kind::kInteger) {
    out.kind = Value::Kind::kInteger;
    if (op == "+")
      out.integer = a.integer + b.integer;
    else if (op == "-")
      out.integer = a.integer - b.integer;
    else if (op == "*")
      out.integer = a.integer * b.integer;
    else if (op == "/") {
      if (b.integer == 0) return Error::make("22012", "division by zero");
      out.integer = a.integer / b.integer;  // integer division truncates, as in Postgres
    } else {
      return cannotEvaluate("operator " + op);
    }
    // int2 op int2 is int2, int2 op int4 int4, anything with int8 int8: each overflows at its
    // own width, as Postgres's operators do.
    out.bytes = std::max(a.bytes, b.bytes);
    const int bits = out.bytes * 8;
    const __int128 max = (static_cast<__int128>(1) << (bits - 1)) - 1;
    if (out.integer > max || out.integer < -max - 1) {
      return Error::make("22003", std::string(out.bytes == 2   ? "smallint"
                                              : out.bytes == 4 ? "integer"
                                                               : "bigint") +
                                      " out of range");
    }
    return out;
  }
  const Decimal x = asDecimal(a), y = asDecimal(b);
  out.kind = Value::Kind::kNumeric;
  if (op == "+")
    out.numeric = x.add(y);
  else if (op == "-")
    out.numeric = x.subtract(y);
  else if (op == "*")
    out.numeric = x.multiply(y);
  else if (op == "/") {
    auto q = x.divide(y);
    if (!q.ok()) return std::move(q).error();
    out.numeric = std::move(*q);
  } else {
    return cannotEvaluate("operator " + op);
  }
  return out;
}

struct Evaluator {
  const MergedRow& row;
  const std::vector<ColumnType>& types;
  const ColumnCollations& collations;

  // A comparison with a column is in that column's collation (Postgres: the implicit collation
  // of the column wins over a constant's default).
  const Collation& collationOf(const Expr& comparison) const {
    for (const Expr& side : comparison.children) {
      if (side.kind == Expr::Kind::kColumn) return collations.of(side.column);
    }
    return collations.database();
  }

  Result<Value> eval(const Expr& e) const {
    switch (e.kind) {
      case Expr::Kind::kNull:
        return Value{};
      case Expr::Kind::kColumn: {
        const Cell c = row.cell(e.column);
        if (!c) return Value{};
        const ColumnType& type = types[e.column];
        auto key = decodeValue(type, *c);
        if (!key.ok()) return std::move(key).error();
        return fromKey(type, std::move(*key));
      }
      case Expr::Kind::kConstant: {
        if (e.type_oid == 0 || e.type_oid == pg_type::kUnknown) {
          Value v;
          v.kind = Value::Kind::kUntyped;
          v.text = e.text;
          return v;
        }
        return typedFromText(e.type_oid, e.text);
      }
      case Expr::Kind::kAnd:
      case Expr::Kind::kOr: {
        const bool is_and = e.kind == Expr::Kind::kAnd;
        bool any_null = false;
        for (const Expr& child : e.children) {
          auto v = evalBool(child);
          if (!v.ok()) return std::move(v).error();
          if (!*v) {
            any_null = true;
          } else if (**v != is_and) {
            return boolean(!is_and);  // AND meets false / OR meets true
          }
        }
        if (any_null) return Value{};
        return boolean(is_and);
      }
      case Expr::Kind::kNot: {
        if (e.children.size() != 1) return cannotEvaluate("malformed NOT");
        auto v = evalBool(e.children[0]);
        if (!v.ok()) return std::move(v).error();
        if (!*v) return Value{};
        return boolean(!**v);
      }
      case Expr::Kind::kIsNull:
      case Expr::Kind::kIsNotNull: {
        if (e.children.size() != 1) return cannotEvaluate("malformed IS NULL");
        auto v = eval(e.children[0]);
        if (!v.ok()) return std::move(v).error();
        const bool is_null = v->kind == Value::Kind::kNull;
        return boolean(e.kind == Expr::Kind::kIsNull ? is_null : !is_null);
      }
      case Expr::Kind::kCompare: {
        if (e.children.size() != 2) return cannotEvaluate("malformed comparison");
        auto a = eval(e.children[0]);
        if (!a.ok()) return std::move(a).error();
        auto b = eval(e.children[1]);
        if (!b.ok()) return std::move(b).error();
        if (a->kind == Value::Kind::kNull || b->kind == Value::Kind::kNull) return Value{};
        auto c = compareValues(std::move(*a), std::move(*b), collationOf(e));
        if (!c.ok()) return std::move(c).error();
        const int r = *c;
        if (e.op == "=") return boolean(r == 0);
        if (e.op == "<>" || e.op == "!=") return boolean(r != 0);
        if (e.op == "<") return boolean(r < 0);
        if (e.op == "<=") return boolean(r <= 0);
        if (e.op == ">") return boolean(r > 0);
        if (e.op == ">=") return boolean(r >= 0);
        return cannotEvaluate("comparison operator " + e.op);
      }
      case Expr::Kind::kArithmetic: {
        if (e.children.size() != 2) return cannotEvaluate("malformed arithmetic");
        auto a = eval(e.children[0]);
        if (!a.ok()) return std::move(a).error();
        auto b = eval(e.children[1]);
        if (!b.ok()) return std::move(b).error();
        if (a->kind == Value::Kind::kNull || b->kind == Value::Kind::kNull) return Value{};
        return arithmetic(e.op, std::move(*a), std::move(*b));
      }
    }
    return cannotEvaluate("an unknown expression");
  }

  // nullopt for NULL.
  Result<std::optional<bool>> evalBool(const Expr& e) const {
    auto v = eval(e);
    if (!v.ok()) return std::move(v).error();
    if (v->kind == Value::Kind::kNull) return std::optional<bool>();
    if (v->kind == Value::Kind::kUntyped) {
      auto typed = typedFromText(pg_type::kBool, v->text);
      if (!typed.ok()) return std::move(typed).error();
      return std::optional<bool>(typed->boolean);
    }
    if (v->kind != Value::Kind::kBool) return cannotEvaluate("a non-boolean condition");
    return std::optional<bool>(v->boolean);
  }

  static Value boolean(bool b) {
    Value v;
    v.kind = Value::Kind::kBool;
    v.boolean = b;
    return v;
  }
};

Status validateNode(const Expr& e, const std::vector<ColumnType>& types, int depth) {
  if (depth > 1000) return Error::make("54001", "HAVING expression is too deeply nested");
  if (e.kind == Expr::Kind::kColumn) {
    if (e.column >= types.size()) {
      return Error::make("XX000", "multi-shard plan's HAVING reads column " +
                                      std::to_string(e.column + 1) + " of " +
                                      std::to_string(types.size()));
    }
    const ValueClass c = types[e.column].value_class();
    if (c == ValueClass::kOther) {
      return cannotEvaluate("column " + std::to_string(e.column + 1) + " is of " +
                            typeName(types[e.column].oid));
    }
  }
  for (const Expr& child : e.children) {
    Status s = validateNode(child, types, depth + 1);
    if (!s.ok()) return s;
  }
  return {};
}

std::string describeNode(const Expr& e) {
  switch (e.kind) {
    case Expr::Kind::kColumn:
      return "column " + std::to_string(e.column);
    case Expr::Kind::kConstant:
      return "'" + e.text + "'";
    case Expr::Kind::kNull:
      return "NULL";
    case Expr::Kind::kAnd:
    case Expr::Kind::kOr: {
      std::string s = "(";
      for (size_t i = 0; i < e.children.size(); ++i) {
        if (i > 0) s += e.kind == Expr::Kind::kAnd ? " AND " : " OR ";
        s += describeNode(e.children[i]);
      }
      return s + ")";
    }
    case Expr::Kind::kNot:
      return "NOT " + (e.children.empty() ? std::string("?") : describeNode(e.children[0]));
    case Expr::Kind::kCompare:
    case Expr::Kind::kArithmetic:
      if (e.children.size() != 2) return "?";
      return "(" + describeNode(e.children[0]) + " " + e.op + " " + describeNode(e.children[1]) +
             ")";
    case Expr::Kind::kIsNull:
    case Expr::Kind::kIsNotNull:
      return (e.children.empty() ? std::string("?") : describeNode(e.children[0])) +
             (e.kind == Expr::Kind::kIsNull ? " IS NULL" : " IS NOT NULL");
  }
  return "?";
}

}  // namespace

Status HavingFilter::validate(const planner::MergeExpression& expression,
                              const std::vector<ColumnType>& column_types) {
  return validateNode(expression, column_types, 0);
}

Result<bool> HavingFilter::passes(const MergedRow& row) const {
  Evaluator evaluator{row, types_, *collations_};
  auto v = evaluator.evalBool(*expression_);
  if (!v.ok()) return std::move(v).error();
  return v->value_or(false);
}

std::string HavingFilter::describe(const planner::MergeExpression& expression) {
  return "Filter(HAVING " + describeNode(expression) + ")";
}

}  // namespace shardgate::executor
