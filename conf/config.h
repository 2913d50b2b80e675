// The configuration model: immutable structs produced by the TOML loader (conf/config_loader.h).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "conf/sharding.h"

namespace shardgate::conf {

enum class PoolMode { kSession, kTransaction };
enum class AuthMethod { kTrust, kCleartext, kMd5, kScramSha256 };
enum class LogFormat { kText, kJson };
// TLS with clients, PgBouncer's client_tls_sslmode: kDisable answers every SSLRequest 'N'; kAllow
// and kPrefer accept TLS when a client asks; kRequire also refuses TCP clients that do not.
enum class TlsMode { kDisable, kAllow, kPrefer, kRequire };
// TLS to the shard servers, libpq's sslmode (and PgBouncer's server_tls_sslmode): kPrefer uses TLS
// when the server offers it; kRequire fails without it; kVerifyCa also checks the certificate
// against server_tls_ca_file, kVerifyFull also that it names the host. Unix sockets never use TLS.
enum class ServerTlsMode { kDisable, kPrefer, kRequire, kVerifyCa, kVerifyFull };

// How a user's password is stored in the config.
enum class PasswordKind {
  kNone,           // no password (only valid with auth_method = "trust")
  kPlain,          // plain text
  kScramVerifier,  // "SCRAM-SHA-256$<iterations>:<salt b64>$<StoredKey b64>:<ServerKey b64>"
  kMd5Hash,        // "md5" + 32 hex digits = md5(password || username), as pg_authid stores it
};

// One Postgres server shardgate logs in to.
struct ServerAddress {
  std::string host;  // a name or address, or (starting with '/') a Unix-socket directory
  uint16_t port = 5432;
  std::string database;  // database name on that server
  std::string user;      // login user shardgate uses
  std::string password;  // plain text (empty: trust)
  // [general] server_tls_sslmode and server_tls_ca_file, copied here by the loader so that every
  // way of reaching the server (pools, probes, catalog reads) sees them.
  ServerTlsMode tls_mode = ServerTlsMode::kPrefer;
  std::string tls_ca_file;
};

// As libpq reads a host: one that starts with '/' is the directory of the server's Unix-domain
// socket, and the socket is <directory>/.s.PGSQL.<port>.
inline bool isUnixSocketDirectory(std::string_view host) {
  return !host.empty() && host.front() == '/';
}
inline std::string unixSocketPath(std::string_view directory, uint16_t port) {
  std::string path(directory);
  if (path.size() > 1 && path.back() == '/') path.pop_back();
  return path + "/.s.PGSQL." + std::to_string(port);
}

struct Shard {
  std::string name;  // unique in its database; defaults to "shard<i>" (0-based)
  ServerAddress primary;
  std::vector<ServerAddress> replicas;  // replicas inherit database/user/password from primary

  std::vector<ServerAddress*> servers() {
    std::vector<ServerAddress*> out{&primary};
    for (ServerAddress& replica : replicas) out.push_back(&replica);
    return out;
  }
};

// A table named in the config: "table" (unqualified: any schema) or "schema.table" (that schema
// only). Names are compared as Postgres stores them: an unquoted identifier is lower case.
struct TableName {
  std::string schema;  // empty: unqualified
  std::string name;

  // Whether a table the query names matches this entry. `schema` is empty when the query does not
  // qualify the name; such a name matches an unqualified entry, or one in "public" (the schema of
  // the default search_path).
  bool matches(std::string_view query_schema, std::string_view query_name) const {
    return matches(schema, name, query_schema, query_name);
  }
  static bool matches(std::string_view schema, std::string_view name, std::string_view query_schema,
                      std::string_view query_name) {
    if (query_name != name) return false;
    if (schema.empty()) return true;
    return query_schema.empty() ? schema == "public" : query_schema == schema;
  }
  // "schema.table" or "table", as written in the config.
  std::string display() const { return schema.empty() ? name : schema + "." + name; }
};

// One [from, to) range of a range-sharded table; an absent bound is unbounded.
struct RangeBound {
  std::optional<KeyValue> from;  // inclusive
  std::optional<KeyValue> to;    // exclusive
  uint32_t shard = 0;
};

// The values of a list-sharded table that live on one shard.
struct ListEntry {
  std::vector<KeyValue> values;
  uint32_t shard = 0;
};

// Where a directory-sharded table's key -> shard lookup table lives.
struct DirectoryConfig {
  TableName table;  // columns (key, shard); read from the primary of `shard`
  uint32_t shard = 0;
  DirectoryFallback fallback = DirectoryFallback::kError;
};

// A table whose rows are spread over the shards by one key column.
struct ShardedTable {
  std::string schema;  // empty: unqualified (see TableName::matches)
  std::string name;
  std::string column;  // the sharding key column
  KeyType key_type = KeyType::kBigint;
  Strategy strategy = Strategy::kHash;
  std::vector<RangeBound> ranges;  // strategy range: ascending, not overlapping (gaps allowed)
  std::vector<ListEntry> lists;    // strategy list: every value listed once
  std::optional<uint32_t> default_shard;     // strategy list: the shard of unlisted values
  std::optional<DirectoryConfig> directory;  // strategy directory

