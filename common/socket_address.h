// Socket addresses as text ("127.0.0.1", "::1" and their ports), for logs, errors and SHOW lists.
#pragma once

#include <sys/socket.h>

#include <string>

namespace shardgate {

// The address and port of an AF_INET or AF_INET6 address; false (nothing set) for other families.
bool socketAddressParts(const struct sockaddr_storage& address, std::string& host, int& port);

// "127.0.0.1:5432", "[::1]:5432"; "?" for other families.
std::string socketAddressText(const struct sockaddr_storage& address);

}  // namespace shardgate
