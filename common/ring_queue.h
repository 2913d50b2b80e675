// RingQueue: a FIFO in a ring of slots that allocates nothing until its first push and keeps its
// capacity after that.
//
// The per-request queues of a session or a server connection push and pop a few entries per
// transaction and are empty while the client idles. libstdc++'s std::deque allocates a 64-byte map
// and a 512-byte block on construction, even when nothing is ever pushed: with two per session that
// was a quarter of an idle client's memory. Slots are powers of two in number, so that positions
// wrap with a mask.
//
// Unlike std::deque, push_back() may move the entries: a reference to front() or back() is good
// until the next push. pop_front() hands the popped slot to `Recycle` (by default it is reset to a
// default-constructed T, releasing what it held); a queue whose entries own buffers worth keeping
// can pass a recycler that clears them instead.
#pragma once

#include <cstddef>
#include <utility>
#include <vector>

namespace shardgate {

template <typename T>
struct ResetSlot {
  void operator()(T& slot) const { slot = T(); }
};

template <typename T, typename Recycle = ResetSlot<T>>
class RingQueue {
 public:
  bool empty() const { return size_ == 0; }
  size_t size() const { return size_; }
  size_t capacity() const { return slots_.size(); }
  T& front() { return slots_[head_]; }
  const T& front() const { return slots_[head_]; }
  T& back() { return slots_[(head_ + size_ - 1) & mask()]; }
  const T& operator[](size_t i) const { return slots_[(head_ + i) & mask()]; }  // 0 = front

  void push_back(T&& value) { emplace_back() = std::move(value); }
  // Appends a slot and returns it: a default-constructed T, or one recycled by pop_front().
  T& emplace_back() {
    if (size_ == slots_.size()) grow();
    ++size_;
    return back();
  }
  void pop_front() {
    Recycle()(slots_[head_]);
    head_ = (head_ + 1) & mask();
    --size_;
  }
  void clear() {
    while (size_ > 0) pop_front();
  }

 private:
  size_t mask() const { return slots_.size() - 1; }
  void grow() {
    std::vector<T> bigger(slots_.empty() ? 4 : slots_.size() * 2);
    for (size_t i = 0; i < size_; ++i) bigger[i] = std::move(slots_[(head_ + i) & mask()]);
    slots_ = std::move(bigger);
    head_ = 0;
  }

  std::vector<T> slots_;
  size_t head_ = 0;
  size_t size_ = 0;
};

}  // namespace shardgate
