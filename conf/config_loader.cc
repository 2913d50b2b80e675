// Loads shardgate's TOML config with toml++ and validates it into a Config (see config_loader.h).
#include "conf/config_loader.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <initializer_list>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include <toml++/toml.h>

#include "common/scram_verifier.h"
#include "conf/password.h"

namespace shardgate::conf {
namespace {

// Returns the Error of a failed Status from the enclosing function.
#define CONF_TRY(expr)                                                           \
  do {                                                                           \
    if (auto status_ = (expr); !status_.ok()) return std::move(status_).error(); \
  } while (0)

constexpr int64_t kU32Max = 0xffffffffLL;
constexpr int64_t kMaxWorkers = 1024;
constexpr int64_t kMinMessageSize = 1024;  // smaller would refuse ordinary startup packets
constexpr std::string_view kAdminDatabase = "shardgate";

// A position in the file, 1-based as editors count.
struct Where {
  uint32_t line = 1;
  uint32_t column = 1;
};

// toml++ leaves line 0 on nodes it made up (e.g. the tables implied by a dotted key).
Where at(const toml::source_region& region, Where fallback) {
  if (region.begin.line == 0) return fallback;
  return {region.begin.line, region.begin.column};
}

Error configError(std::string_view source, Where where, std::string_view key_path,
                  std::string_view what) {
  std::string message(source);
  message += ':' + std::to_string(where.line) + ':' + std::to_string(where.column) + ": ";
  message += key_path.empty() ? std::string_view("(top level)") : key_path;
  message += ": ";
  message += what;
  return Error::fatal(sqlstate::kConfigFileError, std::move(message));
}

std::string_view typeName(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::table:
      return "a table";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a float";
    case toml::node_type::boolean:
      return "a boolean";
    case toml::node_type::date:
      return "a date";
    case toml::node_type::time:
      return "a time";
    case toml::node_type::date_time:
      return "a date-time";
    case toml::node_type::none:
      break;
  }
  return "nothing";
}

// Edit distance counting a swap of neighbours as one edit ("prot" -> "port"), to suggest the key
// a typo meant.
size_t editDistance(std::string_view a, std::string_view b) {
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[a.size()][b.size()];
}

std::string quoted(std::string_view s) {
  return "\"" + std::string(s) + "\"";
}

// An error detail is a sentence for a client ("The salt is not valid base64."); a config error
// continues after "<key>: ...", so it wants a clause ("the salt is not valid base64"). A leading
// acronym ("SCRAM ...") keeps its case.
std::string asClause(std::string_view sentence) {
  std::string clause(sentence);
  if (clause.ends_with('.')) clause.pop_back();
  auto is_upper = [](char c) { return c >= 'A' && c <= 'Z'; };
  if (!clause.empty() && is_upper(clause[0]) && !(clause.size() > 1 && is_upper(clause[1]))) {
    clause[0] = static_cast<char>(clause[0] - 'A' + 'a');
  }
  return clause;
}

// One TOML table being read: knows its key path and position so that every error can name them,
// and which keys it accepts so that a typo is refused rather than silently ignored.
class TableReader {
 public:
  TableReader(std::string_view source, const toml::table& table, std::string path, Where fallback)
      : source_(source),
        table_(&table),
        path_(std::move(path)),
        where_(at(table.source(), fallback)) {}

  Where where() const { return where_; }
  std::string pathOf(std::string_view key) const {
    return path_.empty() ? std::string(key) : path_ + "." + std::string(key);
  }
  const toml::node* get(std::string_view key) const { return table_->get(key); }
  bool has(std::string_view key) const { return get(key) != nullptr; }
  // Where the value of `key` starts (the table itself if the key is absent).
  Where whereOf(std::string_view key) const {
    const toml::node* node = get(key);
    return node ? at(node->source(), where_) : where_;
  }

  Error fail(std::string_view what) const { return configError(source_, where_, path_, what); }
  Error failAt(std::string_view key, std::string_view what) const {
    return configError(source_, whereOf(key), pathOf(key), what);
  }
  Error missing(std::string_view key, std::string_view why = "required key is missing") const {
    return configError(source_, where_, pathOf(key), why);
  }
  // An error about `node` (e.g. an array element) whose key path is `path`.
  Error failAtNode(const toml::node& node, std::string_view path, std::string_view what) const {
    return configError(source_, at(node.source(), where_), path, what);
  }
  Error typeError(std::string_view key, const toml::node& node, std::string_view expected) const {
    return failAt(key,
                  "expected " + std::string(expected) + ", got " + std::string(typeName(node)));
  }

  // Refuses the first (in file order) key not in `known`, suggesting the closest known key.
  Status onlyKeys(std::initializer_list<std::string_view> known) const {
    const toml::key* unknown = nullptr;
    Where unknown_where;
    for (auto&& [key, value] : *table_) {
      if (std::find(known.begin(), known.end(), key.str()) != known.end()) continue;
      const Where w = at(key.source(), where_);
      if (!unknown ||
          std::pair(w.line, w.column) < std::pair(unknown_where.line, unknown_where.column)) {
        unknown = &key;
        unknown_where = w;
      }
    }
    if (!unknown) return {};

    const std::string_view name = unknown->str();
    std::string_view best;
    size_t best_distance = 3;  // suggest only near misses
    for (std::string_view k : known) {
      const size_t distance = editDistance(name, k);
      if (distance < best_distance && distance < name.size()) {
        best = k;
        best_distance = distance;
      }
    }
    std::string what = "unknown key";
    if (!best.empty()) {
      what += " (did you mean " + quoted(best) + "?)";
    } else {
      what += " (expected one of:";
      for (std::string_view k : known) what += " " + std::string(k);
      what += ")";
    }
    return configError(source_, unknown_where, pathOf(name), what);
  }

