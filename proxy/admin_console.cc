// AdminConsole: parses console commands and answers them as rows, from the config and from
// snapshots every worker takes of itself on its own loop.
#include "proxy/admin_console.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <chrono>
#include <ctime>
#include <map>
#include <optional>
#include <tuple>
#include <unordered_set>

#include "common/log.h"
#include "conf/config.h"
#include "proxy/admin_snapshot.h"
#include "proxy/client_session.h"
#include "proxy/proxy_server.h"
#include "proxy/version.h"
#include "proxy/wire/backend_messages.h"
#include "proxy/wire/framing.h"
#include "proxy/wire/protocol.h"
#include "proxy/worker.h"

namespace shardgate::proxy {

namespace {

constexpr uint64_t kPausePollMs = 50;
constexpr int32_t kTextOid = 25;
constexpr int32_t kInt8Oid = 20;

// A result set: RowDescription, DataRows, CommandComplete. Counters are int8, the rest text
// (PgBouncer's types), every value sent in text format.
class Rows {
 public:
  struct Column {
    std::string name;
    bool integer = false;
  };
  explicit Rows(std::vector<Column> columns) : columns_(std::move(columns)) {}

  using Value = std::optional<std::string>;
  void add(std::vector<Value> values) { rows_.push_back(std::move(values)); }

  std::string encode(std::string_view tag = "SHOW") const {
    std::string out;
    wire::RowDescription description;
    for (const Column& c : columns_) {
      wire::FieldDescription field;
      field.name = c.name;
      field.type_oid = c.integer ? kInt8Oid : kTextOid;
      field.type_size = c.integer ? 8 : -1;
      field.type_modifier = -1;
      description.fields.push_back(std::move(field));
    }
    description.encode(out);
    for (const auto& row : rows_) wire::DataRow{row}.encode(out);
    wire::CommandComplete{std::string(tag)}.encode(out);
    return out;
  }

 private:
  std::vector<Column> columns_;
  std::vector<std::vector<Value>> rows_;
};

Rows::Column text(std::string name) {
  return {std::move(name), false};
}
Rows::Column integer(std::string name) {
  return {std::move(name), true};
}
std::string num(uint64_t v) {
  return std::to_string(v);
}
std::string num(uint32_t v) {
  return std::to_string(v);
}
std::string num(int v) {
  return std::to_string(v);
}
std::string pointer(const void* p) {
  return p == nullptr ? std::string() : fmt::format("{}", p);
}

// A monotonic time (ms) as wall-clock UTC text, the way PgBouncer shows connect_time.
std::string wallTime(uint64_t monotonic_ms, uint64_t now_monotonic_ms) {
  auto now = std::chrono::system_clock::now();
  auto then =
      now - std::chrono::milliseconds(now_monotonic_ms - std::min(monotonic_ms, now_monotonic_ms));
  std::time_t seconds = std::chrono::system_clock::to_time_t(then);
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char buf[40];
  std::strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S UTC", &utc);
  return buf;
}

std::string upper(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

bool isSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

// Splits a command into words; a "double-quoted" word keeps its case and spaces.
std::optional<std::vector<std::string>> words(std::string_view s) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && isSpace(s[i])) ++i;
    if (i == s.size()) break;
    std::string word;
    if (s[i] == '"') {
      ++i;
      for (;;) {
        if (i >= s.size()) return std::nullopt;  // unterminated
        if (s[i] == '"') {
          if (i + 1 < s.size() && s[i + 1] == '"') {
            word += '"';
            i += 2;
            continue;
          }
          ++i;
          break;
        }
        word += s[i++];
      }
      out.push_back("\"" + word);  // marks it quoted: kept as written
      continue;
    }
    while (i < s.size() && !isSpace(s[i])) word += s[i++];
    out.push_back(std::move(word));
  }
  return out;
}

// A database name argument: quoted as written, else folded to lower case (like Postgres).
std::string identifier(const std::string& word) {
  if (!word.empty() && word[0] == '"') return word.substr(1);
  std::string out = word;
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

struct HelpEntry {
  const char* command;
  const char* description;
};
constexpr HelpEntry kHelp[] = {
    {"SHOW HELP", "this list"},
    {"SHOW VERSION", "shardgate's version"},
    {"SHOW CONFIG",
     "the [general] settings in force, their defaults, and whether RELOAD changes "
     "them"},
    {"SHOW DATABASES", "the configured databases: shards, pool size, paused"},
    {"SHOW SHARDS", "every shard server (primary and replicas) with its role and state"},
    {"SHOW POOLS",
     "one row per pool (database, user, shard, role): clients and server connections"},
    {"SHOW CLIENTS", "one row per client connection"},
    {"SHOW SERVERS", "one row per server connection"},
    {"SHOW STATS",
     "per database: transactions, queries, server logins and failures, clients and "
     "server connections"},
    {"SHOW LISTS", "counts of databases, users, pools, clients and servers"},
    {"RELOAD", "read the configuration file again (a bad file changes nothing)"},
    {"PAUSE [db]",
     "hold new transactions and new clients (of db, or all); returns once running transactions "
     "finished"},
    {"RESUME [db]", "let transactions and clients held by PAUSE or KILL run"},
    {"RECONNECT [db]",
     "close every server connection (of db, or all) when it is next released; new ones are "
     "opened as needed"},
    {"KILL [db]",
     "disconnect the clients of db (or of all databases) and close its server connections; new "
     "clients wait for RESUME"},
    {"KILL_CLIENT id", "disconnect one client (the id column of SHOW CLIENTS)"},
    {"DISABLE db", "refuse new clients of db; connected clients go on"},
    {"ENABLE db", "accept new clients of db again"},
    {"SHUTDOWN", "stop accepting clients, let open transactions finish, exit (as SIGTERM)"},
};

}  // namespace

