// Router: key values -> shard sets per table, co-location narrowing, one-shard check, replica
// choice, transaction binding, EXPLAIN (ROUTE) lines (see router.h).
#include "planner/router.h"

#include <algorithm>
#include <charconv>
#include <limits>
#include <utility>

#include <boost/container/small_vector.hpp>

#include "parser/parser.h"
#include "planner/copy_split.h"
#include "planner/multi_shard_planner.h"
#include "planner/shard_set.h"
#include "planner/sharding_function.h"

namespace shardgate::planner {
namespace {

using conf::KeyType;
using conf::KeyValue;
using conf::ShardedTable;
using conf::Strategy;

constexpr uint32_t kUnknownOid = 705;  // the 'unknown' pseudo-type: as good as unspecified
constexpr size_t kMaxShownValues = 8;  // values listed in a reason before "..."

std::optional<KeyType> elementTypeOfArrayOid(uint32_t oid) {
  switch (oid) {
    case 1005:
      return KeyType::kSmallint;
    case 1007:
      return KeyType::kInteger;
    case 1016:
      return KeyType::kBigint;
    case 1009:
      return KeyType::kText;
    case 1015:
      return KeyType::kVarchar;
    case 2951:
      return KeyType::kUuid;
    default:
      return std::nullopt;
  }
}

Error notSupported(std::string message, std::string detail = {}, std::string hint = {}) {
  return Error::make(sqlstate::kFeatureNotSupported, std::move(message), std::move(detail),
                     std::move(hint));
}

// A key as SQL would spell it: 42, 'eu', 'a0eebc99-...'.
std::string sqlLiteral(const KeyValue& k, KeyType type) {
  if (k.isInt()) return std::to_string(k.asInt());
  if (type == KeyType::kUuid && k.asBytes().size() == conf::kUuidLength) {
    return "'" + conf::formatUuid(k.asBytes()) + "'";
  }
  std::string out = "'";
  for (const char c : k.asBytes()) {
    out += c;
    if (c == '\'') out += '\'';
  }
  return out + "'";
}

// An integer literal's text (digits, maybe a sign from the grammar) with `negate` more minus signs.
bool parseInteger(std::string_view text, bool negate, int64_t& out) {
  bool negative = negate;
  if (!text.empty() && (text[0] == '-' || text[0] == '+')) {
    if (text[0] == '-') negative = !negative;
    text.remove_prefix(1);
  }
  if (text.empty()) return false;
  uint64_t magnitude = 0;
  const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), magnitude);
  if (ec != std::errc() || ptr != text.data() + text.size()) return false;
  constexpr uint64_t kMaxPositive = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  if (negative) {
    if (magnitude > kMaxPositive + 1) return false;
    out = magnitude == kMaxPositive + 1 ? std::numeric_limits<int64_t>::min()
                                        : -static_cast<int64_t>(magnitude);
  } else {
    if (magnitude > kMaxPositive) return false;
    out = static_cast<int64_t>(magnitude);
  }
  return true;
}

Error malformedArray(std::string_view text, std::string_view why) {
  return Error::make(conf::keystate::kInvalidTextRepresentation,
                     "malformed array literal: \"" + std::string(text) + "\"", std::string(why));
}

// Postgres array text ("{1,2,\"x y\",NULL}", nested braces flattened, an optional "[1:3]="
// dimension prefix) into its elements; nullopt elements are NULLs.
Status parseArrayText(std::string_view text, std::vector<std::optional<std::string>>& out) {
  size_t i = 0;
  const size_t n = text.size();
  const auto isSpace = [](char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
  };
  const auto skip = [&] {
    while (i < n && isSpace(text[i])) ++i;
  };
  skip();
  if (i < n && text[i] == '[') {
    const size_t eq = text.find('=', i);
    if (eq == std::string_view::npos)
      return malformedArray(text, "Missing \"=\" after array dimensions.");
    i = eq + 1;
    skip();
  }
  if (i >= n || text[i] != '{')
    return malformedArray(text, "Array value must start with \"{\" or dimension information.");
  int depth = 0;
  bool expect_element = true;
  while (i < n) {
    skip();
    if (i >= n) break;
    const char c = text[i];
    if (c == '{') {
      ++depth;
      ++i;
      expect_element = true;
      continue;
    }
    if (c == '}') {
      --depth;
      ++i;
      expect_element = false;
      if (depth == 0) break;
      continue;
    }
    if (c == ',') {
      ++i;
      expect_element = true;
      continue;
    }
    if (!expect_element || depth == 0) return malformedArray(text, "Unexpected array element.");
    std::string element;
    bool quoted = false;
    if (c == '"') {
      quoted = true;
      ++i;
      bool closed = false;
      while (i < n) {
        if (text[i] == '\\' && i + 1 < n) {
          element += text[i + 1];
          i += 2;
        } else if (text[i] == '"') {
          ++i;
          closed = true;
          break;
        } else {
          element += text[i++];
        }
      }
      if (!closed) return malformedArray(text, "Unexpected end of input.");
    } else {
      size_t last_nonspace = 0;
      while (i < n && text[i] != ',' && text[i] != '}' && text[i] != '{' && text[i] != '"') {
        if (text[i] == '\\' && i + 1 < n) {
          element += text[i + 1];
          i += 2;
          last_nonspace = element.size();
        } else {
          element += text[i];
          if (!isSpace(text[i])) last_nonspace = element.size();
          ++i;
        }
      }
      element.resize(last_nonspace);
    }
    expect_element = false;
    if (!quoted && element.size() == 4 && (element[0] == 'N' || element[0] == 'n') &&
        (element[1] == 'U' || element[1] == 'u') && (element[2] == 'L' || element[2] == 'l') &&
        (element[3] == 'L' || element[3] == 'l')) {
      out.push_back(std::nullopt);
    } else {
      out.push_back(std::move(element));
    }
  }
  if (depth != 0) return malformedArray(text, "Unexpected end of input.");
  skip();
  if (i < n) return malformedArray(text, "Junk after closing right brace.");
  return {};
}

Error badBinaryArray(std::string_view why) {
  return Error::make(conf::keystate::kInvalidBinaryRepresentation,
                     "incorrect binary data format in array parameter", std::string(why));
}

// Postgres's binary array format (array_send): ndim, flags, element type, (size, lower bound) per
// dimension, then each element as a length (-1: NULL) and its bytes.
Status parseArrayBinary(std::string_view bytes, uint32_t& element_oid,
                        std::vector<std::optional<std::string_view>>& out) {
  size_t pos = 0;
  const auto read32 = [&](uint32_t& v) {
    if (pos + 4 > bytes.size()) return false;
    v = 0;
    for (int k = 0; k < 4; ++k) v = v << 8 | static_cast<unsigned char>(bytes[pos + k]);
    pos += 4;
    return true;
  };
  uint32_t ndim = 0;
  uint32_t flags = 0;
  if (!read32(ndim) || !read32(flags) || !read32(element_oid))
    return badBinaryArray("truncated header");
  if (ndim > 6) return badBinaryArray("more than 6 dimensions");
  uint64_t total = ndim == 0 ? 0 : 1;
  for (uint32_t d = 0; d < ndim; ++d) {
    uint32_t size = 0;
    uint32_t lbound = 0;
    if (!read32(size) || !read32(lbound)) return badBinaryArray("truncated dimensions");
    total *= size;
    if (total > bytes.size()) return badBinaryArray("more elements than bytes");
  }
  for (uint64_t e = 0; e < total; ++e) {
    uint32_t len = 0;
    if (!read32(len)) return badBinaryArray("truncated element");
    if (len == 0xFFFFFFFFu) {
      out.push_back(std::nullopt);
      continue;
    }
    if (pos + len > bytes.size()) return badBinaryArray("truncated element");
    out.push_back(bytes.substr(pos, len));
    pos += len;
  }
  if (pos != bytes.size()) return badBinaryArray("trailing bytes");
  return {};
}

// Whether rows of `a` and `b` with equal keys are always on the same shard.
bool coLocated(const ShardedTable& a, const ShardedTable& b) {
  if (&a == &b) return true;
  if (a.strategy != b.strategy || !sameKeyFamily(a.key_type, b.key_type)) return false;
  switch (a.strategy) {
    case Strategy::kHash:
      return true;  // same modulus (the database's shard count), and equal keys hash alike
    case Strategy::kRange:
      if (a.ranges.size() != b.ranges.size()) return false;
      for (size_t i = 0; i < a.ranges.size(); ++i) {
        if (a.ranges[i].from != b.ranges[i].from || a.ranges[i].to != b.ranges[i].to ||
            a.ranges[i].shard != b.ranges[i].shard) {
          return false;
        }
      }
      return true;
    case Strategy::kList:
      if (a.default_shard != b.default_shard || a.lists.size() != b.lists.size()) return false;
      for (size_t i = 0; i < a.lists.size(); ++i) {
        if (a.lists[i].shard != b.lists[i].shard || a.lists[i].values != b.lists[i].values) {
          return false;
        }
      }
      return true;
    case Strategy::kDirectory:
      return a.directory && b.directory && a.directory->table.schema == b.directory->table.schema &&
             a.directory->table.name == b.directory->table.name &&
             a.directory->shard == b.directory->shard &&
             a.directory->fallback == b.directory->fallback;
  }
  return false;
}

// Whether `ref`, as the analysis classified it, is still configured so in `db`: `cfg` is db's
// sharded table of that name (nullptr: none). A cached analysis is only routed while this holds.
bool tableStillMatches(const conf::Database& db, const TableRef& ref, const ShardedTable* cfg) {
  if (ref.table_class == TableClass::kSharded) {
    return cfg != nullptr && cfg->column == ref.key_column && cfg->key_type == ref.key_type &&
           cfg->strategy == ref.strategy;
  }
  return cfg == nullptr &&
         (ref.table_class == TableClass::kReference) == db.isReferenceTable(ref.schema, ref.name);
}

std::string strategyText(const ShardedTable& t) {
  return std::string(conf::strategyName(t.strategy)) + " on " + t.column + " (" +
         std::string(conf::keyTypeName(t.key_type)) + ")";
}

// A value resolved for one key column.
struct Resolved {
  enum class State { kValue, kNull, kNotAKey };
  State state = State::kNotAKey;
  KeyValue key;
  std::string shown;  // for kNotAKey: how the value was written ("$1", "4.5")
};

class StatementRouter {
 public:
  StatementRouter(const conf::Database& db, const QueryAnalysis& a, const RouteInputs& in,
                  const SessionRouteContext& ctx)
      : db_(db),
        a_(a),
        in_(in),
        ctx_(ctx),
        n_(db.shards.size()),
        describe_(in.describe || a.explain == ExplainMode::kRoute) {}

  Result<RouteDecision> route() {
    if (a_.explain == ExplainMode::kRoute) return explainRoute();
    return routeStatement();
  }

 private:
  struct TableState {
    const ShardedTable* cfg = nullptr;
    ShardSet set;
    bool constrained = false;            // a condition or inserted keys gave the set
    int32_t narrowed_by = -1;            // the occurrence whose keys equal this one's (co-located)
    std::string condition;               // "users.id = 42" (read it through condition(t))
    bool condition_pending = false;      // condition is described from the predicate or the
                                         // inserted keys when first asked for
    std::vector<int32_t> not_colocated;  // joined on keys to these, but not co-located
    bool unevaluable = false;    // a value of its condition cannot pick a shard (4.5, $1 unbound)
    int32_t insert_source = -1;  // INSERT ... SELECT: the table whose key the rows copy
    std::vector<uint32_t> row_shards;  // INSERT ... VALUES: the shard of each row
    uint32_t insert_key_position = 0;  // INSERT ... VALUES: the key's cell in a row
  };

  // ---- values ----