  // An integer in [lo, hi], if present.
  Result<std::optional<int64_t>> intValue(std::string_view key, int64_t lo, int64_t hi) const {
    const toml::node* node = get(key);
    if (!node) return std::optional<int64_t>();
    const auto* value = node->as_integer();
    if (!value) return typeError(key, *node, "an integer");
    const int64_t x = value->get();
    if (x < 0 && lo >= 0) return failAt(key, std::to_string(x) + " must not be negative");
    if (x < lo || x > hi) {
      return failAt(key, std::to_string(x) + " is out of range (" + std::to_string(lo) + ".." +
                             std::to_string(hi) + ")");
    }
    return std::optional<int64_t>(x);
  }
  template <typename T>
  Status readInt(std::string_view key, T& out, int64_t lo, int64_t hi) const {
    auto value = intValue(key, lo, hi);
    if (!value.ok()) return std::move(value).error();
    if (*value) out = static_cast<T>(**value);
    return {};
  }
  template <typename T>
  Status readInt(std::string_view key, std::optional<T>& out, int64_t lo, int64_t hi) const {
    auto value = intValue(key, lo, hi);
    if (!value.ok()) return std::move(value).error();
    if (*value) out = static_cast<T>(**value);
    return {};
  }

  // A string, if present; `non_empty` refuses "".
  Status readString(std::string_view key, std::string& out, bool non_empty = true) const {
    const toml::node* node = get(key);
    if (!node) return {};
    const auto* value = node->as_string();
    if (!value) return typeError(key, *node, "a string");
    if (non_empty && value->get().empty()) return failAt(key, "must not be empty");
    out = value->get();
    return {};
  }

  Status readBool(std::string_view key, bool& out) const {
    const toml::node* node = get(key);
    if (!node) return {};
    const auto* value = node->as_boolean();
    if (!value) return typeError(key, *node, "a boolean (true or false)");
    out = value->get();
    return {};
  }

  // A string that must be one of `choices`, if present.
  Status readChoice(std::string_view key, std::string& out,
                    std::initializer_list<std::string_view> choices) const {
    std::string text;
    CONF_TRY(readString(key, text, /*non_empty=*/false));
    if (!has(key)) return {};
    if (std::find(choices.begin(), choices.end(), text) == choices.end()) {
      std::string what = quoted(text) + " is not one of:";
      for (std::string_view c : choices) what += " " + std::string(c);
      return failAt(key, what);
    }
    out = std::move(text);
    return {};
  }

  // A string naming one of `values` (spelled by `name`), if present.
  template <typename E>
  Status readEnum(std::string_view key, E& out, std::initializer_list<E> values,
                  std::string_view (*name)(E)) const {
    std::string text;
    CONF_TRY(readString(key, text, /*non_empty=*/false));
    if (!has(key)) return {};
    for (E v : values) {
      if (name(v) == text) {
        out = v;
        return {};
      }
    }
    std::string what = quoted(text) + " is not one of:";
    for (E v : values) what += " " + std::string(name(v));
    return failAt(key, what);
  }

  // The sub-table `key`, or nullopt if absent.
  Result<std::optional<TableReader>> table(std::string_view key) const {
    const toml::node* node = get(key);
    if (!node) return std::optional<TableReader>();
    const auto* t = node->as_table();
    if (!t) return typeError(key, *node, "a table");
    return std::optional<TableReader>(TableReader(source_, *t, pathOf(key), whereOf(key)));
  }

  // The array of tables `key` (`[[key]]` or `key = [{...}, ...]`); empty if absent.
  Result<std::vector<TableReader>> tables(std::string_view key) const {
    std::vector<TableReader> out;
    const toml::node* node = get(key);
    if (!node) return out;
    const auto* array = node->as_array();
    if (!array) return typeError(key, *node, "an array of tables");
    for (size_t i = 0; i < array->size(); ++i) {
      const toml::node& element = *array->get(i);
      const std::string path = pathOf(key) + "[" + std::to_string(i) + "]";
      const Where w = at(element.source(), whereOf(key));
      const auto* t = element.as_table();
      if (!t) {
        return configError(source_, w, path,
                           "expected a table, got " + std::string(typeName(element)));
      }
      out.emplace_back(source_, *t, path, w);
    }
    return out;
  }

 private:
  std::string_view source_;
  const toml::table* table_;
  std::string path_;  // "" for the top level, else e.g. "databases[0].shards[1]"
  Where where_;
};

// Names already used in one scope (users, databases, one database's shards) and where.
using SeenNames = std::map<std::string, Where, std::less<>>;

std::string firstDefined(Where w) {
  return "first defined at line " + std::to_string(w.line);
}

constexpr std::initializer_list<ReadPreference> kReadPreferences = {
    ReadPreference::kPrimary, ReadPreference::kReplica, ReadPreference::kPreferReplica};

class Loader {
 public:
  explicit Loader(std::string_view source) : source_(source) {}

