// A throwaway connection that delivers one CancelRequest packet and closes.
#include "backends/cancel_request.h"

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

}  // namespace

void sendCancelRequest(LoopContext& context, const ServerConnection& server) {
  std::string packet;
  wire::CancelRequest{server.backendPid(), server.backendSecret()}.encode(packet);
  const ServerEndpoint& endpoint = server.endpoint();
  if (endpoint.unixSocket()) {
    auto* connection = new CancelConnection(context, TcpConnection::Transport::kUnix,
                                            endpoint.label, std::move(packet));
    connection->startUnix(endpoint.unixSocketPath());
    return;
  }
  // The address the server's connection reached: the backend is there, whatever the host name
  // resolves to now.
  const struct sockaddr* address = server.connectedAddress();
  if (address == nullptr) {
    spdlog::warn("event=cancel_failed server={} error=\"the connection has no address\"",
                 endpoint.label);
    return;
  }
  auto* connection = new CancelConnection(context, TcpConnection::Transport::kTcp, endpoint.label,
                                          std::move(packet));
  connection->start(address);
}

}  // namespace shardgate::backends
