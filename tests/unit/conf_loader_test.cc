// Unit tests for the TOML config loader: the example configs, defaults, and every refusal.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <thread>

#include "conf/config_loader.h"

namespace shardgate::conf {
namespace {

const std::string kSourceDir = SHARDGATE_SOURCE_DIR;
const std::string kDataDir = SHARDGATE_TEST_DATA_DIR;

// The SCRAM verifier of "secret" (4096 iterations, salt "shardgate-salt16").
constexpr const char* kScramSecret =
    "SCRAM-SHA-256$4096:c2hhcmRnYXRlLXNhbHQxNg==$0ZzQRwiH54iQ4aqwX6ctaymwERqzmu3JRfWLLJtSIiE=:"
    "vzfgNe5vza/NVu050k98IZYFZRzrT0Mhv/gjPRwzZ2g=";
// md5("secret" || "alice").
constexpr const char* kMd5SecretAlice = "md54a0a68b43b6cd5cf266fa02f196e2371";

ConfigPtr parseOk(std::string_view text) {
  auto result = parseConfig(text, "test.toml");
  EXPECT_TRUE(result.ok()) << (result.ok() ? "" : result.error().message);
  return result.ok() ? *result : nullptr;
}

std::string parseError(std::string_view text) {
  auto result = parseConfig(text, "test.toml");
  if (result.ok()) return "(loaded without error)";
  EXPECT_EQ(result.error().sqlstate, "F0000");
  EXPECT_EQ(result.error().severity, "FATAL");
  return result.error().message;
}

// A user with the given auth_method and password line ("" for none), as TOML.
std::string userToml(std::string_view method, std::string_view password_line) {
  std::string s = "[[users]]\nname = \"alice\"\nauth_method = \"" + std::string(method) + "\"\n";
  if (!password_line.empty()) s += std::string(password_line) + "\n";
  return s;
}

// ----- the example configs --------------------------------------------------------------------

TEST(ConfLoader, ReferenceConfigLoads) {
  auto result = loadConfigFile(kSourceDir + "/conf/shardgate.toml");
  ASSERT_TRUE(result.ok()) << result.error().message;
  const Config& c = **result;
  EXPECT_EQ(c.source_path, kSourceDir + "/conf/shardgate.toml");
  EXPECT_EQ(c.general.port, 6432);
  EXPECT_EQ(c.general.max_message_size, 67108864u);
  ASSERT_EQ(c.users.size(), 2u);
  EXPECT_EQ(c.users[0].password_kind, PasswordKind::kPlain);
  EXPECT_TRUE(c.users[0].admin);
  EXPECT_EQ(c.users[0].pool_size, 10u);
  EXPECT_EQ(c.users[1].password_kind, PasswordKind::kScramVerifier);
  EXPECT_EQ(c.users[1].auth_method, AuthMethod::kScramSha256);
  ASSERT_EQ(c.databases.size(), 1u);
  const Database& app = c.databases[0];
  ASSERT_EQ(app.shards.size(), 2u);
  EXPECT_EQ(app.shards[0].primary.port, 15432);
  EXPECT_EQ(app.shards[1].name, "shard1");
  EXPECT_EQ(app.shards[1].primary.port, 15434);
  ASSERT_EQ(app.shards[1].replicas.size(), 1u);
  EXPECT_EQ(app.shards[1].replicas[0].port, 15435);
  EXPECT_EQ(app.shards[1].replicas[0].user, "postgres");
}

TEST(ConfLoader, DemoConfigLoads) {
  auto result = loadConfigFile(kSourceDir + "/conf/demo.toml");
  ASSERT_TRUE(result.ok()) << result.error().message;
  const Config& c = **result;
  EXPECT_EQ(c.general.listen_addr, "127.0.0.1");
  EXPECT_EQ(c.general.port, 6432);
  EXPECT_EQ(c.general.metrics_port, 9930);
  EXPECT_EQ(c.general.pool_mode, PoolMode::kSession);
  ASSERT_EQ(c.users.size(), 1u);
  const User* postgres = c.findUser("postgres");
  ASSERT_NE(postgres, nullptr);
  EXPECT_EQ(postgres->password, "postgres");
  EXPECT_EQ(postgres->auth_method, AuthMethod::kScramSha256);
  EXPECT_TRUE(postgres->admin);
  const Database* app = c.findDatabase("app");
  ASSERT_NE(app, nullptr);
  ASSERT_EQ(app->shards.size(), 2u);
  const uint16_t ports[2][2] = {{15432, 15433}, {15434, 15435}};
  for (size_t i = 0; i < 2; ++i) {
    const Shard& s = app->shards[i];
    EXPECT_EQ(s.name, "shard" + std::to_string(i));
    EXPECT_EQ(s.primary.port, ports[i][0]);
    ASSERT_EQ(s.replicas.size(), 1u);
    EXPECT_EQ(s.replicas[0].port, ports[i][1]);
    for (const ServerAddress* server : {&s.primary, &s.replicas[0]}) {
      EXPECT_EQ(server->host, "127.0.0.1");
      EXPECT_EQ(server->database, "app");
      EXPECT_EQ(server->user, "postgres");
      EXPECT_EQ(server->password, "postgres");
    }
  }
}

// ----- defaults and resolution ----------------------------------------------------------------

TEST(ConfLoader, DefaultsApplied) {
  auto c = parseOk(R"([[users]]
name = "bob"
password = "pw"

[[databases]]
name = "shop"
  [[databases.shards]]
  primary = { host = "db0", port = 5432, user = "u", password = "p" }
  replicas = [ { host = "db0r", port = 5433 } ]
  [[databases.shards]]
  primary = { host = "db1", port = 5432, user = "u", database = "shop_1" }
)");
  ASSERT_TRUE(c);
  const General defaults;
  EXPECT_EQ(c->source_path, "test.toml");
  EXPECT_EQ(c->general.listen_addr, defaults.listen_addr);
  EXPECT_EQ(c->general.port, defaults.port);
  EXPECT_EQ(c->general.pool_mode, PoolMode::kTransaction);  // the default since transaction pooling
  EXPECT_EQ(c->general.max_message_size, defaults.max_message_size);
  EXPECT_EQ(c->general.client_buffer_limit, 1u << 20);
  EXPECT_EQ(c->general.query_wait_timeout_ms, defaults.query_wait_timeout_ms);
  EXPECT_EQ(c->general.default_pool_size, 20u);
  EXPECT_EQ(c->general.log_level, "info");
  EXPECT_EQ(c->general.log_format, LogFormat::kText);

  const User& bob = c->users.at(0);
  EXPECT_EQ(bob.auth_method, AuthMethod::kScramSha256);
  EXPECT_FALSE(bob.admin);
  EXPECT_FALSE(bob.pool_size.has_value());

  const Database& shop = c->databases.at(0);
  EXPECT_FALSE(shop.pool_size.has_value());
  EXPECT_EQ(c->poolSize(shop, bob), 20u);
  ASSERT_EQ(shop.shards.size(), 2u);
  EXPECT_EQ(shop.shards[0].name, "shard0");
  EXPECT_EQ(shop.shards[1].name, "shard1");
  EXPECT_EQ(shop.shards[0].primary.database, "shop");  // the logical name
  EXPECT_EQ(shop.shards[1].primary.database, "shop_1");
  EXPECT_EQ(shop.shards[1].primary.password, "");
  const ServerAddress& replica = shop.shards[0].replicas.at(0);
  EXPECT_EQ(replica.host, "db0r");
  EXPECT_EQ(replica.port, 5433);
  EXPECT_EQ(replica.database, "shop");
  EXPECT_EQ(replica.user, "u");
  EXPECT_EQ(replica.password, "p");
  EXPECT_TRUE(shop.shards[1].replicas.empty());
}

TEST(ConfLoader, ReplicaOverridesInheritedFields) {
  auto c = parseOk(R"([[databases]]
name = "app"
[[databases.shards]]
primary = { host = "p", port = 1, user = "u", password = "pp", database = "d" }
replicas = [ { host = "r", port = 2, user = "ru", password = "rp", database = "rd" } ]
)");
  ASSERT_TRUE(c);
  const ServerAddress& r = c->databases[0].shards[0].replicas[0];
  EXPECT_EQ(r.user, "ru");
  EXPECT_EQ(r.password, "rp");
  EXPECT_EQ(r.database, "rd");
}

TEST(ConfLoader, UnixSocketDirectoryAsHost) {
  auto c = parseOk(R"([[databases]]
name = "app"
[[databases.shards]]
primary = { host = "/var/run/postgresql/", port = 5433, user = "u" }
replicas = [ { host = "127.0.0.1", port = 5434 } ]
)");
  ASSERT_TRUE(c);
  const ServerAddress& p = c->databases[0].shards[0].primary;
  EXPECT_TRUE(isUnixSocketDirectory(p.host));
  EXPECT_EQ(unixSocketPath(p.host, p.port), "/var/run/postgresql/.s.PGSQL.5433");
  EXPECT_FALSE(isUnixSocketDirectory(c->databases[0].shards[0].replicas[0].host));
  EXPECT_EQ(unixSocketPath("/", 5432), "//.s.PGSQL.5432");
}

TEST(ConfLoader, UnixSocketDirForClients) {
  auto c = parseOk("[general]\nport = 7000\nunix_socket_dir = \"/tmp\"\n");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->general.unix_socket_dir, "/tmp");
  EXPECT_EQ(unixSocketPath(c->general.unix_socket_dir, c->general.port), "/tmp/.s.PGSQL.7000");
  auto off = parseOk("[general]\nunix_socket_dir = \"\"\n");
  ASSERT_TRUE(off);
  EXPECT_TRUE(off->general.unix_socket_dir.empty());
}

TEST(ConfLoader, ClientTls) {
  auto off = parseOk("");
  ASSERT_TRUE(off);
  EXPECT_EQ(off->general.client_tls_sslmode, TlsMode::kDisable);
  auto on = parseOk(
      "[general]\nclient_tls_sslmode = \"require\"\nclient_tls_cert_file = \"/etc/c.pem\"\n"
      "client_tls_key_file = \"/etc/k.pem\"\n");
  ASSERT_TRUE(on);
  EXPECT_EQ(on->general.client_tls_sslmode, TlsMode::kRequire);
  EXPECT_EQ(on->general.client_tls_cert_file, "/etc/c.pem");
  EXPECT_EQ(on->general.client_tls_key_file, "/etc/k.pem");
  // Files named with TLS off are kept for a later switch, and not required.
  auto named = parseOk("[general]\nclient_tls_cert_file = \"/etc/c.pem\"\n");
  ASSERT_TRUE(named);
  EXPECT_EQ(named->general.client_tls_sslmode, TlsMode::kDisable);
}

TEST(ConfLoader, ServerTlsReachesEveryServerAddress) {
  const std::string shards =
      "[[databases]]\nname = \"app\"\n[[databases.shards]]\n"
      "primary = { host = \"h\", port = 1, user = \"u\" }\n"
      "replicas = [ { host = \"r\", port = 2 } ]\n";
  auto fallback = parseOk(shards);
  ASSERT_TRUE(fallback);
  EXPECT_EQ(fallback->general.server_tls_sslmode, ServerTlsMode::kPrefer);  // as libpq
  EXPECT_EQ(fallback->databases[0].shards[0].replicas[0].tls_mode, ServerTlsMode::kPrefer);
  auto verify = parseOk(
      "[general]\nserver_tls_sslmode = \"verify-ca\"\nserver_tls_ca_file = \"/ca.pem\"\n" + shards);
  ASSERT_TRUE(verify);
  for (const conf::ServerAddress* server :
       {&verify->databases[0].shards[0].primary, &verify->databases[0].shards[0].replicas[0]}) {
    EXPECT_EQ(server->tls_mode, ServerTlsMode::kVerifyCa);
    EXPECT_EQ(server->tls_ca_file, "/ca.pem");
  }
}

TEST(ConfLoader, EmptyDocumentGivesDefaults) {
  auto c = parseOk("");
  ASSERT_TRUE(c);
  EXPECT_TRUE(c->users.empty());
  EXPECT_TRUE(c->databases.empty());
  EXPECT_EQ(c->general.port, 6432);
}

TEST(ConfLoader, WorkersZeroResolvesToCores) {
  const uint32_t cores = std::max(1u, std::thread::hardware_concurrency());
  auto zero = parseOk("[general]\nworkers = 0\n");
  ASSERT_TRUE(zero);
  EXPECT_EQ(zero->general.workers, cores);
  auto absent = parseOk("");
  ASSERT_TRUE(absent);
  EXPECT_EQ(absent->general.workers, cores);
  auto three = parseOk("[general]\nworkers = 3\n");
  ASSERT_TRUE(three);
  EXPECT_EQ(three->general.workers, 3u);
}

TEST(ConfLoader, AllGeneralKeysRead) {
  auto c = parseOk(R"([general]
listen_addr = "0.0.0.0"
port = 7000
workers = 4
pool_mode = "transaction"
max_client_conn = 50
max_message_size = 1024
connect_timeout = 1
client_login_timeout = 2
query_wait_timeout = 3
idle_server_timeout = 0
server_lifetime = 4294967295
shutdown_timeout = 1500
default_pool_size = 7
min_pool_size = 2
metrics_port = 9000
log_level = "debug"
log_format = "json"
)");
  ASSERT_TRUE(c);
  const General& g = c->general;
  EXPECT_EQ(g.listen_addr, "0.0.0.0");
  EXPECT_EQ(g.port, 7000);
  EXPECT_EQ(g.workers, 4u);
  EXPECT_EQ(g.pool_mode, PoolMode::kTransaction);
  EXPECT_EQ(g.max_client_conn, 50u);
  EXPECT_EQ(g.max_message_size, 1024u);
  EXPECT_EQ(g.connect_timeout_ms, 1u);
  EXPECT_EQ(g.client_login_timeout_ms, 2u);
  EXPECT_EQ(g.query_wait_timeout_ms, 3u);
  EXPECT_EQ(g.idle_server_timeout_ms, 0u);
  EXPECT_EQ(g.server_lifetime_ms, 4294967295u);
  EXPECT_EQ(g.shutdown_timeout_ms, 1500u);
  EXPECT_EQ(g.default_pool_size, 7u);
  EXPECT_EQ(g.min_pool_size, 2u);
  EXPECT_EQ(g.metrics_port, 9000);
  EXPECT_EQ(g.log_level, "debug");
  EXPECT_EQ(g.log_format, LogFormat::kJson);
}

TEST(ConfLoader, DottedKeysAreTheSameTables) {
  auto c = parseOk("general.port = 7001\ngeneral.metrics_port = 0\n");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->general.port, 7001);
}