  Result<ConfigPtr> load(const toml::table& root) const {
    const TableReader top(source_, root, "", Where{});
    CONF_TRY(top.onlyKeys({"general", "users", "databases"}));

    auto config = std::make_shared<Config>();
    config->source_path = std::string(source_);

    auto general = top.table("general");
    if (!general.ok()) return std::move(general).error();
    if (*general) CONF_TRY(readGeneral(**general, config->general));
    if (config->general.workers == 0) {
      config->general.workers = static_cast<uint32_t>(std::clamp<int64_t>(
          static_cast<int64_t>(std::thread::hardware_concurrency()), 1, kMaxWorkers));
    }

    auto users = top.tables("users");
    if (!users.ok()) return std::move(users).error();
    SeenNames user_names;
    for (const TableReader& t : *users) {
      User user;
      CONF_TRY(readUser(t, user, user_names));
      config->users.push_back(std::move(user));
    }

    auto databases = top.tables("databases");
    if (!databases.ok()) return std::move(databases).error();
    SeenNames database_names;
    for (const TableReader& t : *databases) {
      Database database;
      CONF_TRY(readDatabase(t, database, database_names));
      static std::atomic<uint64_t> generations{0};
      database.generation = ++generations;
      config->databases.push_back(std::move(database));
    }
    for (Database& database : config->databases) {
      for (Shard& shard : database.shards) {
        for (ServerAddress* server : shard.servers()) {
          server->tls_mode = config->general.server_tls_sslmode;
          server->tls_ca_file = config->general.server_tls_ca_file;
        }
      }
    }
    return ConfigPtr(std::move(config));
  }

 private:
  // sockaddr_un holds 108 bytes with the terminating NUL; libuv would cut a longer path.
  static Status checkSocketPath(const TableReader& t, std::string_view key,
                                const std::string& directory, uint16_t port) {
    const std::string path = unixSocketPath(directory, port);
    if (path.size() <= 107) return {};
    return t.failAt(key, "the Unix socket path " + quoted(path) + " is " +
                             std::to_string(path.size()) + " bytes long; the limit is 107");
  }

  // The files are only named here; the proxy loads them (and says what is wrong with them).
  static Status readClientTls(const TableReader& t, General& g) {
    if (t.has("client_tls_sslmode")) {
      std::string mode;
      CONF_TRY(t.readString("client_tls_sslmode", mode));
      if (mode == "verify-ca" || mode == "verify-full") {
        return t.failAt("client_tls_sslmode", quoted(mode) +
                                                  " (client certificates) is not supported; use " +
                                                  "disable, allow, prefer or require");
      }
    }
    CONF_TRY(t.readEnum("client_tls_sslmode", g.client_tls_sslmode,
                        {TlsMode::kDisable, TlsMode::kAllow, TlsMode::kPrefer, TlsMode::kRequire},
                        tlsModeName));
    CONF_TRY(t.readString("client_tls_cert_file", g.client_tls_cert_file, /*non_empty=*/false));
    CONF_TRY(t.readString("client_tls_key_file", g.client_tls_key_file, /*non_empty=*/false));
    if (g.client_tls_sslmode == TlsMode::kDisable) return {};
    for (auto [key, value] : {std::pair{"client_tls_cert_file", &g.client_tls_cert_file},
                              std::pair{"client_tls_key_file", &g.client_tls_key_file}}) {
      if (value->empty()) {
        return t.failAt("client_tls_sslmode",
                        "client_tls_sslmode = " + quoted(tlsModeName(g.client_tls_sslmode)) +
                            " needs " + key + " (a PEM file)");
      }
    }
    return {};
  }

  static Status readServerTls(const TableReader& t, General& g) {
    CONF_TRY(t.readEnum("server_tls_sslmode", g.server_tls_sslmode,
                        {ServerTlsMode::kDisable, ServerTlsMode::kPrefer, ServerTlsMode::kRequire,
                         ServerTlsMode::kVerifyCa, ServerTlsMode::kVerifyFull},
                        serverTlsModeName));
    CONF_TRY(t.readString("server_tls_ca_file", g.server_tls_ca_file, /*non_empty=*/false));
    if (verifiesServerCertificate(g.server_tls_sslmode) && g.server_tls_ca_file.empty()) {
      return t.failAt("server_tls_sslmode",
                      "server_tls_sslmode = " + quoted(serverTlsModeName(g.server_tls_sslmode)) +
                          " needs server_tls_ca_file (the PEM file of the CA that signs the "
                          "servers' certificates)");
    }
    return {};
  }

