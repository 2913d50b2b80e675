// ClientSession's multi-shard statements: starting a run over several shards, the extended-protocol
// messages of its batch, its portals kept after the run (suspended or completed), and its output.
#include <algorithm>
#include <charconv>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/log.h"
#include "parser/parser.h"
#include "proxy/client_session.h"
#include "proxy/client_session_internal.h"
#include "proxy/wire/backend_messages.h"
#include "proxy/wire/framing.h"
#include "proxy/wire/frontend_messages.h"
#include "proxy/wire/payload.h"
#include "proxy/wire/protocol.h"
#include "proxy/worker.h"

namespace shardgate::proxy {

namespace {

// Appends `portal` to a session's kept portals (oldest first), dropping the oldest at `cap`.
template <typename Portal>
void keepNewest(std::vector<Portal>& kept, Portal portal, size_t cap) {
  if (kept.size() >= cap) kept.erase(kept.begin());
  kept.push_back(std::move(portal));
}

// LIMIT / OFFSET of a multi-shard statement, from its text or its Bind. nullopt: none (LIMIT ALL,
// LIMIT NULL).
Result<std::optional<int64_t>> evaluateCount(const planner::ValueRef& value, const wire::Bind* bind,
                                             const std::vector<int32_t>* types,
                                             std::string_view clause) {
  std::string text;
  switch (value.kind) {
    case planner::ValueRef::Kind::kNull:
      return std::optional<int64_t>();
    case planner::ValueRef::Kind::kConstant:
      text = value.text;
      break;
    case planner::ValueRef::Kind::kParam: {
      const size_t i = static_cast<size_t>(value.index - 1);
      if (bind == nullptr || i >= bind->params.size()) break;
      if (!bind->params[i]) return std::optional<int64_t>();
      const std::string& raw = *bind->params[i];
      if (bind->paramFormat(i) == 0) {
        text = raw;
        break;
      }
      const int32_t type = types && i < types->size() ? (*types)[i] : 0;
      int64_t v = 0;
      if (type == 20 && raw.size() == 8) {  // int8
        for (unsigned char c : raw) v = (v << 8) | c;
      } else if (type == 23 && raw.size() == 4) {  // int4
        v = static_cast<int32_t>(static_cast<uint32_t>(static_cast<unsigned char>(raw[0])) << 24 |
                                 static_cast<uint32_t>(static_cast<unsigned char>(raw[1])) << 16 |
                                 static_cast<uint32_t>(static_cast<unsigned char>(raw[2])) << 8 |
                                 static_cast<uint32_t>(static_cast<unsigned char>(raw[3])));
      } else {
        break;
      }
      if (value.negate) v = -v;
      return std::optional<int64_t>(v);
    }
    default:
      break;
  }
  if (text.empty()) {
    return Error::make(sqlstate::kFeatureNotSupported,
                       std::string(clause) +
                           " of a statement that needs several shards must be "
                           "an integer literal or parameter");
  }
  int64_t v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size()) {
    return Error::make(sqlstate::kInvalidTextRepresentation,
                       "invalid input syntax for type bigint: \"" + text + "\"");
  }
  if (value.negate) v = -v;
  if (v < 0) {
    return Error::make(
        clause == "LIMIT" ? sqlstate::kInvalidRowCountInLimit : sqlstate::kInvalidRowCountInOffset,
        std::string(clause) + " must not be negative");
  }
  return std::optional<int64_t>(v);
}
}  // namespace

backends::ServerConnection* ClientSession::multiShardTakeServer(uint32_t shard,
                                                                backends::Pool** pool) {
  if (server_ && current_target_ && current_target_->shard == shard && !server_->owesReplies()) {
    backends::ServerConnection* server = server_;
    server_ = nullptr;
    current_target_.reset();
    *pool = pool_;
    server->detach();
    return server;
  }
  backends::ServerConnection* server = unpark(shard, pool);
  return server;
}

void ClientSession::multiShardKeepServer(uint32_t shard, backends::ServerConnection* server,
                                         backends::Pool* pool) {
  park(server, pool, shard);
}

void ClientSession::multiShardReturnHeldServer(uint32_t shard, backends::ServerConnection* server,
                                               backends::Pool* pool) {
  server_ = server;
  pool_ = pool;
  current_target_ = Target{shard, -1};
  server_->attach(this);
}

