// Stack budget for libpg_query's recursive passes (see stack_budget.h for why it exists).
#include "parser/stack_budget.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/wire_format_lite.h>
#include <pg_query.h>
#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <vector>

#include "pg_query.pb.h"

namespace shardgate::parser::internal {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::io::CodedInputStream;

// Message levels one counted token can add to a chain (a '+' adds Node > A_Expr: 2), and levels one
// bracket pair or one statement can add on its own (SubLink > SelectStmt > ResTarget and the Node
// wrappers between them, or ParseResult > RawStmt > Node > stmt, plus a leaf such as
// Node > ColumnRef > Node > String). Both with headroom over what Postgres's grammar builds.
constexpr size_t kLevelsPerToken = 3;
constexpr size_t kLevelsPerGroup = 16;
// A cheap bound needs no scanner: every bracket pair starts with a '(' or '[' byte (in a literal or
// not) and every token takes at least one byte. When it already fits the inline stack budget, which
// it does for most statements up to about a kilobyte, the scan is skipped (it costs ~15% of a
// parse).
constexpr size_t kCheapBoundGoodEnough = kInlineStackBytes / kParseStackPerLevel;
// Postgres's grammar keeps bison's default stack limit (YYMAXDEPTH): each open bracket holds at
// least one entry, so text nested deeper than this fails with "memory exhausted" before any tree
// exists.
constexpr size_t kBisonStackLimit = 10000;

// Tokens that never start a nesting step: literals, comments and list separators.
bool isInertToken(uint64_t token) {
  switch (token) {
    case pg_query::ICONST:
    case pg_query::FCONST:
    case pg_query::SCONST:
    case pg_query::USCONST:
    case pg_query::BCONST:
    case pg_query::XCONST:
    case pg_query::PARAM:
    case pg_query::SQL_COMMENT:
    case pg_query::C_COMMENT:
    case ',':
      return true;
    default:
      return false;
  }
}

// Running bound over the token stream: one counter per open bracket.
class BoundBuilder {
 public:
  BoundBuilder() : groups_(1) {}

  void token(uint64_t kind) {
    if (isInertToken(kind)) return;
    if (kind == '(' || kind == '[') {
      groups_.emplace_back();
      if (groups_.size() > kBisonStackLimit) unparsable_ = true;
    } else if (kind == ')' || kind == ']') {
      if (groups_.size() > 1) closeGroup();  // an unmatched closer is a syntax error anyway
    } else if (kind == ';' && groups_.size() == 1) {
      endStatement();  // statements are siblings: their depths do not add up
    } else {
      ++groups_.back().tokens;
    }
  }

  // 0 when the parser is certain to fail before building a tree.
  size_t finish() {
    while (groups_.size() > 1) closeGroup();
    endStatement();
    return unparsable_ ? 0 : best_;
  }

 private:
  struct Group {
    size_t tokens = 0;
    size_t deepest_child = 0;
  };
  static size_t bound(const Group& g) {
    return kLevelsPerGroup + kLevelsPerToken * g.tokens + g.deepest_child;
  }
  void closeGroup() {
    size_t b = bound(groups_.back());
    groups_.pop_back();
    groups_.back().deepest_child = std::max(groups_.back().deepest_child, b);
  }
  void endStatement() {
    best_ = std::max(best_, bound(groups_[0]));
    groups_[0] = Group{};
  }

  std::vector<Group> groups_;
  size_t best_ = 0;
  bool unparsable_ = false;
};

// Decodes pg_query.ScanResult bytes by hand: the token stream can be millions of entries long and
// needs no objects, only the token kinds in order.
bool feedScanTokens(const PgQueryProtobuf& pbuf, BoundBuilder& builder) {
  CodedInputStream in(reinterpret_cast<const uint8_t*>(pbuf.data), static_cast<int>(pbuf.len));
  while (uint32_t tag = in.ReadTag()) {
    uint32_t field = tag >> 3;
    if (field == 2 && (tag & 7) == 2) {  // repeated ScanToken tokens = 2
      uint32_t len = 0;
      if (!in.ReadVarint32(&len)) return false;
      auto limit = in.PushLimit(static_cast<int>(len));
      uint64_t kind = 0;
      while (uint32_t t = in.ReadTag()) {
        uint64_t v = 0;
        if ((t & 7) != 0 || !in.ReadVarint64(&v)) return false;
        if ((t >> 3) == 4) kind = v;  // Token token = 4
      }
      in.PopLimit(limit);
      builder.token(kind);
    } else if (!google::protobuf::internal::WireFormatLite::SkipField(&in, tag)) {
      return false;
    }
  }
  return in.ConsumedEntireMessage();
}

void* threadMain(void* arg) {
  auto* call = static_cast<std::pair<void (*)(void*), void*>*>(arg);
  call->first(call->second);
  return nullptr;
}

}  // namespace

