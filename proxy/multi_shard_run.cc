// MultiShardRun: fans one statement out to its shards over pooled connections and merges replies.
#include "proxy/multi_shard_run.h"

#include <algorithm>
#include <charconv>
#include <utility>

#include "backends/cancel_request.h"
#include "common/log.h"
#include "executor/copy_splitter.h"
#include "executor/result_merger.h"
#include "proxy/session_settings.h"
#include "proxy/wire/backend_messages.h"
#include "proxy/wire/framing.h"
#include "proxy/wire/frontend_messages.h"
#include "proxy/wire/payload.h"
#include "proxy/wire/protocol.h"

namespace shardgate::proxy {

namespace {
// Replies from our own shards are trusted to be well framed; this only bounds a corrupt length.
constexpr uint32_t kMaxServerMessage = 1u << 30;

// Verbs whose command tag ends with a row count that adds up across shards.
bool countedVerb(std::string_view verb) {
  return verb == "SELECT" || verb == "INSERT 0" || verb == "UPDATE" || verb == "DELETE" ||
         verb == "MERGE" || verb == "COPY" || verb == "FETCH" || verb == "MOVE";
}
}  // namespace

// One shard's part of the run: a pool waiter, then the sink of the server it got.
class MultiShardRun::Leg final : public backends::ServerSink, public backends::PoolWaiter {
 public:
  Leg(MultiShardRun& run, size_t index, const planner::ShardStatement& statement)
      : run_(run), index_(index), shard_(statement.shard), statement_(statement) {}

  ~Leg() override { abandon(); }

  size_t index() const { return index_; }
  uint32_t shard() const { return shard_; }
  bool done() const { return done_; }
  backends::ServerConnection* server() const { return server_; }
  bool copyReady() const { return copy_ready_; }
  void setCopyReady() { copy_ready_ = true; }
  bool copyHeaderSeen() const { return copy_header_seen_; }
  void setCopyHeaderSeen() { copy_header_seen_ = true; }

  void start(const std::shared_ptr<Leg>& self) {
    self_ = self;
    if (run_.error_) {  // an earlier shard already failed: do not start a write here
      done_ = true;
      return;
    }
    const bool held = run_.request_.held_shard == shard_;
    if (run_.request_.in_transaction || held) {
      server_ = run_.host_.multiShardTakeServer(shard_, &pool_);
      if (server_) {  // already in the transaction (or the session's), in line with its settings
        held_ = held && !run_.request_.in_transaction;
        server_->attach(this);
        sendStatement(/*begin=*/held_ && run_.request_.atomic);
        return;
      }
    }
    pool_ = &run_.host_.multiShardPool(shard_, run_.request_.role);
    waiting_ = true;
    pool_->acquire(this, backends::monotonicMs());  // may complete before it returns
  }

  void resume() {
    if (server_) server_->resumeIfPaused();
  }

  bool waiting() const { return waiting_; }
  const backends::Pool* pool() const { return pool_; }
  void failWait(const Error& error) {
    if (!waiting_) return;
    pool_->cancelWait(this);
    onServerUnavailable(error);
  }

  // held_too: also the pinned session's own connection (a late cancel request could hit the next
  // statement there: only when the client asked for the cancel, as one Postgres would).
  void cancel(LoopContext& context, bool held_too) {
    if (server_ && !done_ && (held_too || !held_)) {
      backends::sendCancelRequest(context, *server_);
      cancelled_ = true;
    }
  }

  // Atomic mode: runs `sql` in the leg's open transaction, which goes on.
  void runInTransaction(const std::string& sql, std::function<void(Status)> then) {
    if (server_ == nullptr) {
      then({});
      return;
    }
    std::weak_ptr<Leg> weak = self_;
    server_->runInternal(sql, [weak, then = std::move(then)](Status status) {
      if (weak.lock()) then(std::move(status));
    });
  }

  // Atomic mode: ends the leg's transaction; the connection then goes back to the pool.
  void endTransaction(const std::string& sql, std::function<void(Status)> then) {
    if (server_ == nullptr) {
      then({});
      return;
    }
    std::weak_ptr<Leg> weak = self_;
    backends::ServerConnection* server = server_;
    server->runInternal(sql, [weak, server, then = std::move(then)](Status status) {
      auto leg = weak.lock();
      if (!leg) return;
      leg->server_ = nullptr;
      server->detach();
      if (leg->held_ && status.ok() && server->transactionStatus() == 'I') {
        leg->run_.host_.multiShardReturnHeldServer(leg->shard_, server, leg->pool_);
        then(std::move(status));
        return;
      }
      leg->pool_->release(server,
                          status.ok() && server->transactionStatus() == 'I' && !leg->cancelled_
                              ? backends::Pool::Release::kClean
                              : backends::Pool::Release::kClose,
                          backends::monotonicMs());
      then(std::move(status));
    });
  }

