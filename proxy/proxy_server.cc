// ProxyServer: starts one Worker per configured thread and coordinates their shutdown.
#include "proxy/proxy_server.h"

#include <filesystem>

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/log.h"
#include "conf/config_loader.h"
#include "proxy/lock_deadlock_watch.h"
#include "proxy/metrics_server.h"
#include "proxy/worker.h"

namespace shardgate::proxy {

namespace {

Error socketError(const std::string& path, const std::string& what) {
  return Error::fatal(sqlstate::kInternalError,
                      "cannot listen on Unix socket \"" + path + "\": " + what);
}

// A listening Unix-domain socket at `path`. A socket file left by a process that is gone is
// replaced; one that a live server still answers on is not (as Postgres and PgBouncer do).
Result<int> openUnixListener(const std::string& path) {
  struct sockaddr_un addr {};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) return socketError(path, "the path is too long");
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  const auto* sa = reinterpret_cast<const struct sockaddr*>(&addr);
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) return socketError(path, "a file that is not a socket is there");
    int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe >= 0) {
      const bool answered = ::connect(probe, sa, sizeof(addr)) == 0;
      ::close(probe);
      if (answered) return socketError(path, "another server is listening on it");
    }
    ::unlink(path.c_str());
  }
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return socketError(path, std::string("socket(): ") + strerror(errno));
  // Like Postgres's default unix_socket_permissions (0777): who may log in is the auth's business.
  if (::bind(fd, sa, sizeof(addr)) != 0 || ::chmod(path.c_str(), 0777) != 0 ||
      ::listen(fd, 4096) != 0) {
    std::string why = strerror(errno);
    ::close(fd);
    return socketError(path, why);
  }
  return fd;
}

// What identifies the CA file's contents cheaply: a renewed file at the same path differs.
std::string fileStamp(const std::string& path) {
  if (path.empty()) return {};
  std::error_code ec;
  auto size = std::filesystem::file_size(path, ec);
  if (ec) return "missing";
  auto mtime = std::filesystem::last_write_time(path, ec);
  if (ec) return "missing";
  return std::to_string(size) + "@" + std::to_string(mtime.time_since_epoch().count());
}

}  // namespace

ProxyServer::ProxyServer(conf::ConfigPtr config) : config_(std::move(config)) {
  history_.push_back(config_);
  max_client_conn_.store(config_->general.max_client_conn, std::memory_order_relaxed);
}

conf::ConfigPtr ProxyServer::currentConfig() const {
  std::lock_guard lock(config_mutex_);
  return config_;
}

void ProxyServer::requestShutdown() {
  if (shutdown_handler_) shutdown_handler_();
}

ProxyServer::~ProxyServer() {
  for (auto& worker : workers_) worker->join();
  if (lock_deadlock_watch_) lock_deadlock_watch_->stop();  // it posts to the workers
  workers_.clear();
  if (!unix_socket_path_.empty()) ::unlink(unix_socket_path_.c_str());
}

Result<ProxyServer::TlsContexts> ProxyServer::loadTls(const conf::General& general) {
  TlsContexts contexts;
  if (general.client_tls_sslmode != conf::TlsMode::kDisable) {
    auto clients = TlsContext::forServer(general.client_tls_cert_file, general.client_tls_key_file);
    if (!clients.ok()) return clients.error();
    contexts.clients = *clients;
    contexts.clients_must_use_tls = general.client_tls_sslmode == conf::TlsMode::kRequire;
  }
  if (general.server_tls_sslmode != conf::ServerTlsMode::kDisable) {
    // Without verification, encryption only (as libpq without a root certificate).
    auto servers = TlsContext::forClient(conf::verifiesServerCertificate(general.server_tls_sslmode)
                                             ? general.server_tls_ca_file
                                             : std::string());
    if (!servers.ok()) return servers.error();
    contexts.servers = *servers;
  }
  return contexts;
}

ProxyServer::TlsContexts ProxyServer::tls() const {
  std::lock_guard lock(config_mutex_);
  return tls_;
}

Status ProxyServer::start() {
  conf::ConfigPtr config = currentConfig();
  const conf::General& g = config->general;
  auto tls = loadTls(g);
  if (!tls.ok()) return tls.error();
  {
    std::lock_guard lock(config_mutex_);
    tls_ = *tls;
  }
  server_tls_ca_stamp_ = fileStamp(g.server_tls_ca_file);
  uint32_t count = std::max<uint32_t>(1, g.workers);
  for (uint32_t i = 0; i < count; ++i) {
    auto worker = std::make_unique<Worker>(*this, i, config);
    Status listening = worker->listen(g.listen_addr, g.port);
    if (!listening.ok()) return listening;
    workers_.push_back(std::move(worker));
  }
  if (!g.unix_socket_dir.empty()) {
    const std::string path = conf::unixSocketPath(g.unix_socket_dir, g.port);
    Result<int> fd = openUnixListener(path);
    if (!fd.ok()) return fd.error();
    unix_socket_path_ = path;
    Status listening;
    for (auto& worker : workers_) {
      listening = worker->listenUnix(*fd);
      if (!listening.ok()) break;
    }
    ::close(*fd);  // each worker holds its own duplicate
    if (!listening.ok()) return listening;
  }
  if (g.metrics_port != 0) {
    std::vector<std::shared_ptr<const WorkerMetrics>> cells;
    for (auto& worker : workers_) cells.push_back(worker->metricsHandle());
    metrics_server_ =
        std::make_unique<MetricsServer>(std::move(cells), [this] { return currentConfig(); });
    Status serving = metrics_server_->start(g.listen_addr, g.metrics_port);
    if (!serving.ok()) return serving;
  }
  lock_deadlock_watch_ =
      std::make_unique<LockDeadlockWatch>([this] { return currentConfig(); },
                                          [this](const backends::LockDeadlock& deadlock) {
                                            if (deadlock.worker < workers_.size())
                                              workers_[deadlock.worker]->postLockDeadlock(deadlock);
                                          });
  lock_deadlock_watch_->start();
  for (auto& worker : workers_) worker->start();
  spdlog::info("event=listening address={} port={} workers={} pool_mode={} client_tls={}",
               g.listen_addr, g.port, count,
               g.pool_mode == conf::PoolMode::kSession ? "session" : "transaction",
               conf::tlsModeName(g.client_tls_sslmode));
  if (!unix_socket_path_.empty()) {
    spdlog::info("event=listening_unix path=\"{}\"", unix_socket_path_);
  }
  return {};
}

