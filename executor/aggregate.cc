// Finishing partial aggregates from the shards per group (see aggregate.h).
#include "executor/aggregate.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>

#include "executor/distinct.h"
#include "executor/float_format.h"
#include "executor/pg_array.h"
#include "executor/row_order.h"

namespace shardgate::executor {

using Kind = planner::MergeAggregate::Kind;
using Function = AggregateSpec::Function;
using Arithmetic = AggregateSpec::Arithmetic;

// The running state of one aggregate in one group; only the members its function uses are set.
struct AggregateState {
  bool seen = false;       // some non-NULL input arrived
  __int128 integer = 0;    // counts, integer sums
  int64_t count = 0;       // avg and variance: the number of input rows
  Decimal sum;             // numeric sums; variance: sum
  Decimal sum_of_squares;  // variance
  double float8_sum = 0;
  float float4_sum = 0;
  bool flag = false;                // bool_and / bool_or
  std::optional<std::string> best;  // min / max: the value as the shard sent it
  ValueKey best_key;
  std::string text;  // string_agg: the concatenation; array_agg: elements (text or binary)
  // array_agg in binary: dimensions after the first must agree between the partial arrays.
  int32_t array_dimensions = 0;
  int32_t array_element_type = 0;
  bool array_has_null = false;
  int32_t array_length = 0;            // first dimension
  std::string array_inner_dimensions;  // the (size, lower bound) pairs of dimensions 2..n
  // DISTINCT: each distinct non-NULL value once (raw bytes and decoded key), and whether a NULL
  // was among them.
  std::unordered_map<std::string, size_t> distinct_index;
  std::vector<std::pair<std::string, ValueKey>> distinct_values;
  bool distinct_null = false;
  std::optional<std::string> delimiter;  // string_agg(DISTINCT ...), ordered string_agg
  // Ordered string_agg / array_agg: every element of the group with its decoded sort keys.
  // string_agg: the value as text, or a bytea's raw bytes; array_agg: the item as the values
  // array holds it (see PgArray).
  struct OrderedElement {
    std::optional<std::string> value;
    DecodedKeys keys;
  };
  std::vector<OrderedElement> ordered;
};

namespace {

Error unsupported(std::string message, std::string hint = {}) {
  return Error::make("0A000", std::move(message), {}, std::move(hint));
}

Error planMismatch(std::string detail) {
  return Error::make("XX000", "multi-shard aggregate plan does not fit the shards' result columns",
                     std::move(detail));
}

std::string bigEndian(uint64_t v, int bytes) {
  std::string out(static_cast<size_t>(bytes), '\0');
  for (int i = bytes - 1; i >= 0; --i) {
    out[static_cast<size_t>(i)] = static_cast<char>(v & 0xFF);
    v >>= 8;
  }
  return out;
}

uint32_t readUint32(std::string_view b, size_t at) {
  return (static_cast<uint32_t>(static_cast<unsigned char>(b[at])) << 24) |
         (static_cast<uint32_t>(static_cast<unsigned char>(b[at + 1])) << 16) |
         (static_cast<uint32_t>(static_cast<unsigned char>(b[at + 2])) << 8) |
         static_cast<uint32_t>(static_cast<unsigned char>(b[at + 3]));
}

Result<std::string> encodeInteger(__int128 v, const ColumnType& type) {
  int bytes = 8;
  __int128 low = std::numeric_limits<int64_t>::min();
  __int128 high = std::numeric_limits<int64_t>::max();
  if (type.oid == pg_type::kInt4) {
    bytes = 4;
    low = std::numeric_limits<int32_t>::min();
    high = std::numeric_limits<int32_t>::max();
  } else if (type.oid == pg_type::kInt2) {
    bytes = 2;
    low = std::numeric_limits<int16_t>::min();
    high = std::numeric_limits<int16_t>::max();
  }
  if (v < low || v > high) return Error::make("22003", typeName(type.oid) + " out of range");
  const auto narrow = static_cast<int64_t>(v);
  if (type.binary()) return bigEndian(static_cast<uint64_t>(narrow), bytes);
  return std::to_string(narrow);
}

std::string encodeNumeric(const Decimal& d, const ColumnType& type) {
  return type.binary() ? d.toBinary() : d.toText();
}

// A NaN's sign bit depends on how it arose (on x86, Inf + -Inf gives a negative NaN) and so on the
// order in which the shards' partial sums were added; the binary form sends Postgres's own NaN
// (get_float8_nan, positive), which its NaN inputs carry.
std::string encodeFloat8(double v, const AggregateSpec& spec) {
  if (std::isnan(v)) v = std::numeric_limits<double>::quiet_NaN();
  if (spec.result.binary()) return bigEndian(std::bit_cast<uint64_t>(v), 8);
  return formatFloat8(v, spec.extra_float_digits);
}

std::string encodeFloat4(float v, const AggregateSpec& spec) {
  if (std::isnan(v)) v = std::numeric_limits<float>::quiet_NaN();
  if (spec.result.binary()) return bigEndian(std::bit_cast<uint32_t>(v), 4);
  return formatFloat4(v, spec.extra_float_digits);
}

std::string encodeBool(bool v, const ColumnType& type) {
  if (type.binary()) return std::string(1, v ? '\1' : '\0');
  return v ? "t" : "f";
}

Decimal toDecimal(const ValueKey& key) {
  if (key.tag == ValueKey::Tag::kDecimal) return key.decimal;
  return Decimal::fromInteger(BigInt(key.integer));
}

// Concatenates one shard's partial array_agg into the state.
Status appendArrayPartial(AggregateState& st, std::string_view partial, const ColumnType& type) {
  if (!type.binary()) {
    // "{a,b}" -> "a,b"; array_agg's results never carry explicit bounds.
    if (partial.size() < 2 || partial.front() != '{' || partial.back() != '}') {
      return unsupported("cannot merge array_agg results with explicit bounds across shards");
    }
    const std::string_view inner = partial.substr(1, partial.size() - 2);
    if (inner.empty()) return {};
    if (!st.text.empty()) st.text.push_back(',');
    st.text.append(inner);
    return {};
  }
  // array_send: ndim, has-null flag, element type, (size, lower bound) per dimension, elements.
  auto malformed = [] {
    return Error::make("XX000", "malformed binary array from a shard in array_agg");
  };
  if (partial.size() < 12) return malformed();
  const auto dims = static_cast<int32_t>(readUint32(partial, 0));
  const bool has_null = readUint32(partial, 4) != 0;
  const auto element_type = static_cast<int32_t>(readUint32(partial, 8));
  if (dims == 0) return {};
  if (dims < 0 || dims > 6 || partial.size() < 12 + 8 * static_cast<size_t>(dims))
    return malformed();
  const auto length = static_cast<int32_t>(readUint32(partial, 12));
  const std::string inner(partial.substr(20, 8 * static_cast<size_t>(dims - 1)));
  if (st.array_dimensions == 0) {
    st.array_dimensions = dims;
    st.array_element_type = element_type;
    st.array_inner_dimensions = inner;
  } else if (st.array_dimensions != dims || st.array_inner_dimensions != inner) {
    return Error::make("2202E", "cannot accumulate arrays of different dimensionality");
  }
  st.array_has_null = st.array_has_null || has_null;
  st.array_length += length;
  st.text.append(partial.substr(12 + 8 * static_cast<size_t>(dims)));
  return {};
}

std::string finishBinaryArray(const AggregateState& st) {
  std::string out = bigEndian(static_cast<uint32_t>(st.array_dimensions), 4);
  out += bigEndian(st.array_has_null ? 1 : 0, 4);
  out += bigEndian(static_cast<uint32_t>(st.array_element_type), 4);
  out += bigEndian(static_cast<uint32_t>(st.array_length), 4);
  out += bigEndian(1, 4);  // lower bound
  out += st.array_inner_dimensions;
  out += st.text;
  return out;
}

// bytea values in text form are "\x..." hex: concatenation drops the later prefixes.
std::string_view byteaHexDigits(std::string_view v) {
  return v.starts_with("\\x") ? v.substr(2) : v;
}

Result<Function> functionByName(const std::string& name) {
  static const std::pair<const char*, Function> kNames[] = {
      {"count", Function::kCount},
      {"sum", Function::kSum},
      {"min", Function::kMin},
      {"max", Function::kMax},
      {"avg", Function::kAvg},
      {"bool_and", Function::kBoolAnd},
      {"every", Function::kBoolAnd},
      {"bool_or", Function::kBoolOr},
      {"string_agg", Function::kStringAgg},
      {"array_agg", Function::kArrayAgg},
  };
  for (const auto& [n, f] : kNames) {
    if (name == n) return f;
  }
  return unsupported("aggregate " + name + "(DISTINCT ...) is not supported across shards",
                     "Filter on the sharding key to run the query on one shard.");
}

Result<Arithmetic> arithmeticOf(const ColumnType& type, std::string_view what) {
  switch (type.oid) {
    case pg_type::kInt2:
    case pg_type::kInt4:
    case pg_type::kInt8:
      return Arithmetic::kInteger;
    case pg_type::kNumeric:
      return Arithmetic::kNumeric;
    case pg_type::kFloat8:
      return Arithmetic::kFloat8;
    case pg_type::kFloat4:
      return Arithmetic::kFloat4;
    default:
      return unsupported("cannot compute " + std::string(what) + " of " + typeName(type.oid) +
                         " across shards");
  }
}

// Resolves one plan aggregate against the shard columns.
Result<AggregateSpec> resolve(const planner::MergeAggregate& agg,
                              const std::vector<ColumnType>& columns) {
  AggregateSpec spec;
  spec.kind = agg.kind;
  spec.inputs = agg.inputs;
  size_t wanted = 1;
  switch (agg.kind) {
    case Kind::kAvg:
      wanted = 2;
      break;
    case Kind::kVariance:
      wanted = 3;
      break;
    case Kind::kStringAgg:
    case Kind::kOrderedStringAgg:
      wanted = 2;
      break;
    default:
      break;
  }
  if (agg.inputs.size() < wanted) {
    return planMismatch(agg.function + " needs " + std::to_string(wanted) + " input columns");
  }
  for (uint32_t input : agg.inputs) {
    if (input >= columns.size()) {
      return planMismatch(agg.function + " reads column " + std::to_string(input + 1) + " of " +
                          std::to_string(columns.size()));
    }
    spec.input_types.push_back(columns[input]);
  }
  const ColumnType& first = spec.input_types[0];
  spec.result = first;
  auto arithmetic = [&](std::string_view what) -> Status {
    auto a = arithmeticOf(first, what);
    if (!a.ok()) return std::move(a).error();
    spec.arithmetic = *a;
    return {};
  };
  switch (agg.kind) {
    case Kind::kCount:
      spec.function = Function::kCount;
      if (first.value_class() != ValueClass::kInteger)
        return planMismatch("count partial is not an integer");
      spec.result.oid = pg_type::kInt8;
      break;
    case Kind::kSum: {
      spec.function = Function::kSum;
      Status s = arithmetic("sum");
      if (!s.ok()) return std::move(s).error();
      break;
    }
    case Kind::kMin:
    case Kind::kMax: {
      spec.function = agg.kind == Kind::kMin ? Function::kMin : Function::kMax;
      Status s = requireOrderable(first, agg.inputs[0], agg.function + "() over");
      if (!s.ok()) return std::move(s).error();
      break;
    }
    case Kind::kAvg: {
      spec.function = Function::kAvg;
      Status s = arithmetic("avg");
      if (!s.ok()) return std::move(s).error();
      if (spec.arithmetic == Arithmetic::kFloat4 &&
          (spec.input_types.size() < 3 || spec.input_types[2].oid != pg_type::kFloat8)) {
        // avg(real) accumulates in double precision; a real partial sum already lost digits.
        return unsupported("cannot compute avg() from a real partial sum across shards",
                           "The shards must return sum(x::float8).");
      }
      if (spec.input_types[1].value_class() != ValueClass::kInteger) {
        return planMismatch("avg count partial is not an integer");
      }
      spec.result.oid =
          spec.arithmetic == Arithmetic::kFloat8 || spec.arithmetic == Arithmetic::kFloat4
              ? pg_type::kFloat8
              : pg_type::kNumeric;
      break;
    }
    case Kind::kBoolAnd:
    case Kind::kBoolOr:
      spec.function = agg.kind == Kind::kBoolAnd ? Function::kBoolAnd : Function::kBoolOr;
      if (first.oid != pg_type::kBool)
        return planMismatch(agg.function + " partial is not boolean");
      break;
    case Kind::kVariance: {
      spec.function = Function::kVariance;
      const std::string& f = agg.function;
      spec.root = f.starts_with("stddev");
      spec.sample = !f.ends_with("_pop");
      if (f != "variance" && f != "var_samp" && f != "var_pop" && f != "stddev" &&
          f != "stddev_samp" && f != "stddev_pop") {
        return unsupported("aggregate " + f + " is not supported across shards");
      }
      for (size_t i = 1; i < spec.input_types.size(); ++i) {
        const ValueClass c = spec.input_types[i].value_class();
        if (c == ValueClass::kFloat) {
          return unsupported(
              f + "() over floating-point values is not supported across shards",
              "Postgres computes it with the Youngs-Cramer algorithm in double precision, which "
              "shardgate cannot reproduce digit for digit from partial sums; cast the argument to "
              "numeric, or filter on the sharding key.");
        }
        if (i < 3 && c != ValueClass::kInteger && c != ValueClass::kNumeric) {
          return planMismatch(f + " partial sums are not numeric");
        }
      }
      spec.result.oid = pg_type::kNumeric;
      break;
    }
    case Kind::kDistinct: {
      spec.distinct = true;
      auto function = functionByName(agg.function);
      if (!function.ok()) return std::move(function).error();
      spec.function = *function;
      Status s = requireOrderable(first, agg.inputs[0], agg.function + "(DISTINCT ...) over");
      if (!s.ok()) return std::move(s).error();
      switch (spec.function) {
        case Function::kCount:
          spec.result.oid = pg_type::kInt8;
          break;
        case Function::kSum:
        case Function::kAvg: {
          Status a = arithmetic(agg.function);
          if (!a.ok()) return std::move(a).error();
          if (spec.function == Function::kAvg) {
            spec.result.oid =
                spec.arithmetic == Arithmetic::kInteger || spec.arithmetic == Arithmetic::kNumeric
                    ? pg_type::kNumeric
                    : pg_type::kFloat8;
          } else if (first.oid == pg_type::kInt2 || first.oid == pg_type::kInt4) {
            spec.result.oid = pg_type::kInt8;
          } else if (first.oid == pg_type::kInt8) {
            spec.result.oid = pg_type::kNumeric;
          }
          break;
        }
        case Function::kBoolAnd:
        case Function::kBoolOr:
          if (first.oid != pg_type::kBool) return planMismatch(agg.function + " over non-boolean");
          break;
        case Function::kStringAgg:
          if (first.oid != pg_type::kBytea) spec.result.oid = pg_type::kText;
          break;
        case Function::kArrayAgg:
          spec.result.oid = arrayTypeOf(first.oid);
          if (spec.result.oid == 0) {
            return unsupported("array_agg(DISTINCT ...) over " + typeName(first.oid) +
                               " is not supported across shards");
          }
          break;
        default:
          break;
      }
      break;
    }
    case Kind::kStringAgg:
      spec.function = Function::kStringAgg;
      break;
    case Kind::kArrayAgg:
      spec.function = Function::kArrayAgg;
      break;
    case Kind::kOrderedStringAgg:
    case Kind::kOrderedArrayAgg: {
      spec.function = agg.kind == Kind::kOrderedStringAgg ? Function::kOrderedStringAgg
                                                          : Function::kOrderedArrayAgg;
      spec.array_delimiter = arrayDelimiterOf(first.oid);
      if (spec.function == Function::kOrderedStringAgg) {
        // string_agg takes text or bytea; text-like inputs (varchar, bpchar, name) give text.
        spec.result.oid =
            elementTypeOf(first.oid) == pg_type::kBytea ? pg_type::kBytea : pg_type::kText;
        if (spec.result.oid == pg_type::kBytea && spec.input_types[1].oid != pg_type::kBytea) {
          return unsupported("string_agg(bytea, ...) with an untyped delimiter across shards",
                             "Cast the delimiter to bytea.");
        }
      }
      if (agg.order.empty()) return planMismatch(agg.function + " has no ORDER BY keys");
      for (const auto& key : agg.order) {
        if (key.column >= columns.size()) {
          return planMismatch(agg.function + " sorts on column " + std::to_string(key.column + 1) +
                              " of " + std::to_string(columns.size()));
        }
        const ColumnType element{elementTypeOf(columns[key.column].oid),
                                 columns[key.column].format};
        if (element.oid == 0 || element.value_class() == ValueClass::kOther) {
          return unsupported("cannot merge " + agg.function +
                             "(... ORDER BY ...) across shards: a sort key's type (array type " +
                             std::to_string(columns[key.column].oid) +
                             ") is not one shardgate "
                             "can order");
        }
        spec.key_types.push_back(element);
      }
      spec.order = agg.order;
      break;
    }
  }
  if (agg.kind == Kind::kDistinct) spec.order = agg.order;
  if (agg.result_type_oid != 0 && agg.result_type_oid != spec.result.oid) {
    return planMismatch(agg.function + ": the plan says type " +
                        std::to_string(agg.result_type_oid) + ", the shards' columns give " +
                        std::to_string(spec.result.oid));
  }
  return spec;
}

Result<ValueKey> decodeCell(const ColumnType& type, std::string_view v) {
  return decodeValue(type, v);
}

// A bytea value's raw bytes, from its text ("\x..." or escape form) or binary form.
Result<std::string> byteaBytes(std::string_view v, int16_t format) {
  if (format == 1) return std::string(v);
  auto key = decodeValue(ColumnType{pg_type::kBytea, 0}, v);
  if (!key.ok()) return std::move(key).error();
  return std::move(key->bytes);
}

std::string hexBytea(std::string_view raw) {
  static const char kDigits[] = "0123456789abcdef";
  std::string out = "\\x";
  out.reserve(2 + 2 * raw.size());
  for (char c : raw) {
    const auto b = static_cast<unsigned char>(c);
    out.push_back(kDigits[b >> 4]);
    out.push_back(kDigits[b & 0xF]);
  }
  return out;
}

// Folds one shard row's partial of an ordered string_agg / array_agg into the state: the values
// array and the key arrays, element by element (position i of each belongs to the same row).
Status accumulateOrdered(const AggregateSpec& spec, AggregateState& st, const ShardRow& row,
                         MemoryBudget& budget) {
  const Cell values_cell = row.cell(spec.inputs[0]);
  if (!values_cell) return {};  // no rows of this group on that shard (or FILTER left none)
  const ColumnType& values_type = spec.input_types[0];
  auto values = parsePgArray(*values_cell, values_type.format, spec.array_delimiter);
  if (!values.ok()) return std::move(values).error();
  std::vector<PgArray> keys;
  keys.reserve(spec.order.size());
  for (size_t k = 0; k < spec.order.size(); ++k) {
    const Cell c = row.cell(spec.order[k].column);
    if (!c)
      return planMismatch(spec.function == Function::kOrderedStringAgg
                              ? "string_agg sort keys missing"
                              : "array_agg sort keys missing");
    auto parsed = parsePgArray(*c, spec.key_types[k].format, ',');
    if (!parsed.ok()) return std::move(parsed).error();
    if (parsed->items.size() != values->items.size()) {
      return planMismatch("an ordered aggregate's key array and value array differ in length");
    }
    keys.push_back(std::move(*parsed));
  }
  const bool string_agg = spec.function == Function::kOrderedStringAgg;
  if (string_agg && !st.delimiter) {
    if (const Cell d = row.cell(spec.inputs[1])) {
      if (spec.result.oid == pg_type::kBytea) {
        auto raw = byteaBytes(*d, spec.input_types[1].format);
        if (!raw.ok()) return std::move(raw).error();
        st.delimiter = std::move(*raw);
      } else {
        st.delimiter = std::string(*d);
      }
    }
  }
  if (!string_agg && values_type.binary() && !values->items.empty()) {
    // Sub-arrays (array_agg over arrays) must agree in their dimensions, as Postgres requires.
    if (st.array_dimensions == 0) {
      st.array_dimensions = values->dimensions;
      st.array_element_type = values->element_type;
      st.array_inner_dimensions = values->inner_dimensions;
    } else if (st.array_dimensions != values->dimensions ||
               st.array_inner_dimensions != values->inner_dimensions) {
      return Error::make("2202E", "cannot accumulate arrays of different dimensionality");
    }
    st.array_has_null = st.array_has_null || values->has_null;
  }
  const int32_t value_element = elementTypeOf(values_type.oid);
  size_t cost = 0;
  for (size_t i = 0; i < values->items.size(); ++i) {
    std::optional<std::string>& item = values->items[i];
    AggregateState::OrderedElement element;
    if (string_agg) {
      if (!item) continue;  // string_agg skips NULL values
      std::string v = values_type.binary() ? std::move(*item) : unquoteArrayItem(*item);
      if (spec.result.oid == pg_type::kBytea) {
        auto raw = byteaBytes(v, values_type.format);
        if (!raw.ok()) return std::move(raw).error();
        v = std::move(*raw);
      } else if (value_element == pg_type::kBpchar) {
        // string_agg sees the value cast to text, which drops char(n)'s trailing blanks.
        while (!v.empty() && v.back() == ' ') v.pop_back();
      }
      element.value = std::move(v);
    } else {
      element.value = std::move(item);
    }
    element.keys.reserve(keys.size());
    for (size_t k = 0; k < keys.size(); ++k) {
      const std::optional<std::string>& key_item = keys[k].items[i];
      if (!key_item) {
        element.keys.emplace_back(std::nullopt);
        continue;
      }
      const ColumnType& key_type = spec.key_types[k];
      auto decoded = key_type.binary() ? decodeValue(key_type, *key_item)
                                       : decodeValue(key_type, unquoteArrayItem(*key_item));
      if (!decoded.ok()) return std::move(decoded).error();
      cost += decoded->bytes.capacity();
      element.keys.emplace_back(std::move(*decoded));
    }
    cost += sizeof(element) + (element.value ? element.value->capacity() : 0) +
            element.keys.capacity() * sizeof(std::optional<ValueKey>);
    st.ordered.push_back(std::move(element));
    st.seen = true;
  }
  return budget.charge(cost);
}

// Compares two elements of an ordered aggregate by its ORDER BY keys.
int compareOrdered(const AggregateSpec& spec, const DecodedKeys& a, const DecodedKeys& b,
                   const ColumnCollations& collations) {
  for (size_t i = 0; i < spec.order.size(); ++i) {
    const auto& key = spec.order[i];
    if (!a[i] || !b[i]) {
      if (!a[i] && !b[i]) continue;
      return !a[i] ? (key.nulls_first ? -1 : 1) : (key.nulls_first ? 1 : -1);
    }
    const int c = compareKeys(*a[i], *b[i], collations.of(key.column));
    if (c != 0) return key.descending ? -c : c;
  }
  return 0;
}

// The finished ordered string_agg / array_agg: the elements of every shard in the aggregate's
// order (among equal keys any order is Postgres's too).
std::optional<std::string> finishOrdered(const AggregateSpec& spec, AggregateState& st,
                                         const ColumnCollations& collations) {
  if (!st.seen) return std::nullopt;
  std::stable_sort(st.ordered.begin(), st.ordered.end(), [&](const auto& a, const auto& b) {
    return compareOrdered(spec, a.keys, b.keys, collations) < 0;
  });
  if (spec.function == Function::kOrderedStringAgg) {
    std::string out;
    for (size_t i = 0; i < st.ordered.size(); ++i) {
      if (i > 0 && st.delimiter) out += *st.delimiter;
      out += *st.ordered[i].value;
    }
    if (spec.result.oid == pg_type::kBytea && !spec.result.binary()) return hexBytea(out);
    return out;
  }
  std::vector<const std::optional<std::string>*> items;
  items.reserve(st.ordered.size());
  bool has_null = st.array_has_null;
  for (const auto& e : st.ordered) {
    items.push_back(&e.value);
    has_null = has_null || !e.value;
  }
  if (spec.result.binary()) {
    return buildBinaryArray(items, st.array_element_type, has_null, st.array_inner_dimensions);
  }
  return buildTextArray(items, spec.array_delimiter);
}

// Folds one shard row into the state of one aggregate.
Status accumulate(const AggregateSpec& spec, AggregateState& st, const ShardRow& row,
                  const ColumnCollations& collations, MemoryBudget& budget) {
  const Cell value = row.cell(spec.inputs[0]);
  if (spec.distinct) {
    if (!value) {
      st.distinct_null = true;
      return {};
    }
    if (spec.function == Function::kStringAgg && !st.delimiter && spec.inputs.size() > 1) {
      if (const Cell d = row.cell(spec.inputs[1])) st.delimiter = std::string(*d);
    }
    auto key = decodeCell(spec.input_types[0], *value);
    if (!key.ok()) return std::move(key).error();
    std::string equality;
    appendEqualityBytes(*key, equality);
    if (st.distinct_index.count(equality) != 0) return {};
    const size_t cost = 2 * equality.size() + value->size() + 160;
    st.distinct_index.emplace(std::move(equality), st.distinct_values.size());
    st.distinct_values.emplace_back(std::string(*value), std::move(*key));
    return budget.charge(cost);
  }
  switch (spec.function) {
    case Function::kCount: {
      if (!value) return {};
      auto key = decodeCell(spec.input_types[0], *value);
      if (!key.ok()) return std::move(key).error();
      st.integer += key->integer;
      st.seen = true;
      return {};
    }
    case Function::kSum:
    case Function::kAvg: {
      if (spec.function == Function::kAvg) {
        if (const Cell count = row.cell(spec.inputs[1])) {
          auto key = decodeCell(spec.input_types[1], *count);
          if (!key.ok()) return std::move(key).error();
          st.count += key->integer;
        }
      }
      if (!value) return {};
      if (spec.function == Function::kAvg && spec.arithmetic == Arithmetic::kFloat4) {
        // avg(real): the shards' sums in double precision (the third input), as Postgres sums.
        const Cell wide = row.cell(spec.inputs[2]);
        if (!wide) return planMismatch("avg(real) has no double precision sum");
        auto sum = decodeCell(spec.input_types[2], *wide);
        if (!sum.ok()) return std::move(sum).error();
        st.float8_sum += sum->real;
        st.seen = true;
        return {};
      }
      auto key = decodeCell(spec.input_types[0], *value);
      if (!key.ok()) return std::move(key).error();
      st.seen = true;
      switch (spec.arithmetic) {
        case Arithmetic::kInteger:
          st.integer += key->integer;
          break;
        case Arithmetic::kNumeric:
          st.sum = st.sum.add(key->decimal);
          break;
        case Arithmetic::kFloat8:
          st.float8_sum += key->real;
          break;
        case Arithmetic::kFloat4:
          st.float4_sum += static_cast<float>(key->real);
          break;
      }
      return {};
    }
    case Function::kMin:
    case Function::kMax: {
      if (!value) return {};
      auto key = decodeCell(spec.input_types[0], *value);
      if (!key.ok()) return std::move(key).error();
      const Collation& collation = collations.of(spec.inputs[0]);
      const bool better = !st.best || (spec.function == Function::kMin
                                           ? compareKeys(*key, st.best_key, collation) < 0
                                           : compareKeys(*key, st.best_key, collation) > 0);
      if (better) {
        st.best = std::string(*value);
        st.best_key = std::move(*key);
      }
      return {};
    }
    case Function::kBoolAnd:
    case Function::kBoolOr: {
      if (!value) return {};
      auto key = decodeCell(spec.input_types[0], *value);
      if (!key.ok()) return std::move(key).error();
      const bool v = key->integer != 0;
      st.flag =
          !st.seen ? v : (spec.function == Function::kBoolAnd ? (st.flag && v) : (st.flag || v));
      st.seen = true;
      return {};
    }
    case Function::kVariance: {
      const Cell count = row.cell(spec.inputs[0]);
      const Cell sum = row.cell(spec.inputs[1]);
      const Cell squares = row.cell(spec.inputs[2]);
      if (!count) return {};
      auto n = decodeCell(spec.input_types[0], *count);
      if (!n.ok()) return std::move(n).error();
      if (n->integer == 0) return {};
      if (!sum || !squares) return planMismatch("variance partial sums are NULL with rows counted");
      auto s = decodeCell(spec.input_types[1], *sum);
      if (!s.ok()) return std::move(s).error();
      auto q = decodeCell(spec.input_types[2], *squares);
      if (!q.ok()) return std::move(q).error();
      st.count += n->integer;
      st.sum = st.sum.add(toDecimal(*s));
      st.sum_of_squares = st.sum_of_squares.add(toDecimal(*q));
      st.seen = true;
      return {};
    }
    case Function::kStringAgg: {
      if (!value) return {};
      const size_t before = st.text.size();
      const bool hex = spec.result.oid == pg_type::kBytea && !spec.result.binary();
      if (st.seen) {
        if (const Cell d = row.cell(spec.inputs[1])) st.text.append(hex ? byteaHexDigits(*d) : *d);
      } else if (hex) {
        st.text = "\\x";
      }
      st.text.append(hex ? byteaHexDigits(*value) : *value);
      st.seen = true;
      return budget.charge(st.text.size() - before);
    }
    case Function::kArrayAgg: {
      if (!value) return {};
      const size_t before = st.text.size();
      Status s = appendArrayPartial(st, *value, spec.result);
      if (!s.ok()) return s;
      st.seen = true;
      return budget.charge(st.text.size() - before);
    }
    case Function::kOrderedStringAgg:
    case Function::kOrderedArrayAgg:
      return accumulateOrdered(spec, st, row, budget);
  }
  return {};
}

// numeric_stddev_internal over the merged count, sum and sum of squares.
std::optional<Decimal> finishVariance(const AggregateSpec& spec, const AggregateState& st) {
  if (st.count == 0 || (spec.sample && st.count <= 1)) return std::nullopt;
  if (!st.sum.isFinite() || !st.sum_of_squares.isFinite()) {
    return Decimal::special(Decimal::Kind::kNaN);
  }
  const Decimal n = Decimal::fromInteger(BigInt(st.count));
  const int rscale = st.sum.scale() * 2;
  const Decimal sum_squared = st.sum.multiply(st.sum, rscale);
  const Decimal numerator = n.multiply(st.sum_of_squares, rscale).subtract(sum_squared);
  if (numerator.compare(Decimal::fromInteger(0)) <= 0) return Decimal::fromInteger(0);
  const Decimal denominator =
      spec.sample ? n.multiply(Decimal::fromInteger(BigInt(st.count - 1)), 0) : n.multiply(n, 0);
  const int result_scale = numerator.selectDivScale(denominator);
  Decimal variance = numerator.divideRounded(denominator, result_scale);
  if (spec.root) variance = variance.squareRoot(result_scale);
  return variance;
}

// Applies the DISTINCT aggregate's function to the group's distinct values.
Result<std::optional<std::string>> finishDistinct(const AggregateSpec& spec, AggregateState& st,
                                                  const ColumnCollations& collations) {
  auto& values = st.distinct_values;
  const Collation& collation = collations.of(spec.inputs[0]);
  const ColumnType& input = spec.input_types[0];
  // Postgres feeds a DISTINCT aggregate its input sorted (that is how it removes duplicates), so
  // ordered results (string_agg, array_agg, float sums) follow the type's order.
  // string_agg / array_agg(DISTINCT x ORDER BY x DESC [NULLS ...]) want the reverse, or the NULL
  // first.
  const bool descending = !spec.order.empty() && spec.order[0].descending;
  const bool null_first = !spec.order.empty() && spec.order[0].nulls_first;
  std::stable_sort(values.begin(), values.end(), [&](const auto& a, const auto& b) {
    const int c = compareKeys(a.second, b.second, collation);
    return descending ? c > 0 : c < 0;
  });
  using Out = std::optional<std::string>;
  switch (spec.function) {
    case Function::kCount:
      return Out(*encodeInteger(static_cast<__int128>(values.size()), spec.result));
    case Function::kMin:
    case Function::kMax:
      if (values.empty()) return Out();
      return Out(spec.function == Function::kMin ? values.front().first : values.back().first);
    case Function::kBoolAnd:
    case Function::kBoolOr: {
      if (values.empty()) return Out();
      bool v = spec.function == Function::kBoolAnd;
      for (const auto& [raw, key] : values) {
        v = spec.function == Function::kBoolAnd ? (v && key.integer != 0) : (v || key.integer != 0);
      }
      return Out(encodeBool(v, spec.result));
    }
    case Function::kSum:
    case Function::kAvg: {
      if (values.empty()) return Out();
      const auto count = static_cast<int64_t>(values.size());
      if (spec.arithmetic == Arithmetic::kFloat8 || spec.arithmetic == Arithmetic::kFloat4) {
        double sum8 = 0;
        float sum4 = 0;
        for (const auto& [raw, key] : values) {
          sum8 += key.real;
          sum4 += static_cast<float>(key.real);
        }
        if (spec.function == Function::kAvg)
          return Out(encodeFloat8(sum8 / static_cast<double>(count), spec));
        if (spec.arithmetic == Arithmetic::kFloat4) return Out(encodeFloat4(sum4, spec));
        return Out(encodeFloat8(sum8, spec));
      }
      Decimal sum;
      for (const auto& [raw, key] : values) sum = sum.add(toDecimal(key));
      if (spec.function == Function::kAvg) {
        auto avg = sum.divide(Decimal::fromInteger(BigInt(count)));
        if (!avg.ok()) return std::move(avg).error();
        return Out(encodeNumeric(*avg, spec.result));
      }
      if (spec.result.oid == pg_type::kNumeric) return Out(encodeNumeric(sum, spec.result));
      int64_t whole = 0;
      if (!sum.toInt64(whole)) return Error::make("22003", "bigint out of range");
      auto encoded = encodeInteger(whole, spec.result);
      if (!encoded.ok()) return std::move(encoded).error();
      return Out(std::move(*encoded));
    }
    case Function::kStringAgg: {
      if (values.empty()) return Out();
      const bool hex = input.oid == pg_type::kBytea && !spec.result.binary();
      std::string out = hex ? "\\x" : "";
      for (size_t i = 0; i < values.size(); ++i) {
        if (i > 0 && st.delimiter) out += hex ? byteaHexDigits(*st.delimiter) : *st.delimiter;
        out += hex ? byteaHexDigits(values[i].first) : values[i].first;
      }
      return Out(std::move(out));
    }
    case Function::kArrayAgg: {
      if (values.empty() && !st.distinct_null) return Out();
      const size_t elements = values.size() + (st.distinct_null ? 1 : 0);
      if (spec.result.binary()) {
        std::string out = bigEndian(1, 4);
        out += bigEndian(st.distinct_null ? 1 : 0, 4);
        out += bigEndian(static_cast<uint32_t>(input.oid), 4);
        out += bigEndian(elements, 4);
        out += bigEndian(1, 4);
        if (st.distinct_null && null_first) out += bigEndian(0xFFFFFFFFu, 4);
        for (const auto& [raw, key] : values) {
          out += bigEndian(raw.size(), 4);
          out += raw;
        }
        if (st.distinct_null && !null_first) out += bigEndian(0xFFFFFFFFu, 4);
        return Out(std::move(out));
      }
      std::string out = "{";
      if (st.distinct_null && null_first) out += values.empty() ? "NULL" : "NULL,";
      for (size_t i = 0; i < values.size(); ++i) {
        if (i > 0) out += ',';
        appendQuotedArrayElement(values[i].first, out);
      }
      if (st.distinct_null && !null_first) out += values.empty() ? "NULL" : ",NULL";
      out += '}';
      return Out(std::move(out));
    }
    case Function::kVariance:
    case Function::kOrderedStringAgg:
    case Function::kOrderedArrayAgg:
      break;
  }
  return unsupported("aggregate is not supported with DISTINCT across shards");
}

// The finished value of one aggregate for one group, in the client's format.
Result<std::optional<std::string>> finishAggregate(const AggregateSpec& spec, AggregateState& st,
                                                   const ColumnCollations& collations) {
  using Out = std::optional<std::string>;
  if (spec.distinct) return finishDistinct(spec, st, collations);
  switch (spec.function) {
    case Function::kCount: {
      auto encoded = encodeInteger(st.integer, spec.result);
      if (!encoded.ok()) return std::move(encoded).error();
      return Out(std::move(*encoded));
    }
    case Function::kSum: {
      if (!st.seen) return Out();
      switch (spec.arithmetic) {
        case Arithmetic::kInteger: {
          auto encoded = encodeInteger(st.integer, spec.result);
          if (!encoded.ok()) return std::move(encoded).error();
          return Out(std::move(*encoded));
        }
        case Arithmetic::kNumeric:
          return Out(encodeNumeric(st.sum, spec.result));
        case Arithmetic::kFloat8:
          return Out(encodeFloat8(st.float8_sum, spec));
        case Arithmetic::kFloat4:
          return Out(encodeFloat4(st.float4_sum, spec));
      }
      return Out();
    }
    case Function::kAvg: {
      if (st.count == 0) return Out();
      if (spec.arithmetic == Arithmetic::kFloat8 || spec.arithmetic == Arithmetic::kFloat4) {
        return Out(encodeFloat8(st.float8_sum / static_cast<double>(st.count), spec));
      }
      const Decimal sum = spec.arithmetic == Arithmetic::kInteger
                              ? Decimal::fromInteger(BigInt(st.integer))
                              : st.sum;
      auto avg = sum.divide(Decimal::fromInteger(BigInt(st.count)));
      if (!avg.ok()) return std::move(avg).error();
      return Out(encodeNumeric(*avg, spec.result));
    }
    case Function::kMin:
    case Function::kMax:
      return Out(st.best);
    case Function::kBoolAnd:
    case Function::kBoolOr:
      if (!st.seen) return Out();
      return Out(encodeBool(st.flag, spec.result));
    case Function::kVariance: {
      const std::optional<Decimal> v = finishVariance(spec, st);
      if (!v) return Out();
      return Out(encodeNumeric(*v, spec.result));
    }
    case Function::kStringAgg:
      if (!st.seen) return Out();
      return Out(st.text);
    case Function::kArrayAgg:
      if (!st.seen) return Out();
      if (spec.result.binary()) return Out(finishBinaryArray(st));
      return Out("{" + st.text + "}");
    case Function::kOrderedStringAgg:
    case Function::kOrderedArrayAgg:
      return finishOrdered(spec, st, collations);
  }
  return Out();
}

}  // namespace

HashAggregate::HashAggregate(HashAggregate&&) noexcept = default;
HashAggregate& HashAggregate::operator=(HashAggregate&&) noexcept = default;
HashAggregate::~HashAggregate() = default;

Result<HashAggregate> HashAggregate::create(const planner::MergePlan& plan,
                                            const std::vector<ColumnType>& shard_columns,
                                            std::shared_ptr<const ColumnCollations> collations,
                                            MemoryBudget* budget, int extra_float_digits) {
  HashAggregate agg;
  agg.shard_columns_ = shard_columns;
  agg.merged_columns_ = shard_columns;
  agg.collations_ = std::move(collations);
  agg.budget_ = budget;
  agg.group_columns_ = plan.group_columns;
  agg.aggregate_input_.assign(shard_columns.size(), false);
  for (uint32_t column : plan.group_columns) {
    if (column >= shard_columns.size()) {
      return planMismatch("GROUP BY column " + std::to_string(column + 1) + " of " +
                          std::to_string(shard_columns.size()));
    }
    Status s = requireOrderable(shard_columns[column], column, "group by");
    if (s.ok())
      s = requireExactFloats(shard_columns[column], column, "group by", extra_float_digits);
    if (!s.ok()) return std::move(s).error();
  }
  // Each aggregate's result replaces its first input column, so that column must be its own:
  // not a grouping column, not another aggregate's result.
  std::vector<bool> result_column(shard_columns.size(), false);
  for (uint32_t column : plan.group_columns) result_column[column] = true;
  for (const auto& a : plan.aggregates) {
    auto spec = resolve(a, shard_columns);
    if (!spec.ok()) return std::move(spec).error();
    if (result_column[spec->inputs[0]]) {
      return planMismatch(a.function + "'s first input, column " +
                          std::to_string(spec->inputs[0] + 1) +
                          ", is also a grouping column or another aggregate's result");
    }
    result_column[spec->inputs[0]] = true;
    if (spec->distinct || spec->function == Function::kSum || spec->function == Function::kAvg) {
      Status s = requireExactFloats(shard_columns[spec->inputs[0]], spec->inputs[0],
                                    "aggregate (" + a.function + ")", extra_float_digits);
      if (!s.ok()) return std::move(s).error();
    }
    spec->extra_float_digits = extra_float_digits;
    for (uint32_t input : spec->inputs) agg.aggregate_input_[input] = true;
    if (spec->kind != Kind::kDistinct) {
      for (const auto& key : spec->order) agg.aggregate_input_[key.column] = true;
    }
    agg.merged_columns_[spec->inputs[0]] = spec->result;
    agg.specs_.push_back(std::move(*spec));
  }
  // A grouping column may also feed an aggregate (count's column, say): its value stays.
  for (uint32_t column : plan.group_columns) agg.aggregate_input_[column] = false;
  return agg;
}

Status HashAggregate::add(const ShardRow& row) {
  std::string key;
  Status s = appendRowKey(row, group_columns_, shard_columns_, key);
  if (!s.ok()) return s;
  auto [it, inserted] = group_index_.try_emplace(key, groups_.size());
  if (inserted) {
    Group group;
    group.first.values.resize(row.size());
    for (size_t i = 0; i < row.size(); ++i) {
      if (aggregate_input_[i]) continue;
      if (const Cell c = row.cell(i)) group.first.values[i] = std::string(*c);
    }
    group.states.resize(specs_.size());
    const size_t cost =
        2 * key.size() + 64 + group.first.bytes() + specs_.size() * sizeof(AggregateState);
    groups_.push_back(std::move(group));
    Status charged = budget_->charge(cost);
    if (!charged.ok()) return charged;
  }
  Group& group = groups_[it->second];
  for (size_t i = 0; i < specs_.size(); ++i) {
    Status a = accumulate(specs_[i], group.states[i], row, *collations_, *budget_);
    if (!a.ok()) return a;
  }
  return {};
}

Result<MergedRow> HashAggregate::finishGroup(Group& group) const {
  MergedRow row = std::move(group.first);
  for (size_t i = 0; i < specs_.size(); ++i) {
    auto value = finishAggregate(specs_[i], group.states[i], *collations_);
    if (!value.ok()) return std::move(value).error();
    row.values[specs_[i].inputs[0]] = std::move(*value);
  }
  return row;
}

Result<std::vector<MergedRow>> HashAggregate::finish() {
  if (groups_.empty() && group_columns_.empty()) {
    // No shard row at all: the empty-input result of every aggregate (count 0, others NULL).
    Group empty;
    empty.first.values.resize(shard_columns_.size());
    empty.states.resize(specs_.size());
    groups_.push_back(std::move(empty));
  }
  std::vector<MergedRow> rows;
  rows.reserve(groups_.size());
  for (Group& group : groups_) {
    auto row = finishGroup(group);
    if (!row.ok()) return std::move(row).error();
    rows.push_back(std::move(*row));
    group.states.clear();  // distinct sets and accumulators are not needed any more
  }
  groups_.clear();
  group_index_.clear();
  return rows;
}

std::string HashAggregate::describe(const planner::MergePlan& plan) {
  std::string s = "Aggregate(";
  if (plan.group_columns.empty()) {
    s += "one group";
  } else {
    s += "hash on columns";
    for (uint32_t c : plan.group_columns) s += " " + std::to_string(c);
  }
  for (const auto& a : plan.aggregates) {
    s += "; ";
    s += a.kind == Kind::kDistinct ? a.function + "(DISTINCT" : a.function + "(";
    for (size_t i = 0; i < a.inputs.size(); ++i) {
      s += (i == 0 && a.kind != Kind::kDistinct ? "" : " ") + std::string("column ") +
           std::to_string(a.inputs[i]);
      if (i + 1 < a.inputs.size()) s += ",";
    }
    s += ")";
  }
  return s + ")";
}

}  // namespace shardgate::executor
