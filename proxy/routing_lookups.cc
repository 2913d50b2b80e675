// Per-worker routing lookups: directory entries and column orders, read through libpq in the
// libuv thread pool and cached on the loop thread.
#include "proxy/routing_lookups.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <exception>
#include <utility>

#include "common/ascii.h"
#include "parser/node_helpers.h"
#include "parser/parser.h"
#include "planner/sharding_function.h"
#include "proxy/catalog_client.h"

namespace shardgate::proxy {
namespace {

// A directory's "no row" answer is kept this long only: a row added behind shardgate's back
// (or by another proxy) is seen soon after. Rows found are kept until evicted or invalidated.
constexpr uint64_t kMissingEntryTtlMs = 1000;
// Column orders are read again after this long: DDL on a sharded table runs on the shards
// directly (shardgate refuses it), so this bounds how long an old order can be used.
constexpr uint64_t kColumnOrderTtlMs = 30000;
// Idle libpq connections kept per shard server and worker.
constexpr size_t kMaxIdleConnections = 2;
constexpr char kSep = '\x1f';

}  // namespace

struct RoutingLookups::Job {
  enum class Kind { kColumns, kDirectoryRead, kDirectoryPlace, kDirectoryWrite, kCollation };
  uv_work_t req{};
  RoutingLookups* owner = nullptr;
  Kind kind = Kind::kColumns;
  std::string flight_key;  // the waiters in flights_ (kDirectoryWrite: `ticket` instead)
  std::string cache_key;
  uint64_t ticket = 0;
  uint64_t generation = 0;  // generation_ at submit (kCollation: collations_generation_)
  std::unique_ptr<catalog::Connection> conn;
  // What to look up.
  std::string schema, table, search_path;
  conf::TableName directory;
  std::string key_text;
  uint32_t shard = 0;
  // kCollation: the database, and each shard's name and primary (its own connections, not
  // pooled: the collation is read once per worker).
  std::string database;
  std::vector<std::pair<std::string, std::string>> shard_conninfos;
  // What came back (set in the thread pool).
  std::optional<Error> error;
  std::vector<std::string> columns;
  std::optional<uint32_t> found;
  std::string collation;
};

namespace {

// Every shard's collation, which must be the same: a merge compares the shards' text in one order.
Result<std::string> readShardsCollation(
    const std::string& database,
    const std::vector<std::pair<std::string, std::string>>& shard_conninfos) {
  std::string collation;
  std::string first_shard;
  for (const auto& [shard, conninfo] : shard_conninfos) {
    catalog::Connection conn(conninfo);
    Result<std::string> read = catalog::readCollation(conn);
    if (!read.ok()) {
      Error e = read.error();
      e.message = "cannot read the collation of shard " + shard + ": " + e.message;
      return e;
    }
    if (first_shard.empty()) {
      collation = *read;
      first_shard = shard;
    } else if (*read != collation) {
      return Error::make(sqlstate::kFeatureNotSupported,
                         "the shards of database " + database + " use different collations",
                         shard + " uses " + *read + ", " + first_shard + " " + collation,
                         "create every shard's database with the same LC_COLLATE");
    }
  }
  return collation;
}

}  // namespace

RoutingLookups::RoutingLookups(uv_loop_t* loop, Broadcast broadcast, size_t max_entries)
    : loop_(loop),
      broadcast_(std::move(broadcast)),
      directory_(max_entries),
      columns_(std::max<size_t>(16, max_entries / 16)) {}

RoutingLookups::~RoutingLookups() {
  // The worker's loop has run to the end, so every job's after-callback has run.
  if (running_ != 0) spdlog::error("event=lookups_destroyed_busy running={}", running_);
}

void RoutingLookups::setSession(const conf::Database& db, std::string_view search_path_statement) {
  db_ = &db;
  if (search_path_ != search_path_statement) search_path_.assign(search_path_statement);
}

std::string RoutingLookups::directoryKey(const conf::Database& db, const conf::ShardedTable& table,
                                         const conf::KeyValue& key) const {
  const conf::DirectoryConfig& d = *table.directory;
  std::string k = db.name;
  k += kSep;
  k += std::to_string(d.shard);
  k += kSep;
  k += d.table.schema;
  k += '.';
  k += d.table.name;
  k += kSep;
  k += catalog::keyText(table.key_type, key);
  return k;
}

std::string RoutingLookups::columnKey(std::string_view db, std::string_view search_path,
                                      std::string_view schema, std::string_view table) const {
  std::string k(db);
  k += kSep;
  k += search_path;
  k += kSep;
  k += schema;
  k += kSep;
  k += table;
  return k;
}

std::optional<planner::DirectoryLookup::Answer> RoutingLookups::find(
    const conf::ShardedTable& table, const conf::KeyValue& key) const {
  if (db_ == nullptr || !table.directory) return std::nullopt;
  scratch_key_ = directoryKey(*db_, table, key);
  DirectoryEntry* entry = directory_.find(scratch_key_);
  if (entry == nullptr) return std::nullopt;
  if (entry->expires_ms != 0 && uv_now(loop_) >= entry->expires_ms) {
    directory_.erase(scratch_key_);
    return std::nullopt;
  }
  return Answer{entry->shard};
}

const std::vector<std::string>* RoutingLookups::columnOrder(std::string_view schema,
                                                            std::string_view table) const {
  if (db_ == nullptr) return nullptr;
  scratch_key_ = columnKey(db_->name, search_path_, schema, table);
  ColumnsEntry* entry = columns_.find(scratch_key_);
  if (entry == nullptr) return nullptr;
  if (uv_now(loop_) >= entry->expires_ms) {
    columns_.erase(scratch_key_);
    return nullptr;
  }
  return &entry->columns;
}

const std::string* RoutingLookups::collation(const std::string& database) const {
  auto it = collations_.find(database);
  return it == collations_.end() ? nullptr : &it->second;
}

void RoutingLookups::forgetCollations() {
  collations_.clear();
  ++collations_generation_;
}

uint64_t RoutingLookups::newTicket(Done done) {
  const uint64_t t = next_ticket_++;
  tickets_[t].done = std::move(done);
  return t;
}

bool RoutingLookups::join(const std::string& flight_key, uint64_t ticket) {
  auto [it, fresh] = flights_.try_emplace(flight_key);
  it->second.push_back(ticket);
  return !fresh;
}

uint64_t RoutingLookups::request(const planner::RouteDecision& decision, Done done) {
  if (db_ == nullptr) return 0;
  const conf::Database& db = *db_;
  const uint64_t t = newTicket(std::move(done));
  std::optional<Error> failed;
  for (const planner::DirectoryKeyRequest& r : decision.directory_lookups) {
    const conf::ShardedTable& cfg = *r.table;
    if (!cfg.directory || cfg.directory->shard >= db.shards.size()) continue;
    std::string cache_key = directoryKey(db, cfg, r.key);
    if (const DirectoryEntry* e = directory_.find(cache_key)) {
      const bool fresh = e->expires_ms == 0 || uv_now(loop_) < e->expires_ms;
      if (fresh && (!r.place || e->shard)) continue;
    }
    uint32_t hash_shard = 0;
    if (r.place) {
      Result<uint32_t> s = planner::hashShard(cfg.key_type, db.shards.size(), r.key);
      if (!s.ok()) {
        failed = std::move(s).error();
        break;
      }
      hash_shard = *s;
    }
    std::string flight_key = (r.place ? "P" : "R") + cache_key;
    ++tickets_[t].remaining;
    if (join(flight_key, t)) continue;
    auto job = std::make_unique<Job>();
    job->kind = r.place ? Job::Kind::kDirectoryPlace : Job::Kind::kDirectoryRead;
    job->flight_key = std::move(flight_key);
    job->cache_key = std::move(cache_key);
    job->directory = cfg.directory->table;
    job->key_text = catalog::keyText(cfg.key_type, r.key);
    job->shard = hash_shard;
    job->conn = std::make_unique<catalog::Connection>(
        catalog::conninfoFor(db.shards[cfg.directory->shard].primary));
    submit(std::move(job));
  }
  for (const planner::ColumnOrderRequest& c : decision.column_order_lookups) {
    if (failed || db.default_shard >= db.shards.size()) break;
    std::string cache_key = columnKey(db.name, search_path_, c.schema, c.table);
    if (const ColumnsEntry* e = columns_.find(cache_key); e && uv_now(loop_) < e->expires_ms) {
      continue;
    }
    std::string flight_key = "C" + cache_key;
    ++tickets_[t].remaining;
    if (join(flight_key, t)) continue;
    auto job = std::make_unique<Job>();
    job->kind = Job::Kind::kColumns;
    job->flight_key = std::move(flight_key);
    job->cache_key = std::move(cache_key);
    job->schema = c.schema;
    job->table = c.table;
    job->search_path = search_path_;
    // A sharded table has the same definition on every shard; the default shard has the others.
    job->conn = std::make_unique<catalog::Connection>(
        catalog::conninfoFor(db.shards[db.default_shard].primary));
    submit(std::move(job));
  }
  if (decision.needs_collation && !failed && !collations_.contains(db.name)) {
    std::string flight_key = "L" + db.name;
    ++tickets_[t].remaining;
    if (!join(flight_key, t)) {
      auto job = std::make_unique<Job>();
      job->kind = Job::Kind::kCollation;
      job->flight_key = std::move(flight_key);
      job->database = db.name;
      for (const conf::Shard& shard : db.shards) {
        job->shard_conninfos.emplace_back(shard.name, catalog::conninfoFor(shard.primary));
      }
      submit(std::move(job));
    }
  }
  Ticket& ticket = tickets_[t];
  if (failed) ticket.error = std::move(failed);
  if (ticket.remaining == 0) {
    if (ticket.error) {
      // Nothing is running for it: report the error at once (on the loop, but not from inside
      // the caller's routing), through a zero-delay completion of the usual path.
      ticket.remaining = 1;
      auto job = std::make_unique<Job>();
      job->kind = Job::Kind::kDirectoryWrite;  // never run: conn is null
      job->ticket = t;
      job->error = ticket.error;
      submit(std::move(job));
      return t;
    }
    tickets_.erase(t);
    return 0;
  }
  return t;
}

uint64_t RoutingLookups::moveKey(const conf::Database& db, const conf::ShardedTable& table,
                                 conf::KeyValue key, uint32_t shard, Done done) {
  const uint64_t t = newTicket(std::move(done));
  tickets_[t].remaining = 1;
  auto job = std::make_unique<Job>();
  job->kind = Job::Kind::kDirectoryWrite;
  job->ticket = t;
  job->cache_key = directoryKey(db, table, key);
  job->directory = table.directory->table;
  job->key_text = catalog::keyText(table.key_type, key);
  job->shard = shard;
  job->conn = std::make_unique<catalog::Connection>(
      catalog::conninfoFor(db.shards[table.directory->shard].primary));
  submit(std::move(job));
  return t;
}

void RoutingLookups::cancel(uint64_t ticket) {
  tickets_.erase(ticket);
}

void RoutingLookups::forgetDirectoryEntry(const std::string& cache_key) {
  directory_.erase(cache_key);
  ++generation_;
}

RoutingLookups::Stats RoutingLookups::stats() const {
  return Stats{queries_, directory_.size(), columns_.size()};
}

void RoutingLookups::submit(std::unique_ptr<Job> job) {
  if (job->kind == Job::Kind::kCollation) ++queries_;
  if (job->conn) {
    auto idle = idle_.find(job->conn->conninfo());
    if (idle != idle_.end() && !idle->second.empty()) {
      job->conn = std::move(idle->second.back());
      idle->second.pop_back();
    }
    ++queries_;
  }
  job->owner = this;
  job->generation = job->kind == Job::Kind::kCollation ? collations_generation_ : generation_;
  job->req.data = job.get();
  const int rc =
      uv_queue_work(loop_, &job->req, &RoutingLookups::runJob, &RoutingLookups::afterJob);
  if (rc != 0) {
    job->error = Error::make(sqlstate::kInternalError,
                             std::string("could not start a routing lookup: ") + uv_strerror(rc));
    finish(*job);
    return;
  }
  ++running_;
  (void)job.release();  // afterJob deletes it
}

// Thread pool: blocking libpq. Touches nothing but the job.
void RoutingLookups::runJob(uv_work_t* req) {
  Job& job = *static_cast<Job*>(req->data);
  if ((!job.conn && job.kind != Job::Kind::kCollation) || job.error) return;
  try {
    switch (job.kind) {
      case Job::Kind::kCollation: {
        auto r = readShardsCollation(job.database, job.shard_conninfos);
        if (r.ok()) {
          job.collation = std::move(r).value();
        } else {
          job.error = std::move(r).error();
        }
        break;
      }
      case Job::Kind::kColumns: {
        auto r = catalog::readColumnOrder(*job.conn, job.schema, job.table, job.search_path);
        if (r.ok()) {
          job.columns = std::move(r).value();
        } else {
          job.error = std::move(r).error();
        }
        break;
      }
      case Job::Kind::kDirectoryRead: {
        auto r = catalog::readDirectoryEntry(*job.conn, job.directory, job.key_text);
        if (r.ok()) {
          job.found = *r;
        } else {
          job.error = std::move(r).error();
        }
        break;
      }
      case Job::Kind::kDirectoryPlace: {
        auto r = catalog::placeDirectoryEntry(*job.conn, job.directory, job.key_text, job.shard);
        if (r.ok()) {
          job.found = *r;
        } else {
          job.error = std::move(r).error();
        }
        break;
      }
      case Job::Kind::kDirectoryWrite: {
        Status s = catalog::writeDirectoryEntry(*job.conn, job.directory, job.key_text, job.shard);
        if (!s.ok()) job.error = std::move(s).error();
        break;
      }
    }
  } catch (const std::exception& e) {
    job.error = Error::make(sqlstate::kInternalError, std::string("routing lookup: ") + e.what());
  }
}

// Loop thread.
void RoutingLookups::afterJob(uv_work_t* req, int status) {
  std::unique_ptr<Job> job(static_cast<Job*>(req->data));
  RoutingLookups& self = *job->owner;
  --self.running_;
  try {
    if (status == UV_ECANCELED && !job->error) {
      job->error = Error::make(sqlstate::kAdminShutdown, "routing lookup cancelled");
    }
    self.finish(*job);
    if (job->conn && job->conn->healthy()) {
      auto& idle = self.idle_[job->conn->conninfo()];
      if (idle.size() < kMaxIdleConnections) idle.push_back(std::move(job->conn));
    }
  } catch (const std::exception& e) {
    spdlog::error("event=lookup_failed error=\"{}\"", e.what());
  }
}

void RoutingLookups::finish(Job& job) {
  if (!job.error) {
    switch (job.kind) {
      case Job::Kind::kColumns:
        columns_.put(job.cache_key,
                     ColumnsEntry{std::move(job.columns), uv_now(loop_) + kColumnOrderTtlMs});
        break;
      case Job::Kind::kDirectoryRead:
      case Job::Kind::kDirectoryPlace:
        // An invalidation since the query started may have made the answer stale.
        if (job.generation == generation_) {
          const bool missing = !job.found;
          directory_.put(
              job.cache_key,
              DirectoryEntry{job.found, missing ? uv_now(loop_) + kMissingEntryTtlMs : 0});
        }
        break;
      case Job::Kind::kCollation:
        if (job.generation == collations_generation_) {
          collations_[job.database] = std::move(job.collation);
        }
        break;
      case Job::Kind::kDirectoryWrite:
        if (job.conn) {
          forgetDirectoryEntry(job.cache_key);
          if (broadcast_) {
            broadcast_(
                [key = job.cache_key](RoutingLookups& other) { other.forgetDirectoryEntry(key); });
          }
        }
        break;
    }
  } else if (job.conn || job.kind == Job::Kind::kCollation) {
    const std::string what =
        job.kind == Job::Kind::kCollation ? "collation of database " + job.database
        : job.kind == Job::Kind::kColumns
            ? "column order of " + catalog::quoteQualified(job.schema, job.table)
            : "key " + job.key_text + " in directory " + job.directory.display();
    spdlog::warn("event=routing_lookup_failed what=\"{}\" error=\"{}\"", what,
                 job.error->describe());
  }
  std::vector<std::pair<Done, std::optional<Error>>> ready;
  if (job.ticket != 0) settle(job.ticket, job.error, ready);
  if (!job.flight_key.empty()) {
    auto it = flights_.find(job.flight_key);
    if (it != flights_.end()) {
      std::vector<uint64_t> waiters = std::move(it->second);
      flights_.erase(it);
      for (uint64_t t : waiters) settle(t, job.error, ready);
    }
  }
  // Callbacks last: a session resumed here may route again and start new lookups.
  for (auto& [done, error] : ready) {
    if (done) done(error);
  }
}

void RoutingLookups::settle(uint64_t ticket, const std::optional<Error>& error,
                            std::vector<std::pair<Done, std::optional<Error>>>& ready) {
  auto it = tickets_.find(ticket);
  if (it == tickets_.end()) return;  // cancelled
  if (error && !it->second.error) it->second.error = error;
  if (it->second.remaining > 0) --it->second.remaining;
  if (it->second.remaining != 0) return;
  ready.emplace_back(std::move(it->second.done), std::move(it->second.error));
  tickets_.erase(it);
}

// ---- LookupWait ----

bool LookupWait::start(RoutingLookups& lookups, const planner::RouteDecision& decision,
                       std::function<void()> resume) {
  if (waiting()) return true;
  const std::string& signature = decision.reason;
  if (signature == last_signature_ && (last_error_ || resuming_)) {
    // The same lookups again right after they ended: they failed, or their answers did not get
    // the statement routed. Either way, routing again would not help.
    error_ = last_error_ ? std::move(*last_error_)
                         : Error::make(sqlstate::kInternalError,
                                       "routing lookups did not settle: " + decision.reason);
    last_error_.reset();
    last_signature_.clear();
    return false;
  }
  lookups_ = &lookups;
  const uint64_t ticket =
      lookups.request(decision, [this, resume = std::move(resume)](std::optional<Error> error) {
        ticket_ = 0;
        last_error_ = std::move(error);
        resuming_ = true;
        resume();
        resuming_ = false;
      });
  if (ticket == 0) {
    error_ =
        Error::make(sqlstate::kInternalError, "routing lookups did not settle: " + decision.reason);
    return false;
  }
  ticket_ = ticket;
  last_signature_ = signature;
  last_error_.reset();
  return true;
}

void LookupWait::startMoveKey(RoutingLookups& lookups, const conf::Database& db,
                              const conf::ShardedTable& table, conf::KeyValue key, uint32_t shard,
                              std::function<void(std::optional<Error>)> reply) {
  cancel();
  lookups_ = &lookups;
  ticket_ = lookups.moveKey(db, table, std::move(key), shard,
                            [this, reply = std::move(reply)](std::optional<Error> error) {
                              ticket_ = 0;
                              reply(std::move(error));
                            });
}

Error LookupWait::takeError() {
  Error e =
      error_ ? std::move(*error_) : Error::make(sqlstate::kInternalError, "routing lookup failed");
  error_.reset();
  return e;
}

void LookupWait::cancel() {
  if (ticket_ != 0 && lookups_ != nullptr) lookups_->cancel(ticket_);
  ticket_ = 0;
}

// ---- shardgate.move_key ----

namespace {

Error usage(std::string message) {
  return Error::make(sqlstate::kInvalidParameterValue, std::move(message), {},
                     "Call it as SELECT shardgate.move_key('table', 'key', shard), shard being a "
                     "0-based index or a shard name.");
}

}  // namespace

std::optional<Result<MoveKeyCall>> parseMoveKeyCall(const conf::Database& db,
                                                    std::string_view sql) {
  // Every simple query passes here: a cheap text check before any parse.
  if (!containsIgnoreCase(sql, "move_key")) return std::nullopt;
  auto parsed = parser::parse(sql);
  if (!parsed.ok() || (*parsed)->statementCount() != 1) return std::nullopt;
  const pg_query::Node& stmt = (*parsed)->statement(0);
  if (!stmt.has_select_stmt()) return std::nullopt;
  const pg_query::SelectStmt& select = stmt.select_stmt();
  if (select.target_list_size() != 1 || !select.target_list(0).has_res_target()) {
    return std::nullopt;
  }
  const pg_query::Node& value = select.target_list(0).res_target().val();
  if (!value.has_func_call()) return std::nullopt;
  const pg_query::FuncCall& call = value.func_call();
  if (parser::dottedName(call.funcname()) != "shardgate.move_key") return std::nullopt;
  // From here on it is a call of ours: a wrong one gets an error, never a shard.
  if (select.from_clause_size() != 0 || select.has_where_clause() || call.args_size() != 3) {
    return Result<MoveKeyCall>(
        usage("shardgate.move_key takes three arguments and nothing else in the statement"));
  }
  const auto table_name = parser::stringConstant(call.args(0));
  if (!table_name) return Result<MoveKeyCall>(usage("shardgate.move_key: the table is a string"));
  const conf::ShardedTable* table = nullptr;
  const auto dot = table_name->find('.');
  const std::string_view schema =
      dot == std::string_view::npos ? std::string_view() : table_name->substr(0, dot);
  const std::string_view name =
      dot == std::string_view::npos ? *table_name : table_name->substr(dot + 1);
  for (const conf::ShardedTable& t : db.sharded_tables) {
    if (t.strategy == conf::Strategy::kDirectory && t.directory && t.matches(schema, name)) {
      table = &t;
      break;
    }
  }
  if (table == nullptr) {
    return Result<MoveKeyCall>(
        Error::make("42P01", "table " + std::string(*table_name) + " is not sharded by directory",
                    {}, "shardgate.move_key moves keys of tables with strategy \"directory\"."));
  }
  MoveKeyCall out;
  out.table = table;
  std::string key_text;
  if (auto s = parser::stringConstant(call.args(1))) {
    key_text = std::string(*s);
  } else if (auto i = parser::integerValue(call.args(1))) {
    key_text = std::to_string(*i);
  } else {
    return Result<MoveKeyCall>(usage("shardgate.move_key: the key is a constant"));
  }
  auto key = conf::parseKeyText(table->key_type, key_text);
  if (!key.ok()) return Result<MoveKeyCall>(std::move(key).error());
  out.key = std::move(key).value();
  if (auto i = parser::integerValue(call.args(2))) {
    if (*i < 0 || static_cast<uint64_t>(*i) >= db.shards.size()) {
      return Result<MoveKeyCall>(usage("shardgate.move_key: there is no shard " +
                                       std::to_string(*i) + " (the shards are 0 to " +
                                       std::to_string(db.shards.size() - 1) + ")"));
    }
    out.shard = static_cast<uint32_t>(*i);
  } else if (auto s = parser::stringConstant(call.args(2))) {
    const auto it = std::find_if(db.shards.begin(), db.shards.end(),
                                 [&](const conf::Shard& sh) { return sh.name == *s; });
    if (it == db.shards.end()) {
      return Result<MoveKeyCall>(
          usage("shardgate.move_key: there is no shard named \"" + std::string(*s) + "\""));
    }
    out.shard = static_cast<uint32_t>(it - db.shards.begin());
  } else {
    return Result<MoveKeyCall>(usage("shardgate.move_key: the shard is an index or a name"));
  }
  return Result<MoveKeyCall>(std::move(out));
}

std::string_view searchPathStatement(
    const std::map<std::string, std::string, std::less<>>& unreported_settings) {
  auto it = unreported_settings.find("search_path");
  return it == unreported_settings.end() ? std::string_view() : std::string_view(it->second);
}

}  // namespace shardgate::proxy