  std::string_view literalText(const ValueRef& v) {
    if (v.kind == ValueRef::Kind::kConstant) return v.text;
    if (in_.literals == nullptr || v.index < 0 ||
        static_cast<size_t>(v.index) >= in_.literals->size()) {
      return {};
    }
    return in_.literals->valueView(static_cast<size_t>(v.index), scratch_);
  }

  struct ParamInfo {
    bool present = false;
    std::optional<std::string_view> value;
    bool binary = false;
    uint32_t oid = 0;
  };
  ParamInfo param(int32_t number) const {
    ParamInfo p;
    const BindParameters* b = in_.params;
    if (b == nullptr || number < 1 || static_cast<size_t>(number) > b->values.size()) return p;
    const size_t i = static_cast<size_t>(number - 1);
    p.present = true;
    p.value = b->values[i];
    if (b->formats.size() == 1) {
      p.binary = b->formats[0] == 1;
    } else if (i < b->formats.size()) {
      p.binary = b->formats[i] == 1;
    }
    if (i < b->type_oids.size() && b->type_oids[i] != 0) {
      p.oid = static_cast<uint32_t>(b->type_oids[i]);
    } else if (i < a_.param_types.size() && a_.param_types[i] != 0) {
      p.oid = static_cast<uint32_t>(a_.param_types[i]);
    }
    if (p.oid == kUnknownOid) p.oid = 0;
    return p;
  }

  // The key a scalar value stands for, compared with a column of type `column`.
  Result<Resolved> resolve(const ValueRef& v, KeyType column) {
    Resolved r;
    switch (v.kind) {
      case ValueRef::Kind::kNull:
        r.state = Resolved::State::kNull;
        return r;
      case ValueRef::Kind::kSameColumn:
      case ValueRef::Kind::kUnknown:
      case ValueRef::Kind::kDefault:
        r.shown = v.kind == ValueRef::Kind::kDefault ? "DEFAULT" : "an expression";
        return r;
      case ValueRef::Kind::kParam: {
        const ParamInfo p = param(v.index);
        // Only a value that stays unevaluated is shown (built here on demand: every Bind of a
        // prepared statement comes through this case).
        const auto unevaluated = [&r, &v]() -> Resolved& {
          r.shown = "$" + std::to_string(v.index);
          return r;
        };
        if (!p.present) return unevaluated();
        if (!p.value) {
          r.state = Resolved::State::kNull;
          return r;
        }
        std::optional<KeyType> type = column;
        if (p.oid != 0) {
          type = keyTypeFromOid(p.oid);
        } else if (v.cast) {
          type = v.cast_type;
        }
        if (!type || !sameKeyFamily(*type, column)) return unevaluated();
        if (Status s = requireKeyInServerEncoding(*type, *p.value, ctx_.client_utf8); !s.ok()) {
          return std::move(s).error();
        }
        Result<KeyValue> key =
            p.binary ? parseKeyBinary(*type, *p.value) : parseKeyText(*type, *p.value);
        if (!key.ok()) return std::move(key).error();
        r.state = Resolved::State::kValue;
        r.key = std::move(key).value();
        return r;
      }
      case ValueRef::Kind::kLiteral:
      case ValueRef::Kind::kConstant: {
        const std::string_view text = literalText(v);
        const KeyType type = v.cast ? v.cast_type : column;
        if (!sameKeyFamily(type, column)) {
          r.shown = std::string(text);
          return r;
        }
        if (v.token == ValueRef::Token::kString) {
          if (Status s = requireKeyInServerEncoding(type, text, ctx_.client_utf8); !s.ok()) {
            return std::move(s).error();
          }
          Result<KeyValue> key = parseKeyText(type, text);
          if (!key.ok()) return std::move(key).error();
          r.state = Resolved::State::kValue;
          r.key = std::move(key).value();
          return r;
        }
        int64_t value = 0;
        if (!conf::isIntegerKey(type) || !parseInteger(text, v.negate, value)) {
          r.shown = (v.negate ? "-" : "") + std::string(text);
          return r;  // 4.5, 1e3: compared as numeric; not evaluated (every shard)
        }
        if (v.cast) {
          Result<KeyValue> key = conf::keyFromInt(type, value);
          if (!key.ok()) return std::move(key).error();
          r.key = std::move(key).value();
        } else {
          r.key = KeyValue::ofInt(value);
        }
        r.state = Resolved::State::kValue;
        return r;
      }
    }
    return r;
  }

  // The elements of an array value (= ANY(...)); kNotAKey (in `whole`) if it cannot be evaluated.
  Result<std::vector<Resolved>> resolveArray(const ValueRef& v, KeyType column, Resolved& whole) {
    std::vector<Resolved> out;
    whole.state = Resolved::State::kValue;
    const auto fromTexts = [&](const std::vector<std::optional<std::string>>& texts,
                               KeyType type) -> Status {
      for (const auto& t : texts) {
        Resolved e;
        if (!t) {
          e.state = Resolved::State::kNull;
        } else {
          if (Status s = requireKeyInServerEncoding(type, *t, ctx_.client_utf8); !s.ok()) {
            return s;
          }
          Result<KeyValue> key = parseKeyText(type, *t);
          if (!key.ok()) return std::move(key).error();
          e.state = Resolved::State::kValue;
          e.key = std::move(key).value();
        }
        out.push_back(std::move(e));
      }
      return {};
    };
    if (v.kind == ValueRef::Kind::kNull) {
      whole.state = Resolved::State::kNull;
      return out;
    }
    if (v.kind == ValueRef::Kind::kLiteral || v.kind == ValueRef::Kind::kConstant) {
      const std::string text(literalText(v));
      const KeyType type = v.cast ? v.cast_type : column;
      if (!sameKeyFamily(type, column)) {
        whole.state = Resolved::State::kNotAKey;
        whole.shown = "'" + text + "'";
        return out;
      }
      std::vector<std::optional<std::string>> texts;
      if (Status s = parseArrayText(text, texts); !s.ok()) return std::move(s).error();
      if (Status s = fromTexts(texts, type); !s.ok()) return std::move(s).error();
      return out;
    }
    if (v.kind != ValueRef::Kind::kParam) {
      whole.state = Resolved::State::kNotAKey;
      whole.shown = "an expression";
      return out;
    }
    const ParamInfo p = param(v.index);
    whole.shown = "$" + std::to_string(v.index);
    if (!p.present) {
      whole.state = Resolved::State::kNotAKey;
      return out;
    }
    if (!p.value) {
      whole.state = Resolved::State::kNull;
      return out;
    }
    if (p.binary) {
      uint32_t element_oid = 0;
      std::vector<std::optional<std::string_view>> elems;
      if (Status s = parseArrayBinary(*p.value, element_oid, elems); !s.ok()) {
        return std::move(s).error();
      }
      const std::optional<KeyType> type = keyTypeFromOid(element_oid);
      if (!type || !sameKeyFamily(*type, column)) {
        whole.state = Resolved::State::kNotAKey;
        return out;
      }
      for (const auto& e : elems) {
        Resolved r;
        if (!e) {
          r.state = Resolved::State::kNull;
        } else {
          Result<KeyValue> key = parseKeyBinary(*type, *e);
          if (!key.ok()) return std::move(key).error();
          r.state = Resolved::State::kValue;
          r.key = std::move(key).value();
        }
        out.push_back(std::move(r));
      }
      return out;
    }
    std::optional<KeyType> type = column;
    if (p.oid != 0) {
      type = elementTypeOfArrayOid(p.oid);
    } else if (v.cast) {
      type = v.cast_type;
    }
    if (!type || !sameKeyFamily(*type, column)) {
      whole.state = Resolved::State::kNotAKey;
      return out;
    }
    std::vector<std::optional<std::string>> texts;
    if (Status s = parseArrayText(*p.value, texts); !s.ok()) return std::move(s).error();
    if (Status s = fromTexts(texts, *type); !s.ok()) return std::move(s).error();
    return out;
  }

  std::string showResolved(const Resolved& r, KeyType type) const {
    switch (r.state) {
      case Resolved::State::kValue:
        return sqlLiteral(r.key, type);
      case Resolved::State::kNull:
        return "NULL";
      case Resolved::State::kNotAKey:
        return r.shown.empty() ? "?" : r.shown;
    }
    return "?";
  }

  // ---- shards of keys ----

  // The shard of one key of table t; nullopt when no shard holds it (reads: no rows) or when a
  // directory lookup is pending. Inserts turn "no shard" into an error.
  Result<std::optional<uint32_t>> shardOf(int32_t t, const KeyValue& key, bool for_insert) {
    const ShardedTable& cfg = *tables_[t].cfg;
    if (cfg.strategy == Strategy::kDirectory) {
      std::optional<DirectoryLookup::Answer> answer;
      if (in_.directory != nullptr) answer = in_.directory->find(cfg, key);
      // A new key inserted under fallback hash is recorded in the directory first (see
      // DirectoryKeyRequest::place); without a directory reader it is only looked up.
      const bool place = in_.directory != nullptr && for_insert && answer && !answer->shard &&
                         cfg.directory && cfg.directory->fallback == conf::DirectoryFallback::kHash;
      if (!answer || place) {
        const auto known = std::find_if(
            pending_directory_.begin(), pending_directory_.end(),
            [&](const DirectoryKeyRequest& r) { return r.table == &cfg && r.key == key; });
        if (known == pending_directory_.end()) {
          pending_directory_.push_back({&cfg, key, place});
        } else if (place) {
          known->place = true;
        }
        return std::optional<uint32_t>();
      }
      if (answer->shard) {
        if (*answer->shard >= n_) {
          return Error::make(sqlstate::kInternalError,
                             "directory of table " + cfg.display() + " maps key " +
                                 sqlLiteral(key, cfg.key_type) + " to shard " +
                                 std::to_string(*answer->shard) + ", which does not exist");
        }
        return std::optional<uint32_t>(*answer->shard);
      }
      if (cfg.directory && cfg.directory->fallback == conf::DirectoryFallback::kHash) {
        Result<uint32_t> s = hashShard(cfg.key_type, n_, key);
        if (!s.ok()) return std::move(s).error();
        return std::optional<uint32_t>(*s);
      }
      if (!for_insert) return std::optional<uint32_t>();
      return Error::make(kNoShardForKey,
                         "no shard for key " + sqlLiteral(key, cfg.key_type) + " of table " +
                             cfg.display() + ": the directory table " +
                             (cfg.directory ? cfg.directory->table.display() : std::string("?")) +
                             " has no row for it",
                         {}, "Add the key to the directory before inserting rows with it.");
    }
    Result<uint32_t> s = shardForKey(cfg, n_, key);
    if (!s.ok()) {
      if (s.error().sqlstate == kNoShardForKey && !for_insert) return std::optional<uint32_t>();
      return std::move(s).error();
    }
    return std::optional<uint32_t>(*s);
  }

  Result<ShardSet> keySet(int32_t t, const Resolved& r, bool for_insert) {
    if (r.state == Resolved::State::kNull) return ShardSet::none(n_);
    if (r.state == Resolved::State::kNotAKey) {
      tables_[t].unevaluable = true;
      return ShardSet::all(n_);
    }
    Result<std::optional<uint32_t>> s = shardOf(t, r.key, for_insert);
    if (!s.ok()) return std::move(s).error();
    if (!*s) return ShardSet::none(n_);
    return ShardSet::one(n_, **s);
  }

  // ---- predicates ----

