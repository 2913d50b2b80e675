// Worker: switching to a reloaded config (pools drained and rebuilt), and the admin console's
// PAUSE / RESUME, RECONNECT, KILL, KILL_CLIENT, DISABLE / ENABLE.
#include <algorithm>

#include "common/log.h"
#include "proxy/admin_console.h"
#include "proxy/client_session.h"
#include "proxy/worker.h"

namespace shardgate::proxy {

namespace {

// A pool key is "database \x1f user \x1f shard index \x1f role" (see Worker::poolSpec).
struct PoolKeyParts {
  std::string database;
  std::string user;
  uint32_t shard = 0;
  int replica = -1;
};

std::optional<PoolKeyParts> splitPoolKey(const std::string& key) {
  std::vector<std::string> parts;
  size_t start = 0;
  for (;;) {
    size_t end = key.find('\x1f', start);
    parts.push_back(key.substr(start, end == std::string::npos ? std::string::npos : end - start));
    if (end == std::string::npos) break;
    start = end + 1;
  }
  if (parts.size() != 4) return std::nullopt;
  PoolKeyParts out{parts[0], parts[1], 0, -1};
  try {
    out.shard = static_cast<uint32_t>(std::stoul(parts[2]));
    if (parts[3] != "primary") {
      if (parts[3].rfind("replica", 0) != 0) return std::nullopt;
      out.replica = std::stoi(parts[3].substr(7));
    }
  } catch (...) {  // written by poolSpec, so never; but a key is no reason to throw
    return std::nullopt;
  }
  return out;
}

// Whether the pool with this key serves `database` ("" = any).
bool poolOf(const std::string& key, const std::string& database) {
  if (database.empty()) return true;
  auto parts = splitPoolKey(key);
  return parts && parts->database == database;
}

bool sameServer(const backends::ServerEndpoint& a, const backends::ServerEndpoint& b) {
  return a.host == b.host && a.port == b.port && a.database == b.database && a.user == b.user &&
         a.password == b.password && a.label == b.label && a.tls_mode == b.tls_mode &&
         a.tls == b.tls;
}

}  // namespace

void Worker::applyConfig(conf::ConfigPtr config) {
  if (!config || config == config_) return;
  config_ = std::move(config);
  forgetRecentPools();           // pools may be replaced below, and the config's objects are new
  scram_secrets_.clear();        // passwords may have changed
  lookups().forgetCollations();  // shard servers may have changed
  size_t kept = 0, drained = 0;
  for (auto it = pools_.begin(); it != pools_.end();) {
    backends::Pool& pool = *it->second;
    std::optional<PoolSpec> spec;
    if (auto parts = splitPoolKey(it->first)) {
      const conf::Database* database = config_->findDatabase(parts->database);
      const conf::User* user = config_->findUser(parts->user);
      if (database && user && parts->shard < database->shards.size() &&
          (parts->replica < 0 ||
           static_cast<size_t>(parts->replica) < database->shards[parts->shard].replicas.size())) {
        spec = poolSpec(*config_, *database, *user, parts->shard, parts->replica);
      }
    }
    bool same = spec && sameServer(spec->endpoint, pool.endpoint()) &&
                spec->settings.max_size == pool.settings().max_size &&
                spec->settings.min_idle == pool.settings().min_idle;
    if (same) {
      pool.updateSettings(spec->settings);
      ++kept;
      ++it;
      continue;
    }
    // Connections in use finish their transaction on the old server; new ones use the new pool.
    spdlog::info("event=pool_draining worker={} pool={} reason={}", index_, pool.endpoint().label,
                 spec ? "settings_changed" : "removed_from_config");
    pool.drain();
    draining_pools_.push_back(std::move(it->second));
    it = pools_.erase(it);
    ++drained;
  }
  spdlog::debug("event=config_applied worker={} pools_kept={} pools_draining={}", index_, kept,
                drained);
  sweepDrainingPools(backends::monotonicMs());
}

void Worker::sweepDrainingPools(uint64_t now_ms) {
  for (auto it = draining_pools_.begin(); it != draining_pools_.end();) {
    (*it)->sweep(now_ms);
    if ((*it)->drained()) {
      it = draining_pools_.erase(it);
    } else {
      ++it;
    }
  }
}

void Worker::pauseDatabase(const std::string& database) {
  if (database.empty()) {
    paused_all_ = true;
  } else if (!databasePaused(database)) {
    paused_databases_.push_back(database);
  }
  refreshPoolGates();
}

void Worker::resumeDatabase(const std::string& database) {
  if (database.empty()) {
    paused_all_ = false;
    paused_databases_.clear();
  } else {
    paused_databases_.erase(
        std::remove(paused_databases_.begin(), paused_databases_.end(), database),
        paused_databases_.end());
  }
  refreshPoolGates();
  // Logins held at their pool's gate ask again (those still paused are held again).
  uint64_t now = backends::monotonicMs();
  for (auto& [key, pool] : pools_) pool->admitHeld(now);
  for (auto& pool : draining_pools_) pool->admitHeld(now);
  // Sessions still paused (another database, or all) hold themselves again when they retry.
  std::vector<uint64_t> held;
  held.swap(held_sessions_);
  for (uint64_t id : held) {
    auto it = sessions_.find(id);
    if (it != sessions_.end()) it->second->resumeAfterPause();
  }
}

Error Worker::pausedTooLong(const std::string& database, uint32_t timeout_ms, bool at_login) {
  std::string message = "database \"" + database + "\" is paused: the " +
                        (at_login ? "login" : "statement") + " waited query_wait_timeout (" +
                        std::to_string(timeout_ms) + " ms)";
  const char* detail = "the admin console ran PAUSE or KILL";
  std::string hint = "RESUME " + database + " on the admin console lets clients go on";
  return at_login ? Error::fatal(sqlstate::kCannotConnectNow, std::move(message), detail, hint)
                  : Error::make(sqlstate::kCannotConnectNow, std::move(message), detail, hint);
}

bool Worker::databasePaused(const std::string& database) const {
  return paused_all_ || std::find(paused_databases_.begin(), paused_databases_.end(), database) !=
                            paused_databases_.end();
}

void Worker::reconnectDatabase(const std::string& database) {
  // Pools a reload replaced already close every connection as it is released.
  for (auto& [key, pool] : pools_) {
    if (poolOf(key, database)) pool->reconnect();
  }
}

uint32_t Worker::killDatabase(const std::string& database, const Error& why) {
  // First the gate, so no client logs in to the database while its connections are closed.
  pauseDatabase(database);
  std::vector<ClientSession*> victims;
  for (const auto& [id, session] : sessions_) {
    if (session->adminConsole() || session->closing()) continue;
    // Clients still authenticating are new ones: the pause holds them at their login.
    auto state = session->state();
    if (state != ClientSession::State::kLoggingIn && state != ClientSession::State::kReady)
      continue;
    const std::string& name = session->databaseName();
    if (name == kAdminDatabaseName || (!database.empty() && name != database)) continue;
    victims.push_back(session);
  }
  // Ending a session releases (and, mid-transaction, closes) its server connections at once.
  for (ClientSession* session : victims) session->terminate(why);
  // The released ones, the idle ones and those still logging in are closed too.
  reconnectDatabase(database);
  return static_cast<uint32_t>(victims.size());
}

bool Worker::killSession(uint64_t id, const Error& why) {
  auto it = sessions_.find(id);
  if (it == sessions_.end() || it->second->closing()) return false;
  it->second->terminate(why);
  return true;
}

void Worker::disableDatabase(const std::string& database) {
  if (!databaseDisabled(database)) disabled_databases_.push_back(database);
  refreshPoolGates();
}

void Worker::enableDatabase(const std::string& database) {
  disabled_databases_.erase(
      std::remove(disabled_databases_.begin(), disabled_databases_.end(), database),
      disabled_databases_.end());
  refreshPoolGates();
}

bool Worker::databaseDisabled(const std::string& database) const {
  return std::find(disabled_databases_.begin(), disabled_databases_.end(), database) !=
         disabled_databases_.end();
}

void Worker::refreshPoolGates() {
  backends::PoolGate* gate = gateNeeded() ? &login_gate_ : nullptr;
  for (auto& [key, pool] : pools_) pool->setGate(gate);
  for (auto& pool : draining_pools_) pool->setGate(gate);
}

backends::PoolGate::Verdict Worker::LoginGate::admit(backends::PoolWaiter* waiter, Error& error) {
  // Only a client's first connection, at login, is gated: a logged-in session waits for RESUME
  // between transactions (readyForNextTransaction), and a transaction already running must go
  // on to get its connections. Multi-shard legs are not sessions, hence the cast.
  auto* session = dynamic_cast<ClientSession*>(waiter);
  if (session == nullptr || session->state() != ClientSession::State::kLoggingIn) {
    return Verdict::kAdmit;
  }
  const std::string& database = session->databaseName();
  if (worker_.databaseDisabled(database)) {
    error = Error::fatal(sqlstate::kObjectNotInPrerequisiteState,
                         "database \"" + database + "\" is not currently accepting connections",
                         "the admin console ran DISABLE " + database,
                         "ENABLE " + database + " on the admin console lets clients in again");
    return Verdict::kRefuse;
  }
  return worker_.databasePaused(database) ? Verdict::kHold : Verdict::kAdmit;
}

Error Worker::LoginGate::heldTooLong(backends::PoolWaiter* waiter, uint32_t timeout_ms) const {
  auto* session = dynamic_cast<ClientSession*>(waiter);
  return pausedTooLong(session != nullptr ? session->databaseName() : std::string("?"), timeout_ms,
                       /*at_login=*/true);
}

}  // namespace shardgate::proxy