  // The client left or the run is going away: give back or close what is held.
  void abandon() {
    if (waiting_ && pool_) {
      pool_->cancelWait(this);
      waiting_ = false;
    }
    if (server_) {
      backends::ServerConnection* server = server_;
      server_ = nullptr;
      if (!done_) {
        // Its statement is still running for a client that has gone: stop it.
        backends::sendCancelRequest(run_.host_.multiShardLoop(), *server);
      }
      server->detach();
      pool_->release(server, backends::Pool::Release::kClose, backends::monotonicMs());
    }
    done_ = true;
  }

  // PoolWaiter
  void onServerAcquired(backends::ServerConnection* server) override {
    waiting_ = false;
    server_ = server;
    server_->attach(this);
    std::weak_ptr<Leg> weak = self_;
    run_.host_.multiShardSync(server_, [weak](Status status) {
      auto leg = weak.lock();
      if (!leg || leg->done_) return;
      if (!status.ok()) {
        leg->finishWith(status.error());
        return;
      }
      leg->sendStatement(/*begin=*/leg->run_.request_.in_transaction || leg->run_.request_.atomic);
    });
  }

  void onServerUnavailable(const Error& error) override {
    waiting_ = false;
    finishWith(error);
  }

  backends::ConnectionHolder* holder() override { return run_.host_.multiShardHolder(); }

  // ServerSink
  void onServerBytes(std::string_view bytes) override {
    size_t used = 0;
    wire::Frame frame;
    while (used < bytes.size()) {
      if (wire::peekTyped(bytes.substr(used), kMaxServerMessage, frame) !=
          wire::FrameStatus::kComplete) {
        break;  // the server connection only hands over whole messages
      }
      run_.legMessage(*this, frame.type, bytes.substr(used, frame.size), frame.payload);
      used += frame.size;
    }
    run_.flushMergerIfPending();  // once per read, not per row
  }

  void onServerReadyForQuery(char transaction_status) override {
    backends::ServerConnection* server = server_;
    server_ = nullptr;
    server->detach();
    run_.noteTransactionStatus(transaction_status);
    if (run_.request_.in_transaction) {
      run_.host_.multiShardKeepServer(shard_, server, pool_);
    } else if (run_.request_.atomic) {
      server_ = server;  // its transaction waits for the other shards' outcome
      server_->attach(this);
    } else if (held_ && transaction_status == 'I') {
      run_.host_.multiShardReturnHeldServer(shard_, server, pool_);
    } else {
      // A shard left inside a transaction (it should not be) is not reused, nor one a cancel
      // request may still reach (it would cancel the next client's statement).
      pool_->release(server,
                     transaction_status == 'I' && !cancelled_ ? backends::Pool::Release::kClean
                                                              : backends::Pool::Release::kClose,
                     backends::monotonicMs());
    }
    done_ = true;
    run_.legDone(*this);
  }

  void onServerLost(const Error& error) override {
    server_ = nullptr;
    finishWith(error);
  }

  bool sinkCongested() const override {
    return run_.host_.multiShardClientCongested() ||
           (run_.merger_ && !run_.merger_->wantsMore(index_));
  }

  void onStatementFailed(const std::string&) override {}
  void onServerCommandComplete(std::string_view) override {}
  void onServerErrorResponse() override {}
  void onServerCaughtUp() override {}
  void onServerParameterStatus(std::string_view) override {}
  void onServerWriteDrained() override {
    if (copy_ready_) run_.host_.multiShardCopyDrained();
  }

