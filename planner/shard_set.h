// ShardSet: a set of shard indexes of one database, as a bitset (no allocation up to 256 shards).
#pragma once

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

namespace shardgate::planner {

class ShardSet {
 public:
  ShardSet() = default;  // over zero shards
  static ShardSet none(size_t shard_count) { return ShardSet(shard_count); }
  static ShardSet all(size_t shard_count) {
    ShardSet s(shard_count);
    for (size_t i = 0; i < shard_count; ++i) s.add(static_cast<uint32_t>(i));
    return s;
  }
  static ShardSet one(size_t shard_count, uint32_t shard) {
    ShardSet s(shard_count);
    s.add(shard);
    return s;
  }

  size_t shardCount() const { return count_; }
  void add(uint32_t shard) {
    if (shard < count_) words()[shard / 64] |= uint64_t{1} << (shard % 64);
  }
  bool contains(uint32_t shard) const {
    return shard < count_ && (words()[shard / 64] >> (shard % 64) & 1) != 0;
  }
  size_t size() const {
    size_t n = 0;
    for (size_t i = 0; i < wordCount(); ++i) n += static_cast<size_t>(std::popcount(words()[i]));
    return n;
  }
  bool empty() const { return size() == 0; }
  bool isAll() const { return size() == count_; }
  // The lowest shard in the set.
  std::optional<uint32_t> first() const {
    for (size_t i = 0; i < wordCount(); ++i) {
      if (words()[i] != 0) {
        return static_cast<uint32_t>(i * 64 + static_cast<size_t>(std::countr_zero(words()[i])));
      }
    }
    return std::nullopt;
  }
  std::vector<uint32_t> toVector() const {
    std::vector<uint32_t> out;
    for (size_t i = 0; i < count_; ++i) {
      if (contains(static_cast<uint32_t>(i))) out.push_back(static_cast<uint32_t>(i));
    }
    return out;
  }
  void intersect(const ShardSet& o) {
    for (size_t i = 0; i < wordCount(); ++i) words()[i] &= i < o.wordCount() ? o.words()[i] : 0;
  }
  void unite(const ShardSet& o) {
    for (size_t i = 0; i < wordCount() && i < o.wordCount(); ++i) words()[i] |= o.words()[i];
  }
  friend bool operator==(const ShardSet& a, const ShardSet& b) {
    if (a.count_ != b.count_) return false;
    for (size_t i = 0; i < a.wordCount(); ++i) {
      if (a.words()[i] != b.words()[i]) return false;
    }
    return true;
  }

 private:
  static constexpr size_t kInlineWords = 4;
  explicit ShardSet(size_t shard_count) : count_(shard_count) {
    if (wordCount() > kInlineWords) heap_.assign(wordCount(), 0);
  }
  size_t wordCount() const { return (count_ + 63) / 64; }
  uint64_t* words() { return heap_.empty() ? inline_.data() : heap_.data(); }
  const uint64_t* words() const { return heap_.empty() ? inline_.data() : heap_.data(); }

  size_t count_ = 0;
  std::array<uint64_t, kInlineWords> inline_{};
  std::vector<uint64_t> heap_;
};

}  // namespace shardgate::planner