void ProxyServer::shutdown(uint32_t timeout_ms) {
  for (auto& worker : workers_) worker->postShutdown(timeout_ms);
}

void ProxyServer::wait() {
  for (auto& worker : workers_) worker->join();
}

bool ProxyServer::sameServerTls(const conf::General& was, const conf::General& now) const {
  return was.server_tls_sslmode == now.server_tls_sslmode &&
         was.server_tls_ca_file == now.server_tls_ca_file &&
         fileStamp(now.server_tls_ca_file) == server_tls_ca_stamp_;
}

Result<conf::ConfigPtr> ProxyServer::reload() {
  std::lock_guard reload_lock(reload_mutex_);
  conf::ConfigPtr current = currentConfig();
  spdlog::info("event=reload_started source=\"{}\"", current->source_path);
  auto loaded = conf::loadConfigFile(current->source_path);
  if (!loaded.ok()) {
    spdlog::error("event=reload_failed source=\"{}\" error=\"{}\"", current->source_path,
                  loaded.error().message);
    return loaded.error();
  }
  if ((*loaded)->users.empty() || (*loaded)->databases.empty()) {
    // A file cut short while being written, or emptied by mistake, would drop every client and
    // admin (none could log in to reload again): the running config stays.
    Error error = Error::make(
        "F0000", "config file " + current->source_path + " declares no " +
                     ((*loaded)->users.empty() ? "[[users]]" : "[[databases]]") + ": not reloaded");
    spdlog::error("event=reload_failed source=\"{}\" error=\"{}\"", current->source_path,
                  error.message);
    return error;
  }
  // Keys that take effect only at a restart keep their running values (as PgBouncer does): the
  // listeners and worker threads stay, and the pools' per-worker shares follow the workers that
  // really run.
  auto adjusted = std::make_shared<conf::Config>(**loaded);
  {
    const conf::General& was = current->general;
    conf::General& now = adjusted->general;
    auto keep = [](std::string_view key, const auto& old_value, auto& new_value) {
      if (old_value == new_value) return;
      spdlog::warn("event=reload_restart_needed key=general.{} running={} in_file={}", key,
                   old_value, new_value);
      new_value = old_value;
    };
    keep("listen_addr", was.listen_addr, now.listen_addr);
    keep("port", was.port, now.port);
    keep("unix_socket_dir", was.unix_socket_dir, now.unix_socket_dir);
    keep("workers", was.workers, now.workers);
    keep("metrics_port", was.metrics_port, now.metrics_port);
  }
  conf::ConfigPtr next = adjusted;
  auto tls = loadTls(next->general);
  if (!tls.ok()) {
    spdlog::error("event=reload_failed source=\"{}\" error=\"{}\"", current->source_path,
                  tls.error().message);
    return tls.error();
  }
  if (sameServerTls(current->general, next->general)) tls->servers = this->tls().servers;
  const conf::General& now = next->general;
  setLogLevel(now.log_level);
  setLogFormat(now.log_format == conf::LogFormat::kJson ? LogLineFormat::kJson
                                                        : LogLineFormat::kText);
  {
    std::lock_guard lock(config_mutex_);
    config_ = next;
    history_.push_back(next);
    tls_ = *tls;
  }
  server_tls_ca_stamp_ = fileStamp(now.server_tls_ca_file);
  max_client_conn_.store(now.max_client_conn, std::memory_order_relaxed);
  for (auto& worker : workers_) {
    Worker* w = worker.get();
    w->post([w, next] { w->applyConfig(next); });
  }
  spdlog::info("event=reload_done source=\"{}\" databases={} users={} log_level={} log_format={}",
               next->source_path, next->databases.size(), next->users.size(), now.log_level,
               conf::logFormatName(now.log_format));
  return next;
}

bool ProxyServer::tryAddClient() {
  uint32_t current = clients_.fetch_add(1, std::memory_order_relaxed);
  if (current >= max_client_conn_.load(std::memory_order_relaxed)) {
    clients_.fetch_sub(1, std::memory_order_relaxed);
    return false;
  }
  return true;
}

void ProxyServer::removeClient() {
  clients_.fetch_sub(1, std::memory_order_relaxed);
}

}  // namespace shardgate::proxy
