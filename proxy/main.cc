// The shardgate binary: command line, configuration, signals, and the proxy's lifetime.
#include <signal.h>
#include <uv.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <thread>

#include "common/log.h"
#include "conf/config_loader.h"
#include "proxy/proxy_server.h"
#include "proxy/version.h"

namespace {

constexpr int kExitConfigError = 2;

void printUsage(FILE* out) {
  std::fprintf(out,
               "usage: shardgate [--config] FILE      run the proxy\n"
               "       shardgate --check-config FILE  validate FILE and exit (0 ok, 2 invalid)\n"
               "       shardgate --version\n");
}

struct SignalContext {
  shardgate::proxy::ProxyServer* server;
  uv_signal_t term, interrupt, hangup;
  uv_async_t shutdown_requested;  // the admin console's SHUTDOWN, from a worker thread
  uv_async_t workers_stopped;     // sent by `waiter` once every worker has finished
  std::thread waiter;
  bool stopping = false;
};

int run(const std::string& config_path) {
  auto loaded = shardgate::conf::loadConfigFile(config_path);
  if (!loaded.ok()) {
    std::fprintf(stderr, "shardgate: %s\n", loaded.error().message.c_str());
    return kExitConfigError;
  }
  shardgate::conf::ConfigPtr config = *loaded;
  auto log_format = config->general.log_format == shardgate::conf::LogFormat::kJson
                        ? shardgate::LogLineFormat::kJson
                        : shardgate::LogLineFormat::kText;
  if (!shardgate::setupLogging(config->general.log_level, log_format)) {
    std::fprintf(stderr, "shardgate: unknown log_level\n");
    return kExitConfigError;
  }
  signal(SIGPIPE, SIG_IGN);

  shardgate::proxy::ProxyServer server(config);
  shardgate::Status started = server.start();
  if (!started.ok()) {
    spdlog::critical("event=start_failed error=\"{}\"", started.error().message);
    return 1;
  }

  // The main thread only watches signals; the workers do the work.
  uv_loop_t* loop = uv_default_loop();
  SignalContext signals{&server, {}, {}, {}, {}, {}, {}};
  auto init = [&](uv_signal_t& handle, int signum, uv_signal_cb cb) {
    uv_signal_init(loop, &handle);
    handle.data = &signals;
    uv_signal_start(&handle, cb, signum);
  };
  // SIGTERM (and SHUTDOWN): stop accepting, let open transactions finish up to
  // general.shutdown_timeout, then exit 0. SIGINT, or a second SIGTERM: close at once.
  auto stop = [](SignalContext* ctx, bool graceful, const char* cause) {
    graceful = graceful && !ctx->stopping;
    uint32_t timeout_ms = graceful ? ctx->server->currentConfig()->general.shutdown_timeout_ms : 0;
    spdlog::info("event=shutdown cause={} mode={} timeout_ms={}", cause,
                 graceful ? "graceful" : "immediate", timeout_ms);
    ctx->stopping = true;
    ctx->server->shutdown(timeout_ms);
    if (!ctx->waiter.joinable()) {
      // The signal handlers stay (a second signal stops at once) until the workers are done.
      ctx->waiter = std::thread([ctx] {
        ctx->server->wait();
        uv_async_send(&ctx->workers_stopped);
      });
    }
  };
  static void (*stop_fn)(SignalContext*, bool, const char*) = stop;
  init(signals.term, SIGTERM, [](uv_signal_t* handle, int) {
    stop_fn(static_cast<SignalContext*>(handle->data), true, "SIGTERM");
  });
  init(signals.interrupt, SIGINT, [](uv_signal_t* handle, int) {
    stop_fn(static_cast<SignalContext*>(handle->data), false, "SIGINT");
  });
  init(signals.hangup, SIGHUP, [](uv_signal_t* handle, int) {
    auto* ctx = static_cast<SignalContext*>(handle->data);
    if (!ctx->stopping) (void)ctx->server->reload();  // logs the outcome itself
  });
  uv_async_init(loop, &signals.shutdown_requested, [](uv_async_t* handle) {
    stop_fn(static_cast<SignalContext*>(handle->data), true, "admin_console");
  });
  signals.shutdown_requested.data = &signals;
  uv_async_init(loop, &signals.workers_stopped, [](uv_async_t* handle) {
    auto* ctx = static_cast<SignalContext*>(handle->data);
    for (uv_signal_t* signal : {&ctx->term, &ctx->interrupt, &ctx->hangup}) {
      uv_close(reinterpret_cast<uv_handle_t*>(signal), nullptr);
    }
    uv_close(reinterpret_cast<uv_handle_t*>(&ctx->shutdown_requested), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(handle), nullptr);
  });
  signals.workers_stopped.data = &signals;
  server.setShutdownHandler([&signals] { uv_async_send(&signals.shutdown_requested); });
  uv_run(loop, UV_RUN_DEFAULT);
  if (signals.waiter.joinable()) signals.waiter.join();
  server.wait();
  spdlog::info("event=stopped");
  uv_loop_close(loop);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && (std::strcmp(argv[1], "--version") == 0 || std::strcmp(argv[1], "-V") == 0)) {
    std::printf("shardgate %s\n", std::string(shardgate::kShardgateVersion).c_str());
    return 0;
  }
  if (argc == 2 && (std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0)) {
    printUsage(stdout);
    return 0;
  }
  if (argc == 3 && std::strcmp(argv[1], "--check-config") == 0) {
    auto loaded = shardgate::conf::loadConfigFile(argv[2]);
    if (!loaded.ok()) {
      std::fprintf(stderr, "shardgate: %s\n", loaded.error().message.c_str());
      return kExitConfigError;
    }
    auto tls = shardgate::proxy::ProxyServer::loadTls((*loaded)->general);
    if (!tls.ok()) {
      std::fprintf(stderr, "shardgate: %s\n", tls.error().message.c_str());
      return kExitConfigError;
    }
    std::printf("%s: configuration is valid\n", argv[2]);
    return 0;
  }
  if (argc == 3 && std::strcmp(argv[1], "--config") == 0) return run(argv[2]);
  if (argc == 2 && argv[1][0] != '-') return run(argv[1]);
  printUsage(stderr);
  return kExitConfigError;
}
