// Bounds-checked reading of a message payload and writing of whole framed messages.
#pragma once

#include <cassert>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

#include "common/error.h"

namespace shardgate::wire {

// Reads big-endian integers and strings from a payload. Every read checks the bounds first and
// leaves the position unchanged when it fails, so hostile input can never be over-read.
class PayloadReader {
 public:
  explicit PayloadReader(std::string_view payload) : data_(payload) {}

  bool readInt8(uint8_t& out) {
    if (remaining() < 1) return false;
    out = byteAt(0);
    pos_ += 1;
    return true;
  }
  bool readInt16(int16_t& out) {
    uint16_t u = 0;
    if (!readUint16(u)) return false;
    out = static_cast<int16_t>(u);
    return true;
  }
  // Counts that Postgres itself reads unsigned (pq_getmsgint(msg, 2)), e.g. the number of Bind
  // parameters, which may go up to 65535.
  bool readUint16(uint16_t& out) {
    if (remaining() < 2) return false;
    out = static_cast<uint16_t>((byteAt(0) << 8) | byteAt(1));
    pos_ += 2;
    return true;
  }
  bool readInt32(int32_t& out) {
    if (remaining() < 4) return false;
    out = static_cast<int32_t>((static_cast<uint32_t>(byteAt(0)) << 24) |
                               (static_cast<uint32_t>(byteAt(1)) << 16) |
                               (static_cast<uint32_t>(byteAt(2)) << 8) | byteAt(3));
    pos_ += 4;
    return true;
  }
  // Up to and excluding the NUL, which is consumed; false if there is no NUL.
  bool readCString(std::string_view& out) {
    const size_t nul = data_.find('\0', pos_);
    if (nul == std::string_view::npos) return false;
    out = data_.substr(pos_, nul - pos_);
    pos_ = nul + 1;
    return true;
  }
  bool readBytes(size_t n, std::string_view& out) {
    if (remaining() < n) return false;
    out = data_.substr(pos_, n);
    pos_ += n;
    return true;
  }
  // Everything that is left (e.g. the body of CopyData).
  std::string_view readRest() {
    std::string_view rest = data_.substr(pos_);
    pos_ = data_.size();
    return rest;
  }

  size_t remaining() const { return data_.size() - pos_; }
  bool atEnd() const { return pos_ == data_.size(); }
  size_t position() const { return pos_; }

 private:
  uint8_t byteAt(size_t i) const { return static_cast<uint8_t>(data_[pos_ + i]); }

  std::string_view data_;
  size_t pos_ = 0;
};

// Appends one message to `out`: the type byte (none for type 0, the untyped startup-phase
// packets), a placeholder length word that finish() patches, then the fields.
class MessageWriter {
 public:
  MessageWriter(std::string& out, char type) : out_(out), start_(out.size()), typed_(type != 0) {
    if (typed_) out_.push_back(type);
    out_.append(4, '\0');
  }
  MessageWriter(const MessageWriter&) = delete;
  MessageWriter& operator=(const MessageWriter&) = delete;
  ~MessageWriter() { assert(finished_ && "MessageWriter::finish() was not called"); }

  MessageWriter& int8(uint8_t v) {
    out_.push_back(static_cast<char>(v));
    return *this;
  }
  MessageWriter& int16(int16_t v) {
    const auto u = static_cast<uint16_t>(v);
    const char b[2] = {static_cast<char>(u >> 8), static_cast<char>(u)};
    out_.append(b, 2);
    return *this;
  }
  MessageWriter& int32(int32_t v) {
    const auto u = static_cast<uint32_t>(v);
    const char b[4] = {static_cast<char>(u >> 24), static_cast<char>(u >> 16),
                       static_cast<char>(u >> 8), static_cast<char>(u)};
    out_.append(b, 4);
    return *this;
  }
  // A NUL inside `s` would end the string early and shift every later field, so the string is
  // cut at its first NUL: the message stays well-formed whatever the caller passes.
  MessageWriter& cstring(std::string_view s) {
    out_.append(s.substr(0, s.find('\0')));
    out_.push_back('\0');
    return *this;
  }
  MessageWriter& bytes(std::string_view s) {
    out_.append(s);
    return *this;
  }
  // Int32 length (-1 for none) followed by the bytes: Bind parameters, DataRow values, ...
  MessageWriter& nullableBytes(const std::optional<std::string>& v) {
    if (!v) return int32(-1);
    int32(static_cast<int32_t>(v->size()));
    return bytes(*v);
  }

  // Patches the length word. Must be called exactly once, after the last field.
  void finish() {
    assert(!finished_);
    finished_ = true;
    const size_t at = start_ + (typed_ ? 1 : 0);
    const auto length = static_cast<uint32_t>(out_.size() - at);
    out_[at] = static_cast<char>(length >> 24);
    out_[at + 1] = static_cast<char>(length >> 16);
    out_[at + 2] = static_cast<char>(length >> 8);
    out_[at + 3] = static_cast<char>(length);
  }

 private:
  std::string& out_;
  size_t start_ = 0;
  bool typed_;
  bool finished_ = false;
};

// The error every decode returns for a malformed payload: 08P01 "invalid <name> message".
// Severity ERROR: the framing is intact, so the connection can go on (the session may escalate).
Error invalidMessage(std::string_view name, std::string detail);

// PayloadReader that remembers why decoding failed, for the message decoders: each read names
// the field, and the first failure becomes the detail of the returned error.
class MessageDecoder {
 public:
  MessageDecoder(std::string_view payload, std::string_view message_name)
      : reader_(payload), name_(message_name) {}

  bool int8(uint8_t& out, std::string_view field);
  bool int16(int16_t& out, std::string_view field);
  bool int32(int32_t& out, std::string_view field);
  bool cstring(std::string& out, std::string_view field);
  bool cstring(std::string_view& out, std::string_view field);
  // Int32 length (-1 = none, other negatives are invalid) followed by that many bytes.
  bool nullableBytes(std::optional<std::string>& out, std::string_view field);
  // The same, as a view into the payload.
  bool nullableBytes(std::optional<std::string_view>& out, std::string_view field);
  bool bytes(size_t n, std::string& out, std::string_view field);
  // A format code: 0 (text) or 1 (binary).
  bool formatCode(int16_t& out, std::string_view field);
  // An element count read as signed Int16 (negative is invalid) or unsigned Int16 (as Postgres
  // reads parameter counts); either way the count must fit in the remaining bytes, given that
  // each element takes at least min_element_size bytes. This bounds every reserve() by the
  // payload size.
  bool count16(size_t& out, std::string_view field, size_t min_element_size);
  bool ucount16(size_t& out, std::string_view field, size_t min_element_size);
  bool count32(size_t& out, std::string_view field, size_t min_element_size);
  // Fails if bytes are left over.
  bool end();
  // Records a failure found by the caller (e.g. an unknown enum value); always returns false.
  bool fail(std::string detail);

  PayloadReader& reader() { return reader_; }
  // Only meaningful after a read returned false.
  Error error() const { return invalidMessage(name_, detail_); }

 private:
  bool truncated(std::string_view field, size_t wanted);
  bool checkCount(int64_t count, std::string_view field, size_t min_element_size, size_t& out);

  PayloadReader reader_;
  std::string_view name_;
  std::string detail_;
};

}  // namespace shardgate::wire