AdminConsole::AdminConsole(Worker& worker, TcpConnection& client, uint64_t session_id,
                           std::string user)
    : worker_(worker),
      client_(client),
      session_id_(session_id),
      user_(std::move(user)),
      self_(std::make_shared<AdminConsole*>(this)) {}

AdminConsole::~AdminConsole() {
  *self_ = nullptr;  // answers still on their way find nobody
  if (pause_timer_ != nullptr) {
    uv_timer_stop(pause_timer_);
    uv_close(reinterpret_cast<uv_handle_t*>(pause_timer_),
             [](uv_handle_t* handle) { delete reinterpret_cast<uv_timer_t*>(handle); });
  }
}

void AdminConsole::start() {
  std::string& out = client_.outputBuffer();
  const std::pair<const char*, std::string> parameters[] = {
      {"server_version", std::string(kShardgateVersion) + "/shardgate"},
      {"server_encoding", "UTF8"},
      {"client_encoding", "UTF8"},
      {"DateStyle", "ISO"},
      {"TimeZone", "UTC"},
      {"integer_datetimes", "on"},
      {"standard_conforming_strings", "on"},
      {"is_superuser", "off"},
      {"session_authorization", user_},
  };
  for (const auto& [name, value] : parameters) wire::writeParameterStatus(out, name, value);
  wire::BackendKeyData{0, 0}.encode(out);  // nothing to cancel here
  wire::writeReadyForQuery(out, 'I');
  client_.scheduleFlush();
}

std::vector<Worker*> AdminConsole::allWorkers() const {
  ProxyServer& server = worker_.server();
  std::vector<Worker*> workers;
  for (size_t i = 0; i < server.workerCount(); ++i) workers.push_back(&server.worker(i));
  return workers;
}

size_t AdminConsole::onData(std::string_view data) {
  const uint32_t max_size = worker_.config().general.max_message_size;
  size_t used = 0;
  while (!busy_ && used < data.size()) {
    wire::FrameResult framed = wire::frameTyped(data.substr(used), max_size);
    if (framed.status == wire::FrameStatus::kNeedMore) break;
    if (framed.status == wire::FrameStatus::kInvalid) {
      std::string reply;
      wire::writeError(reply, framed.error);
      client_.send(reply);
      client_.closeAfterFlush();
      return data.size();
    }
    used += framed.frame.size;
    const char type = framed.frame.type;
    if (type == wire::fe::kTerminate) {
      client_.close();
      return data.size();
    }
    if (type == wire::fe::kQuery) {
      skipping_to_sync_ = false;
      std::string_view sql = framed.frame.payload;
      if (!sql.empty() && sql.back() == '\0') sql.remove_suffix(1);
      runCommand(sql);
      continue;
    }
    if (type == wire::fe::kSync) {
      skipping_to_sync_ = false;
      std::string ready;
      wire::writeReadyForQuery(ready, 'I');
      client_.send(ready);
      continue;
    }
    if (type == wire::fe::kFlush || skipping_to_sync_) continue;
    // Parse, Bind, Describe, Execute, Close, FunctionCall, CopyData...: one error, then wait
    // for the Sync that ends the batch, as Postgres does after an error.
    Error error = Error::make(sqlstate::kFeatureNotSupported,
                              "the admin console supports only the simple query protocol",
                              std::string("message type '") + type + "' is not accepted here",
                              "send the command as a simple Query (psql does; with psycopg use "
                              "autocommit and no parameters)");
    std::string reply;
    wire::writeError(reply, error);
    client_.send(reply);
    skipping_to_sync_ = true;
  }
  return used;
}

void AdminConsole::finish(std::string reply) {
  busy_ = false;
  wire::writeReadyForQuery(reply, 'I');
  client_.send(reply);
  client_.processPending();  // commands that arrived meanwhile
}

void AdminConsole::fail(std::string_view sqlstate, std::string message, std::string hint) {
  std::string reply;
  wire::writeError(reply, Error::make(sqlstate, std::move(message), {}, std::move(hint)));
  finish(std::move(reply));
}

