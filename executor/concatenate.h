// Concatenate (Route to many shards): rows pass on in the order they arrive from the shards,
// through the output buffer the caller drains; the buffer's size is the backpressure.
#pragma once

#include <string>

namespace shardgate::executor {

class ConcatenateState {
 public:
  // Output bytes waiting for drain() past which the shards are not read any further.
  static constexpr size_t kPendingBytes = 256 * 1024;

  std::string& pending() { return pending_; }
  bool wantsMore() const { return pending_.size() < kPendingBytes; }
  void drainInto(std::string& out) {
    if (out.empty()) {
      out.swap(pending_);
    } else {
      out += pending_;
    }
    pending_.clear();
  }

  static std::string describe() { return "Concatenate(shard rows as they arrive)"; }

 private:
  std::string pending_;
};

}  // namespace shardgate::executor
