// LockDeadlockWatch: finds deadlocks through locks that span shards (backends/lock_deadlock.h)
// on a thread of its own. Workers publish which server connections each of their sessions holds;
// while two or more sessions hold connections on several servers, the watch reads those servers'
// lock waits through libpq, and the victim's worker cancels its waiting statement, whose error
// the client gets as 40P01.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "backends/lock_deadlock.h"
#include "conf/config.h"

namespace shardgate::proxy {

namespace catalog {
class Connection;
}

class LockDeadlockWatch {
 public:
  // What one worker holds: its sessions with connections on two or more servers, and how to log
  // in to each of those servers (by BackendRef::server).
  struct Published {
    std::vector<backends::BackendHolder> holders;
    std::map<std::string, conf::ServerAddress> servers;
  };
  // Called on the watch's thread with each deadlock found (the caller passes it to the worker).
  using Victim = std::function<void(const backends::LockDeadlock&)>;

  // `config` returns the config in force (general.deadlock_timeout follows reloads).
  LockDeadlockWatch(std::function<conf::ConfigPtr()> config, Victim victim);
  ~LockDeadlockWatch();
  LockDeadlockWatch(const LockDeadlockWatch&) = delete;
  LockDeadlockWatch& operator=(const LockDeadlockWatch&) = delete;

  void start();
  void stop();
  // Thread-safe: replaces what `worker` published before.
  void publish(uint32_t worker, Published published);

 private:
  using Clock = std::chrono::steady_clock;
  void run();
  // One look at the published sessions and their servers' lock waits.
  void checkOnce(uint64_t timeout_ms);
  // The not-granted locks of one server; nullopt if it cannot be read now.
  std::optional<std::vector<backends::LockWait>> readLockWaits(const std::string& server,
                                                               const conf::ServerAddress& address);

  std::function<conf::ConfigPtr()> config_;
  Victim victim_;
  std::thread thread_;
  std::mutex mutex_;  // guards stopping_ and published_
  std::condition_variable wake_;
  bool stopping_ = false;
  std::map<uint32_t, Published> published_;
  // The watch thread's own state.
  std::map<std::string, std::unique_ptr<catalog::Connection>> connections_;
  // A deadlock is acted on when two looks in a row find it with the same victim (what workers
  // publish is up to a sweep old); then that wait is not cancelled again for a while.
  std::optional<std::pair<uint64_t, backends::BackendRef>> found_last_time_;
  std::optional<std::pair<backends::BackendRef, Clock::time_point>> cancelled_;
};

}  // namespace shardgate::proxy