void AdminConsole::runCommand(std::string_view sql) {
  // Surrounding blanks and trailing semicolons do not matter.
  while (!sql.empty() && (isSpace(sql.back()) || sql.back() == ';')) sql.remove_suffix(1);
  while (!sql.empty() && isSpace(sql.front())) sql.remove_prefix(1);
  busy_ = true;
  if (sql.empty()) {
    std::string reply;
    wire::EmptyQueryResponse{}.encode(reply);
    finish(std::move(reply));
    return;
  }
  spdlog::info("event=admin_command session={} user={} command=\"{}\"", session_id_, user_,
               sql.substr(0, 200));
  if (sql.find(';') != std::string_view::npos) {
    fail(sqlstate::kFeatureNotSupported, "the admin console runs one command per query",
         "send the commands one at a time");
    return;
  }
  auto parsed = words(sql);
  if (!parsed || parsed->empty()) {
    fail(sqlstate::kSyntaxError, "syntax error in admin command \"" + std::string(sql) + "\"",
         "SHOW HELP lists the commands");
    return;
  }
  const std::vector<std::string>& w = *parsed;
  const std::string verb = upper(w[0]);
  auto unknown = [&] {
    fail(sqlstate::kSyntaxError, "unrecognized admin command \"" + std::string(sql) + "\"",
         "SHOW HELP lists the commands");
  };
  if (verb == "SHOW") {
    if (w.size() != 2) {
      unknown();
      return;
    }
    const std::string what = upper(w[1]);
    if (what == "HELP") return showHelp();
    if (what == "VERSION") return showVersion();
    if (what == "CONFIG") return showConfig();
    if (what == "LISTS") return showLists();
    if (what == "DATABASES") return withSnapshots(&AdminConsole::showDatabases);
    if (what == "SHARDS") return withSnapshots(&AdminConsole::showShards);
    if (what == "POOLS") return withSnapshots(&AdminConsole::showPools);
    if (what == "CLIENTS") return withSnapshots(&AdminConsole::showClients);
    if (what == "SERVERS") return withSnapshots(&AdminConsole::showServers);
    if (what == "STATS") return withSnapshots(&AdminConsole::showStats);
    fail(sqlstate::kSyntaxError, "unrecognized SHOW item \"" + w[1] + "\"",
         "SHOW HELP lists the commands");
    return;
  }
  auto unknownDatabase = [&](const std::string& database) {
    if (worker_.config().findDatabase(database) != nullptr) return false;
    fail(sqlstate::kInvalidCatalogName, "database \"" + database + "\" does not exist",
         "SHOW DATABASES lists the databases");
    return true;
  };
  if ((verb == "PAUSE" || verb == "RESUME" || verb == "RECONNECT" || verb == "KILL") &&
      w.size() <= 2) {
    std::string database = w.size() == 2 ? identifier(w[1]) : std::string();
    if (w.size() == 2 && database.empty()) {
      // "" is no database, not every database (KILL "" would disconnect everyone), as Postgres
      // refuses it.
      fail(sqlstate::kSyntaxError, "zero-length delimited identifier",
           "name a database, or give none for every database");
      return;
    }
    if (!database.empty() && unknownDatabase(database)) return;
    if (verb == "RESUME" && !database.empty() && worker_.pausedAll()) {
      fail("55000", "shardgate is paused as a whole, not database \"" + database + "\"",
           "RESUME without a database resumes every database");
      return;
    }
    if (verb == "PAUSE") return pause(database);
    if (verb == "RESUME") return resume(database);
    if (verb == "RECONNECT") return reconnect(database);
    return kill(database);
  }
  if (verb == "DISABLE" || verb == "ENABLE") {
    if (w.size() != 2) {
      fail(sqlstate::kSyntaxError, verb + " needs the name of a database",
           "for example: " + verb + " app (SHOW DATABASES lists the databases)");
      return;
    }
    std::string database = identifier(w[1]);
    if (unknownDatabase(database)) return;
    return setDisabled(database, verb == "DISABLE");
  }
  if (verb == "KILL_CLIENT") {
    uint64_t id = 0;
    const std::string* arg = w.size() == 2 ? &w[1] : nullptr;
    auto parsed = arg ? std::from_chars(arg->data(), arg->data() + arg->size(), id)
                      : std::from_chars_result{nullptr, std::errc::invalid_argument};
    if (arg == nullptr || parsed.ec != std::errc() || parsed.ptr != arg->data() + arg->size()) {
      fail(sqlstate::kSyntaxError, "KILL_CLIENT takes the id of one client",
           "the id column of SHOW CLIENTS, for example: KILL_CLIENT 42");
      return;
    }
    if (id == session_id_) {
      fail(sqlstate::kInvalidParameterValue, "client " + w[1] + " is this console session",
           "disconnect instead");
      return;
    }
    return killClient(id);
  }
  if (verb == "RELOAD" && w.size() == 1) return reload();
  if (verb == "SHUTDOWN" && w.size() == 1) return shutdown();
  unknown();
}

// ---- answered from the config -----------------------------------------------------------------

void AdminConsole::showHelp() {
  Rows rows({text("command"), text("description")});
  for (const HelpEntry& e : kHelp) rows.add({e.command, e.description});
  finish(rows.encode());
}

void AdminConsole::showVersion() {
  Rows rows({text("version")});
  rows.add({"shardgate " + std::string(kShardgateVersion)});
  finish(rows.encode());
}

