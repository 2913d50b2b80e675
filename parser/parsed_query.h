// ParsedQuery: one query string and libpg_query's protobuf tree of the statements in it.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "pg_query.pb.h"

namespace shardgate::parser {

// A parsed query string: one or more statements, as libpg_query's protobuf tree. Immutable once
// built; shared (through shared_ptr<const ParsedQuery>) by the cache and every plan built from it.
struct ParsedQuery {
  std::string sql;             // the text that was parsed
  pg_query::ParseResult tree;  // stmts(i).stmt() is a pg_query::Node

  size_t statementCount() const { return static_cast<size_t>(tree.stmts_size()); }
  // i < statementCount().
  const pg_query::Node& statement(size_t i) const { return tree.stmts(static_cast<int>(i)).stmt(); }
  // Byte range of statement i in `sql` (stmt_location / stmt_len; len 0 means "to the end"). The
  // range is Postgres's: it starts right after the previous ';' (so it may begin with whitespace or
  // comments) and stops before this statement's own ';'.
  std::string_view statementText(size_t i) const;
};

}  // namespace shardgate::parser