namespace {
// How a multi-shard plan is counted in shardgate_queries_total{route}.
RouteKind multiShardRouteKind(const planner::MultiShardPlan& plan) {
  switch (plan.kind) {
    case planner::MultiShardPlan::Kind::kRead:
      if (!plan.merge) return RouteKind::kFanOut;
      return plan.merge->aggregate ? RouteKind::kFanOutAggregate : RouteKind::kFanOutSort;
    case planner::MultiShardPlan::Kind::kWrite:
      return RouteKind::kMultiWrite;
    case planner::MultiShardPlan::Kind::kDdl:
      return RouteKind::kBroadcastDdl;
    case planner::MultiShardPlan::Kind::kCopyIn:
      return RouteKind::kCopySplit;
    case planner::MultiShardPlan::Kind::kCopyOut:
      return RouteKind::kCopyFanOut;
  }
  return RouteKind::kFanOut;
}
}  // namespace

// A statement shardgate answers itself (a refusal, a shardgate.* setting, EXPLAIN (ROUTE)) or a
// transaction it ends itself tells the transaction status, which replies the held server still
// owes may change (a pipelined BEGIN, or a failure, before it): it waits for them, then comes
// again. True when it waits.
bool ClientSession::awaitOwedReplies() {
  if (server_ == nullptr || !server_->owesReplies()) return false;
  if (batch_open_) {  // the server keeps the batch's replies until a Flush or Sync
    std::string flush;
    wire::Flush{}.encode(flush);
    server_->forward(flush);
  }
  awaiting_caught_up_ = true;
  server_->notifyWhenCaughtUp();
  return true;
}

bool ClientSession::readyForMultiShard() {
  if (waiting_for_server_ || syncing_server_) return false;
  if (server_ == nullptr) return true;
  if (batch_open_ && !batch_executes_) {
    endDescribeOnlyBatch();  // Parse / Describe went to the held server: end that batch first
    return false;
  }
  if (awaitOwedReplies()) return false;  // the statement waits for the replies
  if (batch_open_ && !pinned_ && server_->transactionStatus() != 'E') {
    // Statements of this batch ran on the held server: they and this one become one transaction
    // over shards, whose part there the run takes on. That server's part of the batch ends here.
    settleBatchChangesSoFar();
    if (transaction_status_ == 'I') {
      joinBatchToTransaction();
    } else {
      sendOwnSync();
    }
    batch_open_ = false;
    batch_executes_ = false;
    server_->notifyWhenCaughtUp();
    return false;
  }
  return true;
}