void AdminConsole::showConfig() {
  const conf::Config& config = worker_.config();
  const conf::General& g = config.general;
  const conf::General d;  // the defaults
  Rows rows({text("key"), text("value"), text("default"), text("changeable")});
  auto add = [&](const char* key, std::string value, std::string def, bool changeable) {
    rows.add({key, std::move(value), std::move(def), changeable ? "yes" : "no"});
  };
  add("config_file", config.source_path, "", false);
  add("listen_addr", g.listen_addr, d.listen_addr, false);
  add("port", num(uint32_t{g.port}), num(uint32_t{d.port}), false);
  add("unix_socket_dir", g.unix_socket_dir, d.unix_socket_dir, false);
  add("workers", num(g.workers), "0 (one per core)", false);
  add("pool_mode", std::string(conf::poolModeName(g.pool_mode)),
      std::string(conf::poolModeName(d.pool_mode)), true);
  add("max_client_conn", num(g.max_client_conn), num(d.max_client_conn), true);
  add("max_message_size", num(g.max_message_size), num(d.max_message_size), true);
  add("client_buffer_limit", num(g.client_buffer_limit), num(d.client_buffer_limit), true);
  add("connect_timeout", num(g.connect_timeout_ms), num(d.connect_timeout_ms), true);
  add("client_login_timeout", num(g.client_login_timeout_ms), num(d.client_login_timeout_ms), true);
  add("query_wait_timeout", num(g.query_wait_timeout_ms), num(d.query_wait_timeout_ms), true);
  add("deadlock_timeout", num(g.deadlock_timeout_ms), num(d.deadlock_timeout_ms), true);
  add("idle_server_timeout", num(g.idle_server_timeout_ms), num(d.idle_server_timeout_ms), true);
  add("server_lifetime", num(g.server_lifetime_ms), num(d.server_lifetime_ms), true);
  add("shutdown_timeout", num(g.shutdown_timeout_ms), num(d.shutdown_timeout_ms), true);
  add("default_pool_size", num(g.default_pool_size), num(d.default_pool_size), true);
  add("min_pool_size", num(g.min_pool_size), num(d.min_pool_size), true);
  add("metrics_port", num(uint32_t{g.metrics_port}), num(uint32_t{d.metrics_port}), false);
  add("log_level", g.log_level, d.log_level, true);
  add("log_format", std::string(conf::logFormatName(g.log_format)),
      std::string(conf::logFormatName(d.log_format)), true);
  add("slow_query_ms", num(g.slow_query_ms), num(d.slow_query_ms), true);
  add("slow_query_max_chars", num(g.slow_query_max_chars), num(d.slow_query_max_chars), true);
  add("log_parameters", g.log_parameters ? "true" : "false", d.log_parameters ? "true" : "false",
      true);
  add("server_check_interval_ms", num(g.server_check_interval_ms), num(d.server_check_interval_ms),
      true);
  add("table_stats_interval_ms", num(g.table_stats_interval_ms), num(d.table_stats_interval_ms),
      true);
  // TLS files: reloaded with the config (a renewed certificate serves new connections).
  add("client_tls_sslmode", std::string(conf::tlsModeName(g.client_tls_sslmode)),
      std::string(conf::tlsModeName(d.client_tls_sslmode)), true);
  add("client_tls_cert_file", g.client_tls_cert_file, d.client_tls_cert_file, true);
  add("client_tls_key_file", g.client_tls_key_file, d.client_tls_key_file, true);
  add("server_tls_sslmode", std::string(conf::serverTlsModeName(g.server_tls_sslmode)),
      std::string(conf::serverTlsModeName(d.server_tls_sslmode)), true);
  add("server_tls_ca_file", g.server_tls_ca_file, d.server_tls_ca_file, true);
  finish(rows.encode());
}

// ---- answered from every worker's snapshot ----------------------------------------------------

namespace {

// takeSnapshot, and what only the console's own commands change: DISABLE, and the connections
// RECONNECT or KILL will close when released.
WorkerSnapshot consoleSnapshot(Worker& worker) {
  WorkerSnapshot snapshot = takeSnapshot(worker);
  snapshot.disabled_databases = worker.disabledDatabases();
  std::unordered_set<const void*> closing;
  for (const auto& [key, pool] : worker.pools()) {
    for (const backends::ServerConnection* server : pool->connections()) {
      if (pool->closeNeeded(server)) closing.insert(server);
    }
  }
  for (PoolSnapshot& pool : snapshot.pools) {
    for (ServerSnapshot& server : pool.servers) {
      server.close_needed = server.draining || closing.count(server.ptr) > 0;
    }
  }
  for (ServerSnapshot& server : snapshot.draining) server.close_needed = true;
  return snapshot;
}

}  // namespace

void AdminConsole::withSnapshots(void (AdminConsole::*show)(const std::vector<WorkerSnapshot>&)) {
  std::weak_ptr<AdminConsole*> self = self_;
  onEveryWorker<WorkerSnapshot>(
      allWorkers(), worker_, [](Worker& w) { return consoleSnapshot(w); },
      [self, show](std::vector<WorkerSnapshot> snapshots) {
        auto alive = self.lock();
        if (alive && *alive != nullptr) ((*alive)->*show)(snapshots);
      });
}