  Result<ShardSet> evaluate(int32_t p, int32_t t) {
    const KeyPredicate& kp = a_.predicates[static_cast<size_t>(p)];
    const KeyType type = a_.tables[t].key_type;
    switch (kp.op) {
      case KeyPredicate::Op::kEqual: {
        Result<Resolved> r = resolve(a_.values[kp.first], type);
        if (!r.ok()) return std::move(r).error();
        return keySet(t, *r, false);
      }
      case KeyPredicate::Op::kIn: {
        ShardSet set = ShardSet::none(n_);
        for (uint32_t i = 0; i < kp.count; ++i) {
          Result<Resolved> r = resolve(a_.values[kp.first + i], type);
          if (!r.ok()) return std::move(r).error();
          Result<ShardSet> s = keySet(t, *r, false);
          if (!s.ok()) return s;
          set.unite(*s);
        }
        return set;
      }
      case KeyPredicate::Op::kAnyArray: {
        Resolved whole;
        Result<std::vector<Resolved>> elems = resolveArray(a_.values[kp.first], type, whole);
        if (!elems.ok()) return std::move(elems).error();
        if (whole.state == Resolved::State::kNull) return ShardSet::none(n_);
        if (whole.state == Resolved::State::kNotAKey) {
          tables_[t].unevaluable = true;
          return ShardSet::all(n_);
        }
        ShardSet set = ShardSet::none(n_);
        for (const Resolved& e : *elems) {
          Result<ShardSet> s = keySet(t, e, false);
          if (!s.ok()) return s;
          set.unite(*s);
        }
        return set;
      }
      case KeyPredicate::Op::kRange: {
        std::optional<KeyValue> lo;
        std::optional<KeyValue> hi;
        for (const bool lower : {true, false}) {
          const int32_t idx = lower ? kp.lower : kp.upper;
          if (idx < 0) continue;
          Result<Resolved> r = resolve(a_.values[static_cast<size_t>(idx)], type);
          if (!r.ok()) return std::move(r).error();
          if (r->state == Resolved::State::kNull) return ShardSet::none(n_);
          if (r->state == Resolved::State::kNotAKey) {
            tables_[t].unevaluable = true;
            continue;  // unbounded: never too few shards
          }
          (lower ? lo : hi) = std::move(r->key);
        }
        ShardSet set = ShardSet::none(n_);
        for (const uint32_t s :
             shardsForRange(*tables_[t].cfg, n_, lo, kp.lower_inclusive, hi, kp.upper_inclusive)) {
          set.add(s);
        }
        return set;
      }
      case KeyPredicate::Op::kAnd:
      case KeyPredicate::Op::kOr: {
        const bool conj = kp.op == KeyPredicate::Op::kAnd;
        ShardSet set = conj ? ShardSet::all(n_) : ShardSet::none(n_);
        for (uint32_t i = 0; i < kp.count; ++i) {
          Result<ShardSet> s = evaluate(a_.children[kp.first + i], t);
          if (!s.ok()) return s;
          if (conj) {
            set.intersect(*s);
          } else {
            set.unite(*s);
          }
        }
        return set;
      }
    }
    return ShardSet::all(n_);
  }

  std::string describe(int32_t p, int32_t t) {
    const KeyPredicate& kp = a_.predicates[static_cast<size_t>(p)];
    const TableRef& ref = a_.tables[t];
    const std::string col = ref.qualifiedKey();
    const auto shown = [&](const ValueRef& v) {
      Result<Resolved> r = resolve(v, ref.key_type);
      return r.ok() ? showResolved(*r, ref.key_type) : std::string("?");
    };
    switch (kp.op) {
      case KeyPredicate::Op::kEqual:
        return col + " = " + shown(a_.values[kp.first]);
      case KeyPredicate::Op::kIn: {
        std::string s = col + " IN (";
        for (uint32_t i = 0; i < kp.count; ++i) {
          if (i > 0) s += ", ";
          if (i == kMaxShownValues) {
            s += "...";
            break;
          }
          s += shown(a_.values[kp.first + i]);
        }
        return s + ")";
      }
      case KeyPredicate::Op::kAnyArray: {
        Resolved whole;
        Result<std::vector<Resolved>> elems =
            resolveArray(a_.values[kp.first], ref.key_type, whole);
        if (!elems.ok() || whole.state != Resolved::State::kValue) {
          return col + " = ANY(" + (elems.ok() ? showResolved(whole, ref.key_type) : "?") + ")";
        }
        std::string s = col + " = ANY({";
        for (size_t i = 0; i < elems->size(); ++i) {
          if (i > 0) s += ", ";
          if (i == kMaxShownValues) {
            s += "...";
            break;
          }
          s += showResolved((*elems)[i], ref.key_type);
        }
        return s + "})";
      }
      case KeyPredicate::Op::kRange: {
        std::string s;
        if (kp.lower >= 0) {
          s += col + (kp.lower_inclusive ? " >= " : " > ") +
               shown(a_.values[static_cast<size_t>(kp.lower)]);
        }
        if (kp.upper >= 0) {
          if (!s.empty()) s += " AND ";
          s += col + (kp.upper_inclusive ? " <= " : " < ") +
               shown(a_.values[static_cast<size_t>(kp.upper)]);
        }
        return s;
      }
      case KeyPredicate::Op::kAnd:
      case KeyPredicate::Op::kOr: {
        std::string s = kp.op == KeyPredicate::Op::kOr ? "(" : "";
        for (uint32_t i = 0; i < kp.count; ++i) {
          if (i > 0) s += kp.op == KeyPredicate::Op::kAnd ? " AND " : " OR ";
          std::string child = describe(a_.children[kp.first + i], t);
          if (kp.op == KeyPredicate::Op::kOr && child.find(" AND ") != std::string::npos &&
              child.front() != '(') {
            child = "(" + child + ")";
          }
          s += child;
        }
        return kp.op == KeyPredicate::Op::kOr ? s + ")" : s;
      }
    }
    return col;
  }

  // ---- INSERT ----

  Status insertSet(int32_t t) {
    TableState& ts = tables_[t];
    const TableRef& ref = a_.tables[t];
    const InsertRows& ins = a_.inserts[static_cast<size_t>(ref.insert)];
    const std::string key = ref.name + "." + ref.key_column;
    const auto needsKey = [&] {
      return notSupported(
          "INSERT into sharded table " + ref.display() + " must give a value for " + key,
          "shardgate routes each row by its sharding key; a default (serial, identity, "
          "DEFAULT) would only be computed on a shard after the row had been routed.",
          "List " + key + " in the INSERT and pass its value (generate it first, or use a uuid).");
    };
    if (ins.default_values) return needsKey();
    uint32_t pos = 0;
    if (!ins.column_list) {
      const std::vector<std::string>* order =
          in_.columns != nullptr ? in_.columns->columnOrder(ref.schema, ref.name) : nullptr;
      if (order == nullptr) {
        if (in_.columns == nullptr) {
          return notSupported(
              "INSERT into sharded table " + ref.display() + " needs a column list",
              "Without one, the position of the sharding key " + key +
                  " depends on the table's definition, which shardgate has not read.",
              "Write INSERT INTO " + ref.display() + " (" + ref.key_column + ", ...) VALUES ...");
        }
        pending_columns_.push_back({ref.schema, ref.name});
        ts.set = ShardSet::all(n_);
        return {};
      }
      const auto it = std::find(order->begin(), order->end(), ref.key_column);
      if (it == order->end()) {
        return notSupported("table " + ref.display() + " has no column " + ref.key_column +
                            ", its configured sharding key");
      }
      pos = static_cast<uint32_t>(it - order->begin());
      if (pos >= ins.width) return needsKey();
    } else if (!ins.key_in_column_list) {
      return needsKey();
    }
    ts.set = ShardSet::none(n_);
    ts.constrained = true;
    ts.insert_key_position = pos;
    for (uint32_t row = 0; row < ins.rows; ++row) {
      const size_t cell = static_cast<size_t>(row) * (ins.column_list ? 1 : ins.width) + pos;
      const ValueRef& v = ins.cells[cell];
      const int32_t source = ins.cell_sources[cell];
      if (source >= 0) {
        insert_sources_.push_back({t, source});
        ts.set = ShardSet::all(n_);  // narrowed by the source table below
        ts.constrained = false;
        ts.insert_source = source;
        return {};
      }
      if (v.kind == ValueRef::Kind::kDefault) return needsKey();
      if (v.kind == ValueRef::Kind::kUnknown || v.kind == ValueRef::Kind::kSameColumn) {
        if (ins.from_select) {
          return notSupported("INSERT ... SELECT into sharded table " + ref.display() +
                                  ": shardgate cannot tell which shard the rows belong to",
                              "The selected " + key +
                                  " is neither a constant, a parameter, nor the key of a "
                                  "co-located table restricted to one shard.",
                              "Select " + key +
                                  " from a co-located table with a condition on its key, or "
                                  "insert the rows with VALUES.");
        }
        return notSupported("cannot compute the sharding key " + key + " of inserted row " +
                                std::to_string(row + 1),
                            "It is given as an expression; shardgate routes rows by literal "
                            "values and parameters.",
                            "Pass " + key + " as a literal or a parameter.");
      }
      Result<Resolved> r = resolve(v, ref.key_type);
      if (!r.ok()) return std::move(r).error();
      if (r->state == Resolved::State::kNull) {
        return Error::make("23502",
                           "null value in sharding key column \"" + ref.key_column +
                               "\" of table " + ref.display(),
                           "Row " + std::to_string(row + 1) + " has no key, so it has no shard.",
                           "Give every row a value for " + key + ".");
      }
      if (r->state == Resolved::State::kNotAKey) {
        return notSupported("cannot compute the sharding key " + key + " of inserted row " +
                            std::to_string(row + 1) + " from " + showResolved(*r, ref.key_type));
      }
      Result<std::optional<uint32_t>> s = shardOf(t, r->key, true);
      if (!s.ok()) return std::move(s).error();
      if (*s) {
        ts.set.add(**s);
        ts.row_shards.push_back(**s);
      }
    }
    ts.condition_pending = true;
    return {};
  }

  // "users.id IN (1, 2)": the keys of the rows insertSet routed (every row has one).
  std::string describeInsert(int32_t t) {
    const TableRef& ref = a_.tables[t];
    const InsertRows& ins = a_.inserts[static_cast<size_t>(ref.insert)];
    const uint32_t pos = tables_[t].insert_key_position;
    std::vector<std::string> shown;
    for (uint32_t row = 0; row < ins.rows && shown.size() <= kMaxShownValues; ++row) {
      const size_t cell = static_cast<size_t>(row) * (ins.column_list ? 1 : ins.width) + pos;
      Result<Resolved> r = resolve(ins.cells[cell], ref.key_type);
      shown.push_back(r.ok() && r->state == Resolved::State::kValue
                          ? sqlLiteral(r->key, ref.key_type)
                          : std::string("?"));
    }
    const std::string key = ref.name + "." + ref.key_column;
    if (ins.rows == 1 && !shown.empty()) return key + " = " + shown[0];
    std::string s = key + " IN (";
    for (size_t i = 0; i < shown.size(); ++i) {
      if (i > 0) s += ", ";
      s += i == kMaxShownValues ? "..." : shown[i];
    }
    return s + ")";
  }

  // What restricts table t's rows, described when first needed (reasons, errors, EXPLAIN).
  const std::string& condition(int32_t t) {
    TableState& ts = tables_[t];
    if (ts.condition_pending) {
      ts.condition_pending = false;
      const TableRef& ref = a_.tables[t];
      ts.condition = ref.insert >= 0 ? describeInsert(t) : describe(ref.predicate, t);
    }
    return ts.condition;
  }

  // ---- the statement ----

  static Role roleFor(const SessionRouteContext& ctx, bool writes, bool* fallback) {
    *fallback = false;
    if (writes) return Role::kPrimary;
    if (ctx.in_transaction && (!ctx.transaction_read_only || ctx.transaction_wrote)) {
      return Role::kPrimary;
    }
    switch (ctx.read_preference) {
      case conf::ReadPreference::kPrimary:
        return Role::kPrimary;
      case conf::ReadPreference::kReplica:
        return Role::kReplica;
      case conf::ReadPreference::kPreferReplica:
        *fallback = true;
        return Role::kReplica;
    }
    return Role::kPrimary;
  }