TEST(ConfLoader, InlineAndTableSyntaxAreEqual) {
  auto inline_form = parseOk(R"([[databases]]
name = "app"
pool_size = 5
[[databases.shards]]
name = "a"
primary = { host = "h0", port = 15432, database = "x", user = "u", password = "p" }
replicas = [ { host = "h1", port = 15433 }, { host = "h2", port = 15434, user = "v" } ]
)");
  auto table_form = parseOk(R"([[databases]]
name = "app"
pool_size = 5
  [[databases.shards]]
  name = "a"
  [databases.shards.primary]
  host = "h0"
  port = 15432
  database = "x"
  user = "u"
  password = "p"
  [[databases.shards.replicas]]
  host = "h1"
  port = 15433
  [[databases.shards.replicas]]
  host = "h2"
  port = 15434
  user = "v"
)");
  ASSERT_TRUE(inline_form && table_form);
  auto same = [](const ServerAddress& a, const ServerAddress& b) {
    return a.host == b.host && a.port == b.port && a.database == b.database && a.user == b.user &&
           a.password == b.password;
  };
  const Database& a = inline_form->databases.at(0);
  const Database& b = table_form->databases.at(0);
  EXPECT_EQ(a.name, b.name);
  EXPECT_EQ(a.pool_size, b.pool_size);
  ASSERT_EQ(a.shards.size(), b.shards.size());
  const Shard& sa = a.shards[0];
  const Shard& sb = b.shards[0];
  EXPECT_EQ(sa.name, sb.name);
  EXPECT_TRUE(same(sa.primary, sb.primary));
  ASSERT_EQ(sa.replicas.size(), 2u);
  ASSERT_EQ(sb.replicas.size(), 2u);
  for (size_t i = 0; i < 2; ++i) EXPECT_TRUE(same(sa.replicas[i], sb.replicas[i])) << i;
  EXPECT_EQ(sa.replicas[1].user, "v");
  EXPECT_EQ(sa.replicas[1].password, "p");
  EXPECT_EQ(sa.replicas[0].database, "x");  // the primary's, not the logical name
}

