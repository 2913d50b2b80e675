// Lock-free metric cells for the hot path: each is written by one thread only (its worker), with
// relaxed load + store (no locked instruction), and read by the scrape thread with relaxed loads.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>

namespace shardgate::metrics {

// A monotonically increasing count. Single writer: add() is a plain load and store, so two
// threads adding to one Counter would lose increments (never corrupt it).
class Counter {
 public:
  void add(uint64_t n = 1) {
    value_.store(value_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  // For values copied from a cumulative source (the analysis cache's own statistics).
  void set(uint64_t v) { value_.store(v, std::memory_order_relaxed); }
  uint64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

// A value that goes up and down. Single writer, like Counter.
class Gauge {
 public:
  void set(int64_t v) { value_.store(v, std::memory_order_relaxed); }
  void add(int64_t delta) {
    value_.store(value_.load(std::memory_order_relaxed) + delta, std::memory_order_relaxed);
  }
  int64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<int64_t> value_{0};
};

// Upper bounds (in seconds, ascending) of the buckets every duration histogram uses: from 100 us
// (a pass-through statement on loopback) to a minute. An implicit +Inf bucket follows.
inline constexpr std::array<double, 18> kDurationBucketsSeconds = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1,    0.25,    0.5,    1.0,   2.5,    5.0,   10.0, 30.0,  60.0};

// The same bounds in nanoseconds, the unit observations come in.
inline constexpr std::array<uint64_t, kDurationBucketsSeconds.size()> kDurationBucketsNs = [] {
  std::array<uint64_t, kDurationBucketsSeconds.size()> out{};
  for (size_t i = 0; i < out.size(); ++i) {
    out[i] = static_cast<uint64_t>(kDurationBucketsSeconds[i] * 1e9 + 0.5);
  }
  return out;
}();

// A duration histogram with the fixed buckets above. Single writer.
class DurationHistogram {
 public:
  static constexpr size_t kBuckets = kDurationBucketsSeconds.size() + 1;  // the last is +Inf

  void observeNs(uint64_t ns) {
    size_t i = 0;
    while (i < kDurationBucketsSeconds.size() && ns > kDurationBucketsNs[i]) ++i;
    counts_[i].store(counts_[i].load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    sum_ns_.store(sum_ns_.load(std::memory_order_relaxed) + ns, std::memory_order_relaxed);
  }

  // A copy for the scraper: per-bucket (not cumulative) counts and the sum.
  struct Snapshot {
    std::array<uint64_t, kBuckets> counts{};
    uint64_t sum_ns = 0;
    Snapshot& operator+=(const Snapshot& other) {
      for (size_t i = 0; i < kBuckets; ++i) counts[i] += other.counts[i];
      sum_ns += other.sum_ns;
      return *this;
    }
    uint64_t count() const {
      uint64_t total = 0;
      for (uint64_t c : counts) total += c;
      return total;
    }
  };
  Snapshot snapshot() const {
    Snapshot s;
    for (size_t i = 0; i < kBuckets; ++i) s.counts[i] = counts_[i].load(std::memory_order_relaxed);
    s.sum_ns = sum_ns_.load(std::memory_order_relaxed);
    return s;
  }

 private:
  std::array<std::atomic<uint64_t>, kBuckets> counts_{};
  std::atomic<uint64_t> sum_ns_{0};
};

}  // namespace shardgate::metrics
