// TlsSession against an OpenSSL client over memory BIOs: the handshake, data both ways, large and
// byte-by-byte transfers, and the failures (garbage, close_notify, bad certificate files).
#include "common/tls.h"

#include <gtest/gtest.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>

namespace shardgate {
namespace {

using Kind = TlsSession::ReadResult::Kind;

// A self-signed certificate and its key (EC P-256, quick to make), and a second unrelated key.
class TlsFiles {
 public:
  TlsFiles() {
    char pattern[] = "/tmp/sg-tls-unit-XXXXXX";
    dir_ = mkdtemp(pattern);
    EVP_PKEY* key = EVP_EC_gen("P-256");
    EVP_PKEY* other = EVP_EC_gen("P-256");
    X509* cert = X509_new();
    X509_set_version(cert, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
    X509_gmtime_adj(X509_getm_notBefore(cert), 0);
    X509_gmtime_adj(X509_getm_notAfter(cert), 3600);
    X509_set_pubkey(cert, key);
    X509_NAME* name = X509_get_subject_name(cert);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                               reinterpret_cast<const unsigned char*>("shardgate-test"), -1, -1, 0);
    X509_set_issuer_name(cert, name);
    X509_sign(cert, key, EVP_sha256());
    write(cert_path(), [&](FILE* f) { PEM_write_X509(f, cert); });
    write(key_path(),
          [&](FILE* f) { PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr); });
    write(other_key_path(),
          [&](FILE* f) { PEM_write_PrivateKey(f, other, nullptr, nullptr, 0, nullptr, nullptr); });
    X509_free(cert);
    EVP_PKEY_free(key);
    EVP_PKEY_free(other);
  }
  ~TlsFiles() { std::filesystem::remove_all(dir_); }

  std::string cert_path() const { return (dir_ / "cert.pem").string(); }
  std::string key_path() const { return (dir_ / "key.pem").string(); }
  std::string other_key_path() const { return (dir_ / "other.pem").string(); }

 private:
  template <typename F>
  static void write(const std::string& path, F body) {
    FILE* f = std::fopen(path.c_str(), "w");
    ASSERT_NE(f, nullptr) << path;
    body(f);
    std::fclose(f);
  }
  std::filesystem::path dir_;
};

// The client end: OpenSSL's client over memory BIOs, no verification (the test's certificate is
// self-signed).
class TlsClient {
 public:
  TlsClient() {
    ctx_ = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_NONE, nullptr);
    ssl_ = SSL_new(ctx_);
    in_ = BIO_new(BIO_s_mem());
    out_ = BIO_new(BIO_s_mem());
    BIO_set_mem_eof_return(in_, -1);
    SSL_set_bio(ssl_, in_, out_);
    SSL_set_connect_state(ssl_);
  }
  ~TlsClient() {
    SSL_free(ssl_);
    SSL_CTX_free(ctx_);
  }
  SSL* ssl() { return ssl_; }
  // Ciphertext for the server.
  std::string takeOutput() {
    std::string out(BIO_ctrl_pending(out_), '\0');
    if (!out.empty()) BIO_read(out_, out.data(), static_cast<int>(out.size()));
    return out;
  }
  void give(std::string_view ciphertext) {
    if (!ciphertext.empty()) BIO_write(in_, ciphertext.data(), static_cast<int>(ciphertext.size()));
  }
  std::string readAll() {
    std::string out;
    char buffer[4096];
    int n;
    while ((n = SSL_read(ssl_, buffer, sizeof(buffer))) > 0) out.append(buffer, n);
    return out;
  }

 private:
  SSL_CTX* ctx_;
  SSL* ssl_;
  BIO* in_;
  BIO* out_;
};

std::string takeWire(TlsSession& server) {
  std::string out = server.wireOut().substr(server.wireOffset());
  server.wireOut().clear();
  server.wireOffset() = 0;
  return out;
}

// Feeds the server what the client wrote and returns the plaintext it yields.
std::string serverReads(TlsSession& server, std::string_view ciphertext, Kind* last = nullptr) {
  server.feed(ciphertext);
  std::string plaintext;
  char buffer[16384];
  for (;;) {
    TlsSession::ReadResult r = server.read(buffer, sizeof(buffer));
    if (r.kind != Kind::kData) {
      if (last) *last = r.kind;
      return plaintext;
    }
    plaintext.append(buffer, r.size);
  }
}

class TlsSessionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto context = TlsContext::forServer(files_.cert_path(), files_.key_path());
    ASSERT_TRUE(context.ok()) << context.error().message;
    auto session = TlsSession::serverSide(*context);
    ASSERT_TRUE(session.ok());
    server_ = std::move(*session);
  }

  // Runs the handshake to its end, moving bytes both ways in chunks of `chunk` bytes.
  void handshake(size_t chunk = SIZE_MAX) {
    for (int round = 0;
         round < 20 && !(server_->handshakeDone() && SSL_is_init_finished(client_.ssl()));
         ++round) {
      SSL_do_handshake(client_.ssl());
      std::string to_server = client_.takeOutput();
      for (size_t at = 0; at < to_server.size(); at += chunk) {
        EXPECT_EQ(serverReads(*server_, std::string_view(to_server).substr(at, chunk)), "");
      }
      client_.give(takeWire(*server_));
    }
    ASSERT_TRUE(server_->handshakeDone());
    ASSERT_TRUE(SSL_is_init_finished(client_.ssl()));
  }

  TlsFiles files_;
  TlsClient client_;
  std::unique_ptr<TlsSession> server_;
};

