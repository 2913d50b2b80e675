// TcpConnection and LoopContext: buffered libuv I/O shared by client sessions and shard
// connections.
#include "common/tcp_connection.h"

#include <sys/socket.h>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <cstdint>

#include "common/log.h"

namespace shardgate {

namespace {
constexpr size_t kScratchSize = 256 * 1024;
// One TLS record's plaintext at most (16 KiB), asked of OpenSSL per call.
constexpr size_t kTlsReadChunk = 16 * 1024;
// Compact the output buffer once this much of it has been written.
constexpr size_t kCompactThreshold = 64 * 1024;
}  // namespace

LoopContext::LoopContext(uv_loop_t* loop) : loop_(loop), scratch_(kScratchSize) {
  uv_check_init(loop_, &check_);
  check_.data = this;
  uv_check_start(&check_, [](uv_check_t* handle) {
    auto* self = static_cast<LoopContext*>(handle->data);
    self->flushAll();
    self->iteration_clock_ = false;
  });
  // The check handle alone must not keep the loop alive.
  uv_unref(reinterpret_cast<uv_handle_t*>(&check_));
}

LoopContext::~LoopContext() = default;

void LoopContext::close() {
  iteration_clock_ = false;
  uv_check_stop(&check_);
  if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(&check_))) {
    uv_close(reinterpret_cast<uv_handle_t*>(&check_), nullptr);
  }
}

void LoopContext::scheduleFlush(TcpConnection* connection) {
  dirty_.push_back(connection);
}

void LoopContext::forget(TcpConnection* connection) {
  std::replace(dirty_.begin(), dirty_.end(), connection, static_cast<TcpConnection*>(nullptr));
}

void LoopContext::flushAll() {
  // flushNow() may schedule more flushes (a write completing synchronously wakes a reader), so
  // swap the list out and loop until it stays empty. Both lists are members and keep their
  // capacity: this runs once per loop iteration.
  while (!dirty_.empty()) {
    flushing_.swap(dirty_);
    for (TcpConnection* c : flushing_) {
      if (c == nullptr) continue;
      c->flush_scheduled_ = false;
      c->flushNow();
      c->reportDeferredEof();
    }
    flushing_.clear();
  }
}

TcpConnection::TcpConnection(LoopContext& context, Transport transport)
    : context_(context), transport_(transport) {
  if (transport_ == Transport::kUnix) {
    uv_pipe_init(context_.loop(), &pipe_, /*ipc=*/0);
  } else {
    uv_tcp_init(context_.loop(), &tcp_);
  }
  stream()->data = this;
  write_req_.data = this;
}

TcpConnection::~TcpConnection() = default;

void TcpConnection::startReading() {
  if (reading_ || closing_) return;
  // A TLS peer that ended while we were paused: its end is reported after the held input (at the
  // end of this loop iteration, by when the reader has taken it).
  if (eof_after_pending_) scheduleFlush();
  reading_ = true;
  uv_read_start(stream(), &TcpConnection::allocCallback, &TcpConnection::readCallback);
}

void TcpConnection::stopReading() {
  if (!reading_) return;
  reading_ = false;
  uv_read_stop(stream());
}

void TcpConnection::allocCallback(uv_handle_t* handle, size_t /*suggested*/, uv_buf_t* buf) {
  auto* self = static_cast<TcpConnection*>(handle->data);
  buf->base = self->context_.scratch();
  buf->len = self->context_.scratchSize();
}

void TcpConnection::readCallback(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
  auto* self = static_cast<TcpConnection*>(stream->data);
  if (nread < 0) {
    self->reportDisconnect(static_cast<int>(nread));
    return;
  }
  if (nread == 0 || self->closing_) return;
  self->context_.noteRead();
  if (self->bytes_received_) {
    self->bytes_received_->add(static_cast<uint64_t>(nread));
    self->last_read_ns_ = self->context_.nowNs();
  }
  std::string_view data(buf->base, static_cast<size_t>(nread));
  if (self->tls_) {
    self->receiveTls(data);
  } else {
    self->deliver(data);
  }
}

void TcpConnection::deliver(std::string_view data) {
  if (pending_.empty()) {
    consume(data, /*from_pending=*/false);
  } else {
    pending_.append(data);
    consume(pending_, /*from_pending=*/true);
  }
}

