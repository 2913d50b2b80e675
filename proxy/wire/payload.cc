// MessageDecoder: the field-by-field reader behind every message decode, with precise errors.
#include "proxy/wire/payload.h"

namespace shardgate::wire {

Error invalidMessage(std::string_view name, std::string detail) {
  return Error::make(sqlstate::kProtocolViolation, "invalid " + std::string(name) + " message",
                     std::move(detail));
}

bool MessageDecoder::fail(std::string detail) {
  if (detail_.empty()) detail_ = std::move(detail);
  return false;
}

bool MessageDecoder::truncated(std::string_view field, size_t wanted) {
  return fail("truncated " + std::string(field) + " at offset " +
              std::to_string(reader_.position()) + ": need " + std::to_string(wanted) + " bytes, " +
              std::to_string(reader_.remaining()) + " left");
}

bool MessageDecoder::int8(uint8_t& out, std::string_view field) {
  return reader_.readInt8(out) || truncated(field, 1);
}

bool MessageDecoder::int16(int16_t& out, std::string_view field) {
  return reader_.readInt16(out) || truncated(field, 2);
}

bool MessageDecoder::int32(int32_t& out, std::string_view field) {
  return reader_.readInt32(out) || truncated(field, 4);
}

bool MessageDecoder::cstring(std::string_view& out, std::string_view field) {
  if (reader_.readCString(out)) return true;
  return fail("missing NUL terminator of " + std::string(field) + " at offset " +
              std::to_string(reader_.position()));
}

bool MessageDecoder::cstring(std::string& out, std::string_view field) {
  std::string_view view;
  if (!cstring(view, field)) return false;
  out.assign(view);
  return true;
}

bool MessageDecoder::bytes(size_t n, std::string& out, std::string_view field) {
  std::string_view view;
  if (!reader_.readBytes(n, view)) return truncated(field, n);
  out.assign(view);
  return true;
}

bool MessageDecoder::nullableBytes(std::optional<std::string_view>& out, std::string_view field) {
  int32_t length = 0;
  // The field's name is only spelled out on failure: this runs for every parameter and column.
  if (!reader_.readInt32(length)) return truncated(std::string(field) + " length", 4);
  if (length == -1) {
    out.reset();
    return true;
  }
  if (length < 0) {
    return fail("invalid length " + std::to_string(length) + " of " + std::string(field));
  }
  std::string_view view;
  if (!reader_.readBytes(static_cast<size_t>(length), view)) {
    return truncated(field, static_cast<size_t>(length));
  }
  out = view;
  return true;
}

bool MessageDecoder::nullableBytes(std::optional<std::string>& out, std::string_view field) {
  std::optional<std::string_view> view;
  if (!nullableBytes(view, field)) return false;
  if (view) {
    out.emplace(*view);
  } else {
    out.reset();
  }
  return true;
}

bool MessageDecoder::formatCode(int16_t& out, std::string_view field) {
  if (!int16(out, field)) return false;
  if (out == 0 || out == 1) return true;
  return fail("invalid " + std::string(field) + " " + std::to_string(out) +
              " (0 = text, 1 = binary)");
}

bool MessageDecoder::checkCount(int64_t count, std::string_view field, size_t min_element_size,
                                size_t& out) {
  if (count < 0) {
    return fail("negative " + std::string(field) + " " + std::to_string(count));
  }
  const auto n = static_cast<uint64_t>(count);
  if (min_element_size > 0 && n > reader_.remaining() / min_element_size) {
    return fail(std::string(field) + " " + std::to_string(count) + " is larger than the " +
                std::to_string(reader_.remaining()) + " remaining bytes allow");
  }
  out = static_cast<size_t>(n);
  return true;
}

bool MessageDecoder::count16(size_t& out, std::string_view field, size_t min_element_size) {
  int16_t count = 0;
  return int16(count, field) && checkCount(count, field, min_element_size, out);
}

bool MessageDecoder::ucount16(size_t& out, std::string_view field, size_t min_element_size) {
  uint16_t count = 0;
  if (!reader_.readUint16(count)) return truncated(field, 2);
  return checkCount(count, field, min_element_size, out);
}

bool MessageDecoder::count32(size_t& out, std::string_view field, size_t min_element_size) {
  int32_t count = 0;
  return int32(count, field) && checkCount(count, field, min_element_size, out);
}

bool MessageDecoder::end() {
  if (reader_.atEnd()) return true;
  return fail(std::to_string(reader_.remaining()) + " trailing bytes at offset " +
              std::to_string(reader_.position()));
}

}  // namespace shardgate::wire
