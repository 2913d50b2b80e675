// SessionSettings: what to SET or RESET on a server connection before a client's statement runs.
#include "proxy/session_settings.h"

#include <strings.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>

namespace shardgate::proxy {

namespace {
constexpr std::array<std::string_view, 13> kReported = {"application_name",
                                                        "client_encoding",
                                                        "DateStyle",
                                                        "default_transaction_read_only",
                                                        "in_hot_standby",
                                                        "integer_datetimes",
                                                        "IntervalStyle",
                                                        "is_superuser",
                                                        "server_encoding",
                                                        "server_version",
                                                        "session_authorization",
                                                        "standard_conforming_strings",
                                                        "TimeZone"};
constexpr std::array<std::string_view, kSyncedReportedSettings> kSynced = {
    "application_name", "client_encoding",
    "DateStyle",        "default_transaction_read_only",
    "IntervalStyle",    "standard_conforming_strings",
    "TimeZone"};

bool equalsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && strncasecmp(a.data(), b.data(), a.size()) == 0;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

const std::string* findIgnoreCase(const backends::ServerParameters& params, std::string_view name) {
  auto exact = params.find(name);
  if (exact != params.end()) return &exact->second;
  for (const auto& [key, value] : params) {
    if (equalsIgnoreCase(key, name)) return &value;
  }
  return nullptr;
}

void appendStatement(std::string& sql, std::string statement) {
  if (!sql.empty()) sql += "; ";
  sql += statement;
}
}  // namespace

bool isReportedSetting(std::string_view name) {
  return std::any_of(kReported.begin(), kReported.end(),
                     [&](std::string_view r) { return equalsIgnoreCase(r, name); });
}

namespace {
// The slot of a synced reported setting (kSynced.size() for any other name).
size_t syncedSlot(std::string_view name) {
  size_t i = 0;
  while (i < kSynced.size() && !equalsIgnoreCase(kSynced[i], name)) ++i;
  return i;
}
}  // namespace

bool isSyncedReportedSetting(std::string_view name) {
  return syncedSlot(name) < kSynced.size();
}

const std::string* SettingsInterner::intern(const std::string& state) {
  auto it = states_.find(state);
  if (it != states_.end()) return &*it;
  if (states_.size() >= kMaxStates) return nullptr;
  return &*states_.insert(state).first;
}

const void* SessionSettings::tag(SettingsInterner& interner) {
  if (!tag_stale_) return tag_;
  std::string state;
  for (size_t i = 0; i < kSynced.size(); ++i) {
    if ((reported_known_ >> i & 1) == 0) continue;
    state.append(kSynced[i]).push_back('=');
    state.append(reported_values_[i]).push_back('\0');
  }
  state.push_back('\x01');
  for (const auto& [name, statement] : unreported_) state.append(statement).push_back('\0');
  tag_ = interner.intern(state);
  tag_stale_ = false;
  return tag_;
}

void SessionSettings::setStartup(const SettingList& startup) {
  startup_ = startup;
  resetAll();
  applyStartupReported();
}

// The startup packet's values of the synced reported settings win over the server's defaults.
void SessionSettings::applyStartupReported() {
  for (const auto& [name, value] : startup_) {
    const size_t slot = syncedSlot(name);
    if (slot < kSynced.size()) setReportedValue(slot, value);
  }
}

void SessionSettings::setReportedValue(size_t slot, std::string_view value) {
  const auto bit = static_cast<uint8_t>(1u << slot);
  if ((reported_known_ & bit) != 0 && reported_values_[slot] == value) return;
  reported_values_[slot].assign(value);
  reported_known_ |= bit;
  tag_stale_ = true;
}

void SessionSettings::setReported(const backends::ServerParameters& values) {
  reported_known_ = 0;
  for (size_t i = 0; i < kSynced.size(); ++i) {
    reported_values_[i].clear();
    if (const std::string* value = findIgnoreCase(values, kSynced[i])) {
      setReportedValue(i, *value);
    }
  }
  tag_stale_ = true;
}

void SessionSettings::startFrom(const backends::ServerParameters& defaults) {
  setReported(defaults);
  applyStartupReported();
}

namespace {
// The value Postgres 15 reports for a startup setting, given the value a login without it reports
// (`server_value`, null if none); nullopt if it cannot be told here.
std::optional<std::string> loginReportedValue(std::string_view name, std::string_view value,
                                              const std::string* server_value) {
  if (equalsIgnoreCase(name, "application_name")) {
    // Reported as given when it is printable ASCII and fits NAMEDATALEN; Postgres would replace
    // other bytes with '?' and truncate.
    const bool plain = value.size() < 64 && std::all_of(value.begin(), value.end(), [](char c) {
                         return c >= 0x20 && c <= 0x7e;
                       });
    if (plain) return std::string(value);
    return std::nullopt;
  }
  if (server_value == nullptr) return std::nullopt;
  if (*server_value == value) return *server_value;
  if (equalsIgnoreCase(name, "client_encoding") && *server_value == "UTF8") {
    std::string spelled;
    for (char c : value) {
      if (c != '-' && c != '_') {
        spelled.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
      }
    }
    // (Postgres reports "UNICODE" as given, for old JDBC drivers; "unicode" it canonicalizes,
    // but that spelling is left to the server too.)
    if (spelled == "utf8") return *server_value;
  } else if (equalsIgnoreCase(name, "DateStyle") && equalsIgnoreCase(value, "ISO") &&
             server_value->rfind("ISO, ", 0) == 0) {
    return *server_value;  // the output format alone keeps the field order the server has
  }
  return std::nullopt;
}

bool isExtraFloatDigitsValue(std::string_view value) {
  int digits = 0;
  const char* end = value.data() + value.size();
  auto [ptr, ec] = std::from_chars(value.data(), end, digits);
  return ec == std::errc() && ptr == end && digits >= -15 && digits <= 3;
}
}  // namespace

std::optional<backends::ServerParameters> SessionSettings::reportedAtLogin(
    const backends::ServerParameters& defaults) const {
  backends::ServerParameters reported = defaults;
  for (const auto& [name, value] : startup_) {
    if (equalsIgnoreCase(name, "extra_float_digits") && isExtraFloatDigitsValue(value)) continue;
    const size_t slot = syncedSlot(name);
    if (slot == kSynced.size()) return std::nullopt;
    const std::string key(kSynced[slot]);  // Postgres's spelling, as servers report it
    auto value_now = loginReportedValue(name, value, findIgnoreCase(defaults, key));
    if (!value_now) return std::nullopt;
    reported[key] = std::move(*value_now);
  }
  return reported;
}

void SessionSettings::noteReported(std::string_view name, std::string_view value) {
  const size_t slot = syncedSlot(name);
  if (slot < kSynced.size()) setReportedValue(slot, value);
}

std::optional<std::string_view> SessionSettings::clientEncoding() const {
  constexpr size_t kSlot = 1;
  static_assert(kSynced[kSlot] == "client_encoding");
  if ((reported_known_ >> kSlot & 1) == 0) return std::nullopt;
  return std::string_view(reported_values_[kSlot]);
}

std::optional<std::string_view> SessionSettings::reported(std::string_view name) const {
  const size_t slot = syncedSlot(name);
  if (slot == kSynced.size() || (reported_known_ >> slot & 1) == 0) return std::nullopt;
  return std::string_view(reported_values_[slot]);
}

namespace {
// Stands for "changed by a statement whose outcome is not known yet": equal to no statement, so
// the next sync sets or resets the setting whatever the session wants.
const std::string kUnknown = "\x01unknown";

// Puts a setting back to its default on a server connection that another session changed. A
// setting a SET of known outcome made exists, and a plain name needs no quoting: RESET. Otherwise
// the SET may have failed, and RESET can fail the same way (42704 for a name Postgres does not
// have, 42501 for a setting the role may not change), which would fail the next session's login
// or statement: RESET is tried in a DO block that ignores its failure (PL/pgSQL, which every
// database has unless it was dropped).
std::string resetStatement(const std::string& name, const std::string& applied_statement) {
  const bool plain = !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.';
  });
  if (plain && applied_statement != kUnknown) return "RESET " + name;
  std::string body = "BEGIN EXECUTE 'RESET ' || pg_catalog.quote_ident(" + quoteLiteral(name) +
                     "); EXCEPTION WHEN OTHERS THEN NULL; END";
  return "DO " + quoteLiteral(body);
}

