// Text comparison under a database collation, as Postgres's libc collation provider does it.
#pragma once

#include <locale.h>

#include <memory>
#include <string>
#include <string_view>

#include "common/result.h"

namespace shardgate::executor {

// A collation name that stands for the shards' ICU locale (pg_database.datlocprovider = 'i'):
// "icu:" and the ICU locale. Text ordering under it is refused (0A000).
inline constexpr std::string_view kIcuCollationPrefix = "icu:";

// varstr_cmp (src/backend/utils/adt/varlena.c): "C" and "POSIX" compare bytes (memcmp, then the
// shorter first); any other collation compares with strcoll_l in that locale and, when strcoll
// calls two different strings equal, breaks the tie with strcmp (deterministic collations).
// Immutable after open(); shareable between threads (strcoll_l takes the locale explicitly).
class Collation {
 public:
  // `name` is the shards' pg_database.datcollate, e.g. "C", "en_US.UTF-8". 0A000 if this machine
  // lacks that locale (the merge could not order text as the shards do).
  static Result<std::shared_ptr<const Collation>> open(std::string name);
  ~Collation();
  Collation(const Collation&) = delete;
  Collation& operator=(const Collation&) = delete;

  int compare(std::string_view a, std::string_view b) const;
  bool isBytewise() const { return locale_ == nullptr; }
  const std::string& name() const { return name_; }

 private:
  Collation(std::string name, locale_t locale) : name_(std::move(name)), locale_(locale) {}
  static Result<std::shared_ptr<const Collation>> load(std::string name);
  std::string name_;
  locale_t locale_ = nullptr;  // nullptr: bytewise ("C", "POSIX")
};

// memcmp of the common prefix, then the shorter first.
int compareBytes(std::string_view a, std::string_view b);

}  // namespace shardgate::executor