  TableName tableName() const { return {schema, name}; }
  // As TableName::matches (every routed statement asks, for each sharded table: no copies).
  bool matches(std::string_view query_schema, std::string_view query_name) const {
    return TableName::matches(schema, name, query_schema, query_name);
  }
  std::string display() const { return tableName().display(); }
};

struct Database {
  std::string name;                   // the logical database name clients ask for
  std::vector<Shard> shards;          // ordered: shard index i is shards[i]
  std::optional<uint32_t> pool_size;  // overrides general.default_pool_size
  uint32_t default_shard = 0;         // where tables that are neither sharded nor reference live
  ReadPreference read_preference = ReadPreference::kPrimary;
  ReplicaPolicy replica_policy = ReplicaPolicy::kRoundRobin;
  std::vector<TableName> reference_tables;  // a full copy on every shard
  std::vector<ShardedTable> sharded_tables;
  // Unique per loaded config (0 for one built by hand): caches keyed by it never mix a reloaded
  // config's plans with the old one's.
  uint64_t generation = 0;

  // The sharded table a query's (schema, table) names, or nullptr. A qualified entry wins over an
  // unqualified one (the loader refuses configs where both could match).
  const ShardedTable* findShardedTable(std::string_view schema, std::string_view table) const {
    const ShardedTable* unqualified = nullptr;
    for (const auto& t : sharded_tables) {
      if (!t.matches(schema, table)) continue;
      if (!t.schema.empty()) return &t;
      unqualified = &t;
    }
    return unqualified;
  }
  bool isReferenceTable(std::string_view schema, std::string_view table) const {
    for (const auto& t : reference_tables)
      if (t.matches(schema, table)) return true;
    return false;
  }
};

struct User {
  std::string name;
  std::string password;  // as written in the config (see password_kind)
  PasswordKind password_kind = PasswordKind::kNone;
  AuthMethod auth_method = AuthMethod::kScramSha256;
  bool admin = false;                             // may use the admin console (dbname=shardgate)
  std::optional<uint32_t> pool_size;              // overrides the database's / general pool size
  std::optional<ReadPreference> read_preference;  // overrides the database's
};

struct General {
  std::string listen_addr = "127.0.0.1";
  uint16_t port = 6432;
  // Non-empty: clients may also connect through <unix_socket_dir>/.s.PGSQL.<port> (as to Postgres:
  // psql -h <dir>). Empty: TCP only.
  std::string unix_socket_dir;
  uint32_t workers = 0;  // resolved by the loader: 0 in the file means the number of cores
  PoolMode pool_mode = PoolMode::kTransaction;
  uint32_t max_client_conn = 10000;
  uint32_t max_message_size = 64u << 20;  // bytes; larger protocol messages are refused (08P01)
  // Bytes queued for a client that is not reading them before its server connection stops being
  // read (and the same for a server that is not taking a client's input): back-pressure.
  uint32_t client_buffer_limit = 1u << 20;
  // Bytes a multi-shard query may hold to merge what cannot stream (hash aggregate, DISTINCT, a
  // sort after aggregation); past it the query fails with 53200.
  uint64_t max_merge_bytes = 256ull << 20;
  // Timeouts, in milliseconds; 0 disables the timeout.
  uint32_t connect_timeout_ms = 5000;
  uint32_t client_login_timeout_ms = 60000;
  uint32_t query_wait_timeout_ms = 120000;
  // Clients that wait for each other's server connections (each holding one the other needs), or
  // for each other's row locks on different shards: after this long one of them gets 40P01, as
  // Postgres's deadlock_timeout.
  uint32_t deadlock_timeout_ms = 1000;
  uint32_t idle_server_timeout_ms = 600000;
  uint32_t server_lifetime_ms = 3600000;
  // SIGTERM / SHUTDOWN: how long open transactions may run before their clients are closed.
  uint32_t shutdown_timeout_ms = 30000;
  uint32_t default_pool_size =
      20;  // server connections per (database, user, shard, role), all workers together
  uint32_t min_pool_size = 0;
  uint16_t metrics_port = 0;  // 0: no metrics endpoint
  // With the metrics endpoint: how often every shard server is probed (shardgate_server_up), and
  // how often the row counts and sizes of sharded tables are read (shardgate_table_*).
  uint32_t server_check_interval_ms = 5000;
  uint32_t table_stats_interval_ms = 60000;
  // Slow-query log: a statement slower than this as the client sees it logs one line (0 = off),
  // its text cut to slow_query_max_chars; Bind parameter values only with log_parameters.
  uint32_t slow_query_ms = 0;
  uint32_t slow_query_max_chars = 200;
  bool log_parameters = false;
  std::string log_level = "info";  // trace, debug, info, warn, error, critical, off
  LogFormat log_format = LogFormat::kText;
  // TLS with clients; with a mode other than disable, both files (PEM) are required. RELOAD reads
  // them again (a renewed certificate), and keeps the old ones if they fail to load.
  TlsMode client_tls_sslmode = TlsMode::kDisable;
  std::string client_tls_cert_file;
  std::string client_tls_key_file;
  // TLS to the servers (prefer, as libpq and PgBouncer 1.20+); the CA file (PEM) is required by
  // verify-ca and verify-full.
  ServerTlsMode server_tls_sslmode = ServerTlsMode::kPrefer;
  std::string server_tls_ca_file;
};

struct Config {
  std::string source_path;  // the file this was loaded from
  General general;
  std::vector<User> users;
  std::vector<Database> databases;