TEST_F(TlsSessionTest, HandshakeThenDataBothWays) {
  EXPECT_EQ(server_->describe(), "");
  handshake();
  EXPECT_EQ(server_->describe().rfind("TLSv1.3/", 0), 0u) << server_->describe();

  ASSERT_EQ(SSL_write(client_.ssl(), "hello", 5), 5);
  EXPECT_EQ(serverReads(*server_, client_.takeOutput()), "hello");

  auto taken = server_->write("world");
  ASSERT_TRUE(taken.ok());
  EXPECT_TRUE(*taken);
  client_.give(takeWire(*server_));
  EXPECT_EQ(client_.readAll(), "world");
}

TEST_F(TlsSessionTest, HandshakeFedOneByteAtATime) {
  handshake(/*chunk=*/1);
  ASSERT_EQ(SSL_write(client_.ssl(), "abc", 3), 3);
  std::string record = client_.takeOutput();
  std::string got;
  for (char c : record) got += serverReads(*server_, std::string_view(&c, 1));
  EXPECT_EQ(got, "abc");
}

TEST_F(TlsSessionTest, LargeTransfersCrossManyRecords) {
  handshake();
  std::string big(1 << 20, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 7 + (i >> 10));

  auto taken = server_->write(big);
  ASSERT_TRUE(taken.ok() && *taken);
  client_.give(takeWire(*server_));
  EXPECT_EQ(client_.readAll(), big);

  ASSERT_EQ(SSL_write(client_.ssl(), big.data(), static_cast<int>(big.size())),
            static_cast<int>(big.size()));
  Kind last = Kind::kData;
  EXPECT_EQ(serverReads(*server_, client_.takeOutput(), &last), big);
  EXPECT_EQ(last, Kind::kNeedMore);

  // The buffers were replaced by small ones along the way (they keep their peak size otherwise):
  // the session goes on working in both directions.
  ASSERT_EQ(SSL_write(client_.ssl(), "after", 5), 5);
  EXPECT_EQ(serverReads(*server_, client_.takeOutput(), &last), "after");
  EXPECT_EQ(last, Kind::kNeedMore);
  taken = server_->write("reply");
  ASSERT_TRUE(taken.ok() && *taken);
  client_.give(takeWire(*server_));
  EXPECT_EQ(client_.readAll(), "reply");
}

// Records carry at most 8 KiB of plaintext, as Postgres's do: libpq's non-blocking clients read
// into whatever room their buffer has, and the rest of a larger record would sit inside their
// OpenSSL where select() cannot see it (psycopg hung on a 20 MB result that way).
TEST_F(TlsSessionTest, RecordsAreNoLargerThanPostgresSends) {
  handshake();
  std::string big(100 * 1024, 'r');
  auto taken = server_->write(big);
  ASSERT_TRUE(taken.ok() && *taken);
  std::string wire = takeWire(*server_);
  size_t records = 0;
  for (size_t at = 0; at + 5 <= wire.size(); ++records) {
    size_t length =
        (static_cast<unsigned char>(wire[at + 3]) << 8) | static_cast<unsigned char>(wire[at + 4]);
    // The ciphertext adds a content-type byte and the AEAD tag: at most 256 bytes by RFC 8446.
    EXPECT_LE(length, 8192u + 256u) << "record " << records;
    at += 5 + length;
  }
  EXPECT_GE(records, big.size() / 8192);
  client_.give(wire);
  EXPECT_EQ(client_.readAll(), big);
}

TEST_F(TlsSessionTest, WriteWaitsForTheHandshake) {
  auto taken = server_->write("too early");
  ASSERT_TRUE(taken.ok());
  EXPECT_FALSE(*taken);
  EXPECT_EQ(server_->unsentWireBytes(), 0u);
}