TEST(ConfLoader, PoolSizePrecedence) {
  auto c = parseOk(R"([general]
default_pool_size = 30
[[users]]
name = "a"
password = "x"
pool_size = 3
[[users]]
name = "b"
password = "x"
[[databases]]
name = "d1"
pool_size = 9
[[databases.shards]]
primary = { host = "h", port = 1, user = "u" }
[[databases]]
name = "d2"
[[databases.shards]]
primary = { host = "h", port = 1, user = "u" }
)");
  ASSERT_TRUE(c);
  const User& a = *c->findUser("a");
  const User& b = *c->findUser("b");
  const Database& d1 = *c->findDatabase("d1");
  const Database& d2 = *c->findDatabase("d2");
  EXPECT_EQ(c->poolSize(d1, a), 3u);
  EXPECT_EQ(c->poolSize(d1, b), 9u);
  EXPECT_EQ(c->poolSize(d2, b), 30u);
}

// ----- passwords ------------------------------------------------------------------------------

TEST(ConfLoader, PasswordKindsAreClassified) {
  auto c = parseOk(std::string(R"([[users]]
name = "plain"
password = "secret"
[[users]]
name = "scram"
password = ")") + kScramSecret +
                   R"("
[[users]]
name = "alice"
auth_method = "md5"
password = ")" + kMd5SecretAlice +
                   R"("
[[users]]
name = "nobody"
auth_method = "trust"
)");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->findUser("plain")->password_kind, PasswordKind::kPlain);
  EXPECT_EQ(c->findUser("scram")->password_kind, PasswordKind::kScramVerifier);
  EXPECT_EQ(c->findUser("scram")->password, kScramSecret);
  EXPECT_EQ(c->findUser("alice")->password_kind, PasswordKind::kMd5Hash);
  EXPECT_EQ(c->findUser("nobody")->password_kind, PasswordKind::kNone);
  EXPECT_EQ(c->findUser("nobody")->auth_method, AuthMethod::kTrust);
}

