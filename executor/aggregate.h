// Aggregate: the hash aggregate that finishes the shards' partial aggregates per group (sums of
// counts, exact sums, min/max, avg as sum/count, bool_and/or, variance and stddev from count,
// sum and sum of squares, DISTINCT aggregates over the shards' distinct values, string_agg and
// array_agg concatenation, or merged by their own ORDER BY), with Postgres's result types, scales,
// output format and NULL rules.
#pragma once

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "executor/column_collations.h"
#include "executor/memory_budget.h"
#include "executor/row.h"
#include "executor/value.h"
#include "planner/multi_shard_plan.h"

namespace shardgate::executor {

struct AggregateState;  // per group and aggregate; defined in aggregate.cc

// One aggregate of the plan, resolved against the shards' column types (immutable).
struct AggregateSpec {
  enum class Function : uint8_t {
    kCount,
    kSum,
    kMin,
    kMax,
    kAvg,
    kBoolAnd,
    kBoolOr,
    kVariance,
    kStringAgg,
    kArrayAgg,
    kOrderedStringAgg,
    kOrderedArrayAgg,
  };
  // How sums are kept: exactly for integers and numeric, in the float type for floats.
  enum class Arithmetic : uint8_t { kInteger, kNumeric, kFloat8, kFloat4 };

  planner::MergeAggregate::Kind kind = planner::MergeAggregate::Kind::kCount;
  Function function = Function::kCount;  // for kDistinct: what is applied to the distinct values
  bool distinct = false;
  std::vector<uint32_t> inputs;
  std::vector<ColumnType> input_types;
  Arithmetic arithmetic = Arithmetic::kInteger;
  bool sample = false;         // var_samp / stddev_samp (and variance, stddev)
  bool root = false;           // stddev*
  ColumnType result;           // the client's type and the shard column's format
  int extra_float_digits = 1;  // float results' text output (see float_format.h)
  // The aggregate's own ORDER BY: kOrdered* (keys in arrays, `key_types` their element types in
  // the arrays' format) and kDistinct string_agg/array_agg (at most one key: the value).
  std::vector<planner::MergeAggregate::OrderKey> order;
  std::vector<ColumnType> key_types;
  char array_delimiter = ',';  // the values array's element delimiter (text format)
};

class HashAggregate {
 public:
  HashAggregate(HashAggregate&&) noexcept;
  HashAggregate& operator=(HashAggregate&&) noexcept;
  ~HashAggregate();

  // Resolves the plan's aggregates against the shard columns: 0A000 for an aggregate or type
  // shardgate cannot finish exactly, XX000 for a plan that does not fit the columns.
  static Result<HashAggregate> create(const planner::MergePlan& plan,
                                      const std::vector<ColumnType>& shard_columns,
                                      std::shared_ptr<const ColumnCollations> collations,
                                      MemoryBudget* budget, int extra_float_digits = 1);

  // Column types of the merged rows (aggregate columns carry their result type).
  const std::vector<ColumnType>& mergedColumns() const { return merged_columns_; }

  Status add(const ShardRow& row);
  // One row per group, in order of first appearance; a query without GROUP BY gets exactly one
  // row, also when no shard returned any.
  Result<std::vector<MergedRow>> finish();

  static std::string describe(const planner::MergePlan& plan);

 private:
  struct Group {
    MergedRow first;  // group columns and plain columns from the group's first shard row
    std::vector<AggregateState> states;
  };
  HashAggregate() = default;
  Result<MergedRow> finishGroup(Group& group) const;

  std::vector<AggregateSpec> specs_;
  std::vector<uint32_t> group_columns_;
  // Per shard column: an aggregate input and no grouping column (not kept from the first row).
  std::vector<bool> aggregate_input_;
  std::vector<ColumnType> shard_columns_;
  std::vector<ColumnType> merged_columns_;
  std::shared_ptr<const ColumnCollations> collations_;
  MemoryBudget* budget_ = nullptr;
  std::unordered_map<std::string, size_t> group_index_;
  std::vector<Group> groups_;
};

}  // namespace shardgate::executor