namespace {

// A pool's identity across workers.
using PoolKey = std::tuple<std::string, std::string, uint32_t, std::string>;

struct PoolTotals {
  const PoolSnapshot* first = nullptr;
  uint32_t cl_active = 0, cl_waiting = 0, sv_active = 0, sv_idle = 0, sv_login = 0;
  uint64_t maxwait_ms = 0;
  uint64_t logins = 0, login_failures = 0;
  bool login_failed = false;
};

std::map<PoolKey, PoolTotals> poolTotals(const std::vector<WorkerSnapshot>& snapshots) {
  std::map<PoolKey, PoolTotals> totals;
  for (const WorkerSnapshot& s : snapshots) {
    for (const PoolSnapshot& p : s.pools) {
      PoolTotals& t = totals[PoolKey{p.database, p.user, p.shard_index, p.role}];
      if (t.first == nullptr) t.first = &p;
      t.cl_active += p.clients_active;
      t.cl_waiting += p.stats.waiting_clients;
      t.sv_active += p.stats.active;
      t.sv_idle += p.stats.idle;
      t.sv_login += p.stats.connecting;
      t.logins += p.stats.connections_opened;
      t.login_failures += p.stats.connect_failures;
      t.login_failed |= p.last_login_failed;
      if (p.oldest_wait_started_ms != 0 && s.now_ms > p.oldest_wait_started_ms) {
        t.maxwait_ms = std::max(t.maxwait_ms, s.now_ms - p.oldest_wait_started_ms);
      }
    }
  }
  return totals;
}

bool paused(const std::vector<WorkerSnapshot>& snapshots, const std::string& database) {
  if (snapshots.empty()) return false;
  for (const std::string& p : snapshots.front().paused_databases) {
    if (p == "*" || p == database) return true;
  }
  return false;
}

bool disabled(const std::vector<WorkerSnapshot>& snapshots, const std::string& database) {
  if (snapshots.empty()) return false;
  const std::vector<std::string>& names = snapshots.front().disabled_databases;
  return std::find(names.begin(), names.end(), database) != names.end();
}

}  // namespace

void AdminConsole::showDatabases(const std::vector<WorkerSnapshot>& snapshots) {
  const conf::Config& config = worker_.config();
  auto totals = poolTotals(snapshots);
  Rows rows({text("name"), integer("shards"), integer("replicas"), integer("pool_size"),
             integer("min_pool_size"), text("pool_mode"), integer("current_connections"),
             integer("paused"), integer("disabled"), text("default_shard"), text("read_preference"),
             integer("sharded_tables"), integer("reference_tables")});
  for (const conf::Database& db : config.databases) {
    uint64_t replicas = 0;
    for (const conf::Shard& shard : db.shards) replicas += shard.replicas.size();
    uint32_t connections = 0;
    for (const auto& [key, t] : totals) {
      if (std::get<0>(key) == db.name) connections += t.sv_active + t.sv_idle + t.sv_login;
    }
    uint32_t pool_size = db.pool_size ? *db.pool_size : config.general.default_pool_size;
    std::string default_shard =
        db.default_shard < db.shards.size() ? db.shards[db.default_shard].name : "";
    rows.add({db.name, num(uint64_t{db.shards.size()}), num(replicas), num(pool_size),
              num(config.general.min_pool_size),
              std::string(conf::poolModeName(config.general.pool_mode)), num(connections),
              paused(snapshots, db.name) ? "1" : "0", disabled(snapshots, db.name) ? "1" : "0",
              default_shard, std::string(conf::readPreferenceName(db.read_preference)),
              num(uint64_t{db.sharded_tables.size()}), num(uint64_t{db.reference_tables.size()})});
  }
  finish(rows.encode());
}

void AdminConsole::showShards(const std::vector<WorkerSnapshot>& snapshots) {
  const conf::Config& config = worker_.config();
  auto totals = poolTotals(snapshots);
  Rows rows({text("database"), text("shard"), integer("index"), text("role"), text("host"),
             integer("port"), text("dbname"), text("state"), integer("sv_active"),
             integer("sv_idle"), integer("sv_login")});
  for (const conf::Database& db : config.databases) {
    for (uint32_t i = 0; i < db.shards.size(); ++i) {
      const conf::Shard& shard = db.shards[i];
      for (int replica = -1; replica < static_cast<int>(shard.replicas.size()); ++replica) {
        const conf::ServerAddress& server = replica < 0 ? shard.primary : shard.replicas[replica];
        std::string role = replica < 0 ? "primary" : "replica" + std::to_string(replica);
        uint32_t active = 0, idle = 0, login = 0;
        bool failed = false;
        for (const auto& [key, t] : totals) {
          if (std::get<0>(key) != db.name || std::get<2>(key) != i || std::get<3>(key) != role) {
            continue;
          }
          active += t.sv_active;
          idle += t.sv_idle;
          login += t.sv_login;
          failed |= t.login_failed;
        }
        // up: connections are open; down: the last login attempt failed and none are open;
        // unknown: no connection has been needed yet.
        const char* state = active + idle > 0 ? "up" : failed ? "down" : "unknown";
        rows.add({db.name, shard.name, num(i), replica < 0 ? "primary" : "replica", server.host,
                  num(uint32_t{server.port}), server.database, state, num(active), num(idle),
                  num(login)});
      }
    }
  }
  finish(rows.encode());
}