  const User* findUser(std::string_view name) const {
    for (const auto& u : users)
      if (u.name == name) return &u;
    return nullptr;
  }
  const Database* findDatabase(std::string_view name) const {
    for (const auto& d : databases)
      if (d.name == name) return &d;
    return nullptr;
  }
  // Read preference for (database, user): user's, else database's.
  static ReadPreference readPreference(const Database& db, const User& user) {
    return user.read_preference ? *user.read_preference : db.read_preference;
  }
  // Pool size for (database, user): user's, else database's, else general default.
  uint32_t poolSize(const Database& db, const User& user) const {
    if (user.pool_size) return *user.pool_size;
    if (db.pool_size) return *db.pool_size;
    return general.default_pool_size;
  }
};

using ConfigPtr = std::shared_ptr<const Config>;

// The spelling of each enum value in the TOML file (the loader parses with these, so they agree).
inline std::string_view poolModeName(PoolMode m) {
  switch (m) {
    case PoolMode::kSession:
      return "session";
    case PoolMode::kTransaction:
      return "transaction";
  }
  return "?";
}
inline std::string_view authMethodName(AuthMethod m) {
  switch (m) {
    case AuthMethod::kTrust:
      return "trust";
    case AuthMethod::kCleartext:
      return "cleartext";
    case AuthMethod::kMd5:
      return "md5";
    case AuthMethod::kScramSha256:
      return "scram-sha-256";
  }
  return "?";
}
inline std::string_view logFormatName(LogFormat f) {
  switch (f) {
    case LogFormat::kText:
      return "text";
    case LogFormat::kJson:
      return "json";
  }
  return "?";
}
inline std::string_view tlsModeName(TlsMode m) {
  switch (m) {
    case TlsMode::kDisable:
      return "disable";
    case TlsMode::kAllow:
      return "allow";
    case TlsMode::kPrefer:
      return "prefer";
    case TlsMode::kRequire:
      return "require";
  }
  return "?";
}
inline bool verifiesServerCertificate(ServerTlsMode m) {
  return m == ServerTlsMode::kVerifyCa || m == ServerTlsMode::kVerifyFull;
}
inline std::string_view serverTlsModeName(ServerTlsMode m) {
  switch (m) {
    case ServerTlsMode::kDisable:
      return "disable";
    case ServerTlsMode::kPrefer:
      return "prefer";
    case ServerTlsMode::kRequire:
      return "require";
    case ServerTlsMode::kVerifyCa:
      return "verify-ca";
    case ServerTlsMode::kVerifyFull:
      return "verify-full";
  }
  return "?";
}

// The root certificate libpq's connections (health probes, catalog and directory reads) get for
// `server`: libpq takes any root certificate as "verify" even under sslmode=require, so only the
// verify modes pass theirs, as shardgate's own connections check the certificate only then.
inline const std::string& libpqRootCertificate(const ServerAddress& server) {
  static const std::string kNone;
  return verifiesServerCertificate(server.tls_mode) ? server.tls_ca_file : kNone;
}

// Not a config spelling: for logs and the admin console.
inline std::string_view passwordKindName(PasswordKind k) {
  switch (k) {
    case PasswordKind::kNone:
      return "none";
    case PasswordKind::kPlain:
      return "plain";
    case PasswordKind::kScramVerifier:
      return "scram-verifier";
    case PasswordKind::kMd5Hash:
      return "md5-hash";
  }
  return "?";
}

}  // namespace shardgate::conf