void ClientSession::startMultiShard(const planner::RouteDecision& decision, const wire::Bind* bind,
                                    bool describe) {
  const bool extended = bind != nullptr;
  const auto refuse = [&](Error error) {
    multi_bound_.reset();
    refuseStatement(error, extended);
  };
  if (!decision.multi || decision.multi->statements.empty()) {
    refuse(Error::make(sqlstate::kInternalError, "multi-shard plan without statements"));
    return;
  }
  const bool in_transaction = transaction_status_ != 'I';
  if (in_transaction && pinned_) {
    refuse(Error::make(sqlstate::kFeatureNotSupported,
                       "a statement that needs several shards cannot run in this transaction",
                       "the session is pinned to one shard connection by a session-level "
                       "feature (" +
                           pin_reason_ + ")",
                       "run the statement outside BEGIN ... COMMIT"));
    return;
  }
  if (batch_open_) {
    refuse(Error::make(sqlstate::kFeatureNotSupported,
                       "a statement that needs several shards cannot share an extended-protocol "
                       "batch with other statements",
                       decision.reason, "send a Sync before it"));
    return;
  }
  const planner::MultiShardPlan& plan = *decision.multi;
  if (extended && (plan.kind == planner::MultiShardPlan::Kind::kCopyIn ||
                   plan.kind == planner::MultiShardPlan::Kind::kCopyOut)) {
    refuse(Error::make(sqlstate::kFeatureNotSupported,
                       "COPY over several shards is not supported in the extended query protocol",
                       decision.reason, "send the COPY as a simple query"));
    return;
  }
  MultiShardRun::Request request;
  request.plan = decision.multi;
  request.role = decision.role;
  multi_fallback_to_primary_ = decision.primary_fallback;
  request.send_row_description = describe;
  request.extended = extended;
  request.max_merge_bytes = worker_.config().general.max_merge_bytes;
  request.atomic = !in_transaction && plan.statements.size() > 1 &&
                   (plan.kind == planner::MultiShardPlan::Kind::kWrite ||
                    plan.kind == planner::MultiShardPlan::Kind::kCopyIn || plan.transactional);
  if (!in_transaction && pinned_ && server_ && current_target_ && current_target_->replica < 0) {
    request.held_shard = current_target_->shard;
  }
  if (in_transaction) {
    request.in_transaction = true;
    request.begin_sql = transactionJoinSql();
    resume_transaction_.clear();  // a deferred BEGIN: the run begins it on its shards
    txn_bound_ = true;            // its connections now stay in the transaction until it ends
    if (decision.writes) txn_wrote_ = true;
  }
  if (extended) {
    if (bind->statement.empty()) {
      request.param_types = unnamed_types_;
    } else if (auto it = statements_.find(bind->statement); it != statements_.end()) {
      request.param_types = it->second->paramTypes();
      request.statement = it->second;
    }
    request.param_formats = bind->param_formats;
    request.params = bind->params;
    request.result_formats = bind->result_formats;
    // One format code per column: Postgres checks the count at Bind against the client's
    // columns (not the shard query's, which has hidden ones).
    const planner::MergePlan* merge = plan.merge.get();
    const size_t formats = bind->result_formats.size();
    const size_t columns = merge == nullptr                  ? 0
                           : !merge->visible_columns.empty() ? merge->visible_columns.size()
                                                             : merge->shard_columns;
    if (formats > 1 && columns > 0 && formats != columns) {
      return refuse(
          Error::make(sqlstate::kProtocolViolation, "bind message has " + std::to_string(formats) +
                                                        " result formats but query has " +
                                                        std::to_string(columns) + " columns"));
    }
  }
  request.client_utf8 = clientSendsUtf8();
  if (!request.client_utf8) {
    // The statements were rewritten from the parse tree, where a Unicode escape (U&'\00E9',
    // E'\u00e9') became UTF-8, which the shards would read in the client's encoding.
    for (const planner::ShardStatement& statement : plan.statements) {
      if (std::any_of(statement.sql.begin(), statement.sql.end(),
                      [](char c) { return static_cast<unsigned char>(c) >= 0x80; })) {
        return refuse(notUtf8Statement());
      }
    }
  }
  if (plan.merge) {
    const std::vector<int32_t>* types = extended ? &request.param_types : nullptr;
    if (plan.merge->limit) {
      auto limit = evaluateCount(*plan.merge->limit, bind, types, "LIMIT");
      if (!limit.ok()) return refuse(limit.error());
      request.limit = *limit;
    }
    if (plan.merge->offset) {
      auto offset = evaluateCount(*plan.merge->offset, bind, types, "OFFSET");
      if (!offset.ok()) return refuse(offset.error());
      request.offset = *offset;
    }
    const std::string* collation = worker_.lookups().collation(database_->name);
    if (collation == nullptr) return refuse(lookupWait().takeError());  // awaitCollation failed
    request.collation = *collation;
    request.extra_float_digits = extraFloatDigitsNow();
  }
  // The held server is not needed: give it back unless a session-level feature keeps it (in a
  // transaction the run takes it if its shard is among the targets; not if the transaction has
  // not begun there, as when this statement opens one for an implicit batch).
  if (server_ && !pinned_ && (!in_transaction || server_->transactionStatus() == 'I')) {
    backends::ServerConnection* server = server_;
    server_ = nullptr;
    current_target_.reset();
    pool_->release(server, idleRelease(), context().nowMs());
  }
  spdlog::debug("event=multi_shard_start session={} {}", id_,
                planner::describeDecision(*database_, decision));
  metrics_.multiShardStarted(*database_, multiShardRouteKind(plan), lastReadNs(),
                             plan.statements.front().sql);
  multi_run_ = std::make_unique<MultiShardRun>(*this, std::move(request));
  multi_run_->start();  // may finish before it returns
}

