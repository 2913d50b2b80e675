// An in-process stand-in for a Postgres 15 shard, served on the fuzzed worker's own loop, so that
// fuzzed sessions get past login and exercise the ready-state message forwarding.
#pragma once

#include <uv.h>

#include <cstdint>
#include <set>
#include <string>
#include <vector>

namespace shardgate::fuzz {

// The listening socket on 127.0.0.1, opened once per process: its port goes into the config,
// which is parsed once. Each run serves it on that run's loop through a FakeShard.
class FakeShardListener {
 public:
  // Aborts if no socket can be opened: the fuzzers cannot run without it.
  static FakeShardListener& instance();

  uint16_t port() const { return port_; }
  int fd() const { return fd_; }
  // Accepts and closes connections a run left in the backlog, so that the next run starts clean.
  void drainBacklog();

 private:
  FakeShardListener();
  int fd_ = -1;
  uint16_t port_ = 0;
};

struct FakeShardOptions {
  bool ask_password = false;  // request a cleartext password before AuthenticationOk
  bool refuse_login = false;  // answer every startup packet with a FATAL error
};

class FakeShardConnection;

// Answers what Postgres would, closely enough for the proxy: login, simple and extended query
// (including skip-until-Sync after an error), COPY in and out, transaction status, reported
// settings. Statements containing "fail" fail (but for a DO block that catches every error);
// "notice" adds a NoticeResponse. Its handles are
// unreferenced, so the loop runs for as long as shardgate's own handles need it to.
class FakeShard {
 public:
  FakeShard(uv_loop_t* loop, int listen_fd, FakeShardOptions options);
  ~FakeShard();
  FakeShard(const FakeShard&) = delete;
  FakeShard& operator=(const FakeShard&) = delete;

  bool listening() const { return listening_; }
  const FakeShardOptions& options() const { return options_; }
  // Closes the listener and every connection; the loop must then run until closed().
  void close();
  bool closed() const { return !listener_open_ && connections_.empty(); }
  // Every statement the shard ran (simple query or Execute), in order, internal ones included.
  const std::vector<std::string>& statementsRun() const { return statements_run_; }
  // Connections skipping messages until a Sync (after an error in the extended protocol).
  size_t connectionsSkippingUntilSync() const;
  // Whether `handle` is one of the fake shard's own (its listener or a connection).
  bool owns(const uv_handle_t* handle) const;

 private:
  friend class FakeShardConnection;
  static void onConnection(uv_stream_t* server, int status);

  uv_loop_t* loop_;
  FakeShardOptions options_;
  uv_tcp_t listener_;
  bool listening_ = false;
  bool listener_open_ = false;  // initialised and its close callback not yet run
  std::set<FakeShardConnection*> connections_;
  std::vector<std::string> statements_run_;
};

}  // namespace shardgate::fuzz
