// A throwaway connection that delivers one CancelRequest packet and closes.
#include "backends/cancel_request.h"

#include <memory>

#include "common/log.h"
#include "proxy/wire/frontend_messages.h"

namespace shardgate::backends {

namespace {

class CancelConnection final : public TcpConnection {
 public:
  CancelConnection(LoopContext& context, Transport transport, std::string label, std::string packet)
      : TcpConnection(context, transport), label_(std::move(label)), packet_(std::move(packet)) {
    connect_req_.data = this;
  }

  void start(const struct sockaddr* addr) {
    int rc = uv_tcp_connect(&connect_req_, handle(), addr, &CancelConnection::connected);
    if (rc < 0) {
      spdlog::warn("event=cancel_failed server={} error=\"{}\"", label_, uv_strerror(rc));
      close();
    }
  }

  void startUnix(const std::string& path) {
    uv_pipe_connect(&connect_req_, pipeHandle(), path.c_str(), &CancelConnection::connected);
  }

 protected:
  size_t onData(std::string_view data) override { return data.size(); }
  void onDisconnect(int /*status*/) override { close(); }

 private:
  static void connected(uv_connect_t* req, int status) {
    auto* self = static_cast<CancelConnection*>(req->data);
    if (status == UV_ECANCELED) return;
    if (status < 0) {
      spdlog::warn("event=cancel_failed server={} error=\"{}\"", self->label_, uv_strerror(status));
      self->close();
      return;
    }
    self->send(self->packet_);
    // Nothing comes back; the kernel still delivers the packet after our close.
    self->closeAfterFlush();
  }

  std::string label_;
  std::string packet_;
  uv_connect_t connect_req_;
};

// A host name being resolved (in libuv's thread pool: a blocking getaddrinfo on the loop would
// stall every client of the worker while DNS answers) before the cancel's connection is made.
struct CancelResolve {
  uv_getaddrinfo_t req{};
  LoopContext* context = nullptr;
  std::string label;
  std::string packet;

  static void resolved(uv_getaddrinfo_t* req, int status, struct addrinfo* res) {
    std::unique_ptr<CancelResolve> self(static_cast<CancelResolve*>(req->data));
    if (status < 0 || res == nullptr) {
      if (res) uv_freeaddrinfo(res);
      spdlog::warn("event=cancel_failed server={} error=\"cannot resolve host: {}\"", self->label,
                   uv_strerror(status));
      return;
    }
    auto* connection = new CancelConnection(*self->context, TcpConnection::Transport::kTcp,
                                            std::move(self->label), std::move(self->packet));
    connection->start(res->ai_addr);
    uv_freeaddrinfo(res);
  }
};

}  // namespace

void sendCancelRequest(LoopContext& context, const ServerEndpoint& endpoint, int32_t backend_pid,
                       int32_t backend_secret) {
  std::string packet;
  wire::CancelRequest{backend_pid, backend_secret}.encode(packet);
  if (endpoint.unixSocket()) {
    auto* connection = new CancelConnection(context, TcpConnection::Transport::kUnix,
                                            endpoint.label, std::move(packet));
    connection->startUnix(endpoint.unixSocketPath());
    return;
  }
  struct sockaddr_storage addr {};
  if (uv_ip4_addr(endpoint.host.c_str(), endpoint.port,
                  reinterpret_cast<struct sockaddr_in*>(&addr)) != 0 &&
      uv_ip6_addr(endpoint.host.c_str(), endpoint.port,
                  reinterpret_cast<struct sockaddr_in6*>(&addr)) != 0) {
    auto pending = std::make_unique<CancelResolve>();
    pending->req.data = pending.get();
    pending->context = &context;
    pending->label = endpoint.label;
    pending->packet = std::move(packet);
    struct addrinfo hints {};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    const std::string port = std::to_string(endpoint.port);
    int rc = uv_getaddrinfo(context.loop(), &pending->req, &CancelResolve::resolved,
                            endpoint.host.c_str(), port.c_str(), &hints);
    if (rc < 0) {
      spdlog::warn("event=cancel_failed server={} error=\"cannot resolve host: {}\"",
                   endpoint.label, uv_strerror(rc));
      return;
    }
    (void)pending.release();  // resolved() owns it
    return;
  }
  auto* connection = new CancelConnection(context, TcpConnection::Transport::kTcp, endpoint.label,
                                          std::move(packet));
  connection->start(reinterpret_cast<const struct sockaddr*>(&addr));
}

}  // namespace shardgate::backends
