// Tests for parser/stack_budget.h: the scanner-based depth bound never undercounts, and deeply
// nested statements (which crash libpg_query 15-4.0 itself) come back as results or 54001 errors.
#include <gtest/gtest.h>

#include <functional>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>

#include "parser/parser.h"
#include "parser/stack_budget.h"

namespace shardgate::parser {
namespace {

std::string repeat(std::string_view s, int n) {
  std::string out;
  out.reserve(s.size() * static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) out += s;
  return out;
}

size_t exactDepth(const pg_query::ParseResult& tree) {
  std::string bytes;
  EXPECT_TRUE(tree.SerializeToString(&bytes));
  auto depth = internal::serializedTreeDepth(bytes, SIZE_MAX);
  EXPECT_TRUE(depth.ok());
  return depth.ok() ? *depth : 0;
}

void expectBoundCovers(const std::string& sql, bool grammar_may_refuse = false) {
  auto q = parse(sql);
  // Right-nested constructs fill bison's stack (10000 entries) at a few thousand levels.
  if (grammar_may_refuse && !q.ok() && q.error().message.starts_with("memory exhausted")) return;
  ASSERT_TRUE(q.ok()) << sql.substr(0, 200) << ": " << q.error().describe();
  size_t depth = exactDepth((*q)->tree);
  size_t bound = internal::depthBound(sql);
  // Short texts skip the scanner and get a per-byte bound; both must cover the real depth.
  EXPECT_GE(bound, depth) << sql.substr(0, 200);
}

struct Nesting {
  const char* name;
  std::string prefix, step, middle, closer;
  std::string build(int n) const {
    return prefix + repeat(step, n) + middle + (closer.empty() ? "" : repeat(closer, n));
  }
};

const Nesting kNestings[] = {
    {"plus", "SELECT 1", "+1", "", ""},
    {"cast", "SELECT 1", "::int", "", ""},
    {"union", "SELECT 1", " UNION SELECT 1", "", ""},
    {"subquery", "SELECT ", "(SELECT ", "1", ")"},
    {"not", "SELECT ", "NOT ", "true", ""},
    {"function", "SELECT ", "f(", "1", ")"},
    {"case", "SELECT ", "CASE WHEN x THEN ", "1", " END"},
    {"is_null", "SELECT x", " IS NULL", "", ""},
    {"concat", "SELECT x", "||'a'", "", ""},
    {"join", "SELECT * FROM a", " JOIN b ON true", "", ""},
    {"array", "SELECT ", "ARRAY[", "1", "]"},
    {"json_arrow", "SELECT x", "->'a'", "", ""},
    {"unary_minus", "SELECT ", "- ", "x", ""},
    {"collate", "SELECT x", " COLLATE \"C\"", "", ""},
    {"at_time_zone", "SELECT x", " AT TIME ZONE 'UTC'", "", ""},
    {"in_subquery", "SELECT 1 WHERE x IN ", "(SELECT y FROM t WHERE y IN ", "(1)", ")"},
    {"cte", "", "WITH a AS (", "SELECT 1", ") SELECT * FROM a"},
    {"lateral", "SELECT * FROM ", "(SELECT * FROM ", "t", ") s"},
    {"row", "SELECT ", "ROW(1, ", "2", ")"},
    {"paren_plus", "SELECT ", "(1 + ", "1", ")"},
    {"subscript", "SELECT x", "[1]", "", ""},
    {"between", "SELECT ", "x BETWEEN 1 AND (", "2", ")"},
    {"like", "SELECT ", "x LIKE (", "'a'", ")"},
    {"exists", "SELECT ", "EXISTS (SELECT ", "1", ")"},
    {"coalesce", "SELECT ", "coalesce(a, ", "1", ")"},
    {"typed_literal", "SELECT ", "int4(", "'1'", ")"},
    {"param_op", "SELECT $1", " + $1", "", ""},
};

TEST(ParserStackBudget, BoundCoversRealDepthOfDeepConstructs) {
  for (const Nesting& n : kNestings) {
    for (int depth : {1, 2, 5, 40, 300, 1500}) {
      SCOPED_TRACE(std::string(n.name) + " x" + std::to_string(depth));
      expectBoundCovers(n.build(depth), depth > 300);
    }
  }
}

TEST(ParserStackBudget, BoundCoversRealDepthOfRandomMixtures) {
  // Random expressions mixing the constructs above, nested both by brackets and by chaining.
  std::mt19937 rng(7);
  std::function<std::string(int)> expr = [&](int budget) -> std::string {
    if (budget <= 0) return rng() % 2 ? "x" : "1";
    switch (rng() % 9) {
      case 0:
        return expr(budget - 1) + " + " + expr(budget / 3);
      case 1:
        return "(" + expr(budget - 1) + ")";
      case 2:
        return "f(" + expr(budget - 1) + ", " + expr(budget / 4) + ")";
      case 3:
        return expr(budget - 1) + "::int";
      case 4:
        return "CASE WHEN " + expr(budget / 2) + " THEN " + expr(budget - 1) + " END";
      case 5:
        return "(SELECT " + expr(budget - 1) + " FROM t WHERE " + expr(budget / 2) + ")";
      case 6:
        return "NOT " + expr(budget - 1);
      case 7:
        return expr(budget - 1) + " IS NULL";
      default:
        return "ARRAY[" + expr(budget - 1) + "]";
    }
  };
  for (int i = 0; i < 300; ++i) {
    std::string sql = "SELECT " + expr(static_cast<int>(rng() % 60)) + " FROM t";
    if (rng() % 3 == 0) sql += " UNION SELECT " + expr(static_cast<int>(rng() % 30));
    expectBoundCovers(sql);
  }
}

TEST(ParserStackBudget, RealisticQueriesStayInline) {
  // Wide and long but flat statements must not need a helper thread.
  std::string insert = "INSERT INTO t (a, b, c) VALUES ";
  for (int i = 0; i < 5000; ++i) insert += (i ? ", " : "") + std::string("(1, 'x', now())");
  std::string in_list = "SELECT * FROM t WHERE id IN (" + repeat("1, ", 20000) + "1)";
  for (const std::string& sql : {insert, in_list}) {
    size_t bound = internal::depthBound(sql);
    EXPECT_LE(bound * internal::kParseStackPerLevel, internal::kInlineStackBytes) << bound;
  }
}

TEST(ParserStackBudget, DeepButAcceptedStatementsWork) {
  // ~6000 levels: deeper than the inline budget allows, within kMaxTreeDepth. Without the helper
  // thread libpg_query's deparse alone would need ~6 MB of stack.
  std::string sql = "SELECT 1" + repeat("+1", 3000);
  auto q = parse(sql);
  ASSERT_TRUE(q.ok()) << q.error().describe();
  EXPECT_GT(exactDepth((*q)->tree), 6000u);
  auto text = deparse((*q)->tree);
  ASSERT_TRUE(text.ok()) << text.error().describe();
  EXPECT_EQ(text->substr(0, 12), "SELECT (((((");  // libpg_query brackets each level
  auto fp1 = fingerprint(sql);
  auto fp2 = fingerprint(*text);
  ASSERT_TRUE(fp1.ok());
  ASSERT_TRUE(fp2.ok());
  EXPECT_EQ(*fp1, *fp2);
  auto split = splitStatements(sql);
  ASSERT_TRUE(split.ok());
  EXPECT_EQ(split->size(), 1u);
}

TEST(ParserStackBudget, TooDeepStatementsAreErrorsNotCrashes) {
  // Each of these overflows an 8 MB stack inside libpg_query when called directly.
  const std::string deep[] = {
      "SELECT 1" + repeat("+1", 200000),
      "SELECT 1" + repeat(" UNION SELECT 1", 100000),
      "SELECT x" + repeat("::int", 60000),
      "SELECT * FROM a" + repeat(" JOIN b ON true", 60000),
  };
  for (const std::string& sql : deep) {
    auto r = parse(sql);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().sqlstate, "54001") << r.error().describe();
    EXPECT_EQ(r.error().message, "stack depth limit exceeded");
    auto f = fingerprint(sql);  // libpg_query's fingerprint has no depth limit for set operations
    if (!f.ok()) {
      EXPECT_EQ(f.error().sqlstate, "54001");
    }
    EXPECT_TRUE(splitStatements(sql).ok());
  }
  // Just past kMaxTreeDepth.
  auto r = parse("SELECT 1" + repeat("+1", static_cast<int>(kMaxTreeDepth) / 2));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().sqlstate, "54001");
}

