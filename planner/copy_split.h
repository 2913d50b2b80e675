// CopySplit: how COPY ... FROM STDIN into a sharded table is split across the shards — the row
// format (text or csv, as the statement's options say) and which field holds the sharding key —
// and the format of COPY ... TO STDOUT, whose shards' output is passed on together.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "conf/config.h"
#include "parser/parsed_query.h"

namespace shardgate::planner {

struct CopySplit {
  enum class Format : uint8_t { kText, kCsv };
  Format format = Format::kText;
  char delimiter = '\t';
  char quote = '"';   // csv
  char escape = '"';  // csv
  std::string null_string = "\\N";
  bool header = false;     // csv: the first line names the columns (every shard gets it)
  uint32_t key_field = 0;  // 0-based field of each row holding the sharding key
  conf::ShardedTable table;
  size_t shard_count = 0;
};

// The split of `copy` (COPY <table> [(columns)] FROM STDIN [WITH (...)]) for the sharded table
// `table`. Without a column list, `column_order` (the table's columns in attnum order) tells where
// the key is. Errors: 0A000 for COPY from a server file or program and for the binary format;
// 42703 if the key column is not copied (its value would be a default computed on a shard).
// COPY ... TO STDOUT's output format, as far as merging several shards' output needs it.
struct CopyOutFormat {
  bool binary = false;
  bool header = false;  // text / csv: the first row names the columns
};

// The format of `copy` (COPY <table> | (query) TO STDOUT [WITH (...)]). Errors: 42601 / 22023 for
// options Postgres would reject the same way.
Result<CopyOutFormat> readCopyOutFormat(const pg_query::CopyStmt& copy);

// COPY FROM a server file or program is refused (0A000) for a table on several shards: each shard
// would read its own file. `table_kind` completes "<table> is ...".
Status requireCopyFromStdin(const pg_query::CopyStmt& copy, const std::string& table,
                            std::string_view table_kind);

Result<CopySplit> planCopySplit(const pg_query::CopyStmt& copy, const conf::ShardedTable& table,
                                size_t shard_count, const std::vector<std::string>* column_order);

}  // namespace shardgate::planner
