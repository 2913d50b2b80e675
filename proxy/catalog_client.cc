// Blocking libpq queries for the router's lookups (column order, directory rows).
#include "proxy/catalog_client.h"

#include <libpq-fe.h>

#include <charconv>
#include <memory>
#include <string_view>

#include "executor/collation.h"

namespace shardgate::proxy::catalog {
namespace {

struct ResultDeleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
using ResultPtr = std::unique_ptr<PGresult, ResultDeleter>;

std::string conninfoValue(std::string_view v) {
  std::string out = "'";
  for (char c : v) {
    if (c == '\'' || c == '\\') out += '\\';
    out += c;
  }
  return out + "'";
}

// The server's error as our Error, SQLSTATE and all (a missing table is 42P01, as Postgres says).
Error errorOf(PGconn* conn, const PGresult* res) {
  const auto field = [&](int code) -> std::string {
    const char* v = res ? PQresultErrorField(res, code) : nullptr;
    return v ? v : "";
  };
  std::string state = field(PG_DIAG_SQLSTATE);
  std::string message = field(PG_DIAG_MESSAGE_PRIMARY);
  if (message.empty()) {
    message = PQerrorMessage(conn);
    while (!message.empty() && message.back() == '\n') message.pop_back();
  }
  if (state.empty()) state = std::string(sqlstate::kConnectionFailure);
  return Error::make(state, std::move(message), field(PG_DIAG_MESSAGE_DETAIL),
                     field(PG_DIAG_MESSAGE_HINT));
}

// Runs one statement with text parameters; OK results (commands and rows) only.
Result<ResultPtr> exec(Connection& conn, const std::string& sql,
                       const std::vector<const char*>& params = {}) {
  PGconn* c = conn.raw();
  ResultPtr res(PQexecParams(c, sql.c_str(), static_cast<int>(params.size()), nullptr,
                             params.data(), nullptr, nullptr, 0));
  const ExecStatusType status = res ? PQresultStatus(res.get()) : PGRES_FATAL_ERROR;
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) return errorOf(c, res.get());
  return res;
}

Result<uint32_t> shardValue(const PGresult* res, const conf::TableName& table) {
  const char* text = PQgetvalue(res, 0, 0);
  const std::string_view v(text);
  uint32_t shard = 0;
  const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), shard);
  if (PQgetisnull(res, 0, 0) || ec != std::errc() || end != v.data() + v.size()) {
    return Error::make(sqlstate::kInternalError,
                       "directory table " + table.display() + " holds shard \"" + std::string(v) +
                           "\", which is not a shard index",
                       {}, "The directory's shard column holds 0-based shard indexes.");
  }
  return shard;
}

}  // namespace

std::string conninfoFor(const conf::ServerAddress& server) {
  std::string s = "host=" + conninfoValue(server.host) + " port=" + std::to_string(server.port) +
                  " dbname=" + conninfoValue(server.database) +
                  " user=" + conninfoValue(server.user) +
                  " application_name='shardgate lookups' connect_timeout=5"
                  " options='-c statement_timeout=5000'"
                  // statement_timeout is the server's: a network that fails mid-query must not
                  // hold the thread for the kernel's retransmission time (minutes).
                  " keepalives_idle=5 keepalives_interval=2 keepalives_count=3"
                  " tcp_user_timeout=10000";
  if (!server.password.empty()) s += " password=" + conninfoValue(server.password);
  s += " sslmode=" + std::string(conf::serverTlsModeName(server.tls_mode));
  if (const std::string& root = conf::libpqRootCertificate(server); !root.empty()) {
    s += " sslrootcert=" + conninfoValue(root);
  }
  return s;
}

Connection::~Connection() {
  if (conn_ != nullptr) PQfinish(conn_);
}

bool Connection::healthy() const {
  return conn_ != nullptr && PQstatus(conn_) == CONNECTION_OK &&
         PQtransactionStatus(conn_) == PQTRANS_IDLE;
}

Status Connection::ensureConnected() {
  if (healthy()) return {};
  if (conn_ != nullptr) PQfinish(conn_);
  conn_ = PQconnectdb(conninfo_.c_str());
  if (conn_ == nullptr) {
    return Error::make(sqlstate::kOutOfMemory, "out of memory connecting for a catalog lookup");
  }
  if (PQstatus(conn_) != CONNECTION_OK) {
    std::string message = PQerrorMessage(conn_);
    while (!message.empty() && message.back() == '\n') message.pop_back();
    PQfinish(conn_);
    conn_ = nullptr;
    return Error::make(sqlstate::kConnectionFailure,
                       "shardgate could not read the catalog: " + message);
  }
  return {};
}

std::string quoteQualified(std::string_view schema, std::string_view table) {
  const auto quote = [](std::string_view ident) {
    std::string out = "\"";
    for (char c : ident) {
      if (c == '"') out += '"';
      out += c;
    }
    return out + "\"";
  };
  return schema.empty() ? quote(table) : quote(schema) + "." + quote(table);
}