TEST(ParserStackBudget, DeepBracketsFailInTheGrammar) {
  auto r = parse("SELECT " + repeat("(", 20000) + "1" + repeat(")", 20000));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().sqlstate, "42601");
  EXPECT_EQ(r.error().message, "memory exhausted at or near \"(\"");
}

TEST(ParserStackBudget, WorksFromAnyThread) {
  Result<std::shared_ptr<const ParsedQuery>> a = Error();
  Result<std::shared_ptr<const ParsedQuery>> b = Error();
  std::thread t1([&] { a = parse("SELECT 1" + repeat("+1", 3000)); });
  std::thread t2([&] { b = parse("SELECT 1" + repeat("+1", 200000)); });
  t1.join();
  t2.join();
  EXPECT_TRUE(a.ok());
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.error().sqlstate, "54001");
}

TEST(ParserStackBudget, HelperThreadHasTheStackItWasAskedFor) {
  // Recurse ~24 MB deep: fatal on an 8 MB stack.
  std::function<size_t(size_t)> burn = [&](size_t n) -> size_t {
    volatile char frame[4096];
    frame[0] = static_cast<char>(n);
    return n == 0 ? frame[0] : burn(n - 1) + frame[0];
  };
  size_t result = 1;
  Status st = internal::runWithStack(64 << 20, [&] { result = burn(6000); });
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(
      result, 0u + [] {
        size_t sum = 0;
        for (size_t n = 0; n <= 6000; ++n) sum += static_cast<char>(n);
        return sum;
      }());

  EXPECT_THROW((void)internal::runWithStack(64 << 20, [] { throw std::runtime_error("x"); }),
               std::runtime_error);
  Status too_big = internal::runWithStack(internal::kMaxHelperStackBytes + 1, [] {});
  ASSERT_FALSE(too_big.ok());
  EXPECT_EQ(too_big.error().sqlstate, "54001");
}