  std::string roleReason(const RouteDecision& d) const {
    if (d.role == Role::kPrimary) {
      if (d.writes) return "primary: the statement writes (" + a_.write_reason + ")";
      if (ctx_.in_transaction && ctx_.transaction_wrote) {
        return "primary: the transaction has written";
      }
      if (ctx_.in_transaction && !ctx_.transaction_read_only) {
        return "primary: inside a read-write transaction";
      }
      if (a_.transaction == TransactionAction::kBegin && !a_.read_only_transaction) {
        return "primary: starts a read-write transaction";
      }
      return "primary: read_preference = primary";
    }
    return std::string("replica: read-only, read_preference = ") +
           std::string(conf::readPreferenceName(ctx_.read_preference)) +
           (d.primary_fallback ? " (the primary if no replica is usable)" : "");
  }

  // BEGIN READ ONLY, or SET TRANSACTION READ ONLY inside a transaction (outside one, Postgres
  // only warns and nothing changes).
  bool startsReadOnlyTransaction() const {
    return a_.read_only_transaction &&
           (a_.transaction == TransactionAction::kBegin || ctx_.in_transaction);
  }

  // kNeedsLookup: the directory keys and tables' column orders to read before routing again.
  RouteDecision needsLookups() {
    RouteDecision d = base();
    d.kind = RouteDecision::Kind::kNeedsLookup;
    d.directory_lookups = std::move(pending_directory_);
    d.column_order_lookups = std::move(pending_columns_);
    d.reason = "needs lookups";
    for (const auto& r : d.directory_lookups) {
      d.reason += "; key " + sqlLiteral(r.key, r.table->key_type) + " of " + r.table->display() +
                  (r.place ? " to place" : "") + " in directory table " +
                  (r.table->directory ? r.table->directory->table.display() : std::string("?"));
    }
    for (const auto& c : d.column_order_lookups) {
      d.reason += "; column order of " + (c.schema.empty() ? c.table : c.schema + "." + c.table);
    }
    return d;
  }

  RouteDecision base() const {
    RouteDecision d;
    d.writes = a_.writes;
    d.transaction = a_.transaction;
    d.chain = a_.chain;
    d.start_transaction = a_.start_transaction;
    d.savepoint_name = a_.savepoint_name;
    d.begins_read_only_transaction = startsReadOnlyTransaction();
    d.resets_session = a_.resets_session;
    return d;
  }

  void setRole(RouteDecision& d) const {
    bool fallback = false;
    // BEGIN READ ONLY / SET TRANSACTION READ ONLY open a transaction that may use a replica.
    if (startsReadOnlyTransaction() && !d.writes && !ctx_.transaction_wrote) {
      SessionRouteContext ro = ctx_;
      ro.transaction_read_only = true;
      d.role = roleFor(ro, false, &fallback);
    } else if (a_.transaction == TransactionAction::kBegin) {
      d.role = Role::kPrimary;
    } else {
      d.role = roleFor(ctx_, d.writes, &fallback);
    }
    d.primary_fallback = d.role == Role::kReplica && fallback;
  }

  RouteDecision anyShard(std::string reason) const {
    RouteDecision d = base();
    d.kind = RouteDecision::Kind::kAnyShard;
    d.reason = std::move(reason) + " -> any shard";
    setRole(d);
    return d;
  }

  RouteDecision oneShard(uint32_t shard, std::string reason) const {
    RouteDecision d = base();
    d.kind = RouteDecision::Kind::kShard;
    d.shard = shard;
    if (!reason.empty()) d.reason = std::move(reason) + " -> " + shardName(db_, shard);
    setRole(d);
    return d;
  }

  // Whether bind() refuses a statement for `shard`: another shard than the transaction's.
  bool bindRefuses(uint32_t shard) const {
    return ctx_.transaction_shard && *ctx_.transaction_shard != shard &&
           !ctx_.transaction_may_span_shards;
  }

  // Binds kAnyShard to the transaction's shard and refuses another shard inside a transaction.
  Result<RouteDecision> bind(RouteDecision d) const {
    if (!ctx_.transaction_shard) return d;
    const uint32_t ts = *ctx_.transaction_shard;
    if (d.kind == RouteDecision::Kind::kAnyShard) {
      d.kind = RouteDecision::Kind::kShard;
      d.shard = ts;
      constexpr std::string_view kAny = " -> any shard";
      if (d.reason.size() >= kAny.size() &&
          d.reason.compare(d.reason.size() - kAny.size(), kAny.size(), kAny) == 0) {
        d.reason.resize(d.reason.size() - kAny.size());
      }
      d.reason += " -> " + shardName(db_, ts) + " (the transaction's shard)";
      return d;
    }
    if (d.kind == RouteDecision::Kind::kShard && bindRefuses(d.shard)) {
      return notSupported(
          "this transaction runs on " + shardName(db_, ts) + ", but the statement needs " +
              shardName(db_, d.shard),
          "Route: " + d.reason + ". A transaction is bound to the shard of its first statement.",
          "Run statements for other shards in their own transactions; transactions that span "
          "shards are not supported yet.");
    }
    return d;
  }

  Result<RouteDecision> routeStatement() {
    if (a_.unsupported && (!a_.unsupported_only_when_sharded || n_ > 1)) return *a_.unsupported;
    if (a_.copy_from_sharded && n_ > 1) return routeCopyFrom();
    switch (a_.kind) {
      case StatementKind::kEmpty:
        return bind(anyShard("empty query"));
      case StatementKind::kTransaction:
        return routeTransaction();
      case StatementKind::kSet: {
        RouteDecision d = anyShard(a_.read_only_transaction ? "SET TRANSACTION READ ONLY"
                                   : a_.sets_constraints    ? "SET CONSTRAINTS"
                                                            : "SET");
        d.changes_setting = true;
        d.setting_tag = a_.sets_constraints ? "SET CONSTRAINTS" : "SET";
        return bind(std::move(d));
      }
      case StatementKind::kReset: {
        RouteDecision d = anyShard("RESET");
        d.changes_setting = true;
        d.setting_tag = "RESET";
        return bind(std::move(d));
      }
      case StatementKind::kShow:
        return bind(anyShard("SHOW"));
      case StatementKind::kSessionCommand:
        return bind(anyShard("session command"));
      case StatementKind::kCursor:
        return bind(anyShard("cursor command"));
      case StatementKind::kShardgateSetting:
        return routeSetting();
      case StatementKind::kSqlPrepared:
        if (ctx_.transaction_shard) return bind(anyShard("PREPARE / EXECUTE"));
        if (n_ == 1) return oneShard(0, "PREPARE / EXECUTE, single shard");
        if (db_.sharded_tables.empty()) {
          // Nothing is sharded: every table the statement can name is on the default shard.
          return bind(oneShard(db_.default_shard, "PREPARE / EXECUTE, no sharded tables"));
        }
        return notSupported(
            "SQL-level PREPARE and EXECUTE are not supported through shardgate",
            "shardgate cannot tell which shard a prepared statement's EXECUTE needs.",
            "Use the extended query protocol (your driver's prepared statements), or run them "
            "inside a transaction that has already run a statement.");
      case StatementKind::kListen:
        return bind(oneShard(db_.default_shard, "LISTEN / NOTIFY on the default shard"));
      default:
        return routeTables();
    }
  }

  Result<RouteDecision> routeTransaction() {
    switch (a_.transaction) {
      case TransactionAction::kBegin:
        return bind(anyShard(a_.read_only_transaction ? "BEGIN READ ONLY" : "BEGIN"));
      case TransactionAction::kCommitPrepared:
      case TransactionAction::kRollbackPrepared:
        if (n_ == 1) return oneShard(0, "COMMIT / ROLLBACK PREPARED, single shard");
        return notSupported(
            "COMMIT PREPARED and ROLLBACK PREPARED are not supported through shardgate",
            "shardgate does not know which shard holds the prepared transaction.",
            "Run it on the shard directly.");
      default:
        return bind(anyShard("transaction control"));
    }
  }

  Result<RouteDecision> routeSetting() {
    RouteDecision d = base();
    d.kind = RouteDecision::Kind::kShardgateSetting;
    d.setting_action = a_.setting_action;
    d.setting_name = a_.setting_name;
    d.setting_local = a_.setting_local;
    if (a_.setting_name != "shardgate.read_preference") {
      return Error::make("42704",
                         "unrecognized configuration parameter \"" + a_.setting_name + "\"", {},
                         "shardgate's own settings: shardgate.read_preference.");
    }
    if (a_.setting_action == SettingAction::kSet) {
      std::string value;
      const ValueRef& v = a_.setting_value ? *a_.setting_value : ValueRef{};
      if (v.kind == ValueRef::Kind::kLiteral || v.kind == ValueRef::Kind::kConstant) {
        value = std::string(literalText(v));
      } else if (v.kind == ValueRef::Kind::kParam && param(v.index).value) {
        value = std::string(*param(v.index).value);
      }
      std::string lowered = value;
      for (char& c : lowered) {
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
      }
      if (lowered != "primary" && lowered != "replica" && lowered != "prefer_replica") {
        return Error::make(
            sqlstate::kInvalidParameterValue,
            "invalid value for parameter \"" + a_.setting_name + "\": \"" + value + "\"", {},
            "Available values: primary, replica, prefer_replica.");
      }
      d.setting_value = lowered;
      d.reason = "SET " + a_.setting_name + " = " + lowered;
    } else if (a_.setting_action == SettingAction::kShow) {
      d.reason = "SHOW " + a_.setting_name;
    } else {
      d.reason = "RESET " + a_.setting_name;
    }
    return d;
  }

  std::string tableLabel(int32_t t) const {
    const TableRef& ref = a_.tables[t];
    return ref.alias.empty() ? ref.display() : ref.display() + " (as " + ref.alias + ")";
  }

  // The statement most traffic is made of: one sharded table, its key compared with one value
  // that picks a shard. Its shard is found without the per-table state of the general walk in
  // routeTables, which decides the same for it; nullopt sends everything else (errors included)
  // there.
  std::optional<uint32_t> singleKeyShard() {
    if (a_.tables.size() != 1 || describe_ || a_.kind == StatementKind::kUtility ||
        !a_.equalities.empty()) {
      return std::nullopt;
    }
    const TableRef& ref = a_.tables[0];
    if (ref.table_class != TableClass::kSharded || ref.current_of || ref.insert >= 0 ||
        ref.predicate < 0 || !ref.key_assignments.empty() ||
        a_.predicates[static_cast<size_t>(ref.predicate)].op != KeyPredicate::Op::kEqual) {
      return std::nullopt;
    }
    const ShardedTable* cfg = db_.findShardedTable(ref.schema, ref.name);
    if (!tableStillMatches(db_, ref, cfg) || cfg->strategy == Strategy::kDirectory) {
      return std::nullopt;
    }
    const KeyPredicate& kp = a_.predicates[static_cast<size_t>(ref.predicate)];
    Result<Resolved> r = resolve(a_.values[kp.first], ref.key_type);
    if (!r.ok() || r->state != Resolved::State::kValue) return std::nullopt;
    Result<uint32_t> shard = shardForKey(*cfg, n_, r->key);
    if (!shard.ok() || bindRefuses(*shard)) return std::nullopt;
    return *shard;
  }