void TcpConnection::receiveTls(std::string_view ciphertext) {
  // All the plaintext this read brings is offered at once, as a plain read's bytes are: a session
  // that pauses in the middle (back-pressure, Terminate) then sees what it would have seen
  // without TLS. The ciphertext goes in by slices, each decrypted before the next, so that
  // OpenSSL's input buffer stays small.
  std::string& plaintext = context_.tlsPlaintext();
  plaintext.clear();
  TlsSession::ReadResult r;
  while (!ciphertext.empty() && r.kind != TlsSession::ReadResult::Kind::kClosed &&
         r.kind != TlsSession::ReadResult::Kind::kFailed) {
    size_t slice = std::min(ciphertext.size(), TlsSession::kFeedSlice);
    tls_->feed(ciphertext.substr(0, slice));
    ciphertext.remove_prefix(slice);
    for (;;) {
      size_t at = plaintext.size();
      plaintext.resize(at + kTlsReadChunk);
      r = tls_->read(plaintext.data() + at, kTlsReadChunk);
      plaintext.resize(at + (r.kind == TlsSession::ReadResult::Kind::kData ? r.size : 0));
      if (r.kind != TlsSession::ReadResult::Kind::kData) break;
    }
  }
  if (!plaintext.empty()) deliver(plaintext);
  if (plaintext.capacity() > kScratchSize) std::string().swap(plaintext);
  if (closing_) return;
  if (r.kind == TlsSession::ReadResult::Kind::kClosed) {
    // close_notify: as a plain FIN, it is seen only after what a paused reader still holds.
    if (!reading_ && !pending_.empty()) {
      eof_after_pending_ = true;
      return;
    }
    reportDisconnect(UV_EOF);
    return;
  }
  if (r.kind == TlsSession::ReadResult::Kind::kFailed) {
    spdlog::info("event=tls_failed error=\"{}\"", r.error);
    // The alert OpenSSL wrote says why (e.g. "protocol version"); best effort, no waiting.
    if (inflight_.empty() && tls_->unsentWireBytes() > 0) {
      trySend(tls_->wireOut().data() + tls_->wireOffset(), tls_->unsentWireBytes());
    }
    reportDisconnect(UV_EPROTO);
    return;
  }
  // Handshake replies, or output that waited for the handshake to end.
  if (tls_->unsentWireBytes() > 0 || out_.size() > out_offset_) scheduleFlush();
}

void TcpConnection::reportDeferredEof() {
  if (!eof_after_pending_ || closing_) return;
  if (reading_ || pending_.empty()) {
    eof_after_pending_ = false;
    reportDisconnect(UV_EOF);
  }
}

void TcpConnection::sendCloseNotify() {
  if (!tls_ || !encryptOutput()) return;
  tls_->closeNotify();
  scheduleFlush();
}

void TcpConnection::startTls(std::unique_ptr<TlsSession> tls) {
  flushNow();  // what is queued goes out before the first TLS byte
  tls_ = std::move(tls);
  tls_->start();  // a client's ClientHello; nothing for a server, which waits for one
  if (tls_->unsentWireBytes() > 0) scheduleFlush();
}

bool TcpConnection::encryptOutput() {
  if (out_.size() == out_offset_) return true;
  Result<bool> taken = tls_->write(std::string_view(out_).substr(out_offset_));
  if (!taken.ok()) {
    spdlog::info("event=tls_failed error=\"{}\"", taken.error().message);
    reportDisconnect(UV_EPROTO);
    return false;
  }
  if (*taken) {
    out_.clear();
    out_offset_ = 0;
    if (out_.capacity() > kCompactThreshold) out_.shrink_to_fit();  // the records hold it now
  }
  return true;
}

void TcpConnection::consume(std::string_view data, bool from_pending) {
  in_on_data_ = true;
  size_t used = onData(data);
  in_on_data_ = false;
  if (closing_) {
    pending_.clear();
    return;
  }
  assert(used <= data.size());
  if (from_pending) {
    pending_.erase(0, used);
  } else if (used < data.size()) {
    pending_.assign(data.substr(used));
  }
  if (pending_.empty() && pending_.capacity() > 64 * 1024) pending_.shrink_to_fit();
}

void TcpConnection::processPending() {
  if (pending_.empty() || closing_ || in_on_data_) return;
  consume(pending_, /*from_pending=*/true);
}

void TcpConnection::send(std::string_view bytes) {
  if (closing_) return;
  out_.append(bytes);
  scheduleFlush();
}

void TcpConnection::scheduleFlush() {
  if (flush_scheduled_ || closing_) return;
  flush_scheduled_ = true;
  context_.scheduleFlush(this);
}

int TcpConnection::trySend(const char* data, size_t size) {
  // send() where libuv's uv_try_write would write(): a socket call skips the VFS layer, a little
  // less kernel time on the path every statement takes. Nothing of ours is queued in libuv when
  // this runs (inflight_ is empty), so bytes stay in order.
  uv_os_fd_t fd;
  if (uv_fileno(reinterpret_cast<uv_handle_t*>(stream()), &fd) != 0) return UV_EBADF;
  ssize_t sent;
  do {
    sent = ::send(fd, data, size, MSG_NOSIGNAL | MSG_DONTWAIT);
  } while (sent < 0 && errno == EINTR);
  if (sent >= 0) return static_cast<int>(std::min<ssize_t>(sent, INT32_MAX));
  return errno == EAGAIN || errno == EWOULDBLOCK ? UV_EAGAIN : uv_translate_sys_error(errno);
}