 private:
  void sendStatement(bool begin) {
    const Request& r = run_.request_;
    std::string out;
    if (begin) {
      // This shard joins the session's transaction: its replies are not the client's (an error
      // still is, and fails the statement).
      wire::Query{r.begin_sql.empty() ? std::string("BEGIN") : r.begin_sql}.encode(out);
      SessionSettings::noteSentSql(*server_, r.begin_sql);
      server_->forward(out);
      server_->noteUnnamedStatementDropped();
      server_->expect(backends::ExpectedReply{
          backends::Reply::kReadyForQuery, backends::ReplyAction::kSwallow, nullptr, {}, {}});
      out.clear();
    }
    if (r.plan->kind == planner::MultiShardPlan::Kind::kCopyIn ||
        r.plan->kind == planner::MultiShardPlan::Kind::kCopyOut) {
      // COPY as a simple query: the shard answers CopyInResponse and waits for rows, or
      // CopyOutResponse and sends them.
      wire::Query{statement_.sql}.encode(out);
      server_->forward(out);
      server_->noteUnnamedStatementDropped();
      server_->expect(backends::Reply::kReadyForQuery);
      return;
    }
    // Every Bind value goes to every shard, but a shard's statement may not use them all (a
    // rewritten LIMIT, a split INSERT): a parameter it does not use gets a type that accepts any
    // value (text, or bytea in binary), as Postgres cannot infer one.
    const auto clientFormat = [&](size_t i) -> int16_t {
      return r.param_formats.empty()       ? 0
             : r.param_formats.size() == 1 ? r.param_formats[0]
                                           : r.param_formats.at(i);
    };
    std::vector<int32_t> types;
    wire::Bind bind;
    if (statement_.params.empty()) {
      types = r.param_types;
      bind.param_formats = r.param_formats;
      bind.params = r.params;
    } else {
      // This shard's statement takes some of the client's parameters, renumbered.
      for (int32_t client_param : statement_.params) {
        const size_t i = static_cast<size_t>(client_param - 1);
        types.push_back(i < r.param_types.size() ? r.param_types[i] : 0);
        bind.param_formats.push_back(clientFormat(i));
        bind.params.push_back(i < r.params.size() ? r.params[i] : std::nullopt);
      }
    }
    if (types.size() < bind.params.size()) types.resize(bind.params.size(), 0);
    const std::vector<bool>& used = statement_.referenced_params;
    for (size_t i = 0; i < types.size(); ++i) {
      if ((i < used.size() && used[i]) || types[i] != 0) continue;
      const int16_t format = bind.param_formats.empty()       ? 0
                             : bind.param_formats.size() == 1 ? bind.param_formats[0]
                                                              : bind.param_formats.at(i);
      types[i] = format == 1 ? 17 /* bytea */ : 25 /* text */;
    }
    wire::Parse{"", statement_.sql, types}.encode(out);
    bind.result_formats = run_.shardResultFormats();
    bind.encode(out);
    wire::Describe{'P', ""}.encode(out);
    wire::Execute{"", 0}.encode(out);
    wire::Sync{}.encode(out);
    server_->forward(out);
    server_->noteUnnamedStatementDropped();  // the unnamed statement is ours now, not any client's
    server_->expect(backends::Reply::kParseComplete);
    server_->expect(backends::Reply::kBindComplete);
    server_->expect(backends::Reply::kDescription);
    server_->expect(backends::Reply::kExecution);
    server_->expect(backends::Reply::kReadyForQuery);
  }

  void finishWith(const Error& error) {
    if (done_) return;
    if (server_) {
      backends::ServerConnection* server = server_;
      server_ = nullptr;
      server->detach();
      pool_->release(server, backends::Pool::Release::kClose, backends::monotonicMs());
    }
    done_ = true;
    run_.legFailed(*this, error);
  }

