// ASCII case folding for scans of SQL text on the hot path (std::tolower consults the locale).
#pragma once

#include <cstddef>
#include <string_view>

namespace shardgate {

inline char asciiLower(char c) {
  return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

// Whether `text` contains `word` (lower-case ASCII, not empty) in any case. The scan jumps between
// the occurrences of the word's last letter (memchr) rather than comparing at every position.
inline bool containsIgnoreCase(std::string_view text, std::string_view word) {
  const char last = word.back();
  const char upper_last = last >= 'a' && last <= 'z' ? static_cast<char>(last - 'a' + 'A') : last;
  for (const char probe : {last, upper_last}) {
    for (size_t at = text.find(probe, word.size() - 1); at != std::string_view::npos;
         at = text.find(probe, at + 1)) {
      const size_t start = at + 1 - word.size();
      size_t j = 0;
      while (j < word.size() && asciiLower(text[start + j]) == word[j]) ++j;
      if (j == word.size()) return true;
    }
    if (upper_last == last) break;
  }
  return false;
}

}  // namespace shardgate
