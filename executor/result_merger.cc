// The merge of a multi-shard read: wires the primitives (concatenate or merge sort or aggregate,
// having, distinct, sort, limit, project) together per the MergePlan (see result_merger.h).
#include "executor/result_merger.h"

#include <algorithm>
#include <numeric>

#include "executor/aggregate.h"
#include "executor/concatenate.h"
#include "executor/distinct.h"
#include "executor/having.h"
#include "executor/limit.h"
#include "executor/memory_budget.h"
#include "executor/merge_sort.h"
#include "executor/pg_array.h"
#include "executor/project.h"
#include "executor/row_order.h"
#include "proxy/wire/backend_messages.h"

namespace shardgate::executor {
namespace {

enum class Mode : uint8_t { kConcatenate, kMergeSort, kAggregate };

Error planMismatch(std::string message) {
  return Error::make("XX000", "multi-shard merge: " + std::move(message));
}

std::string describeValueRef(const planner::ValueRef& v) {
  using K = planner::ValueRef::Kind;
  switch (v.kind) {
    case K::kLiteral:
      return "literal " + std::to_string(v.index);
    case K::kParam:
      return "$" + std::to_string(v.index);
    case K::kConstant:
      return v.text;
    case K::kNull:
      return "NULL";
    default:
      return "?";
  }
}

}  // namespace

struct ResultMerger::State {
  State(std::shared_ptr<const planner::MergePlan> p, MergeOptions o)
      : plan(std::move(p)),
        options(std::move(o)),
        budget(options.max_buffered_bytes),
        limit(options.limit, options.offset),
        finished(options.shard_count, false) {}

  std::shared_ptr<const planner::MergePlan> plan;
  MergeOptions options;
  Mode mode = Mode::kConcatenate;
  std::shared_ptr<const Collation> collation;
  std::optional<Error> collation_error;          // raised only if text must be ordered
  std::shared_ptr<ColumnCollations> collations;  // per column: the probes' or `collation`
  MemoryBudget budget;
  LimitState limit;

  bool described = false;
  wire::RowDescription shard_description;
  std::vector<ColumnType> shard_columns;
  std::vector<ColumnType> merged_columns;
  std::string client_description;
  std::optional<Projection> projection;
  std::optional<DistinctFilter> distinct;
  std::optional<HavingFilter> having;
  ConcatenateState concatenate;
  std::optional<MergeSortState> merge;
  std::optional<HashAggregate> aggregate;

  std::vector<bool> finished;
  size_t finished_count = 0;
  bool finalized = false;
  std::vector<MergedRow> results;
  size_t next_result = 0;
  uint64_t rows_out = 0;
  std::optional<Error> failure;  // the first error: every later call repeats it

  bool allFinished() const { return finished_count == finished.size(); }

  // Distinct, then offset/limit, then the client's columns.
  template <typename Row>
  Status emit(const Row& row, std::string& out) {
    if (distinct) {
      auto first = distinct->firstOccurrence(row);
      if (!first.ok()) return std::move(first).error();
      if (!*first) return {};
    }
    switch (limit.next()) {
      case LimitState::Action::kSkip:
      case LimitState::Action::kDone:
        return {};
      case LimitState::Action::kEmit:
        break;
    }
    projection->append(row, out);
    ++rows_out;
    return {};
  }