  static Status readGeneral(const TableReader& t, General& g) {
    CONF_TRY(t.onlyKeys({"listen_addr",
                         "port",
                         "unix_socket_dir",
                         "workers",
                         "pool_mode",
                         "max_client_conn",
                         "max_message_size",
                         "client_buffer_limit",
                         "max_merge_bytes",
                         "connect_timeout",
                         "client_login_timeout",
                         "query_wait_timeout",
                         "deadlock_timeout",
                         "idle_server_timeout",
                         "server_lifetime",
                         "shutdown_timeout",
                         "default_pool_size",
                         "min_pool_size",
                         "metrics_port",
                         "log_level",
                         "log_format",
                         "server_check_interval_ms",
                         "table_stats_interval_ms",
                         "slow_query_ms",
                         "slow_query_max_chars",
                         "log_parameters",
                         "client_tls_sslmode",
                         "client_tls_cert_file",
                         "client_tls_key_file",
                         "server_tls_sslmode",
                         "server_tls_ca_file"}));
    CONF_TRY(t.readString("listen_addr", g.listen_addr));
    CONF_TRY(t.readInt("port", g.port, 1, 65535));
    CONF_TRY(t.readString("unix_socket_dir", g.unix_socket_dir, /*non_empty=*/false));
    if (!g.unix_socket_dir.empty()) {
      if (!isUnixSocketDirectory(g.unix_socket_dir)) {
        return t.failAt("unix_socket_dir", "must be an absolute directory path (or \"\" for none)");
      }
      CONF_TRY(checkSocketPath(t, "unix_socket_dir", g.unix_socket_dir, g.port));
    }
    CONF_TRY(t.readInt("workers", g.workers, 0, kMaxWorkers));
    CONF_TRY(t.readEnum("pool_mode", g.pool_mode, {PoolMode::kSession, PoolMode::kTransaction},
                        poolModeName));
    CONF_TRY(t.readInt("max_client_conn", g.max_client_conn, 1, kU32Max));
    CONF_TRY(t.readInt("max_message_size", g.max_message_size, kMinMessageSize, kU32Max));
    CONF_TRY(t.readInt("client_buffer_limit", g.client_buffer_limit, uint32_t{8192}, kU32Max));
    CONF_TRY(t.readInt("max_merge_bytes", g.max_merge_bytes, 65536,
                       std::numeric_limits<int64_t>::max()));
    CONF_TRY(t.readInt("connect_timeout", g.connect_timeout_ms, 0, kU32Max));
    CONF_TRY(t.readInt("client_login_timeout", g.client_login_timeout_ms, 0, kU32Max));
    CONF_TRY(t.readInt("query_wait_timeout", g.query_wait_timeout_ms, 0, kU32Max));
    CONF_TRY(t.readInt("deadlock_timeout", g.deadlock_timeout_ms, 0, kU32Max));
    CONF_TRY(t.readInt("idle_server_timeout", g.idle_server_timeout_ms, 0, kU32Max));
    CONF_TRY(t.readInt("server_lifetime", g.server_lifetime_ms, 0, kU32Max));
    CONF_TRY(t.readInt("shutdown_timeout", g.shutdown_timeout_ms, 0, kU32Max));
    CONF_TRY(t.readInt("default_pool_size", g.default_pool_size, 1, kU32Max));
    CONF_TRY(t.readInt("min_pool_size", g.min_pool_size, 0, kU32Max));
    CONF_TRY(t.readInt("metrics_port", g.metrics_port, 0, 65535));
    CONF_TRY(t.readInt("server_check_interval_ms", g.server_check_interval_ms, 100, kU32Max));
    CONF_TRY(t.readInt("table_stats_interval_ms", g.table_stats_interval_ms, 100, kU32Max));
    CONF_TRY(t.readInt("slow_query_ms", g.slow_query_ms, 0, kU32Max));
    CONF_TRY(t.readInt("slow_query_max_chars", g.slow_query_max_chars, 16, 1u << 20));
    CONF_TRY(t.readBool("log_parameters", g.log_parameters));
    CONF_TRY(t.readChoice("log_level", g.log_level,
                          {"trace", "debug", "info", "warn", "error", "critical", "off"}));
    CONF_TRY(t.readEnum("log_format", g.log_format, {LogFormat::kText, LogFormat::kJson},
                        logFormatName));
    CONF_TRY(readClientTls(t, g));
    CONF_TRY(readServerTls(t, g));
    // Both listeners on one port would fail to bind, or with SO_REUSEPORT split connections.
    if (g.metrics_port != 0 && g.metrics_port == g.port) {
      return t.failAt("metrics_port",
                      std::to_string(g.metrics_port) + " is also general.port; use another port");
    }
    return {};
  }

  static Status readUser(const TableReader& t, User& u, SeenNames& seen) {
    CONF_TRY(
        t.onlyKeys({"name", "password", "auth_method", "admin", "pool_size", "read_preference"}));
    if (!t.has("name")) return t.missing("name");
    CONF_TRY(t.readString("name", u.name));
    if (auto [it, inserted] = seen.emplace(u.name, t.whereOf("name")); !inserted) {
      return t.failAt(
          "name", "duplicate user name " + quoted(u.name) + " (" + firstDefined(it->second) + ")");
    }
    CONF_TRY(t.readString("password", u.password, /*non_empty=*/false));
    CONF_TRY(t.readEnum(
        "auth_method", u.auth_method,
        {AuthMethod::kTrust, AuthMethod::kCleartext, AuthMethod::kMd5, AuthMethod::kScramSha256},
        authMethodName));
    CONF_TRY(t.readBool("admin", u.admin));
    CONF_TRY(t.readInt("pool_size", u.pool_size, 1, kU32Max));
    if (t.has("read_preference")) {
      ReadPreference preference = ReadPreference::kPrimary;
      CONF_TRY(t.readEnum("read_preference", preference, kReadPreferences, readPreferenceName));
      u.read_preference = preference;
    }
    return checkPassword(t, u);
  }

