// Per-column collations for merges, from the shards' collation probes (see column_collations.h).
#include "executor/column_collations.h"

#include "executor/pg_array.h"

#include <algorithm>
#include <cctype>
#include <string>

namespace shardgate::executor {
namespace {

Error unorderable(std::string_view sql_name) {
  return Error::make(
      "0A000", "cannot order text in collation " + std::string(sql_name) + " across shards",
      "shardgate merges the shards' text in the database's collation, in \"C\", \"POSIX\" or "
      "\"ucs_basic\", or in a C library collation named after a UTF-8 locale (\"en_US.utf8\").",
      "Narrow the query to one shard, or sort in one of those collations.");
}

// "en_US" or "en_US.utf8" (any spelling of the UTF-8 codeset), unquoted.
bool namesUtf8Locale(std::string_view name, std::string& locale) {
  const size_t dot = name.find('.');
  const std::string_view language = name.substr(0, dot);
  const auto is_part = [](char c) {
    return std::isalpha(static_cast<unsigned char>(c)) || c == '_';
  };
  if (language.empty() || !std::all_of(language.begin(), language.end(), is_part)) return false;
  if (dot != std::string_view::npos) {
    std::string codeset;
    for (char c : name.substr(dot + 1)) {
      if (c != '-') codeset += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    if (codeset != "utf8") return false;
  }
  locale = std::string(language) + ".UTF-8";
  return true;
}

}  // namespace

Result<std::shared_ptr<const Collation>> collationNamed(
    std::string_view sql_name, const std::shared_ptr<const Collation>& database) {
  // One quoted identifier: "name" (a qualified name, schema."name", is a collation of its own).
  std::string_view name = sql_name;
  if (name.size() >= 2 && name.front() == '"' && name.back() == '"') {
    name = name.substr(1, name.size() - 2);
    if (name.find('"') != std::string_view::npos) return unorderable(sql_name);
  } else if (name.find_first_of(".\"") != std::string_view::npos) {
    return unorderable(sql_name);
  }
  if (name == "default") return database;
  if (name == "C" || name == "POSIX" || name == "ucs_basic") return Collation::open("C");
  std::string locale;
  if (!namesUtf8Locale(name, locale)) return unorderable(sql_name);
  auto opened = Collation::open(locale);
  if (!opened.ok()) return unorderable(sql_name);
  return opened;
}

ColumnCollations::ColumnCollations(std::shared_ptr<const Collation> database,
                                   std::vector<planner::MergeCollation> probes,
                                   const std::vector<ColumnType>& column_types)
    : database_(std::move(database)), probes_(std::move(probes)) {
  collated_text_.reserve(column_types.size());
  for (const ColumnType& t : column_types) {
    // An ordered aggregate's keys come as an array (text[]): its elements are ordered.
    const int32_t element = elementTypeOf(t.oid);
    collated_text_.push_back(classifyType(element != 0 ? element : t.oid) ==
                             ValueClass::kCollatedText);
  }
  learned_ = probes_.empty();
}

Status ColumnCollations::learn(const ShardRow& row) {
  if (learned_) return {};
  learned_ = true;
  for (const planner::MergeCollation& p : probes_) {
    if (p.column >= collated_text_.size() || !collated_text_[p.column]) continue;
    if (p.probe >= row.size()) {
      return Error::make("XX000", "multi-shard merge: collation probe column " +
                                      std::to_string(p.probe + 1) + " of a " +
                                      std::to_string(row.size()) + "-column row");
    }
    const Cell name = row.cell(p.probe);
    if (!name) continue;  // no collation: the database's
    auto collation = collationNamed(*name, database_);
    if (!collation.ok()) return std::move(collation).error();
    if (by_column_.size() <= p.column) by_column_.resize(p.column + 1);
    by_column_[p.column] = std::move(*collation);
  }
  return {};
}

}  // namespace shardgate::executor
