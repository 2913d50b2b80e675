// key=value event messages to JSON members, for log_format = "json".
#include "common/log_format.h"

#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

namespace shardgate {

namespace {

bool isKeyChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.' || c == '-';
}

// Length of a valid UTF-8 sequence starting at s[i], or 0.
size_t utf8Length(std::string_view s, size_t i) {
  auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char c = byte(i);
  size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
  if (n == 0 || i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k)
    if ((byte(i + k) >> 6) != 0x2) return 0;
  return n;
}

// " key=" starts at s[i] (i points at the space)?
bool keyFollows(std::string_view s, size_t i) {
  if (i >= s.size() || s[i] != ' ') return false;
  size_t j = i + 1;
  size_t start = j;
  while (j < s.size() && isKeyChar(s[j])) ++j;
  return j > start && j < s.size() && s[j] == '=';
}

bool allDigits(std::string_view v) {
  if (v.empty() || v.size() > 18) return false;  // keep numbers within int64 / exact doubles
  for (char c : v)
    if (c < '0' || c > '9') return false;
  return !(v.size() > 1 && v[0] == '0');
}

// Splits the message into (key, value) pairs; nullopt if it is not in key=value form.
std::optional<std::vector<std::pair<std::string_view, std::string>>> parseFields(
    std::string_view s) {
  std::vector<std::pair<std::string_view, std::string>> fields;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && s[i] == ' ') ++i;
    if (i == s.size()) break;
    size_t key_start = i;
    while (i < s.size() && isKeyChar(s[i])) ++i;
    if (i == key_start || i >= s.size() || s[i] != '=') return std::nullopt;
    std::string_view key = s.substr(key_start, i - key_start);
    ++i;  // '='
    std::string value;
    if (i < s.size() && s[i] == '"') {
      ++i;
      size_t end = std::string_view::npos;
      for (size_t j = i; j < s.size(); ++j) {
        if (s[j] == '"' && (j + 1 == s.size() || keyFollows(s, j + 1))) {
          end = j;
          break;
        }
      }
      if (end == std::string_view::npos) return std::nullopt;
      value.assign(s.substr(i, end - i));
      i = end + 1;
    } else {
      size_t start = i;
      while (i < s.size() && s[i] != ' ') ++i;
      value.assign(s.substr(start, i - start));
    }
    fields.emplace_back(key, std::move(value));
  }
  if (fields.empty()) return std::nullopt;
  return fields;
}

}  // namespace

void appendJsonEscaped(std::string& out, std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  for (size_t i = 0; i < text.size();) {
    char c = text[i];
    switch (c) {
      case '"':
        out += "\\\"";
        ++i;
        continue;
      case '\\':
        out += "\\\\";
        ++i;
        continue;
      case '\n':
        out += "\\n";
        ++i;
        continue;
      case '\r':
        out += "\\r";
        ++i;
        continue;
      case '\t':
        out += "\\t";
        ++i;
        continue;
      default:
        break;
    }
    auto u = static_cast<unsigned char>(c);
    if (u < 0x20) {
      out += "\\u00";
      out += kHex[u >> 4];
      out += kHex[u & 0xf];
      ++i;
      continue;
    }
    size_t n = utf8Length(text, i);
    if (n == 0) {
      out += "\xef\xbf\xbd";  // U+FFFD REPLACEMENT CHARACTER
      ++i;
      continue;
    }
    out.append(text.substr(i, n));
    i += n;
  }
}

void appendEventAsJsonMembers(std::string& out, std::string_view message) {
  auto fields = parseFields(message);
  if (!fields) {
    out += "\"msg\":\"";
    appendJsonEscaped(out, message);
    out += '"';
    return;
  }
  bool first = true;
  for (const auto& [key, value] : *fields) {
    if (!first) out += ',';
    first = false;
    out += '"';
    appendJsonEscaped(out, key);
    out += "\":";
    if (allDigits(value)) {
      out += value;
    } else {
      out += '"';
      appendJsonEscaped(out, value);
      out += '"';
    }
  }
}

}  // namespace shardgate
