// A libuv stream connection (TCP, or a Unix-domain socket) with framed-input buffering and
// batched, back-pressured output.
#pragma once

#include <uv.h>

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/relaxed_metrics.h"
#include "common/tls.h"

namespace shardgate {

class TcpConnection;

// Services one libuv loop offers every connection on it: a scratch read buffer (so an idle
// connection holds no read buffer of its own) and output flushing batched once per loop
// iteration (a uv_check handle runs after all I/O callbacks of the iteration).
class LoopContext {
 public:
  explicit LoopContext(uv_loop_t* loop);
  ~LoopContext();
  LoopContext(const LoopContext&) = delete;
  LoopContext& operator=(const LoopContext&) = delete;

  uv_loop_t* loop() const { return loop_; }
  char* scratch() { return scratch_.data(); }
  size_t scratchSize() const { return scratch_.size(); }
  // Where a TLS connection collects the plaintext of one read (one buffer for the whole loop).
  std::string& tlsPlaintext() { return tls_plaintext_; }

  // The monotonic clock (uv_hrtime, ns) as of this loop iteration's reads: read by the first read
  // callback after a poll and shared by every callback until the iteration's check phase, so
  // that timing a statement costs no clock read per message. Outside that window (timers, code
  // not run by the loop) it reads the clock each time.
  uint64_t nowNs() { return iteration_clock_ ? iteration_now_ns_ : uv_hrtime(); }
  uint64_t nowMs() { return nowNs() / 1000000; }
  // A read callback runs: the clock window opens, if it is not open yet.
  void noteRead() {
    if (iteration_clock_) return;
    iteration_clock_ = true;
    iteration_now_ns_ = uv_hrtime();
  }

  void scheduleFlush(TcpConnection* connection);
  void forget(TcpConnection* connection);  // a closing connection leaves the flush list
  void flushAll();

  // Closes the check handle; the loop must then run once more to finish closing it.
  void close();

 private:
  uv_loop_t* loop_;
  uv_check_t check_;
  bool iteration_clock_ = false;  // from a read callback to the check phase: nowNs() is cached
  uint64_t iteration_now_ns_ = 0;
  std::vector<char> scratch_;
  std::string tls_plaintext_;
  std::vector<TcpConnection*> dirty_;
  std::vector<TcpConnection*> flushing_;  // the batch flushAll() is writing
};

class TcpConnection {
 public:
  // kUnix: a Unix-domain stream socket (a Postgres server's socket directory), on a uv_pipe_t.
  enum class Transport { kTcp, kUnix };

  explicit TcpConnection(LoopContext& context, Transport transport = Transport::kTcp);
  virtual ~TcpConnection();
  TcpConnection(const TcpConnection&) = delete;
  TcpConnection& operator=(const TcpConnection&) = delete;

