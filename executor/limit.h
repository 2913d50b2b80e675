// Limit: OFFSET rows skipped, then at most LIMIT rows (the shards were asked for limit + offset
// rows each, so the merged stream always holds enough).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace shardgate::executor {

class LimitState {
 public:
  enum class Action : uint8_t { kSkip, kEmit, kDone };

  LimitState(std::optional<int64_t> limit, std::optional<int64_t> offset)
      : limit_(limit), to_skip_(offset.value_or(0)) {}

  // What to do with the next row in order.
  Action next() {
    if (done()) return Action::kDone;
    if (to_skip_ > 0) {
      --to_skip_;
      return Action::kSkip;
    }
    ++emitted_;
    return Action::kEmit;
  }
  // No row can be emitted any more.
  bool done() const { return limit_ && emitted_ >= *limit_; }
  bool active() const { return limit_.has_value() || to_skip_ > 0; }

  static std::string describe(std::optional<int64_t> limit, std::optional<int64_t> offset) {
    std::string s = "Limit(";
    s += limit ? "limit " + std::to_string(*limit) : "no limit";
    if (offset) s += ", offset " + std::to_string(*offset);
    return s + ")";
  }

 private:
  std::optional<int64_t> limit_;
  int64_t to_skip_ = 0;
  int64_t emitted_ = 0;
};

}  // namespace shardgate::executor
