// Shared pieces of the executor unit tests: shard rows as the merge receives them.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "proxy/wire/backend_messages.h"

namespace shardgate::executor::testing {

using Row = std::vector<std::optional<std::string>>;  // nullopt: NULL

// A DataRow's payload (after type and length) holding `row`'s values.
inline std::string dataRowPayload(const Row& row) {
  wire::DataRow d;
  d.values = row;
  std::string framed;
  d.encode(framed);
  return framed.substr(5);
}

}  // namespace shardgate::executor::testing
