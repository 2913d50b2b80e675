// Prepared statements under transaction pooling: one server-side name per distinct statement.
#pragma once

#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace shardgate::backends {

// A distinct (query text, parameter types, sharing scope) triple. Clients that prepare the same
// text in the same scope share one server-side statement named "sg_<id>", whatever names they
// chose themselves. The scope is the client's settings: Postgres reads a statement's literals
// ('2020-01-01 00:00'::timestamptz, dates, escapes) with the settings of the session that parses
// it, so clients with another TimeZone or DateStyle must not get its statement.
class PreparedStatement {
 public:
  // A protocol-level statement (Parse).
  PreparedStatement(uint64_t id, std::string query, std::vector<int32_t> param_types);
  // An SQL-level statement: `make_prepare_sql` builds "PREPARE <server name> ... AS ..." text.
  PreparedStatement(uint64_t id,
                    const std::function<std::string(const std::string&)>& make_prepare_sql);
  uint64_t id() const { return id_; }
  const std::string& serverName() const { return server_name_; }
  const std::string& query() const { return query_; }
  const std::vector<int32_t>& paramTypes() const { return param_types_; }
  // What prepares it on a server, encoded once: a Parse message, or for an SQL-level statement
  // a Query message carrying PREPARE.
  const std::string& parseMessage() const { return parse_message_; }
  bool sqlLevel() const { return sql_level_; }

  // The shape of its result (columns' names, types and typmods, or none) as a client was first
  // told it, by a Describe of the statement. Postgres fixes a prepared statement's result type at
  // Parse; shardgate prepares the statement again on each connection that lacks it, and a table
  // changed since would give rows of another shape. Such a Parse is checked against this shape.
  bool described() const { return described_; }
  // `type` and `payload`: the RowDescription or NoData answering a Describe of the statement.
  void noteDescribed(char type, std::string_view payload);
  bool sameResultShape(char type, std::string_view payload) const;
  // Prepared again, it no longer has the shape its clients were told: new Parses of its text get
  // a statement of their own (StatementRegistry::intern).
  void retire() { retired_ = true; }
  bool retired() const { return retired_; }
  // Whether a server has ever accepted its Parse: one that never did and rejects it now was
  // never a statement at all, and its clients lose it (ServerSink::onStatementRejected).
  bool everPrepared() const { return ever_prepared_; }
  void notePrepared() { ever_prepared_ = true; }

 private:
  static std::string resultShapeOf(char type, std::string_view payload);

  uint64_t id_;
  std::string server_name_;
  std::string query_;
  std::vector<int32_t> param_types_;
  std::string parse_message_;
  bool sql_level_ = false;
  bool described_ = false;
  bool retired_ = false;
  bool ever_prepared_ = false;
  std::string result_shape_;
};

// Per worker: the statements any client has prepared, keyed by text and parameter types.
class StatementRegistry {
 public:
  std::shared_ptr<PreparedStatement> intern(const std::string& query,
                                            const std::vector<int32_t>& param_types,
                                            uint64_t scope);
  // SQL PREPARE: `key` is the statement with its name left out (types and query text).
  std::shared_ptr<PreparedStatement> internSql(
      const std::string& key, uint64_t scope,
      const std::function<std::string(const std::string&)>& make_prepare_sql);
  // A table, view or function may have changed (an ALTER, DROP or CREATE completed, through any
  // worker): statements prepared from now on are new ones. A Parse is analysed against the tables
  // as they are then, but a statement prepared before the change would give a new client
  // "cached plan must not change result type" (or its old reading); its old clients get what
  // Postgres would give them. (DDL run on the shards directly is not seen.)
  static void noteSchemaChange();
  // Forgets statements no client holds any more (servers may still have them prepared; they are
  // found again by text if a client prepares the same statement later).
  void collect();
  size_t size() const { return by_key_.size(); }

 private:
  uint64_t next_id_ = 1;
  std::unordered_map<std::string, std::shared_ptr<PreparedStatement>> by_key_;
};

// Per server connection: which statements it has prepared, least recently used first.
class ServerStatementCache {
 public:
  explicit ServerStatementCache(size_t capacity = 1000) : capacity_(capacity) {}
  bool has(uint64_t id) const { return index_.count(id) > 0; }
  void touch(uint64_t id);
  // Records a statement as prepared (from the moment its Parse is sent).
  void add(const std::shared_ptr<PreparedStatement>& statement);
  void remove(uint64_t id);
  // Server names of the least recently used statements beyond capacity, forgotten here; the
  // caller deallocates them on the server at a quiet moment.
  std::vector<std::string> takeEvictions();
  bool hasEvictions() const { return index_.size() > capacity_; }
  void clear();
  size_t size() const { return index_.size(); }

 private:
  size_t capacity_;
  std::list<std::shared_ptr<PreparedStatement>> order_;  // front = least recently used
  std::unordered_map<uint64_t, std::list<std::shared_ptr<PreparedStatement>>::iterator> index_;
};

}  // namespace shardgate::backends