TEST(ConfLoader, CleartextAcceptsEveryPasswordKind) {
  for (std::string password :
       {std::string("plain"), std::string(kScramSecret), std::string(kMd5SecretAlice)}) {
    EXPECT_TRUE(parseOk(userToml("cleartext", "password = \"" + password + "\""))) << password;
  }
}

TEST(ConfLoader, TrustIgnoresThePassword) {
  EXPECT_TRUE(parseOk(userToml("trust", "")));
  EXPECT_TRUE(parseOk(userToml("trust", "password = \"\"")));
  EXPECT_TRUE(parseOk(userToml("trust", std::string("password = \"") + kMd5SecretAlice + "\"")));
}

TEST(ConfLoader, Md5AcceptsPlainAndMd5Hash) {
  EXPECT_TRUE(parseOk(userToml("md5", "password = \"secret\"")));
  EXPECT_TRUE(parseOk(userToml("md5", std::string("password = \"") + kMd5SecretAlice + "\"")));
}

TEST(ConfLoader, ScramAcceptsPlainAndVerifier) {
  EXPECT_TRUE(parseOk(userToml("scram-sha-256", "password = \"secret\"")));
  EXPECT_TRUE(
      parseOk(userToml("scram-sha-256", std::string("password = \"") + kScramSecret + "\"")));
}

// ----- files ----------------------------------------------------------------------------------

TEST(ConfLoader, FileErrorNamesThePath) {
  const std::string path = kDataDir + "/conf/bad_port.toml";
  auto result = loadConfigFile(path);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().message, path + ":3:8: general.port: 70000 is out of range (1..65535)");
  EXPECT_EQ(result.error().sqlstate, "F0000");
  EXPECT_EQ(result.error().severity, "FATAL");
}