  // Sets password_kind and checks that auth_method can be served with what is stored.
  static Status checkPassword(const TableReader& t, User& u) {
    u.password_kind = classifyPassword(u.password);
    if (u.password_kind == PasswordKind::kMd5Hash && !isWellFormedMd5Hash(u.password)) {
      return t.failAt("password",
                      "malformed md5 hash: expected \"md5\" followed by 32 lowercase hex digits");
    }
    if (u.password_kind == PasswordKind::kScramVerifier) {
      // The parser the login path uses, so that a verifier accepted here also works there.
      if (auto verifier = parseScramVerifier(u.password); !verifier.ok()) {
        return t.failAt("password",
                        "malformed SCRAM verifier: " + asClause(verifier.error().detail));
      }
    }

    const std::string method = "auth_method " + quoted(authMethodName(u.auth_method));
    if (u.auth_method == AuthMethod::kTrust) return {};
    if (u.password_kind == PasswordKind::kNone) {
      const std::string why = method + " needs a password (use auth_method = \"trust\" for none)";
      return t.has("password") ? t.failAt("password", "must not be empty: " + why)
                               : t.missing("password", "missing: " + why);
    }
    // md5 and SCRAM need something to derive their own secret from; cleartext can check the
    // password it receives against any stored form.
    if (u.auth_method == AuthMethod::kMd5 && u.password_kind == PasswordKind::kScramVerifier) {
      return t.failAt("password", "a SCRAM verifier cannot be used with " + method +
                                      " (use the plain password or its md5 hash)");
    }
    if (u.auth_method == AuthMethod::kScramSha256 && u.password_kind == PasswordKind::kMd5Hash) {
      return t.failAt("password", "an md5 hash cannot be used with " + method +
                                      " (use the plain password or a SCRAM verifier)");
    }
    return {};
  }

  static Status readDatabase(const TableReader& t, Database& db, SeenNames& seen) {
    CONF_TRY(t.onlyKeys({"name", "pool_size", "shards", "default_shard", "read_preference",
                         "replica_policy", "reference_tables", "sharded_tables"}));
    if (!t.has("name")) return t.missing("name");
    CONF_TRY(t.readString("name", db.name));
    if (db.name == kAdminDatabase) {
      return t.failAt("name", "\"shardgate\" is reserved for the admin console");
    }
    if (auto [it, inserted] = seen.emplace(db.name, t.whereOf("name")); !inserted) {
      return t.failAt("name", "duplicate database name " + quoted(db.name) + " (" +
                                  firstDefined(it->second) + ")");
    }
    CONF_TRY(t.readInt("pool_size", db.pool_size, 1, kU32Max));

    auto shards = t.tables("shards");
    if (!shards.ok()) return std::move(shards).error();
    if (shards->empty()) {
      const std::string why = "a database needs at least one shard ([[databases.shards]])";
      return t.has("shards") ? t.failAt("shards", why) : t.missing("shards", why);
    }
    SeenNames shard_names;
    for (size_t i = 0; i < shards->size(); ++i) {
      Shard shard;
      CONF_TRY(readShard((*shards)[i], i, db.name, shard, shard_names));
      db.shards.push_back(std::move(shard));
    }
    return readSharding(t, db);
  }

  static Status readShard(const TableReader& t, size_t index, const std::string& db_name, Shard& s,
                          SeenNames& seen) {
    CONF_TRY(t.onlyKeys({"name", "primary", "replicas"}));
    s.name = "shard" + std::to_string(index);
    CONF_TRY(t.readString("name", s.name));
    if (auto [it, inserted] = seen.emplace(s.name, t.whereOf("name")); !inserted) {
      return t.failAt(
          "name", "duplicate shard name " + quoted(s.name) + " (" + firstDefined(it->second) + ")");
    }

    auto primary = t.table("primary");
    if (!primary.ok()) return std::move(primary).error();
    if (!*primary) return t.missing("primary");
    CONF_TRY(readServer(**primary, db_name, nullptr, s.primary));

    auto replicas = t.tables("replicas");
    if (!replicas.ok()) return std::move(replicas).error();
    for (const TableReader& r : *replicas) {
      ServerAddress replica;
      CONF_TRY(readServer(r, db_name, &s.primary, replica));
      s.replicas.push_back(std::move(replica));
    }
    return {};
  }

  // A primary (primary == nullptr) or a replica, which inherits database/user/password from it.
  static Status readServer(const TableReader& t, const std::string& db_name,
                           const ServerAddress* primary, ServerAddress& out) {
    CONF_TRY(t.onlyKeys({"host", "port", "database", "user", "password"}));
    if (!t.has("host")) return t.missing("host");
    CONF_TRY(t.readString("host", out.host));
    if (!t.has("port")) return t.missing("port");
    CONF_TRY(t.readInt("port", out.port, 1, 65535));
    if (isUnixSocketDirectory(out.host)) CONF_TRY(checkSocketPath(t, "host", out.host, out.port));
    out.database = primary ? primary->database : db_name;
    CONF_TRY(t.readString("database", out.database));
    if (primary) {
      out.user = primary->user;
    } else if (!t.has("user")) {
      return t.missing("user");
    }
    CONF_TRY(t.readString("user", out.user));
    if (primary) out.password = primary->password;
    CONF_TRY(t.readString("password", out.password, /*non_empty=*/false));
    return {};
  }

  // ----- sharding: the database's tables, key values and read routing -----------------------

