// Messages the frontend (client) sends: one struct each, with decode (payload -> struct) and
// encode.
//
// decode() takes Frame::payload (the bytes after the length word), validates it completely and
// returns 08P01 "invalid <name> message" on any malformed input; it never reads out of bounds.
// Startup-phase decode errors are FATAL (the connection cannot go on), the others are ERROR.
// encode() appends the complete framed message (type byte, length word, payload) to `out`.
// CopyData and CopyDone are the same in both directions and are used by the backend side too.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "common/result.h"
#include "proxy/wire/protocol.h"

namespace shardgate::wire {

// ---- startup phase (untyped packets) ----

struct StartupMessage {
  int32_t protocol_version = kProtocolVersion30;
  std::vector<std::pair<std::string, std::string>> parameters;  // in the order sent

  // The value of a parameter, or nullptr. If a name is repeated the last one wins, as in Postgres.
  const std::string* get(std::string_view name) const;

  // Requires protocol major version 3 (any minor) and the final NUL terminator.
  static Result<StartupMessage> decode(std::string_view payload);
  void encode(std::string& out) const;
  bool operator==(const StartupMessage&) const = default;
};

struct SslRequest {
  static Result<SslRequest> decode(std::string_view payload);
  void encode(std::string& out) const;
  bool operator==(const SslRequest&) const = default;
};

struct GssEncRequest {
  static Result<GssEncRequest> decode(std::string_view payload);
  void encode(std::string& out) const;
  bool operator==(const GssEncRequest&) const = default;
};

struct CancelRequest {
  int32_t process_id = 0;
  int32_t secret_key = 0;

  static Result<CancelRequest> decode(std::string_view payload);
  void encode(std::string& out) const;
  bool operator==(const CancelRequest&) const = default;
};

using StartupPacket = std::variant<StartupMessage, SslRequest, GssEncRequest, CancelRequest>;

// Decodes any startup-phase packet by its request code. A protocol version other than 3.x is
// FATAL 0A000 "unsupported frontend protocol", as Postgres reports it.
Result<StartupPacket> decodeStartupPacket(std::string_view payload);

// ---- simple query ----

struct Query {
  std::string sql;

  static Result<Query> decode(std::string_view payload);
  void encode(std::string& out) const;
  bool operator==(const Query&) const = default;
};

// ---- extended query ----

struct Parse {
  std::string name;  // empty: the unnamed statement
  std::string query;
  std::vector<int32_t> param_types;  // type OIDs; 0 = unspecified

  static Result<Parse> decode(std::string_view payload);
  void encode(std::string& out) const;
  bool operator==(const Parse&) const = default;
};

struct Bind {
  std::string portal;     // empty: the unnamed portal
  std::string statement;  // empty: the unnamed statement
  // None: all text; one: applies to all parameters; else one per parameter.
  std::vector<int16_t> param_formats;
  std::vector<std::optional<std::string>> params;  // nullopt = SQL NULL
  // Same convention, per result column.
  std::vector<int16_t> result_formats;

  // The format of parameter i under the convention above.
  int16_t paramFormat(size_t i) const;

  static Result<Bind> decode(std::string_view payload);
  void encode(std::string& out) const;
  bool operator==(const Bind&) const = default;
};

// A Bind read without copying: views into the payload (valid while it is), in vectors the
// caller keeps from one Bind to the next. The routing hot path reads every Bind this way.
struct BindView {
  std::string_view portal;
  std::string_view statement;
  std::vector<int16_t> param_formats;
  std::vector<std::optional<std::string_view>> params;  // nullopt = SQL NULL
  std::vector<int16_t> result_formats;

  // The checks (and errors) of Bind::decode.
  Status decode(std::string_view payload);
};

struct Describe {
  char kind = 'S';  // 'S' prepared statement, 'P' portal
  std::string name;

  static Result<Describe> decode(std::string_view payload);
  void encode(std::string& out) const;
  bool operator==(const Describe&) const = default;
};

struct Execute {
  std::string portal;
  int32_t max_rows = 0;  // 0 (or negative): no limit

  static Result<Execute> decode(std::string_view payload);
  void encode(std::string& out) const;
  bool operator==(const Execute&) const = default;
};

struct Close {
  char kind = 'S';  // 'S' prepared statement, 'P' portal
  std::string name;

  static Result<Close> decode(std::string_view payload);
  void encode(std::string& out) const;
  bool operator==(const Close&) const = default;
};

struct Sync {
  static Result<Sync> decode(std::string_view payload);
  void encode(std::string& out) const;
  bool operator==(const Sync&) const = default;
};

struct Flush {
  static Result<Flush> decode(std::string_view payload);
  void encode(std::string& out) const;
  bool operator==(const Flush&) const = default;
};

struct Terminate {
  static Result<Terminate> decode(std::string_view payload);
  void encode(std::string& out) const;
  bool operator==(const Terminate&) const = default;
};

// ---- COPY (both directions) ----

struct CopyData {
  std::string data;

  static Result<CopyData> decode(std::string_view payload);
  void encode(std::string& out) const;
  bool operator==(const CopyData&) const = default;
};

struct CopyDone {
  static Result<CopyDone> decode(std::string_view payload);
  void encode(std::string& out) const;
  bool operator==(const CopyDone&) const = default;
};

struct CopyFail {
  std::string message;

  static Result<CopyFail> decode(std::string_view payload);
  void encode(std::string& out) const;
  bool operator==(const CopyFail&) const = default;
};

// ---- authentication responses (all type 'p'; the server's last request says which) ----

struct PasswordMessage {
  std::string password;  // cleartext, or "md5" + 32 hex digits

  static Result<PasswordMessage> decode(std::string_view payload);
  void encode(std::string& out) const;
  bool operator==(const PasswordMessage&) const = default;
};

struct SaslInitialResponse {
  std::string mechanism;            // e.g. "SCRAM-SHA-256"
  std::optional<std::string> data;  // client-first-message; nullopt is sent as length -1

  static Result<SaslInitialResponse> decode(std::string_view payload);
  void encode(std::string& out) const;
  bool operator==(const SaslInitialResponse&) const = default;
};

struct SaslResponse {
  std::string data;  // e.g. client-final-message

  static Result<SaslResponse> decode(std::string_view payload);
  void encode(std::string& out) const;
  bool operator==(const SaslResponse&) const = default;
};

// ---- function call (legacy fast-path interface) ----

struct FunctionCall {
  int32_t function_oid = 0;
  std::vector<int16_t> arg_formats;  // same convention as Bind::param_formats
  std::vector<std::optional<std::string>> args;
  int16_t result_format = 0;

  static Result<FunctionCall> decode(std::string_view payload);
  void encode(std::string& out) const;
  bool operator==(const FunctionCall&) const = default;
};

}  // namespace shardgate::wire
