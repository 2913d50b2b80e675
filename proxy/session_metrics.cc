// SessionMetrics: per-statement counting and timing, transactions, and the slow-query log.
#include "proxy/session_metrics.h"

#include <uv.h>

#include "common/log.h"
#include "proxy/client_session.h"
#include "proxy/wire/frontend_messages.h"
#include "proxy/wire/payload.h"
#include "proxy/wire/protocol.h"

namespace shardgate::proxy {

namespace {
// Beyond this many named statements per session the slow-query log names them instead of
// quoting them (the texts are kept only while the log is on).
constexpr size_t kMaxRememberedStatements = 256;

// Where a route ranks when a transaction's statements went different ways (the widest wins).
int routeRank(RouteKind kind) {
  switch (kind) {
    case RouteKind::kLocal:
      return 0;
    case RouteKind::kPassthrough:
      return 1;
    case RouteKind::kAny:
      return 2;
    case RouteKind::kDirect:
      return 3;
    default:
      return 4;
  }
}

// A log field value in double quotes: quotes and backslashes escaped, line breaks and other
// control characters written as escapes, so that a statement stays on one line.
void appendQuoted(std::string& out, std::string_view text) {
  out.push_back('"');
  for (char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        out.push_back(static_cast<unsigned char>(c) < 0x20 ? ' ' : c);
    }
  }
  out.push_back('"');
}
}  // namespace

void SessionMetrics::loggedIn(std::string_view database, std::string_view user) {
  database_ = database;
  user_ = user;
  database_cells_ = &worker_.database(database);
}

ShardCells& SessionMetrics::shardCells(const conf::Database& db, uint32_t shard) {
  if (&db != cached_db_) {
    // Another config snapshot (a reload): shard indexes may name other shards now.
    cached_db_ = &db;
    shard_cells_.assign(db.shards.size(), nullptr);
    shard_names_.assign(db.shards.size(), std::string());
  }
  if (shard >= shard_cells_.size()) return worker_.shard(db.name, kNoShard);
  if (shard_cells_[shard] == nullptr) {
    shard_names_[shard] = db.shards[shard].name;
    shard_cells_[shard] = &worker_.shard(db.name, shard_names_[shard]);
  }
  return *shard_cells_[shard];
}

void SessionMetrics::noteRoute(RouteKind route) {
  if (!transaction_route_ || routeRank(route) > routeRank(*transaction_route_)) {
    transaction_route_ = route;
  }
}

void SessionMetrics::routeDecided(const planner::RouteDecision& decision) {
  using Kind = planner::RouteDecision::Kind;
  switch (decision.kind) {
    case Kind::kShard:
      route_ = RouteKind::kDirect;
      break;
    case Kind::kAnyShard:
      route_ = RouteKind::kAny;
      break;
    case Kind::kMultiShard:
      route_ = RouteKind::kFanOut;
      break;
    case Kind::kExplainRoute:
    case Kind::kShardgateSetting:
      answeredHere();  // never sent: counted now
      break;
    case Kind::kNeedsLookup:
      break;  // refused (the error is counted) or routed again
  }
}

void SessionMetrics::answeredHere() {
  if (database_cells_ != nullptr) {
    worker_.shard(database_, kNoShard).queries[static_cast<size_t>(RouteKind::kLocal)].add();
  }
}

void SessionMetrics::transactionBegunHere() {
  answeredHere();
  noteRoute(RouteKind::kLocal);
}

void SessionMetrics::countQuery(const conf::Database& db, RouteKind route,
                                std::optional<uint32_t> shard) {
  ShardCells& cells = shard ? shardCells(db, *shard) : worker_.shard(db.name, kManyShards);
  cells.queries[static_cast<size_t>(route)].add();
  noteRoute(route);
}

void SessionMetrics::clientMessage(char type, std::string_view payload, const conf::Database& db,
                                   uint32_t shard, uint64_t arrival_ns) {
  const bool slow_log = slowLogOn();
  if (slow_log) statementText(type, payload);
  switch (type) {
    case wire::fe::kQuery:
    case wire::fe::kExecute: {
      ShardCells& cells = shardCells(db, shard);
      cells.queries[static_cast<size_t>(route_)].add();
      noteRoute(route_);
      route_ = RouteKind::kPassthrough;  // the next statement's decision sets it again
      if (type == wire::fe::kExecute) return;
      break;
    }
    case wire::fe::kSync:
    case wire::fe::kFunctionCall:
      break;
    default:
      return;
  }
  Request& request = requests_.emplace_back();
  request.arrival_ns = arrival_ns;
  request.sent_ns = std::max(arrival_ns, acquired_ns_);
  request.shard = &shardCells(db, shard);
  request.shard_index = shard;
  if (slow_log) {
    if (type == wire::fe::kQuery) {
      std::string_view sql = payload;
      if (!sql.empty() && sql.back() == '\0') sql.remove_suffix(1);
      request.text = clip(sql);
    } else if (type == wire::fe::kSync) {
      request.text = bound_text_;
      request.params = bound_params_;
    } else {
      request.text = "<function call>";
    }
  }
}