  // default_shard, read_preference, replica_policy, sharded_tables and reference_tables of a
  // database whose shards are already read (shard references are checked against them).
  static Status readSharding(const TableReader& t, Database& db) {
    if (t.has("default_shard")) CONF_TRY(readShardRef(t, "default_shard", db, db.default_shard));
    CONF_TRY(
        t.readEnum("read_preference", db.read_preference, kReadPreferences, readPreferenceName));
    if (db.read_preference == ReadPreference::kReplica) {
      for (const Shard& shard : db.shards) {
        if (shard.replicas.empty()) {
          return t.failAt("read_preference",
                          "\"replica\" needs a replica on every shard, and shard " +
                              quoted(shard.name) +
                              " has none (\"prefer_replica\" falls back to the primary)");
        }
      }
    }
    CONF_TRY(t.readEnum(
        "replica_policy", db.replica_policy,
        {ReplicaPolicy::kRoundRobin, ReplicaPolicy::kRandom, ReplicaPolicy::kLeastConnections},
        replicaPolicyName));

    auto tables = t.tables("sharded_tables");
    if (!tables.ok()) return std::move(tables).error();
    std::vector<Where> declared_at;  // where each of db.sharded_tables was named
    for (const TableReader& r : *tables) {
      ShardedTable table;
      CONF_TRY(readShardedTable(r, db, table));
      for (size_t i = 0; i < db.sharded_tables.size(); ++i) {
        const ShardedTable& other = db.sharded_tables[i];
        if (auto clash = nameClash(other.tableName(), table.tableName(), declared_at[i])) {
          return r.failAt("name", *clash);
        }
      }
      declared_at.push_back(r.whereOf("name"));
      db.sharded_tables.push_back(std::move(table));
    }
    return readReferenceTables(t, db, declared_at);
  }

  // Why `later` may not be declared next to `earlier` (the same table, or one name matching the
  // other's table), or nullopt if both can be declared.
  static std::optional<std::string> nameClash(const TableName& earlier, const TableName& later,
                                              Where earlier_at) {
    if (earlier.name != later.name) return std::nullopt;
    const std::string where = " (" + firstDefined(earlier_at) + ")";
    if (earlier.schema == later.schema) {
      return "table " + quoted(later.display()) + " is declared twice" + where;
    }
    if (earlier.schema.empty() || later.schema.empty()) {
      return "table " + quoted(later.display()) + " is also declared as " +
             quoted(earlier.display()) + where +
             "; an unqualified name matches the table in every schema, so qualify both";
    }
    return std::nullopt;
  }

  // "table" or "schema.table".
  static Result<TableName> parseTableName(std::string_view text) {
    const auto bad = [&](std::string_view why) {
      return Error::make(sqlstate::kConfigFileError,
                         quoted(text) + " is not a table name: " + std::string(why));
    };
    if (text.find('"') != std::string_view::npos) {
      return bad("write the name as Postgres stores it, without quotes");
    }
    TableName name;
    const size_t dot = text.find('.');
    if (dot == std::string_view::npos) {
      name.name = std::string(text);
    } else {
      if (text.find('.', dot + 1) != std::string_view::npos) {
        return bad("expected \"table\" or \"schema.table\"");
      }
      name.schema = std::string(text.substr(0, dot));
      name.name = std::string(text.substr(dot + 1));
    }
    if (name.name.empty() || (dot != std::string_view::npos && name.schema.empty())) {
      return bad("expected \"table\" or \"schema.table\"");
    }
    return name;
  }

  // A required table-name string `key` of `t`.
  static Result<TableName> readTableName(const TableReader& t, std::string_view key) {
    if (!t.has(key)) return t.missing(key);
    std::string text;
    CONF_TRY(t.readString(key, text));
    auto name = parseTableName(text);
    if (!name.ok()) return t.failAt(key, name.error().message);
    return name;
  }

  // A shard named by index (0-based) or by name.
  static Status readShardRef(const TableReader& t, std::string_view key, const Database& db,
                             uint32_t& out) {
    const toml::node* node = t.get(key);
    if (!node) return t.missing(key);
    const std::string count =
        "database " + quoted(db.name) + " has " + std::to_string(db.shards.size()) + " shard" +
        (db.shards.size() == 1 ? "" : "s") + " (0.." + std::to_string(db.shards.size() - 1) + ")";
    if (const auto* index = node->as_integer()) {
      const int64_t i = index->get();
      if (i < 0 || static_cast<uint64_t>(i) >= db.shards.size()) {
        return t.failAt(key, "shard " + std::to_string(i) + " does not exist: " + count);
      }
      out = static_cast<uint32_t>(i);
      return {};
    }
    if (const auto* name = node->as_string()) {
      for (size_t i = 0; i < db.shards.size(); ++i) {
        if (db.shards[i].name == name->get()) {
          out = static_cast<uint32_t>(i);
          return {};
        }
      }
      std::string names;
      for (const Shard& s : db.shards) names += " " + s.name;
      return t.failAt(key, "no shard named " + quoted(name->get()) + " in database " +
                               quoted(db.name) + " (shards:" + names + ")");
    }
    return t.typeError(key, *node, "a shard index or a shard name");
  }
  static Status readShardRef(const TableReader& t, std::string_view key, const Database& db,
                             std::optional<uint32_t>& out) {
    if (!t.has(key)) return {};
    uint32_t shard = 0;
    CONF_TRY(readShardRef(t, key, db, shard));
    out = shard;
    return {};
  }

  // A key value of type `type` written as `node` (at key path `path`): a TOML integer for the
  // integer types, a string otherwise.
  static Result<KeyValue> readKeyNode(const TableReader& t, const toml::node& node,
                                      std::string_view path, KeyType type) {
    const std::string of_type = " (the key type is " + std::string(keyTypeName(type)) + ")";
    if (isIntegerKey(type)) {
      const auto* value = node.as_integer();
      if (!value) {
        return t.failAtNode(
            node, path, "expected an integer" + of_type + ", got " + std::string(typeName(node)));
      }
      auto key = keyFromInt(type, value->get());
      if (!key.ok()) {
        return t.failAtNode(node, path,
                            std::to_string(value->get()) + " is out of range" + of_type);
      }
      return key;
    }
    const auto* value = node.as_string();
    if (!value) {
      return t.failAtNode(node, path,
                          "expected a string" + of_type + ", got " + std::string(typeName(node)));
    }
    auto key = parseKeyText(type, value->get());
    if (!key.ok()) return t.failAtNode(node, path, key.error().message);
    return key;
  }
  static Status readKey(const TableReader& t, std::string_view key, KeyType type,
                        std::optional<KeyValue>& out) {
    const toml::node* node = t.get(key);
    if (!node) return {};
    auto value = readKeyNode(t, *node, t.pathOf(key), type);
    if (!value.ok()) return std::move(value).error();
    out = std::move(value).value();
    return {};
  }

