// The session settings a client asks for at login, and the SET statement that applies them.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "backends/server_connection.h"
#include "common/result.h"

namespace shardgate::proxy {

using SettingList = std::vector<std::pair<std::string, std::string>>;

// Splits the StartupMessage `options` value ("-c name=value --name=value", backslash escapes a
// character) into settings, as Postgres's pg_split_opts and process_postgres_switches do for -c.
Result<SettingList> parseOptionsParameter(std::string_view options);

// True for a name that may be a configuration parameter (and so is safe to put in SET).
bool isValidSettingName(std::string_view name);

// What Postgres 15 does with a setting in the startup packet: it refuses the read-only ones
// (PGC_INTERNAL: server_version, is_superuser, ...) with 55P02 "cannot be changed", ignores
// session_authorization (the session's user is the login's), and applies the rest.
enum class StartupSettingUse { kApply, kIgnore, kRefuse };
StartupSettingUse startupSettingUse(std::string_view name);

// Quotes a value as a string literal valid whatever standard_conforming_strings is.
std::string quoteLiteral(std::string_view value);

}  // namespace shardgate::proxy