bool ClientSession::handleMultiShardBatchMessage(char type, std::string_view payload,
                                                 bool sync_follows) {
  switch (type) {
    case wire::fe::kDescribe: {
      auto describe = wire::Describe::decode(payload);
      if (!describe.ok() || describe->kind != 'P' || describe->name != multi_bound_->bind.portal ||
          multi_bound_->executed) {
        break;
      }
      if (multi_bound_->local_reply) {
        std::string no_data;
        wire::NoData{}.encode(no_data);
        answer(std::move(no_data));
        return true;
      }
      multi_bound_->describe = true;  // the RowDescription comes with the rows
      return true;
    }
    case wire::fe::kExecute: {
      auto execute = wire::Execute::decode(payload);
      if (!execute.ok() || execute->portal != multi_bound_->bind.portal) break;
      if (multi_bound_->executed) break;
      multi_bound_->executed = true;
      multi_bound_->max_rows = execute->max_rows;
      if (multi_bound_->local_reply) {
        if (multi_bound_->local_reply_fails) skipping_to_sync_ = true;  // as after any error
        answer(std::move(*multi_bound_->local_reply));
        return true;
      }
      if (multi_bound_->decision.writes && transaction_status_ == 'I' && !sync_follows &&
          !pinned_) {
        // More of the batch follows (or may): the batch is one implicit transaction, so the
        // write must not commit before the client's Sync, and a later failure in the batch undoes
        // it. The write opens a transaction over the shards that ends at that Sync.
        spreadImplicitBatch();
      }
      // A row-limited portal keeps its row description for a later Describe, asked for or not.
      startMultiShard(multi_bound_->decision, &multi_bound_->bind,
                      multi_bound_->describe || execute->max_rows > 0);
      return true;
    }
    case wire::fe::kClose: {
      auto close_msg = wire::Close::decode(payload);
      if (!close_msg.ok() || close_msg->kind != 'P' ||
          close_msg->name != multi_bound_->bind.portal) {
        break;
      }
      std::string reply;
      wire::CloseComplete{}.encode(reply);
      answer(std::move(reply));
      return true;
    }
    case wire::fe::kBind: {
      // Another Bind of the same named portal: Postgres refuses it (only the unnamed portal is
      // replaced), and the portal stays as it was.
      wire::PayloadReader reader(payload);
      std::string_view portal;
      if (!reader.readCString(portal) || portal.empty() || portal != multi_bound_->bind.portal) {
        break;
      }
      if (!multi_bound_->executed && !multi_bound_->local_reply) keepBoundPortal();
      multi_bound_.reset();
      refuseStatement(duplicatePortal(portal), /*extended_protocol=*/true);
      return true;
    }
    case wire::fe::kFlush:
      return true;
    case wire::fe::kSync: {
      // (A described portal was run at this Sync already: describeBoundPortalNow.)
      if (!multi_bound_->executed && !multi_bound_->local_reply && transaction_status_ != 'I') {
        // Bound in a transaction block, executed in a later batch (asyncpg's cursors): the
        // portal lives until the transaction ends.
        keepBoundPortal();
      }
      multi_bound_.reset();
      answerSync();
      return true;
    }
    default:
      break;
  }
  // Another message before the portal's Execute (a Parse, a Describe or Close of a statement,
  // another Bind): handled as usual, and the portal is kept for its Execute, as Postgres keeps it.
  if (!multi_bound_->executed && !multi_bound_->local_reply) keepBoundPortal();
  multi_bound_.reset();
  return false;
}

// Keeps multi_bound_ (not executed yet) for a later Execute, among at most 64.
void ClientSession::keepBoundPortal() {
  constexpr size_t kMaxBoundPortals = 64;
  if (bound_portals_.size() >= kMaxBoundPortals) bound_portals_.erase(bound_portals_.begin());
  bound_portals_.push_back(std::move(multi_bound_));
}

namespace {

// Copies the RowDescription among the whole messages at the start of `bytes` into `out`; stops at
// the first row or tag, which come after it.
void keepRowDescription(std::string_view bytes, std::string& out) {
  wire::Frame frame;
  size_t used = 0;
  while (used < bytes.size() &&
         wire::peekTyped(bytes.substr(used), UINT32_MAX, frame) == wire::FrameStatus::kComplete) {
    if (frame.type == wire::be::kRowDescription) {
      out.assign(bytes.substr(used, frame.size));
      return;
    }
    if (frame.type == wire::be::kDataRow || frame.type == wire::be::kCommandComplete) return;
    used += frame.size;
  }
}

// The portal a message names: Execute's, Bind's (the one it replaces), a Describe or Close of a
// portal, and the unnamed one for a simple Query (which drops it). Nullopt for the others.
std::optional<std::string_view> portalNamedBy(char type, std::string_view payload) {
  wire::PayloadReader reader(payload);
  std::string_view name;
  switch (type) {
    case wire::fe::kQuery:
      return name;
    case wire::fe::kBind:
    case wire::fe::kExecute:
      if (!reader.readCString(name)) return std::nullopt;
      return name;
    case wire::fe::kDescribe:
    case wire::fe::kClose: {
      uint8_t kind = 0;
      if (!reader.readInt8(kind) || kind != 'P' || !reader.readCString(name)) return std::nullopt;
      return name;
    }
    default:
      return std::nullopt;
  }
}

}  // namespace