void AdminConsole::showPools(const std::vector<WorkerSnapshot>& snapshots) {
  const conf::Config& config = worker_.config();
  Rows rows({text("database"), text("user"), text("shard"), text("role"), integer("cl_active"),
             integer("cl_waiting"), integer("sv_active"), integer("sv_idle"), integer("sv_used"),
             integer("sv_tested"), integer("sv_login"), integer("maxwait"), integer("maxwait_us"),
             text("pool_mode")});
  for (const auto& [key, t] : poolTotals(snapshots)) {
    rows.add({std::get<0>(key), std::get<1>(key), t.first->shard, std::get<3>(key),
              num(t.cl_active), num(t.cl_waiting), num(t.sv_active), num(t.sv_idle), "0", "0",
              num(t.sv_login), num(t.maxwait_ms / 1000), num((t.maxwait_ms % 1000) * 1000),
              std::string(conf::poolModeName(config.general.pool_mode))});
  }
  finish(rows.encode());
}

void AdminConsole::showClients(const std::vector<WorkerSnapshot>& snapshots) {
  Rows rows({text("type"),
             text("user"),
             text("database"),
             text("state"),
             text("addr"),
             integer("port"),
             text("local_addr"),
             integer("local_port"),
             text("connect_time"),
             integer("wait"),
             integer("wait_us"),
             integer("close_needed"),
             text("ptr"),
             text("link"),
             text("tls"),
             text("application_name"),
             integer("prepared_statements"),
             integer("id"),
             integer("worker"),
             text("shard"),
             text("in_transaction")});
  for (const WorkerSnapshot& s : snapshots) {
    for (const ClientSnapshot& c : s.clients) {
      const uint64_t waited_ms = c.waiting_since_ms != 0 && s.now_ms > c.waiting_since_ms
                                     ? s.now_ms - c.waiting_since_ms
                                     : 0;
      rows.add({"C", c.user, c.database, c.state, c.addr, num(c.port), c.local_addr,
                num(c.local_port), wallTime(c.connected_at_ms, s.now_ms),
                // PgBouncer's split: whole seconds, then the microseconds past them.
                num(waited_ms / 1000), num(waited_ms % 1000 * 1000), "0", pointer(c.ptr),
                pointer(c.link), c.tls, c.application_name, num(uint64_t{c.prepared_statements}),
                num(c.id), num(s.worker), c.shard, c.in_transaction ? "yes" : "no"});
    }
  }
  finish(rows.encode());
}

void AdminConsole::showServers(const std::vector<WorkerSnapshot>& snapshots) {
  Rows rows({text("type"),
             text("user"),
             text("database"),
             text("state"),
             text("addr"),
             integer("port"),
             text("local_addr"),
             integer("local_port"),
             text("connect_time"),
             text("request_time"),
             integer("wait"),
             integer("wait_us"),
             integer("close_needed"),
             text("ptr"),
             text("link"),
             integer("remote_pid"),
             text("tls"),
             text("application_name"),
             integer("prepared_statements"),
             text("shard"),
             text("role"),
             integer("worker")});
  auto add = [&](const WorkerSnapshot& s, const ServerSnapshot& server, const std::string& user,
                 const std::string& database, const std::string& shard, const std::string& role) {
    rows.add({"S",
              user,
              database,
              server.state,
              server.addr,
              num(server.port),
              server.local_addr,
              num(server.local_port),
              wallTime(server.created_at_ms, s.now_ms),
              wallTime(server.last_used_at_ms, s.now_ms),
              "0",
              "0",
              server.close_needed || server.draining ? "1" : "0",
              pointer(server.ptr),
              pointer(server.link),
              num(server.backend_pid),
              server.tls,
              "",
              num(uint64_t{server.prepared_statements}),
              shard,
              role,
              num(s.worker)});
  };
  for (const WorkerSnapshot& s : snapshots) {
    for (const PoolSnapshot& p : s.pools) {
      for (const ServerSnapshot& server : p.servers)
        add(s, server, p.user, p.database, p.shard, p.role);
    }
    for (const ServerSnapshot& server : s.draining) {
      // Only the label is left of a replaced pool: database/shard/role.
      const std::string& label = server.pool_label;
      size_t first = label.find('/'), last = label.rfind('/');
      bool split = first != std::string::npos && last > first;
      add(s, server, "", split ? label.substr(0, first) : label,
          split ? label.substr(first + 1, last - first - 1) : "",
          split ? label.substr(last + 1) : "");
    }
  }
  finish(rows.encode());
}

