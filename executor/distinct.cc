// SELECT DISTINCT across shards (see distinct.h).
#include "executor/distinct.h"

namespace shardgate::executor {

Status DistinctFilter::validate(const std::vector<uint32_t>& columns,
                                const std::vector<ColumnType>& types) {
  for (uint32_t column : columns) {
    if (column >= types.size()) {
      return Error::make("XX000", "multi-shard plan removes duplicates on column " +
                                      std::to_string(column + 1) + " of a " +
                                      std::to_string(types.size()) + "-column result");
    }
    Status s = requireOrderable(types[column], column, "apply DISTINCT to");
    if (!s.ok()) return s;
  }
  return {};
}

}  // namespace shardgate::executor