void SessionMetrics::statementText(char type, std::string_view payload) {
  if (!slowLogOn()) return;
  wire::PayloadReader reader(payload);
  switch (type) {
    case wire::fe::kParse: {
      std::string_view name, query;
      if (!reader.readCString(name) || !reader.readCString(query)) return;
      if (name.empty()) {
        unnamed_text_ = clip(query);
      } else if (named_texts_.size() < kMaxRememberedStatements ||
                 named_texts_.count(std::string(name))) {
        named_texts_[std::string(name)] = clip(query);
      }
      return;
    }
    case wire::fe::kBind: {
      auto bind = wire::Bind::decode(payload);
      if (!bind.ok()) return;
      if (bind->statement.empty()) {
        bound_text_ = unnamed_text_;
      } else {
        auto it = named_texts_.find(bind->statement);
        bound_text_ =
            it != named_texts_.end() ? it->second : "<prepared statement " + bind->statement + ">";
      }
      bound_params_.clear();
      if (!config_->general.log_parameters) return;
      for (size_t i = 0; i < bind->params.size(); ++i) {
        if (i > 0) bound_params_ += ", ";
        bound_params_ += "$" + std::to_string(i + 1) + "=";
        const auto& value = bind->params[i];
        if (!value) {
          bound_params_ += "NULL";
        } else if (bind->paramFormat(i) != 0) {
          bound_params_ += "<binary " + std::to_string(value->size()) + " bytes>";
        } else {
          bound_params_ += "'" + *value + "'";
        }
        if (bound_params_.size() > config_->general.slow_query_max_chars) break;
      }
      bound_params_ = clip(bound_params_);
      return;
    }
    case wire::fe::kClose: {
      uint8_t kind = 0;
      std::string_view name;
      if (reader.readInt8(kind) && kind == 'S' && reader.readCString(name) && !name.empty()) {
        named_texts_.erase(std::string(name));
      }
      return;
    }
    default:
      return;
  }
}

void SessionMetrics::serverAcquired(uint64_t now) {
  acquired_ns_ = now;
}

void SessionMetrics::readyForQuery(char transaction_status, uint32_t outstanding, uint64_t now) {
  if (!requests_.empty() && requests_.size() > outstanding) {
    // Requests the session answered without a server (a PREPARE it already had) leave entries
    // with no ReadyForQuery of their own: the oldest entries beyond what is still owed go.
    while (requests_.size() > outstanding + 1u) requests_.pop_front();
    const Request& request = requests_.front();
    const uint64_t duration = now > request.arrival_ns ? now - request.arrival_ns : 0;
    worker_.query_duration.observeNs(duration);
    request.shard->duration.observeNs(now > request.sent_ns ? now - request.sent_ns : 0);
    const uint32_t slow_ms = config_->general.slow_query_ms;
    if (slow_ms != 0 && duration >= uint64_t{slow_ms} * 1000000) {
      bool named =
          request.shard_index < shard_names_.size() && !shard_names_[request.shard_index].empty();
      logSlow(named ? shard_names_[request.shard_index] : std::to_string(request.shard_index),
              request.text, request.params, duration);
    }
    requests_.pop_front();
  }
  endTransactionIfIdle(transaction_status);
}

void SessionMetrics::multiShardStarted(const conf::Database& db, RouteKind route,
                                       uint64_t arrival_ns, std::string_view sql) {
  countQuery(db, route, std::nullopt);
  multi_arrival_ns_ = arrival_ns;
  if (slowLogOn()) multi_text_ = clip(sql);
}

void SessionMetrics::multiShardFinished(char transaction_status, uint64_t now) {
  const uint64_t duration = now > multi_arrival_ns_ ? now - multi_arrival_ns_ : 0;
  worker_.query_duration.observeNs(duration);
  const uint32_t slow_ms = config_->general.slow_query_ms;
  if (slow_ms != 0 && duration >= uint64_t{slow_ms} * 1000000) {
    logSlow(kManyShards, multi_text_, {}, duration);
  }
  endTransactionIfIdle(transaction_status);
}

void SessionMetrics::endTransactionIfIdle(char transaction_status) {
  if (transaction_status == 'I' && transaction_route_) {
    if (database_cells_ != nullptr) {
      database_cells_->transactions[static_cast<size_t>(*transaction_route_)].add();
    }
    transaction_route_.reset();
  }
}

std::string SessionMetrics::clip(std::string_view text) const {
  size_t max = config_->general.slow_query_max_chars;
  if (text.size() <= max) return std::string(text);
  // Cut at a character boundary (never inside a UTF-8 sequence).
  while (max > 0 && (static_cast<unsigned char>(text[max]) & 0xC0) == 0x80) --max;
  return std::string(text.substr(0, max)) + "...";
}

void SessionMetrics::logSlow(std::string_view shard, const std::string& text,
                             const std::string& params, uint64_t duration_ns) {
  std::string line = "event=slow_query duration_ms=";
  line += fmt::format("{:.3f}", static_cast<double>(duration_ns) / 1e6);
  line += " db=";
  appendQuoted(line, database_);
  line += " user=";
  appendQuoted(line, user_);
  line += " shard=";
  line += shard;
  line += " query=";
  appendQuoted(line, text);
  if (!params.empty()) {
    line += " params=";
    appendQuoted(line, params);
  }
  spdlog::warn("{}", line);
}

std::array<int64_t, kClientStates> countClientStates(
    const std::unordered_map<uint64_t, ClientSession*>& sessions) {
  std::array<int64_t, kClientStates> counts{};
  for (const auto& [id, session] : sessions) {
    ClientState state;
    if (session->closing() || session->state() == ClientSession::State::kClosed) continue;
    if (session->state() != ClientSession::State::kReady) {
      state = ClientState::kLogin;
    } else if (session->waitingForServer()) {
      state = ClientState::kWaiting;
    } else if (session->idle()) {
      state = ClientState::kIdle;
    } else {
      state = ClientState::kActive;
    }
    ++counts[static_cast<size_t>(state)];
  }
  return counts;
}

}  // namespace shardgate::proxy
