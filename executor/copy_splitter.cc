// CopySplitter: finds each COPY row's end and its key field without copying rows more than once.
#include "executor/copy_splitter.h"

#include "planner/sharding_function.h"

namespace shardgate::executor {

namespace {

int hexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// A text-format field with its backslash escapes resolved, as Postgres's CopyReadAttributesText.
std::string unescapeText(std::string_view raw) {
  std::string out;
  out.reserve(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) {
    char c = raw[i];
    if (c != '\\' || i + 1 == raw.size()) {
      out.push_back(c);
      continue;
    }
    c = raw[++i];
    switch (c) {
      case 'b':
        out.push_back('\b');
        break;
      case 'f':
        out.push_back('\f');
        break;
      case 'n':
        out.push_back('\n');
        break;
      case 'r':
        out.push_back('\r');
        break;
      case 't':
        out.push_back('\t');
        break;
      case 'v':
        out.push_back('\v');
        break;
      case 'x': {
        int value = 0, digits = 0;
        while (digits < 2 && i + 1 < raw.size() && hexValue(raw[i + 1]) >= 0) {
          value = value * 16 + hexValue(raw[++i]);
          ++digits;
        }
        if (digits == 0) {
          out.push_back('x');
        } else {
          out.push_back(static_cast<char>(value));
        }
        break;
      }
      default:
        if (c >= '0' && c <= '7') {
          int value = c - '0', digits = 1;
          while (digits < 3 && i + 1 < raw.size() && raw[i + 1] >= '0' && raw[i + 1] <= '7') {
            value = value * 8 + (raw[++i] - '0');
            ++digits;
          }
          out.push_back(static_cast<char>(value));
        } else {
          out.push_back(c);
        }
    }
  }
  return out;
}

// A csv field without its quotes (doubled quotes and escapes resolved).
std::string unquoteCsv(std::string_view raw, char quote, char escape) {
  std::string out;
  bool quoted = false;
  for (size_t i = 0; i < raw.size(); ++i) {
    const char c = raw[i];
    if (quoted && c == escape && i + 1 < raw.size() &&
        (raw[i + 1] == quote || raw[i + 1] == escape)) {
      out.push_back(raw[++i]);
    } else if (c == quote) {
      quoted = !quoted;
    } else {
      out.push_back(c);
    }
  }
  return out;
}

}  // namespace

CopySplitter::CopySplitter(planner::CopySplit split, bool client_utf8)
    : split_(std::move(split)),
      client_utf8_(client_utf8),
      buffers_(split_.shard_count),
      header_pending_(split_.header) {}

size_t CopySplitter::scanRow(std::string_view data, size_t row, std::string* key, bool* key_found,
                             bool* key_quoted) const {
  const bool csv = split_.format == planner::CopySplit::Format::kCsv;
  uint32_t field = 0;
  size_t field_start = row;
  bool in_quotes = false;
  bool field_quoted = false;
  *key_found = false;
  *key_quoted = false;
  const auto endField = [&](size_t end) {
    if (field == split_.key_field) {
      key->assign(data.substr(field_start, end - field_start));
      *key_found = true;
      *key_quoted = field_quoted;
    }
    ++field;
    field_quoted = false;
  };
  for (size_t i = row; i < data.size(); ++i) {
    const char c = data[i];
    if (csv) {
      if (in_quotes) {
        if (c == split_.escape && split_.escape != split_.quote && i + 1 < data.size() &&
            (data[i + 1] == split_.quote || data[i + 1] == split_.escape)) {
          ++i;
        } else if (c == split_.quote) {
          if (split_.escape == split_.quote && i + 1 < data.size() && data[i + 1] == split_.quote) {
            ++i;  // a doubled quote inside quotes
          } else if (split_.escape == split_.quote && i + 1 == data.size()) {
            return std::string_view::npos;  // cannot tell a doubled quote yet
          } else {
            in_quotes = false;
          }
        }
        continue;
      }
      if (c == split_.quote) {
        in_quotes = true;
        field_quoted = true;
        continue;
      }
    } else if (c == '\\') {
      if (i + 1 == data.size()) return std::string_view::npos;
      ++i;  // an escaped character, newline included, is data
      continue;
    }
    if (c == split_.delimiter) {
      endField(i);
      field_start = i + 1;
    } else if (c == '\n') {
      size_t end = i;
      if (end > field_start && data[end - 1] == '\r') --end;
      endField(end);
      return i + 1;
    }
  }
  return std::string_view::npos;
}

Status CopySplitter::routeRow(std::string_view row, const std::string& key, bool key_found,
                              bool key_quoted) {
  std::string_view line = row;
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.remove_suffix(1);
  if (line == "\\.") {
    ended_ = true;  // end-of-data marker: Postgres ignores what follows
    return {};
  }
  if (header_pending_) {
    header_pending_ = false;
    for (std::string& buffer : buffers_) buffer.append(row);
    return {};
  }
  if (!key_found) {
    return Error::make("22P04", "missing data for column \"" + split_.table.column + "\"",
                       "shardgate reads the sharding key of each COPY row to pick its shard");
  }
  const bool csv = split_.format == planner::CopySplit::Format::kCsv;
  if (key == split_.null_string && !key_quoted) {
    return Error::make("23502",
                       "null value in column \"" + split_.table.column + "\" of relation \"" +
                           split_.table.name + "\" violates not-null constraint",
                       "shardgate needs the sharding key of every row to pick its shard");
  }
  const std::string value = csv ? unquoteCsv(key, split_.quote, split_.escape) : unescapeText(key);
  if (Status s = planner::requireKeyInServerEncoding(split_.table.key_type, value, client_utf8_);
      !s.ok()) {
    return s;
  }
  auto parsed = planner::parseKeyText(split_.table.key_type, value);
  if (!parsed.ok()) return parsed.error();
  auto shard = planner::shardForKey(split_.table, split_.shard_count, *parsed);
  if (!shard.ok()) return shard.error();
  buffers_.at(*shard).append(row);
  ++rows_;
  return {};
}

Status CopySplitter::feed(std::string_view data) {
  if (ended_) return {};
  std::string joined;
  if (!carry_.empty()) {
    joined = std::move(carry_);
    carry_.clear();
    joined.append(data);
    data = joined;
  }
  size_t row = 0;
  std::string key;
  while (row < data.size() && !ended_) {
    bool key_found = false, key_quoted = false;
    const size_t end = scanRow(data, row, &key, &key_found, &key_quoted);
    if (end == std::string_view::npos) break;
    if (Status s = routeRow(data.substr(row, end - row), key, key_found, key_quoted); !s.ok()) {
      return s;
    }
    row = end;
  }
  if (!ended_ && row < data.size()) carry_.assign(data.substr(row));
  return {};
}

Status CopySplitter::finish() {
  if (ended_ || carry_.empty()) return {};
  std::string last = std::move(carry_);
  carry_.clear();
  last.push_back('\n');
  return feed(last);
}

}  // namespace shardgate::executor