void TcpConnection::dropOutput() {
  drop_output_ = true;
  scheduleFlush();
}

void TcpConnection::flushNow() {
  if (closing_) return;
  if (drop_output_) {
    out_.clear();
    out_offset_ = 0;
    if (tls_) {
      tls_->wireOut().clear();
      tls_->wireOffset() = 0;
    }
    if (close_after_flush_) {
      close();
      return;
    }
    onWriteDrained();
    return;
  }
  if (!inflight_.empty()) return;  // writeCallback continues
  if (tls_ && !encryptOutput()) return;
  // What goes on the wire: the queued output itself, or the TLS records made from it.
  std::string& wire = tls_ ? tls_->wireOut() : out_;
  size_t& wire_offset = tls_ ? tls_->wireOffset() : out_offset_;
  size_t unsent = wire.size() - wire_offset;
  if (unsent > 0) {
    int written = trySend(wire.data() + wire_offset, unsent);
    if (written > 0) {
      wire_offset += static_cast<size_t>(written);
      if (bytes_sent_) bytes_sent_->add(static_cast<uint64_t>(written));
    }
    if (written < 0 && written != UV_EAGAIN && written != UV_ENOSYS) {
      reportDisconnect(written);
      return;
    }
    unsent = wire.size() - wire_offset;
    if (unsent > 0) {
      // The kernel buffer is full: hand the rest to uv_write and keep it alive until done.
      inflight_.assign(wire, wire_offset, unsent);
      wire.clear();
      wire_offset = 0;
      uv_buf_t rest = uv_buf_init(inflight_.data(), static_cast<unsigned>(inflight_.size()));
      int rc = uv_write(&write_req_, stream(), &rest, 1, &TcpConnection::writeCallback);
      if (rc < 0) {
        inflight_.clear();
        reportDisconnect(rc);
      } else if (bytes_sent_) {
        bytes_sent_->add(rest.len);
      }
      return;
    }
  }
  wire.clear();
  wire_offset = 0;
  if (wire.capacity() > kCompactThreshold) wire.shrink_to_fit();
  // Plaintext still queued under TLS waits for the handshake to end (receiveTls flushes then).
  if (out_.size() > out_offset_) return;
  if (close_after_flush_) {
    close();
    return;
  }
  onWriteDrained();
}

void TcpConnection::writeCallback(uv_write_t* req, int status) {
  auto* self = static_cast<TcpConnection*>(req->data);
  self->inflight_.clear();
  self->inflight_.shrink_to_fit();
  if (self->closing_) return;
  if (status < 0) {
    self->reportDisconnect(status);
    return;
  }
  self->flushNow();
}

bool TcpConnection::releaseIdleBuffers() {
  if (!pending_.empty() || unsentBytes() != 0) return false;
  std::string().swap(pending_);
  std::string().swap(out_);
  out_offset_ = 0;
  std::string().swap(inflight_);
  if (tls_) {
    std::string().swap(tls_->wireOut());
    tls_->wireOffset() = 0;
  }
  return true;
}

void TcpConnection::reportDisconnect(int status) {
  if (disconnect_reported_ || closing_) return;
  disconnect_reported_ = true;
  onDisconnect(status);
}

void TcpConnection::closeAfterFlush() {
  if (closing_ || close_after_flush_) return;
  if (tls_ && !tls_->handshakeDone()) {
    close();  // nothing can be sent before the handshake ends, and the peer may never end it
    return;
  }
  close_after_flush_ = true;
  stopReading();
  if (tls_) sendCloseNotify();
  // Flush now rather than at the end of the iteration: a loop with nothing else to do (at
  // shutdown) would otherwise end with this connection still open.
  if (!in_on_data_) {
    flushNow();
  } else {
    scheduleFlush();
  }
}

void TcpConnection::close() {
  if (closing_) return;
  closing_ = true;
  reading_ = false;
  context_.forget(this);
  if (renewing_) return;  // the handle is closing already: renewCallback() finishes
  uv_close(reinterpret_cast<uv_handle_t*>(stream()), &TcpConnection::closeCallback);
}

void TcpConnection::renewSocket() {
  if (closing_ || renewing_ || transport_ != Transport::kTcp) return;
  renewing_ = true;
  uv_close(reinterpret_cast<uv_handle_t*>(stream()), &TcpConnection::renewCallback);
}

void TcpConnection::renewCallback(uv_handle_t* handle) {
  auto* self = static_cast<TcpConnection*>(handle->data);
  self->renewing_ = false;
  if (self->closing_) {
    closeCallback(handle);
    return;
  }
  uv_tcp_init(self->context_.loop(), &self->tcp_);
  self->stream()->data = self;
  self->onSocketRenewed();
}

void TcpConnection::closeCallback(uv_handle_t* handle) {
  auto* self = static_cast<TcpConnection*>(handle->data);
  self->onClosed();
  delete self;
}

}  // namespace shardgate