  static std::string rangeText(const RangeBound& r, KeyType type) {
    return "[" + (r.from ? r.from->display(type) : std::string("unbounded")) + ", " +
           (r.to ? r.to->display(type) : std::string("unbounded")) + ")";
  }

  static Status readShardedTable(const TableReader& t, const Database& db, ShardedTable& table) {
    CONF_TRY(t.onlyKeys(
        {"name", "column", "type", "strategy", "ranges", "lists", "default_shard", "directory"}));
    auto name = readTableName(t, "name");
    if (!name.ok()) return std::move(name).error();
    table.schema = std::move(name->schema);
    table.name = std::move(name->name);
    if (!t.has("column")) return t.missing("column");
    CONF_TRY(t.readString("column", table.column));
    if (!t.has("type")) {
      return t.missing("type",
                       "required key is missing (one of: smallint integer bigint text varchar "
                       "uuid)");
    }
    CONF_TRY(t.readEnum("type", table.key_type,
                        {KeyType::kSmallint, KeyType::kInteger, KeyType::kBigint, KeyType::kText,
                         KeyType::kVarchar, KeyType::kUuid},
                        keyTypeName));
    CONF_TRY(t.readEnum("strategy", table.strategy,
                        {Strategy::kHash, Strategy::kRange, Strategy::kList, Strategy::kDirectory},
                        strategyName));

    // Settings of another strategy are refused: they would be silently ignored.
    const std::pair<std::string_view, Strategy> owners[] = {{"ranges", Strategy::kRange},
                                                            {"lists", Strategy::kList},
                                                            {"default_shard", Strategy::kList},
                                                            {"directory", Strategy::kDirectory}};
    for (const auto& [key, owner] : owners) {
      if (t.has(key) && table.strategy != owner) {
        return t.failAt(key, "only valid with strategy = " + quoted(strategyName(owner)) +
                                 " (this table's strategy is " +
                                 quoted(strategyName(table.strategy)) + ")");
      }
    }
    switch (table.strategy) {
      case Strategy::kHash:
        return {};
      case Strategy::kRange:
        return readRanges(t, db, table);
      case Strategy::kList:
        CONF_TRY(readLists(t, db, table));
        return readShardRef(t, "default_shard", db, table.default_shard);
      case Strategy::kDirectory:
        return readDirectory(t, db, table);
    }
    return {};
  }

  static Status readRanges(const TableReader& t, const Database& db, ShardedTable& table) {
    auto ranges = t.tables("ranges");
    if (!ranges.ok()) return std::move(ranges).error();
    if (ranges->empty()) {
      const std::string why =
          "strategy \"range\" needs at least one range: ranges = [ { from = ..., to = ..., "
          "shard = ... } ]";
      return t.has("ranges") ? t.failAt("ranges", why) : t.missing("ranges", why);
    }
    const KeyType type = table.key_type;
    for (size_t i = 0; i < ranges->size(); ++i) {
      const TableReader& r = (*ranges)[i];
      CONF_TRY(r.onlyKeys({"from", "to", "shard"}));
      RangeBound range;
      CONF_TRY(readShardRef(r, "shard", db, range.shard));
      CONF_TRY(readKey(r, "from", type, range.from));
      CONF_TRY(readKey(r, "to", type, range.to));
      if (range.from && range.to && !(*range.from < *range.to)) {
        return r.failAt("to", "the range " + rangeText(range, type) +
                                  " is empty: to must be greater than from");
      }
      if (i > 0) {
        const RangeBound& prev = table.ranges.back();
        const std::string prev_text =
            "ranges[" + std::to_string(i - 1) + "] " + rangeText(prev, type);
        if (!prev.to) {
          return r.fail("overlaps " + prev_text +
                        ", which has no upper bound (only the last range may omit to)");
        }
        if (!range.from) {
          return r.failAt("from",
                          "missing: only the first range may omit from (unbounded "
                          "below); this one overlaps " +
                              prev_text);
        }
        if (prev.from && *range.from < *prev.from) {
          return r.failAt("from", "ranges must be listed in ascending order: " +
                                      rangeText(range, type) + " comes after " + prev_text);
        }
        if (*range.from < *prev.to) {
          return r.failAt("from", rangeText(range, type) + " overlaps " + prev_text);
        }
      }
      table.ranges.push_back(std::move(range));
    }
    return {};
  }

