// FakeShard: a Postgres look-alike for the session fuzzer. Its own byte-level encoder and parser
// (not shardgate's codec), so that a codec bug cannot hide itself on both sides.
#include "tests/fuzz/fake_shard.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/sql_text.h"

namespace shardgate::fuzz {

namespace {

constexpr int32_t kProtocol30 = 196608;
constexpr int32_t kCancelCode = 80877102;
constexpr int32_t kSslCode = 80877103;
constexpr int32_t kGssCode = 80877104;
constexpr uint32_t kMaxMessage = 1u << 26;

// The settings Postgres 15 reports with ParameterStatus, with the values a fresh session has.
const std::map<std::string, std::string>& reportedDefaults() {
  static const std::map<std::string, std::string> defaults = {
      {"application_name", ""},
      {"client_encoding", "UTF8"},
      {"DateStyle", "ISO, MDY"},
      {"default_transaction_read_only", "off"},
      {"in_hot_standby", "off"},
      {"integer_datetimes", "on"},
      {"IntervalStyle", "postgres"},
      {"is_superuser", "on"},
      {"server_encoding", "UTF8"},
      {"server_version", "15.0"},
      {"session_authorization", "postgres"},
      {"standard_conforming_strings", "on"},
      {"TimeZone", "UTC"},
  };
  return defaults;
}

std::string upper(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool containsWord(std::string_view haystack, std::string_view needle) {
  return lower(haystack).find(needle) != std::string::npos;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

// Splits off the first whitespace-delimited word.
std::string_view firstWord(std::string_view s, std::string_view* rest = nullptr) {
  s = trim(s);
  size_t end = 0;
  while (end < s.size() && !std::isspace(static_cast<unsigned char>(s[end])) && s[end] != ';' &&
         s[end] != '(') {
    ++end;
  }
  if (rest) *rest = trim(s.substr(end));
  return s.substr(0, end);
}

uint32_t load32(const char* p) {
  return (static_cast<uint32_t>(static_cast<uint8_t>(p[0])) << 24) |
         (static_cast<uint32_t>(static_cast<uint8_t>(p[1])) << 16) |
         (static_cast<uint32_t>(static_cast<uint8_t>(p[2])) << 8) |
         static_cast<uint32_t>(static_cast<uint8_t>(p[3]));
}

void put32(std::string& out, uint32_t v) {
  out += static_cast<char>(v >> 24);
  out += static_cast<char>(v >> 16);
  out += static_cast<char>(v >> 8);
  out += static_cast<char>(v);
}

void put16(std::string& out, uint16_t v) {
  out += static_cast<char>(v >> 8);
  out += static_cast<char>(v);
}

void putCString(std::string& out, std::string_view s) {
  out.append(s);
  out += '\0';
}

// Reads NUL-terminated strings and integers; every read fails cleanly at the end of the payload.
struct Reader {
  std::string_view data;
  size_t pos = 0;
  bool cstring(std::string_view& out) {
    size_t nul = data.find('\0', pos);
    if (nul == std::string_view::npos) return false;
    out = data.substr(pos, nul - pos);
    pos = nul + 1;
    return true;
  }
  bool int16(int16_t& out) {
    if (data.size() - pos < 2) return false;
    out = static_cast<int16_t>((static_cast<uint8_t>(data[pos]) << 8) |
                               static_cast<uint8_t>(data[pos + 1]));
    pos += 2;
    return true;
  }
  bool int32(int32_t& out) {
    if (data.size() - pos < 4) return false;
    out = static_cast<int32_t>(load32(data.data() + pos));
    pos += 4;
    return true;
  }
};

// What a statement the fake understands produces.
enum class Kind { kRows, kCommand, kCopyIn, kCopyOut, kEmpty };

Kind kindOf(std::string_view sql) {
  std::string word = upper(firstWord(sql));
  if (word.empty()) return Kind::kEmpty;
  if (word == "SELECT" || word == "VALUES" || word == "SHOW" || word == "TABLE" || word == "WITH" ||
      word == "FETCH") {
    return Kind::kRows;
  }
  if (word == "COPY") {
    std::string u = upper(sql);
    if (u.find("FROM STDIN") != std::string::npos) return Kind::kCopyIn;
    if (u.find("TO STDOUT") != std::string::npos) return Kind::kCopyOut;
  }
  return Kind::kCommand;
}

}  // namespace

// ---- the listening socket -------------------------------------------------------------------

FakeShardListener& FakeShardListener::instance() {
  static FakeShardListener listener;
  return listener;
}

FakeShardListener::FakeShardListener() {
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  struct sockaddr_in addr {};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (fd_ < 0 || ::bind(fd_, reinterpret_cast<struct sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::listen(fd_, 128) != 0 ||
      ::getsockname(fd_, reinterpret_cast<struct sockaddr*>(&addr), &len) != 0) {
    std::perror("fake shard: cannot listen on 127.0.0.1");
    std::abort();
  }
  port_ = ntohs(addr.sin_port);
}

void FakeShardListener::drainBacklog() {
  for (;;) {
    int fd = ::accept4(fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;
    ::close(fd);
  }
}

// ---- one server-side connection -------------------------------------------------------------

class FakeShardConnection {
 public:
  explicit FakeShardConnection(FakeShard& shard) : shard_(shard) {
    uv_tcp_init(shard_.loop_, &tcp_);
    tcp_.data = this;
  }

  uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&tcp_); }
  const uv_handle_t* handle() const { return reinterpret_cast<const uv_handle_t*>(&tcp_); }
  bool skippingUntilSync() const { return skip_till_sync_ && !closing_; }

  void start() {
    uv_unref(reinterpret_cast<uv_handle_t*>(&tcp_));
    uv_read_start(
        stream(),
        [](uv_handle_t*, size_t suggested, uv_buf_t* buf) {
          buf->base = static_cast<char*>(std::malloc(suggested));
          buf->len = buf->base ? suggested : 0;
        },
        [](uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
          auto* self = static_cast<FakeShardConnection*>(s->data);
          if (nread > 0) self->onBytes(std::string_view(buf->base, static_cast<size_t>(nread)));
          std::free(buf->base);
          if (nread < 0) self->close();
        });
  }

  void close() {
    if (closing_) return;
    closing_ = true;
    uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), [](uv_handle_t* h) {
      auto* self = static_cast<FakeShardConnection*>(h->data);
      self->shard_.connections_.erase(self);
      delete self;
    });
  }

