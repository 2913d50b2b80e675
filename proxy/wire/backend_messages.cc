// Decoding and encoding of the backend messages declared in backend_messages.h.
#include "proxy/wire/backend_messages.h"

#include <algorithm>

#include "proxy/wire/payload.h"

namespace shardgate::wire {
namespace {

template <typename T>
Result<T> decodeEmpty(std::string_view payload, std::string_view name) {
  MessageDecoder d(payload, name);
  if (!d.end()) return d.error();
  return T{};
}

void encodeEmpty(std::string& out, char type) {
  MessageWriter(out, type).finish();
}

// Every Authentication message opens with its request code.
bool readAuthCode(MessageDecoder& d, int32_t expected) {
  int32_t code = 0;
  if (!d.int32(code, "authentication request code")) return false;
  if (code == expected) return true;
  return d.fail("authentication request code " + std::to_string(code) + ", expected " +
                std::to_string(expected));
}

// ErrorResponse and NoticeResponse: (code byte, string) pairs ended by a zero byte, which must
// be the last byte of the payload.
bool readErrorFields(MessageDecoder& d, std::vector<std::pair<char, std::string>>& fields) {
  for (;;) {
    uint8_t code = 0;
    if (!d.int8(code, "field type")) return false;
    if (code == 0) return d.end();
    std::string value;
    if (!d.cstring(value, std::string("field '") + static_cast<char>(code) + "'")) return false;
    fields.emplace_back(static_cast<char>(code), std::move(value));
  }
}

void writeErrorFields(std::string& out, char type,
                      const std::vector<std::pair<char, std::string>>& fields) {
  MessageWriter w(out, type);
  for (const auto& [code, value] : fields) w.int8(static_cast<uint8_t>(code)).cstring(value);
  w.int8(0);
  w.finish();
}

// Straight from an Error, without the intermediate field vector (errors are sent often).
void writeErrorFromError(std::string& out, char type, const Error& e) {
  const std::string_view severity = e.severity.empty() ? std::string_view("ERROR") : e.severity;
  MessageWriter w(out, type);
  w.int8(field::kSeverity).cstring(severity);
  w.int8(field::kSeverityNonLocalized).cstring(severity);
  w.int8(field::kSqlState).cstring(e.sqlstate);
  w.int8(field::kMessage).cstring(e.message);
  if (!e.detail.empty()) w.int8(field::kDetail).cstring(e.detail);
  if (!e.hint.empty()) w.int8(field::kHint).cstring(e.hint);
  w.int8(0);
  w.finish();
}

std::vector<std::pair<char, std::string>> fieldsFromError(const Error& e) {
  std::vector<std::pair<char, std::string>> fields;
  const std::string severity = e.severity.empty() ? std::string("ERROR") : e.severity;
  fields.emplace_back(field::kSeverity, severity);
  fields.emplace_back(field::kSeverityNonLocalized, severity);
  fields.emplace_back(field::kSqlState, e.sqlstate);
  fields.emplace_back(field::kMessage, e.message);
  if (!e.detail.empty()) fields.emplace_back(field::kDetail, e.detail);
  if (!e.hint.empty()) fields.emplace_back(field::kHint, e.hint);
  return fields;
}

std::string_view findField(const std::vector<std::pair<char, std::string>>& fields, char code) {
  for (const auto& [c, value] : fields) {
    if (c == code) return value;
  }
  return {};
}

bool hasField(const std::vector<std::pair<char, std::string>>& fields, char code) {
  for (const auto& f : fields) {
    if (f.first == code) return true;
  }
  return false;
}

Error errorFromFields(const std::vector<std::pair<char, std::string>>& fields) {
  Error e;
  // V is not translated (lc_messages), so prefer it; servers before 9.6 send only S.
  if (hasField(fields, field::kSeverityNonLocalized)) {
    e.severity = findField(fields, field::kSeverityNonLocalized);
  } else if (hasField(fields, field::kSeverity)) {
    e.severity = findField(fields, field::kSeverity);
  }
  if (hasField(fields, field::kSqlState)) e.sqlstate = findField(fields, field::kSqlState);
  e.message = findField(fields, field::kMessage);
  e.detail = findField(fields, field::kDetail);
  e.hint = findField(fields, field::kHint);
  return e;
}

// CopyIn/Out/BothResponse share their layout.
bool readCopyResponse(MessageDecoder& d, uint8_t& format, std::vector<int16_t>& column_formats) {
  if (!d.int8(format, "overall format")) return false;
  if (format > 1) {
    return d.fail("invalid overall format " + std::to_string(format) + " (0 = text, 1 = binary)");
  }
  size_t n = 0;
  if (!d.count16(n, "number of columns", 2)) return false;
  column_formats.resize(n);
  for (auto& f : column_formats) {
    if (!d.formatCode(f, "column format code")) return false;
    if (format == 0 && f != 0) return d.fail("binary column format in a text-format COPY");
  }
  return d.end();
}

void writeCopyResponse(std::string& out, char type, uint8_t format,
                       const std::vector<int16_t>& column_formats) {
  MessageWriter w(out, type);
  w.int8(format).int16(static_cast<int16_t>(column_formats.size()));
  for (int16_t f : column_formats) w.int16(f);
  w.finish();
}

}  // namespace

// ---- authentication ----

Result<AuthenticationOk> AuthenticationOk::decode(std::string_view payload) {
  MessageDecoder d(payload, "AuthenticationOk");
  if (!readAuthCode(d, auth::kOk) || !d.end()) return d.error();
  return AuthenticationOk{};
}

void AuthenticationOk::encode(std::string& out) const {
  MessageWriter(out, be::kAuthentication).int32(auth::kOk).finish();
}

Result<AuthenticationCleartextPassword> AuthenticationCleartextPassword::decode(
    std::string_view payload) {
  MessageDecoder d(payload, "AuthenticationCleartextPassword");
  if (!readAuthCode(d, auth::kCleartextPassword) || !d.end()) return d.error();
  return AuthenticationCleartextPassword{};
}

void AuthenticationCleartextPassword::encode(std::string& out) const {
  MessageWriter(out, be::kAuthentication).int32(auth::kCleartextPassword).finish();
}

Result<AuthenticationMd5Password> AuthenticationMd5Password::decode(std::string_view payload) {
  MessageDecoder d(payload, "AuthenticationMD5Password");
  AuthenticationMd5Password m;
  std::string salt;
  if (!readAuthCode(d, auth::kMd5Password) || !d.bytes(4, salt, "salt") || !d.end()) {
    return d.error();
  }
  std::copy(salt.begin(), salt.end(), m.salt.begin());
  return m;
}

void AuthenticationMd5Password::encode(std::string& out) const {
  MessageWriter(out, be::kAuthentication)
      .int32(auth::kMd5Password)
      .bytes(std::string_view(salt.data(), salt.size()))
      .finish();
}

Result<AuthenticationSasl> AuthenticationSasl::decode(std::string_view payload) {
  MessageDecoder d(payload, "AuthenticationSASL");
  AuthenticationSasl m;
  if (!readAuthCode(d, auth::kSasl)) return d.error();
  // Mechanism names, ended by an empty name that must be the last byte.
  for (;;) {
    std::string name;
    if (!d.cstring(name, "mechanism name")) return d.error();
    if (name.empty()) break;
    m.mechanisms.push_back(std::move(name));
  }
  if (!d.end()) return d.error();
  return m;
}

void AuthenticationSasl::encode(std::string& out) const {
  MessageWriter w(out, be::kAuthentication);
  w.int32(auth::kSasl);
  for (const auto& name : mechanisms) w.cstring(name);
  w.int8(0);
  w.finish();
}

Result<AuthenticationSaslContinue> AuthenticationSaslContinue::decode(std::string_view payload) {
  MessageDecoder d(payload, "AuthenticationSASLContinue");
  if (!readAuthCode(d, auth::kSaslContinue)) return d.error();
  return AuthenticationSaslContinue{std::string(d.reader().readRest())};
}

void AuthenticationSaslContinue::encode(std::string& out) const {
  MessageWriter(out, be::kAuthentication).int32(auth::kSaslContinue).bytes(data).finish();
}

Result<AuthenticationSaslFinal> AuthenticationSaslFinal::decode(std::string_view payload) {
  MessageDecoder d(payload, "AuthenticationSASLFinal");
  if (!readAuthCode(d, auth::kSaslFinal)) return d.error();
  return AuthenticationSaslFinal{std::string(d.reader().readRest())};
}

void AuthenticationSaslFinal::encode(std::string& out) const {
  MessageWriter(out, be::kAuthentication).int32(auth::kSaslFinal).bytes(data).finish();
}

namespace {

template <typename T>
Result<AuthenticationRequest> decodeAs(std::string_view payload) {
  auto m = T::decode(payload);
  if (!m) return std::move(m).error();
  return AuthenticationRequest(std::move(m).value());
}

}  // namespace

Result<AuthenticationRequest> decodeAuthentication(std::string_view payload) {
  int32_t code = 0;
  if (!PayloadReader(payload).readInt32(code)) {
    return invalidMessage("Authentication", "truncated authentication request code: " +
                                                std::to_string(payload.size()) + " bytes");
  }
  switch (code) {
    case auth::kOk:
      return decodeAs<AuthenticationOk>(payload);
    case auth::kCleartextPassword:
      return decodeAs<AuthenticationCleartextPassword>(payload);
    case auth::kMd5Password:
      return decodeAs<AuthenticationMd5Password>(payload);
    case auth::kSasl:
      return decodeAs<AuthenticationSasl>(payload);
    case auth::kSaslContinue:
      return decodeAs<AuthenticationSaslContinue>(payload);
    case auth::kSaslFinal:
      return decodeAs<AuthenticationSaslFinal>(payload);
    case auth::kKerberosV5:
    case auth::kScmCredential:
    case auth::kGss:
    case auth::kGssContinue:
    case auth::kSspi:
      return Error::make(sqlstate::kFeatureNotSupported,
                         "authentication method " + std::to_string(code) +
                             " requested by the server is not supported",
                         "shardgate speaks trust, password, md5 and SCRAM-SHA-256");
    default:
      return invalidMessage("Authentication",
                            "unknown authentication request code " + std::to_string(code));
  }
}

// ---- session set-up and status ----

Result<BackendKeyData> BackendKeyData::decode(std::string_view payload) {
  MessageDecoder d(payload, "BackendKeyData");
  BackendKeyData m;
  if (!d.int32(m.process_id, "process ID") || !d.int32(m.secret_key, "secret key") || !d.end()) {
    return d.error();
  }
  return m;
}

void BackendKeyData::encode(std::string& out) const {
  MessageWriter(out, be::kBackendKeyData).int32(process_id).int32(secret_key).finish();
}

Result<ParameterStatus> ParameterStatus::decode(std::string_view payload) {
  MessageDecoder d(payload, "ParameterStatus");
  ParameterStatus m;
  if (!d.cstring(m.name, "parameter name") || !d.cstring(m.value, "parameter value") || !d.end()) {
    return d.error();
  }
  return m;
}

void ParameterStatus::encode(std::string& out) const {
  writeParameterStatus(out, name, value);
}

Result<ReadyForQuery> ReadyForQuery::decode(std::string_view payload) {
  MessageDecoder d(payload, "ReadyForQuery");
  uint8_t status = 0;
  if (!d.int8(status, "transaction status")) return d.error();
  if (status != txn::kIdle && status != txn::kInBlock && status != txn::kFailed) {
    d.fail("invalid transaction status byte " + std::to_string(status) +
           " (expected 'I', 'T' or 'E')");
    return d.error();
  }
  if (!d.end()) return d.error();
  return ReadyForQuery{static_cast<char>(status)};
}

void ReadyForQuery::encode(std::string& out) const {
  writeReadyForQuery(out, status);
}

Result<NegotiateProtocolVersion> NegotiateProtocolVersion::decode(std::string_view payload) {
  MessageDecoder d(payload, "NegotiateProtocolVersion");
  NegotiateProtocolVersion m;
  size_t n = 0;
  if (!d.int32(m.newest_minor, "newest minor version") ||
      !d.count32(n, "number of unrecognized options", 1)) {
    return d.error();
  }
  m.unrecognized_options.resize(n);
  for (auto& option : m.unrecognized_options) {
    if (!d.cstring(option, "option name")) return d.error();
  }
  if (!d.end()) return d.error();
  return m;
}

void NegotiateProtocolVersion::encode(std::string& out) const {
  MessageWriter w(out, be::kNegotiateProtocolVersion);
  w.int32(newest_minor).int32(static_cast<int32_t>(unrecognized_options.size()));
  for (const auto& option : unrecognized_options) w.cstring(option);
  w.finish();
}

// ---- results ----

Result<RowDescription> RowDescription::decode(std::string_view payload) {
  MessageDecoder d(payload, "RowDescription");
  RowDescription m;
  size_t n = 0;
  // A field takes at least 19 bytes: an empty name's NUL and 18 bytes of fixed fields.
  if (!d.count16(n, "number of fields", 19)) return d.error();
  m.fields.resize(n);
  for (auto& f : m.fields) {
    if (!d.cstring(f.name, "field name") || !d.int32(f.table_oid, "table OID") ||
        !d.int16(f.column_attr, "column attribute number") || !d.int32(f.type_oid, "type OID") ||
        !d.int16(f.type_size, "type size") || !d.int32(f.type_modifier, "type modifier") ||
        !d.formatCode(f.format, "format code")) {
      return d.error();
    }
  }
  if (!d.end()) return d.error();
  return m;
}

void RowDescription::encode(std::string& out) const {
  MessageWriter w(out, be::kRowDescription);
  w.int16(static_cast<int16_t>(fields.size()));
  for (const auto& f : fields) {
    w.cstring(f.name)
        .int32(f.table_oid)
        .int16(f.column_attr)
        .int32(f.type_oid)
        .int16(f.type_size)
        .int32(f.type_modifier)
        .int16(f.format);
  }
  w.finish();
}

Result<DataRow> DataRow::decode(std::string_view payload) {
  MessageDecoder d(payload, "DataRow");
  DataRow m;
  size_t n = 0;
  if (!d.count16(n, "number of columns", 4)) return d.error();
  m.values.resize(n);
  for (auto& v : m.values) {
    if (!d.nullableBytes(v, "column value")) return d.error();
  }
  if (!d.end()) return d.error();
  return m;
}

void DataRow::encode(std::string& out) const {
  MessageWriter w(out, be::kDataRow);
  w.int16(static_cast<int16_t>(values.size()));
  for (const auto& v : values) w.nullableBytes(v);
  w.finish();
}

Result<CommandComplete> CommandComplete::decode(std::string_view payload) {
  MessageDecoder d(payload, "CommandComplete");
  CommandComplete m;
  if (!d.cstring(m.tag, "command tag") || !d.end()) return d.error();
  return m;
}

void CommandComplete::encode(std::string& out) const {
  MessageWriter(out, be::kCommandComplete).cstring(tag).finish();
}

Result<EmptyQueryResponse> EmptyQueryResponse::decode(std::string_view payload) {
  return decodeEmpty<EmptyQueryResponse>(payload, "EmptyQueryResponse");
}
void EmptyQueryResponse::encode(std::string& out) const {
  encodeEmpty(out, be::kEmptyQueryResponse);
}

// ---- errors and notices ----

ErrorResponse ErrorResponse::fromError(const Error& e) {
  return ErrorResponse{fieldsFromError(e)};
}
Error ErrorResponse::toError() const {
  return errorFromFields(fields);
}
std::string_view ErrorResponse::field(char code) const {
  return findField(fields, code);
}

Result<ErrorResponse> ErrorResponse::decode(std::string_view payload) {
  MessageDecoder d(payload, "ErrorResponse");
  ErrorResponse m;
  if (!readErrorFields(d, m.fields)) return d.error();
  return m;
}

void ErrorResponse::encode(std::string& out) const {
  writeErrorFields(out, be::kErrorResponse, fields);
}

NoticeResponse NoticeResponse::fromError(const Error& e) {
  return NoticeResponse{fieldsFromError(e)};
}
Error NoticeResponse::toError() const {
  return errorFromFields(fields);
}
std::string_view NoticeResponse::field(char code) const {
  return findField(fields, code);
}

Result<NoticeResponse> NoticeResponse::decode(std::string_view payload) {
  MessageDecoder d(payload, "NoticeResponse");
  NoticeResponse m;
  if (!readErrorFields(d, m.fields)) return d.error();
  return m;
}

void NoticeResponse::encode(std::string& out) const {
  writeErrorFields(out, be::kNoticeResponse, fields);
}

// ---- extended query replies ----

Result<ParseComplete> ParseComplete::decode(std::string_view payload) {
  return decodeEmpty<ParseComplete>(payload, "ParseComplete");
}
void ParseComplete::encode(std::string& out) const {
  encodeEmpty(out, be::kParseComplete);
}

Result<BindComplete> BindComplete::decode(std::string_view payload) {
  return decodeEmpty<BindComplete>(payload, "BindComplete");
}
void BindComplete::encode(std::string& out) const {
  encodeEmpty(out, be::kBindComplete);
}

Result<CloseComplete> CloseComplete::decode(std::string_view payload) {
  return decodeEmpty<CloseComplete>(payload, "CloseComplete");
}
void CloseComplete::encode(std::string& out) const {
  encodeEmpty(out, be::kCloseComplete);
}

Result<NoData> NoData::decode(std::string_view payload) {
  return decodeEmpty<NoData>(payload, "NoData");
}
void NoData::encode(std::string& out) const {
  encodeEmpty(out, be::kNoData);
}

Result<PortalSuspended> PortalSuspended::decode(std::string_view payload) {
  return decodeEmpty<PortalSuspended>(payload, "PortalSuspended");
}
void PortalSuspended::encode(std::string& out) const {
  encodeEmpty(out, be::kPortalSuspended);
}

Result<ParameterDescription> ParameterDescription::decode(std::string_view payload) {
  MessageDecoder d(payload, "ParameterDescription");
  ParameterDescription m;
  size_t n = 0;
  // Unsigned, as libpq reads it: a statement may have up to 65535 parameters.
  if (!d.ucount16(n, "number of parameters", 4)) return d.error();
  m.type_oids.resize(n);
  for (auto& oid : m.type_oids) {
    if (!d.int32(oid, "parameter type OID")) return d.error();
  }
  if (!d.end()) return d.error();
  return m;
}

void ParameterDescription::encode(std::string& out) const {
  MessageWriter w(out, be::kParameterDescription);
  w.int16(static_cast<int16_t>(type_oids.size()));
  for (int32_t oid : type_oids) w.int32(oid);
  w.finish();
}

// ---- COPY ----

Result<CopyInResponse> CopyInResponse::decode(std::string_view payload) {
  MessageDecoder d(payload, "CopyInResponse");
  CopyInResponse m;
  if (!readCopyResponse(d, m.format, m.column_formats)) return d.error();
  return m;
}
void CopyInResponse::encode(std::string& out) const {
  writeCopyResponse(out, be::kCopyInResponse, format, column_formats);
}

Result<CopyOutResponse> CopyOutResponse::decode(std::string_view payload) {
  MessageDecoder d(payload, "CopyOutResponse");
  CopyOutResponse m;
  if (!readCopyResponse(d, m.format, m.column_formats)) return d.error();
  return m;
}
void CopyOutResponse::encode(std::string& out) const {
  writeCopyResponse(out, be::kCopyOutResponse, format, column_formats);
}

Result<CopyBothResponse> CopyBothResponse::decode(std::string_view payload) {
  MessageDecoder d(payload, "CopyBothResponse");
  CopyBothResponse m;
  if (!readCopyResponse(d, m.format, m.column_formats)) return d.error();
  return m;
}
void CopyBothResponse::encode(std::string& out) const {
  writeCopyResponse(out, be::kCopyBothResponse, format, column_formats);
}

// ---- asynchronous and legacy ----

Result<NotificationResponse> NotificationResponse::decode(std::string_view payload) {
  MessageDecoder d(payload, "NotificationResponse");
  NotificationResponse m;
  if (!d.int32(m.process_id, "process ID") || !d.cstring(m.channel, "channel name") ||
      !d.cstring(m.payload, "payload") || !d.end()) {
    return d.error();
  }
  return m;
}

void NotificationResponse::encode(std::string& out) const {
  MessageWriter(out, be::kNotificationResponse)
      .int32(process_id)
      .cstring(channel)
      .cstring(payload)
      .finish();
}

Result<FunctionCallResponse> FunctionCallResponse::decode(std::string_view payload) {
  MessageDecoder d(payload, "FunctionCallResponse");
  FunctionCallResponse m;
  if (!d.nullableBytes(m.result, "result value") || !d.end()) return d.error();
  return m;
}

void FunctionCallResponse::encode(std::string& out) const {
  MessageWriter w(out, be::kFunctionCallResponse);
  w.nullableBytes(result);
  w.finish();
}

// ---- writers used everywhere ----

void writeError(std::string& out, const Error& e) {
  writeErrorFromError(out, be::kErrorResponse, e);
}

void writeNotice(std::string& out, const Error& e) {
  writeErrorFromError(out, be::kNoticeResponse, e);
}

void writeReadyForQuery(std::string& out, char status) {
  MessageWriter(out, be::kReadyForQuery).int8(static_cast<uint8_t>(status)).finish();
}

void writeParameterStatus(std::string& out, std::string_view name, std::string_view value) {
  MessageWriter(out, be::kParameterStatus).cstring(name).cstring(value).finish();
}

}  // namespace shardgate::wire
