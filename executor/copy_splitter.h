// CopySplitter: splits the rows of COPY ... FROM STDIN data (text or csv) by their sharding key,
// so that each shard's COPY gets exactly its rows, byte for byte as the client sent them.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "planner/copy_split.h"

namespace shardgate::executor {

class CopySplitter {
 public:
  // `client_utf8`: the client sends text in UTF-8 (see planner::requireKeyInServerEncoding).
  CopySplitter(planner::CopySplit split, bool client_utf8 = true);

  // The client's CopyData bytes (rows may span calls). Whole rows are appended to their shard's
  // buffer. Errors: 23502 for a NULL key, the key's input errors (22P02, 22003), 22023 for a key
  // no shard holds, 22P04 for a row without the key field.
  Status feed(std::string_view data);
  // CopyDone: a last row without its newline counts too.
  Status finish();
  // Rows waiting for each shard (the caller sends and clears them).
  std::vector<std::string>& shardBuffers() { return buffers_; }
  uint64_t rows() const { return rows_; }

 private:
  // The end of the row starting at `row` in `data` (one past its newline), or npos if the row is
  // not complete yet. Sets *key to the raw key field and *key_quoted for csv.
  size_t scanRow(std::string_view data, size_t row, std::string* key, bool* key_found,
                 bool* key_quoted) const;
  Status routeRow(std::string_view row, const std::string& key, bool key_found, bool key_quoted);

  planner::CopySplit split_;
  bool client_utf8_ = true;
  std::vector<std::string> buffers_;
  std::string carry_;  // an incomplete row from the previous feed
  bool header_pending_;
  bool ended_ = false;  // the \. end-of-data line was seen
  uint64_t rows_ = 0;
};

}  // namespace shardgate::executor
