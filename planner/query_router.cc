// QueryRouter: template / exact-text / prepared analysis caches in front of analyze + route.
#include "planner/query_router.h"

#include "parser/parser.h"
#include "planner/analyzer.h"

namespace shardgate::planner {

QueryRouter::QueryRouter(size_t cache_entries) : max_entries_(cache_entries) {}

std::string& QueryRouter::keyFor(char tag, const conf::Database& db, std::string_view text) {
  key_.clear();
  key_ += tag;
  key_ += db.name;
  key_ += '\0';
  key_ += text;
  return key_;
}

const QueryRouter::Entry* QueryRouter::lookup(std::string_view key) {
  const auto it = index_.find(key);
  if (it == index_.end()) return nullptr;
  lru_.splice(lru_.begin(), lru_, it->second);
  return it->second->second.get();
}

void QueryRouter::insert(std::string key, std::shared_ptr<const Entry> entry) {
  if (max_entries_ == 0) return;
  if (const auto it = index_.find(key); it != index_.end()) {
    it->second->second = std::move(entry);
    lru_.splice(lru_.begin(), lru_, it->second);
    return;
  }
  lru_.emplace_front(std::move(key), std::move(entry));
  index_.emplace(std::string_view(lru_.front().first), lru_.begin());
  while (lru_.size() > max_entries_) {
    index_.erase(std::string_view(lru_.back().first));
    lru_.pop_back();
  }
}

bool QueryRouter::matchesConfig(const conf::Database& db, const Entry& entry) {
  for (const auto& a : entry.statements) {
    if (!analysisMatchesConfig(db, *a)) return false;
  }
  return true;
}

Result<std::shared_ptr<const QueryRouter::Entry>> QueryRouter::analyzeText(
    const conf::Database& db, std::string_view sql, const LiteralTemplate* literals,
    const std::vector<int32_t>& param_types) {
  Result<std::shared_ptr<const parser::ParsedQuery>> parsed = parser::parse(sql);
  if (!parsed.ok()) return std::move(parsed).error();
  auto entry = std::make_shared<Entry>();
  for (size_t i = 0; i < (*parsed)->statementCount(); ++i) {
    Result<std::shared_ptr<const QueryAnalysis>> a =
        analyzeStatement(db, *parsed, i, literals, param_types);
    if (!a.ok()) return std::move(a).error();
    entry->statements.push_back(std::move(a).value());
  }
  return std::shared_ptr<const Entry>(std::move(entry));
}

Result<RouteDecision> QueryRouter::routeEntry(const conf::Database& db, const Entry& entry,
                                              const LiteralTemplate* literals,
                                              const BindParameters* params,
                                              const SessionRouteContext& ctx) {
  statements_.clear();
  for (const auto& a : entry.statements) statements_.push_back(a.get());
  RouteInputs in;
  in.literals = literals;
  in.params = params;
  in.directory = directory_;
  in.columns = columns_;
  in.plans = &plans_;
  in.describe = describe_;
  return routeStatements(db, statements_, in, ctx);
}

Result<RouteDecision> QueryRouter::routeSimple(const conf::Database& db, std::string_view sql,
                                               const SessionRouteContext& ctx) {
  prefix_.clear();
  prefix_ += 'T';
  prefix_ += db.name;
  prefix_ += '\0';
  const bool scanned = scanner_.scan(sql, prefix_);
  const LiteralTemplate* literals = scanned ? &scanner_ : nullptr;
  // An entry analysed for another config (a reload since) is analysed again below; the exact
  // text is not looked up then (its entry is as old).
  bool stale = false;
  if (scanned) {
    if (const Entry* e = lookup(scanner_.key()); e != nullptr && !e->exact_only) {
      if (matchesConfig(db, *e)) {
        ++stats_.template_hits;
        return routeEntry(db, *e, literals, nullptr, ctx);
      }
      stale = true;
    }
  }
  if (!stale) {
    if (const Entry* e = lookup(keyFor('X', db, sql)); e != nullptr && matchesConfig(db, *e)) {
      ++stats_.exact_hits;
      return routeEntry(db, *e, literals, nullptr, ctx);
    }
  }
  ++stats_.misses;
  Result<std::shared_ptr<const Entry>> entry = analyzeText(db, sql, literals, {});
  if (!entry.ok()) return std::move(entry).error();
  if (sql.size() <= max_query_bytes_) {
    bool templated = scanned;
    for (const auto& a : (*entry)->statements) templated = templated && a->templated;
    if (templated) {
      insert(scanner_.key(), *entry);
    } else {
      insert(keyFor('X', db, sql), *entry);
      if (scanned) {
        auto marker = std::make_shared<Entry>();
        marker->exact_only = true;
        insert(scanner_.key(), std::move(marker));
      }
    }
  }
  return routeEntry(db, **entry, literals, nullptr, ctx);
}

Result<RouteDecision> QueryRouter::routeSimpleUncached(const conf::Database& db,
                                                       std::string_view sql,
                                                       const SessionRouteContext& ctx) {
  Result<std::shared_ptr<const Entry>> entry = analyzeText(db, sql, nullptr, {});
  if (!entry.ok()) return std::move(entry).error();
  return routeEntry(db, **entry, nullptr, nullptr, ctx);
}

Result<std::shared_ptr<const QueryAnalysis>> QueryRouter::prepare(
    const conf::Database& db, std::string_view sql, const std::vector<int32_t>& param_types) {
  // Every Bind of a prepared statement looks its analysis up here, and a client (or all of them,
  // under pgbench) mostly binds the same statement again: the last answer is kept aside, for as
  // long as the config is the same one (a loaded config's generation; a config built by hand has
  // none, and is checked instead).
  if (last_prepared_ && &db == last_prepared_db_ && db.generation == last_prepared_generation_ &&
      sql == last_prepared_sql_ && param_types == last_prepared_types_ &&
      (db.generation != 0 || analysisMatchesConfig(db, *last_prepared_))) {
    ++stats_.exact_hits;
    return last_prepared_;
  }
  // The key is built in key_, whose capacity stays: a hit allocates nothing.
  key_.clear();
  key_ += 'P';
  key_ += db.name;
  key_ += '\0';
  const auto put32 = [this](uint32_t v) {
    for (int shift = 24; shift >= 0; shift -= 8) key_ += static_cast<char>(v >> shift & 0xff);
  };
  put32(static_cast<uint32_t>(param_types.size()));
  for (const int32_t t : param_types) put32(static_cast<uint32_t>(t));
  key_ += sql;
  if (const Entry* e = lookup(key_)) {
    if (matchesConfig(db, *e) && e->statements.size() == 1) {
      ++stats_.exact_hits;
      rememberPrepared(db, sql, param_types, *e);
      return e->statements[0];
    }
  }
  ++stats_.misses;
  std::string key = key_;  // kept for insert(); a miss is rare, so this copy is cheap overall
  Result<std::shared_ptr<const parser::ParsedQuery>> parsed = parser::parse(sql);
  if (!parsed.ok()) return std::move(parsed).error();
  if ((*parsed)->statementCount() > 1) {
    return Error::make(sqlstate::kSyntaxError,
                       "cannot insert multiple commands into a prepared statement");
  }
  Result<std::shared_ptr<const QueryAnalysis>> a =
      analyzeStatement(db, *parsed, 0, nullptr, param_types);
  if (!a.ok()) return a;
  if (sql.size() <= max_query_bytes_) {
    auto entry = std::make_shared<Entry>();
    entry->statements.push_back(*a);
    rememberPrepared(db, sql, param_types, *entry);
    insert(std::move(key), std::move(entry));
  }
  return a;
}

void QueryRouter::rememberPrepared(const conf::Database& db, std::string_view sql,
                                   const std::vector<int32_t>& param_types, const Entry& entry) {
  last_prepared_ = entry.statements[0];
  last_prepared_db_ = &db;
  last_prepared_generation_ = db.generation;
  last_prepared_sql_.assign(sql);
  last_prepared_types_ = param_types;
}

Result<RouteDecision> QueryRouter::routeBound(const conf::Database& db,
                                              const QueryAnalysis& analysis,
                                              const BindParameters& params,
                                              const SessionRouteContext& ctx) {
  RouteInputs in;
  in.params = &params;
  in.directory = directory_;
  in.columns = columns_;
  in.plans = &plans_;
  in.describe = describe_;
  // An analysis made at Parse under a config reloaded since is made again for the current one.
  if (analysisMatchesConfig(db, analysis)) {
    statements_.assign(1, &analysis);
    return routeStatements(db, statements_, in, ctx);
  }
  // The config changed since Parse: analyse the statement again for the current one.
  Result<std::shared_ptr<const QueryAnalysis>> fresh = analyzeStatement(
      db, analysis.parsed, analysis.statement_index, nullptr, analysis.param_types);
  if (!fresh.ok()) return std::move(fresh).error();
  statements_.assign(1, fresh->get());
  return routeStatements(db, statements_, in, ctx);
}

QueryRouter::Stats QueryRouter::stats() const {
  Stats s = stats_;
  s.entries = lru_.size();
  return s;
}

void QueryRouter::clear() {
  last_prepared_.reset();
  index_.clear();
  lru_.clear();
  plans_.clear();
  stats_ = Stats{};
}

}  // namespace shardgate::planner
