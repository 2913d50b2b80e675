// Finds Postgres message boundaries in a byte buffer without copying or allocating (hot path).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "common/error.h"

namespace shardgate::wire {

// One complete message inside the caller's buffer.
struct Frame {
  char type = 0;             // 0 for the untyped startup-phase packets
  std::string_view payload;  // bytes after the length word (points into the caller's buffer)
  size_t size = 0;           // total bytes of the message incl. type byte and length word
};

enum class FrameStatus { kNeedMore, kComplete, kInvalid };

struct FrameResult {
  FrameStatus status = FrameStatus::kNeedMore;
  Frame frame;        // valid when kComplete
  size_t needed = 0;  // kNeedMore: total bytes of the message once its length is known, else 0
  Error error;        // kInvalid: FATAL 08P01 (bad length, too large, ...)
};

// Typed message at the start of `buf`: 1 type byte + int32 length (includes itself, must be >= 4),
// then the payload. A length word above max_message_size is kInvalid ("message of N bytes exceeds
// the limit of M bytes"). The type byte is not checked here: see isFrontendMessageType().
// An invalid frame means the stream is out of sync; the connection must be closed.
FrameResult frameTyped(std::string_view buf, uint32_t max_message_size);

// Startup-phase packet (StartupMessage, SSLRequest, GSSENCRequest, CancelRequest) at the start of
// `buf`: int32 length incl. itself, then the body; the length must be >= 8 and
// <= min(max_message_size, 10000) (Postgres's own limit).
FrameResult frameUntyped(std::string_view buf, uint32_t max_message_size);

}  // namespace shardgate::wire
