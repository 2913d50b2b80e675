// Logging: spdlog behind one setup function, so every file logs the same way.
#pragma once

#include <spdlog/spdlog.h>

#include <atomic>
#include <string_view>

namespace shardgate {

namespace log_detail {
// Whether debug lines are logged, kept by setLogLevel: asking spdlog costs a call into the
// library and the formatting of the arguments first.
inline std::atomic<bool> debug_enabled{false};
}  // namespace log_detail

// For debug lines on the per-statement path: `if (debugLogging()) spdlog::debug(...)`.
inline bool debugLogging() {
  return log_detail::debug_enabled.load(std::memory_order_relaxed);
}

enum class LogLineFormat {
  kText,  // ts=... level=... thread=... event=... key=value ...
  kJson,  // {"ts":"...","level":"...","thread":N,"event":"...",...}
};

// Sets up the process-wide logger (stderr, one line per event, key=value fields by convention).
// Returns false if the level name is unknown.
bool setupLogging(std::string_view level, LogLineFormat format = LogLineFormat::kText);
// Both may be called again at any time, from any thread (RELOAD).
bool setLogLevel(std::string_view level);
void setLogFormat(LogLineFormat format);

}  // namespace shardgate
