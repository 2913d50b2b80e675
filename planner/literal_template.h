// LiteralTemplate: a fast scan of a query string that replaces its literals by placeholders, so
// statements that differ only in their constants share one cached analysis.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace shardgate::planner {

// The token class of a literal, as Postgres's scanner reports it to the grammar. The grammar sees
// only the class, so two texts whose templates are equal parse to trees of the same shape.
enum class LiteralKind : uint8_t {
  kInteger,  // ICONST: digits whose value fits in int32
  kNumeric,  // FCONST: a larger integer, a decimal or an exponent form
  kString,   // SCONST: a plain '...' string (standard_conforming_strings = on)
};

// One literal of the scanned text: bytes [offset, offset + length) of the original string,
// including the quotes of a string.
struct Literal {
  uint32_t offset = 0;
  uint32_t length = 0;
  LiteralKind kind = LiteralKind::kInteger;
};

// A reusable scanner (one per worker: its buffers keep their capacity, so a scan allocates
// nothing once warm). scan() accepts only texts it can tokenise exactly like Postgres 15's scanner
// would; anything unusual (E'', U&'', $$ quotes, string continuation across lines, a NUL byte,
// invalid UTF-8, "trailing junk" after a number, unterminated quotes or comments) makes it refuse,
// and the caller then parses the text itself and caches it by its exact bytes.
class LiteralTemplate {
 public:
  // Scans `sql`, keeping a view of it (the text must outlive the use of this object). The
  // template starts with `prefix` (e.g. the database name and a separator, so that one cache can
  // hold several databases). Returns false if the text cannot be templated.
  bool scan(std::string_view sql, std::string_view prefix = {});

  // The template: the prefix, then the tokens with whitespace and comments collapsed to one space
  // and each literal replaced by "\x01" + a kind letter. Valid after a successful scan().
  const std::string& key() const { return key_; }
  std::string_view sql() const { return sql_; }
  const std::vector<Literal>& literals() const { return literals_; }
  size_t size() const { return literals_.size(); }

  // The literal's text as written (quotes included for strings).
  std::string_view rawText(size_t i) const {
    return sql_.substr(literals_[i].offset, literals_[i].length);
  }
  // The literal's value: a number as written, a string without its quotes and with '' undoubled.
  std::string value(size_t i) const;
  // Like value(), without allocating when the literal needs no unescaping.
  std::string_view valueView(size_t i, std::string& scratch) const;

  // The index of the literal that starts at byte `offset`, if any.
  std::optional<size_t> literalAt(size_t offset) const;

  // Maps a constant of the parse tree to a literal. Postgres folds a unary minus into the number
  // that follows (the constant's location is then the '-'), so `location` may point at one or more
  // '-' signs before the literal; `negations` returns how many there were. nullopt if no literal
  // starts there (the constant then comes from keywords or from an expression).
  std::optional<size_t> literalForConstant(size_t location, int& negations) const;

 private:
  std::string_view sql_;
  std::string key_;
  std::vector<Literal> literals_;
};

// Whether `sql` is valid UTF-8 without NUL bytes (what Postgres accepts in a UTF-8 database).
bool isValidUtf8Text(std::string_view sql);

}  // namespace shardgate::planner