 private:
  enum class Phase { kStartup, kPassword, kReady, kCopyIn };

  struct WriteRequest {
    uv_write_t req;
    std::string data;
    FakeShardConnection* owner;
  };

  void onBytes(std::string_view bytes) {
    if (closing_) return;
    in_.append(bytes);
    size_t used = 0;
    while (!closing_ && !close_after_flush_) {
      std::string_view rest = std::string_view(in_).substr(used);
      if (phase_ == Phase::kStartup) {
        if (rest.size() < 4) break;
        uint32_t length = load32(rest.data());
        if (length < 8 || length > 10000) {
          close();
          return;
        }
        if (rest.size() < length) break;
        used += length;
        onStartupPacket(rest.substr(4, length - 4));
        continue;
      }
      if (rest.size() < 5) break;
      uint32_t length = load32(rest.data() + 1);
      if (length < 4 || length > kMaxMessage) {
        close();
        return;
      }
      if (rest.size() < size_t{1} + length) break;
      used += size_t{1} + length;
      onMessage(rest[0], rest.substr(5, length - 4));
    }
    if (closing_) return;
    in_.erase(0, used);
    flush();
  }

  // ---- output ----

  void message(char type, std::string_view payload) {
    out_ += type;
    put32(out_, static_cast<uint32_t>(payload.size() + 4));
    out_.append(payload);
  }
  void error(std::string_view severity, std::string_view code, std::string_view text) {
    std::string p;
    p += 'S';
    putCString(p, severity);
    p += 'V';
    putCString(p, severity);
    p += 'C';
    putCString(p, code);
    p += 'M';
    putCString(p, text);
    p += '\0';
    message('E', p);
  }
  // An ERROR in a statement: the transaction fails, the extended protocol skips until Sync.
  void statementError(std::string_view code, std::string_view text, bool extended) {
    error("ERROR", code, text);
    if (txn_ == 'T') txn_ = 'E';
    if (extended) skip_till_sync_ = true;
  }
  // Postgres reads payloads with pq_getmsg*, which raise an ERROR (not FATAL) when one is short.
  void malformed() { statementError("08P01", "insufficient data left in message", true); }
  void fatal(std::string_view code, std::string_view text) {
    error("FATAL", code, text);
    close_after_flush_ = true;
  }
  void notice(std::string_view text) {
    std::string p;
    p += 'S';
    putCString(p, "NOTICE");
    p += 'C';
    putCString(p, "00000");
    p += 'M';
    putCString(p, text);
    p += '\0';
    message('N', p);
  }
  void parameterStatus(std::string_view name, std::string_view value) {
    std::string p;
    putCString(p, name);
    putCString(p, value);
    message('S', p);
  }
  void readyForQuery() {
    for (const std::string& channel : notifications_) {
      std::string p;
      put32(p, 4242);
      putCString(p, channel);
      putCString(p, "payload");
      message('A', p);
    }
    notifications_.clear();
    message('Z', std::string(1, txn_));
  }
  void commandComplete(std::string_view tag) {
    std::string p;
    putCString(p, tag);
    message('C', p);
  }
  void rowDescription() {
    std::string p;
    put16(p, 1);
    putCString(p, "?column?");
    put32(p, 0);   // table oid
    put16(p, 0);   // column number
    put32(p, 23);  // int4
    put16(p, 4);
    put32(p, 0xFFFFFFFFu);  // typmod -1
    put16(p, 0);            // text
    message('T', p);
  }
  void dataRow() {
    std::string p;
    put16(p, 1);
    put32(p, 1);
    p += '1';
    message('D', p);
  }
  // shardgate reading the database's collation (before a merge): pg_database's row.
  static bool readsCollation(std::string_view sql) {
    return sql.find("pg_database") != std::string_view::npos;
  }
  // The columns of `sql`'s rows: the collation read's, or one int4 for every other query.
  void rowDescriptionFor(std::string_view sql) {
    if (!readsCollation(sql)) {
      rowDescription();
      return;
    }
    std::string p;
    put16(p, 3);
    for (const char* name : {"datcollate", "?column?", "?column?"}) {
      putCString(p, name);
      put32(p, 0);
      put16(p, 0);
      put32(p, 25);  // text
      put16(p, 0xFFFF);
      put32(p, 0xFFFFFFFFu);
      put16(p, 0);
    }
    message('T', p);
  }
  // datcollate, datlocprovider, daticulocale: "C", libc, NULL.
  void databaseCollationRow() {
    std::string row;
    put16(row, 3);
    put32(row, 1);
    row += 'C';
    put32(row, 1);
    row += 'c';
    put32(row, 0xFFFFFFFFu);  // NULL
    message('D', row);
    commandComplete("SELECT 1");
  }
  void copyResponse(char type) {
    std::string p;
    p += '\0';
    put16(p, 1);
    put16(p, 0);
    message(type, p);
  }

