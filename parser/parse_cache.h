// ParseCache: a bounded LRU of parse results keyed by the exact query text (one per worker).
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <string_view>
#include <unordered_map>

#include "common/result.h"
#include "parser/parsed_query.h"

namespace shardgate::parser {

// A bounded LRU cache of parse results keyed by query text; NOT thread-safe (one per worker, like
// every other hot-path structure). Results are shared_ptr<const ParsedQuery>, so an entry evicted
// while a plan still uses it stays alive until the plan lets go. Parse errors are not cached.
class ParseCache {
 public:
  // Texts longer than max_query_bytes are parsed but not cached (they are usually one-off bulk
  // statements and would push many small hot entries out). max_entries == 0 disables caching.
  explicit ParseCache(size_t max_entries = 4096, size_t max_query_bytes = 64 * 1024);
  ParseCache(const ParseCache&) = delete;
  ParseCache& operator=(const ParseCache&) = delete;

  // The parse of `sql`, from the cache or freshly parsed (see parser::parse for errors).
  Result<std::shared_ptr<const ParsedQuery>> get(std::string_view sql);

  size_t size() const { return index_.size(); }
  uint64_t hits() const { return hits_; }
  uint64_t misses() const { return misses_; }  // every get() that was not a hit, errors included
  void clear();

 private:
  using Lru = std::list<std::shared_ptr<const ParsedQuery>>;  // front = most recently used

  size_t max_entries_;
  size_t max_query_bytes_;
  Lru lru_;
  // Keys are views into the cached ParsedQuery::sql, which lives as long as the entry does.
  std::unordered_map<std::string_view, Lru::iterator> index_;
  uint64_t hits_ = 0;
  uint64_t misses_ = 0;
};

}  // namespace shardgate::parser
