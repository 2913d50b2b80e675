// shardgate's version, as --version, the admin console's SHOW VERSION and server_version show it.
#pragma once

#include <string_view>

namespace shardgate {

inline constexpr std::string_view kShardgateVersion = "0.1.0";

}  // namespace shardgate
