// ServerProbe: blocking libpq checks on their own thread, never on a worker's loop.
#include "proxy/server_probe.h"

#include <libpq-fe.h>

#include <chrono>
#include <memory>

#include "common/log.h"

namespace shardgate::proxy {

namespace {

// libpq's smallest connect_timeout; a probe of a dead server must not hold up the others long.
constexpr const char* kProbeConnectTimeoutSeconds = "2";
// Bounds the exact count(*) of a small table (and anything else a probe runs).
constexpr const char* kProbeOptions = "-c statement_timeout=10000";
// Below this many rows (by the planner's estimate) a table is counted exactly: cheap, and exact
// numbers for small tables are what tests and skew checks of new tables look at.
constexpr double kExactCountBelowRows = 10000;

struct PgConnDeleter {
  void operator()(PGconn* conn) const { PQfinish(conn); }
};
using PgConn = std::unique_ptr<PGconn, PgConnDeleter>;
struct PgResultDeleter {
  void operator()(PGresult* result) const { PQclear(result); }
};
using PgResult = std::unique_ptr<PGresult, PgResultDeleter>;

PgConn connect(const conf::ServerAddress& address) {
  std::string port = std::to_string(address.port);
  std::string sslmode(conf::serverTlsModeName(address.tls_mode));
  // libpq ignores an empty value: no CA file, as in shardgate's own connections.
  const char* keys[] = {"host",
                        "port",
                        "dbname",
                        "user",
                        "password",
                        "options",
                        "connect_timeout",
                        "application_name",
                        "sslmode",
                        "sslrootcert",
                        nullptr};
  const char* values[] = {address.host.c_str(),
                          port.c_str(),
                          address.database.c_str(),
                          address.user.c_str(),
                          address.password.c_str(),
                          kProbeOptions,
                          kProbeConnectTimeoutSeconds,
                          "shardgate_probe",
                          sslmode.c_str(),
                          conf::libpqRootCertificate(address).c_str(),
                          nullptr};
  PgConn conn(PQconnectdbParams(keys, values, 0));
  if (conn && PQstatus(conn.get()) != CONNECTION_OK) {
    spdlog::debug("event=probe_connect_failed server={}:{} error=\"{}\"", address.host,
                  address.port, PQerrorMessage(conn.get()));
    return nullptr;
  }
  return conn;
}

bool selectOne(PGconn* conn) {
  PgResult result(PQexec(conn, "SELECT 1"));
  return result && PQresultStatus(result.get()) == PGRES_TUPLES_OK;
}

std::string roleName(int replica) {
  return replica < 0 ? "primary" : "replica" + std::to_string(replica);
}

// The table's rows and total size on one shard; nullopt if it is not there (or the query failed).
std::optional<std::pair<int64_t, int64_t>> tableStats(PGconn* conn,
                                                      const conf::ShardedTable& table) {
  // The name as a regclass literal: identifiers quoted by libpq, resolved by the server.
  auto quote = [&](const std::string& identifier) {
    char* quoted = PQescapeIdentifier(conn, identifier.c_str(), identifier.size());
    std::string out = quoted ? quoted : "";
    PQfreemem(quoted);
    return out;
  };
  std::string name = quote(table.name);
  if (name.empty()) return std::nullopt;
  if (!table.schema.empty()) name = quote(table.schema) + "." + name;
  const char* params[] = {name.c_str()};
  PgResult result(PQexecParams(conn,
                               "SELECT c.reltuples::float8, pg_total_relation_size(c.oid) "
                               "FROM pg_class c WHERE c.oid = to_regclass($1)",
                               1, nullptr, params, nullptr, nullptr, 0));
  if (!result || PQresultStatus(result.get()) != PGRES_TUPLES_OK || PQntuples(result.get()) != 1) {
    return std::nullopt;
  }
  double estimate = std::strtod(PQgetvalue(result.get(), 0, 0), nullptr);
  int64_t bytes = std::strtoll(PQgetvalue(result.get(), 0, 1), nullptr, 10);
  int64_t rows = static_cast<int64_t>(estimate);
  // reltuples is -1 until the table is first vacuumed or analysed.
  if (estimate < kExactCountBelowRows) {
    std::string count_sql = "SELECT count(*) FROM " + name;
    PgResult counted(PQexec(conn, count_sql.c_str()));
    if (!counted || PQresultStatus(counted.get()) != PGRES_TUPLES_OK) return std::nullopt;
    rows = std::strtoll(PQgetvalue(counted.get(), 0, 0), nullptr, 10);
  }
  return std::make_pair(rows, bytes);
}

}  // namespace

ServerProbe::ServerProbe(std::function<conf::ConfigPtr()> config) : config_(std::move(config)) {}

ServerProbe::~ServerProbe() {
  stop();
}

void ServerProbe::start() {
  thread_ = std::thread([this] { run(); });
}

void ServerProbe::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

ProbeResults ServerProbe::results() const {
  std::lock_guard lock(mutex_);
  return results_;
}

void ServerProbe::run() {
  using Clock = std::chrono::steady_clock;
  Clock::time_point next_servers = Clock::now();
  Clock::time_point next_tables = Clock::now();
  for (;;) {
    {
      std::unique_lock lock(mutex_);
      wake_.wait_until(lock, std::min(next_servers, next_tables), [&] { return stopping_; });
      if (stopping_) return;
    }
    conf::ConfigPtr config = config_();
    const conf::General& g = config->general;
    Clock::time_point now = Clock::now();
    if (now >= next_servers) {
      checkServers(*config);
      next_servers = Clock::now() + std::chrono::milliseconds(g.server_check_interval_ms);
    }
    if (now >= next_tables) {
      readTableStats(*config);
      next_tables = Clock::now() + std::chrono::milliseconds(g.table_stats_interval_ms);
    }
  }
}

void ServerProbe::checkServers(const conf::Config& config) {
  std::map<std::array<std::string, 3>, int> up;
  for (const conf::Database& db : config.databases) {
    for (const conf::Shard& shard : db.shards) {
      for (int replica = -1; replica < static_cast<int>(shard.replicas.size()); ++replica) {
        {
          std::lock_guard lock(mutex_);
          if (stopping_) return;
        }
        const conf::ServerAddress& address = replica < 0 ? shard.primary : shard.replicas[replica];
        PgConn conn = connect(address);
        bool ok = conn && selectOne(conn.get());
        up[{db.name, shard.name, roleName(replica)}] = ok ? 1 : 0;
      }
    }
  }
  std::lock_guard lock(mutex_);
  results_.server_up = std::move(up);  // servers a reload removed leave with the old map
}

void ServerProbe::readTableStats(const conf::Config& config) {
  std::map<std::array<std::string, 3>, std::pair<int64_t, int64_t>> tables;
  for (const conf::Database& db : config.databases) {
    if (db.sharded_tables.empty()) continue;
    for (const conf::Shard& shard : db.shards) {
      {
        std::lock_guard lock(mutex_);
        if (stopping_) return;
      }
      PgConn conn = connect(shard.primary);
      if (!conn) continue;  // shardgate_server_up tells that story
      for (const conf::ShardedTable& table : db.sharded_tables) {
        auto stats = tableStats(conn.get(), table);
        if (stats) tables[{db.name, table.display(), shard.name}] = *stats;
      }
    }
  }
  std::lock_guard lock(mutex_);
  results_.tables = std::move(tables);
}

}  // namespace shardgate::proxy