  void flush() {
    if (closing_) return;
    if (write_in_flight_ || out_.empty()) {
      if (!write_in_flight_ && close_after_flush_) close();
      return;
    }
    uv_buf_t buf = uv_buf_init(out_.data(), static_cast<unsigned>(out_.size()));
    int written = uv_try_write(stream(), &buf, 1);
    if (written > 0) out_.erase(0, static_cast<size_t>(written));
    if (written < 0 && written != UV_EAGAIN) {
      close();
      return;
    }
    if (out_.empty()) {
      if (close_after_flush_) close();
      return;
    }
    auto* request = new WriteRequest{{}, std::move(out_), this};
    out_.clear();
    request->req.data = request;
    write_in_flight_ = true;
    uv_buf_t rest = uv_buf_init(request->data.data(), static_cast<unsigned>(request->data.size()));
    int rc = uv_write(&request->req, stream(), &rest, 1, [](uv_write_t* req, int status) {
      auto* request = static_cast<WriteRequest*>(req->data);
      FakeShardConnection* self = request->owner;
      delete request;
      if (status == UV_ECANCELED) return;  // closing: the connection goes away next
      self->write_in_flight_ = false;
      if (status < 0) {
        self->close();
        return;
      }
      self->flush();
    });
    if (rc < 0) {
      delete request;
      write_in_flight_ = false;
      close();
    }
  }

  // ---- startup ----