size_t depthBound(const std::string& sql) {
  size_t brackets = 0;
  for (char c : sql) brackets += (c == '(' || c == '[');
  size_t cheap = kLevelsPerGroup * (brackets + 1) + kLevelsPerToken * sql.size();
  if (cheap <= kCheapBoundGoodEnough) return cheap;

  PgQueryScanResult scan = pg_query_scan(sql.c_str());
  size_t result = 0;
  BoundBuilder builder;
  if (scan.error != nullptr) {
    // The parser's lexer will reject the text too, before any tree exists; but that is the
    // parser's business, so stay on the safe side.
    result = cheap;
  } else if (feedScanTokens(scan.pbuf, builder)) {
    result = builder.finish();
  } else {
    result = SIZE_MAX;  // cannot happen with a sane libpg_query; refuse rather than guess
  }
  pg_query_free_scan_result(scan);
  return result;
}

Result<size_t> serializedTreeDepth(std::string_view bytes, size_t max_depth) {
  if (bytes.size() > static_cast<size_t>(INT_MAX)) {
    return stackDepthExceeded("the parse tree is larger than 2 GB");
  }
  struct Frame {
    const Descriptor* type;
    int end;  // offset just past this message
  };
  auto malformed = [] {
    return Error::make(sqlstate::kInternalError, "malformed pg_query parse tree",
                       "libpg_query's protobuf output could not be walked");
  };
  CodedInputStream in(reinterpret_cast<const uint8_t*>(bytes.data()),
                      static_cast<int>(bytes.size()));
  std::vector<Frame> stack{{pg_query::ParseResult::descriptor(), static_cast<int>(bytes.size())}};
  size_t deepest = 1;
  while (true) {
    int pos = in.CurrentPosition();
    while (stack.size() > 1 && pos >= stack.back().end) {
      if (pos > stack.back().end) return malformed();
      stack.pop_back();
    }
    if (pos >= stack.back().end) break;
    uint32_t tag = in.ReadTag();
    if (tag == 0) return malformed();
    const Descriptor* type = stack.back().type;
    switch (tag & 7) {
      case 0: {  // varint
        uint64_t ignored;
        if (!in.ReadVarint64(&ignored)) return malformed();
        break;
      }
      case 1:  // fixed64
        if (!in.Skip(8)) return malformed();
        break;
      case 5:  // fixed32
        if (!in.Skip(4)) return malformed();
        break;
      case 2: {  // length-delimited: a sub-message, a string or a packed array
        uint32_t len = 0;
        if (!in.ReadVarint32(&len)) return malformed();
        const FieldDescriptor* field = type->FindFieldByNumber(static_cast<int>(tag >> 3));
        if (field != nullptr && field->type() == FieldDescriptor::TYPE_MESSAGE) {
          int64_t remaining = int64_t{stack.back().end} - in.CurrentPosition();
          if (remaining < 0 || int64_t{len} > remaining) return malformed();
          int end = in.CurrentPosition() + static_cast<int>(len);
          stack.push_back({field->message_type(), end});
          deepest = std::max(deepest, stack.size());
          if (deepest > max_depth) {
            return stackDepthExceeded("the statement nests more than " + std::to_string(max_depth) +
                                      " levels deep");
          }
        } else if (!in.Skip(static_cast<int>(len))) {
          return malformed();
        }
        break;
      }
      default:
        return malformed();
    }
  }
  return deepest;
}

size_t jsonObjectDepth(std::string_view json) {
  size_t depth = 0, deepest = 0;
  bool in_string = false;
  for (size_t i = 0; i < json.size(); ++i) {
    char c = json[i];
    if (in_string) {
      if (c == '\\') {
        ++i;  // skip the escaped character, which may be a quote
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{') {
      deepest = std::max(deepest, ++depth);
    } else if (c == '}' && depth > 0) {
      --depth;
    }
  }
  return deepest;
}

Error stackDepthExceeded(std::string detail) {
  return Error::make(sqlstate::kStatementTooComplex, "stack depth limit exceeded",
                     std::move(detail),
                     "Simplify the statement: fewer nested expressions, subqueries or set "
                     "operations in one statement.");
}

Status runOnHelperThread(size_t stack_bytes, void (*fn)(void*), void* arg) {
  long page = sysconf(_SC_PAGESIZE);
  size_t page_size = page > 0 ? static_cast<size_t>(page) : 4096;
  stack_bytes = (stack_bytes + page_size - 1) / page_size * page_size;
  pthread_attr_t attr;
  if (int rc = pthread_attr_init(&attr); rc != 0) {
    return Error::make(sqlstate::kOutOfMemory, "could not start a parser thread",
                       std::strerror(rc));
  }
  int rc = pthread_attr_setstacksize(&attr, stack_bytes);
  pthread_t thread;
  std::pair<void (*)(void*), void*> call{fn, arg};
  if (rc == 0) rc = pthread_create(&thread, &attr, threadMain, &call);
  pthread_attr_destroy(&attr);
  if (rc != 0) {
    return Error::make(sqlstate::kOutOfMemory, "could not start a parser thread",
                       "a thread with a " + std::to_string(stack_bytes >> 20) +
                           " MB stack for a deeply nested statement: " + std::strerror(rc));
  }
  pthread_join(thread, nullptr);
  return {};
}

}  // namespace shardgate::parser::internal