  MultiShardRun& run_;
  size_t index_;
  uint32_t shard_;
  // Part of the run's plan (Request::plan keeps it alive). Its params map this shard's $i to the
  // client's $params[i-1] (if any).
  const planner::ShardStatement& statement_;
  std::weak_ptr<Leg> self_;
  backends::Pool* pool_ = nullptr;
  backends::ServerConnection* server_ = nullptr;
  bool waiting_ = false;
  bool done_ = false;
  bool copy_ready_ = false;        // in copy-in mode (CopyInResponse seen)
  bool copy_header_seen_ = false;  // COPY TO: this shard's header row / file header went by
  bool cancelled_ = false;         // a cancel request was sent: the connection is not reused
  bool held_ = false;              // the pinned session's connection (Request::held_shard)
};

MultiShardRun::MultiShardRun(MultiShardHost& host, Request request)
    : host_(host), request_(std::move(request)) {}

MultiShardRun::~MultiShardRun() {
  abandon();
}

void MultiShardRun::start() {
  const planner::MultiShardPlan& plan = *request_.plan;
  if (plan.kind == planner::MultiShardPlan::Kind::kRead && plan.merge) {
    executor::MergeOptions options;
    options.shard_count = plan.statements.size();
    options.limit = request_.limit;
    options.offset = request_.offset;
    options.max_buffered_bytes = request_.max_merge_bytes;
    options.collation = request_.collation;
    options.extra_float_digits = request_.extra_float_digits;
    options.client_utf8 = request_.client_utf8;
    auto merger = executor::ResultMerger::create(plan.merge, std::move(options));
    if (!merger.ok()) {
      fail(merger.error());
      maybeFinish();
      return;
    }
    merger_ = std::move(merger).value();
  }
  if (plan.kind == planner::MultiShardPlan::Kind::kCopyIn && plan.copy) {
    splitter_ = std::make_unique<executor::CopySplitter>(*plan.copy, request_.client_utf8);
  }
  if (!plan.returning_statements.empty()) returning_rows_.resize(plan.statements.size());
  legs_.reserve(plan.statements.size());
  for (size_t i = 0; i < plan.statements.size(); ++i) {
    legs_.push_back(std::make_shared<Leg>(*this, i, plan.statements[i]));
  }
  // Acquisitions may complete (and even fail) at once: every leg exists before any starts.
  for (auto& leg : legs_) {
    if (finished_) break;
    leg->start(leg);
  }
  maybeFinish();
}

void MultiShardRun::resume() {
  for (auto& leg : legs_) leg->resume();
}

void MultiShardRun::abandon() {
  abandoned_ = true;
  for (auto& leg : legs_) leg->abandon();
}

void MultiShardRun::cancel(bool held_too) {
  for (auto& leg : legs_) leg->cancel(host_.multiShardLoop(), held_too);
}

// Shard results are asked for in text, except the client's visible columns, which come in the
// format the client asked for.
std::vector<int16_t> MultiShardRun::shardResultFormats() const {
  const std::vector<int16_t>& client = request_.result_formats;
  const planner::MergePlan* merge = request_.plan->merge.get();
  if (client.empty() || merge == nullptr) return client;
  // One code for every column (hidden ones too) when the client asked the same for all.
  if (std::all_of(client.begin(), client.end(), [&](int16_t f) { return f == client[0]; })) {
    return {client[0]};
  }
  if (merge->visible_columns.empty()) {
    // SELECT * with hidden sort columns first: the client's columns are the rest.
    std::vector<int16_t> formats(merge->leading_hidden, 0);
    formats.insert(formats.end(), client.begin(), client.end());
    return formats;
  }
  // Mixed formats: one per shard column, hidden ones in text.
  uint32_t width = merge->shard_columns;
  const auto see = [&](uint32_t column) { width = std::max(width, column + 1); };
  for (uint32_t c : merge->visible_columns) see(c);
  for (uint32_t c : merge->group_columns) see(c);
  for (const planner::MergeSortKey& key : merge->sort) see(key.column);
  for (const planner::MergeAggregate& aggregate : merge->aggregates) {
    for (uint32_t c : aggregate.inputs) see(c);
  }
  std::vector<int16_t> formats(width, 0);  // hidden columns in text
  for (size_t i = 0; i < merge->visible_columns.size(); ++i) {
    formats[merge->visible_columns[i]] = i < client.size() ? client[i] : client[0];
  }
  return formats;
}

void MultiShardRun::legMessage(Leg& leg, char type, std::string_view message,
                               std::string_view payload) {
  switch (type) {
    case wire::be::kRowDescription:
      if (error_) return;
      if (merger_) {
        Status status = merger_->setRowDescription(leg.index(), payload);
        if (status.ok()) status = checkResultShape(merger_->clientRowDescription());
        if (!status.ok()) {
          fail(status.error());
          return;
        }
        if (!description_sent_ && request_.send_row_description) {
          std::string out;
          wire::MessageWriter(out, wire::be::kRowDescription)
              .bytes(merger_->clientRowDescription())
              .finish();
          host_.multiShardOutput(out);
        }
      } else {
        if (Status status = checkResultShape(payload); !status.ok()) {
          fail(status.error());
          return;
        }
        if (!description_sent_ && request_.send_row_description) host_.multiShardOutput(message);
      }
      description_sent_ = true;
      return;
    case wire::be::kNoData:
      // The shards are asked in the extended protocol; a simple Query's reply has no NoData.
      if (!description_sent_ && request_.send_row_description && request_.extended) {
        host_.multiShardOutput(message);
      }
      description_sent_ = true;
      return;
    case wire::be::kDataRow:
      if (error_) return;
      if (merger_) {
        Status status = merger_->addRow(leg.index(), payload);
        if (!status.ok()) {
          fail(status.error());
          return;
        }
        merge_pending_ = true;
      } else if (!returning_rows_.empty()) {
        returning_rows_[leg.index()].emplace_back(message);
      } else if (!request_.plan->replicated || leg.index() == 0) {
        // A write to a reference table returns the same rows from every shard: one copy.
        host_.multiShardOutput(message);
        ++rows_passed_;
      }
      return;
    case wire::be::kCommandComplete: {
      auto complete = wire::CommandComplete::decode(payload);
      // A reference table's copies each report the same count: the first shard's is the answer.
      if (complete.ok() && (!request_.plan->replicated || leg.index() == 0)) {
        std::string_view tag = complete->tag;
        size_t space = tag.rfind(' ');
        uint64_t rows = 0;
        if (space != std::string_view::npos &&
            std::from_chars(tag.data() + space + 1, tag.data() + tag.size(), rows).ec ==
                std::errc() &&
            countedVerb(tag.substr(0, space))) {
          tag_verb_ = std::string(tag.substr(0, space));
          tag_rows_ += rows;
          tag_counts_ = true;
        } else if (tag_verb_.empty()) {
          tag_verb_ = std::string(tag);
        }
      }
      if (merger_ && !error_) {
        merger_->shardFinished(leg.index());
        flushMerger();
      }
      return;
    }
    case wire::be::kErrorResponse: {
      auto response = wire::ErrorResponse::decode(payload);
      Error error = response.ok()
                        ? response->toError()
                        : Error::make(sqlstate::kInternalError, "malformed error from shard");
      fail(namingShard(std::move(error), leg.shard()));
      return;
    }
    case wire::be::kNoticeResponse:
      // DDL and reference-table writes do the same on every shard: one shard's notices ("table
      // does not exist, skipping") are the client's, as from one Postgres.
      if ((request_.plan->kind == planner::MultiShardPlan::Kind::kDdl ||
           request_.plan->replicated) &&
          leg.index() != 0) {
        return;
      }
      host_.multiShardOutput(message);
      return;
    case wire::be::kNotificationResponse:
      host_.multiShardOutput(message);
      return;
    case wire::be::kCopyInResponse:
      legCopyReady(leg, message);
      return;
    case wire::be::kCopyOutResponse:
      // Every shard runs the same COPY, so their responses are the same: the client gets one.
      if (!error_ && !copy_out_started_) {
        copy_out_started_ = true;
        host_.multiShardOutput(message);
      }
      return;
    case wire::be::kCopyData:
      if (!error_) copyOutData(leg, message, payload);
      return;
    default:
      // ParseComplete, BindComplete, EmptyQueryResponse, ReadyForQuery (seen through
      // onServerReadyForQuery), ParameterStatus: nothing for the client.
      return;
  }
}

// COPY TO STDOUT: a shard's CopyData (one row each). A CSV or text header row and the binary
// file header come first in each shard's output: the client gets the first shard's, once. The
// binary trailer (a field count of -1) ends each shard's output: the client gets one at the end.
// Clients expect the binary file header in the same CopyData as the first row (Postgres sends it
// so), so it waits for the first row or the trailer.
void MultiShardRun::copyOutData(Leg& leg, std::string_view message, std::string_view data) {
  const planner::MultiShardPlan& plan = *request_.plan;
  std::string_view rows = data;
  if (!leg.copyHeaderSeen() && (plan.copy_out_header || plan.copy_out_binary)) {
    leg.setCopyHeaderSeen();
    std::string_view header = data;  // text / csv: the header line is its own CopyData
    if (plan.copy_out_binary) {
      // Signature (11 bytes), flags (int32), header extension length (int32) and extension.
      constexpr size_t kFixed = 19;
      size_t length = kFixed;
      if (data.size() >= kFixed) {
        const auto byte = [&](size_t i) { return static_cast<uint8_t>(data[i]); };
        const uint32_t extension = (uint32_t{byte(15)} << 24) | (uint32_t{byte(16)} << 16) |
                                   (uint32_t{byte(17)} << 8) | uint32_t{byte(18)};
        length += std::min<size_t>(extension, data.size() - kFixed);
      }
      header = data.substr(0, std::min(length, data.size()));
    }
    rows = data.substr(header.size());
    if (!copy_header_sent_) {
      copy_header_sent_ = true;
      if (plan.copy_out_binary) {
        copy_binary_header_ = std::string(header);
      } else {
        host_.multiShardOutput(message);
      }
    }
  }
  static constexpr std::string_view kBinaryTrailer("\xff\xff", 2);
  if (rows.empty() || (plan.copy_out_binary && rows == kBinaryTrailer)) return;
  if (rows.size() == data.size() && copy_binary_header_.empty()) {
    host_.multiShardOutput(message);  // the common case: one row, passed on as it came
    return;
  }
  std::string out;
  wire::MessageWriter(out, wire::be::kCopyData).bytes(copy_binary_header_).bytes(rows).finish();
  copy_binary_header_.clear();
  host_.multiShardOutput(out);
}

void MultiShardRun::flushMergerIfPending() {
  if (merge_pending_ && merger_ && !error_ && !finished_) flushMerger();
}

void MultiShardRun::flushMerger() {
  merge_pending_ = false;
  merge_out_.clear();  // keeps its capacity: rows are copied out once per read
  Status status = merger_->drain(merge_out_);
  if (!merge_out_.empty()) host_.multiShardOutput(merge_out_);
  if (!status.ok()) {
    fail(status.error());
    return;
  }
  resume();  // draining made room: shards paused by the merger may read on
}

// A shard's error as the client gets it: the shard's name in DETAIL, after the shard's own.
Error MultiShardRun::namingShard(Error error, uint32_t shard) const {
  const std::string where = "shardgate: the error happened on " + host_.multiShardShardName(shard);
  error.detail = error.detail.empty() ? where : error.detail + "\n" + where;
  // A shard's FATAL (57P01 when it shuts down) ends that shard's connection, not the client's
  // session, which goes on to ReadyForQuery: a FATAL there would tell the client otherwise.
  if (error.severity == "FATAL" || error.severity == "PANIC") error.severity = "ERROR";
  return error;
}

void MultiShardRun::legDone(Leg&) {
  maybeFinish();
}

void MultiShardRun::legCopyReady(Leg& leg, std::string_view message) {
  leg.setCopyReady();
  if (copy_ended_) {
    // The copy already failed elsewhere: end this shard's at once.
    std::string out;
    wire::MessageWriter(out, wire::fe::kCopyFail).cstring("COPY failed on another shard").finish();
    leg.server()->forward(out);
    return;
  }
  if (copy_response_.empty()) copy_response_ = std::string(message);
  if (++copy_ready_ < legs_.size()) return;
  host_.multiShardOutput(copy_response_);
  copy_in_ = true;
  host_.multiShardCopyReady();
}

bool MultiShardRun::copyCongested(size_t limit) const {
  size_t unsent = 0;
  for (const auto& leg : legs_) {
    if (leg->server()) unsent += leg->server()->unsentBytes();
  }
  return unsent > limit;
}

void MultiShardRun::copyFromClient(char type, std::string_view payload) {
  if (!copy_in_) return;
  if (type == wire::fe::kCopyData) {
    if (error_) return;  // dropped, as Postgres drops rows after a failure
    if (!splitter_) {
      // A reference table: every shard gets every row.
      std::string out;
      wire::MessageWriter(out, wire::fe::kCopyData).bytes(payload).finish();
      for (auto& leg : legs_) {
        if (leg->server()) leg->server()->forward(out);
      }
      return;
    }
    if (Status s = splitter_->feed(payload); !s.ok()) {
      fail(s.error());
      maybeFinish();
      return;
    }
    flushCopyRows();
    return;
  }
  copy_in_ = false;  // CopyDone or CopyFail: the client sends no more rows
  if (type == wire::fe::kCopyDone && !error_ && !splitter_) {
    endCopy(wire::fe::kCopyDone, {});
    return;
  }
  if (type == wire::fe::kCopyDone && !error_) {
    if (Status s = splitter_->finish(); !s.ok()) {
      fail(s.error());
      maybeFinish();
      return;
    }
    flushCopyRows();
    endCopy(wire::fe::kCopyDone, {});
    return;
  }
  if (!copy_ended_) {
    std::string_view reason = payload;
    if (!reason.empty() && reason.back() == '\0') reason.remove_suffix(1);
    endCopy(wire::fe::kCopyFail, type == wire::fe::kCopyFail ? reason : "COPY failed");
  }
}

void MultiShardRun::flushCopyRows() {
  std::vector<std::string>& buffers = splitter_->shardBuffers();
  for (size_t i = 0; i < buffers.size() && i < legs_.size(); ++i) {
    if (buffers[i].empty()) continue;
    backends::ServerConnection* server = legs_[i]->server();
    if (server != nullptr) {
      std::string out;
      out.reserve(buffers[i].size() + 5);
      wire::MessageWriter(out, wire::fe::kCopyData).bytes(buffers[i]).finish();
      server->forward(out);
    }
    buffers[i].clear();
  }
}

// Ends every shard's COPY the same way: CopyDone commits the rows, CopyFail rolls them back.
void MultiShardRun::endCopy(char type, std::string_view payload) {
  copy_ended_ = true;
  for (auto& leg : legs_) {
    backends::ServerConnection* server = leg->server();
    if (server == nullptr || leg->done() || !leg->copyReady()) continue;
    std::string out;
    if (type == wire::fe::kCopyDone) {
      wire::MessageWriter(out, wire::fe::kCopyDone).finish();
    } else {
      wire::MessageWriter(out, wire::fe::kCopyFail).cstring(payload).finish();
    }
    server->forward(out);
  }
}

void MultiShardRun::noteTransactionStatus(char status) {
  if (status == 'E' || (status == 'T' && transaction_status_ == 'I')) transaction_status_ = status;
}

void MultiShardRun::legFailed(Leg& leg, const Error& error) {
  fail(namingShard(error, leg.shard()));
  maybeFinish();
}

// Postgres revalidates a prepared statement before it runs it and refuses one whose result
// changed (a column added or dropped since): the client decodes rows by the description it was
// given. The shards here plan the statement afresh each time, so shardgate checks.
Status MultiShardRun::checkResultShape(std::string_view client_description) {
  const std::shared_ptr<backends::PreparedStatement>& statement = request_.statement;
  if (!statement) return {};
  if (!statement->described()) {
    // Told now (a Describe of the portal): later runs must keep it.
    if (request_.send_row_description)
      statement->noteDescribed(wire::be::kRowDescription, client_description);
    return {};
  }
  if (statement->sameResultShape(wire::be::kRowDescription, client_description)) {
    return {};
  }
  return Error::make(sqlstate::kFeatureNotSupported, "cached plan must not change result type");
}

void MultiShardRun::fail(Error error) {
  // A failure fails the session's transaction, whichever shard it happened on.
  if (request_.in_transaction) transaction_status_ = 'E';
  if (error_) return;
  error_ = std::move(error);
  merger_.reset();  // no more rows for the client
  if (splitter_ && !copy_ended_) {
    // Every shard's COPY must fail too: none may commit part of the rows.
    endCopy(wire::fe::kCopyFail, "COPY failed on another shard");
  }
  // A read that failed on one shard need not finish on the others. Not inside a transaction: its
  // connections stay in it, and a cancel request that arrives late would cancel its next
  // statement there (the ROLLBACK, or what runs after it on a connection back in the pool).
  if (request_.plan->kind == planner::MultiShardPlan::Kind::kRead && !request_.in_transaction) {
    cancel(/*held_too=*/false);
  }
}

void MultiShardRun::awaitedPools(std::vector<const backends::Pool*>& out) const {
  for (const auto& leg : legs_) {
    if (leg->waiting()) out.push_back(leg->pool());
  }
}

uint64_t MultiShardRun::waitingSinceMs() const {
  uint64_t since = 0;
  for (const auto& leg : legs_) {
    if (leg->waiting() && (since == 0 || leg->waitStartedMs() < since)) {
      since = leg->waitStartedMs();
    }
  }
  return since;
}

void MultiShardRun::failWaits(const Error& error) {
  // (Failing a leg may finish the run: walk a copy.)
  std::vector<std::shared_ptr<Leg>> legs = legs_;
  for (const auto& leg : legs) leg->failWait(error);
}

std::string MultiShardRun::commandTag() const {
  const planner::MultiShardPlan& plan = *request_.plan;
  if (plan.kind == planner::MultiShardPlan::Kind::kRead) {
    uint64_t rows = merger_ ? merger_->rowsOut() : rows_passed_;
    return "SELECT " + std::to_string(rows);
  }
  if (tag_counts_) return tag_verb_ + " " + std::to_string(tag_rows_);
  return tag_verb_;
}

void MultiShardRun::maybeFinish() {
  if (finished_ || abandoned_ || ending_) return;
  for (const auto& leg : legs_) {
    if (!leg->done()) return;
  }
  if (request_.atomic) {
    ending_ = true;
    if (error_) {
      endNextLeg(0, "ROLLBACK");
    } else {
      checkDeferredThenCommit();
    }
    return;
  }
  finish();
}

// Atomic mode, before any shard commits: deferred constraints and triggers are checked on every
// shard (SET CONSTRAINTS ALL IMMEDIATE runs them), so that one failing fails the statement on all
// of them, instead of failing one shard's COMMIT after others have committed.
void MultiShardRun::checkDeferredThenCommit() {
  committing_ = true;
  const auto checked = [this](Status status) {
    if (!status.ok() && !error_) error_ = status.error();
    if (--checks_pending_ == 0) endNextLeg(0, error_ ? "ROLLBACK" : "COMMIT");
  };
  // One more than the legs, taken back after the loop: a leg that answers at once cannot end
  // the run (and free the legs) while the loop still walks them.
  checks_pending_ = legs_.size() + 1;
  for (auto& leg : legs_) leg->runInTransaction("SET CONSTRAINTS ALL IMMEDIATE", checked);
  checked({});
}

// Atomic mode: the shards' transactions end one after the other; a COMMIT that fails turns the
// rest into ROLLBACKs (the shards committed before it keep their rows: no two-phase commit yet).
void MultiShardRun::endNextLeg(size_t index, std::string sql) {
  if (abandoned_) return;
  if (index >= legs_.size()) {
    finish();
    return;
  }
  Leg& leg = *legs_[index];
  leg.endTransaction(sql, [this, index, sql, shard = leg.shard()](Status status) {
    std::string next = sql;
    if (!status.ok() && sql == "COMMIT") {
      Error e = status.error();
      e.detail = "COMMIT failed on " + host_.multiShardShardName(shard) +
                 (index > 0 ? "; the shards committed before it keep their changes" : "");
      if (!error_) error_ = std::move(e);
      next = "ROLLBACK";
    }
    endNextLeg(index + 1, next);
  });
}

void MultiShardRun::sendReturningRowsInOrder(std::string& out) {
  if (returning_rows_.empty()) return;
  std::vector<size_t> next(returning_rows_.size(), 0);
  for (uint32_t leg : request_.plan->returning_statements) {
    if (leg >= returning_rows_.size() || next[leg] >= returning_rows_[leg].size()) continue;
    out += returning_rows_[leg][next[leg]++];
    ++rows_passed_;
  }
  for (size_t leg = 0; leg < returning_rows_.size(); ++leg) {  // more than rows sent: all the same
    for (size_t i = next[leg]; i < returning_rows_[leg].size(); ++i) {
      out += returning_rows_[leg][i];
      ++rows_passed_;
    }
  }
  returning_rows_.clear();
}

void MultiShardRun::finish() {
  finished_ = true;
  std::string out;
  // The statement succeeded on every shard and its implicit transaction failed to commit (a
  // deferred constraint or trigger, or a COMMIT). Through the extended protocol Postgres answers
  // the Execute first and fails at the Sync, where it commits: the statement's reply goes out,
  // then the error. (A simple Query commits before its CommandComplete: the error replaces it.)
  std::optional<Error> commit_error;
  if (error_ && committing_ && request_.extended) commit_error = std::exchange(error_, {});
  if (!error_) {
    if (merger_) {
      Status status = merger_->drain(out);
      if (!status.ok()) error_ = status.error();
    }
  }
  if (error_) {
    wire::writeError(out, *error_);
  } else {
    sendReturningRowsInOrder(out);
    if (copy_out_started_) {
      if (request_.plan->copy_out_binary) {
        wire::MessageWriter(out, wire::be::kCopyData)
            .bytes(copy_binary_header_)  // no shard sent a row: the header goes with the trailer
            .bytes(std::string_view("\xff\xff", 2))
            .finish();
      }
      wire::MessageWriter(out, wire::be::kCopyDone).finish();
    }
    wire::CommandComplete{commandTag()}.encode(out);
  }
  if (commit_error && !error_) {
    wire::writeError(out, *commit_error);
    error_ = std::move(commit_error);
  }
  host_.multiShardOutput(out);
  host_.multiShardFinished(error_);
}

}  // namespace shardgate::proxy
