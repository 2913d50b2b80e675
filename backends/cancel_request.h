// Sends a CancelRequest to a Postgres server on a fresh connection, as the protocol requires.
#pragma once

#include <cstdint>

#include "backends/server_connection.h"

namespace shardgate::backends {

// Fire and forget: connects to where `server` is connected, sends CancelRequest with its
// backend's pid and secret, closes. Postgres answers nothing, so there is nothing to wait for.
void sendCancelRequest(LoopContext& context, const ServerConnection& server);

}  // namespace shardgate::backends
