// SessionSettings: what to SET or RESET on a server connection before a client's statement runs.
#include "proxy/session_settings.h"

#include <strings.h>

#include <algorithm>
#include <array>
#include <cctype>

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
constexpr std::array<std::string_view, 7> kSynced = {
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

bool isSyncedReportedSetting(std::string_view name) {
  return std::any_of(kSynced.begin(), kSynced.end(),
                     [&](std::string_view r) { return equalsIgnoreCase(r, name); });
}

void SessionSettings::setStartup(const SettingList& startup) {
  startup_ = startup;
  resetAll();
  for (const auto& [name, value] : startup_) {
    if (isReportedSetting(name)) reported_[name] = value;
  }
}

void SessionSettings::noteReported(std::string_view name, std::string_view value) {
  auto it = reported_.find(name);
  if (it != reported_.end()) {
    it->second = value;
  } else {
    reported_.emplace(std::string(name), std::string(value));
  }
}

void SessionSettings::set(std::string_view name, std::string_view value) {
  if (isReportedSetting(name)) return;  // ParameterStatus keeps those
  unreported_[lower(name)] = std::string(value);
}

void SessionSettings::reset(std::string_view name) {
  if (isReportedSetting(name)) return;
  std::string key = lower(name);
  unreported_.erase(key);
  for (const auto& [startup_name, value] : startup_) {
    if (lower(startup_name) == key) unreported_[key] = value;
  }
}

void SessionSettings::resetAll() {
  unreported_.clear();
  for (const auto& [name, value] : startup_) {
    if (!isReportedSetting(name)) unreported_[lower(name)] = value;
  }
}

std::string SessionSettings::syncSql(const backends::ServerConnection& server) const {
  std::string sql;
  for (const auto& [name, value] : reported_) {
    if (!isSyncedReportedSetting(name)) continue;
    const std::string* current = findIgnoreCase(server.parameters(), name);
    if (current && *current == value) continue;
    appendStatement(sql, "SET " + name + " TO " + quoteLiteral(value));
  }
  const auto& applied = server.appliedSettings();
  for (const auto& [name, value] : unreported_) {
    auto it = applied.find(name);
    if (it != applied.end() && it->second == value) continue;
    appendStatement(sql, "SET " + name + " TO " + quoteLiteral(value));
  }
  for (const auto& [name, value] : applied) {
    if (unreported_.count(name) == 0) appendStatement(sql, "RESET " + name);
  }
  return sql;
}

void SessionSettings::markSynced(backends::ServerConnection& server) const {
  auto& applied = server.appliedSettings();
  applied.clear();
  for (const auto& [name, value] : unreported_) applied.emplace(name, value);
}

}  // namespace shardgate::proxy
