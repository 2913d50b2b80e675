// Statements that only work while a session keeps one server connection (LISTEN, session
// advisory locks, WITH HOLD cursors, temporary tables, SQL PREPARE, session-level SET of
// settings Postgres does not report): under transaction pooling they pin the client.
#pragma once

#include <string>
#include <string_view>

namespace shardgate::proxy {

// Why `sql` ties a session to its server connection, or "" if it does not. Errs towards
// pinning: a false "yes" costs pooling efficiency, a false "no" would lose session state.
std::string sessionFeatureIn(std::string_view sql);

}  // namespace shardgate::proxy
