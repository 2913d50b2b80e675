// Parsing of the startup `options` parameter and building of the settings-sync statement.
#include "proxy/startup_parameters.h"

#include <strings.h>

#include <algorithm>
#include <array>
#include <cctype>

namespace shardgate::proxy {

namespace {
Error badOption(std::string what) {
  Error e = Error::fatal(sqlstate::kInvalidParameterValue, "invalid options startup parameter",
                         std::move(what));
  e.hint = "use -c name=value or --name=value";
  return e;
}

// "name=value" → setting; '-' in the name becomes '_' as Postgres does for --name=value.
Result<std::pair<std::string, std::string>> splitAssignment(std::string_view text) {
  size_t eq = text.find('=');
  if (eq == std::string_view::npos || eq == 0) {
    return badOption("\"" + std::string(text) + "\" is not of the form name=value");
  }
  std::string name(text.substr(0, eq));
  for (char& c : name)
    if (c == '-') c = '_';
  if (!isValidSettingName(name)) return badOption("invalid parameter name \"" + name + "\"");
  return std::make_pair(std::move(name), std::string(text.substr(eq + 1)));
}
}  // namespace

Result<SettingList> parseOptionsParameter(std::string_view options) {
  std::vector<std::string> words;
  std::string word;
  bool in_word = false;
  for (size_t i = 0; i < options.size(); ++i) {
    char c = options[i];
    if (std::isspace(static_cast<unsigned char>(c))) {
      if (in_word) words.push_back(std::move(word));
      word.clear();
      in_word = false;
      continue;
    }
    if (c == '\\' && i + 1 < options.size()) c = options[++i];
    word.push_back(c);
    in_word = true;
  }
  if (in_word) words.push_back(std::move(word));

  SettingList settings;
  for (size_t i = 0; i < words.size(); ++i) {
    std::string_view w = words[i];
    std::string_view assignment;
    if (w == "-c") {
      if (i + 1 >= words.size()) return badOption("-c without name=value");
      assignment = words[++i];
    } else if (w.size() > 2 && w.substr(0, 2) == "-c") {
      assignment = w.substr(2);
    } else if (w.size() > 2 && w.substr(0, 2) == "--") {
      assignment = w.substr(2);
    } else {
      return badOption("unsupported switch \"" + std::string(w) + "\"");
    }
    auto setting = splitAssignment(assignment);
    if (!setting.ok()) return setting.error();
    settings.push_back(std::move(setting).value());
  }
  return settings;
}

bool isValidSettingName(std::string_view name) {
  if (name.empty() || name.size() > 63) return false;
  if (!(std::isalpha(static_cast<unsigned char>(name[0])) || name[0] == '_')) return false;
  for (char c : name) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.')) return false;
  }
  return true;
}

StartupSettingUse startupSettingUse(std::string_view name) {
  static constexpr std::array<std::string_view, 21> kReadOnly = {"block_size",
                                                                 "data_checksums",
                                                                 "data_directory_mode",
                                                                 "debug_assertions",
                                                                 "in_hot_standby",
                                                                 "integer_datetimes",
                                                                 "is_superuser",
                                                                 "lc_collate",
                                                                 "lc_ctype",
                                                                 "max_function_args",
                                                                 "max_identifier_length",
                                                                 "max_index_keys",
                                                                 "segment_size",
                                                                 "server_encoding",
                                                                 "server_version",
                                                                 "server_version_num",
                                                                 "shared_memory_size",
                                                                 "shared_memory_size_in_huge_pages",
                                                                 "ssl_library",
                                                                 "wal_block_size",
                                                                 "wal_segment_size"};
  const auto same = [&](std::string_view known) {
    return known.size() == name.size() && strncasecmp(known.data(), name.data(), name.size()) == 0;
  };
  if (same("session_authorization")) return StartupSettingUse::kIgnore;
  if (std::any_of(kReadOnly.begin(), kReadOnly.end(), same)) return StartupSettingUse::kRefuse;
  return StartupSettingUse::kApply;
}

std::string quoteLiteral(std::string_view value) {
  bool has_backslash = value.find('\\') != std::string_view::npos;
  std::string out = has_backslash ? "E'" : "'";
  for (char c : value) {
    if (c == '\'') out += '\'';
    if (c == '\\') out += '\\';
    out += c;
  }
  out += '\'';
  return out;
}

}  // namespace shardgate::proxy
