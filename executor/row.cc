// Shard row framing checks and DataRow framing (see row.h).
#include "executor/row.h"

#include "proxy/wire/payload.h"

namespace shardgate::executor {

Result<ShardRow> ShardRow::parse(std::string_view payload, size_t columns) {
  wire::PayloadReader reader(payload);
  int16_t count = 0;
  auto malformed = [&](std::string detail) {
    return Error::make("XX000", "malformed DataRow from a shard", std::move(detail));
  };
  if (!reader.readInt16(count)) return malformed("the row is shorter than its column count");
  if (count < 0 || static_cast<size_t>(count) != columns) {
    return malformed("the row has " + std::to_string(count) + " columns, its RowDescription " +
                     std::to_string(columns));
  }
  ShardRow row;
  row.spans_.resize(columns);
  for (size_t i = 0; i < columns; ++i) {
    int32_t length = 0;
    if (!reader.readInt32(length))
      return malformed("column " + std::to_string(i + 1) + " is cut off");
    if (length < -1) return malformed("column " + std::to_string(i + 1) + " has a negative length");
    row.spans_[i].offset = static_cast<uint32_t>(reader.position());
    row.spans_[i].length = length;
    std::string_view ignored;
    if (length > 0 && !reader.readBytes(static_cast<size_t>(length), ignored)) {
      return malformed("column " + std::to_string(i + 1) + " is cut off");
    }
  }
  if (!reader.atEnd()) return malformed("bytes left after the last column");
  row.payload_.assign(payload);
  return row;
}

void appendFramedDataRow(std::string_view payload, std::string& out) {
  const auto length = static_cast<uint32_t>(payload.size() + 4);
  const char header[5] = {'D', static_cast<char>(length >> 24), static_cast<char>(length >> 16),
                          static_cast<char>(length >> 8), static_cast<char>(length)};
  out.append(header, 5);
  out.append(payload);
}

}  // namespace shardgate::executor