ClientSession::PortalStep ClientSession::continueKeptPortal(char type, std::string_view payload) {
  const std::optional<std::string_view> name = portalNamedBy(type, payload);
  if (!name) return PortalStep::kNotKept;
  auto bound = std::find_if(bound_portals_.begin(), bound_portals_.end(),
                            [&](const auto& p) { return p->bind.portal == *name; });
  auto suspended = std::find_if(suspended_portals_.begin(), suspended_portals_.end(),
                                [&](const SuspendedPortal& p) { return p.name == *name; });
  auto completed = std::find_if(completed_portals_.begin(), completed_portals_.end(),
                                [&](const CompletedPortal& p) { return p.name == *name; });
  if (type == wire::fe::kQuery || type == wire::fe::kBind) {
    // The portal is replaced (or, for a Query, dropped): the message itself is handled as usual.
    if (bound != bound_portals_.end()) bound_portals_.erase(bound);
    if (suspended != suspended_portals_.end()) suspended_portals_.erase(suspended);
    if (completed != completed_portals_.end()) completed_portals_.erase(completed);
    return PortalStep::kNotKept;
  }
  if (completed != completed_portals_.end()) return answerCompletedPortal(completed, type);
  if (bound != bound_portals_.end()) {
    // Bound in an earlier batch of this transaction: its batch goes on as if it had just begun.
    if (type == wire::fe::kClose) {
      bound_portals_.erase(bound);
      std::string reply;
      wire::CloseComplete{}.encode(reply);
      answer(std::move(reply));
      return PortalStep::kAnswered;
    }
    if (multi_bound_) {
      refuseStatement(Error::make(sqlstate::kFeatureNotSupported,
                                  "one batch cannot use two multi-shard portals",
                                  "portal \"" + std::string(*name) +
                                      "\" was bound in an earlier batch, another one in this batch",
                                  "send a Sync between them"),
                      /*extended_protocol=*/true);
      return PortalStep::kAnswered;
    }
    if (type == wire::fe::kExecute && !readyForMultiShard()) return PortalStep::kWait;
    multi_bound_ = std::move(*bound);
    bound_portals_.erase(bound);
    return handleMultiShardBatchMessage(type, payload, /*sync_follows=*/true)
               ? PortalStep::kAnswered
               : PortalStep::kNotKept;
  }
  if (suspended == suspended_portals_.end()) return PortalStep::kNotKept;
  std::string reply;
  if (type == wire::fe::kClose) {
    suspended_portals_.erase(suspended);
    wire::CloseComplete{}.encode(reply);
  } else if (type == wire::fe::kDescribe) {
    reply = suspended->row_description;  // kept for every portal stopped by a row limit
    if (reply.empty()) wire::NoData{}.encode(reply);
  } else {
    auto execute = wire::Execute::decode(payload);
    if (!execute.ok()) return PortalStep::kNotKept;  // malformed: the usual path reports it
    executeSuspendedPortal(suspended, execute->max_rows);
    return PortalStep::kAnswered;
  }
  answer(std::move(reply));
  return PortalStep::kAnswered;
}

