// Logging: spdlog behind one setup function, so every file logs the same way.
#pragma once

#include <spdlog/spdlog.h>

#include <string_view>

namespace shardgate {

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