  Transport transport() const { return transport_; }
  uv_tcp_t* handle() { return &tcp_; }        // kTcp only
  uv_pipe_t* pipeHandle() { return &pipe_; }  // kUnix only
  uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&tcp_); }
  LoopContext& context() { return context_; }

  // Input. onData() is called with every byte not yet consumed (leftovers of earlier reads first).
  void startReading();
  void stopReading();
  bool reading() const { return reading_; }
  // Runs onData() over input kept from earlier reads (after a pause, or once a state allows it).
  void processPending();
  size_t pendingInputBytes() const { return pending_.size(); }
  // Drops input kept from earlier reads (after a failure that makes it moot).
  void discardPendingInput() { pending_.clear(); }
  // Input as if the client had sent it after what is pending (a Terminate for a client gone).
  void appendPendingInput(std::string_view bytes) { pending_.append(bytes); }
  std::string_view pendingInput() const { return pending_; }
  // The peer is gone, but what it sent is still to be processed: output is dropped from now on
  // (each flush discards it and reports it drained).
  void dropOutput();

  // Output is appended, then written at the end of the loop iteration (or at once by flushNow).
  void send(std::string_view bytes);
  std::string& outputBuffer() { return out_; }  // append, then scheduleFlush()
  void scheduleFlush();
  void flushNow();
  size_t unsentBytes() const {
    return out_.size() - out_offset_ + inflight_.size() + (tls_ ? tls_->unsentWireBytes() : 0);
  }
  // Frees the input and output buffers if they hold nothing (a connection about to idle for long:
  // they grow again on the next traffic). Returns whether they were empty.
  bool releaseIdleBuffers();

  // Traffic accounting (client connections, for the metrics): bytes read and bytes handed to the
  // kernel are added to these counters, and each read is time-stamped. Null: not counted.
  void meterTraffic(metrics::Counter* received, metrics::Counter* sent) {
    bytes_received_ = received;
    bytes_sent_ = sent;
  }
  // uv_hrtime() of the latest read (0 before the first, or when not metered).
  uint64_t lastReadNs() const { return last_read_ns_; }

  // TLS from here on: input is decrypted before onData() sees it and output encrypted as it is
  // flushed. Output queued before is flushed in plain text first (the 'S' that accepts an
  // SSLRequest).
  void startTls(std::unique_ptr<TlsSession> tls);
  const TlsSession* tls() const { return tls_.get(); }
  // Queues TLS's close_notify after the queued output (no-op without TLS).
  void sendCloseNotify();

  // Closes the socket; queued output is dropped. The object deletes itself once libuv is done.
  void close();
  // A TCP connection whose connect failed gets a fresh socket (a socket keeps the address family
  // of its first connect, and the next address may be of the other): the old handle closes, and
  // onSocketRenewed() runs once the new one is ready. A close() meanwhile wins.
  void renewSocket();
  // Writes what is queued, then closes (for a final ErrorResponse).
  void closeAfterFlush();
  bool closing() const { return closing_ || close_after_flush_; }

 protected:
  // Returns how many bytes of `data` were consumed; the rest is kept and offered again.
  virtual size_t onData(std::string_view data) = 0;
  // The peer closed the connection or a read/write failed (`status` is a libuv error code).
  virtual void onDisconnect(int status) = 0;
  // All queued output has been written.
  virtual void onWriteDrained() {}
  // Just before the object is deleted.
  virtual void onClosed() {}
  // renewSocket() is done: a connect can be started on handle().
  virtual void onSocketRenewed() {}

 private:
  static void allocCallback(uv_handle_t* handle, size_t suggested, uv_buf_t* buf);
  static void readCallback(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf);
  static void writeCallback(uv_write_t* req, int status);
  static void closeCallback(uv_handle_t* handle);
  static void renewCallback(uv_handle_t* handle);
  // Offers bytes read (plaintext) to onData(), after any kept from earlier reads.
  void deliver(std::string_view data);
  void consume(std::string_view data, bool from_pending);
  // Ciphertext read: decrypts it and delivers the plaintext.
  void receiveTls(std::string_view ciphertext);
  // Moves the queued plaintext into TLS records; false when TLS failed (reported).
  bool encryptOutput();
  // Reports a TLS peer's end held back while a paused reader had input (see receiveTls).
  void reportDeferredEof();
  // Writes what the socket takes now: bytes written, UV_EAGAIN, or another libuv error code.
  int trySend(const char* data, size_t size);
  void reportDisconnect(int status);

  LoopContext& context_;
  Transport transport_;
  union {  // by transport_; both are uv_stream_t underneath, at the same address
    uv_tcp_t tcp_;
    uv_pipe_t pipe_;
  };
  uv_write_t write_req_;
  std::string pending_;              // input not yet consumed
  std::string out_;                  // output not yet handed to the kernel
  size_t out_offset_ = 0;            // bytes of out_ already written
  std::string inflight_;             // output handed to uv_write, waiting for its callback
  std::unique_ptr<TlsSession> tls_;  // null: plain text
  bool reading_ = false;
  bool closing_ = false;
  bool renewing_ = false;  // renewSocket(): the old handle is closing
  bool close_after_flush_ = false;
  bool flush_scheduled_ = false;
  bool disconnect_reported_ = false;
  bool in_on_data_ = false;
  bool eof_after_pending_ = false;  // TLS close_notify seen while paused with input held
  bool drop_output_ = false;
  metrics::Counter* bytes_received_ = nullptr;
  metrics::Counter* bytes_sent_ = nullptr;
  uint64_t last_read_ns_ = 0;

  friend class LoopContext;
};

}  // namespace shardgate
