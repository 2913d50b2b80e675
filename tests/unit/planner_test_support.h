// Shared fixtures of the planner tests: the demo topology plus list, directory, uuid and
// co-location tables, a fake directory and a fake column-order catalog.
#pragma once

#include <cstdint>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "conf/config_loader.h"
#include "planner/multi_shard_planner.h"
#include "planner/router.h"

namespace shardgate::planner::testing {

// Tables added to conf/demo.toml's "app" database (two shards) for the tests.
inline constexpr const char* kExtraTables = R"(
# list: eu, uk -> shard0; us -> shard1; anything else -> shard1
[[databases.sharded_tables]]
name = "tenants"
column = "region"
type = "text"
strategy = "list"
lists = [ { values = ["eu", "uk"], shard = 0 }, { values = ["us"], shard = 1 } ]
default_shard = 1

# the same lists: co-located with tenants
[[databases.sharded_tables]]
name = "tenant_settings"
column = "region"
type = "varchar"
strategy = "list"
lists = [ { values = ["eu", "uk"], shard = 0 }, { values = ["us"], shard = 1 } ]
default_shard = 1

# list without a default shard
[[databases.sharded_tables]]
name = "warehouses"
column = "code"
type = "integer"
strategy = "list"
lists = [ { values = [1, 2], shard = 0 }, { values = [3], shard = 1 } ]

# directory with hash fallback
[[databases.sharded_tables]]
name = "accounts"
column = "id"
type = "bigint"
strategy = "directory"
directory = { table = "shardgate_directory", shard = 0, fallback = "hash" }

# directory without fallback
[[databases.sharded_tables]]
name = "sessions"
column = "token"
type = "text"
strategy = "directory"
directory = { table = "session_directory", shard = 0 }

# hash on uuid
[[databases.sharded_tables]]
name = "devices"
column = "id"
type = "uuid"

# hash on an integer key: co-located with users (bigint) and orders
[[databases.sharded_tables]]
name = "profiles"
column = "user_id"
type = "integer"

# the same ranges as events: co-located with it
[[databases.sharded_tables]]
name = "event_details"
column = "event_id"
type = "bigint"
strategy = "range"
ranges = [
  { from = 0, to = 1000000, shard = 0 },
  { from = 1000000, to = 9223372036854775807, shard = 1 },
]

# other ranges: not co-located with events
[[databases.sharded_tables]]
name = "metrics"
column = "id"
type = "bigint"
strategy = "range"
ranges = [ { to = 500, shard = 0 }, { from = 500, shard = 1 } ]

# hash on text
[[databases.sharded_tables]]
name = "documents"
column = "slug"
type = "text"
)";

inline std::string readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// The "app" database of conf/demo.toml with kExtraTables (and `extra` appended after them).
inline conf::ConfigPtr loadTestConfig(const std::string& extra = {}) {
  const std::string text =
      readFile(std::string(SHARDGATE_SOURCE_DIR) + "/conf/demo.toml") + kExtraTables + extra;
  Result<conf::ConfigPtr> config = conf::parseConfig(text, "planner-test.toml");
  if (!config.ok()) throw std::runtime_error(config.error().describe());
  return *config;
}

inline const conf::Database& appDb(const conf::ConfigPtr& config) {
  const conf::Database* db = config->findDatabase("app");
  if (db == nullptr) throw std::runtime_error("no database app");
  return *db;
}

// A directory that knows some keys: accounts 1 -> shard1, 2 -> shard0, 3 -> not listed;
// sessions 'abc' -> shard1, 'nope' -> not listed. Other keys are "not looked up yet".
class FakeDirectory : public DirectoryLookup {
 public:
  FakeDirectory() {
    add("accounts", conf::KeyValue::ofInt(1), 1);
    add("accounts", conf::KeyValue::ofInt(2), 0);
    add("accounts", conf::KeyValue::ofInt(3), std::nullopt);
    add("sessions", conf::KeyValue::ofBytes("abc"), 1);
    add("sessions", conf::KeyValue::ofBytes("nope"), std::nullopt);
  }
  void add(const std::string& table, conf::KeyValue key, std::optional<uint32_t> shard) {
    entries_[{table, key.isInt() ? std::to_string(key.asInt()) : "s:" + key.asBytes()}] = shard;
  }
  std::optional<Answer> find(const conf::ShardedTable& table,
                             const conf::KeyValue& key) const override {
    const auto it = entries_.find(
        {table.name, key.isInt() ? std::to_string(key.asInt()) : "s:" + key.asBytes()});
    if (it == entries_.end()) return std::nullopt;
    return Answer{it->second};
  }

 private:
  std::map<std::pair<std::string, std::string>, std::optional<uint32_t>> entries_;
};

// Column orders of users, orders and pgbench_accounts; other tables are "not read yet".
class FakeColumns : public ColumnOrderProvider {
 public:
  FakeColumns() {
    tables_["users"] = {"id", "name", "email"};
    tables_["orders"] = {"id", "user_id", "amount"};
    tables_["pgbench_accounts"] = {"aid", "bid", "abalance", "filler"};
    tables_["tenants"] = {"name", "region"};
  }
  const std::vector<std::string>* columnOrder(std::string_view,
                                              std::string_view table) const override {
    const auto it = tables_.find(std::string(table));
    return it == tables_.end() ? nullptr : &it->second;
  }

 private:
  std::map<std::string, std::vector<std::string>> tables_;
};

// "ERROR 0A000: message" (+ detail and hint lines) or describeDecision (+ EXPLAIN lines, and
// "> " lines with a multi-shard plan's shard SQL and merge steps).
inline std::vector<std::string> describeResult(const conf::Database& db,
                                               const Result<RouteDecision>& r) {
  std::vector<std::string> out;
  if (!r.ok()) {
    out.push_back("ERROR " + r.error().sqlstate + ": " + r.error().message);
    if (!r.error().detail.empty()) out.push_back("DETAIL: " + r.error().detail);
    if (!r.error().hint.empty()) out.push_back("HINT: " + r.error().hint);
    return out;
  }
  out.push_back(describeDecision(db, *r));
  for (const std::string& line : r->explain_lines) out.push_back("| " + line);
  if (r->kind == RouteDecision::Kind::kMultiShard && r->multi) {
    for (const std::string& line : describeMultiShardPlan(db, *r->multi))
      out.push_back("> " + line);
  }
  return out;
}

}  // namespace shardgate::planner::testing