// set_config() takes the value as the startup packet gives it (a list setting such as
// search_path is split on commas), where SET name TO 'a,b' would make it one item.
std::string setConfigStatement(std::string_view name, std::string_view value) {
  return "SELECT pg_catalog.set_config(" + quoteLiteral(name) + ", " + quoteLiteral(value) +
         ", false)";
}
}  // namespace

int SessionSettings::extraFloatDigits() const {
  auto it = unreported_.find("extra_float_digits");
  if (it == unreported_.end()) return 1;
  return extraFloatDigitsSetBy(it->second);
}

int SessionSettings::extraFloatDigitsSetBy(std::string_view statement) {
  // The statement ends with the value: "SET extra_float_digits TO 3", "... TO -2", or
  // "SELECT pg_catalog.set_config('extra_float_digits', '3', false)"; DEFAULT has no digits.
  const size_t last = statement.find_last_of("0123456789");
  if (last == std::string::npos) return 1;
  size_t first = last;
  while (first > 0 && std::isdigit(static_cast<unsigned char>(statement[first - 1]))) --first;
  int value = 0;
  std::from_chars(statement.data() + first, statement.data() + last + 1, value);
  if (first > 0 && statement[first - 1] == '-') value = -value;
  return std::clamp(value, -15, 3);  // Postgres's range for the setting
}

