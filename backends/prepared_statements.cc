// StatementRegistry and ServerStatementCache: the bookkeeping behind shared prepared statements.
#include "backends/prepared_statements.h"

#include <atomic>

#include "proxy/wire/backend_messages.h"
#include "proxy/wire/frontend_messages.h"
#include "proxy/wire/protocol.h"

namespace shardgate::backends {

PreparedStatement::PreparedStatement(uint64_t id, std::string query,
                                     std::vector<int32_t> param_types)
    : id_(id),
      server_name_("sg_" + std::to_string(id)),
      query_(std::move(query)),
      param_types_(std::move(param_types)) {
  wire::Parse{server_name_, query_, param_types_}.encode(parse_message_);
}

PreparedStatement::PreparedStatement(
    uint64_t id, const std::function<std::string(const std::string&)>& make_prepare_sql)
    : id_(id), server_name_("sg_" + std::to_string(id)), sql_level_(true) {
  query_ = make_prepare_sql(server_name_);
  wire::Query{query_}.encode(parse_message_);
}

// What Postgres compares when it revalidates a prepared statement (equalTupleDescs): the columns'
// names, types and typmods. Not the source table's OID or column number, nor the format (0 in a
// reply to Describe).
std::string PreparedStatement::resultShapeOf(char type, std::string_view payload) {
  if (type == wire::be::kNoData) return {};
  auto description = wire::RowDescription::decode(payload);
  if (!description.ok()) return std::string(payload);  // compared as bytes
  std::string shape = "T";
  for (const wire::FieldDescription& f : description->fields) {
    shape.append(f.name);
    shape.push_back('\0');
    const int32_t parts[3] = {f.type_oid, f.type_size, f.type_modifier};
    shape.append(reinterpret_cast<const char*>(parts), sizeof parts);
  }
  return shape;
}

void PreparedStatement::noteDescribed(char type, std::string_view payload) {
  if (described_) return;
  result_shape_ = resultShapeOf(type, payload);
  described_ = true;
}

bool PreparedStatement::sameResultShape(char type, std::string_view payload) const {
  return resultShapeOf(type, payload) == result_shape_;
}

namespace {
// Process-wide: every worker's registry starts new statements after DDL through any of them.
std::atomic<uint64_t> schema_generation{0};

// The sharing scope and the schema generation, as key bytes.
void appendScope(std::string& key, uint64_t scope) {
  const uint64_t parts[2] = {scope, schema_generation.load(std::memory_order_relaxed)};
  key.append(reinterpret_cast<const char*>(parts), sizeof parts);
}
}  // namespace

void StatementRegistry::noteSchemaChange() {
  schema_generation.fetch_add(1, std::memory_order_relaxed);
}

std::shared_ptr<PreparedStatement> StatementRegistry::internSql(
    const std::string& key, uint64_t scope,
    const std::function<std::string(const std::string&)>& make_prepare_sql) {
  // A NUL cannot occur in SQL text, so these keys never meet protocol-level ones.
  std::string full_key = "\0sql\0" + key;
  full_key.push_back('\0');
  appendScope(full_key, scope);
  auto it = by_key_.find(full_key);
  if (it != by_key_.end() && !it->second->retired()) return it->second;
  auto statement = std::make_shared<PreparedStatement>(next_id_++, make_prepare_sql);
  by_key_.insert_or_assign(std::move(full_key), statement);
  return statement;
}

std::shared_ptr<PreparedStatement> StatementRegistry::intern(
    const std::string& query, const std::vector<int32_t>& param_types, uint64_t scope) {
  std::string key;
  key.reserve(query.size() + 1 + 2 * sizeof scope + param_types.size() * 4);
  key.append(query);
  key.push_back('\0');
  appendScope(key, scope);
  key.append(reinterpret_cast<const char*>(param_types.data()), param_types.size() * 4);
  auto it = by_key_.find(key);
  if (it != by_key_.end() && !it->second->retired()) return it->second;
  auto statement = std::make_shared<PreparedStatement>(next_id_++, query, param_types);
  by_key_.insert_or_assign(std::move(key), statement);
  if (by_key_.size() % 1024 == 0) collect();
  return statement;
}

void StatementRegistry::collect() {
  for (auto it = by_key_.begin(); it != by_key_.end();) {
    // Only the registry holds it: no client has it prepared.
    if (it->second.use_count() == 1) {
      it = by_key_.erase(it);
    } else {
      ++it;
    }
  }
}

void ServerStatementCache::touch(uint64_t id) {
  auto it = index_.find(id);
  if (it == index_.end()) return;
  order_.splice(order_.end(), order_, it->second);
}

void ServerStatementCache::add(const std::shared_ptr<PreparedStatement>& statement) {
  if (has(statement->id())) {
    touch(statement->id());
    return;
  }
  order_.push_back(statement);
  index_.emplace(statement->id(), std::prev(order_.end()));
}

void ServerStatementCache::remove(uint64_t id) {
  auto it = index_.find(id);
  if (it == index_.end()) return;
  order_.erase(it->second);
  index_.erase(it);
}

std::vector<std::string> ServerStatementCache::takeEvictions() {
  std::vector<std::string> names;
  while (index_.size() > capacity_) {
    auto victim = order_.front();
    order_.pop_front();
    index_.erase(victim->id());
    names.push_back(victim->serverName());
  }
  return names;
}

void ServerStatementCache::clear() {
  order_.clear();
  index_.clear();
}

}  // namespace shardgate::backends
