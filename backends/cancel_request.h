// Sends a CancelRequest to a Postgres server on a fresh connection, as the protocol requires.
#pragma once

#include <cstdint>

#include "backends/server_connection.h"

namespace shardgate::backends {

// Fire and forget: connects to `endpoint`, sends CancelRequest(pid, secret), closes. Postgres
// answers nothing, so there is nothing to wait for.
void sendCancelRequest(LoopContext& context, const ServerEndpoint& endpoint, int32_t backend_pid,
                       int32_t backend_secret);

}  // namespace shardgate::backends