void AdminConsole::showStats(const std::vector<WorkerSnapshot>& snapshots) {
  const conf::Config& config = worker_.config();
  auto totals = poolTotals(snapshots);
  Rows rows({text("database"), integer("total_xact_count"), integer("total_query_count"),
             integer("total_server_logins"), integer("total_server_login_failures"),
             integer("cl_active"), integer("cl_waiting"), integer("cl_idle"), integer("sv_active"),
             integer("sv_idle")});
  for (const conf::Database& db : config.databases) {
    uint64_t logins = 0, failures = 0;
    uint32_t sv_active = 0, sv_idle = 0;
    for (const auto& [key, t] : totals) {
      if (std::get<0>(key) != db.name) continue;
      logins += t.logins;
      failures += t.login_failures;
      sv_active += t.sv_active;
      sv_idle += t.sv_idle;
    }
    uint32_t active = 0, waiting = 0, idle = 0;
    for (const WorkerSnapshot& s : snapshots) {
      for (const ClientSnapshot& c : s.clients) {
        if (c.database != db.name) continue;
        if (c.state == "active") ++active;
        if (c.state == "waiting" || c.state == "paused") ++waiting;
        if (c.state == "idle") ++idle;
      }
    }
    uint64_t transactions = 0, queries = 0;
    for (const WorkerSnapshot& s : snapshots) {
      if (auto it = s.transactions.find(db.name); it != s.transactions.end()) {
        transactions += it->second;
      }
      if (auto it = s.queries.find(db.name); it != s.queries.end()) queries += it->second;
    }
    rows.add({db.name, num(transactions), num(queries), num(logins), num(failures), num(active),
              num(waiting), num(idle), num(sv_active), num(sv_idle)});
  }
  finish(rows.encode());
}

void AdminConsole::showLists() {
  withSnapshots(&AdminConsole::listsFrom);
}

void AdminConsole::listsFrom(const std::vector<WorkerSnapshot>& snapshots) {
  const conf::Config& config = worker_.config();
  uint64_t pools = poolTotals(snapshots).size();
  uint64_t used_clients = 0, login_clients = 0, used_servers = 0, free_servers = 0,
           login_servers = 0, draining_servers = 0;
  for (const WorkerSnapshot& s : snapshots) {
    for (const ClientSnapshot& c : s.clients) {
      if (c.state == "login") {
        ++login_clients;
      } else {
        ++used_clients;
      }
    }
    for (const PoolSnapshot& p : s.pools) {
      used_servers += p.stats.active;
      free_servers += p.stats.idle;
      login_servers += p.stats.connecting;
    }
    draining_servers += s.draining.size();
  }
  Rows rows({text("list"), integer("items")});
  rows.add({"databases", num(uint64_t{config.databases.size()})});
  rows.add({"users", num(uint64_t{config.users.size()})});
  rows.add({"pools", num(pools)});
  rows.add({"used_clients", num(used_clients)});
  rows.add({"login_clients", num(login_clients)});
  rows.add({"used_servers", num(used_servers)});
  rows.add({"free_servers", num(free_servers)});
  rows.add({"login_servers", num(login_servers)});
  rows.add({"draining_servers", num(draining_servers)});
  finish(rows.encode());
}

// ---- control ----------------------------------------------------------------------------------

void AdminConsole::reload() {
  auto reloaded = worker_.server().reload();
  if (!reloaded.ok()) {
    Error e = reloaded.error();
    e.severity = "ERROR";  // the console stays; the old config stays in force
    e.hint = "the configuration in force is unchanged; fix the file and RELOAD again";
    std::string reply;
    wire::writeError(reply, e);
    finish(std::move(reply));
    return;
  }
  // Each worker applies the new config from its task queue; a no-op task queued behind it tells
  // when every worker has switched, so what the console shows next is the new config.
  std::weak_ptr<AdminConsole*> self = self_;
  onEveryWorker<int>(
      allWorkers(), worker_, [](Worker&) { return 0; },
      [self](std::vector<int>) {
        auto alive = self.lock();
        if (!alive || *alive == nullptr) return;
        std::string reply;
        wire::CommandComplete{"RELOAD"}.encode(reply);
        (*alive)->finish(std::move(reply));
      });
}

void AdminConsole::pause(const std::string& database) {
  std::weak_ptr<AdminConsole*> self = self_;
  onEveryWorker<int>(
      allWorkers(), worker_,
      [database](Worker& w) {
        w.pauseDatabase(database);
        return 0;
      },
      [self, database](std::vector<int>) {
        auto alive = self.lock();
        if (alive && *alive != nullptr) (*alive)->checkPaused(database);
      });
  spdlog::info("event=pause session={} database={}", session_id_,
               database.empty() ? "*" : database);
}

// PAUSE returns once no session of the database has a transaction open or a query running.
void AdminConsole::checkPaused(const std::string& database) {
  std::weak_ptr<AdminConsole*> self = self_;
  onEveryWorker<uint32_t>(
      allWorkers(), worker_,
      [database](Worker& w) {
        uint32_t running = 0;
        for (const auto& [id, session] : w.sessions()) {
          if (session->adminConsole() || session->closing()) continue;
          if (!database.empty() && session->databaseName() != database) continue;
          if (!session->idle()) ++running;
        }
        return running;
      },
      [self, database](std::vector<uint32_t> counts) {
        auto alive = self.lock();
        if (!alive || *alive == nullptr) return;
        AdminConsole* console = *alive;
        uint64_t running = 0;
        for (uint32_t c : counts) running += c;
        if (running == 0) {
          spdlog::info("event=paused session={} database={}", console->session_id_,
                       database.empty() ? "*" : database);
          std::string reply;
          wire::CommandComplete{"PAUSE"}.encode(reply);
          console->finish(std::move(reply));
          return;
        }
        if (console->pause_timer_ == nullptr) {
          console->pause_timer_ = new uv_timer_t;
          uv_timer_init(console->worker_.context().loop(), console->pause_timer_);
        }
        console->pause_database_ = database;
        console->pause_timer_->data = console;
        uv_timer_start(
            console->pause_timer_,
            [](uv_timer_t* timer) {
              auto* c = static_cast<AdminConsole*>(timer->data);
              c->checkPaused(c->pause_database_);
            },
            kPausePollMs, 0);
      });
}

