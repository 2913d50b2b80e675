// MultiShardRun: one statement running on several shards at once, their replies merged into the
// one answer the client gets (rows concatenated or merged by the executor, command tags summed).
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "backends/pool.h"
#include "backends/server_connection.h"
#include "common/error.h"
#include "planner/multi_shard_plan.h"
#include "planner/router.h"

namespace shardgate::executor {
class ResultMerger;
class CopySplitter;
}  // namespace shardgate::executor

namespace shardgate::proxy {

// What the run needs from the session that started it.
class MultiShardHost {
 public:
  virtual ~MultiShardHost() = default;
  // The pool of the server that runs the statement on `shard` (primary, or a replica for reads).
  virtual backends::Pool& multiShardPool(uint32_t shard, planner::Role role) = 0;
  // Brings a freshly acquired server in line with the session's settings, then calls `then`
  // (with an error if that failed).
  virtual void multiShardSync(backends::ServerConnection* server,
                              std::function<void(Status)> then) = 0;
  // A connection the session holds in its open transaction on `shard`, handed to the run (nullptr:
  // none; the run then acquires one and begins the transaction there with Request::begin_sql).
  virtual backends::ServerConnection* multiShardTakeServer(uint32_t shard,
                                                           backends::Pool** pool) = 0;
  // After the statement, a connection inside the session's transaction goes back to the session.
  virtual void multiShardKeepServer(uint32_t shard, backends::ServerConnection* server,
                                    backends::Pool* pool) = 0;
  // After the statement, the connection a pinned session holds (Request::held_shard) is its
  // again.
  virtual void multiShardReturnHeldServer(uint32_t shard, backends::ServerConnection* server,
                                          backends::Pool* pool) = 0;
  // Bytes for the client (whole messages).
  virtual void multiShardOutput(std::string_view bytes) = 0;
  // True while the client's output is over its limit (the shards' reads pause).
  virtual bool multiShardClientCongested() const = 0;
  // COPY FROM STDIN: every shard is ready for rows (the client got CopyInResponse).
  virtual void multiShardCopyReady() = 0;
  // COPY FROM STDIN: a shard took the rows written to it (the client's may flow again).
  virtual void multiShardCopyDrained() = 0;
  // The run ended (every shard answered or failed); the client got everything but the
  // ReadyForQuery. `error` is set if the statement failed. Called once; the host may destroy the
  // run only after this call returned.
  virtual void multiShardFinished(const std::optional<Error>& error) = 0;
  // The loop the run's connections live on (for cancel requests).
  virtual LoopContext& multiShardLoop() = 0;
  // A shard's name for messages ("shard1").
  virtual std::string multiShardShardName(uint32_t shard) const = 0;
  // Who holds the run's connections, for deadlock detection (nullptr: none to name).
  virtual backends::ConnectionHolder* multiShardHolder() { return nullptr; }
};

class MultiShardRun {
 public:
  struct Request {
    std::shared_ptr<const planner::MultiShardPlan> plan;
    planner::Role role = planner::Role::kPrimary;
    bool send_row_description = true;  // simple protocol; extended: the client sent Describe
    bool extended = false;             // the client's protocol (NoData exists only there)
    // Extended protocol: the client's Bind (parameters and formats) and parameter types. The
    // simple protocol sends no parameters and wants text.
    std::vector<int32_t> param_types;
    std::vector<int16_t> param_formats;
    std::vector<std::optional<std::string>> params;
    std::vector<int16_t> result_formats;  // the client's, per visible column (or none / one)
    // The client's named statement being run: its result must keep the shape its clients were
    // told (a table changed since gets Postgres's error for a cached plan whose result changed).
    std::shared_ptr<backends::PreparedStatement> statement;
    std::optional<int64_t> limit;  // evaluated MergePlan::limit / offset
    std::optional<int64_t> offset;
    size_t max_merge_bytes = 64u << 20;
    // Inside a transaction block: connections stay in the session's transaction afterwards, and
    // a shard joining it first runs `begin_sql` (BEGIN as the client wrote it, and what ran before
    // on every shard).
    bool in_transaction = false;
    std::string begin_sql;
    // Outside a transaction, a session pinned to its connection (LISTEN, WITH HOLD cursor, ...)
    // lends it for its shard: the pool may have no other (and would wait for this one).
    std::optional<uint32_t> held_shard;
    // Outside a transaction block, a write to several shards runs in a transaction on each and
    // commits them one after the other only if every shard succeeded (else rolls them all back).
    bool atomic = false;
    std::string collation = "C";
    int extra_float_digits = 1;  // the session's: how merged floats are printed
    bool client_utf8 = true;     // COPY rows' keys: see planner::requireKeyInServerEncoding
  };

