// Messages the backend (server) sends: one struct each, with decode (payload -> struct) and encode.
//
// Same conventions as frontend_messages.h: decode() takes Frame::payload, validates it completely
// and returns 08P01 "invalid <name> message" on malformed input; encode() appends the complete
// framed message. CopyData and CopyDone are shared with the frontend (frontend_messages.h).
// Also the writers used everywhere: writeError, writeReadyForQuery, writeParameterStatus.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "common/error.h"
#include "common/result.h"
#include "proxy/wire/frontend_messages.h"
#include "proxy/wire/protocol.h"

namespace shardgate::wire {

// ---- authentication ('R'); each decode also checks the request code ----

struct AuthenticationOk {
  static Result<AuthenticationOk> decode(std::string_view payload);
  void encode(std::string& out) const;
  bool operator==(const AuthenticationOk&) const = default;
};

struct AuthenticationCleartextPassword {
  static Result<AuthenticationCleartextPassword> decode(std::string_view payload);
  void encode(std::string& out) const;
  bool operator==(const AuthenticationCleartextPassword&) const = default;
};

struct AuthenticationMd5Password {
  std::array<char, 4> salt{};

  static Result<AuthenticationMd5Password> decode(std::string_view payload);
  void encode(std::string& out) const;
  bool operator==(const AuthenticationMd5Password&) const = default;
};

struct AuthenticationSasl {
  std::vector<std::string> mechanisms;  // in the server's order of preference

  static Result<AuthenticationSasl> decode(std::string_view payload);
  void encode(std::string& out) const;
  bool operator==(const AuthenticationSasl&) const = default;
};

struct AuthenticationSaslContinue {
  std::string data;  // e.g. server-first-message

  static Result<AuthenticationSaslContinue> decode(std::string_view payload);
  void encode(std::string& out) const;
  bool operator==(const AuthenticationSaslContinue&) const = default;
};

struct AuthenticationSaslFinal {
  std::string data;  // e.g. server-final-message

  static Result<AuthenticationSaslFinal> decode(std::string_view payload);
  void encode(std::string& out) const;
  bool operator==(const AuthenticationSaslFinal&) const = default;
};

using AuthenticationRequest =
    std::variant<AuthenticationOk, AuthenticationCleartextPassword, AuthenticationMd5Password,
                 AuthenticationSasl, AuthenticationSaslContinue, AuthenticationSaslFinal>;

// Decodes any Authentication message by its request code. Methods shardgate does not speak
// (Kerberos, SCM, GSSAPI, SSPI) are 0A000; unknown codes are 08P01.
Result<AuthenticationRequest> decodeAuthentication(std::string_view payload);

// ---- session set-up and status ----

struct BackendKeyData {
  int32_t process_id = 0;
  int32_t secret_key = 0;

  static Result<BackendKeyData> decode(std::string_view payload);
  void encode(std::string& out) const;
  bool operator==(const BackendKeyData&) const = default;
};

struct ParameterStatus {
  std::string name;
  std::string value;

  static Result<ParameterStatus> decode(std::string_view payload);
  void encode(std::string& out) const;
  bool operator==(const ParameterStatus&) const = default;
};

struct ReadyForQuery {
  char status = txn::kIdle;  // 'I' idle, 'T' in a transaction block, 'E' in a failed one

  static Result<ReadyForQuery> decode(std::string_view payload);
  void encode(std::string& out) const;
  bool operator==(const ReadyForQuery&) const = default;
};

struct NegotiateProtocolVersion {
  // The docs call it the newest minor version supported, but Postgres 15 sends its whole
  // PG_PROTOCOL_LATEST here (196608 = 3.0), and libpq 16+ reads it as a full version number.
  int32_t newest_minor = 0;
  std::vector<std::string> unrecognized_options;  // "_pq_." options the server did not recognize

  static Result<NegotiateProtocolVersion> decode(std::string_view payload);
  void encode(std::string& out) const;
  bool operator==(const NegotiateProtocolVersion&) const = default;
};

// ---- results ----

struct FieldDescription {
  std::string name;
  int32_t table_oid = 0;    // 0 if not a table column
  int16_t column_attr = 0;  // attribute number, 0 if not a table column
  int32_t type_oid = 0;
  int16_t type_size = 0;  // pg_type.typlen; negative: variable width
  int32_t type_modifier = -1;
  int16_t format = 0;  // 0 text, 1 binary (0 in a reply to Describe: not known yet)

  bool operator==(const FieldDescription&) const = default;
};

struct RowDescription {
  std::vector<FieldDescription> fields;

  static Result<RowDescription> decode(std::string_view payload);
  void encode(std::string& out) const;
  bool operator==(const RowDescription&) const = default;
};

struct DataRow {
  std::vector<std::optional<std::string>> values;  // nullopt = SQL NULL

  static Result<DataRow> decode(std::string_view payload);
  void encode(std::string& out) const;
  bool operator==(const DataRow&) const = default;
};

struct CommandComplete {
  std::string tag;  // e.g. "SELECT 3", "INSERT 0 1"

