// The admin console through a real ProxyServer on loopback (no Postgres behind it): who gets in,
// the answers' shape, errors that leave the session usable, PAUSE / RESUME and a failed RELOAD.
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
#include "proxy/wire/protocol.h"
#include "proxy/worker.h"

namespace shardgate::proxy {
namespace {

conf::ConfigPtr consoleConfig() {
  auto config = std::make_shared<conf::Config>();
  config->source_path = "/nonexistent/shardgate-admin-test.toml";  // RELOAD fails to read it
  config->general.port = 0;
  config->general.workers = 2;  // snapshots are gathered from both
  auto trust = [](std::string name, bool admin) {
    conf::User u;
    u.name = std::move(name);
    u.auth_method = conf::AuthMethod::kTrust;
    u.admin = admin;
    return u;
  };
  config->users.push_back(trust("operator", true));
  config->users.push_back(trust("app", false));
  conf::Database db;
  db.name = "app";
  conf::Shard shard;
  shard.name = "shard0";
  shard.primary =
      conf::ServerAddress{"127.0.0.1", 1, "app", "postgres", "", conf::ServerTlsMode::kPrefer, ""};
  shard.replicas.push_back(
      conf::ServerAddress{"127.0.0.1", 2, "app", "postgres", "", conf::ServerTlsMode::kPrefer, ""});
  db.shards.push_back(shard);
  config->databases.push_back(db);
  return config;
}

using Message = std::pair<char, std::string>;

// A blocking loopback client; every read gives up after five seconds.
class ConsoleClient {
 public:
  explicit ConsoleClient(uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  }
  ~ConsoleClient() { ::close(fd_); }

  void send(const std::string& bytes) {
    ASSERT_EQ(::write(fd_, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  }

  // The next message; type 0 if the connection closed or nothing came in time.
  Message next() {
    while (true) {
      auto framed = wire::frameTyped(buffer_, 1 << 20);
      if (framed.status == wire::FrameStatus::kComplete) {
        Message m{framed.frame.type, std::string(framed.frame.payload)};
        buffer_.erase(0, framed.frame.size);
        return m;
      }
      if (framed.status == wire::FrameStatus::kInvalid || !readMore()) return {0, {}};
    }
  }

  // Messages up to and including ReadyForQuery.
  std::vector<Message> untilReady() {
    std::vector<Message> out;
    for (;;) {
      out.push_back(next());
      if (out.back().first == 0 || out.back().first == wire::be::kReadyForQuery) return out;
    }
  }

  std::vector<Message> query(const std::string& sql) {
    std::string out;
    wire::Query{sql}.encode(out);
    send(out);
    return untilReady();
  }

  bool connected() const { return connected_; }

 private:
  bool readMore() {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, 5000) <= 0) return false;
    char chunk[8192];
    ssize_t got = ::read(fd_, chunk, sizeof(chunk));
    if (got <= 0) return false;
    buffer_.append(chunk, static_cast<size_t>(got));
    return true;
  }

  int fd_ = -1;
  bool connected_ = false;
  std::string buffer_;
};

std::string types(const std::vector<Message>& messages) {
  std::string out;
  for (const auto& m : messages) out += m.first ? m.first : '0';
  return out;
}

Error errorIn(const std::vector<Message>& messages) {
  for (const auto& m : messages) {
    if (m.first == wire::be::kErrorResponse) {
      auto decoded = wire::ErrorResponse::decode(m.second);
      if (decoded.ok()) return decoded->toError();
    }
  }
  return Error{};
}

std::vector<std::string> columns(const std::vector<Message>& messages) {
  std::vector<std::string> out;
  for (const auto& m : messages) {
    if (m.first != wire::be::kRowDescription) continue;
    auto decoded = wire::RowDescription::decode(m.second);
    if (decoded.ok())
      for (const auto& f : decoded->fields) out.push_back(f.name);
  }
  return out;
}

std::vector<std::vector<std::string>> rows(const std::vector<Message>& messages) {
  std::vector<std::vector<std::string>> out;
  for (const auto& m : messages) {
    if (m.first != wire::be::kDataRow) continue;
    auto decoded = wire::DataRow::decode(m.second);
    if (!decoded.ok()) continue;
    std::vector<std::string> row;
    for (const auto& v : decoded->values) row.push_back(v.value_or("NULL"));
    out.push_back(std::move(row));
  }
  return out;
}

class AdminConsoleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<ProxyServer>(consoleConfig());
    ASSERT_TRUE(server_->start().ok());
    port_ = server_->worker(0).listeningPort();
  }
  void TearDown() override {
    server_->shutdown(0);
    server_->wait();
  }

