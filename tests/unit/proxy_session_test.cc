// The client session state machine through a real ProxyServer on loopback, with no Postgres:
// startup, encryption refusal, every authentication method, and the errors a client can cause.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "conf/config.h"
#include "proxy/proxy_server.h"
#include "proxy/wire/backend_messages.h"
#include "proxy/wire/framing.h"
#include "proxy/wire/frontend_messages.h"
#include "proxy/wire/md5.h"
#include "proxy/wire/protocol.h"
#include "proxy/wire/scram.h"
#include "proxy/worker.h"

namespace shardgate::proxy {
namespace {

conf::ConfigPtr testConfig() {
  auto config = std::make_shared<conf::Config>();
  config->general.port = 0;  // the kernel picks; one worker so there is one port
  config->general.workers = 1;
  config->general.max_message_size = 4096;
  config->general.connect_timeout_ms = 2000;
  auto user = [](std::string name, std::string password, conf::AuthMethod method) {
    conf::User u;
    u.name = std::move(name);
    u.password = std::move(password);
    u.password_kind = u.password.empty() ? conf::PasswordKind::kNone : conf::PasswordKind::kPlain;
    u.auth_method = method;
    return u;
  };
  config->users.push_back(user("scram", "secret", conf::AuthMethod::kScramSha256));
  config->users.push_back(user("md5", "md5pass", conf::AuthMethod::kMd5));
  config->users.push_back(user("clear", "clearpass", conf::AuthMethod::kCleartext));
  config->users.push_back(user("trust", "", conf::AuthMethod::kTrust));
  conf::Database db;
  db.name = "app";
  conf::Shard shard;
  shard.name = "shard0";
  // Nothing listens on port 1: a login that gets this far fails with a connection error.
  shard.primary = conf::ServerAddress{
      "127.0.0.1", 1, "app", "postgres", "postgres", conf::ServerTlsMode::kPrefer, ""};
  db.shards.push_back(shard);
  config->databases.push_back(db);
  return config;
}

// A blocking loopback client that speaks the protocol with the project's own codec.
class Client {
 public:
  explicit Client(uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  }
  ~Client() { ::close(fd_); }
  bool connected() const { return connected_; }

  void send(const std::string& bytes) {
    ASSERT_EQ(::write(fd_, bytes.data(), bytes.size()), (ssize_t)bytes.size());
  }

  // Reads until `n` bytes are buffered or the peer closes; false on timeout.
  bool fill(size_t n) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (buffer_.size() < n && !closed_) {
      pollfd p{fd_, POLLIN, 0};
      int left = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                      deadline - std::chrono::steady_clock::now())
                                      .count());
      if (left <= 0 || ::poll(&p, 1, left) <= 0) return false;
      char chunk[8192];
      ssize_t got = ::read(fd_, chunk, sizeof(chunk));
      if (got <= 0) {
        closed_ = true;
        break;
      }
      buffer_.append(chunk, static_cast<size_t>(got));
    }
    return buffer_.size() >= n;
  }

  // The next typed message, or type 0 if the connection closed first.
  std::pair<char, std::string> next() {
    while (true) {
      auto framed = wire::frameTyped(buffer_, 1 << 20);
      if (framed.status == wire::FrameStatus::kComplete) {
        std::pair<char, std::string> msg{framed.frame.type, std::string(framed.frame.payload)};
        buffer_.erase(0, framed.frame.size);
        return msg;
      }
      if (framed.status == wire::FrameStatus::kInvalid) return {'?', {}};
      size_t want = framed.needed ? framed.needed : buffer_.size() + 1;
      if (!fill(want)) return {0, {}};
    }
  }

  char nextByte() {
    if (!fill(1)) return 0;
    char c = buffer_[0];
    buffer_.erase(0, 1);
    return c;
  }

  bool closedAfterDraining() {
    while (fill(buffer_.size() + 1)) {
    }
    return closed_;
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
  bool closed_ = false;
  std::string buffer_;
};

std::string startup(std::vector<std::pair<std::string, std::string>> params,
                    int32_t version = wire::kProtocolVersion30) {
  std::string out;
  wire::StartupMessage{version, std::move(params)}.encode(out);
  return out;
}

Error errorOf(const std::pair<char, std::string>& msg) {
  EXPECT_EQ(msg.first, wire::be::kErrorResponse);
  auto decoded = wire::ErrorResponse::decode(msg.second);
  return decoded.ok() ? decoded->toError() : Error{};
}

class SessionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<ProxyServer>(testConfig());
    ASSERT_TRUE(server_->start().ok());
    port_ = server_->worker(0).listeningPort();
    ASSERT_NE(port_, 0);
  }
  void TearDown() override {
    server_->shutdown(0);
    server_->wait();
  }

  std::unique_ptr<ProxyServer> server_;
  uint16_t port_ = 0;
};

TEST_F(SessionTest, SslAndGssEncryptionAreDeclinedThenStartupContinues) {
  Client c(port_);
  std::string ssl, gss;
  wire::SslRequest{}.encode(ssl);
  wire::GssEncRequest{}.encode(gss);
  c.send(ssl);
  EXPECT_EQ(c.nextByte(), 'N');
  c.send(gss);
  EXPECT_EQ(c.nextByte(), 'N');
  c.send(startup({{"user", "trust"}, {"database", "app"}}));
  auto ok = c.next();
  EXPECT_EQ(ok.first, wire::be::kAuthentication);
  // The shard is unreachable: the login ends with a connection error, not a hang.
  Error e = errorOf(c.next());
  EXPECT_EQ(e.sqlstate, "08006");
  EXPECT_EQ(e.severity, "FATAL");
  EXPECT_TRUE(c.closedAfterDraining());
}

TEST_F(SessionTest, ScramLoginSucceedsAndWrongPasswordGets28P01) {
  for (std::string password : {"secret", "wrong"}) {
    Client c(port_);
    c.send(startup({{"user", "scram"}, {"database", "app"}}));
    auto sasl = c.next();
    ASSERT_EQ(sasl.first, wire::be::kAuthentication);
    wire::ScramClient scram(password);
    wire::SaslInitialResponse initial{"SCRAM-SHA-256", scram.clientFirstMessage()};
    std::string out;
    initial.encode(out);
    c.send(out);
    auto cont = wire::decodeAuthentication(c.next().second);
    ASSERT_TRUE(cont.ok());
    auto* server_first = std::get_if<wire::AuthenticationSaslContinue>(&*cont);
    ASSERT_NE(server_first, nullptr);
    auto client_final = scram.handleServerFirst(server_first->data);
    ASSERT_TRUE(client_final.ok());
    out.clear();
    wire::SaslResponse{*client_final}.encode(out);
    c.send(out);
    auto reply = c.next();
    if (password == "secret") {
      auto final_msg = wire::decodeAuthentication(reply.second);
      ASSERT_TRUE(final_msg.ok());
      auto* fin = std::get_if<wire::AuthenticationSaslFinal>(&*final_msg);
      ASSERT_NE(fin, nullptr);
      EXPECT_TRUE(scram.handleServerFinal(fin->data).ok());
      EXPECT_EQ(c.next().first, wire::be::kAuthentication);  // AuthenticationOk
    } else {
      Error e = errorOf(reply);
      EXPECT_EQ(e.sqlstate, "28P01");
      EXPECT_EQ(e.message, "password authentication failed for user \"scram\"");
    }
  }
}

TEST_F(SessionTest, UnknownUserFailsExactlyLikeAWrongPassword) {
  Client c(port_);
  c.send(startup({{"user", "nobody"}, {"database", "app"}}));
  auto sasl = wire::decodeAuthentication(c.next().second);
  ASSERT_TRUE(sasl.ok());
  ASSERT_TRUE(std::holds_alternative<wire::AuthenticationSasl>(*sasl));
  wire::ScramClient scram("anything");
  std::string out;
  wire::SaslInitialResponse{"SCRAM-SHA-256", scram.clientFirstMessage()}.encode(out);
  c.send(out);
  auto cont = wire::decodeAuthentication(c.next().second);
  ASSERT_TRUE(cont.ok());
  auto client_final =
      scram.handleServerFirst(std::get<wire::AuthenticationSaslContinue>(*cont).data);
  ASSERT_TRUE(client_final.ok());
  out.clear();
  wire::SaslResponse{*client_final}.encode(out);
  c.send(out);
  Error e = errorOf(c.next());
  EXPECT_EQ(e.sqlstate, "28P01");
  EXPECT_EQ(e.message, "password authentication failed for user \"nobody\"");
}