  void onStartupPacket(std::string_view body) {
    int32_t code = static_cast<int32_t>(load32(body.data()));
    if (code == kCancelCode) {
      close();  // Postgres reads the key and hangs up without a reply
      return;
    }
    if (code == kSslCode || code == kGssCode) {
      out_ += 'N';
      return;
    }
    if (code != kProtocol30) {
      fatal("0A000", "unsupported frontend protocol");
      return;
    }
    if (shard_.options_.refuse_login) {
      fatal("28000", "fake shard refuses the login");
      return;
    }
    if (shard_.options_.ask_password) {
      std::string p;
      put32(p, 3);
      message('R', p);
      phase_ = Phase::kPassword;
      return;
    }
    loggedIn();
  }

  void loggedIn() {
    std::string ok;
    put32(ok, 0);
    message('R', ok);
    settings_ = reportedDefaults();
    for (const auto& [name, value] : settings_) parameterStatus(name, value);
    std::string key;
    put32(key, 4242);
    put32(key, 0x5eC2E7);
    message('K', key);
    phase_ = Phase::kReady;
    readyForQuery();
  }

  // ---- messages after startup ----

  void onMessage(char type, std::string_view payload) {
    if (type == 'X') {
      close();
      return;
    }
    if (phase_ == Phase::kPassword) {
      if (type != 'p') {
        fatal("08P01", "expected password response");
        return;
      }
      loggedIn();
      return;
    }
    if (phase_ == Phase::kCopyIn) {
      onCopyMessage(type, payload);
      return;
    }
    // Postgres: a Sync ends skipping; everything else, Query included, is dropped until then.
    if (type == 'S') {
      skip_till_sync_ = false;
      readyForQuery();
      return;
    }
    if (skip_till_sync_) return;
    switch (type) {
      case 'Q': {
        Reader r{payload};
        std::string_view sql;
        if (!r.cstring(sql)) {
          statementError("08P01", "invalid string in message", /*extended=*/false);
          readyForQuery();
          return;
        }
        simpleQuery(sql);
        return;
      }
      case 'P':
        return onParse(payload);
      case 'B':
        return onBind(payload);
      case 'D':
        return onDescribe(payload);
      case 'E':
        return onExecute(payload);
      case 'C':
        return onClose(payload);
      case 'H':
        return;
      case 'F': {
        std::string p;
        put32(p, 0xFFFFFFFFu);  // NULL result
        message('V', p);
        readyForQuery();
        return;
      }
      case 'd':
      case 'c':
      case 'f':
        return;  // Postgres ignores COPY messages outside COPY
      default: {
        char text[64];
        std::snprintf(text, sizeof text, "invalid frontend message type %d",
                      static_cast<int>(static_cast<unsigned char>(type)));
        fatal("08P01", text);
        return;
      }
    }
  }

  void simpleQuery(std::string_view sql) {
    std::string_view rest = sql;
    bool any = false;
    while (!rest.empty()) {
      // The ';' that ends the statement: not one inside a literal or comment, as Postgres splits.
      size_t semi = 0;
      while (semi < rest.size() && rest[semi] != ';') {
        const size_t next = skipSqlNonCode(rest, semi);
        semi = next != semi ? next : semi + 1;
      }
      if (semi >= rest.size()) semi = std::string_view::npos;
      std::string_view statement = trim(rest.substr(0, semi));
      rest = semi == std::string_view::npos ? std::string_view() : rest.substr(semi + 1);
      if (statement.empty()) continue;
      any = true;
      Kind kind = kindOf(statement);
      if (!runStatement(statement, /*extended=*/false, /*max_rows=*/0)) {
        if (closing_ || close_after_flush_) return;  // the connection is going away
        break;
      }
      if (kind == Kind::kCopyIn && phase_ == Phase::kCopyIn) {
        return;  // the rest of the string runs after the copy (not modelled: dropped)
      }
    }
    if (!any) message('I', {});
    readyForQuery();
  }

  // A DO block that catches every error (shardgate's guarded RESET): what runs inside it cannot
  // fail the statement.
  static bool ignoresItsFailure(const std::string& word, std::string_view sql) {
    return word == "DO" && sql.find("EXCEPTION WHEN OTHERS THEN NULL") != std::string_view::npos;
  }

