// Blocking libpq queries the router's lookups need: a table's column order, and the rows of a
// directory-sharded table's directory. Run on the libuv thread pool, never on a loop thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "conf/config.h"

struct pg_conn;

namespace shardgate::proxy::catalog {

// The libpq conninfo of a shard's primary, with a connect timeout and a statement timeout so
// that a hung shard ties up a thread-pool thread for a bounded time only.
std::string conninfoFor(const conf::ServerAddress& server);

// One libpq connection (closed by the destructor). Not thread-safe: one thread at a time.
class Connection {
 public:
  explicit Connection(std::string conninfo) : conninfo_(std::move(conninfo)) {}
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  const std::string& conninfo() const { return conninfo_; }
  // Connects if not connected (or if the connection broke). Errors: 08006 with libpq's message.
  Status ensureConnected();
  // Whether the connection is usable for another query.
  bool healthy() const;
  pg_conn* raw() { return conn_; }

 private:
  std::string conninfo_;
  pg_conn* conn_ = nullptr;
};

// "schema"."table" (or "table"), each part quoted as an identifier.
std::string quoteQualified(std::string_view schema, std::string_view table);

// The column names of a table, in attnum order, dropped columns left out. `schema` empty: the
// name is resolved by the search path, which `search_path_statement` (a SET or set_config
// statement; empty: the server's default) sets for the query only. Errors: 42P01 "relation ...
// does not exist" (Postgres's wording), or the server's error.
Result<std::vector<std::string>> readColumnOrder(Connection& conn, std::string_view schema,
                                                 std::string_view table,
                                                 std::string_view search_path_statement);

// The database's collation (pg_database.datcollate), which orders its text.
Result<std::string> readCollation(Connection& conn);

// The shard the directory table maps `key` to (its text form); nullopt: no row.
Result<std::optional<uint32_t>> readDirectoryEntry(Connection& conn, const conf::TableName& table,
                                                   const std::string& key);
// Records key -> shard unless the directory already has a row for the key (another worker or
// proxy may have placed it first), and returns the shard the directory holds afterwards.
Result<uint32_t> placeDirectoryEntry(Connection& conn, const conf::TableName& table,
                                     const std::string& key, uint32_t shard);
// Sets key -> shard, adding the row if there is none (shardgate.move_key).
Status writeDirectoryEntry(Connection& conn, const conf::TableName& table, const std::string& key,
                           uint32_t shard);

// The text form of a key as the directory's key column reads it: 42, the text itself, the uuid.
std::string keyText(conf::KeyType type, const conf::KeyValue& key);

}  // namespace shardgate::proxy::catalog
