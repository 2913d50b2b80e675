// ResultMerger: the one entry point of the executor's merge. It takes the RowDescription and
// DataRows of every shard of a multi-shard read and produces the client's RowDescription and
// DataRows, exactly as one Postgres holding all the data would answer. No I/O: the caller (the
// proxy) reads the shards, feeds the merger, and writes what drain() returns.
//
// Usage, per execution (the MergePlan is immutable and shared):
//   auto merger = ResultMerger::create(plan, options);         // 0A000 / 2201W on bad shapes
//   merger->setRowDescription(shard, payload)   for each shard's RowDescription
//   merger->clientRowDescription()              what the client gets instead
//   merger->addRow(shard, payload)              for each DataRow payload, as it arrives
//   merger->shardFinished(shard)                at each shard's CommandComplete
//   merger->drain(out)                          after each batch: framed DataRows for the client
//   merger->wantsMore(shard)                    false: stop reading that shard until drained
//   merger->complete()                          LIMIT reached: the rest is not needed
//   merger->done()                              every row is out (then "SELECT rowsOut()")
// Any error Status ends the merge: the caller sends it as the statement's ErrorResponse.
#pragma once

#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "planner/multi_shard_plan.h"

namespace shardgate::executor {

struct MergeOptions {
  size_t shard_count = 0;
  std::optional<int64_t> limit;   // evaluated LIMIT (nullopt: none, as LIMIT ALL / NULL)
  std::optional<int64_t> offset;  // evaluated OFFSET
  // Cap on what the merge buffers when it cannot stream (hash aggregate groups, DISTINCT sets,
  // rows sorted after aggregation): past it, 53200 naming general.max_merge_bytes.
  size_t max_buffered_bytes = 64 * 1024 * 1024;
  // The shards' pg_database.datcollate ("C", "en_US.UTF-8"): text ordering.
  std::string collation = "C";
  // The client session's extra_float_digits: float aggregate results (avg over floats, float
  // sums) are printed as Postgres would print them for this client.
  int extra_float_digits = 1;
  // The client's client_encoding is UTF8 (or SQL_ASCII): the shards send its text in the
  // database's encoding, which shardgate's collations order. In another encoding text is not
  // ordered across shards (0A000); grouping and DISTINCT compare bytes, which any encoding keeps.
  bool client_utf8 = true;
};

// The EXPLAIN (ROUTE) lines of a merge plan, one per primitive, in execution order.
std::vector<std::string> describeMergePlan(const planner::MergePlan& plan);

class ResultMerger {
 public:
  static Result<std::unique_ptr<ResultMerger>> create(
      std::shared_ptr<const planner::MergePlan> plan, MergeOptions options);
  ~ResultMerger();
  ResultMerger(const ResultMerger&) = delete;
  ResultMerger& operator=(const ResultMerger&) = delete;

  // A shard's RowDescription payload (after the length word). The first fixes the columns (and
  // checks that the plan fits them: 0A000 for a type shardgate cannot sort, group or aggregate);
  // later ones must agree on column count, type OIDs and formats (XX000 otherwise).
  Status setRowDescription(size_t shard, std::string_view payload);
  // The RowDescription payload for the client: visible columns only, aggregate result types
  // (avg -> numeric, type modifier -1 where the type changed). Empty before the first
  // setRowDescription().
  std::string clientRowDescription() const;

  // A DataRow payload from `shard`, in the format of its RowDescription.
  Status addRow(size_t shard, std::string_view payload);
  void shardFinished(size_t shard);

  // Appends framed DataRow messages ('D', length, payload) that are ready. Streams
  // (concatenation, merge sort, limit) as rows arrive; aggregated, distinct-after-aggregate and
  // sorted-after-aggregate results once every shard finished. Stops after about `max_bytes`
  // (call again while !done()).
  Status drain(std::string& out, size_t max_bytes = std::numeric_limits<size_t>::max());

  // False when the merge holds enough of `shard`'s rows for now (stop reading its socket until
  // drain() made room). A shard the merge is waiting on is always wanted, and so is every shard
  // once complete(): later rows are dropped as they arrive, so the shards can finish (the caller
  // may cancel them instead).
  bool wantsMore(size_t shard) const;
  // LIMIT satisfied: no more shard rows are needed (the caller may stop reading and cancel).
  bool complete() const;
  // Every shard finished (or complete()) and every row has been drained.
  bool done() const;
  uint64_t rowsOut() const;  // for the command tag "SELECT n"

  // Bytes currently held for state that cannot stream (for metrics and tests).
  size_t bufferedBytes() const;

 private:
  struct State;
  explicit ResultMerger(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace shardgate::executor