  Result<RouteDecision> routeTables() {
    if (const std::optional<uint32_t> shard = singleKeyShard()) {
      return bind(oneShard(*shard, std::string()));
    }
    const size_t count = a_.tables.size();
    tables_.assign(count, TableState{});
    bool any_unsharded = false;
    bool any_reference = false;
    std::string unsharded_name;
    const bool utility = a_.kind == StatementKind::kUtility;
    int32_t reference_written = -1;  // a reference table the statement writes (several shards)
    int32_t sharded_written = -1;    // a sharded table a utility statement changes

    for (size_t i = 0; i < count; ++i) {
      const auto t = static_cast<int32_t>(i);
      const TableRef& ref = a_.tables[i];
      TableState& ts = tables_[i];
      ts.set = ShardSet::all(n_);
      // The analysis was made for the config of its time: check its facts still hold.
      ts.cfg = db_.findShardedTable(ref.schema, ref.name);
      if (!tableStillMatches(db_, ref, ts.cfg)) {
        // (Callers check analysisMatchesConfig before routing a cached analysis.)
        return Error::make(sqlstate::kInternalError,
                           "the cached analysis of this statement is out of date: the sharding "
                           "of table " +
                               ref.display() + " changed");
      }
      if (ref.table_class == TableClass::kReference) {
        any_reference = true;
        if (ref.written && n_ > 1 && reference_written < 0) reference_written = t;
        continue;
      }
      if (ref.table_class == TableClass::kUnsharded) {
        if (!any_unsharded) unsharded_name = ref.display();
        any_unsharded = true;
        continue;
      }
      if (utility && ref.written && n_ > 1) {
        if (sharded_written < 0) sharded_written = t;
        continue;  // every shard (below)
      }
      if (ref.current_of) {
        if (!ctx_.transaction_shard) {
          if (n_ > 1) {
            return notSupported("WHERE CURRENT OF on sharded table " + ref.display() +
                                    " needs the cursor's transaction",
                                "shardgate routes it to the shard of the open transaction.",
                                "Declare and use the cursor inside one transaction.");
          }
        } else {
          ts.set = ShardSet::one(n_, *ctx_.transaction_shard);
          ts.constrained = true;
          ts.condition = "WHERE CURRENT OF (the transaction's cursor)";
        }
      } else if (ref.insert >= 0) {
        if (Status s = insertSet(t); !s.ok()) return std::move(s).error();
      } else if (ref.predicate >= 0) {
        Result<ShardSet> s = evaluate(ref.predicate, t);
        if (!s.ok()) return std::move(s).error();
        ts.set = std::move(s).value();
        ts.constrained = true;
        ts.condition_pending = true;
      }
      if (!ref.key_assignments.empty()) {
        if (Status s = checkAssignments(t); !s.ok()) return std::move(s).error();
      }
    }
    if (!pending_directory_.empty() || !pending_columns_.empty()) return needsLookups();
    narrow();
    if (sharded_written >= 0 || reference_written >= 0) {
      return routeEveryShard(sharded_written >= 0 ? sharded_written : reference_written,
                             any_unsharded ? unsharded_name : std::string());
    }

    // The one shard every table's rows that matter are on. INSERT targets come last, so that a
    // problem with the rows' source is reported as such.
    std::optional<uint32_t> chosen;
    int32_t chosen_by = -1;
    bool empty_match = false;
    order_.clear();
    for (size_t i = 0; i < count; ++i) {
      if (a_.tables[i].insert < 0) order_.push_back(static_cast<int32_t>(i));
    }
    for (size_t i = 0; i < count; ++i) {
      if (a_.tables[i].insert >= 0) order_.push_back(static_cast<int32_t>(i));
    }
    for (const int32_t t : order_) {
      if (a_.tables[t].table_class != TableClass::kSharded) continue;
      const TableState& ts = tables_[t];
      if (ts.set.empty()) {
        empty_match = true;
        continue;
      }
      if (ts.set.size() > 1) return routeMultiShard(t, spansShards(t));
      const uint32_t s = *ts.set.first();
      if (chosen && *chosen != s) return routeMultiShard(t, conflict(chosen_by, t));
      if (!chosen) {
        chosen = s;
        chosen_by = t;
      }
    }
    if (any_unsharded) {
      if (chosen && *chosen != db_.default_shard) {
        return notSupported(
            "unsharded table " + unsharded_name + " is on " + shardName(db_, db_.default_shard) +
                " (the default shard), but " + fragment(chosen_by) + " is on " +
                shardName(db_, *chosen),
            "Tables that are not sharded live on the database's default shard; this statement "
            "would need two shards.",
            "Split the statement, or make " + unsharded_name +
                " a reference table (a copy on every shard).");
      }
      chosen = db_.default_shard;
    }
    if (chosen) {
      // The reason is built only where someone reads it: bind's refusal quotes it.
      const bool shown = describe_ || bindRefuses(*chosen);
      return bind(oneShard(*chosen, shown ? tablesReason(any_unsharded ? &unsharded_name : nullptr)
                                          : std::string()));
    }
    if (a_.writes && !empty_match) {
      // Writes without a table (DDL of other objects, nextval(), advisory locks) go to one
      // fixed place, where the unsharded objects live: the default shard (or the transaction's).
      const std::string why = a_.write_reason + (any_reference ? " (reference tables only)" : "");
      if (utility && count == 0 && n_ > 1) {
        Result<std::optional<RouteDecision>> every = routeUtilityWithoutTables();
        if (!every.ok()) return std::move(every).error();
        if (*every) return std::move(**every);
      }
      if (ctx_.transaction_shard) return bind(anyShard(why));
      return oneShard(db_.default_shard, why + " on the default shard");
    }
    std::string reason = tablesReason(nullptr);
    if (reason.empty()) {
      reason = any_reference ? "reference tables only" : "no table";
    } else if (empty_match) {
      reason += " (no shard needed)";
    }
    return bind(anyShard(reason));
  }

  // "users.id = 42, unsharded audit": what put the statement on its one shard (or on none), for
  // the decision's reason. Tables in the order routeTables weighed them (order_).
  std::string tablesReason(const std::string* unsharded_name) {
    std::vector<std::string> fragments;
    for (const int32_t t : order_) {
      if (a_.tables[t].table_class != TableClass::kSharded) continue;
      std::string f = fragment(t);
      if (tables_[t].set.empty()) {
        if (!f.empty()) fragments.push_back(f + " matches no row");
        continue;
      }
      if (f.empty()) f = tableLabel(t) + " (single shard)";
      if (std::find(fragments.begin(), fragments.end(), f) == fragments.end()) {
        fragments.push_back(std::move(f));
      }
    }
    if (unsharded_name != nullptr) fragments.push_back("unsharded " + *unsharded_name);
    std::string reason;
    for (const std::string& f : fragments) {
      if (!reason.empty()) reason += ", ";
      reason += f;
    }
    return reason;
  }

  // Co-located key equalities: a table's rows that matter are on the shards of its partner's.
  void narrow() {
    std::vector<KeyEquality> edges = a_.equalities;
    edges.insert(edges.end(), insert_sources_.begin(), insert_sources_.end());
    bool changed = true;
    for (size_t round = 0; changed && round <= tables_.size() + 1; ++round) {
      changed = false;
      for (const KeyEquality& e : edges) {
        TableState& n = tables_[e.narrowed];
        const TableState& f = tables_[e.from];
        if (n.cfg == nullptr || f.cfg == nullptr) continue;
        if (!coLocated(*n.cfg, *f.cfg)) {
          if (std::find(n.not_colocated.begin(), n.not_colocated.end(), e.from) ==
              n.not_colocated.end()) {
            n.not_colocated.push_back(e.from);
          }
          continue;
        }
        ShardSet next = n.set;
        next.intersect(f.set);
        if (next == n.set) continue;
        n.set = std::move(next);
        if (n.narrowed_by < 0) n.narrowed_by = e.from;
        changed = true;
      }
    }
  }

  Status checkAssignments(int32_t t) {
    const TableRef& ref = a_.tables[t];
    std::optional<Resolved> where_key;
    if (ref.predicate >= 0 &&
        a_.predicates[static_cast<size_t>(ref.predicate)].op == KeyPredicate::Op::kEqual) {
      Result<Resolved> r =
          resolve(a_.values[a_.predicates[static_cast<size_t>(ref.predicate)].first], ref.key_type);
      if (r.ok() && r->state == Resolved::State::kValue) where_key = std::move(r).value();
    }
    for (const ValueRef& v : ref.key_assignments) {
      if (v.kind == ValueRef::Kind::kSameColumn) continue;
      // SET id = 5 ... WHERE id = 5 moves nothing.
      if (where_key && v.kind != ValueRef::Kind::kUnknown && v.kind != ValueRef::Kind::kDefault) {
        Result<Resolved> r = resolve(v, ref.key_type);
        if (r.ok() && r->state == Resolved::State::kValue && r->key == where_key->key) continue;
      }
      return notSupported(
          "updating the sharding key " + ref.name + "." + ref.key_column + " is not supported",
          "Changing a row's sharding key may move it to another shard; moving rows between "
          "shards is not supported yet.",
          "Delete the row and insert it again with the new " + ref.key_column + ".");
    }
    return {};
  }

  Error spansShards(int32_t t) {
    const TableRef& ref = a_.tables[t];
    const TableState& ts = tables_[t];
    const std::string key = ref.qualifiedKey();
    std::string shards;
    const std::vector<uint32_t> list = ts.set.toVector();
    for (size_t i = 0; i < list.size(); ++i) {
      if (i > 0) shards += i + 1 == list.size() ? " and " : ", ";
      shards += shardName(db_, list[i]);
    }
    std::string detail = ref.display() + " is sharded by " + strategyText(*ts.cfg) + " over " +
                         std::to_string(n_) +
                         " shards. shardgate cannot run this statement on several shards.";
    for (const int32_t other : ts.not_colocated) {
      detail += " It is joined to " + tableLabel(other) +
                " on their keys, but the two are not "
                "co-located (same strategy and key type, and the same ranges or lists).";
    }
    if (ref.insert >= 0 && ts.insert_source >= 0) {
      return notSupported("INSERT ... SELECT into sharded table " + ref.display() +
                              ": shardgate cannot tell which shard the rows belong to",
                          detail,
                          "Select " + key +
                              " from a co-located table with a condition on its "
                              "key, or insert the rows with VALUES.");
    }
    if (ref.insert >= 0) {
      return notSupported(
          "INSERT into " + ref.display() + " writes rows to " + shards + " (" + condition(t) + ")",
          detail, "Send one INSERT per shard.");
    }
    if (ts.unevaluable && ts.set.isAll()) {
      return notSupported(
          "table " + tableLabel(t) + " needs every shard: " + condition(t) +
              " does not tell which shard",
          detail + " A value that is not a " + std::string(conf::keyTypeName(ts.cfg->key_type)) +
              " (or a parameter without a value) cannot pick a shard.",
          "Compare " + key + " with " + std::string(conf::keyTypeName(ts.cfg->key_type)) +
              " literals or parameters.");
    }
    if (!ts.constrained && ts.narrowed_by < 0) {
      return notSupported(
          "table " + tableLabel(t) + " needs every shard: add a condition on " + key, detail,
          "Restrict " + key + " with = or IN (...)" +
              (ts.cfg->strategy == Strategy::kRange || ts.cfg->strategy == Strategy::kList
                   ? std::string(" or a range") +
                         (conf::isIntegerKey(ts.cfg->key_type) || ts.cfg->key_type == KeyType::kUuid
                              ? ""
                              : " (with COLLATE \"C\")")
                   : std::string()) +
              " so that the statement runs on one shard.");
    }
    const std::string cond = condition(t).empty() ? key : condition(t);
    return notSupported("table " + tableLabel(t) + " needs " + shards + " for " + cond, detail,
                        "Narrow " + key +
                            " to keys of one shard, or split the statement by "
                            "shard.");
  }

  // What restricts table t: its condition and the key equality that narrowed it.
  std::string fragment(int32_t t) {
    const TableState& ts = tables_[t];
    std::string f = condition(t);
    if (ts.narrowed_by >= 0) {
      const std::string eq =
          a_.tables[t].qualifiedKey() + " = " + a_.tables[ts.narrowed_by].qualifiedKey();
      f = f.empty() ? eq : f + " AND " + eq;
    }
    return f;
  }

  Error conflict(int32_t a, int32_t b) {
    const auto part = [&](int32_t t) {
      std::string cond = fragment(t);
      if (cond.empty()) cond = tableLabel(t);
      return cond + " is on " + shardName(db_, *tables_[t].set.first());
    };
    return notSupported("the statement needs two shards: " + part(a) + ", but " + part(b),
                        "shardgate cannot run this statement on several shards.",
                        "Split the statement so that each part needs one shard.");
  }

