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

// The hot path's framing: the same checks as frameTyped without building an Error. On kInvalid,
// call frameTyped() for the error to report.
inline FrameStatus peekTyped(std::string_view buf, uint32_t max_message_size, Frame& frame) {
  if (buf.size() < 5) return FrameStatus::kNeedMore;
  const auto* p = reinterpret_cast<const unsigned char*>(buf.data()) + 1;
  const uint32_t length =
      (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
  if (length < 4 || length > 0x7FFFFFFFu || length > max_message_size) return FrameStatus::kInvalid;
  const size_t total = size_t{1} + length;
  if (buf.size() < total) return FrameStatus::kNeedMore;
  frame.type = buf[0];
  frame.payload = buf.substr(5, length - 4);
  frame.size = total;
  return FrameStatus::kComplete;
}

// Startup-phase packet (StartupMessage, SSLRequest, GSSENCRequest, CancelRequest) at the start of
// `buf`: int32 length incl. itself, then the body; the length must be >= 8 and
// <= min(max_message_size, 10000) (Postgres's own limit).
FrameResult frameUntyped(std::string_view buf, uint32_t max_message_size);

}  // namespace shardgate::wire