  // Runs one statement; false if it failed (the caller stops the query string).
  bool runStatement(std::string_view sql, bool extended, int32_t max_rows) {
    shard_.statements_run_.emplace_back(sql);
    std::string word = upper(firstWord(sql));
    std::string_view after_word;
    firstWord(sql, &after_word);
    // ROLLBACK TO [SAVEPOINT] name: back to a savepoint, the block goes on (and is usable again).
    const bool rollback_to = word == "ROLLBACK" && upper(firstWord(after_word)) == "TO";
    bool ends_block = !rollback_to &&
                      (word == "COMMIT" || word == "END" || word == "ROLLBACK" || word == "ABORT");
    if (txn_ == 'E' && !ends_block && !rollback_to) {
      statementError("25P02",
                     "current transaction is aborted, commands ignored until end of transaction "
                     "block",
                     extended);
      return false;
    }
    if (containsWord(sql, "terminate")) {
      // pg_terminate_backend(), a shard shutting down: FATAL, then the connection closes.
      fatal("57P01", "terminating connection due to administrator command");
      return false;
    }
    if (containsWord(sql, "crash")) {
      // The shard dies: nothing more is sent, not even what was waiting to be written.
      out_.clear();
      close();
      return false;
    }
    if (containsWord(sql, "fail") && !ignoresItsFailure(word, sql)) {
      statementError("42000", "fake shard: the statement failed as asked", extended);
      return false;
    }
    if (containsWord(sql, "notice")) notice("fake shard: a notice as asked");
    switch (kindOf(sql)) {
      case Kind::kEmpty:
        message('I', {});
        return true;
      case Kind::kRows: {
        if (!extended) rowDescriptionFor(sql);
        if (readsCollation(sql)) {
          databaseCollationRow();
          return true;
        }
        int rows = 2;
        if (max_rows > 0 && max_rows <= rows) {
          for (int i = 0; i < max_rows; ++i) dataRow();
          message('s', {});  // PortalSuspended
          return true;
        }
        for (int i = 0; i < rows; ++i) dataRow();
        commandComplete(word == "SHOW" ? "SHOW" : "SELECT 2");
        return true;
      }
      case Kind::kCopyIn:
        copyResponse('G');
        phase_ = Phase::kCopyIn;
        copy_extended_ = extended;
        copy_rows_ = 0;
        return true;
      case Kind::kCopyOut:
        copyResponse('H');
        message('d', "1\n");
        message('d', "2\n");
        message('c', {});
        commandComplete("COPY 2");
        return true;
      case Kind::kCommand:
        break;
    }
    std::string_view rest;
    firstWord(sql, &rest);
    if (rollback_to) {
      if (txn_ == 'E') txn_ = 'T';
      commandComplete("ROLLBACK");
    } else if (word == "BEGIN" || word == "START") {
      if (txn_ == 'T') notice("there is already a transaction in progress");
      txn_ = 'T';
      commandComplete(word == "BEGIN" ? "BEGIN" : "START TRANSACTION");
    } else if (ends_block) {
      bool rollback = word == "ROLLBACK" || word == "ABORT" || txn_ == 'E';
      txn_ = 'I';
      commandComplete(rollback ? "ROLLBACK" : "COMMIT");
    } else if (word == "SET") {
      set(rest);
      commandComplete("SET");
    } else if (word == "RESET") {
      std::string what = lower(firstWord(rest));
      for (const auto& [name, value] : reportedDefaults()) {
        if (what == "all" || lower(name) == what) report(name, value);
      }
      commandComplete("RESET");
    } else if (word == "DISCARD") {
      std::string what = upper(firstWord(rest));
      if (what == "ALL") {
        for (const auto& [name, value] : reportedDefaults()) report(name, value);
        statements_.clear();
        portals_.clear();
      }
      commandComplete("DISCARD " + what);
    } else if (word == "DEALLOCATE") {
      commandComplete(upper(firstWord(rest)) == "ALL" ? "DEALLOCATE ALL" : "DEALLOCATE");
    } else if (word == "NOTIFY") {
      notifications_.push_back(std::string(firstWord(rest)));
      commandComplete("NOTIFY");
    } else if (word == "INSERT") {
      commandComplete("INSERT 0 1");
    } else if (word == "UPDATE" || word == "DELETE" || word == "MERGE") {
      commandComplete(word + " 1");
    } else {
      commandComplete(word);
    }
    return true;
  }

