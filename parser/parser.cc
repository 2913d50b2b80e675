// The parser API on top of libpg_query's C functions (see parser.h).
#include "parser/parser.h"

#include <google/protobuf/io/coded_stream.h>
#include <pg_query.h>

#include <algorithm>
#include <cstdio>
#include <exception>
#include <new>

#include "parser/stack_budget.h"

namespace shardgate::parser {
namespace {

// Postgres's wording for text that is not valid in the server encoding; NUL bytes included (the
// wire protocol cannot carry them in a query string, so they can only come from a confused caller).
Status checkEncoding(std::string_view sql) {
  const auto* s = reinterpret_cast<const unsigned char*>(sql.data());
  size_t n = sql.size();
  size_t i = 0;
  while (i < n) {
    unsigned char c = s[i];
    if (c >= 0x01 && c < 0x80) {
      ++i;
      continue;
    }
    size_t len = 0;
    unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;  // overlong
      if (c == 0xED) hi = 0x9F;  // UTF-16 surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;  // overlong
      if (c == 0xF4) hi = 0x8F;  // above U+10FFFF
    }
    bool ok = len != 0 && i + len <= n;
    for (size_t k = 1; ok && k < len; ++k) {
      unsigned char b = s[i + k];
      ok = k == 1 ? (b >= lo && b <= hi) : (b >= 0x80 && b <= 0xBF);
    }
    if (!ok) {
      // Like Postgres's report_invalid_encoding: the bytes of the bad sequence, at most its length.
      std::string bytes;
      size_t shown = std::max<size_t>(len, 1);
      for (size_t k = 0; k < shown && i + k < n; ++k) {
        char hex[8];
        std::snprintf(hex, sizeof hex, "%s0x%02x", k == 0 ? "" : " ", s[i + k]);
        bytes += hex;
      }
      return Error::make(kSqlstateCharacterNotInRepertoire,
                         "invalid byte sequence for encoding \"UTF8\": " + bytes,
                         "at byte offset " + std::to_string(i));
    }
    i += len;
  }
  return {};
}

Error syntaxError(const PgQueryError& e) {
  std::string message = e.message != nullptr ? e.message : "syntax error";
  std::string detail;
  if (e.cursorpos > 0) detail = "at character " + std::to_string(e.cursorpos);
  return Error::make(sqlstate::kSyntaxError, std::move(message), std::move(detail));
}

Error fromException(const std::exception& e) {
  if (dynamic_cast<const std::bad_alloc*>(&e) != nullptr) {
    return Error::make(sqlstate::kOutOfMemory, "out of memory", "while parsing a statement");
  }
  return Error::make(sqlstate::kInternalError, std::string("parser failure: ") + e.what());
}

// Runs the raw parse and turns libpg_query's protobuf into `query.tree`. Called where the stack can
// hold the tree's depth.
Status parseInto(ParsedQuery& query) {
  PgQueryProtobufParseResult raw = pg_query_parse_protobuf(query.sql.c_str());
  struct Free {
    PgQueryProtobufParseResult& r;
    ~Free() { pg_query_free_protobuf_parse_result(r); }
  } free_raw{raw};
  if (raw.error != nullptr) return syntaxError(*raw.error);

  std::string_view bytes(raw.parse_tree.data, raw.parse_tree.len);
  Result<size_t> depth = internal::serializedTreeDepth(bytes, kMaxTreeDepth);
  if (!depth) return std::move(depth).error();
  google::protobuf::io::CodedInputStream in(reinterpret_cast<const uint8_t*>(bytes.data()),
                                            static_cast<int>(bytes.size()));
  in.SetRecursionLimit(static_cast<int>(kMaxTreeDepth) + 1);
  if (!query.tree.ParseFromCodedStream(&in)) {
    return Error::make(sqlstate::kInternalError, "could not read libpg_query's parse tree");
  }
  return {};
}

// For statements whose depth bound is large: measures the real depth on libpg_query's JSON output
// (linear time) so that an over-deep tree is refused before the (quadratic) protobuf conversion.
Status checkDepth(const std::string& sql) {
  PgQueryParseResult r = pg_query_parse(sql.c_str());
  struct Free {
    PgQueryParseResult& r;
    ~Free() { pg_query_free_parse_result(r); }
  } free_r{r};
  if (r.error != nullptr) return syntaxError(*r.error);
  size_t depth = internal::jsonObjectDepth(r.parse_tree != nullptr ? r.parse_tree : "");
  if (depth > kMaxTreeDepth) {
    return internal::stackDepthExceeded("the statement nests " + std::to_string(depth) +
                                        " levels deep; shardgate's SQL parser accepts at most " +
                                        std::to_string(kMaxTreeDepth));
  }
  return {};
}

// Deparses a serialized ParseResult.
Result<std::string> deparseBytes(std::string& bytes) {
  Result<size_t> depth = internal::serializedTreeDepth(bytes, kMaxTreeDepth);
  if (!depth) return std::move(depth).error();
  Result<std::string> out = std::string();
  Status ran = internal::runWithStack(*depth * internal::kDeparseStackPerLevel, [&] {
    PgQueryProtobuf pbuf{bytes.size(), bytes.data()};
    PgQueryDeparseResult r = pg_query_deparse_protobuf(pbuf);
    if (r.error != nullptr) {
      out = Error::make(sqlstate::kInternalError,
                        std::string("could not deparse the statement: ") +
                            (r.error->message != nullptr ? r.error->message : "unknown error"));
    } else {
      out = std::string(r.query != nullptr ? r.query : "");
    }
    pg_query_free_deparse_result(r);
  });
  if (!ran) return std::move(ran).error();
  return out;
}

void appendVarint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

Error emptyStatement() {
  return Error::make(sqlstate::kInternalError, "cannot deparse an empty statement node");
}

}  // namespace