ClientSession::PortalStep ClientSession::answerCompletedPortal(
    std::vector<CompletedPortal>::iterator portal, char type) {
  std::string reply;
  if (type == wire::fe::kClose) {
    completed_portals_.erase(portal);
    wire::CloseComplete{}.encode(reply);
  } else if (transaction_status_ == 'E') {
    refuseStatement(failedTransactionError(),
                    /*extended_protocol=*/true);
    return PortalStep::kAnswered;
  } else if (type == wire::fe::kDescribe) {
    if (portal->row_description.empty()) {
      // Its columns came from the shards, which no longer have the portal.
      refuseStatement(Error::make(sqlstate::kFeatureNotSupported,
                                  "a multi-shard portal can be described only before its Execute",
                                  "portal \"" + portal->name + "\" ran to its end on the shards",
                                  "send Describe before Execute"),
                      /*extended_protocol=*/true);
      return PortalStep::kAnswered;
    }
    reply = portal->row_description;
  } else if (portal->writes) {  // Postgres runs a write's portal once
    refuseStatement(Error::make("55000", "portal \"" + portal->name + "\" cannot be run"),
                    /*extended_protocol=*/true);
    return PortalStep::kAnswered;
  } else {
    wire::CommandComplete{"SELECT 0"}.encode(reply);  // at its end: no rows, whatever the limit
  }
  answer(std::move(reply));
  return PortalStep::kAnswered;
}

void ClientSession::describeBoundPortalNow() {
  BoundMultiShard& bound = *multi_bound_;
  bound.executed = true;
  if (bound.decision.writes) {
    // Running it to learn its columns would change the data before any Execute.
    multi_bound_.reset();
    refuseStatement(Error::make(sqlstate::kFeatureNotSupported,
                                "a multi-shard write's portal can be described only together "
                                "with its Execute",
                                "shardgate learns a multi-shard result's columns by running it",
                                "send Execute before the Sync (or Flush) that follows Describe"),
                    /*extended_protocol=*/true);
    return;
  }
  // Its columns come from running it: the rows are kept for the portal's Executes, if the
  // transaction lets it live that long.
  bound.keep_all_rows = true;
  startMultiShard(bound.decision, &bound.bind, /*describe=*/true);
}

void ClientSession::executeSuspendedPortal(std::vector<SuspendedPortal>::iterator portal,
                                           int32_t max_rows) {
  if (transaction_status_ == 'E') {
    refuseStatement(failedTransactionError(),
                    /*extended_protocol=*/true);
    return;
  }
  if (portal->dropped) {
    suspended_portals_.erase(portal);
    refuseStatement(
        Error::make(sqlstate::kOutOfMemory,
                    "the rest of the multi-shard result is larger than general.max_merge_bytes",
                    "an Execute with a row limit got the first rows; shardgate could not keep "
                    "the others",
                    "fetch all rows at once, or raise general.max_merge_bytes"),
        /*extended_protocol=*/true);
    return;
  }
  // The next rows, then PortalSuspended if the limit stopped them, else the part's tag.
  std::string out;
  const int32_t rows = takeKeptRows(*portal, max_rows, &out);
  if (max_rows > 0 && rows == max_rows) {
    wire::PortalSuspended{}.encode(out);
  } else {
    // Each part is tagged with its own count ("SELECT 2", "UPDATE 0"), as Postgres does.
    wire::CommandComplete{portal->tag_command + std::to_string(rows)}.encode(out);
  }
  answer(std::move(out));
}

// Takes the next `max_rows` (all for 0 or less) of a suspended portal's kept DataRows, appended
// to `out` unless it is null (MOVE); returns how many.
int32_t ClientSession::takeKeptRows(SuspendedPortal& portal, int32_t max_rows, std::string* out) {
  const std::string_view kept = std::string_view(portal.rows).substr(portal.next);
  int32_t rows = 0;
  size_t used = 0;
  wire::Frame frame;
  while (used < kept.size() && (max_rows <= 0 || rows < max_rows) &&
         wire::peekTyped(kept.substr(used), UINT32_MAX, frame) == wire::FrameStatus::kComplete) {
    used += frame.size;
    ++rows;
  }
  if (out != nullptr) out->append(kept.substr(0, used));
  portal.next += used;
  if (portal.next == portal.rows.size()) {  // all taken: the memory goes now
    std::string().swap(portal.rows);
    portal.next = 0;
  }
  return rows;
}