  static Status readLists(const TableReader& t, const Database& db, ShardedTable& table) {
    auto lists = t.tables("lists");
    if (!lists.ok()) return std::move(lists).error();
    if (lists->empty()) {
      const std::string why =
          "strategy \"list\" needs at least one list: lists = [ { values = [...], shard = ... } ]";
      return t.has("lists") ? t.failAt("lists", why) : t.missing("lists", why);
    }
    std::map<KeyValue, std::string> first_listed;  // value -> key path where it is listed
    for (const TableReader& l : *lists) {
      CONF_TRY(l.onlyKeys({"values", "shard"}));
      ListEntry entry;
      CONF_TRY(readShardRef(l, "shard", db, entry.shard));
      const toml::node* node = l.get("values");
      if (!node) return l.missing("values");
      const auto* values = node->as_array();
      if (!values) return l.typeError("values", *node, "an array of key values");
      if (values->empty()) return l.failAt("values", "must not be empty");
      for (size_t j = 0; j < values->size(); ++j) {
        const std::string path = l.pathOf("values") + "[" + std::to_string(j) + "]";
        auto value = readKeyNode(l, *values->get(j), path, table.key_type);
        if (!value.ok()) return std::move(value).error();
        if (auto [it, inserted] = first_listed.emplace(*value, path); !inserted) {
          return l.failAtNode(*values->get(j), path,
                              "value " + value->display(table.key_type) +
                                  " is listed twice (first at " + it->second + ")");
        }
        entry.values.push_back(std::move(value).value());
      }
      table.lists.push_back(std::move(entry));
    }
    return {};
  }

  static Status readDirectory(const TableReader& t, const Database& db, ShardedTable& table) {
    auto directory = t.table("directory");
    if (!directory.ok()) return std::move(directory).error();
    if (!*directory) {
      return t.missing("directory",
                       "strategy \"directory\" needs directory = { table = \"...\", shard = ..., "
                       "fallback = \"error\" | \"hash\" }");
    }
    const TableReader& d = **directory;
    CONF_TRY(d.onlyKeys({"table", "shard", "fallback"}));
    DirectoryConfig config;
    auto name = readTableName(d, "table");
    if (!name.ok()) return std::move(name).error();
    config.table = std::move(name).value();
    config.shard = db.default_shard;
    if (d.has("shard")) CONF_TRY(readShardRef(d, "shard", db, config.shard));
    CONF_TRY(d.readEnum("fallback", config.fallback,
                        {DirectoryFallback::kError, DirectoryFallback::kHash},
                        directoryFallbackName));
    table.directory = std::move(config);
    return {};
  }

  // reference_tables = ["countries", "public.currencies"]; `sharded_at` is where each of
  // db.sharded_tables was declared.
  static Status readReferenceTables(const TableReader& t, Database& db,
                                    const std::vector<Where>& sharded_at) {
    const toml::node* node = t.get("reference_tables");
    if (!node) return {};
    const auto* array = node->as_array();
    if (!array) return t.typeError("reference_tables", *node, "an array of table names");
    std::vector<Where> declared_at;
    for (size_t i = 0; i < array->size(); ++i) {
      const toml::node& element = *array->get(i);
      const std::string path = t.pathOf("reference_tables") + "[" + std::to_string(i) + "]";
      const auto* text = element.as_string();
      if (!text) {
        return t.failAtNode(
            element, path,
            "expected a table name (a string), got " + std::string(typeName(element)));
      }
      auto name = parseTableName(text->get());
      if (!name.ok()) return t.failAtNode(element, path, name.error().message);
      const Where here = at(element.source(), t.whereOf("reference_tables"));
      for (size_t j = 0; j < db.reference_tables.size(); ++j) {
        if (auto clash = nameClash(db.reference_tables[j], *name, declared_at[j])) {
          return t.failAtNode(element, path, *clash);
        }
      }
      for (size_t j = 0; j < db.sharded_tables.size(); ++j) {
        const ShardedTable& sharded = db.sharded_tables[j];
        if (sharded.name == name->name &&
            (sharded.schema == name->schema || sharded.schema.empty() || name->schema.empty())) {
          return t.failAtNode(element, path,
                              "table " + quoted(name->display()) + " is also a sharded table (" +
                                  quoted(sharded.display()) + ", line " +
                                  std::to_string(sharded_at[j].line) +
                                  "): a table is either sharded or a reference table");
        }
      }
      declared_at.push_back(here);
      db.reference_tables.push_back(std::move(name).value());
    }
    return {};
  }

  std::string_view source_;
};

#undef CONF_TRY

}  // namespace

Result<ConfigPtr> parseConfig(std::string_view toml_text, std::string_view source_name) {
  try {
    toml::table root;
    try {
      root = toml::parse(toml_text, source_name);
    } catch (const toml::parse_error& e) {
      return configError(source_name, at(e.source(), Where{}), "syntax error", e.description());
    }
    return Loader(source_name).load(root);
  } catch (const std::exception& e) {
    return Error::fatal(sqlstate::kConfigFileError,
                        std::string(source_name) + ": cannot load the configuration: " + e.what());
  } catch (...) {
    return Error::fatal(sqlstate::kConfigFileError,
                        std::string(source_name) + ": cannot load the configuration");
  }
}

Result<ConfigPtr> loadConfigFile(const std::string& path) {
  std::string text;
  {
    std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(path.c_str(), "rb"),
                                                         &std::fclose);
    if (!file) {
      return Error::fatal(sqlstate::kConfigFileError,
                          path + ": cannot open: " + std::generic_category().message(errno));
    }
    char buffer[16384];
    size_t n;
    while ((n = std::fread(buffer, 1, sizeof buffer, file.get())) > 0) text.append(buffer, n);
    // fopen succeeds on a directory; the read is what fails (EISDIR).
    if (std::ferror(file.get())) {
      return Error::fatal(sqlstate::kConfigFileError,
                          path + ": cannot read: " + std::generic_category().message(errno));
    }
  }
  return parseConfig(text, path);
}

}  // namespace shardgate::conf