TEST_F(SessionTest, Md5AndCleartextLogins) {
  {
    Client c(port_);
    c.send(startup({{"user", "md5"}, {"database", "app"}}));
    auto req = wire::decodeAuthentication(c.next().second);
    ASSERT_TRUE(req.ok());
    auto* md5 = std::get_if<wire::AuthenticationMd5Password>(&*req);
    ASSERT_NE(md5, nullptr);
    std::string response = wire::md5SaltedResponse(wire::md5PasswordHash("md5", "md5pass"),
                                                   std::string_view(md5->salt.data(), 4));
    std::string out;
    wire::PasswordMessage{response}.encode(out);
    c.send(out);
    EXPECT_EQ(c.next().first, wire::be::kAuthentication);  // AuthenticationOk
  }
  {
    Client c(port_);
    c.send(startup({{"user", "clear"}, {"database", "app"}}));
    auto req = wire::decodeAuthentication(c.next().second);
    ASSERT_TRUE(req.ok());
    ASSERT_TRUE(std::holds_alternative<wire::AuthenticationCleartextPassword>(*req));
    std::string out;
    wire::PasswordMessage{"not-it"}.encode(out);
    c.send(out);
    EXPECT_EQ(errorOf(c.next()).sqlstate, "28P01");
  }
}

TEST_F(SessionTest, UnknownDatabaseGets3D000AfterAuthentication) {
  Client c(port_);
  c.send(startup({{"user", "trust"}, {"database", "nope"}}));
  EXPECT_EQ(c.next().first, wire::be::kAuthentication);
  Error e = errorOf(c.next());
  EXPECT_EQ(e.sqlstate, "3D000");
  EXPECT_EQ(e.message, "database \"nope\" does not exist");
}

TEST_F(SessionTest, StartupErrors) {
  {
    Client c(port_);
    c.send(startup({{"database", "app"}}));
    EXPECT_EQ(errorOf(c.next()).sqlstate, "28000");  // no user
  }
  {
    Client c(port_);
    c.send(startup({{"user", "trust"}, {"database", "app"}, {"replication", "true"}}));
    Error e = errorOf(c.next());
    EXPECT_EQ(e.sqlstate, "08P01");
    EXPECT_NE(e.message.find("replication"), std::string::npos);
  }
  {
    Client c(port_);
    c.send("GET / HTTP/1.1\r\n\r\n");  // garbage before the startup packet
    Error e = errorOf(c.next());
    EXPECT_EQ(e.sqlstate, "08P01");
    EXPECT_TRUE(c.closedAfterDraining());
  }
  {
    Client c(port_);
    c.send(startup({{"user", "trust"}, {"database", "app"}, {"options", "-x nonsense"}}));
    EXPECT_EQ(errorOf(c.next()).sqlstate, "22023");
  }
}

TEST_F(SessionTest, NewerMinorVersionIsNegotiatedDown) {
  Client c(port_);
  c.send(startup({{"user", "trust"}, {"database", "app"}, {"_pq_.fancy", "1"}},
                 wire::kProtocolVersion30 + 2));
  auto negotiate = c.next();
  ASSERT_EQ(negotiate.first, wire::be::kNegotiateProtocolVersion);
  auto decoded = wire::NegotiateProtocolVersion::decode(negotiate.second);
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(decoded->unrecognized_options, std::vector<std::string>{"_pq_.fancy"});
  EXPECT_EQ(c.next().first, wire::be::kAuthentication);
}

TEST_F(SessionTest, BadMessagesDuringAuthenticationAreProtocolViolations) {
  {
    Client c(port_);
    c.send(startup({{"user", "clear"}, {"database", "app"}}));
    c.next();
    c.send(std::string("Q\0\0\0\x09x;\0\0", 10));  // a query before the password
    EXPECT_EQ(errorOf(c.next()).sqlstate, "08P01");
  }
  {
    Client c(port_);
    c.send(startup({{"user", "clear"}, {"database", "app"}}));
    c.next();
    c.send(std::string("p\0\0\0\x02", 5));  // length below 4
    EXPECT_EQ(errorOf(c.next()).sqlstate, "08P01");
  }
  {
    Client c(port_);
    c.send(startup({{"user", "clear"}, {"database", "app"}}));
    c.next();
    c.send(std::string("p\0\x10\0\0", 5));  // 1 MiB > max_message_size (4096)
    EXPECT_EQ(errorOf(c.next()).sqlstate, "08P01");
  }
}

TEST_F(SessionTest, UnknownCancelKeyClosesQuietly) {
  Client c(port_);
  std::string out;
  wire::CancelRequest{12345, 678}.encode(out);
  c.send(out);
  EXPECT_TRUE(c.closedAfterDraining());
  EXPECT_EQ(c.next().first, 0);  // nothing was sent back
  // The server is unaffected.
  Client d(port_);
  d.send(startup({{"user", "trust"}, {"database", "nope"}}));
  EXPECT_EQ(d.next().first, wire::be::kAuthentication);
}

}  // namespace
}  // namespace shardgate::proxy