Result<std::string> readCollation(Connection& conn) {
  if (Status s = conn.ensureConnected(); !s.ok()) return std::move(s).error();
  // datlocprovider and daticulocale exist from Postgres 15 on: read through to_jsonb, so older
  // servers answer NULL (libc) instead of failing.
  auto res = exec(conn,
                  "SELECT datcollate, to_jsonb(d)->>'datlocprovider', to_jsonb(d)->>'daticulocale' "
                  "FROM pg_catalog.pg_database d WHERE datname = current_database()");
  if (!res.ok()) return std::move(res).error();
  if (PQntuples(res->get()) != 1 || PQnfields(res->get()) != 3) {
    return Error::make(sqlstate::kInternalError, "the current database is not in pg_database");
  }
  if (std::string_view(PQgetvalue(res->get(), 0, 1)) == "i") {
    return std::string(executor::kIcuCollationPrefix) + PQgetvalue(res->get(), 0, 2);
  }
  return std::string(PQgetvalue(res->get(), 0, 0));
}

Result<std::vector<std::string>> readColumnOrder(Connection& conn, std::string_view schema,
                                                 std::string_view table,
                                                 std::string_view search_path_statement) {
  if (Status s = conn.ensureConnected(); !s.ok()) return std::move(s).error();
  const bool scoped = !search_path_statement.empty();
  // The session's search_path for this query only: the transaction's rollback undoes the SET.
  if (scoped) {
    auto begun = exec(conn, "BEGIN");
    if (!begun.ok()) return std::move(begun).error();
    auto set = exec(conn, std::string(search_path_statement));
    if (!set.ok()) {
      (void)exec(conn, "ROLLBACK");
      return std::move(set).error();
    }
  }
  const std::string name = quoteQualified(schema, table);
  auto res = exec(conn,
                  "SELECT c.oid IS NOT NULL, a.attname FROM (SELECT to_regclass($1) AS oid) c "
                  "LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 "
                  "AND NOT a.attisdropped ORDER BY a.attnum",
                  {name.c_str()});
  if (scoped) (void)exec(conn, "ROLLBACK");
  if (!res.ok()) return std::move(res).error();
  PGresult* r = res->get();
  const int rows = PQntuples(r);
  if (rows == 0 || std::string_view(PQgetvalue(r, 0, 0)) != "t") {
    const std::string shown =
        schema.empty() ? std::string(table) : std::string(schema) + "." + std::string(table);
    return Error::make("42P01", "relation \"" + shown + "\" does not exist");
  }
  std::vector<std::string> columns;
  for (int i = 0; i < rows; ++i) {
    if (!PQgetisnull(r, i, 1)) columns.emplace_back(PQgetvalue(r, i, 1));
  }
  return columns;
}

Result<std::optional<uint32_t>> readDirectoryEntry(Connection& conn, const conf::TableName& table,
                                                   const std::string& key) {
  if (Status s = conn.ensureConnected(); !s.ok()) return std::move(s).error();
  auto res = exec(
      conn, "SELECT shard FROM " + quoteQualified(table.schema, table.name) + " WHERE key = $1",
      {key.c_str()});
  if (!res.ok()) return std::move(res).error();
  if (PQntuples(res->get()) == 0) return std::optional<uint32_t>();
  auto shard = shardValue(res->get(), table);
  if (!shard.ok()) return std::move(shard).error();
  return std::optional<uint32_t>(*shard);
}

Result<uint32_t> placeDirectoryEntry(Connection& conn, const conf::TableName& table,
                                     const std::string& key, uint32_t shard) {
  if (Status s = conn.ensureConnected(); !s.ok()) return std::move(s).error();
  const std::string shard_text = std::to_string(shard);
  // ON CONFLICT DO NOTHING, then read back: whoever inserted first wins, and everyone reads the
  // winner (the first statement may return no row when it lost the race).
  auto res = exec(conn,
                  "INSERT INTO " + quoteQualified(table.schema, table.name) +
                      " (key, shard) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                  {key.c_str(), shard_text.c_str()});
  if (!res.ok()) return std::move(res).error();
  auto now = readDirectoryEntry(conn, table, key);
  if (!now.ok()) return std::move(now).error();
  if (!*now) {
    return Error::make(sqlstate::kInternalError, "directory table " + table.display() +
                                                     " has no row for key " + key +
                                                     " right after it was recorded");
  }
  return **now;
}

Status writeDirectoryEntry(Connection& conn, const conf::TableName& table, const std::string& key,
                           uint32_t shard) {
  if (Status s = conn.ensureConnected(); !s.ok()) return std::move(s).error();
  const std::string shard_text = std::to_string(shard);
  auto res = exec(conn,
                  "INSERT INTO " + quoteQualified(table.schema, table.name) +
                      " (key, shard) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET shard = "
                      "excluded.shard",
                  {key.c_str(), shard_text.c_str()});
  if (!res.ok()) return std::move(res).error();
  return {};
}

std::string keyText(conf::KeyType type, const conf::KeyValue& key) {
  if (key.isInt()) return std::to_string(key.asInt());
  if (type == conf::KeyType::kUuid) return conf::formatUuid(key.asBytes());
  return key.asBytes();
}

}  // namespace shardgate::proxy::catalog