// MOVE on a multi-shard portal whose rows shardgate keeps (asyncpg's Cursor.forward() sends
// `MOVE FORWARD n "portal"`): the shards have no such portal, so it is answered here, read by the
// parser as Postgres reads it (NEXT, +n, ALL, comments). Forward moves only: the kept rows cannot
// go back, and MOVE 0 would need the cursor's position, so those get 0A000. False for any other
// statement (a cursor of a shard's goes there).
bool ClientSession::answerMoveOnKeptPortal(std::string_view sql) {
  auto parsed = parser::parse(sql);
  if (!parsed.ok() || (*parsed)->statementCount() != 1) return false;
  const pg_query::Node& node = (*parsed)->statement(0);
  if (!node.has_fetch_stmt() || !node.fetch_stmt().ismove()) return false;
  const pg_query::FetchStmt& move = node.fetch_stmt();
  auto portal = std::find_if(suspended_portals_.begin(), suspended_portals_.end(),
                             [&](const SuspendedPortal& p) { return p.name == move.portalname(); });
  if (portal == suspended_portals_.end() || portal->dropped || transaction_status_ == 'E') {
    return false;
  }
  if (move.direction() != pg_query::FETCH_FORWARD || move.how_many() <= 0) {
    refuseStatement(Error::make(sqlstate::kFeatureNotSupported,
                                "only MOVE FORWARD n and MOVE ALL are supported on a portal over "
                                "several shards",
                                "shardgate keeps the portal's rows and can only go on through them",
                                "move forward, or run the query on one shard"),
                    /*extended_protocol=*/false);
    return true;
  }
  // FETCH_ALL is LONG_MAX: all the rows (0 for takeKeptRows), as any count past them.
  const int32_t limit = move.how_many() >= INT32_MAX ? 0 : static_cast<int32_t>(move.how_many());
  const int32_t moved = takeKeptRows(*portal, limit, nullptr);
  std::string reply;
  wire::CommandComplete{"MOVE " + std::to_string(moved)}.encode(reply);
  answerStatementHere(std::move(reply), /*extended=*/false);
  return true;
}

void ClientSession::answerSync() {
  // Portals end with their transaction; outside one, the Sync ended the implicit transaction.
  if (transaction_status_ == 'I') dropPortals();
  batch_began_transaction_ = false;
  batch_part_ended_ = false;
  batch_binds_ = 0;
  std::string ready;
  wire::writeReadyForQuery(ready, transaction_status_);
  answer(std::move(ready));
  rollBackFailedTransactionShards();
}

void ClientSession::dropPortals() {
  bound_settings_.clear();
  suspended_portals_.clear();
  completed_portals_.clear();
  bound_portals_.clear();
  named_portals_.clear();
}

void ClientSession::notePortalBound(std::string_view portal) {
  if (!portal.empty() && !portalBound(portal)) named_portals_.emplace_back(portal);
}

bool ClientSession::portalBound(std::string_view portal) const {
  return std::find(named_portals_.begin(), named_portals_.end(), portal) != named_portals_.end();
}

uint64_t ClientSession::suspendedPortalBudget() const {
  uint64_t kept = 0;
  for (const SuspendedPortal& p : suspended_portals_) kept += p.rows.size() - p.next;
  const uint64_t limit = worker_.config().general.max_merge_bytes;
  return kept >= limit ? 0 : limit - kept;
}

backends::Pool& ClientSession::multiShardPool(uint32_t shard, planner::Role role) {
  const int replica =
      role == planner::Role::kReplica ? replicaFor(shard, multi_fallback_to_primary_) : -1;
  return worker_.pool(*database_, *user_, shard, replica);
}

void ClientSession::multiShardSync(backends::ServerConnection* server,
                                   std::function<void(Status)> then) {
  syncSettings(server, std::move(then));
}

