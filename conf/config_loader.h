// Loads a shardgate TOML config file into a validated, immutable Config snapshot.
#pragma once

#include <string>
#include <string_view>

#include "common/result.h"
#include "conf/config.h"

namespace shardgate::conf {

// Loads and validates a TOML file. Error: sqlstate F0000, severity FATAL, message
// "<path>:<line>:<column>: <key path>: <what is wrong>", e.g.
// "conf/demo.toml:7:8: general.port: 70000 is out of range (1..65535)".
// A file that cannot be read gives "<path>: <reason>". Never throws.
Result<ConfigPtr> loadConfigFile(const std::string& path);

// The same for TOML text already in memory; `source_name` stands for the file in messages and
// in Config::source_path. Defaults are applied and general.workers = 0 is resolved to the number
// of cores. Never throws.
Result<ConfigPtr> parseConfig(std::string_view toml_text, std::string_view source_name);

}  // namespace shardgate::conf