  // Logs in to dbname=shardgate; the messages up to the first ReadyForQuery (or the error).
  std::vector<Message> login(ConsoleClient& c, const std::string& user) {
    std::string out;
    wire::StartupMessage{wire::kProtocolVersion30, {{"user", user}, {"database", "shardgate"}}}
        .encode(out);
    c.send(out);
    return c.untilReady();
  }

  std::unique_ptr<ProxyServer> server_;
  uint16_t port_ = 0;
};

TEST_F(AdminConsoleTest, AdminUserGetsTheConsole) {
  ConsoleClient c(port_);
  ASSERT_TRUE(c.connected());
  auto hello = login(c, "operator");
  ASSERT_EQ(hello.front().first, wire::be::kAuthentication);
  ASSERT_EQ(hello.back().first, wire::be::kReadyForQuery);
  auto version = c.query("show version;");
  EXPECT_EQ(types(version), "TDCZ");
  EXPECT_EQ(columns(version), std::vector<std::string>{"version"});
  EXPECT_EQ(rows(version)[0][0].rfind("shardgate ", 0), 0u);
}

TEST_F(AdminConsoleTest, OtherUsersAreRefusedWith28000) {
  ConsoleClient c(port_);
  auto reply = login(c, "app");
  Error e = errorIn(reply);
  EXPECT_EQ(e.sqlstate, "28000");
  EXPECT_EQ(e.severity, "FATAL");
  EXPECT_NE(e.message.find("not an admin user"), std::string::npos);
}

TEST_F(AdminConsoleTest, ErrorsLeaveTheSessionUsable) {
  ConsoleClient c(port_);
  login(c, "operator");
  auto unknown = c.query("FROBNICATE");
  EXPECT_EQ(types(unknown), "EZ");
  EXPECT_EQ(errorIn(unknown).sqlstate, "42601");
  EXPECT_EQ(errorIn(c.query("SHOW WHATEVER")).sqlstate, "42601");
  EXPECT_EQ(errorIn(c.query("SHOW \"unterminated")).sqlstate, "42601");
  EXPECT_EQ(types(c.query("  ;")), "IZ");
  // The extended protocol: one error, then ReadyForQuery at Sync.
  std::string batch;
  wire::Parse{"", "SHOW POOLS", {}}.encode(batch);
  wire::Sync{}.encode(batch);
  c.send(batch);
  auto extended = c.untilReady();
  EXPECT_EQ(types(extended), "EZ");
  EXPECT_EQ(errorIn(extended).sqlstate, "0A000");
  auto help = c.query("SHOW HELP");
  EXPECT_EQ(columns(help), (std::vector<std::string>{"command", "description"}));
  EXPECT_GE(rows(help).size(), 10u);
}

TEST_F(AdminConsoleTest, ShowShardsListsEveryServerBeforeAnyConnection) {
  ConsoleClient c(port_);
  login(c, "operator");
  auto shards = rows(c.query("SHOW SHARDS"));
  ASSERT_EQ(shards.size(), 2u);
  EXPECT_EQ(shards[0][3], "primary");
  EXPECT_EQ(shards[1][3], "replica");
  EXPECT_EQ(shards[0][7], "unknown");  // never connected
  auto pools = c.query("SHOW POOLS");
  EXPECT_EQ(columns(pools).at(4), "cl_active");
  EXPECT_TRUE(rows(pools).empty());
  auto clients = rows(c.query("SHOW CLIENTS"));
  ASSERT_EQ(clients.size(), 1u);  // this console
  EXPECT_EQ(clients[0][3], "admin");
}

TEST_F(AdminConsoleTest, PauseAndResumeShowInDatabases) {
  ConsoleClient c(port_);
  login(c, "operator");
  EXPECT_EQ(types(c.query("PAUSE app")), "CZ");
  EXPECT_EQ(rows(c.query("SHOW DATABASES"))[0][7], "1");
  EXPECT_EQ(errorIn(c.query("RESUME other")).sqlstate, "3D000");
  EXPECT_EQ(types(c.query("RESUME")), "CZ");
  EXPECT_EQ(rows(c.query("SHOW DATABASES"))[0][7], "0");
}

TEST_F(AdminConsoleTest, FailedReloadIsAnErrorAndTheConfigStays) {
  ConsoleClient c(port_);
  login(c, "operator");
  auto reload = c.query("RELOAD");
  Error e = errorIn(reload);
  EXPECT_EQ(e.sqlstate, "F0000");
  EXPECT_EQ(e.severity, "ERROR");
  EXPECT_EQ(reload.back().first, wire::be::kReadyForQuery);
  EXPECT_EQ(server_->currentConfig()->databases.size(), 1u);
  EXPECT_EQ(types(c.query("SHOW VERSION")), "TDCZ");
}

}  // namespace
}  // namespace shardgate::proxy
