// TlsContext and TlsSession: OpenSSL's server side over memory BIOs.
#include "common/tls.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <climits>

namespace shardgate {

namespace {

// OpenSSL's reasons for the latest failures on this thread (its error queue), emptied.
std::string takeOpensslErrors() {
  std::string out;
  while (unsigned long code = ERR_get_error()) {
    char text[256];
    ERR_error_string_n(code, text, sizeof(text));
    if (!out.empty()) out += "; ";
    out += text;
  }
  return out.empty() ? "unknown TLS error" : out;
}

// A memory BIO for which "empty" means "wait for more", not end of stream.
BIO* newMemoryBio() {
  BIO* bio = BIO_new(BIO_s_mem());
  if (bio != nullptr) BIO_set_mem_eof_return(bio, -1);
  return bio;
}

// Plaintext per SSL_write, so per TLS record: 8 KiB, as Postgres sends (its send buffer is 8 KiB).
// libpq's non-blocking reads (psycopg, ruby-pg, asyncio wrappers) ask OpenSSL for at most the
// room left in their input buffer, which can be less than a 16 KiB record: the rest of the record
// then waits inside OpenSSL, the socket is not readable, and the client's select() never wakes.
// Records no larger than Postgres's own keep those clients on the path they are tested on.
constexpr size_t kWriteSlice = 8 * 1024;

Error tlsConfigError(std::string message) {
  return Error::fatal(sqlstate::kConfigFileError, std::move(message));
}

}  // namespace

Result<std::shared_ptr<const TlsContext>> TlsContext::forServer(const std::string& cert_file,
                                                                const std::string& key_file) {
  ERR_clear_error();
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  if (ctx == nullptr) return tlsConfigError("cannot create a TLS context: " + takeOpensslErrors());
  std::shared_ptr<const TlsContext> context(new TlsContext(ctx));
  // TLS 1.0 and 1.1 are broken and off in Postgres 15's default (ssl_min_protocol_version).
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  // No renegotiation (Postgres refuses it too), and our own buffers can shrink when idle.
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  // No session resumption, as in Postgres: libpq never resumes, and a cached session or a ticket
  // per connection would only cost memory.
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
  SSL_CTX_set_num_tickets(ctx, 0);
  if (SSL_CTX_use_certificate_chain_file(ctx, cert_file.c_str()) != 1) {
    return tlsConfigError("cannot load the TLS certificate \"" + cert_file +
                          "\": " + takeOpensslErrors());
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
    return tlsConfigError("cannot load the TLS private key \"" + key_file +
                          "\": " + takeOpensslErrors());
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    return tlsConfigError("the TLS private key \"" + key_file +
                          "\" does not match the certificate \"" + cert_file +
                          "\": " + takeOpensslErrors());
  }
  return context;
}

TlsContext::~TlsContext() {
  SSL_CTX_free(ctx_);
}

Result<std::shared_ptr<const TlsContext>> TlsContext::forClient(const std::string& ca_file) {
  ERR_clear_error();
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (ctx == nullptr) return tlsConfigError("cannot create a TLS context: " + takeOpensslErrors());
  std::shared_ptr<const TlsContext> context(new TlsContext(ctx));
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  if (ca_file.empty()) {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
    return context;
  }
  if (SSL_CTX_load_verify_locations(ctx, ca_file.c_str(), nullptr) != 1) {
    return tlsConfigError("cannot load the TLS CA file \"" + ca_file +
                          "\": " + takeOpensslErrors());
  }
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  return context;
}

Result<std::unique_ptr<TlsSession>> TlsSession::make(const TlsContext& context) {
  ERR_clear_error();
  SSL* ssl = SSL_new(context.native());
  BIO* from_peer = newMemoryBio();
  BIO* to_peer = newMemoryBio();
  if (ssl == nullptr || from_peer == nullptr || to_peer == nullptr) {
    SSL_free(ssl);
    BIO_free(from_peer);
    BIO_free(to_peer);
    return Error::fatal(sqlstate::kInternalError,
                        "cannot start TLS on this connection: " + takeOpensslErrors());
  }
  SSL_set_bio(ssl, from_peer, to_peer);  // ssl owns both from here
  return std::unique_ptr<TlsSession>(new TlsSession(ssl, from_peer, to_peer));
}

Result<std::unique_ptr<TlsSession>> TlsSession::serverSide(
    std::shared_ptr<const TlsContext> context) {
  auto session = make(*context);
  if (session.ok()) SSL_set_accept_state((*session)->ssl_);
  return session;
}

Result<std::unique_ptr<TlsSession>> TlsSession::clientSide(
    std::shared_ptr<const TlsContext> context, const std::string& host, bool check_host) {
  auto session = make(*context);
  if (!session.ok()) return session;
  SSL* ssl = (*session)->ssl_;
  SSL_set_connect_state(ssl);
  ASN1_OCTET_STRING* ip = a2i_IPADDRESS(host.c_str());  // null: a name, not an address
  bool is_address = ip != nullptr;
  ASN1_OCTET_STRING_free(ip);
  // SNI carries names only (RFC 6066).
  if (!is_address && !host.empty()) SSL_set_tlsext_host_name(ssl, host.c_str());
  if (check_host) {
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
    int ok = is_address ? X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str())
                        : X509_VERIFY_PARAM_set1_host(param, host.c_str(), 0);
    if (ok != 1) {
      return Error::fatal(
          sqlstate::kConnectionFailure,
          "cannot check the server's certificate against \"" + host + "\": " + takeOpensslErrors());
    }
  }
  return session;
}

