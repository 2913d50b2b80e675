// Logging: spdlog behind one setup function, so every file logs the same way.
#pragma once

#include <spdlog/spdlog.h>

#include <string_view>

namespace shardgate {

// Sets up the process-wide logger (stderr, one line per event, key=value fields by convention).
// Returns false if the level name is unknown.
bool setupLogging(std::string_view level);
bool setLogLevel(std::string_view level);

}  // namespace shardgate
