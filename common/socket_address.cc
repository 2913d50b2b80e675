// Socket addresses as text.
#include "common/socket_address.h"

#include <netinet/in.h>
#include <uv.h>

namespace shardgate {

bool socketAddressParts(const struct sockaddr_storage& address, std::string& host, int& port) {
  char text[INET6_ADDRSTRLEN] = {0};
  if (address.ss_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const struct sockaddr_in6*>(&address);
    uv_ip6_name(in6, text, sizeof(text));
    port = ntohs(in6->sin6_port);
  } else if (address.ss_family == AF_INET) {
    const auto* in4 = reinterpret_cast<const struct sockaddr_in*>(&address);
    uv_ip4_name(in4, text, sizeof(text));
    port = ntohs(in4->sin_port);
  } else {
    return false;
  }
  host = text;
  return true;
}

std::string socketAddressText(const struct sockaddr_storage& address) {
  std::string host;
  int port = 0;
  if (!socketAddressParts(address, host, port)) return "?";
  if (address.ss_family == AF_INET6) host = "[" + host + "]";
  return host + ":" + std::to_string(port);
}

}  // namespace shardgate