void SessionSettings::resetAll() {
  tag_stale_ = true;
  unreported_.clear();
  for (const auto& [name, value] : startup_) {
    if (!isReportedSetting(name)) unreported_[lower(name)] = setConfigStatement(name, value);
  }
}

void SessionSettings::markResetOnServer(backends::ServerConnection& server) const {
  auto& applied = server.appliedSettings();
  for (auto& [name, statement] : applied) statement = kUnknown;
  for (const auto& [name, value] : startup_) {
    if (!isReportedSetting(name)) applied[lower(name)] = kUnknown;
  }
}

void SessionSettings::noteSent(backends::ServerConnection& server,
                               const std::vector<SettingChange>& changes) {
  auto& applied = server.appliedSettings();
  for (const SettingChange& change : changes) {
    if (change.kind == SettingChange::Kind::kLocal) continue;  // gone with its transaction
    if (change.kind == SettingChange::Kind::kResetAll) {
      for (auto& [name, statement] : applied) statement = kUnknown;
    } else {
      applied[change.name] = kUnknown;
    }
  }
}

void SessionSettings::noteSentSql(backends::ServerConnection& server, std::string_view sql) {
  SessionEffects effects = sessionEffectsOf(sql);
  noteSent(server, effects.changes);
}

void SessionSettings::commit(const std::vector<SettingChange>& changes,
                             backends::ServerConnection* server) {
  for (const SettingChange& change : changes) {
    tag_stale_ |= change.kind != SettingChange::Kind::kLocal;
    switch (change.kind) {
      case SettingChange::Kind::kSet:
        unreported_[change.name] = change.statement;
        if (server) server->appliedSettings()[change.name] = change.statement;
        break;
      case SettingChange::Kind::kReset:
        unreported_.erase(change.name);
        for (const auto& [name, value] : startup_) {
          if (lower(name) == change.name)
            unreported_[change.name] = setConfigStatement(name, value);
        }
        // The server has the default, or the startup value shardgate put back: the next sync
        // sets or resets it whatever the next session wants.
        if (server) server->appliedSettings()[change.name] = kUnknown;
        break;
      case SettingChange::Kind::kResetAll:
        resetAll();
        if (server) markResetOnServer(*server);
        break;
      case SettingChange::Kind::kLocal:
        break;  // it ended with the transaction
    }
  }
}

std::string SessionSettings::startupSql(bool all, const std::vector<std::string>& names) const {
  std::string sql;
  for (const auto& [name, value] : startup_) {
    bool reset = all || std::find(names.begin(), names.end(), lower(name)) != names.end();
    if (reset) appendStatement(sql, setConfigStatement(name, value));
  }
  return sql;
}

std::string SessionSettings::syncSql(const backends::ServerConnection& server) const {
  std::string sql;
  for (size_t i = 0; i < kSynced.size(); ++i) {
    if ((reported_known_ >> i & 1) == 0) continue;
    const std::string* current = findIgnoreCase(server.parameters(), kSynced[i]);
    if (current && *current == reported_values_[i]) continue;
    appendStatement(sql, setConfigStatement(kSynced[i], reported_values_[i]));
  }
  const auto& applied = server.appliedSettings();
  for (const auto& [name, statement] : unreported_) {
    auto it = applied.find(name);
    if (it != applied.end() && it->second == statement) continue;
    appendStatement(sql, statement);
  }
  for (const auto& [name, statement] : applied) {
    if (unreported_.count(name) == 0) appendStatement(sql, resetStatement(name, statement));
  }
  return sql;
}

void SessionSettings::markSynced(backends::ServerConnection& server) const {
  auto& applied = server.appliedSettings();
  applied.clear();
  for (const auto& [name, statement] : unreported_) applied.emplace(name, statement);
}

}  // namespace shardgate::proxy