TEST(ParserStackBudget, JsonObjectDepth) {
  EXPECT_EQ(internal::jsonObjectDepth(""), 0u);
  EXPECT_EQ(internal::jsonObjectDepth("{\"a\":[{\"b\":{}}, {}]}"), 3u);
  // Braces inside strings, also after an escaped quote, do not count.
  EXPECT_EQ(internal::jsonObjectDepth("{\"s\":\"{{\\\"{{\"}"), 1u);
  EXPECT_EQ(internal::jsonObjectDepth("{\"s\":\"\\\\\",\"t\":{}}"), 2u);
}

TEST(ParserStackBudget, SerializedDepthRejectsGarbage) {
  std::mt19937 rng(3);
  for (int i = 0; i < 2000; ++i) {
    std::string bytes;
    size_t len = rng() % 64;
    for (size_t k = 0; k < len; ++k) bytes += static_cast<char>(rng() & 0xFF);
    (void)internal::serializedTreeDepth(bytes, 100);  // must not crash or loop
  }
  auto limited = parse("SELECT 1" + repeat("+1", 100));
  ASSERT_TRUE(limited.ok());
  std::string bytes;
  ASSERT_TRUE((*limited)->tree.SerializeToString(&bytes));
  auto d = internal::serializedTreeDepth(bytes, 50);
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.error().sqlstate, "54001");
  auto exact = internal::serializedTreeDepth(bytes, 1000);
  ASSERT_TRUE(exact.ok());
  // ParseResult > RawStmt > Node > SelectStmt > Node > ResTarget > Node, then Node > A_Expr per
  // '+', then the leaf Node > A_Const > Integer.
  EXPECT_EQ(*exact, 7u + 2 * 100 + 2);
}

}  // namespace
}  // namespace shardgate::parser