  MultiShardRun(MultiShardHost& host, Request request);
  ~MultiShardRun();
  MultiShardRun(const MultiShardRun&) = delete;
  MultiShardRun& operator=(const MultiShardRun&) = delete;

  // Acquires a server per shard and sends each its statement.
  void start();
  // The client's output drained: shards paused for it may read again.
  void resume();
  // The client left: servers still working are closed, waits abandoned.
  void abandon();
  bool finished() const { return finished_; }
  // Atomic mode: the shards' transactions are being committed (or checked just before): a client
  // that leaves now must not stop it half way.
  bool committing() const { return committing_ && !finished_; }
  // COPY FROM STDIN: every shard is in copy-in mode and the client was told to send its rows.
  bool acceptsCopyData() const { return copy_in_; }
  // The shards' connections hold more unsent rows than the client buffer limit: wait.
  bool copyCongested(size_t limit) const;
  // A CopyData ('d'), CopyDone ('c') or CopyFail ('f') from the client.
  void copyFromClient(char type, std::string_view payload);
  // The transaction status the shards reported: 'E' if any transaction failed, else 'T' or 'I'.
  char transactionStatus() const { return transaction_status_; }
  // Cancels the statement on every shard still running it (held_too: on a pinned session's own
  // connection too; the client's cancel request does).
  void cancel(bool held_too = true);
  // Deadlock detection: the pools its shards still wait on for a connection, since when, and
  // ending those waits with `error` (the run then fails with it).
  void awaitedPools(std::vector<const backends::Pool*>& out) const;
  uint64_t waitingSinceMs() const;
  void failWaits(const Error& error);

 private:
  class Leg;
  friend class Leg;

  void legReady(Leg& leg);
  void legMessage(Leg& leg, char type, std::string_view message, std::string_view payload);
  void legDone(Leg& leg);
  void noteTransactionStatus(char status);
  void legCopyReady(Leg& leg, std::string_view message);
  void copyOutData(Leg& leg, std::string_view message, std::string_view data);
  void flushCopyRows();
  void endNextLeg(size_t index, std::string sql);
  void finish();
  void endCopy(char type, std::string_view payload);
  void legFailed(Leg& leg, const Error& error);
  void fail(Error error);
  Status checkResultShape(std::string_view client_description);
  Error namingShard(Error error, uint32_t shard) const;
  void flushMerger();
  void flushMergerIfPending();
  void maybeFinish();
  std::string commandTag() const;
  std::vector<int16_t> shardResultFormats() const;

  MultiShardHost& host_;
  Request request_;
  std::vector<std::shared_ptr<Leg>> legs_;
  std::unique_ptr<executor::ResultMerger> merger_;
  std::optional<Error> error_;
  bool description_sent_ = false;
  bool merge_pending_ = false;  // rows added since the last drain
  std::string merge_out_;       // drained rows on their way to the client
  bool finished_ = false;
  bool abandoned_ = false;
  // Command tag totals.
  std::string tag_verb_;  // "SELECT", "INSERT 0", "UPDATE", ... (DDL: the whole tag)
  uint64_t tag_rows_ = 0;
  bool tag_counts_ = false;
  uint64_t rows_passed_ = 0;
  // plan->returning_statements: each leg's RETURNING rows (framed DataRows), held for the
  // client's order.
  std::vector<std::deque<std::string>> returning_rows_;
  void sendReturningRowsInOrder(std::string& out);
  char transaction_status_ = 'I';
  // COPY FROM STDIN
  std::unique_ptr<executor::CopySplitter> splitter_;
  size_t copy_ready_ = 0;      // legs in copy-in mode
  std::string copy_response_;  // the first shard's CopyInResponse, for the client
  bool copy_in_ = false;       // the client sends rows
  bool copy_ended_ = false;    // CopyDone / CopyFail sent to the shards
  bool ending_ = false;        // atomic: COMMIT / ROLLBACK running on the legs
  bool committing_ = false;    // ... and it is a COMMIT (or the checks before it)
  size_t checks_pending_ = 0;  // legs still checking their deferred constraints
  void checkDeferredThenCommit();
  // COPY TO STDOUT
  bool copy_out_started_ = false;   // the client got CopyOutResponse
  bool copy_header_sent_ = false;   // the header row / binary file header went (or waits below)
  std::string copy_binary_header_;  // the binary file header, sent with the first row
};

}  // namespace shardgate::proxy