TEST(ConfLoader, MissingFileIsAnError) {
  auto result = loadConfigFile(kDataDir + "/conf/no_such_file.toml");
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().sqlstate, "F0000");
  EXPECT_NE(result.error().message.find("no_such_file.toml: cannot open"), std::string::npos)
      << result.error().message;
}

TEST(ConfLoader, DirectoryIsAnError) {
  auto result = loadConfigFile(kDataDir + "/conf");
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().sqlstate, "F0000");
}

// ----- refusals: each names the line, the key path and what is wrong --------------------------

struct BadCase {
  const char* name;
  std::string toml;
  int line;
  int column;  // 0: not checked
  const char* key_path;
  const char* what;  // a substring of the explanation
};

void PrintTo(const BadCase& c, std::ostream* os) {
  *os << c.name;
}

class ConfLoaderRefuses : public testing::TestWithParam<BadCase> {};

TEST_P(ConfLoaderRefuses, WithPositionAndKey) {
  const BadCase& c = GetParam();
  const std::string message = parseError(c.toml);
  std::string prefix = "test.toml:" + std::to_string(c.line) + ":";
  if (c.column) prefix += std::to_string(c.column) + ":";
  EXPECT_TRUE(message.starts_with(prefix)) << message << "\nexpected prefix: " << prefix;
  EXPECT_NE(message.find(std::string(": ") + c.key_path + ": "), std::string::npos)
      << message << "\nexpected key path: " << c.key_path;
  EXPECT_NE(message.find(c.what), std::string::npos) << message << "\nexpected: " << c.what;
}

const std::string kBadStoredKey =
    "SCRAM-SHA-256$4096:c2FsdA==$c2hvcnQ=:"
    "vzfgNe5vza/NVu050k98IZYFZRzrT0Mhv/gjPRwzZ2g=";

