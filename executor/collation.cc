// libc collations for text ordering in merges (see collation.h).
#include "executor/collation.h"

#include <cstring>
#include <unordered_map>

namespace shardgate::executor {

int compareBytes(std::string_view a, std::string_view b) {
  const int c = std::memcmp(a.data(), b.data(), std::min(a.size(), b.size()));
  if (c != 0) return c < 0 ? -1 : 1;
  return a.size() < b.size() ? -1 : (a.size() > b.size() ? 1 : 0);
}

Result<std::shared_ptr<const Collation>> Collation::open(std::string name) {
  // Loading a locale costs more than a small query's merge: each thread keeps the ones it opened.
  thread_local std::unordered_map<std::string, std::shared_ptr<const Collation>> opened;
  if (auto it = opened.find(name); it != opened.end()) return it->second;
  auto collation = load(name);
  if (collation.ok() && opened.size() < 16) opened.emplace(name, *collation);
  return collation;
}

Result<std::shared_ptr<const Collation>> Collation::load(std::string name) {
  if (name.empty() || name == "C" || name == "POSIX") {
    return std::shared_ptr<const Collation>(new Collation(std::move(name), nullptr));
  }
  if (name.starts_with(kIcuCollationPrefix)) {
    return Error::make("0A000",
                       "cannot order text across shards: the shards' database uses the ICU "
                       "collation provider (\"" +
                           name.substr(kIcuCollationPrefix.size()) + "\")",
                       "shardgate orders text with the C library's collations, as Postgres's "
                       "libc provider does; ICU may order some strings differently.",
                       "Use a database created with LOCALE_PROVIDER libc for sharded text "
                       "ordering.");
  }
  locale_t locale = newlocale(LC_COLLATE_MASK, name.c_str(), static_cast<locale_t>(nullptr));
  if (locale == static_cast<locale_t>(nullptr)) {
    return Error::make("0A000",
                       "cannot order text across shards: locale \"" + name +
                           "\" is not available on the shardgate host",
                       "The shards' database collation (datcollate) is \"" + name + "\".",
                       "Generate the locale on the shardgate host (locale-gen), or use \"C\".");
  }
  return std::shared_ptr<const Collation>(new Collation(std::move(name), locale));
}

Collation::~Collation() {
  if (locale_ != nullptr) freelocale(locale_);
}

int Collation::compare(std::string_view a, std::string_view b) const {
  if (locale_ == nullptr) return compareBytes(a, b);
  if (a == b) return 0;
  // strcoll_l needs NUL-terminated strings (text values never contain NUL); per-thread buffers
  // keep a merge's many comparisons free of allocations.
  thread_local std::string left;
  thread_local std::string right;
  left.assign(a);
  right.assign(b);
  const int c = strcoll_l(left.c_str(), right.c_str(), locale_);
  if (c != 0) return c < 0 ? -1 : 1;
  return compareBytes(a, b);
}

}  // namespace shardgate::executor
