// ColumnCollations: the collation each merged column's text is ordered in — the one its hidden
// probe column names (planner::MergeCollation), else the shards' database collation.
#pragma once

#include <memory>
#include <string_view>
#include <vector>

#include "executor/collation.h"
#include "executor/row.h"
#include "executor/value.h"
#include "planner/multi_shard_plan.h"

namespace shardgate::executor {

class ColumnCollations {
 public:
  // `database`: the shards' datcollate. `column_types`: the shard columns (a probe is read only
  // for a column of collated text, or an array of it).
  ColumnCollations(std::shared_ptr<const Collation> database,
                   std::vector<planner::MergeCollation> probes,
                   const std::vector<ColumnType>& column_types);

  // Reads the probes from a shard row. A collation belongs to the statement, not to a row, so the
  // first row decides and later calls do nothing. 0A000 for a collation shardgate cannot order in.
  Status learn(const ShardRow& row);
  bool learned() const { return learned_; }

  // The collation of merged column `column` (the database's until learn()).
  const Collation& of(uint32_t column) const {
    if (column < by_column_.size() && by_column_[column]) return *by_column_[column];
    return *database_;
  }
  const Collation& database() const { return *database_; }

 private:
  std::shared_ptr<const Collation> database_;
  std::vector<planner::MergeCollation> probes_;
  std::vector<bool> collated_text_;  // per shard column
  std::vector<std::shared_ptr<const Collation>> by_column_;
  bool learned_ = false;
};

// The collation pg_collation_for() names (a quoted, maybe schema-qualified SQL name):
// "default" is the database's; "C", "POSIX" and "ucs_basic" compare bytes; a libc collation named
// after a UTF-8 locale ("en_US.utf8", or its alias "en_US") is that locale. Others (ICU, created
// collations named otherwise) get 0A000: shardgate could not order as the shards do.
Result<std::shared_ptr<const Collation>> collationNamed(
    std::string_view sql_name, const std::shared_ptr<const Collation>& database);

}  // namespace shardgate::executor
