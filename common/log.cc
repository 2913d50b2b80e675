// Logging set-up: a thread-safe stderr sink, with key=value text lines or JSON lines.
#include "common/log.h"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <memory>

#include "common/log_format.h"

namespace shardgate {

namespace {

constexpr const char* kTextPattern = "ts=%Y-%m-%dT%H:%M:%S.%e%z level=%l thread=%t %v";

// One JSON object per line: ts, level, thread, then the event's key=value fields.
class JsonLineFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    std::string line;
    line.reserve(msg.payload.size() + 96);
    auto since_epoch = msg.time.time_since_epoch();
    auto millis = std::chrono::duration_cast<std::chrono::milliseconds>(since_epoch).count() % 1000;
    std::time_t seconds = std::chrono::system_clock::to_time_t(msg.time);
    std::tm utc{};
    gmtime_r(&seconds, &utc);
    char stamp[40];
    size_t n = std::strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &utc);
    std::snprintf(stamp + n, sizeof(stamp) - n, ".%03dZ", static_cast<int>(millis));
    line += "{\"ts\":\"";
    line += stamp;
    line += "\",\"level\":\"";
    auto level = spdlog::level::to_string_view(msg.level);
    line.append(level.data(), level.size());
    line += "\",\"thread\":";
    line += std::to_string(msg.thread_id);
    line += ',';
    appendEventAsJsonMembers(line, std::string_view(msg.payload.data(), msg.payload.size()));
    line += "}\n";
    dest.append(line.data(), line.data() + line.size());
  }
  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<JsonLineFormatter>();
  }
};

}  // namespace

bool setLogLevel(std::string_view level) {
  auto parsed = spdlog::level::from_str(std::string(level));
  if (parsed == spdlog::level::off && level != "off") return false;
  spdlog::set_level(parsed);
  log_detail::debug_enabled.store(parsed <= spdlog::level::debug, std::memory_order_relaxed);
  return true;
}

void setLogFormat(LogLineFormat format) {
  if (format == LogLineFormat::kJson) {
    spdlog::set_formatter(std::make_unique<JsonLineFormatter>());
  } else {
    spdlog::set_formatter(std::make_unique<spdlog::pattern_formatter>(kTextPattern));
  }
}

bool setupLogging(std::string_view level, LogLineFormat format) {
  auto logger = spdlog::stderr_logger_mt("shardgate");
  spdlog::set_default_logger(logger);
  setLogFormat(format);
  // Every line reaches the file at once: operators (and tests) tail it.
  spdlog::flush_on(spdlog::level::trace);
  return setLogLevel(level);
}

}  // namespace shardgate