std::string_view ParsedQuery::statementText(size_t i) const {
  const pg_query::RawStmt& raw = tree.stmts(static_cast<int>(i));
  size_t start = std::min(static_cast<size_t>(std::max(raw.stmt_location(), 0)), sql.size());
  size_t len = raw.stmt_len() > 0 ? static_cast<size_t>(raw.stmt_len()) : sql.size() - start;
  return std::string_view(sql).substr(start, len);
}

Result<std::shared_ptr<const ParsedQuery>> parse(std::string_view sql) {
  try {
    if (Status st = checkEncoding(sql); !st) return std::move(st).error();
    auto query = std::make_shared<ParsedQuery>();
    query->sql.assign(sql);
    size_t bound = internal::depthBound(query->sql);
    // The bound decides where the work can run; the exact depth, known once libpg_query has
    // produced the tree, decides whether it is accepted (kMaxTreeDepth).
    size_t stack_bytes = bound > internal::kMaxHelperStackBytes / internal::kParseStackPerLevel
                             ? SIZE_MAX
                             : bound * internal::kParseStackPerLevel;
    Status parsed;
    Status ran = internal::runWithStack(stack_bytes, [&] {
      if (stack_bytes > internal::kInlineStackBytes) parsed = checkDepth(query->sql);
      if (parsed) parsed = parseInto(*query);
    });
    if (!ran) return std::move(ran).error();
    if (!parsed) return std::move(parsed).error();
    return std::shared_ptr<const ParsedQuery>(std::move(query));
  } catch (const std::exception& e) {
    return fromException(e);
  }
}

Result<std::string> deparse(const pg_query::ParseResult& tree) {
  try {
    for (const pg_query::RawStmt& raw : tree.stmts()) {
      if (raw.stmt().node_case() == pg_query::Node::NODE_NOT_SET) return emptyStatement();
    }
    std::string bytes;
    if (!tree.SerializeToString(&bytes)) {
      return Error::make(sqlstate::kInternalError, "could not serialize the parse tree");
    }
    return deparseBytes(bytes);
  } catch (const std::exception& e) {
    return fromException(e);
  }
}

Result<std::string> deparseStatement(const pg_query::Node& stmt) {
  try {
    if (stmt.node_case() == pg_query::Node::NODE_NOT_SET) return emptyStatement();
    // Wrap the node as ParseResult{version, stmts: [RawStmt{stmt}]} in wire format directly, which
    // saves a deep copy of the statement into a new tree.
    std::string node;
    if (!stmt.SerializeToString(&node)) {
      return Error::make(sqlstate::kInternalError, "could not serialize the statement");
    }
    std::string raw_stmt;
    raw_stmt.push_back(0x0A);  // RawStmt.stmt: field 1, length-delimited
    appendVarint(raw_stmt, node.size());
    raw_stmt += node;
    std::string bytes;
    bytes.push_back(0x08);  // ParseResult.version: field 1, varint
    appendVarint(bytes, PG_VERSION_NUM);
    bytes.push_back(0x12);  // ParseResult.stmts: field 2, length-delimited
    appendVarint(bytes, raw_stmt.size());
    bytes += raw_stmt;
    return deparseBytes(bytes);
  } catch (const std::exception& e) {
    return fromException(e);
  }
}

Result<uint64_t> fingerprint(std::string_view sql) {
  try {
    if (Status st = checkEncoding(sql); !st) return std::move(st).error();
    std::string text(sql);
    size_t bound = internal::depthBound(text);
    size_t stack_bytes =
        bound > internal::kMaxHelperStackBytes / internal::kFingerprintStackPerLevel
            ? SIZE_MAX
            : bound * internal::kFingerprintStackPerLevel;
    Result<uint64_t> out = uint64_t{0};
    Status ran = internal::runWithStack(stack_bytes, [&] {
      PgQueryFingerprintResult r = pg_query_fingerprint(text.c_str());
      if (r.error != nullptr) {
        out = syntaxError(*r.error);
      } else {
        out = r.fingerprint;
      }
      pg_query_free_fingerprint_result(r);
    });
    if (!ran) return std::move(ran).error();
    return out;
  } catch (const std::exception& e) {
    return fromException(e);
  }
}

Result<std::vector<std::string_view>> splitStatements(std::string_view sql) {
  try {
    if (Status st = checkEncoding(sql); !st) return std::move(st).error();
    // Only Postgres's (iterative) bison parser runs here, no tree walk: safe at any depth.
    std::string text(sql);
    PgQuerySplitResult r = pg_query_split_with_parser(text.c_str());
    struct Free {
      PgQuerySplitResult& r;
      ~Free() { pg_query_free_split_result(r); }
    } free_r{r};
    if (r.error != nullptr) return syntaxError(*r.error);
    std::vector<std::string_view> out;
    out.reserve(static_cast<size_t>(r.n_stmts));
    for (int i = 0; i < r.n_stmts; ++i) {
      size_t start =
          std::min(static_cast<size_t>(std::max(r.stmts[i]->stmt_location, 0)), sql.size());
      size_t len =
          std::min(static_cast<size_t>(std::max(r.stmts[i]->stmt_len, 0)), sql.size() - start);
      out.push_back(sql.substr(start, len));
    }
    return out;
  } catch (const std::exception& e) {
    return fromException(e);
  }
}

}  // namespace shardgate::parser