  // SET [SESSION|LOCAL] name {=|TO} value: reported settings come back as ParameterStatus.
  void set(std::string_view rest) {
    std::string_view name = firstWord(rest, &rest);
    std::string scope = lower(name);
    if (scope == "session" || scope == "local") name = firstWord(rest, &rest);
    size_t eq = name.find('=');
    std::string_view value;
    if (eq != std::string_view::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    } else {
      std::string_view op = firstWord(rest, &value);
      if (op != "=" && lower(op) != "to") {
        if (!op.empty() && op[0] == '=') value = trim(rest.substr(1));
      }
    }
    value = trim(value);
    if (value.size() >= 2 && value.front() == '\'' && value.back() == '\'') {
      value = value.substr(1, value.size() - 2);
    }
    for (const auto& [canonical, initial] : reportedDefaults()) {
      if (lower(canonical) == lower(name)) report(canonical, value);
    }
  }

  void report(const std::string& name, std::string_view value) {
    auto it = settings_.find(name);
    if (it != settings_.end() && it->second == value) return;
    settings_[name] = std::string(value);
    parameterStatus(name, value);
  }

  void onCopyMessage(char type, std::string_view payload) {
    auto end = [&] {
      phase_ = Phase::kReady;
      if (!copy_extended_) readyForQuery();
    };
    switch (type) {
      case 'd':
        ++copy_rows_;
        return;
      case 'c':
        commandComplete("COPY " + std::to_string(copy_rows_));
        end();
        return;
      case 'f': {
        Reader r{payload};
        std::string_view why;
        r.cstring(why);
        statementError("57014", "COPY from stdin failed: " + std::string(why), copy_extended_);
        end();
        return;
      }
      case 'H':
      case 'S':
        return;  // Postgres ignores Flush and Sync during COPY IN
      default: {
        char text[80];
        std::snprintf(text, sizeof text, "unexpected message type 0x%02X during COPY from stdin",
                      static_cast<unsigned>(static_cast<unsigned char>(type)));
        statementError("08P01", text, copy_extended_);
        end();
        return;
      }
    }
  }

  // ---- extended query ----

  void onParse(std::string_view payload) {
    Reader r{payload};
    std::string_view name, query;
    int16_t count = 0;
    if (!r.cstring(name) || !r.cstring(query) || !r.int16(count) || count < 0) {
      malformed();
      return;
    }
    for (int16_t i = 0; i < count; ++i) {
      int32_t oid;
      if (!r.int32(oid)) {
        malformed();
        return;
      }
    }
    if (txn_ == 'E') {
      statementError("25P02", "current transaction is aborted", true);
      return;
    }
    if (containsWord(query, "parsefail")) {
      statementError("42601", "fake shard: syntax error as asked", true);
      return;
    }
    std::string key(name);
    if (!key.empty() && statements_.count(key)) {
      statementError("42P05", "prepared statement \"" + key + "\" already exists", true);
      return;
    }
    statements_[key] = Statement{std::string(query), count};
    message('1', {});
  }

  void onBind(std::string_view payload) {
    Reader r{payload};
    std::string_view portal, statement;
    if (!r.cstring(portal) || !r.cstring(statement)) {
      malformed();
      return;
    }
    auto it = statements_.find(std::string(statement));
    if (it == statements_.end()) {
      statementError("26000",
                     "prepared statement \"" + std::string(statement) + "\" does not exist", true);
      return;
    }
    portals_[std::string(portal)] = it->second.query;
    message('2', {});
  }

  void onDescribe(std::string_view payload) {
    if (payload.size() < 2 || payload.back() != '\0') {
      malformed();
      return;
    }
    char kind = payload[0];
    std::string name(payload.substr(1, payload.size() - 2));
    if (kind == 'S') {
      auto it = statements_.find(name);
      if (it == statements_.end()) {
        statementError("26000", "prepared statement \"" + name + "\" does not exist", true);
        return;
      }
      std::string p;
      put16(p, static_cast<uint16_t>(it->second.params));
      for (int i = 0; i < it->second.params; ++i) put32(p, 23);
      message('t', p);
      if (kindOf(it->second.query) == Kind::kRows) {
        rowDescriptionFor(it->second.query);
      } else {
        message('n', {});
      }
    } else if (kind == 'P') {
      auto it = portals_.find(name);
      if (it == portals_.end()) {
        statementError("34000", "portal \"" + name + "\" does not exist", true);
        return;
      }
      if (kindOf(it->second) == Kind::kRows) {
        rowDescriptionFor(it->second);
      } else {
        message('n', {});
      }
    } else {
      statementError("08P01", "invalid DESCRIBE message subtype", true);
    }
  }