  Status configure(const wire::RowDescription& description);
  Status finalize();
  Status fail(Error e) {
    failure = e;
    return e;
  }
};

ResultMerger::ResultMerger(std::unique_ptr<State> state) : state_(std::move(state)) {}
ResultMerger::~ResultMerger() = default;

Result<std::unique_ptr<ResultMerger>> ResultMerger::create(
    std::shared_ptr<const planner::MergePlan> plan, MergeOptions options) {
  if (!plan) return planMismatch("no merge plan");
  if (options.shard_count == 0) return planMismatch("no shards to merge");
  if (options.limit && *options.limit < 0) {
    return Error::make("2201W", "LIMIT must not be negative");
  }
  if (options.offset && *options.offset < 0) {
    return Error::make("2201X", "OFFSET must not be negative");
  }
  if (plan->having && !plan->aggregate) {
    return Error::make("0A000", "HAVING without aggregation is not supported across shards");
  }
  auto state = std::make_unique<State>(plan, std::move(options));
  state->mode = plan->aggregate       ? Mode::kAggregate
                : !plan->sort.empty() ? Mode::kMergeSort
                                      : Mode::kConcatenate;
  auto collation = Collation::open(state->options.collation);
  if (collation.ok()) {
    state->collation = std::move(*collation);
  } else {
    state->collation_error = std::move(collation).error();
    state->collation = std::move(*Collation::open("C"));
  }
  return std::unique_ptr<ResultMerger>(new ResultMerger(std::move(state)));
}

namespace {
// Text the shards converted to a client_encoding other than UTF8 is not in the encoding of the
// collations shardgate orders text with.
Status requireUtf8Text(const ColumnType& type, uint32_t column) {
  const int32_t element = elementTypeOf(type.oid);  // an ordered aggregate's keys: text[]
  if (classifyType(element != 0 ? element : type.oid) != ValueClass::kCollatedText) return {};
  return Error::make("0A000",
                     "cannot order text column " + std::to_string(column + 1) +
                         " across shards for a client whose client_encoding is not UTF8",
                     "The shards send the text converted to the client's encoding; shardgate "
                     "orders text in UTF-8.",
                     "SET client_encoding = 'UTF8' for this query, or route it to one shard.");
}
}  // namespace

Status ResultMerger::State::configure(const wire::RowDescription& description) {
  const planner::MergePlan& p = *plan;
  shard_description = description;
  for (const auto& f : description.fields)
    shard_columns.push_back(ColumnType{f.type_oid, f.format});
  merged_columns = shard_columns;
  collations = std::make_shared<ColumnCollations>(collation, p.collations, shard_columns);
  if (mode == Mode::kAggregate) {
    if (!options.client_utf8) {
      for (const planner::MergeAggregate& a : p.aggregates) {
        // min/max pick by order, as string_agg/array_agg do by their ORDER BY keys.
        std::vector<uint32_t> ordered;
        if ((a.function == "min" || a.function == "max") && !a.inputs.empty()) {
          ordered.push_back(a.inputs[0]);
        }
        for (const auto& key : a.order) ordered.push_back(key.column);
        for (uint32_t column : ordered) {
          if (column >= shard_columns.size()) continue;
          Status s = requireUtf8Text(shard_columns[column], column);
          if (!s.ok()) return s;
        }
      }
    }
    auto agg =
        HashAggregate::create(p, shard_columns, collations, &budget, options.extra_float_digits);
    if (!agg.ok()) return std::move(agg).error();
    merged_columns = agg->mergedColumns();
    aggregate.emplace(std::move(*agg));
  }
  std::vector<uint32_t> visible = p.visible_columns;
  if (visible.empty() && p.leading_hidden > 0) {
    // SELECT * with hidden sort columns first (MergePlan::leading_hidden): the rest are the
    // client's.
    for (uint32_t c = p.leading_hidden; c < merged_columns.size(); ++c) visible.push_back(c);
    if (visible.empty()) return planMismatch("no visible column after the hidden ones");
  }
  for (uint32_t c : visible) {
    if (c >= merged_columns.size()) {
      return planMismatch("visible column " + std::to_string(c + 1) + " of a " +
                          std::to_string(merged_columns.size()) + "-column result");
    }
  }
  projection.emplace(visible, merged_columns.size());
  Status s = RowOrder::validate(p.sort, merged_columns);
  for (size_t i = 0; s.ok() && i < p.sort.size(); ++i) {
    const uint32_t column = p.sort[i].column;
    s = requireExactFloats(merged_columns[column], column, "sort on", options.extra_float_digits);
    if (s.ok() && !options.client_utf8) s = requireUtf8Text(merged_columns[column], column);
  }
  if (!s.ok()) return s;
  if (p.having) {
    s = HavingFilter::validate(*p.having, merged_columns);
    if (!s.ok()) return s;
    having.emplace(&*p.having, merged_columns, collations);
  }
  if (p.distinct) {
    s = DistinctFilter::validate(projection->columns(), merged_columns);
    for (uint32_t column : projection->columns()) {
      if (s.ok()) {
        s = requireExactFloats(merged_columns[column], column, "apply DISTINCT to",
                               options.extra_float_digits);
      }
    }
    if (!s.ok()) return s;
    distinct.emplace(projection->columns(), merged_columns, &budget);
  }
  if (collation_error && (mode == Mode::kAggregate || !p.sort.empty() || p.distinct)) {
    return *collation_error;
  }
  if (mode == Mode::kMergeSort) {
    merge.emplace(RowOrder(p.sort, merged_columns, collations), finished.size());
    for (size_t shard = 0; shard < finished.size(); ++shard) {
      if (finished[shard]) merge->finish(shard);
    }
  }

  wire::RowDescription client;
  for (uint32_t c : projection->columns()) {
    wire::FieldDescription f = description.fields[c];
    if (merged_columns[c].oid != f.type_oid) {
      f.type_oid = merged_columns[c].oid;
      f.type_size = typeLength(f.type_oid);
      f.type_modifier = -1;
    }
    client.fields.push_back(std::move(f));
  }
  std::string framed;
  client.encode(framed);
  client_description = framed.substr(5);  // the payload: without type byte and length
  described = true;
  return {};
}

Status ResultMerger::setRowDescription(size_t shard, std::string_view payload) {
  State& st = *state_;
  if (st.failure) return *st.failure;
  if (shard >= st.finished.size()) return planMismatch("shard index out of range");
  auto description = wire::RowDescription::decode(payload);
  if (!description.ok()) return st.fail(std::move(description).error());
  if (!st.described) {
    Status s = st.configure(*description);
    if (!s.ok()) return st.fail(std::move(s).error());
    return {};
  }
  const auto& mine = st.shard_description.fields;
  const auto& theirs = description->fields;
  bool same = mine.size() == theirs.size();
  for (size_t i = 0; same && i < mine.size(); ++i) {
    same = mine[i].type_oid == theirs[i].type_oid && mine[i].format == theirs[i].format;
  }
  if (!same) {
    return st.fail(Error::make(
        "XX000", "shards returned different result columns for the same statement",
        "Shard " + std::to_string(shard) +
            "'s RowDescription differs from the first shard's "
            "(column count, types or formats); the shards' schemas may have diverged."));
  }
  return {};
}

std::string ResultMerger::clientRowDescription() const {
  return state_->client_description;
}

Status ResultMerger::addRow(size_t shard, std::string_view payload) {
  State& st = *state_;
  if (st.failure) return *st.failure;
  if (shard >= st.finished.size()) return planMismatch("shard index out of range");
  if (!st.described) return st.fail(planMismatch("a DataRow arrived before any RowDescription"));
  if (st.limit.done()) return {};  // LIMIT reached: the row is not needed
  if (st.mode == Mode::kConcatenate && !st.distinct && st.projection->identity()) {
    // A plain fan-out forwards the shard's row as it is: nothing to look at inside it.
    if (st.limit.next() == LimitState::Action::kEmit) {
      appendFramedDataRow(payload, st.concatenate.pending());
      ++st.rows_out;
    }
    return {};
  }
  auto row = ShardRow::parse(payload, st.shard_columns.size());
  if (!row.ok()) return st.fail(std::move(row).error());
  Status s;
  if (!st.collations->learned()) {
    s = st.collations->learn(*row);
    if (!s.ok()) return st.fail(std::move(s).error());
  }
  switch (st.mode) {
    case Mode::kConcatenate:
      s = st.emit(*row, st.concatenate.pending());
      break;
    case Mode::kMergeSort:
      s = st.merge->push(shard, std::move(*row));
      break;
    case Mode::kAggregate:
      s = st.aggregate->add(*row);
      break;
  }
  if (!s.ok()) return st.fail(std::move(s).error());
  return {};
}

void ResultMerger::shardFinished(size_t shard) {
  State& st = *state_;
  if (shard >= st.finished.size() || st.finished[shard]) return;
  st.finished[shard] = true;
  ++st.finished_count;
  if (st.merge) st.merge->finish(shard);
}

Status ResultMerger::State::finalize() {
  finalized = true;
  if (!aggregate) return {};  // no shard described its rows: nothing to aggregate
  auto rows = aggregate->finish();
  if (!rows.ok()) return std::move(rows).error();
  std::vector<MergedRow> kept;
  kept.reserve(rows->size());
  for (MergedRow& row : *rows) {
    if (having) {
      auto pass = having->passes(row);
      if (!pass.ok()) return std::move(pass).error();
      if (!*pass) continue;
    }
    kept.push_back(std::move(row));
  }
  if (!plan->sort.empty()) {
    const RowOrder order(plan->sort, merged_columns, collations);
    std::vector<DecodedKeys> keys;
    keys.reserve(kept.size());
    for (const MergedRow& row : kept) {
      auto k = order.decode(row);
      if (!k.ok()) return std::move(k).error();
      keys.push_back(std::move(*k));
    }
    std::vector<size_t> index(kept.size());
    std::iota(index.begin(), index.end(), 0);
    std::stable_sort(index.begin(), index.end(),
                     [&](size_t a, size_t b) { return order.compare(keys[a], keys[b]) < 0; });
    std::vector<MergedRow> sorted;
    sorted.reserve(kept.size());
    for (size_t i : index) sorted.push_back(std::move(kept[i]));
    kept.swap(sorted);
  }
  results = std::move(kept);
  aggregate.reset();
  return {};
}

Status ResultMerger::drain(std::string& out, size_t max_bytes) {
  State& st = *state_;
  if (st.failure) return *st.failure;
  const size_t start = out.size();
  auto room = [&] { return out.size() - start < max_bytes; };
  Status s;
  switch (st.mode) {
    case Mode::kConcatenate:
      st.concatenate.drainInto(out);
      break;
    case Mode::kMergeSort: {
      if (!st.merge) break;
      ShardRow row;
      while (room() && !st.limit.done() && st.merge->popNext(row)) {
        s = st.emit(row, out);
        if (!s.ok()) return st.fail(std::move(s).error());
      }
      break;
    }
    case Mode::kAggregate: {
      if (!st.allFinished()) break;
      if (!st.finalized) {
        if (!st.described) {
          // No shard sent a RowDescription (the caller fed nothing): nothing to aggregate.
          st.finalized = true;
          break;
        }
        s = st.finalize();
        if (!s.ok()) return st.fail(std::move(s).error());
      }
      while (room() && !st.limit.done() && st.next_result < st.results.size()) {
        s = st.emit(st.results[st.next_result++], out);
        if (!s.ok()) return st.fail(std::move(s).error());
      }
      break;
    }
  }
  return {};
}

bool ResultMerger::wantsMore(size_t shard) const {
  const State& st = *state_;
  if (st.failure || shard >= st.finished.size()) return false;
  // Past the LIMIT every row is dropped on arrival: reading on lets the shards reach their
  // CommandComplete (a caller that pauses here and waits for it would wait forever).
  if (st.limit.done()) return true;
  switch (st.mode) {
    case Mode::kConcatenate:
      return st.concatenate.wantsMore();
    case Mode::kMergeSort:
      return !st.merge || st.merge->wantsMore(shard);
    case Mode::kAggregate:
      return true;  // folded into the groups at once; bounded by max_buffered_bytes
  }
  return true;
}

bool ResultMerger::complete() const {
  return state_->limit.done();
}

bool ResultMerger::done() const {
  State& st = *state_;
  switch (st.mode) {
    case Mode::kConcatenate:
      return st.concatenate.pending().empty() && (st.limit.done() || st.allFinished());
    case Mode::kMergeSort:
      return st.limit.done() || (st.allFinished() && (!st.merge || st.merge->exhausted()));
    case Mode::kAggregate:
      return st.limit.done() || (st.finalized && st.next_result >= st.results.size());
  }
  return true;
}

uint64_t ResultMerger::rowsOut() const {
  return state_->rows_out;
}

size_t ResultMerger::bufferedBytes() const {
  return state_->budget.used();
}

std::vector<std::string> describeMergePlan(const planner::MergePlan& plan) {
  std::vector<std::string> lines;
  if (plan.aggregate) {
    lines.push_back(HashAggregate::describe(plan));
  } else if (!plan.sort.empty()) {
    lines.push_back(MergeSortState::describe(plan.sort));
  } else {
    lines.push_back(ConcatenateState::describe());
  }
  if (plan.having) lines.push_back(HavingFilter::describe(*plan.having));
  if (plan.distinct) lines.push_back(DistinctFilter::describe());
  if (plan.aggregate && !plan.sort.empty()) {
    lines.push_back("Sort(in memory after aggregation on " + RowOrder::describeKeys(plan.sort) +
                    ")");
  }
  if (plan.limit || plan.offset) {
    std::string s = "Limit(";
    s += plan.limit ? "limit " + describeValueRef(*plan.limit) : "no limit";
    if (plan.offset) s += ", offset " + describeValueRef(*plan.offset);
    lines.push_back(s + ")");
  }
  const std::string project = Projection::describe(plan.visible_columns, plan.leading_hidden);
  if (!project.empty()) lines.push_back(project);
  return lines;
}

}  // namespace shardgate::executor