void AdminConsole::resume(const std::string& database) {
  std::weak_ptr<AdminConsole*> self = self_;
  spdlog::info("event=resume session={} database={}", session_id_,
               database.empty() ? "*" : database);
  onEveryWorker<int>(
      allWorkers(), worker_,
      [database](Worker& w) {
        w.resumeDatabase(database);
        return 0;
      },
      [self](std::vector<int>) {
        auto alive = self.lock();
        if (!alive || *alive == nullptr) return;
        std::string reply;
        wire::CommandComplete{"RESUME"}.encode(reply);
        (*alive)->finish(std::move(reply));
      });
}

void AdminConsole::onEveryWorkerThenAnswer(std::function<void(Worker&)> each, std::string tag) {
  std::weak_ptr<AdminConsole*> self = self_;
  onEveryWorker<int>(
      allWorkers(), worker_,
      [each = std::move(each)](Worker& w) {
        each(w);
        return 0;
      },
      [self, tag = std::move(tag)](std::vector<int>) {
        auto alive = self.lock();
        if (!alive || *alive == nullptr) return;
        std::string reply;
        wire::CommandComplete{tag}.encode(reply);
        (*alive)->finish(std::move(reply));
      });
}

// RECONNECT answers once every worker marked its connections; they close as they are released
// (PgBouncer's RECONNECT does not wait either: its WAIT_CLOSE does).
void AdminConsole::reconnect(const std::string& database) {
  spdlog::info("event=reconnect session={} database={}", session_id_,
               database.empty() ? "*" : database);
  onEveryWorkerThenAnswer([database](Worker& w) { w.reconnectDatabase(database); }, "RECONNECT");
}

// KILL pauses the database as well: PgBouncer's new clients of a killed database wait for RESUME.
void AdminConsole::kill(const std::string& database) {
  std::string command = database.empty() ? "KILL" : "KILL " + database;
  Error why =
      Error::fatal(sqlstate::kAdminShutdown, "terminating connection due to administrator command",
                   "the shardgate admin console ran " + command);
  std::weak_ptr<AdminConsole*> self = self_;
  uint64_t session = session_id_;
  onEveryWorker<uint32_t>(
      allWorkers(), worker_, [database, why](Worker& w) { return w.killDatabase(database, why); },
      [self, session, database](std::vector<uint32_t> counts) {
        uint64_t killed = 0;
        for (uint32_t c : counts) killed += c;
        spdlog::info("event=kill session={} database={} clients_killed={}", session,
                     database.empty() ? "*" : database, killed);
        auto alive = self.lock();
        if (!alive || *alive == nullptr) return;
        std::string reply;
        wire::CommandComplete{"KILL"}.encode(reply);
        (*alive)->finish(std::move(reply));
      });
}

void AdminConsole::killClient(uint64_t id) {
  Error why =
      Error::fatal(sqlstate::kAdminShutdown, "terminating connection due to administrator command",
                   "the shardgate admin console ran KILL_CLIENT " + std::to_string(id));
  std::weak_ptr<AdminConsole*> self = self_;
  uint64_t session = session_id_;
  onEveryWorker<int>(
      allWorkers(), worker_, [id, why](Worker& w) { return w.killSession(id, why) ? 1 : 0; },
      [self, session, id](std::vector<int> found) {
        bool killed = std::find(found.begin(), found.end(), 1) != found.end();
        spdlog::info("event=kill_client session={} client={} found={}", session, id, killed);
        auto alive = self.lock();
        if (!alive || *alive == nullptr) return;
        if (!killed) {
          (*alive)->fail(sqlstate::kUndefinedObject,
                         "client " + std::to_string(id) + " does not exist",
                         "SHOW CLIENTS lists the clients and their ids");
          return;
        }
        std::string reply;
        wire::CommandComplete{"KILL_CLIENT"}.encode(reply);
        (*alive)->finish(std::move(reply));
      });
}

void AdminConsole::setDisabled(const std::string& database, bool disable) {
  spdlog::info("event={} session={} database={}", disable ? "disable" : "enable", session_id_,
               database);
  onEveryWorkerThenAnswer(
      [database, disable](Worker& w) {
        if (disable) {
          w.disableDatabase(database);
        } else {
          w.enableDatabase(database);
        }
      },
      disable ? "DISABLE" : "ENABLE");
}

void AdminConsole::shutdown() {
  spdlog::info("event=shutdown_requested session={} user={}", session_id_, user_);
  std::string reply;
  wire::CommandComplete{"SHUTDOWN"}.encode(reply);
  finish(std::move(reply));
  worker_.server().requestShutdown();
}

}  // namespace shardgate::proxy
