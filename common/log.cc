// Logging set-up: a thread-safe stderr sink with a timestamped, level-tagged pattern.
#include "common/log.h"

#include <spdlog/sinks/stdout_sinks.h>

namespace shardgate {

bool setLogLevel(std::string_view level) {
  auto parsed = spdlog::level::from_str(std::string(level));
  if (parsed == spdlog::level::off && level != "off") return false;
  spdlog::set_level(parsed);
  return true;
}

bool setupLogging(std::string_view level) {
  auto logger = spdlog::stderr_logger_mt("shardgate");
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e%z level=%l thread=%t %v");
  return setLogLevel(level);
}

}  // namespace shardgate