void TlsSession::start() {
  ERR_clear_error();
  SSL_do_handshake(ssl_);  // wants the server's answer: WANT_READ, with the ClientHello written
  collectWireOutput();
}

TlsSession::~TlsSession() {
  SSL_free(ssl_);
}

void TlsSession::feed(std::string_view ciphertext) {
  while (!ciphertext.empty()) {
    int chunk = static_cast<int>(std::min<size_t>(ciphertext.size(), INT_MAX));
    int written = BIO_write(from_peer_, ciphertext.data(), chunk);
    if (written <= 0) return;  // a memory BIO only fails when out of memory; read() will fail
    ciphertext.remove_prefix(static_cast<size_t>(written));
    fed_since_renewal_ += static_cast<size_t>(written);
  }
}

void TlsSession::renewDrainedBios() {
  if (!handshakeDone()) return;  // OpenSSL buffers the handshake's flight in front of to_peer_
  if (fed_since_renewal_ > kBioRenewalBytes && BIO_ctrl_pending(from_peer_) == 0) {
    if (BIO* fresh = newMemoryBio()) {
      SSL_set0_rbio(ssl_, fresh);  // frees the old one
      from_peer_ = fresh;
      fed_since_renewal_ = 0;
    }
  }
  if (written_since_renewal_ > kBioRenewalBytes && BIO_ctrl_pending(to_peer_) == 0) {
    if (BIO* fresh = newMemoryBio()) {
      SSL_set0_wbio(ssl_, fresh);
      to_peer_ = fresh;
      written_since_renewal_ = 0;
    }
  }
}

void TlsSession::closeNotify() {
  if (!handshakeDone()) return;
  ERR_clear_error();
  SSL_shutdown(ssl_);  // sends ours; the peer's is not waited for
  ERR_clear_error();
  collectWireOutput();
}

TlsSession::ReadResult TlsSession::read(char* buffer, size_t capacity) {
  ERR_clear_error();
  int n = SSL_read(ssl_, buffer, static_cast<int>(std::min<size_t>(capacity, INT_MAX)));
  // The handshake and post-handshake messages (TLS 1.3 session tickets) leave output to send.
  collectWireOutput();
  ReadResult result;
  if (n > 0) {
    result.kind = ReadResult::Kind::kData;
    result.size = static_cast<size_t>(n);
    return result;
  }
  const int error = SSL_get_error(ssl_, n);  // reads the BIO's retry flags: before any renewal
  if (error == SSL_ERROR_WANT_READ) renewDrainedBios();
  switch (error) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:  // a memory BIO takes every write; listed for completeness
      result.kind = ReadResult::Kind::kNeedMore;
      break;
    case SSL_ERROR_ZERO_RETURN:
      result.kind = ReadResult::Kind::kClosed;
      break;
    default:
      result.kind = ReadResult::Kind::kFailed;
      result.error = takeOpensslErrors() + " (SSL_get_error " + std::to_string(error) + ")";
      if (long verify = SSL_get_verify_result(ssl_);
          (SSL_get_verify_mode(ssl_) & SSL_VERIFY_PEER) && verify != X509_V_OK) {
        result.error += std::string(" (") + X509_verify_cert_error_string(verify) + ")";
      }
      failure_ = result.error;
      break;
  }
  return result;
}

Result<bool> TlsSession::write(std::string_view plaintext) {
  if (!handshakeDone()) return false;
  ERR_clear_error();
  while (!plaintext.empty()) {
    // A record at a time, moved out of the BIO at once: the BIO stays about one record big.
    int chunk = static_cast<int>(std::min(plaintext.size(), kWriteSlice));
    int n = SSL_write(ssl_, plaintext.data(), chunk);
    collectWireOutput();
    if (n <= 0) {
      return Error::fatal(sqlstate::kConnectionFailure, "TLS write failed: " + takeOpensslErrors());
    }
    plaintext.remove_prefix(static_cast<size_t>(n));
  }
  renewDrainedBios();
  return true;
}

void TlsSession::collectWireOutput() {
  size_t pending = BIO_ctrl_pending(to_peer_);
  if (pending == 0) return;
  if (wire_offset_ == wire_out_.size()) {
    wire_out_.clear();
    wire_offset_ = 0;
  }
  written_since_renewal_ += pending;
  size_t at = wire_out_.size();
  wire_out_.resize(at + pending);
  int n = BIO_read(to_peer_, wire_out_.data() + at,
                   static_cast<int>(std::min<size_t>(pending, INT_MAX)));
  wire_out_.resize(at + static_cast<size_t>(std::max(n, 0)));
}

bool TlsSession::handshakeDone() const {
  return SSL_is_init_finished(ssl_) == 1;
}

std::string TlsSession::describe() const {
  if (!handshakeDone()) return {};
  return std::string(SSL_get_version(ssl_)) + "/" + SSL_get_cipher_name(ssl_);
}

}  // namespace shardgate
