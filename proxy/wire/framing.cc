// Message framing: reads the length word, checks it and slices the payload out of the buffer.
#include "proxy/wire/framing.h"

#include <algorithm>
#include <cstdio>
#include <string>

#include "proxy/wire/protocol.h"

namespace shardgate::wire {
namespace {

// The length word is a signed int32 on the wire; reading it unsigned makes negative values huge,
// so one range check rejects both.
uint32_t loadLength(const char* p) {
  return (static_cast<uint32_t>(static_cast<uint8_t>(p[0])) << 24) |
         (static_cast<uint32_t>(static_cast<uint8_t>(p[1])) << 16) |
         (static_cast<uint32_t>(static_cast<uint8_t>(p[2])) << 8) |
         static_cast<uint32_t>(static_cast<uint8_t>(p[3]));
}

// Errors are built only on the failure path, so a successful call never allocates.
FrameResult invalid(std::string message, std::string detail = {}) {
  FrameResult r;
  r.status = FrameStatus::kInvalid;
  r.error = Error::fatal(sqlstate::kProtocolViolation, std::move(message), std::move(detail));
  return r;
}

// Shown as the signed value the peer sent, which is what a reader of the log expects.
std::string signedLength(uint32_t length) {
  return std::to_string(static_cast<int32_t>(length));
}

// 'Q' for printable type bytes, 0x01 otherwise.
std::string typeName(char type) {
  char text[8];
  if (type > 0x20 && type < 0x7F) {
    std::snprintf(text, sizeof text, "'%c'", type);
  } else {
    std::snprintf(text, sizeof text, "0x%02x", static_cast<unsigned>(static_cast<uint8_t>(type)));
  }
  return text;
}

}  // namespace

FrameResult frameTyped(std::string_view buf, uint32_t max_message_size) {
  FrameResult r;
  if (buf.size() < 5) return r;  // the length is not known yet: needed stays 0
  const char type = buf[0];
  const uint32_t length = loadLength(buf.data() + 1);
  if (length < 4 || length > 0x7FFFFFFFu) {
    return invalid("invalid message length " + signedLength(length),
                   "message type byte " + typeName(type) + "; the length word must be at least 4");
  }
  if (length > max_message_size) {
    return invalid("message of " + std::to_string(length) + " bytes exceeds the limit of " +
                       std::to_string(max_message_size) + " bytes",
                   "message type byte " + typeName(type));
  }
  const size_t total = size_t{1} + length;
  if (buf.size() < total) {
    r.needed = total;
    return r;
  }
  r.status = FrameStatus::kComplete;
  r.frame.type = type;
  r.frame.payload = buf.substr(5, length - 4);
  r.frame.size = total;
  return r;
}

FrameResult frameUntyped(std::string_view buf, uint32_t max_message_size) {
  FrameResult r;
  if (buf.size() < 4) return r;
  const uint32_t length = loadLength(buf.data());
  const uint32_t limit = std::min(max_message_size, kMaxStartupPacketLength);
  if (length < 8 || length > 0x7FFFFFFFu) {
    return invalid("invalid length of startup packet",
                   "length word " + signedLength(length) + "; it must be at least 8");
  }
  if (length > limit) {
    return invalid("invalid length of startup packet",
                   "startup packet of " + std::to_string(length) + " bytes exceeds the limit of " +
                       std::to_string(limit) + " bytes");
  }
  if (buf.size() < length) {
    r.needed = length;
    return r;
  }
  r.status = FrameStatus::kComplete;
  r.frame.type = 0;
  r.frame.payload = buf.substr(4, length - 4);
  r.frame.size = length;
  return r;
}

}  // namespace shardgate::wire
