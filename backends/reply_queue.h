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

#include "common/ring_queue.h"

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
  // A Query shardgate sent inside the client's open extended batch: after an error earlier in
  // the batch the server skips it like the rest, so its ReadyForQuery never comes.
  bool inside_batch = false;
  // A Describe shardgate sent after its Parse of `statement` on a connection that lacked it: the
  // result must have the shape its clients were told (ServerConnection::ensurePrepared).
  bool checks_shape = false;
};

// Popped entries drop their statement reference at once; their strings are short (names, a few
// encoded replies) and keep their buffers for the next entry, unless one was unusually large.
struct RecycleExpectedReply {
  void operator()(ExpectedReply& slot) const {
    slot.statement.reset();
    clearString(slot.client_statement_name);
    clearString(slot.synthetic);
    slot.inside_batch = false;
    slot.checks_shape = false;
  }
  static void clearString(std::string& s) {
    if (s.capacity() > 1024) {
      std::string().swap(s);
    } else {
      s.clear();
    }
  }
};

// A connection pushes and pops several entries per transaction (five for an extended-protocol
// one): a ring that keeps its slots allocates nothing per transaction. A reference to front() is
// good until the next push_back.
using ReplyQueue = RingQueue<ExpectedReply, RecycleExpectedReply>;

}  // namespace shardgate::backends