  static Result<CommandComplete> decode(std::string_view payload);
  void encode(std::string& out) const;
  bool operator==(const CommandComplete&) const = default;
};

struct EmptyQueryResponse {
  static Result<EmptyQueryResponse> decode(std::string_view payload);
  void encode(std::string& out) const;
  bool operator==(const EmptyQueryResponse&) const = default;
};

// ---- errors and notices ----

// Field codes of ErrorResponse and NoticeResponse (protocol docs, "Error and Notice Message
// Fields").
namespace field {
inline constexpr char kSeverity = 'S';
inline constexpr char kSeverityNonLocalized = 'V';
inline constexpr char kSqlState = 'C';
inline constexpr char kMessage = 'M';
inline constexpr char kDetail = 'D';
inline constexpr char kHint = 'H';
inline constexpr char kPosition = 'P';
inline constexpr char kInternalPosition = 'p';
inline constexpr char kInternalQuery = 'q';
inline constexpr char kWhere = 'W';
inline constexpr char kSchemaName = 's';
inline constexpr char kTableName = 't';
inline constexpr char kColumnName = 'c';
inline constexpr char kDataTypeName = 'd';
inline constexpr char kConstraintName = 'n';
inline constexpr char kFile = 'F';
inline constexpr char kLine = 'L';
inline constexpr char kRoutine = 'R';
}  // namespace field

struct ErrorResponse {
  std::vector<std::pair<char, std::string>> fields;  // in the order sent

  // S, V, C, M, and D and H when not empty.
  static ErrorResponse fromError(const Error& e);
  // Severity from V (else S), SQLSTATE from C; missing fields keep Error's defaults.
  Error toError() const;
  // The first field with that code, or "".
  std::string_view field(char code) const;

  static Result<ErrorResponse> decode(std::string_view payload);
  void encode(std::string& out) const;
  bool operator==(const ErrorResponse&) const = default;
};

struct NoticeResponse {
  std::vector<std::pair<char, std::string>> fields;

  // As ErrorResponse::fromError; set e.severity to NOTICE, WARNING, ... first.
  static NoticeResponse fromError(const Error& e);
  Error toError() const;
  std::string_view field(char code) const;

  static Result<NoticeResponse> decode(std::string_view payload);
  void encode(std::string& out) const;
  bool operator==(const NoticeResponse&) const = default;
};

// ---- extended query replies ----

struct ParseComplete {
  static Result<ParseComplete> decode(std::string_view payload);
  void encode(std::string& out) const;
  bool operator==(const ParseComplete&) const = default;
};

struct BindComplete {
  static Result<BindComplete> decode(std::string_view payload);
  void encode(std::string& out) const;
  bool operator==(const BindComplete&) const = default;
};

struct CloseComplete {
  static Result<CloseComplete> decode(std::string_view payload);
  void encode(std::string& out) const;
  bool operator==(const CloseComplete&) const = default;
};

struct NoData {
  static Result<NoData> decode(std::string_view payload);
  void encode(std::string& out) const;
  bool operator==(const NoData&) const = default;
};

struct PortalSuspended {
  static Result<PortalSuspended> decode(std::string_view payload);
  void encode(std::string& out) const;
  bool operator==(const PortalSuspended&) const = default;
};

struct ParameterDescription {
  std::vector<int32_t> type_oids;

  static Result<ParameterDescription> decode(std::string_view payload);
  void encode(std::string& out) const;
  bool operator==(const ParameterDescription&) const = default;
};

// ---- COPY ----

// If the overall format is text (0), every column format must be 0 too.
struct CopyInResponse {
  uint8_t format = 0;  // 0 text, 1 binary
  std::vector<int16_t> column_formats;

  static Result<CopyInResponse> decode(std::string_view payload);
  void encode(std::string& out) const;
  bool operator==(const CopyInResponse&) const = default;
};

struct CopyOutResponse {
  uint8_t format = 0;
  std::vector<int16_t> column_formats;

  static Result<CopyOutResponse> decode(std::string_view payload);
  void encode(std::string& out) const;
  bool operator==(const CopyOutResponse&) const = default;
};

struct CopyBothResponse {
  uint8_t format = 0;
  std::vector<int16_t> column_formats;

  static Result<CopyBothResponse> decode(std::string_view payload);
  void encode(std::string& out) const;
  bool operator==(const CopyBothResponse&) const = default;
};

// ---- asynchronous and legacy ----

struct NotificationResponse {
  int32_t process_id = 0;  // of the notifying backend
  std::string channel;
  std::string payload;

  static Result<NotificationResponse> decode(std::string_view payload);
  void encode(std::string& out) const;
  bool operator==(const NotificationResponse&) const = default;
};

struct FunctionCallResponse {
  std::optional<std::string> result;  // nullopt = NULL

  static Result<FunctionCallResponse> decode(std::string_view payload);
  void encode(std::string& out) const;
  bool operator==(const FunctionCallResponse&) const = default;
};

// ---- writers used everywhere ----

void writeError(std::string& out, const Error& e);   // ErrorResponse
void writeNotice(std::string& out, const Error& e);  // NoticeResponse (e.severity: NOTICE, ...)
void writeReadyForQuery(std::string& out, char status);
void writeParameterStatus(std::string& out, std::string_view name, std::string_view value);

}  // namespace shardgate::wire