TEST_F(TlsSessionTest, GarbageFailsTheHandshake) {
  Kind last = Kind::kData;
  EXPECT_EQ(serverReads(*server_, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", &last), "");
  EXPECT_EQ(last, Kind::kFailed);
  char buffer[64];
  TlsSession::ReadResult again = server_->read(buffer, sizeof(buffer));
  EXPECT_EQ(again.kind, Kind::kFailed);
}

TEST_F(TlsSessionTest, FailureCarriesOpensslsReason) {
  // A handshake record holding a message of type 255, which no TLS version has.
  server_->feed(std::string("\x16\x03\x01\x00\x04\xff\x00\x00\x00", 9));
  char buffer[64];
  TlsSession::ReadResult r = server_->read(buffer, sizeof(buffer));
  ASSERT_EQ(r.kind, Kind::kFailed);
  EXPECT_FALSE(r.error.empty());
}

TEST_F(TlsSessionTest, CloseNotifyEndsTheSession) {
  handshake();
  SSL_shutdown(client_.ssl());
  Kind last = Kind::kData;
  EXPECT_EQ(serverReads(*server_, client_.takeOutput(), &last), "");
  EXPECT_EQ(last, Kind::kClosed);
}

// shardgate on both ends: a client session (to a shard) against a server session (for a client).
class TlsBothEndsTest : public ::testing::Test {
 protected:
  // Runs the handshake; false when either end failed.
  bool handshake(TlsSession& client, TlsSession& server) {
    client.start();
    char buffer[4096];
    for (int round = 0; round < 20 && !(client.handshakeDone() && server.handshakeDone());
         ++round) {
      server.feed(takeWire(client));
      if (server.read(buffer, sizeof(buffer)).kind == Kind::kFailed) return false;
      client.feed(takeWire(server));
      if (client.read(buffer, sizeof(buffer)).kind == Kind::kFailed) return false;
    }
    return client.handshakeDone() && server.handshakeDone();
  }
  std::unique_ptr<TlsSession> server() {
    auto context = TlsContext::forServer(files_.cert_path(), files_.key_path());
    EXPECT_TRUE(context.ok());
    auto session = TlsSession::serverSide(*context);
    EXPECT_TRUE(session.ok());
    return std::move(*session);
  }
  std::unique_ptr<TlsSession> client(const std::string& ca, const std::string& host,
                                     bool check_host) {
    auto context = TlsContext::forClient(ca);
    EXPECT_TRUE(context.ok()) << context.error().message;
    auto session = TlsSession::clientSide(*context, host, check_host);
    EXPECT_TRUE(session.ok()) << session.error().message;
    return std::move(*session);
  }
  TlsFiles files_;
};

TEST_F(TlsBothEndsTest, EncryptionOnlyThenData) {
  auto c = client("", "127.0.0.1", false);
  auto s = server();
  ASSERT_TRUE(handshake(*c, *s));
  // The client queued its startup packet before the handshake ended: written now.
  auto taken = c->write("startup");
  ASSERT_TRUE(taken.ok() && *taken);
  EXPECT_EQ(serverReads(*s, takeWire(*c)), "startup");
}

TEST_F(TlsBothEndsTest, VerifiedChainAndHostName) {
  auto c = client(files_.cert_path(), "shardgate-test", /*check_host=*/true);
  auto s = server();
  EXPECT_TRUE(handshake(*c, *s));
}

TEST_F(TlsBothEndsTest, WrongHostFailsWithTheReason) {
  auto c = client(files_.cert_path(), "127.0.0.1", /*check_host=*/true);  // no IP in the cert
  auto s = server();
  EXPECT_FALSE(handshake(*c, *s));
  EXPECT_NE(c->failure().find("certificate verify failed"), std::string::npos) << c->failure();
  EXPECT_NE(c->failure().find("IP address mismatch"), std::string::npos) << c->failure();
}

TEST_F(TlsBothEndsTest, ChainFromAnotherCaFails) {
  TlsFiles other;
  auto c = client(other.cert_path(), "shardgate-test", /*check_host=*/false);
  auto s = server();
  EXPECT_FALSE(handshake(*c, *s));
  EXPECT_NE(c->failure().find("certificate verify failed"), std::string::npos) << c->failure();
}

TEST(TlsContext, FileErrorsNameTheFile) {
  TlsFiles files;
  auto missing = TlsContext::forServer("/nonexistent/cert.pem", files.key_path());
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(
      missing.error().message.find("cannot load the TLS certificate \"/nonexistent/cert.pem\""),
      std::string::npos)
      << missing.error().message;

  auto no_key = TlsContext::forServer(files.cert_path(), "/nonexistent/key.pem");
  ASSERT_FALSE(no_key.ok());
  EXPECT_NE(no_key.error().message.find("cannot load the TLS private key \"/nonexistent/key.pem\""),
            std::string::npos)
      << no_key.error().message;

  // A key file that is the certificate's: not a key at all.
  auto not_a_key = TlsContext::forServer(files.cert_path(), files.cert_path());
  EXPECT_FALSE(not_a_key.ok());

  auto no_ca = TlsContext::forClient("/nonexistent/ca.pem");
  ASSERT_FALSE(no_ca.ok());
  EXPECT_NE(no_ca.error().message.find("cannot load the TLS CA file \"/nonexistent/ca.pem\""),
            std::string::npos)
      << no_ca.error().message;

  auto mismatch = TlsContext::forServer(files.cert_path(), files.other_key_path());
  ASSERT_FALSE(mismatch.ok());
  EXPECT_NE(mismatch.error().message.find("other.pem"), std::string::npos)
      << mismatch.error().message;
}

}  // namespace
}  // namespace shardgate
