// The shardgate binary: command line, configuration, signals, and the proxy's lifetime.
#include <signal.h>
#include <uv.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "common/log.h"
#include "conf/config_loader.h"
#include "proxy/proxy_server.h"

namespace {

constexpr const char* kVersion = "0.1.0";
constexpr int kExitConfigError = 2;
// How long SIGTERM lets running transactions finish.
constexpr uint32_t kGracefulShutdownMs = 30000;

void printUsage(FILE* out) {
  std::fprintf(out,
               "usage: shardgate [--config] FILE      run the proxy\n"
               "       shardgate --check-config FILE  validate FILE and exit (0 ok, 2 invalid)\n"
               "       shardgate --version\n");
}

struct SignalContext {
  shardgate::proxy::ProxyServer* server;
  uv_signal_t term, interrupt, hangup;
  bool stopping = false;
};

int run(const std::string& config_path) {
  auto loaded = shardgate::conf::loadConfigFile(config_path);
  if (!loaded.ok()) {
    std::fprintf(stderr, "shardgate: %s\n", loaded.error().message.c_str());
    return kExitConfigError;
  }
  shardgate::conf::ConfigPtr config = *loaded;
  if (!shardgate::setupLogging(config->general.log_level)) {
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
  SignalContext signals{&server, {}, {}, {}};
  auto init = [&](uv_signal_t& handle, int signum, uv_signal_cb cb) {
    uv_signal_init(loop, &handle);
    handle.data = &signals;
    uv_signal_start(&handle, cb, signum);
  };
  auto stop = [](uv_signal_t* handle, int signum) {
    auto* ctx = static_cast<SignalContext*>(handle->data);
    bool graceful = signum == SIGTERM && !ctx->stopping;
    spdlog::info("event=signal signal={} action={}", strsignal(signum),
                 graceful ? "graceful_shutdown" : "immediate_shutdown");
    ctx->stopping = true;
    ctx->server->shutdown(graceful ? kGracefulShutdownMs : 0);
    uv_close(reinterpret_cast<uv_handle_t*>(&ctx->term), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&ctx->interrupt), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&ctx->hangup), nullptr);
  };
  init(signals.term, SIGTERM, stop);
  init(signals.interrupt, SIGINT, stop);
  init(signals.hangup, SIGHUP, [](uv_signal_t*, int) {
    spdlog::warn("event=reload_ignored reason=\"configuration reload is not implemented yet\"");
  });
  uv_run(loop, UV_RUN_DEFAULT);
  server.wait();
  spdlog::info("event=stopped");
  uv_loop_close(loop);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && (std::strcmp(argv[1], "--version") == 0 || std::strcmp(argv[1], "-V") == 0)) {
    std::printf("shardgate %s\n", kVersion);
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
    std::printf("%s: configuration is valid\n", argv[2]);
    return 0;
  }
  if (argc == 3 && std::strcmp(argv[1], "--config") == 0) return run(argv[2]);
  if (argc == 2 && argv[1][0] != '-') return run(argv[1]);
  printUsage(stderr);
  return kExitConfigError;
}
