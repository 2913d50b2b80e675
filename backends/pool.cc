// Pool: hands out logged-in server connections in FIFO order of the waiting clients.
#include "backends/pool.h"

#include <algorithm>

#include "common/log.h"

namespace shardgate::backends {

uint64_t monotonicMs() {
  return uv_hrtime() / 1000000;
}

Pool::Pool(LoopContext& context, ServerEndpoint endpoint, PoolSettings settings)
    : context_(context), endpoint_(std::move(endpoint)), settings_(settings) {}

Pool::~Pool() {
  publishMetrics(PoolStats{});  // this pool's connections leave the shared cells
  // Connections still open (only at process exit) must not call back into a dead pool.
  for (ServerConnection* server : all_) {
    server->orphan();
    server->terminate();
  }
}

void Pool::acquire(PoolWaiter* waiter, uint64_t now_ms) {
  if (gate_ != nullptr && !passGate(waiter, now_ms)) return;
  while (!idle_.empty()) {
    ServerConnection* server = idle_.back();
    idle_.pop_back();
    if (settings_.lifetime_ms && now_ms - server->createdAtMs() >= settings_.lifetime_ms) {
      retire(server);
      continue;
    }
    server->touch(now_ms);
    if (metrics_ && metrics_->wait) metrics_->wait->observeNs(0);
    waiter->onServerAcquired(server);
    return;
  }
  waiter->wait_started_ms_ = now_ms;
  if (metrics_) waiter->wait_started_ns_ = uv_hrtime();  // the slow path only
  waiters_.push_back(waiter);
  if (all_.size() < settings_.max_size && connecting_ < waiters_.size()) openConnection(now_ms);
}

void Pool::cancelWait(PoolWaiter* waiter) {
  auto it = std::find(waiters_.begin(), waiters_.end(), waiter);
  if (it != waiters_.end()) waiters_.erase(it);
  auto held = std::find(held_.begin(), held_.end(), waiter);
  if (held != held_.end()) held_.erase(held);
}

bool Pool::passGate(PoolWaiter* waiter, uint64_t now_ms) {
  Error error;
  switch (gate_->admit(waiter, error)) {
    case PoolGate::Verdict::kAdmit:
      return true;
    case PoolGate::Verdict::kHold:
      waiter->wait_started_ms_ = now_ms;
      held_.push_back(waiter);
      return false;
    case PoolGate::Verdict::kRefuse:
      waiter->onServerUnavailable(error);
      return false;
  }
  return true;
}

void Pool::admitHeld(uint64_t now_ms) {
  // One pass over those held now: a waiter the gate holds again goes to the back and waits for
  // the next call. Popped one at a time, so a waiter that leaves meanwhile (cancelWait) is skipped.
  for (size_t n = held_.size(); n > 0 && !held_.empty(); --n) {
    PoolWaiter* waiter = held_.front();
    held_.pop_front();
    acquire(waiter, now_ms);
  }
}

void Pool::reconnect() {
  retire_before_id_ = next_id_;
  std::vector<ServerConnection*> idle = idle_;
  for (ServerConnection* server : idle) retire(server);
  spdlog::info("event=pool_reconnect server={} closed_idle={} closing_when_released={}",
               endpoint_.label, idle.size(), all_.size());
}

void Pool::openConnection(uint64_t now_ms) {
  auto* server = new ServerConnection(context_, this, endpoint_, next_id_++, now_ms);
  all_.insert(server);
  ++connecting_;
  ++connections_opened_;
  server->connect();
}

void Pool::onServerLogin(ServerConnection* server, const Status& status) {
  --connecting_;
  uint64_t now_ms = context_.nowMs();
  last_login_failed_ = !status.ok();
  if (!status.ok()) {
    last_login_failed_at_ms_ = now_ms;
    ++connect_failures_;
    all_.erase(server);
    // The connection this waiter caused failed: tell it rather than let it wait out its timeout.
    if (!waiters_.empty()) {
      PoolWaiter* waiter = waiters_.front();
      waiters_.pop_front();
      waiter->onServerUnavailable(status.error());
    }
    serveWaiters(now_ms);
    return;
  }
  server_parameters_ = server->parameters();
  makeIdle(server, now_ms);
}

void Pool::handOut(ServerConnection* server, uint64_t now_ms) {
  PoolWaiter* waiter = waiters_.front();
  waiters_.pop_front();
  server->touch(now_ms);
  if (metrics_ && metrics_->wait) metrics_->wait->observeNs(uv_hrtime() - waiter->wait_started_ns_);
  waiter->onServerAcquired(server);
}

void Pool::makeIdle(ServerConnection* server, uint64_t now_ms) {
  if (closing_all_) {
    retire(server);
    return;
  }
  if (server->id() < retire_before_id_) {
    // Opened (or logging in) before a RECONNECT: a fresh connection serves any waiter instead.
    retire(server);
    serveWaiters(now_ms);
    return;
  }
  if (!waiters_.empty()) {
    handOut(server, now_ms);
    return;
  }
  if (draining_) {
    retire(server);
    return;
  }
  server->touch(now_ms);
  idle_.push_back(server);
}

void Pool::release(ServerConnection* server, Release how, uint64_t now_ms) {
  server->detach();
  if (server->closing() || server->state() == ServerConnection::State::kClosed) return;
  bool expired = settings_.lifetime_ms && now_ms - server->createdAtMs() >= settings_.lifetime_ms;
  if (how == Release::kClose || expired || closing_all_ || server->id() < retire_before_id_ ||
      server->transactionStatus() != 'I') {
    retire(server);
    serveWaiters(now_ms);
    return;
  }
  if (how == Release::kReset) {
    server->runInternal("DISCARD ALL", [this, server](Status st) {
      if (!st.ok()) {
        spdlog::warn("event=server_reset_failed server={} error=\"{}\"", endpoint_.label,
                     st.error().describe());
        retire(server);
        serveWaiters(context_.nowMs());
        return;
      }
      server->forgetSessionState();
      makeIdle(server, context_.nowMs());
    });
    return;
  }
  makeIdle(server, now_ms);
}

void Pool::serveWaiters(uint64_t now_ms) {
  while (!waiters_.empty() && !idle_.empty()) {
    ServerConnection* server = idle_.back();
    idle_.pop_back();
    handOut(server, now_ms);
  }
  size_t can_open = settings_.max_size > all_.size() ? settings_.max_size - all_.size() : 0;
  while (can_open > 0 && connecting_ < waiters_.size()) {
    openConnection(now_ms);
    --can_open;
  }
}

void Pool::retire(ServerConnection* server) {
  auto it = std::find(idle_.begin(), idle_.end(), server);
  if (it != idle_.end()) idle_.erase(it);
  all_.erase(server);
  server->orphan();  // no callbacks into this pool: it may be gone (drained) before the close ends
  server->terminate();
}

void Pool::onServerClosed(ServerConnection* server) {
  auto it = std::find(idle_.begin(), idle_.end(), server);
  if (it != idle_.end()) idle_.erase(it);
  if (all_.erase(server) > 0 && !closing_all_) serveWaiters(context_.nowMs());
}

void Pool::sweep(uint64_t now_ms) {
  // Clients that waited too long.
  while (!waiters_.empty() && settings_.query_wait_timeout_ms &&
         now_ms - waiters_.front()->wait_started_ms_ >= settings_.query_wait_timeout_ms) {
    PoolWaiter* waiter = waiters_.front();
    waiters_.pop_front();
    waiter->onServerUnavailable(
        Error::make(sqlstate::kTooManyConnections,
                    "no server connection became available within query_wait_timeout (" +
                        std::to_string(settings_.query_wait_timeout_ms) + " ms)",
                    "pool " + endpoint_.label + " has " + std::to_string(all_.size()) + " of " +
                        std::to_string(settings_.max_size) + " connections in use",
                    "raise pool_size, or make transactions shorter"));
  }
  // Clients the gate held (PAUSE) too long: query_wait_timeout bounds that wait too, as in
  // PgBouncer. Taken out of held_ before they are told, since the waiter may leave at once. (Only
  // a gate holds waiters; removing it admits them all, see Worker::resumeDatabase.)
  if (settings_.query_wait_timeout_ms && gate_ != nullptr && !held_.empty()) {
    std::vector<PoolWaiter*> expired;
    std::erase_if(held_, [&](PoolWaiter* waiter) {
      if (now_ms - waiter->wait_started_ms_ < settings_.query_wait_timeout_ms) return false;
      expired.push_back(waiter);
      return true;
    });
    for (PoolWaiter* waiter : expired) {
      waiter->onServerUnavailable(gate_->heldTooLong(waiter, settings_.query_wait_timeout_ms));
    }
  }
  // Connections that take too long to log in.
  std::vector<ServerConnection*> stale;
  for (ServerConnection* server : all_) {
    auto state = server->state();
    bool logging_in = state == ServerConnection::State::kConnecting ||
                      state == ServerConnection::State::kLoggingIn;
    if (logging_in && settings_.connect_timeout_ms &&
        now_ms - server->attemptStartedAtMs() >= settings_.connect_timeout_ms &&
        !server->tryNextAddressAfterTimeout(settings_.connect_timeout_ms)) {
      stale.push_back(server);
    }
  }
  for (ServerConnection* server : stale) {
    --connecting_;
    ++connect_failures_;
    last_login_failed_ = true;
    last_login_failed_at_ms_ = now_ms;
    // With several addresses, each had its own connect_timeout: the detail says what each gave.
    std::string tried = server->timedOutAttempts(settings_.connect_timeout_ms);
    all_.erase(server);
    server->orphan();
    server->terminate();
    if (!waiters_.empty()) {
      PoolWaiter* waiter = waiters_.front();
      waiters_.pop_front();
      waiter->onServerUnavailable(
          Error::make(sqlstate::kConnectionFailure,
                      "timed out connecting to server " + endpoint_.label + " after " +
                          std::to_string(settings_.connect_timeout_ms) + " ms",
                      std::move(tried)));
    }
  }
  // Idle connections past their idle timeout or lifetime (keep min_idle).
  for (size_t i = 0; i < idle_.size();) {
    ServerConnection* server = idle_[i];
    bool too_idle = settings_.idle_timeout_ms &&
                    now_ms - server->lastUsedAtMs() >= settings_.idle_timeout_ms &&
                    idle_.size() > settings_.min_idle;
    bool too_old = settings_.lifetime_ms && now_ms - server->createdAtMs() >= settings_.lifetime_ms;
    if (too_idle || too_old) {
      retire(server);  // erases idle_[i]
    } else {
      ++i;
    }
  }
  // Top up min_idle.
  while (!closing_all_ && !draining_ && idle_.size() + connecting_ < settings_.min_idle &&
         all_.size() < settings_.max_size) {
    openConnection(now_ms);
  }
  publishMetrics(stats());
}

void Pool::publishMetrics(const PoolStats& now) {
  if (metrics_ == nullptr) return;
  auto delta = [](uint32_t a, uint32_t b) { return static_cast<int64_t>(a) - b; };
  metrics_->active.add(delta(now.active, published_.active));
  metrics_->idle.add(delta(now.idle, published_.idle));
  metrics_->connecting.add(delta(now.connecting, published_.connecting));
  metrics_->waiting_clients.add(delta(now.waiting_clients, published_.waiting_clients));
  published_ = now;
}

void Pool::closeAll() {
  closing_all_ = true;
  for (PoolWaiter* waiter : held_) waiters_.push_back(waiter);
  held_.clear();
  while (!waiters_.empty()) {
    PoolWaiter* waiter = waiters_.front();
    waiters_.pop_front();
    waiter->onServerUnavailable(
        Error::fatal(sqlstate::kAdminShutdown, "shardgate is shutting down"));
  }
  std::vector<ServerConnection*> idle = idle_;
  for (ServerConnection* server : idle) retire(server);
  std::vector<ServerConnection*> connecting;
  for (ServerConnection* server : all_) {
    if (server->state() == ServerConnection::State::kConnecting ||
        server->state() == ServerConnection::State::kLoggingIn) {
      connecting.push_back(server);
    }
  }
  for (ServerConnection* server : connecting) {
    --connecting_;
    all_.erase(server);
    server->orphan();
    server->terminate();
  }
}

void Pool::drain() {
  draining_ = true;
  std::vector<ServerConnection*> idle = idle_;
  for (ServerConnection* server : idle) retire(server);
}

PoolStats Pool::stats() const {
  PoolStats s;
  s.idle = static_cast<uint32_t>(idle_.size());
  s.connecting = connecting_;
  s.active = static_cast<uint32_t>(all_.size()) - s.idle - connecting_;
  s.waiting_clients = static_cast<uint32_t>(waiters_.size() + held_.size());
  s.connections_opened = connections_opened_;
  s.connect_failures = connect_failures_;
  return s;
}

PoolWaitState Pool::waitState() const {
  PoolWaitState state;
  state.pool = this;
  state.exhausted =
      !waiters_.empty() && idle_.empty() && connecting_ == 0 && all_.size() >= settings_.max_size;
  if (!state.exhausted) return state;
  state.holders.reserve(all_.size());
  for (const ServerConnection* server : all_) {
    ServerSink* sink = server->state() == ServerConnection::State::kHeld ? server->sink() : nullptr;
    state.holders.push_back(sink != nullptr ? sink->holder() : nullptr);
  }
  return state;
}

}  // namespace shardgate::backends
