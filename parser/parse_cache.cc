// ParseCache: a bounded LRU of parse results keyed by the exact query text (see parse_cache.h).
#include "parser/parse_cache.h"

#include <algorithm>

#include "parser/parser.h"

namespace shardgate::parser {

ParseCache::ParseCache(size_t max_entries, size_t max_query_bytes)
    : max_entries_(max_entries), max_query_bytes_(max_query_bytes) {
  index_.reserve(std::min<size_t>(max_entries, 1 << 16));
}

Result<std::shared_ptr<const ParsedQuery>> ParseCache::get(std::string_view sql) {
  if (auto it = index_.find(sql); it != index_.end()) {
    ++hits_;
    lru_.splice(lru_.begin(), lru_, it->second);  // O(1); iterators stay valid
    return *it->second;
  }
  ++misses_;
  Result<std::shared_ptr<const ParsedQuery>> parsed = parse(sql);
  if (!parsed || max_entries_ == 0 || sql.size() > max_query_bytes_) return parsed;

  if (index_.size() >= max_entries_) {
    index_.erase(std::string_view(lru_.back()->sql));
    lru_.pop_back();
  }
  lru_.push_front(*parsed);
  index_.emplace(std::string_view(lru_.front()->sql), lru_.begin());
  return parsed;
}

void ParseCache::clear() {
  index_.clear();
  lru_.clear();
}

}  // namespace shardgate::parser
