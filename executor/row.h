// Rows inside the merge: a shard's DataRow kept as received (values located, not copied), and a
// merged row built by the aggregate; both expose cell(i) for the primitives above them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace shardgate::executor {

using Cell = std::optional<std::string_view>;  // nullopt: SQL NULL

// A DataRow payload (bytes after the length word) and where each value sits in it.
class ShardRow {
 public:
  // Checks the framing: Int16 count == `columns`, then each value's Int32 length (-1 = NULL) and
  // bytes, nothing left over. XX000 naming the shard otherwise.
  static Result<ShardRow> parse(std::string_view payload, size_t columns);

  size_t size() const { return spans_.size(); }
  Cell cell(size_t i) const {
    const Span& s = spans_[i];
    if (s.length < 0) return std::nullopt;
    return std::string_view(payload_).substr(s.offset, static_cast<size_t>(s.length));
  }
  const std::string& payload() const { return payload_; }
  // The payload's bytes from column `i`'s length word to the end (i < size()).
  std::string_view columnsFrom(size_t i) const {
    return std::string_view(payload_).substr(spans_[i].offset - 4);
  }
  // What the row holds on to, for the merge's memory accounting.
  size_t bytes() const {
    return payload_.capacity() + spans_.capacity() * sizeof(Span) + sizeof(*this);
  }

 private:
  struct Span {
    uint32_t offset = 0;
    int32_t length = -1;
  };
  std::string payload_;
  std::vector<Span> spans_;
};

// A row the merge built itself (aggregated groups).
struct MergedRow {
  std::vector<std::optional<std::string>> values;

  size_t size() const { return values.size(); }
  Cell cell(size_t i) const {
    if (!values[i]) return std::nullopt;
    return std::string_view(*values[i]);
  }
  size_t bytes() const {
    size_t n = sizeof(*this) + values.capacity() * sizeof(values[0]);
    for (const auto& v : values) {
      if (v && v->capacity() > 15) n += v->capacity();  // beyond the small-string buffer
    }
    return n;
  }
};

// Appends a framed DataRow ('D', length, count, values) holding `columns` of `row` in that order.
template <typename Row>
void appendDataRow(const Row& row, const std::vector<uint32_t>& columns, std::string& out) {
  const size_t start = out.size();
  out.push_back('D');
  out.append(4, '\0');
  auto put32 = [&out](uint32_t v) {
    const char b[4] = {static_cast<char>(v >> 24), static_cast<char>(v >> 16),
                       static_cast<char>(v >> 8), static_cast<char>(v)};
    out.append(b, 4);
  };
  const auto count = static_cast<uint16_t>(columns.size());
  out.push_back(static_cast<char>(count >> 8));
  out.push_back(static_cast<char>(count & 0xFF));
  for (uint32_t column : columns) {
    const Cell c = row.cell(column);
    if (!c) {
      put32(0xFFFFFFFFu);
    } else {
      put32(static_cast<uint32_t>(c->size()));
      out.append(*c);
    }
  }
  const auto length = static_cast<uint32_t>(out.size() - start - 1);
  out[start + 1] = static_cast<char>(length >> 24);
  out[start + 2] = static_cast<char>(length >> 16);
  out[start + 3] = static_cast<char>(length >> 8);
  out[start + 4] = static_cast<char>(length);
}

// A payload taken as it is ('D', length, payload): the fast path when every column is visible.
void appendFramedDataRow(std::string_view payload, std::string& out);

}  // namespace shardgate::executor