const BadCase kBadCases[] = {
    // syntax
    {"SyntaxError", "[general]\nport = = 1\n", 2, 8, "syntax error", ""},
    {"DuplicateKeyIsSyntaxError", "[general]\nport = 1\nport = 2\n", 3, 0, "syntax error", "port"},
    {"IntegerTooBigForToml", "[general]\nport = 99999999999999999999\n", 2, 0, "syntax error", ""},
    // unknown keys
    {"UnknownGeneralKeySuggests", "[general]\nport = 6432\nprot = 1\n", 3, 1, "general.prot",
     "unknown key (did you mean \"port\"?)"},
    {"UnknownTopLevelTable", "\n[genral]\nport = 1\n", 2, 0, "genral", "did you mean \"general\"?"},
    {"UnknownKeyListsKnownOnes", "[general]\nzzzzzzzz = 1\n", 2, 1, "general.zzzzzzzz",
     "expected one of: listen_addr port"},
    {"UnknownUserKey", "[[users]]\nname = \"a\"\npasword = \"x\"\n", 3, 1, "users[0].pasword",
     "did you mean \"password\"?"},
    {"UnknownDatabaseKey", "[[databases]]\nname = \"a\"\nshard = []\n", 3, 1, "databases[0].shard",
     "did you mean \"shards\"?"},
    {"UnknownShardKey",
     "[[databases]]\nname = \"a\"\n[[databases.shards]]\nprimary = { host = \"h\", port = 1, "
     "user = \"u\" }\nreplica = []\n",
     5, 1, "databases[0].shards[0].replica", "did you mean \"replicas\"?"},
    {"UnknownServerKeyInline",
     "[[databases]]\nname = \"a\"\n[[databases.shards]]\nprimary = { hots = \"h\", port = 1, "
     "user = \"u\" }\n",
     4, 13, "databases[0].shards[0].primary.hots", "did you mean \"host\"?"},
    {"UnknownReplicaKey",
     "[[databases]]\nname = \"a\"\n[[databases.shards]]\nprimary = { host = \"h\", port = 1, "
     "user = \"u\" }\n[[databases.shards.replicas]]\nhost = \"r\"\nport = 2\nlag = 5\n",
     8, 1, "databases[0].shards[0].replicas[0].lag", "unknown key"},
    {"FirstUnknownKeyInFileOrder", "[general]\nzeta = 1\nalpha = 2\n", 2, 1, "general.zeta",
     "unknown key"},
    // wrong types
    {"PortAsString", "[general]\nport = \"6432\"\n", 2, 8, "general.port",
     "expected an integer, got a string"},
    {"PortAsFloat", "[general]\nport = 6432.0\n", 2, 8, "general.port",
     "expected an integer, got a float"},
    {"AdminAsString", "[[users]]\nname = \"a\"\nadmin = \"yes\"\n", 3, 9, "users[0].admin",
     "expected a boolean"},
    {"GeneralNotATable", "general = 5\n", 1, 11, "general", "expected a table, got an integer"},
    {"UsersAsTable", "[users]\nname = \"a\"\n", 1, 0, "users",
     "expected an array of tables, got a table"},
    {"UsersElementNotATable", "users = [ \"a\" ]\n", 1, 11, "users[0]",
     "expected a table, got a string"},
    {"NameAsInteger", "[[databases]]\nname = 1\n", 2, 8, "databases[0].name",
     "expected a string, got an integer"},
    {"ReplicasAsSingleTable",
     "[[databases]]\nname = \"a\"\n[[databases.shards]]\nprimary = { host = \"h\", port = 1, "
     "user = \"u\" }\nreplicas = { host = \"r\", port = 2 }\n",
     5, 12, "databases[0].shards[0].replicas", "expected an array of tables, got a table"},
    {"PrimaryAsString", "[[databases]]\nname = \"a\"\n[[databases.shards]]\nprimary = \"h:1\"\n", 4,
     11, "databases[0].shards[0].primary", "expected a table, got a string"},
    // missing required fields
    {"UserWithoutName",
     "[[users]]\nname = \"a\"\npassword = \"x\"\n\n[[users]]\npassword = \"x\"\n", 5, 0,
     "users[1].name", "required key is missing"},
    {"UserWithEmptyName", "[[users]]\nname = \"\"\n", 2, 8, "users[0].name", "must not be empty"},
    {"DatabaseWithoutName", "[[databases]]\npool_size = 3\n", 1, 0, "databases[0].name",
     "required key is missing"},
    {"DatabaseWithoutShards", "[[databases]]\nname = \"app\"\n", 1, 0, "databases[0].shards",
     "at least one shard"},
    {"DatabaseWithEmptyShards", "[[databases]]\nname = \"app\"\nshards = []\n", 3, 10,
     "databases[0].shards", "at least one shard"},
    {"ShardWithoutPrimary", "[[databases]]\nname = \"app\"\n[[databases.shards]]\nname = \"s\"\n",
     3, 0, "databases[0].shards[0].primary", "required key is missing"},
    {"PrimaryWithoutHost",
     "[[databases]]\nname = \"app\"\n[[databases.shards]]\nprimary = { port = 1, user = \"u\" }\n",
     4, 11, "databases[0].shards[0].primary.host", "required key is missing"},
    {"PrimaryWithoutPort",
     "[[databases]]\nname = \"app\"\n[[databases.shards]]\n[databases.shards.primary]\nhost = "
     "\"h\"\nuser = \"u\"\n",
     4, 0, "databases[0].shards[0].primary.port", "required key is missing"},
    {"ClientTlsWithoutCertificate",
     "[general]\nclient_tls_sslmode = \"require\"\nclient_tls_key_file = \"/k.pem\"\n", 2, 0,
     "general.client_tls_sslmode", "needs client_tls_cert_file (a PEM file)"},
    {"ClientTlsWithoutKey",
     "[general]\nclient_tls_sslmode = \"prefer\"\nclient_tls_cert_file = \"/c.pem\"\n", 2, 0,
     "general.client_tls_sslmode", "needs client_tls_key_file"},
    {"ServerTlsVerifyWithoutCa", "[general]\nserver_tls_sslmode = \"verify-full\"\n", 2, 0,
     "general.server_tls_sslmode", "needs server_tls_ca_file"},
    {"ServerTlsAllow", "[general]\nserver_tls_sslmode = \"allow\"\n", 2, 0,
     "general.server_tls_sslmode", "is not one of"},
    {"ClientTlsVerifyFull", "[general]\nclient_tls_sslmode = \"verify-full\"\n", 2, 0,
     "general.client_tls_sslmode", "(client certificates) is not supported"},
    {"ClientTlsUnknownMode", "[general]\nclient_tls_sslmode = \"on\"\n", 2, 0,
     "general.client_tls_sslmode", "is not one of"},
    {"RelativeUnixSocketDir", "[general]\nunix_socket_dir = \"tmp\"\n", 2, 0,
     "general.unix_socket_dir", "must be an absolute directory path"},
    {"UnixSocketDirTooLong", "[general]\nunix_socket_dir = \"/" + std::string(100, 'd') + "\"\n", 2,
     0, "general.unix_socket_dir", "the limit is 107"},
    // A socket directory: <dir>/.s.PGSQL.<port> must fit sockaddr_un (libuv would cut it).
    {"UnixSocketPathTooLong",
     "[[databases]]\nname = \"app\"\n[[databases.shards]]\n[databases.shards.primary]\nhost = "
     "\"/" +
         std::string(100, 'd') + "\"\nport = 5432\nuser = \"u\"\n",
     5, 8, "databases[0].shards[0].primary.host", "bytes long; the limit is 107"},
    {"PrimaryWithoutUser",
     "[[databases]]\nname = \"app\"\n[[databases.shards]]\nprimary = { host = \"h\", port = 1 "
     "}\n",
     4, 11, "databases[0].shards[0].primary.user", "required key is missing"},
    {"ReplicaWithoutPort",
     "[[databases]]\nname = \"app\"\n[[databases.shards]]\nprimary = { host = \"h\", port = 1, "
     "user = \"u\" }\nreplicas = [ { host = \"r\", port = 2 },\n  { host = \"r2\" } ]\n",
     6, 3, "databases[0].shards[0].replicas[1].port", "required key is missing"},
    {"EmptyHost",
     "[[databases]]\nname = \"app\"\n[[databases.shards]]\nprimary = { host = \"\", port = 1, "
     "user = \"u\" }\n",
     4, 20, "databases[0].shards[0].primary.host", "must not be empty"},
    // numbers
    {"PortTooBig", "[general]\nport = 70000\n", 2, 8, "general.port",
     "70000 is out of range (1..65535)"},
    {"PortZero", "[general]\nport = 0\n", 2, 8, "general.port", "0 is out of range (1..65535)"},
    {"ServerPortTooBig",
     "[[databases]]\nname = \"app\"\n[[databases.shards]]\nprimary = { host = \"h\", port = "
     "65536, user = \"u\" }\n",
     4, 32, "databases[0].shards[0].primary.port", "65536 is out of range (1..65535)"},
    {"ReplicaPortZero",
     "[[databases]]\nname = \"app\"\n[[databases.shards]]\nprimary = { host = \"h\", port = 1, "
     "user = \"u\" }\n[[databases.shards.replicas]]\nhost = \"r\"\nport = 0\n",
     7, 8, "databases[0].shards[0].replicas[0].port", "out of range (1..65535)"},
    {"MetricsPortTooBig", "[general]\nmetrics_port = 65536\n", 2, 16, "general.metrics_port",
     "out of range (0..65535)"},
    {"MetricsPortSameAsPort", "[general]\nport = 7000\nmetrics_port = 7000\n", 3, 16,
     "general.metrics_port", "also general.port"},
    {"NegativeTimeout", "[general]\nconnect_timeout = -1\n", 2, 19, "general.connect_timeout",
     "-1 must not be negative"},
    {"NegativeMinPoolSize", "[general]\nmin_pool_size = -5\n", 2, 0, "general.min_pool_size",
     "must not be negative"},
    {"NegativePort", "[general]\nport = -1\n", 2, 8, "general.port", "must not be negative"},
    {"TimeoutBeyond32Bits", "[general]\nserver_lifetime = 4294967296\n", 2, 0,
     "general.server_lifetime", "out of range (0..4294967295)"},
    {"DefaultPoolSizeZero", "[general]\ndefault_pool_size = 0\n", 2, 21,
     "general.default_pool_size", "0 is out of range (1..4294967295)"},
    {"UserPoolSizeZero", "[[users]]\nname = \"a\"\npassword = \"x\"\npool_size = 0\n", 4, 13,
     "users[0].pool_size", "out of range (1.."},
    {"DatabasePoolSizeZero", "[[databases]]\nname = \"a\"\npool_size = 0\n", 3, 13,
     "databases[0].pool_size", "out of range (1.."},
    {"MaxClientConnZero", "[general]\nmax_client_conn = 0\n", 2, 0, "general.max_client_conn",
     "out of range (1.."},
    {"MaxMessageSizeTooSmall", "[general]\nmax_message_size = 1023\n", 2, 20,
     "general.max_message_size", "1023 is out of range (1024..4294967295)"},
    {"TooManyWorkers", "[general]\nworkers = 1025\n", 2, 11, "general.workers",
     "1025 is out of range (0..1024)"},
    // enums
    {"PoolModeUnknown", "[general]\npool_mode = \"statement\"\n", 2, 13, "general.pool_mode",
     "\"statement\" is not one of: session transaction"},
    {"LogLevelUnknown", "[general]\nlog_level = \"verbose\"\n", 2, 13, "general.log_level",
     "\"verbose\" is not one of: trace debug info warn error critical off"},
    {"LogFormatUnknown", "[general]\nlog_format = \"xml\"\n", 2, 14, "general.log_format",
     "not one of: text json"},
    {"AuthMethodUnknown", "[[users]]\nname = \"a\"\nauth_method = \"scram\"\n", 3, 15,
     "users[0].auth_method", "not one of: trust cleartext md5 scram-sha-256"},
    {"AuthMethodIsCaseSensitive", "[[users]]\nname = \"a\"\nauth_method = \"MD5\"\n", 3, 15,
     "users[0].auth_method", "not one of"},
    // duplicates and reserved names
    {"DuplicateUserName",
     "[[users]]\nname = \"a\"\npassword = \"x\"\n[[users]]\nname = \"b\"\npassword = "
     "\"x\"\n[[users]]\nname = \"a\"\n",
     8, 8, "users[2].name", "duplicate user name \"a\" (first defined at line 2)"},
    {"DuplicateDatabaseName",
     "[[databases]]\nname = \"app\"\nshards = [ { primary = { host = \"h\", port = 1, user = "
     "\"u\" } } ]\n[[databases]]\nname = \"app\"\n",
     5, 8, "databases[1].name", "duplicate database name \"app\" (first defined at line 2)"},
    {"DuplicateShardName",
     "[[databases]]\nname = \"app\"\n[[databases.shards]]\nname = \"s\"\nprimary = { host = "
     "\"h\", port = 1, user = \"u\" }\n[[databases.shards]]\nname = \"s\"\nprimary = { host = "
     "\"h\", port = 2, user = \"u\" }\n",
     7, 8, "databases[0].shards[1].name", "duplicate shard name \"s\""},
    {"ShardNameCollidesWithDefault",
     "[[databases]]\nname = \"app\"\n[[databases.shards]]\nprimary = { host = \"h\", port = 1, "
     "user = \"u\" }\n[[databases.shards]]\nname = \"shard0\"\nprimary = { host = \"h\", port = "
     "2, user = \"u\" }\n",
     6, 8, "databases[0].shards[1].name",
     "duplicate shard name \"shard0\" (first defined at line 3)"},
    {"ReservedDatabaseName", "[[databases]]\nname = \"shardgate\"\n", 2, 8, "databases[0].name",
     "reserved for the admin console"},
    // passwords vs auth_method
    {"ScramWithoutPassword", "[[users]]\nname = \"a\"\n", 1, 0, "users[0].password",
     "auth_method \"scram-sha-256\" needs a password"},
    {"Md5WithEmptyPassword", "[[users]]\nname = \"a\"\nauth_method = \"md5\"\npassword = \"\"\n", 4,
     12, "users[0].password", "must not be empty: auth_method \"md5\" needs a password"},
    {"CleartextWithoutPassword", "[[users]]\nname = \"a\"\nauth_method = \"cleartext\"\n", 1, 0,
     "users[0].password", "needs a password"},
    {"Md5WithScramVerifier",
     std::string("[[users]]\nname = \"a\"\nauth_method = \"md5\"\npassword = \"") + kScramSecret +
         "\"\n",
     4, 12, "users[0].password", "a SCRAM verifier cannot be used with auth_method \"md5\""},
    {"ScramWithMd5Hash",
     std::string("[[users]]\nname = \"a\"\npassword = \"") + kMd5SecretAlice + "\"\n", 3, 12,
     "users[0].password", "an md5 hash cannot be used with auth_method \"scram-sha-256\""},
    {"MalformedMd5Hash",
     "[[users]]\nname = \"a\"\nauth_method = \"md5\"\npassword = "
     "\"md54A0A68B43B6CD5CF266FA02F196E2371\"\n",
     4, 12, "users[0].password", "malformed md5 hash"},
    {"ScramZeroIterations",
     "[[users]]\nname = \"a\"\npassword = "
     "\"SCRAM-SHA-256$0:c2FsdA==$0ZzQRwiH54iQ4aqwX6ctaymwERqzmu3JRfWLLJtSIiE=:"
     "vzfgNe5vza/NVu050k98IZYFZRzrT0Mhv/gjPRwzZ2g=\"\n",
     3, 12, "users[0].password", "iteration count \"0\" is not a positive integer"},
    // PBKDF2 takes an int: a count above INT_MAX would pass here and fail at every login.
    {"ScramIterationsAboveIntMax",
     "[[users]]\nname = \"a\"\npassword = "
     "\"SCRAM-SHA-256$3000000000:c2FsdA==$0ZzQRwiH54iQ4aqwX6ctaymwERqzmu3JRfWLLJtSIiE=:"
     "vzfgNe5vza/NVu050k98IZYFZRzrT0Mhv/gjPRwzZ2g=\"\n",
     3, 12, "users[0].password",
     "malformed SCRAM verifier: the iteration count \"3000000000\" is out of range "
     "(1..2147483647)"},
    {"ScramMissingKeys", "[[users]]\nname = \"a\"\npassword = \"SCRAM-SHA-256$4096:c2FsdA==\"\n", 3,
     12, "users[0].password", "malformed SCRAM verifier"},
    {"ScramBadSaltBase64",
     "[[users]]\nname = \"a\"\npassword = "
     "\"SCRAM-SHA-256$4096:not*base64$0ZzQRwiH54iQ4aqwX6ctaymwERqzmu3JRfWLLJtSIiE=:"
     "vzfgNe5vza/NVu050k98IZYFZRzrT0Mhv/gjPRwzZ2g=\"\n",
     3, 12, "users[0].password", "salt"},
    {"ScramStoredKeyTooShort",
     "[[users]]\nname = \"a\"\nauth_method = \"cleartext\"\npassword = \"" + kBadStoredKey + "\"\n",
     4, 12, "users[0].password", "StoredKey is not 32 bytes"},
    {"ScramBadInTrustToo",
     "[[users]]\nname = \"a\"\nauth_method = \"trust\"\npassword = \"SCRAM-SHA-256$x\"\n", 4, 12,
     "users[0].password", "malformed SCRAM verifier"},
};

INSTANTIATE_TEST_SUITE_P(Cases, ConfLoaderRefuses, testing::ValuesIn(kBadCases),
                         [](const testing::TestParamInfo<BadCase>& info) {
                           return std::string(info.param.name);
                         });

TEST(ConfLoader, ErrorMessageFormatIsExact) {
  EXPECT_EQ(parseError("[general]\nlisten_addr = \"::\"\nport = 70000\n"),
            "test.toml:3:8: general.port: 70000 is out of range (1..65535)");
}

TEST(ConfLoader, NoExceptionEscapesOnGarbage) {
  const std::string inputs[] = {std::string("\0\xff\xfe", 3), "[[[", "a = \"unterminated",
                                "[general]\nport = 1979-05-27\n", std::string(1000, '[')};
  for (const std::string& input : inputs) {
    auto result = parseConfig(input, "garbage.toml");
    ASSERT_FALSE(result.ok());
    EXPECT_TRUE(result.error().message.starts_with("garbage.toml:")) << result.error().message;
  }
}

}  // namespace
}  // namespace shardgate::conf
