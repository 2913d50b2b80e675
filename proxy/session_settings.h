// The settings a client's session has (client_encoding, TimeZone, search_path, ...), so that
// whichever server connection runs its next transaction can be brought in line first.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_set>

#include "backends/server_connection.h"
#include "proxy/session_features.h"
#include "proxy/startup_parameters.h"

namespace shardgate::proxy {

// Postgres 15 reports these (GUC_REPORT) in ParameterStatus whenever they change, rollbacks
// included, so the server tells us their value; every other setting is tracked from the SET and
// RESET statements the client runs.
bool isReportedSetting(std::string_view name);
// Reported settings a client may change and that shardgate re-applies on another connection.
bool isSyncedReportedSetting(std::string_view name);
constexpr size_t kSyncedReportedSettings = 7;

// Canonical settings states, interned per worker so that "this connection already matches this
// session" is one pointer comparison on the hot path (most clients share a handful of states).
class SettingsInterner {
 public:
  // The interned copy of `state`, or null once the table is full (callers then compare in full).
  const std::string* intern(const std::string& state);

 private:
  static constexpr size_t kMaxStates = 4096;
  std::unordered_set<std::string> states_;
};

class SessionSettings {
 public:
  // The startup packet's settings (including those from `options`).
  void setStartup(const SettingList& startup);
  const SettingList& startup() const { return startup_; }

  // At login: the server defaults (as a fresh connection reports them), with the startup
  // packet's values on top. What the client gets is this, whoever used the connection before.
  void startFrom(const backends::ServerParameters& defaults);
  // Reported settings, as the client last saw them (only those shardgate re-applies are kept).
  void noteReported(std::string_view name, std::string_view value);
  std::optional<std::string_view> reported(std::string_view name) const;
  // reported("client_encoding"), without looking the name up (every routed statement asks).
  std::optional<std::string_view> clientEncoding() const;
  void setReported(const backends::ServerParameters& values);
  // What a server would report after a login with this session's startup settings, worked out
  // from `defaults` (what the pool's servers reported at their own logins) without asking one; or
  // nothing when a setting's reported value is not known that way (a TimeZone Postgres would spell
  // its own way, a setting it may reject). Known: the values `defaults` already has, a printable
  // ASCII application_name shorter than NAMEDATALEN, the UTF8 spellings of client_encoding,
  // DateStyle ISO, and an extra_float_digits in Postgres's range (not reported).
  std::optional<backends::ServerParameters> reportedAtLogin(
      const backends::ServerParameters& defaults) const;

  // Unreported settings: name (lower-case) → the statement that gives the session its value.
  const std::map<std::string, std::string, std::less<>>& unreported() const { return unreported_; }
  void resetAll();  // RESET ALL / DISCARD ALL: back to the startup values
  // The session's extra_float_digits (Postgres's default, 1, unless the client set it): how a
  // float shardgate computes itself (a merged avg) is printed.
  int extraFloatDigits() const;
  // The value a statement that sets extra_float_digits gives it (1 for DEFAULT).
  static int extraFloatDigitsSetBy(std::string_view statement);

  // A client's SET/RESET was sent to `server`: until it commits, what the server has is unknown.
  static void noteSent(backends::ServerConnection& server,
                       const std::vector<SettingChange>& changes);
  // The same for statements shardgate sends itself (a transaction begun again where it moves or
  // joins, with the SETs it made so far): what they set is unknown on `server` from now on.
  static void noteSentSql(backends::ServerConnection& server, std::string_view sql);
  // After RESET ALL / DISCARD ALL on `server` (and the startup values put back): what it has of
  // the unreported settings is unknown.
  void markResetOnServer(backends::ServerConnection& server) const;
  // The transaction that made `changes` committed: the session (and `server`) now have them.
  void commit(const std::vector<SettingChange>& changes, backends::ServerConnection* server);

  // The statement that puts back the startup packet's values of the settings reset (all of them
  // for RESET ALL / DISCARD ALL); "" if the startup packet set none of them.
  std::string startupSql(bool all, const std::vector<std::string>& names) const;
  // The statement that brings `server` in line with this session ("" if it already is).
  std::string syncSql(const backends::ServerConnection& server) const;
  // After that statement succeeded: the server now has exactly this session's unreported settings.
  void markSynced(backends::ServerConnection& server) const;
  // This session's settings state as an interned tag (null if the interner is full).
  const void* tag(SettingsInterner& interner);

 private:
  // Slot i: the value of synced setting i (isSyncedReportedSetting's order), if bit i of
  // reported_known_ is set. A few short strings in place: a map of every reported setting per
  // session (13 nodes) was a quarter of an idle client's memory.
  void setReportedValue(size_t slot, std::string_view value);
  void applyStartupReported();
  SettingList startup_;
  std::array<std::string, kSyncedReportedSettings> reported_values_;
  uint8_t reported_known_ = 0;
  std::map<std::string, std::string, std::less<>> unreported_;
  const std::string* tag_ = nullptr;
  bool tag_stale_ = true;
};

}  // namespace shardgate::proxy