  // ---- statements that need several shards (see multi_shard_planner.h) ----

  // The statement as it is now: a cached analysis may come from a text with other literals, so
  // the tree is parsed again when the texts differ.
  struct CurrentStatement {
    std::shared_ptr<const parser::ParsedQuery> parsed;
    const pg_query::Node* node = nullptr;  // the query inside an EXPLAIN
    std::string_view text;                 // "" inside EXPLAIN (deparsed instead)
  };

  Result<CurrentStatement> currentStatement() const {
    CurrentStatement c;
    if (!a_.parsed) {
      return Error::make(sqlstate::kInternalError, "the statement's parse tree is missing");
    }
    const std::string_view sql = in_.literals != nullptr ? in_.literals->sql() : a_.parsed->sql;
    c.parsed = a_.parsed;
    if (sql != a_.parsed->sql) {
      Result<std::shared_ptr<const parser::ParsedQuery>> p = parser::parse(sql);
      if (!p.ok()) return std::move(p).error();
      c.parsed = std::move(p).value();
    }
    if (a_.statement_index >= c.parsed->statementCount()) {
      return Error::make(sqlstate::kInternalError, "the statement is missing from its parse");
    }
    c.node = &c.parsed->statement(a_.statement_index);
    c.text = c.parsed->statementText(a_.statement_index);
    if (c.node->has_explain_stmt()) {
      c.node = &c.node->explain_stmt().query();
      c.text = {};
    }
    return c;
  }

  RouteDecision multiDecision(std::shared_ptr<const MultiShardPlan> plan) const {
    RouteDecision d = base();
    d.kind = RouteDecision::Kind::kMultiShard;
    std::string shards;
    for (size_t i = 0; i < plan->statements.size(); ++i) {
      shards += (i ? ", " : "") + shardName(db_, plan->statements[i].shard);
    }
    d.reason = plan->reason + " -> " + shards;
    d.multi = std::move(plan);
    setRole(d);
    return d;
  }

  // The plan cache key of a multi-shard read: everything planMultiShardRead's result depends on.
  // Bind values count only where the plan reads them (LIMIT / OFFSET / HAVING parameters); the
  // shards they choose are in `shards`.
  std::string readPlanKey(const CurrentStatement& c, const std::vector<uint32_t>& shards,
                          const std::string& reason) const {
    std::string key;
    const auto put = [&key](uint64_t v, int bytes) {
      for (int shift = 8 * (bytes - 1); shift >= 0; shift -= 8) {
        key += static_cast<char>(v >> shift & 0xff);
      }
    };
    put(db_.generation, 8);
    put(shards.size(), 4);
    for (const uint32_t s : shards) put(s, 4);
    key += reason;
    key += '\0';
    key += c.text;
    const BindParameters* params = in_.params;
    if (params != nullptr && c.node->has_select_stmt()) {
      const pg_query::SelectStmt& s = c.node->select_stmt();
      const bool reads_values = (s.has_limit_count() && containsParameter(s.limit_count())) ||
                                (s.has_limit_offset() && containsParameter(s.limit_offset())) ||
                                (s.has_having_clause() && containsParameter(s.having_clause()));
      if (reads_values) {
        key += '\0';
        for (size_t i = 0; i < params->values.size(); ++i) {
          const std::optional<std::string_view>& v = params->values[i];
          put(v ? v->size() : 0xffffffffu, 4);
          if (v) key += *v;
        }
        for (const int16_t f : params->formats) put(static_cast<uint16_t>(f), 2);
      }
    }
    return key;
  }

  MultiShardInput multiInput(const CurrentStatement& c, std::vector<uint32_t> shards,
                             std::string reason) const {
    MultiShardInput in;
    in.db = &db_;
    in.statement = c.node;
    in.text = c.text;
    in.shards = std::move(shards);
    in.params = in_.params;
    in.reason = std::move(reason);
    return in;
  }

  std::vector<uint32_t> allShards() const {
    std::vector<uint32_t> all;
    for (uint32_t i = 0; i < n_; ++i) all.push_back(i);
    return all;
  }

  // A statement that needs several shards: a plan if each shard can do its part alone and
  // shardgate can merge the results exactly; else `fallback` (or a more precise 0A000).
  Result<RouteDecision> routeMultiShard(int32_t t, Error fallback) {
    const TableRef& ref = a_.tables[t];
    int32_t insert_target = -1;  // INSERT ... SELECT copying the key of a co-located table
    for (size_t i = 0; i < a_.tables.size(); ++i) {
      if (a_.tables[i].insert >= 0 && tables_[i].insert_source >= 0) {
        insert_target = static_cast<int32_t>(i);
      }
    }
    if (a_.kind == StatementKind::kInsert && insert_target >= 0) {
      const TableState& target = tables_[insert_target];
      const TableState& source = tables_[target.insert_source];
      if (target.cfg == nullptr || source.cfg == nullptr ||
          !tablesCoLocated(*target.cfg, *source.cfg)) {
        return spansShards(insert_target);  // "cannot tell which shard the rows belong to"
      }
    } else if (a_.kind == StatementKind::kInsert && ref.insert >= 0) {
      const InsertRows& ins = a_.inserts[static_cast<size_t>(ref.insert)];
      if (tables_[t].insert_source >= 0 || ins.from_select || a_.tables.size() > 1 ||
          tables_[t].row_shards.size() != ins.rows) {
        return fallback;
      }
    } else if (a_.kind != StatementKind::kSelect && a_.kind != StatementKind::kUpdate &&
               a_.kind != StatementKind::kDelete && a_.kind != StatementKind::kCopy) {
      return fallback;
    }
    if (a_.explain == ExplainMode::kPlain || a_.explain == ExplainMode::kAnalyze) {
      return notSupported("EXPLAIN of a statement that needs several shards is not supported",
                          fallback.message,
                          "EXPLAIN (ROUTE) shows how shardgate runs it; run EXPLAIN on a shard "
                          "directly to see a shard's plan.");
    }
    for (const TableRef& other : a_.tables) {
      if (other.table_class == TableClass::kUnsharded) {
        return notSupported(
            "unsharded table " + other.display() + " is on " + shardName(db_, db_.default_shard) +
                " only, but the statement needs several shards (" + fallback.message + ")",
            "Tables that are not sharded live on the database's default shard.",
            "Make " + other.display() +
                " a reference table (a copy on every shard), or split "
                "the statement.");
      }
    }
    Result<CurrentStatement> cur = currentStatement();
    if (!cur.ok()) return std::move(cur).error();
    if (cur->node->has_declare_cursor_stmt()) {
      return notSupported("cursors over several shards are not supported", fallback.message,
                          "Narrow the query to one shard.");
    }
    if (a_.kind == StatementKind::kInsert && insert_target < 0) {
      std::string reason = "INSERT into " + ref.display() + " split by " + condition(t);
      Result<std::shared_ptr<const MultiShardPlan>> plan = planInsertSplit(
          multiInput(*cur, tables_[t].set.toVector(), std::move(reason)), tables_[t].row_shards);
      if (!plan.ok()) return std::move(plan).error();
      return multiDecision(std::move(plan).value());
    }
    const bool reads = a_.kind == StatementKind::kSelect || a_.kind == StatementKind::kCopy;
    if (reads && a_.shape.set_operation) {
      return notSupported(
          "UNION, INTERSECT and EXCEPT over sharded tables that need several shards are not "
          "supported",
          fallback.message +
              ". Each branch would run on every shard; shardgate does not "
              "combine their results.",
          "Run each branch as its own query.");
    }
    if (reads && a_.writes) {
      return notSupported(
          a_.write_reason + " in a query that needs several shards is not supported",
          fallback.message, "Narrow the statement to one shard.");
    }
    Result<int32_t> root =
        perShardRoot(insert_target >= 0 ? tables_[insert_target].insert_source : -1);
    if (!root.ok()) return std::move(root).error();
    const TableState& rs = tables_[*root];
    std::string reason = fragment(*root);
    if (reason.empty()) reason = tableLabel(*root) + " (every shard)";
    if (insert_target >= 0) {
      reason = "INSERT into " + a_.tables[insert_target].display() + " from co-located " + reason;
    }
    const std::vector<uint32_t> shards = rs.set.toVector();
    // A read planned before (same text, shards and plan-relevant values) passed the checks below
    // then and has an immutable plan: reuse it.
    std::string plan_key;
    if (a_.kind == StatementKind::kSelect && in_.plans != nullptr && !cur->text.empty()) {
      plan_key = readPlanKey(*cur, shards, reason);
      if (std::shared_ptr<const MultiShardPlan> plan = in_.plans->find(plan_key)) {
        return multiDecision(std::move(plan));
      }
    }
    if (Status st = checkNestedSelects(db_, *cur->node); !st.ok()) return std::move(st).error();
    if (Status st = checkReplicatedOuterJoins(db_, *cur->node); !st.ok()) {
      return std::move(st).error();
    }
    if (a_.kind == StatementKind::kCopy) return routeCopyOut(*cur, shards, std::move(reason));
    if (a_.kind == StatementKind::kSelect) {
      MultiShardInput in = multiInput(*cur, shards, std::move(reason));
      in.columns = in_.columns;
      in.column_lookups = &pending_columns_;
      Result<std::shared_ptr<const MultiShardPlan>> plan = planMultiShardRead(in);
      if (!plan.ok()) return std::move(plan).error();
      if (*plan == nullptr) return needsLookups();
      if (!plan_key.empty()) in_.plans->insert(std::move(plan_key), *plan);
      return multiDecision(std::move(plan).value());
    }
    Result<std::shared_ptr<const MultiShardPlan>> plan = planSameStatement(
        multiInput(*cur, shards, std::move(reason)), MultiShardPlan::Kind::kWrite, false);
    if (!plan.ok()) return std::move(plan).error();
    return multiDecision(std::move(plan).value());
  }

