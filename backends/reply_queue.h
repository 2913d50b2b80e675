// The replies a server connection still owes for the requests sent to it, in order.
//
// Every request that produces a reply (Query, Parse, Bind, Describe, Execute, Close, Sync,
// FunctionCall) gets an entry. Entries say what to do with the reply: pass it to the client,
// swallow it (a request shardgate injected, such as a re-Parse on a connection that lacks a
// prepared statement), or stand in for a reply the server will never send (a Parse shardgate
// skipped because the connection already has the statement). This is what lets transaction
// pooling keep prepared statements working, pipelined, and follow Postgres's rule that after an
// error everything up to the next Sync is skipped.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace shardgate::backends {

class PreparedStatement;

enum class Reply : uint8_t {
  kParseComplete,  // Parse
  kBindComplete,   // Bind
  kCloseComplete,  // Close
  kDescription,    // Describe: [ParameterDescription] then RowDescription or NoData
  kExecution,      // Execute: rows, then CommandComplete / EmptyQuery / PortalSuspended
  kReadyForQuery,  // Sync, Query, FunctionCall: everything up to ReadyForQuery
};

enum class ReplyAction : uint8_t {
  kForward,     // the client asked for it
  kSwallow,     // shardgate asked for it; errors are still passed on
  kSynthesize,  // no server reply will come; send `synthetic` to the client in its place
};

struct ExpectedReply {
  Reply reply;
  ReplyAction action = ReplyAction::kForward;
  // For Parse entries: the statement that becomes prepared on the connection when this Parse
  // completes (or, if it fails, that the client loses).
  std::shared_ptr<PreparedStatement> statement;
  std::string client_statement_name;
  std::string synthetic;  // the encoded message for kSynthesize
};

// A FIFO of ExpectedReply in a ring of slots that keeps its capacity: a connection pushes and
// pops several entries per transaction (five for an extended-protocol one), and a std::deque of
// entries this size allocated and freed a block every few of them. Unlike std::deque,
// push_back() may move the entries: a reference to front() is good until the next push_back.
class ReplyQueue {
 public:
  bool empty() const { return size_ == 0; }
  size_t size() const { return size_; }
  ExpectedReply& front() { return slots_[head_]; }
  const ExpectedReply& front() const { return slots_[head_]; }
  void push_back(ExpectedReply&& reply) {
    if (size_ == slots_.size()) grow();
    slots_[(head_ + size_) & (slots_.size() - 1)] = std::move(reply);
    ++size_;
  }
  void pop_front() {
    ExpectedReply& slot = slots_[head_];
    // The statement reference goes now; the strings are short (names, a few encoded replies)
    // and keep their buffers for the next entry, unless one was unusually large.
    slot.statement.reset();
    clearString(slot.client_statement_name);
    clearString(slot.synthetic);
    head_ = (head_ + 1) & (slots_.size() - 1);
    --size_;
  }

 private:
  static void clearString(std::string& s) {
    if (s.capacity() > 1024) {
      std::string().swap(s);
    } else {
      s.clear();
    }
  }
  void grow() {
    // Sizes are powers of two, so that positions wrap with a mask.
    std::vector<ExpectedReply> bigger(slots_.empty() ? 8 : slots_.size() * 2);
    for (size_t i = 0; i < size_; ++i) {
      bigger[i] = std::move(slots_[(head_ + i) & (slots_.size() - 1)]);
    }
    slots_ = std::move(bigger);
    head_ = 0;
  }

  std::vector<ExpectedReply> slots_;
  size_t head_ = 0;
  size_t size_ = 0;
};

}  // namespace shardgate::backends
