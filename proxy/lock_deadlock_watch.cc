// LockDeadlockWatch: blocking libpq reads of pg_locks on its own thread, never on a worker's loop.
#include "proxy/lock_deadlock_watch.h"

#include <libpq-fe.h>

#include <algorithm>
#include <cstdlib>
#include <set>
#include <utility>

#include "common/log.h"
#include "proxy/catalog_client.h"

namespace shardgate::proxy {

namespace {

// Every lock wait of the server (all databases: two shards may share a server), the backends
// blocking it, and how long it has waited. waitstart can be null for a moment after a wait
// begins: such a wait counts as just begun.
constexpr const char* kLockWaitsSql =
    "SELECT pid, pg_blocking_pids(pid)::text, "
    "COALESCE(floor(extract(epoch FROM clock_timestamp() - waitstart) * 1000), 0)::bigint "
    "FROM pg_locks WHERE NOT granted AND pid IS NOT NULL";

// "{12,34}" (an int[] as text) to its numbers.
std::vector<int32_t> parsePidArray(const char* text) {
  std::vector<int32_t> pids;
  for (const char* p = text; *p != '\0';) {
    if (*p >= '0' && *p <= '9') {
      char* end = nullptr;
      pids.push_back(static_cast<int32_t>(std::strtol(p, &end, 10)));
      p = end;
    } else {
      ++p;
    }
  }
  return pids;
}

}  // namespace

LockDeadlockWatch::LockDeadlockWatch(std::function<conf::ConfigPtr()> config, Victim victim)
    : config_(std::move(config)), victim_(std::move(victim)) {}

LockDeadlockWatch::~LockDeadlockWatch() {
  stop();
}

void LockDeadlockWatch::start() {
  thread_ = std::thread([this] { run(); });
}

void LockDeadlockWatch::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void LockDeadlockWatch::publish(uint32_t worker, Published published) {
  std::lock_guard lock(mutex_);
  if (published.holders.empty()) {
    published_.erase(worker);
  } else {
    published_[worker] = std::move(published);
  }
}

void LockDeadlockWatch::run() {
  for (;;) {
    const uint64_t timeout_ms = config_()->general.deadlock_timeout_ms;
    // Twice per deadlock_timeout: a cycle is acted on at the second look that finds it.
    const uint64_t period_ms =
        timeout_ms == 0 ? 1000 : std::clamp<uint64_t>(timeout_ms / 2, 50, 1000);
    {
      std::unique_lock lock(mutex_);
      wake_.wait_for(lock, std::chrono::milliseconds(period_ms), [&] { return stopping_; });
      if (stopping_) return;
    }
    if (timeout_ms != 0) checkOnce(timeout_ms);
  }
}

void LockDeadlockWatch::checkOnce(uint64_t timeout_ms) {
  Published all;
  {
    std::lock_guard lock(mutex_);
    for (const auto& [worker, published] : published_) {
      all.holders.insert(all.holders.end(), published.holders.begin(), published.holders.end());
      all.servers.insert(published.servers.begin(), published.servers.end());
    }
  }
  // A hidden cycle passes through two sessions that each hold backends on several servers.
  if (all.holders.size() < 2) {
    found_last_time_.reset();
    connections_.clear();  // none kept open while nothing needs watching
    return;
  }
  std::set<std::string> servers;
  for (const backends::BackendHolder& holder : all.holders) {
    for (const backends::BackendRef& backend : holder.backends) servers.insert(backend.server);
  }
  std::vector<backends::LockWait> waits;
  for (const std::string& server : servers) {
    auto address = all.servers.find(server);
    if (address == all.servers.end()) continue;
    if (auto read = readLockWaits(server, address->second)) {
      waits.insert(waits.end(), read->begin(), read->end());
    }
  }
  std::optional<backends::LockDeadlock> found =
      backends::findLockDeadlock(all.holders, waits, timeout_ms);
  if (!found) {
    found_last_time_.reset();
    return;
  }
  auto key = std::make_pair(found->session, found->waiting);
  if (found_last_time_ != key) {
    found_last_time_ = key;
    return;
  }
  found_last_time_.reset();
  // The wait just cancelled may still show until the cancellation lands.
  const Clock::time_point now = Clock::now();
  if (cancelled_ && cancelled_->first == found->waiting &&
      now - cancelled_->second < std::chrono::milliseconds(2 * timeout_ms)) {
    return;
  }
  // The victim's wait may have ended since the look (a lock_timeout elsewhere): then its
  // statement runs on and must not be cancelled. Look once more, just before acting.
  auto address = all.servers.find(found->waiting.server);
  std::optional<std::vector<backends::LockWait>> again =
      address == all.servers.end() ? std::nullopt
                                   : readLockWaits(found->waiting.server, address->second);
  if (!again || std::none_of(again->begin(), again->end(), [&](const backends::LockWait& w) {
        return w.waiter == found->waiting;
      })) {
    return;
  }
  cancelled_ = std::make_pair(found->waiting, now);
  std::string cycle;
  for (const std::string& line : found->cycle) cycle += (cycle.empty() ? "" : "; ") + line;
  spdlog::info("event=lock_deadlock session={} server={} pid={} waited_ms={} cycle=\"{}\"",
               found->session, found->waiting.server, found->waiting.pid, found->waited_ms, cycle);
  victim_(*found);
}

std::optional<std::vector<backends::LockWait>> LockDeadlockWatch::readLockWaits(
    const std::string& server, const conf::ServerAddress& address) {
  auto& conn = connections_[server];
  // A RELOAD may have changed how to log in (a new password): a new connection then.
  std::string conninfo = catalog::conninfoFor(address);
  if (!conn || conn->conninfo() != conninfo) {
    conn = std::make_unique<catalog::Connection>(std::move(conninfo));
  }
  if (Status connected = conn->ensureConnected(); !connected.ok()) {
    spdlog::debug("event=lock_watch_connect_failed server={} error=\"{}\"", server,
                  connected.error().message);
    return std::nullopt;
  }
  PGresult* result = PQexec(conn->raw(), kLockWaitsSql);
  std::optional<std::vector<backends::LockWait>> waits;
  if (result != nullptr && PQresultStatus(result) == PGRES_TUPLES_OK) {
    waits.emplace();
    for (int row = 0; row < PQntuples(result); ++row) {
      backends::LockWait wait;
      wait.waiter = {server,
                     static_cast<int32_t>(std::strtol(PQgetvalue(result, row, 0), nullptr, 10))};
      wait.blockers = parsePidArray(PQgetvalue(result, row, 1));
      wait.waited_ms = static_cast<uint64_t>(
          std::max<long long>(0, std::strtoll(PQgetvalue(result, row, 2), nullptr, 10)));
      waits->push_back(std::move(wait));
    }
  } else {
    spdlog::debug("event=lock_watch_query_failed server={} error=\"{}\"", server,
                  PQerrorMessage(conn->raw()));
  }
  PQclear(result);
  return waits;
}

}  // namespace shardgate::proxy