  // The sharded table occurrence whose rows split the work: every other sharded occurrence is
  // tied to it by co-located key equalities (joins, correlated subqueries), so each shard finds
  // all the rows it needs at home. Errors: 0A000 naming the table that would need other shards.
  Result<int32_t> perShardRoot(int32_t insert_source) const {
    std::vector<int32_t> sharded;
    for (size_t i = 0; i < a_.tables.size(); ++i) {
      if (a_.tables[i].table_class == TableClass::kSharded)
        sharded.push_back(static_cast<int32_t>(i));
    }
    std::vector<KeyEquality> edges = a_.equalities;
    edges.insert(edges.end(), insert_sources_.begin(), insert_sources_.end());
    const auto usable = [&](const KeyEquality& e) {
      return tables_[e.from].cfg != nullptr && tables_[e.narrowed].cfg != nullptr &&
             tablesCoLocated(*tables_[e.from].cfg, *tables_[e.narrowed].cfg);
    };
    std::vector<int32_t> candidates;
    for (const int32_t t : sharded) {
      const TableRef& ref = a_.tables[t];
      const bool target =
          ref.written && (a_.kind == StatementKind::kUpdate || a_.kind == StatementKind::kDelete);
      const bool reads = a_.kind == StatementKind::kSelect || a_.kind == StatementKind::kCopy;
      if (insert_source >= 0 ? t == insert_source : reads ? ref.outer_level : target) {
        candidates.push_back(t);
      }
    }
    int32_t unreached = -1;
    int32_t from = -1;
    for (const int32_t root : candidates) {
      std::vector<bool> reached(a_.tables.size(), false);
      reached[root] = true;
      bool grew = true;
      while (grew) {
        grew = false;
        for (const KeyEquality& e : edges) {
          if (reached[e.from] && !reached[e.narrowed] && usable(e)) {
            reached[e.narrowed] = true;
            grew = true;
          }
        }
      }
      int32_t missing = -1;
      for (const int32_t t : sharded) {
        if (!reached[t]) {
          missing = t;
          break;
        }
      }
      if (missing < 0) return root;
      if (unreached < 0) {
        unreached = missing;
        from = root;
      }
    }
    if (from < 0) {
      return notSupported(
          "sharded table " + tableLabel(sharded.empty() ? 0 : sharded[0]) +
              " is read only inside a subquery, CTE or set operation, and needs several shards",
          "Each shard would compute the subquery over its own rows only.",
          "Narrow the statement to one shard with a condition on the sharding key.");
    }
    for (const KeyEquality& e : edges) {
      const bool pair = (e.from == from && e.narrowed == unreached) ||
                        (e.from == unreached && e.narrowed == from);
      if (pair && !usable(e)) {
        return notSupported("join of sharded tables " + tableLabel(from) + " and " +
                                tableLabel(unreached) +
                                " that are not co-located needs rows from several shards",
                            "They are joined on their sharding keys, but their rows with equal "
                            "keys may be on different shards (not the same strategy and key type, "
                            "or not the same ranges or lists).",
                            "Narrow the statement to one shard, or make one of them a reference "
                            "table.");
      }
    }
    if (a_.tables[unreached].outer_level) {
      return notSupported("join of sharded tables " + tableLabel(from) + " and " +
                              tableLabel(unreached) +
                              " not on their sharding keys needs rows from several shards",
                          "Each shard can join only the rows it holds: rows of " +
                              tableLabel(unreached) + " that match may be on other shards.",
                          "Join on " + a_.tables[from].qualifiedKey() + " = " +
                              a_.tables[unreached].qualifiedKey() +
                              ", narrow the statement to one shard, or make one of them a "
                              "reference table.");
    }
    return notSupported(
        "a subquery over sharded table " + tableLabel(unreached) + " needs rows of other shards",
        "Each shard would see only its own rows of " + tableLabel(unreached) + ".",
        "Correlate the subquery with " + tableLabel(from) + " on the sharding key (" +
            a_.tables[from].qualifiedKey() + "), or narrow the statement to one shard.");
  }

  // DDL and other utility statements on sharded tables, and writes to reference tables: every
  // shard runs them.
  Result<RouteDecision> routeEveryShard(int32_t t, const std::string& unsharded) {
    const TableRef& ref = a_.tables[t];
    const bool utility = a_.kind == StatementKind::kUtility;
    const bool sharded_table = ref.table_class == TableClass::kSharded;
    if (!unsharded.empty()) {
      return notSupported("this statement changes " + ref.display() +
                              ", which is on every shard, and uses unsharded table " + unsharded +
                              ", which is on " + shardName(db_, db_.default_shard) + " only",
                          {}, "Split the statement.");
    }
    if (!utility) {
      for (size_t i = 0; i < a_.tables.size(); ++i) {
        if (a_.tables[i].table_class == TableClass::kSharded) {
          return notSupported("writing to reference table " + ref.display() +
                                  " with rows of sharded table " +
                                  tableLabel(static_cast<int32_t>(i)) + " is not supported",
                              "Every shard holds a copy of the reference table, but only some of "
                              "the sharded table's rows.",
                              "Read the rows first and write them with VALUES.");
        }
      }
      if (a_.kind == StatementKind::kCopy && !sharded_table) return routeCopyIntoReference(ref);
      if (a_.kind != StatementKind::kInsert && a_.kind != StatementKind::kUpdate &&
          a_.kind != StatementKind::kDelete) {
        return notSupported(std::string(a_.kindName()) + " into reference table " + ref.display() +
                                " is not supported",
                            "A reference table has a copy on every shard; shardgate runs "
                            "INSERT, UPDATE, DELETE and DDL on every copy.",
                            "Use INSERT.");
      }
    }
    if (a_.explain == ExplainMode::kPlain || a_.explain == ExplainMode::kAnalyze) {
      return notSupported("EXPLAIN of a statement that runs on every shard is not supported", {},
                          "EXPLAIN (ROUTE) shows how shardgate runs it.");
    }
    Result<CurrentStatement> cur = currentStatement();
    if (!cur.ok()) return std::move(cur).error();
    std::string reason = std::string(utility ? a_.write_reason : a_.kindName()) + " on " +
                         (sharded_table ? "sharded" : "reference") + " table " + ref.display();
    bool replicated = true;
    for (const TableRef& other : a_.tables) {
      replicated = replicated && other.table_class == TableClass::kReference;
    }
    Result<std::shared_ptr<const MultiShardPlan>> plan = planSameStatement(
        multiInput(*cur, allShards(), std::move(reason)),
        utility ? MultiShardPlan::Kind::kDdl : MultiShardPlan::Kind::kWrite, replicated);
    if (!plan.ok()) return std::move(plan).error();
    return multiDecision(std::move(plan).value());
  }

  // COPY <reference table> FROM STDIN: every shard's copy gets every row. The client's CopyData
  // goes to each shard unchanged (so any format works, binary too), and the client gets one
  // shard's count, as for the other writes to a reference table.
  Result<RouteDecision> routeCopyIntoReference(const TableRef& ref) {
    Result<CurrentStatement> cur = currentStatement();
    if (!cur.ok()) return std::move(cur).error();
    if (!cur->node->has_copy_stmt() || !cur->node->copy_stmt().is_from()) {
      return notSupported("this COPY cannot run on several shards");
    }
    if (Status stdin_only =
            requireCopyFromStdin(cur->node->copy_stmt(), ref.display(), "a reference table");
        !stdin_only.ok()) {
      return std::move(stdin_only).error();
    }
    if (cur->parsed->statementCount() != 1) {
      return notSupported("COPY into reference table " + ref.display() +
                          " must be sent as a query of its own");
    }
    Result<std::shared_ptr<const MultiShardPlan>> plan = planSameStatement(
        multiInput(*cur, allShards(),
                   "COPY " + ref.display() + " FROM STDIN: every row to every shard"),
        MultiShardPlan::Kind::kCopyIn, /*replicated=*/true);
    if (!plan.ok()) return std::move(plan).error();
    return multiDecision(std::move(plan).value());
  }

  // DROP INDEX and database-wide VACUUM / ANALYZE: every shard; nullopt: the default shard.
  Result<std::optional<RouteDecision>> routeUtilityWithoutTables() {
    if (a_.explain == ExplainMode::kPlain || a_.explain == ExplainMode::kAnalyze) {
      return std::optional<RouteDecision>();
    }
    Result<CurrentStatement> cur = currentStatement();
    if (!cur.ok()) return std::move(cur).error();
    const std::string reason = cur->node->has_drop_stmt() ? "DROP INDEX" : "VACUUM / ANALYZE";
    std::optional<std::shared_ptr<const MultiShardPlan>> plan =
        planUtilityWithoutTables(multiInput(*cur, allShards(), reason + " (every shard)"));
    if (!plan) return std::optional<RouteDecision>();
    return std::optional<RouteDecision>(multiDecision(std::move(*plan)));
  }

  // COPY <sharded table> | (SELECT ...) TO STDOUT: every shard runs the COPY and the proxy passes
  // their rows on as they come. A query whose rows shardgate would have to merge (ORDER BY,
  // aggregates, LIMIT, DISTINCT) is refused: COPY's rows are not in a form the merge reads.
  Result<RouteDecision> routeCopyOut(const CurrentStatement& cur, std::vector<uint32_t> shards,
                                     std::string reason) {
    if (!cur.node->has_copy_stmt()) return notSupported("this COPY cannot run on several shards");
    const pg_query::CopyStmt& copy = cur.node->copy_stmt();
    if (!copy.filename().empty() || copy.is_program()) {
      return notSupported(
          "COPY TO a server file or program is not supported for a statement "
          "that needs several shards",
          reason + ". Each shard would write its own file on its own server.",
          "Use COPY ... TO STDOUT (psql: \\copy ... TO).");
    }
    Result<CopyOutFormat> format = readCopyOutFormat(copy);
    if (!format.ok()) return std::move(format).error();
    if (copy.has_query()) {
      MultiShardInput in = multiInput(cur, shards, reason);
      in.statement = &copy.query();
      in.text = {};
      Result<std::shared_ptr<const MultiShardPlan>> read = planMultiShardRead(in);
      if (!read.ok()) return std::move(read).error();
      if ((*read)->merge) {
        return notSupported(
            "COPY (SELECT ...) TO STDOUT over several shards is only supported when the shards' "
            "rows need no merging",
            reason +
                ". The query needs ORDER BY, aggregates, LIMIT or DISTINCT applied across "
                "the shards' rows.",
            "Run the SELECT itself (shardgate merges its rows), or COPY without that clause.");
      }
    }
    Result<std::shared_ptr<const MultiShardPlan>> same =
        planSameStatement(multiInput(cur, std::move(shards), "COPY TO STDOUT from " + reason),
                          MultiShardPlan::Kind::kCopyOut, false);
    if (!same.ok()) return std::move(same).error();
    auto plan = std::make_shared<MultiShardPlan>(**same);
    plan->copy_out_binary = format->binary;
    plan->copy_out_header = format->header;
    return multiDecision(std::move(plan));
  }

  // COPY <sharded table> FROM STDIN: every shard runs the COPY; the proxy sends each its rows.
  Result<RouteDecision> routeCopyFrom() {
    Result<CurrentStatement> current = currentStatement();
    if (!current.ok()) return std::move(current).error();
    if (!current->node->has_copy_stmt()) {
      return notSupported("EXPLAIN of COPY into a sharded table is not supported");
    }
    const pg_query::CopyStmt& copy = current->node->copy_stmt();
    const TableRef& ref = a_.tables.at(0);
    const conf::ShardedTable* table = nullptr;
    for (const conf::ShardedTable& t : db_.sharded_tables) {
      if (t.matches(ref.schema, ref.name)) table = &t;
    }
    if (table == nullptr) return Error::make(sqlstate::kInternalError, "COPY into unknown table");
    const std::vector<std::string>* order = nullptr;
    if (copy.attlist_size() == 0) {
      order = in_.columns != nullptr ? in_.columns->columnOrder(ref.schema, ref.name) : nullptr;
      if (order == nullptr) {
        if (in_.columns == nullptr) {
          return notSupported("COPY into sharded table " + ref.display() + " needs a column list",
                              "Without one, the position of the sharding key " +
                                  ref.qualifiedKey() +
                                  " in each row depends on the table's "
                                  "definition, which shardgate has not read.",
                              "Write COPY " + ref.display() + " (" + ref.key_column +
                                  ", ...) FROM "
                                  "STDIN");
        }
        RouteDecision d = base();
        d.kind = RouteDecision::Kind::kNeedsLookup;
        d.column_order_lookups.push_back({ref.schema, ref.name});
        d.reason = "needs lookups; column order of " + ref.display();
        return d;
      }
    }
    Result<CopySplit> split = planCopySplit(copy, *table, n_, order);
    if (!split.ok()) return split.error();
    auto plan = std::make_shared<MultiShardPlan>();
    plan->kind = MultiShardPlan::Kind::kCopyIn;
    plan->copy = std::make_shared<const CopySplit>(std::move(split).value());
    if (current->parsed->statementCount() != 1) {
      return notSupported("COPY into sharded table " + ref.display() +
                          " must be sent as a query of its own");
    }
    const std::string sql(current->text);
    for (uint32_t shard = 0; shard < n_; ++shard) plan->statements.push_back({shard, sql});
    plan->reason = "COPY " + ref.display() + " FROM STDIN: rows split by " + ref.qualifiedKey();
    RouteDecision d = base();
    d.kind = RouteDecision::Kind::kMultiShard;
    d.role = Role::kPrimary;
    d.multi = std::move(plan);
    d.reason = d.multi->reason;
    return d;
  }

  // ---- EXPLAIN (ROUTE) ----