void ClientSession::multiShardOutput(std::string_view bytes) {
  if (!multi_bound_ || (multi_bound_->max_rows <= 0 && !multi_bound_->keep_all_rows)) {
    if (multi_bound_ && multi_bound_->describe && multi_bound_->row_description.empty()) {
      keepRowDescription(bytes, multi_bound_->row_description);  // for a Describe after the end
    }
    send(bytes);
    return;
  }
  // An Execute with a row limit (asyncpg's fetchrow and fetchval send 1): the first rows pass;
  // when that many came, the end is PortalSuspended, as Postgres ends a portal it stopped early.
  BoundMultiShard& bound = *multi_bound_;
  wire::Frame frame;
  size_t used = 0;
  while (used < bytes.size()) {
    if (wire::peekTyped(bytes.substr(used), UINT32_MAX, frame) != wire::FrameStatus::kComplete) {
      send(bytes.substr(used));  // the run sends whole messages; anything else passes as it is
      return;
    }
    const std::string_view message = bytes.substr(used, frame.size);
    used += frame.size;
    if (frame.type == wire::be::kDataRow) {
      if (!bound.keep_all_rows && bound.rows_sent < bound.max_rows) {
        ++bound.rows_sent;
        send(message);
      } else if (!bound.rest_dropped) {
        // Kept for the portal's next Executes, within the bound a merge has (for all the
        // session's suspended portals together).
        if (bound.rest.empty()) bound.rest_budget = suspendedPortalBudget();
        if (bound.rest.size() + message.size() > bound.rest_budget) {
          bound.rest_dropped = true;
          std::string().swap(bound.rest);
        } else {
          bound.rest.append(message);
        }
      }
    } else if (frame.type == wire::be::kCommandComplete &&
               (bound.keep_all_rows || bound.rows_sent >= bound.max_rows)) {
      bound.suspended = true;
      // "SELECT 5" / "INSERT 0 5": the tag without its count, for the parts that follow.
      const std::string_view tag = frame.payload.substr(0, frame.payload.find('\0'));
      bound.tag_command = std::string(tag.substr(0, tag.rfind(' ') + 1));
      if (!bound.keep_all_rows) {  // no Execute ran yet otherwise
        std::string suspended;
        wire::PortalSuspended{}.encode(suspended);
        send(suspended);
      }
    } else {
      if (frame.type == wire::be::kRowDescription) {
        bound.row_description = message;
        if (!bound.describe) continue;  // asked for by shardgate only (see the Execute above)
      }
      if (frame.type == wire::be::kNoData && !bound.describe) continue;  // the same, no columns
      send(message);
    }
  }
}

void ClientSession::multiShardCopyReady() {
  processPending();
}

void ClientSession::multiShardCopyDrained() {
  resumeCopyInput();
}

// Reads the client's COPY rows again once the shards' connections are under the limit (or the
// COPY ended: what the client still sends is read and dropped).
void ClientSession::resumeCopyInput() {
  if (!paused_for_copy_) return;
  if (multi_run_ && multi_run_->acceptsCopyData() &&
      multi_run_->copyCongested(worker_.config().general.client_buffer_limit)) {
    return;
  }
  paused_for_copy_ = false;
  startReading();
  processPending();
}

bool ClientSession::multiShardClientCongested() const {
  return sinkCongested();
}

LoopContext& ClientSession::multiShardLoop() {
  return worker_.context();
}

std::string ClientSession::multiShardShardName(uint32_t shard) const {
  return planner::shardName(*database_, shard);
}

void ClientSession::multiShardFinished(const std::optional<Error>& error) {
  if (transaction_status_ != 'I') {
    const char status = multi_run_->transactionStatus();
    if (status == 'E' || error) transaction_status_ = 'E';
  }
  if (error) metrics_.countError(error->sqlstate);
  metrics_.multiShardFinished(transaction_status_, context().nowNs());
  finished_multi_runs_.push_back(std::move(multi_run_));
  rollBackFailedTransactionShards();
  if (!multi_bound_) {
    std::string ready;
    wire::writeReadyForQuery(ready, transaction_status_);
    send(ready);
  } else if (error) {
    multi_bound_.reset();
    skipping_to_sync_ = true;  // as Postgres does after an error in a batch
  } else if (!multi_bound_->suspended) {
    // Run to its end: kept by name for what may still come for it (answerCompletedPortal). (A
    // Bind of its name dropped any older one: continueKeptPortal.)
    constexpr size_t kMaxCompletedPortals = 16;
    BoundMultiShard& bound = *multi_bound_;
    keepNewest(completed_portals_,
               CompletedPortal{bound.bind.portal, bound.decision.writes, bound.row_description},
               kMaxCompletedPortals);
  } else {
    // The portal goes on from the rows kept (continueKeptPortal).
    constexpr size_t kMaxSuspendedPortals = 64;  // asyncpg names each cursor's portal anew
    BoundMultiShard& bound = *multi_bound_;
    keepNewest(
        suspended_portals_,
        SuspendedPortal{bound.bind.portal, std::move(bound.row_description), std::move(bound.rest),
                        0, bound.rest_dropped, std::move(bound.tag_command)},
        kMaxSuspendedPortals);
  }
  if (terminating_) {
    state_ = State::kClosed;
    close();
    return;
  }
  if (paused_for_copy_) {
    resumeCopyInput();  // reads on (and processes what is pending)
    return;
  }
  processPending();
}

}  // namespace shardgate::proxy