  void onExecute(std::string_view payload) {
    Reader r{payload};
    std::string_view portal;
    int32_t max_rows = 0;
    if (!r.cstring(portal) || !r.int32(max_rows)) {
      malformed();
      return;
    }
    auto it = portals_.find(std::string(portal));
    if (it == portals_.end()) {
      statementError("34000", "portal \"" + std::string(portal) + "\" does not exist", true);
      return;
    }
    std::string query = it->second;
    runStatement(trim(query), /*extended=*/true, max_rows);
  }

  void onClose(std::string_view payload) {
    if (payload.size() < 2 || payload.back() != '\0' || (payload[0] != 'S' && payload[0] != 'P')) {
      malformed();
      return;
    }
    std::string name(payload.substr(1, payload.size() - 2));
    if (payload[0] == 'S') {
      statements_.erase(name);
    } else {
      portals_.erase(name);
    }
    message('3', {});
  }

  struct Statement {
    std::string query;
    int params = 0;
  };

  FakeShard& shard_;
  uv_tcp_t tcp_;
  bool closing_ = false;
  bool close_after_flush_ = false;
  bool write_in_flight_ = false;
  Phase phase_ = Phase::kStartup;
  std::string in_;
  std::string out_;
  char txn_ = 'I';
  bool skip_till_sync_ = false;
  bool copy_extended_ = false;
  int copy_rows_ = 0;
  std::map<std::string, std::string> settings_;
  std::map<std::string, Statement> statements_;
  std::map<std::string, std::string> portals_;
  std::vector<std::string> notifications_;
};

// ---- the shard ------------------------------------------------------------------------------

FakeShard::FakeShard(uv_loop_t* loop, int listen_fd, FakeShardOptions options)
    : loop_(loop), options_(options) {
  uv_tcp_init(loop_, &listener_);
  listener_.data = this;
  listener_open_ = true;  // the handle exists from here on and must be closed
  int fd = ::dup(listen_fd);
  if (fd < 0) return;
  if (uv_tcp_open(&listener_, fd) != 0) {
    ::close(fd);
    return;
  }
  if (uv_listen(reinterpret_cast<uv_stream_t*>(&listener_), 128, &FakeShard::onConnection) != 0) {
    return;
  }
  uv_unref(reinterpret_cast<uv_handle_t*>(&listener_));
  listening_ = true;
}

FakeShard::~FakeShard() {
  // Only reachable without close() + loop run when the caller gave up on a stuck loop; the
  // connections are then deliberately leaked rather than freed under libuv's feet.
}

void FakeShard::onConnection(uv_stream_t* server, int status) {
  auto* self = static_cast<FakeShard*>(server->data);
  if (status < 0 || !self->listening_) return;
  auto* connection = new FakeShardConnection(*self);
  if (uv_accept(server, connection->stream()) != 0) {
    self->connections_.insert(connection);
    connection->close();
    return;
  }
  self->connections_.insert(connection);
  connection->start();
}

size_t FakeShard::connectionsSkippingUntilSync() const {
  size_t n = 0;
  for (const FakeShardConnection* c : connections_) n += c->skippingUntilSync() ? 1 : 0;
  return n;
}

bool FakeShard::owns(const uv_handle_t* handle) const {
  if (handle == reinterpret_cast<const uv_handle_t*>(&listener_)) return true;
  for (const FakeShardConnection* c : connections_) {
    if (c->handle() == handle) return true;
  }
  return false;
}

void FakeShard::close() {
  listening_ = false;
  if (listener_open_ && !uv_is_closing(reinterpret_cast<uv_handle_t*>(&listener_))) {
    uv_close(reinterpret_cast<uv_handle_t*>(&listener_),
             [](uv_handle_t* h) { static_cast<FakeShard*>(h->data)->listener_open_ = false; });
  }
  std::vector<FakeShardConnection*> open(connections_.begin(), connections_.end());
  for (FakeShardConnection* c : open) c->close();
}

}  // namespace shardgate::fuzz
