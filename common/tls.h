// TLS over a byte stream with OpenSSL memory BIOs: a connection feeds in the ciphertext it read and
// writes out the ciphertext TLS produces; OpenSSL never touches the socket.
#pragma once

#include <openssl/types.h>

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "common/result.h"

namespace shardgate {

// A certificate chain and its private key, loaded once and shared (read-only) by the connections
// of every thread: OpenSSL's SSL_CTX is safe for that once configured.
class TlsContext {
 public:
  // The server side of TLS 1.2 and later, with a PEM certificate chain and its PEM private key.
  // The error names the file and OpenSSL's reason.
  static Result<std::shared_ptr<const TlsContext>> forServer(const std::string& cert_file,
                                                             const std::string& key_file);
  // The client side (shardgate to its servers): with a CA file, the server's certificate must be
  // signed by it (verify-ca, verify-full); without one it is not checked (encryption only).
  static Result<std::shared_ptr<const TlsContext>> forClient(const std::string& ca_file);
  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

  SSL_CTX* native() const { return ctx_; }

 private:
  explicit TlsContext(SSL_CTX* ctx) : ctx_(ctx) {}
  SSL_CTX* ctx_;
};

// One connection's TLS state: the handshake, then records in both directions.
class TlsSession {
 public:
  static Result<std::unique_ptr<TlsSession>> serverSide(std::shared_ptr<const TlsContext> context);
  // The client side of a connection to `host` (sent as SNI when it is a name). check_host: the
  // certificate must also name the host (verify-full: a DNS name, or an IP address SAN).
  // Call start() to send the ClientHello.
  static Result<std::unique_ptr<TlsSession>> clientSide(std::shared_ptr<const TlsContext> context,
                                                        const std::string& host, bool check_host);
  // A client begins the handshake: its first flight lands in wireOut().
  void start();
  ~TlsSession();
  TlsSession(const TlsSession&) = delete;
  TlsSession& operator=(const TlsSession&) = delete;

  // Ciphertext read from the peer. Feed at most kFeedSlice at a time and read() until kNeedMore
  // in between, so that the input buffer stays small.
  static constexpr size_t kFeedSlice = 32 * 1024;
  // Traffic through a memory BIO after which a drained one is replaced (it keeps its peak size).
  static constexpr size_t kBioRenewalBytes = 64 * 1024;
  void feed(std::string_view ciphertext);

  struct ReadResult {
    enum class Kind { kData, kNeedMore, kClosed, kFailed };
    Kind kind = Kind::kNeedMore;
    size_t size = 0;    // kData: plaintext bytes put in the buffer
    std::string error;  // kFailed: OpenSSL's reason
  };
  // Plaintext decrypted from what was fed, up to `capacity` bytes at a time; call until it says
  // kNeedMore. Also advances the handshake. kClosed: the peer ended TLS (close_notify).
  ReadResult read(char* buffer, size_t capacity);

  // Encrypts `plaintext` into wireOut(). False, with nothing taken, while the handshake is not
  // finished; an error when TLS has failed.
  Result<bool> write(std::string_view plaintext);

  // Queues close_notify (the end of TLS) after what was written; nothing before the handshake.
  void closeNotify();

  // Ciphertext for the peer (handshake messages and records), from wireOffset() on.
  std::string& wireOut() { return wire_out_; }
  size_t& wireOffset() { return wire_offset_; }
  size_t unsentWireBytes() const { return wire_out_.size() - wire_offset_; }

  bool handshakeDone() const;
  // Why TLS failed (the last kFailed read's reason), or "".
  const std::string& failure() const { return failure_; }
  // "TLSv1.3/TLS_AES_256_GCM_SHA384", or "" before the handshake ends (PgBouncer's SHOW CLIENTS
  // shows the same).
  std::string describe() const;

 private:
  explicit TlsSession(SSL* ssl, BIO* from_peer, BIO* to_peer)
      : ssl_(ssl), from_peer_(from_peer), to_peer_(to_peer) {}
  static Result<std::unique_ptr<TlsSession>> make(const TlsContext& context);
  void collectWireOutput();
  // A memory BIO keeps the largest size it ever held: once the traffic through one since its
  // last replacement passes a threshold, an empty one is replaced by a fresh one.
  void renewDrainedBios();

  SSL* ssl_;
  BIO* from_peer_;  // owned by ssl_
  BIO* to_peer_;    // owned by ssl_
  std::string wire_out_;
  size_t wire_offset_ = 0;
  // Bytes through each BIO since it was made. They start past the threshold so that the BIOs
  // that carried the handshake (the certificate chain) are replaced once it is over.
  size_t fed_since_renewal_ = kBioRenewalBytes + 1;
  size_t written_since_renewal_ = kBioRenewalBytes + 1;
  std::string failure_;
};

}  // namespace shardgate