  Result<RouteDecision> explainRoute() {
    Result<RouteDecision> inner = routeStatement();
    RouteDecision d = base();
    d.kind = RouteDecision::Kind::kExplainRoute;
    d.writes = false;
    std::vector<std::string>& lines = d.explain_lines;
    if (!inner.ok()) {
      const Error& e = inner.error();
      lines.push_back("Route: none (error " + e.sqlstate + ")");
      lines.push_back("Error: " + e.message);
      if (!e.detail.empty()) lines.push_back("Detail: " + e.detail);
      if (!e.hint.empty()) lines.push_back("Hint: " + e.hint);
      d.reason = "explain: error " + e.sqlstate;
    } else if (inner->kind == RouteDecision::Kind::kNeedsLookup) {
      return inner;
    } else {
      const RouteDecision& r = *inner;
      std::string target;
      switch (r.kind) {
        case RouteDecision::Kind::kShard:
          target = shardName(db_, r.shard);
          break;
        case RouteDecision::Kind::kAnyShard:
          target = "any shard";
          break;
        case RouteDecision::Kind::kShardgateSetting:
          target = "shardgate itself";
          break;
        case RouteDecision::Kind::kMultiShard:
          for (size_t i = 0; r.multi && i < r.multi->statements.size(); ++i) {
            target += (i ? ", " : "") + shardName(db_, r.multi->statements[i].shard);
          }
          break;
        default:
          target = "?";
          break;
      }
      if (r.kind != RouteDecision::Kind::kShardgateSetting) {
        target += r.role == Role::kPrimary ? " (primary)" : " (replica)";
      }
      lines.push_back("Route: " + target);
      lines.push_back("Reason: " + r.reason);
      lines.push_back(std::string("Statement: ") + a_.kindName() +
                      (a_.writes ? ", writes (" + a_.write_reason + ")" : ", read-only"));
      if (r.kind != RouteDecision::Kind::kShardgateSetting)
        lines.push_back("Role: " + roleReason(r));
      for (size_t i = 0; i < a_.tables.size() && i < tables_.size(); ++i) {
        lines.push_back(tableLine(static_cast<int32_t>(i)));
      }
      if (ctx_.transaction_shard) {
        lines.push_back("Transaction: bound to " + shardName(db_, *ctx_.transaction_shard));
      }
      if (r.kind == RouteDecision::Kind::kMultiShard && r.multi) {
        for (std::string& line : describeMultiShardPlan(db_, *r.multi)) {
          lines.push_back(std::move(line));
        }
      }
      d.reason = "explain: " + r.reason;
    }
    return d;
  }

  std::string tableLine(int32_t t) {
    const TableRef& ref = a_.tables[t];
    const TableState& ts = tables_[t];
    std::string s = "Table " + tableLabel(t) + ": ";
    switch (ref.table_class) {
      case TableClass::kReference:
        return s + "reference table (a copy on every shard)";
      case TableClass::kUnsharded:
        return s + "unsharded, on " + shardName(db_, db_.default_shard) + " (the default shard)";
      case TableClass::kSharded:
        break;
    }
    s += "sharded by " + (ts.cfg ? strategyText(*ts.cfg) : std::string("?"));
    const std::vector<uint32_t> list = ts.set.toVector();
    if (list.empty()) {
      s += " -> no shard";
    } else if (list.size() == n_ && n_ > 1) {
      s += " -> every shard";
    } else {
      s += " -> ";
      for (size_t i = 0; i < list.size(); ++i) s += (i ? ", " : "") + shardName(db_, list[i]);
    }
    if (!condition(t).empty()) s += "; " + condition(t);
    if (ts.narrowed_by >= 0) {
      s += "; co-located with " + tableLabel(ts.narrowed_by) + " on " + ref.qualifiedKey() + " = " +
           a_.tables[ts.narrowed_by].qualifiedKey();
    }
    return s;
  }

  const conf::Database& db_;
  const QueryAnalysis& a_;
  const RouteInputs& in_;
  const SessionRouteContext& ctx_;
  const size_t n_;
  const bool describe_;  // build one-shard reasons (RouteInputs::describe, or EXPLAIN (ROUTE))
  // One StatementRouter per statement routed: statements name a few tables, whose state stays
  // inline (no allocation per statement).
  boost::container::small_vector<int32_t, 8> order_;  // routeTables: the order tables are weighed
  boost::container::small_vector<TableState, 4> tables_;
  std::vector<KeyEquality> insert_sources_;
  std::vector<DirectoryKeyRequest> pending_directory_;
  std::vector<ColumnOrderRequest> pending_columns_;
  std::string scratch_;
};

// The session state after a statement ran (for the next statement of a multi-statement query).
void advance(SessionRouteContext& ctx, const QueryAnalysis& a, const RouteDecision& d) {
  switch (a.transaction) {
    case TransactionAction::kBegin:
      ctx.in_transaction = true;
      ctx.transaction_read_only = a.read_only_transaction;
      return;
    case TransactionAction::kCommit:
    case TransactionAction::kRollback:
    case TransactionAction::kPrepare:
      ctx.in_transaction = false;
      ctx.transaction_wrote = false;
      ctx.transaction_read_only = false;
      ctx.transaction_shard.reset();
      return;
    default:
      break;
  }
  if (a.read_only_transaction && ctx.in_transaction && !ctx.transaction_wrote) {
    ctx.transaction_read_only = true;
  }
  if (ctx.in_transaction) {
    if (d.writes) ctx.transaction_wrote = true;
    if (d.kind == RouteDecision::Kind::kShard && !ctx.transaction_shard) {
      ctx.transaction_shard = d.shard;
    }
  }
}

}  // namespace

bool tablesCoLocated(const conf::ShardedTable& a, const conf::ShardedTable& b) {
  return coLocated(a, b);
}

std::string shardName(const conf::Database& db, uint32_t shard) {
  if (shard < db.shards.size() && !db.shards[shard].name.empty()) return db.shards[shard].name;
  return "#" + std::to_string(shard);
}

bool analysisMatchesConfig(const conf::Database& db, const QueryAnalysis& a) {
  for (const TableRef& t : a.tables) {
    if (!tableStillMatches(db, t, db.findShardedTable(t.schema, t.name))) return false;
  }
  return true;
}

Result<RouteDecision> routeStatements(const conf::Database& db,
                                      const std::vector<const QueryAnalysis*>& statements,
                                      const RouteInputs& inputs, const SessionRouteContext& ctx) {
  if (db.shards.empty()) {
    return Error::make(sqlstate::kInternalError, "database " + db.name + " has no shards");
  }
  if (statements.empty()) {
    QueryAnalysis empty;
    return StatementRouter(db, empty, inputs, ctx).route();
  }
  if (statements.size() == 1) return StatementRouter(db, *statements[0], inputs, ctx).route();

  SessionRouteContext state = ctx;
  RouteDecision combined;
  combined.kind = RouteDecision::Kind::kAnyShard;
  combined.several_statements = true;
  std::optional<size_t> shard_from;  // statement that fixed the shard
  bool primary_needed = false;
  bool all_fallback = true;
  RouteDecision lookups;
  lookups.kind = RouteDecision::Kind::kNeedsLookup;
  for (size_t i = 0; i < statements.size(); ++i) {
    const QueryAnalysis& a = *statements[i];
    if (a.kind == StatementKind::kShardgateSetting || a.explain == ExplainMode::kRoute) {
      return notSupported(
          std::string(a.kind == StatementKind::kShardgateSetting ? "SET / SHOW / RESET shardgate.*"
                                                                 : "EXPLAIN (ROUTE)") +
              " must be sent as a query of its own",
          "shardgate answers it itself; statement " + std::to_string(i + 1) + " of " +
              std::to_string(statements.size()) + " is one.",
          "Send it in a separate query.");
    }
    Result<RouteDecision> r = StatementRouter(db, a, inputs, state).route();
    if (!r.ok()) {
      Error e = std::move(r).error();
      const std::string where = "In statement " + std::to_string(i + 1) + " of " +
                                std::to_string(statements.size()) + ".";
      e.detail = e.detail.empty() ? where : e.detail + " " + where;
      return e;
    }
    RouteDecision& d = *r;
    if (d.kind == RouteDecision::Kind::kMultiShard) {
      return notSupported(
          "statement " + std::to_string(i + 1) + " of " + std::to_string(statements.size()) +
              " needs several shards; such a statement must be sent as a query of its own",
          "Route: " + d.reason + ".", "Send the statements one at a time.");
    }
    if (d.kind == RouteDecision::Kind::kNeedsLookup) {
      for (auto& k : d.directory_lookups) lookups.directory_lookups.push_back(std::move(k));
      for (auto& c : d.column_order_lookups) lookups.column_order_lookups.push_back(std::move(c));
      continue;
    }
    if (d.kind == RouteDecision::Kind::kShard) {
      if (combined.kind == RouteDecision::Kind::kShard && combined.shard != d.shard) {
        return notSupported(
            "a multi-statement query must run on one shard: statement " +
                std::to_string(*shard_from + 1) + " needs " + shardName(db, combined.shard) +
                ", statement " + std::to_string(i + 1) + " needs " + shardName(db, d.shard),
            "The statements of one simple query run in one transaction on one connection.",
            "Send the statements one at a time.");
      }
      if (combined.kind != RouteDecision::Kind::kShard) shard_from = i;
      combined.kind = RouteDecision::Kind::kShard;
      combined.shard = d.shard;
    }
    if (d.role == Role::kReplica) {
      all_fallback = all_fallback && d.primary_fallback;
    } else {
      primary_needed = true;
    }
    combined.writes = combined.writes || d.writes;
    combined.begins_read_only_transaction =
        combined.begins_read_only_transaction || d.begins_read_only_transaction;
    combined.resets_session = combined.resets_session || d.resets_session;
    combined.changes_setting = combined.changes_setting || d.changes_setting;
    if (d.transaction != TransactionAction::kNone) combined.transaction = d.transaction;
    if (inputs.describe) {
      if (!combined.reason.empty()) combined.reason += "; ";
      combined.reason += d.reason;
    }
    advance(state, a, d);
  }
  if (!lookups.directory_lookups.empty() || !lookups.column_order_lookups.empty()) {
    lookups.reason = "needs lookups";
    return lookups;
  }
  // One connection runs them all: a replica only if every statement may use one.
  combined.role = primary_needed ? Role::kPrimary : Role::kReplica;
  combined.primary_fallback = !primary_needed && all_fallback;
  return combined;
}

std::string describeDecision(const conf::Database& db, const RouteDecision& d) {
  std::string s;
  switch (d.kind) {
    case RouteDecision::Kind::kShard:
      s = shardName(db, d.shard);
      break;
    case RouteDecision::Kind::kAnyShard:
      s = "any";
      break;
    case RouteDecision::Kind::kExplainRoute:
      return "explain-route: " + d.reason;
    case RouteDecision::Kind::kShardgateSetting: {
      const char* action = d.setting_action == SettingAction::kSet    ? "set"
                           : d.setting_action == SettingAction::kShow ? "show"
                                                                      : "reset";
      s = std::string("shardgate-setting ") + action + " " + d.setting_name;
      if (!d.setting_value.empty()) s += " = " + d.setting_value;
      if (d.setting_local) s += " (local)";
      return s;
    }
    case RouteDecision::Kind::kNeedsLookup:
      return "needs-lookup: " + d.reason;
    case RouteDecision::Kind::kMultiShard: {
      s = "multi-shard";
      if (d.multi) {
        for (size_t i = 0; i < d.multi->statements.size(); ++i)
          s += (i ? "," : " ") + shardName(db, d.multi->statements[i].shard);
      }
      break;
    }
  }
  s += d.role == Role::kPrimary ? " primary" : d.primary_fallback ? " prefer-replica" : " replica";
  s += d.writes ? " write" : " read";
  if (d.begins_read_only_transaction) s += " read-only-txn";
  return s + ": " + d.reason;
}

}  // namespace shardgate::planner
