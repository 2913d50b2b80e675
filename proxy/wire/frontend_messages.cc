// Decoding and encoding of the frontend messages declared in frontend_messages.h.
#include "proxy/wire/frontend_messages.h"

#include "proxy/wire/payload.h"

namespace shardgate::wire {
namespace {

// Startup-phase errors close the connection, as in Postgres (ProcessStartupPacket).
Error fatalStartup(const MessageDecoder& d) {
  Error e = d.error();
  e.severity = "FATAL";
  return e;
}

// The request packets open with their request code.
bool readRequestCode(MessageDecoder& d, int32_t expected) {
  int32_t code = 0;
  if (!d.int32(code, "request code")) return false;
  if (code == expected) return true;
  return d.fail("request code " + std::to_string(code) + ", expected " + std::to_string(expected));
}

// Reads an int16 count of format codes followed by the codes (Bind, FunctionCall). `count_field`
// is "number of <what>" (a literal: Bind is on the hot path, so nothing is built per call).
bool readFormats(MessageDecoder& d, std::vector<int16_t>& out, std::string_view count_field,
                 std::string_view what) {
  size_t n = 0;
  if (!d.ucount16(n, count_field, 2)) return false;
  out.resize(n);
  for (auto& f : out) {
    if (!d.formatCode(f, what)) return false;
  }
  return true;
}

template <typename Value>
bool readValues(MessageDecoder& d, std::vector<std::optional<Value>>& out,
                std::string_view count_field, std::string_view what) {
  size_t n = 0;
  if (!d.ucount16(n, count_field, 4)) return false;
  out.resize(n);
  for (auto& v : out) {
    if (!d.nullableBytes(v, what)) return false;
  }
  return true;
}

// Postgres's rule: no format codes, one for all, or exactly one per value.
bool checkFormatCount(MessageDecoder& d, size_t formats, size_t values, std::string_view what) {
  if (formats <= 1 || formats == values) return true;
  return d.fail(std::to_string(formats) + " " + std::string(what) + " formats but " +
                std::to_string(values) + " " + std::string(what) + "s");
}

void writeFormats(MessageWriter& w, const std::vector<int16_t>& formats) {
  // Counts are unsigned 16-bit on the wire (up to 65535); the cast keeps the bit pattern.
  w.int16(static_cast<int16_t>(formats.size()));
  for (int16_t f : formats) w.int16(f);
}

void writeValues(MessageWriter& w, const std::vector<std::optional<std::string>>& values) {
  w.int16(static_cast<int16_t>(values.size()));
  for (const auto& v : values) w.nullableBytes(v);
}

// The payload-less messages (Sync, Flush, Terminate, CopyDone).
template <typename T>
Result<T> decodeEmpty(std::string_view payload, std::string_view name) {
  MessageDecoder d(payload, name);
  if (!d.end()) return d.error();
  return T{};
}

void encodeEmpty(std::string& out, char type) {
  MessageWriter(out, type).finish();
}

}  // namespace

// ---- startup phase ----

const std::string* StartupMessage::get(std::string_view name) const {
  for (auto it = parameters.rbegin(); it != parameters.rend(); ++it) {
    if (it->first == name) return &it->second;
  }
  return nullptr;
}

Result<StartupMessage> StartupMessage::decode(std::string_view payload) {
  MessageDecoder d(payload, "startup");
  StartupMessage m;
  if (!d.int32(m.protocol_version, "protocol version")) return fatalStartup(d);
  if (protocolMajor(m.protocol_version) != 3) {
    d.fail("protocol version " + std::to_string(protocolMajor(m.protocol_version)) + "." +
           std::to_string(protocolMinor(m.protocol_version)) + " is not 3.x");
    return fatalStartup(d);
  }
  // name\0value\0 pairs, ended by an empty name (the final NUL), which must be the last byte.
  for (;;) {
    std::string_view name, value;
    if (!d.cstring(name, "parameter name")) return fatalStartup(d);
    if (name.empty()) break;
    if (!d.cstring(value, "value of parameter \"" + std::string(name) + "\"")) {
      return fatalStartup(d);
    }
    m.parameters.emplace_back(name, value);
  }
  if (!d.end()) return fatalStartup(d);
  return m;
}

void StartupMessage::encode(std::string& out) const {
  MessageWriter w(out, 0);
  w.int32(protocol_version);
  for (const auto& [name, value] : parameters) w.cstring(name).cstring(value);
  w.int8(0);
  w.finish();
}

Result<SslRequest> SslRequest::decode(std::string_view payload) {
  MessageDecoder d(payload, "SSLRequest");
  if (!readRequestCode(d, kSslRequestCode) || !d.end()) return fatalStartup(d);
  return SslRequest{};
}

void SslRequest::encode(std::string& out) const {
  MessageWriter(out, 0).int32(kSslRequestCode).finish();
}

Result<GssEncRequest> GssEncRequest::decode(std::string_view payload) {
  MessageDecoder d(payload, "GSSENCRequest");
  if (!readRequestCode(d, kGssEncRequestCode) || !d.end()) return fatalStartup(d);
  return GssEncRequest{};
}

void GssEncRequest::encode(std::string& out) const {
  MessageWriter(out, 0).int32(kGssEncRequestCode).finish();
}

Result<CancelRequest> CancelRequest::decode(std::string_view payload) {
  MessageDecoder d(payload, "CancelRequest");
  CancelRequest m;
  if (!readRequestCode(d, kCancelRequestCode) || !d.int32(m.process_id, "process ID") ||
      !d.int32(m.secret_key, "secret key") || !d.end()) {
    return fatalStartup(d);
  }
  return m;
}

void CancelRequest::encode(std::string& out) const {
  MessageWriter(out, 0).int32(kCancelRequestCode).int32(process_id).int32(secret_key).finish();
}

// GCC 12 with -O2 and the sanitizers reports a false -Wmaybe-uninitialized when the variant is
// moved into the Result (GCC bug 107138); every path here returns an initialized value.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
Result<StartupPacket> decodeStartupPacket(std::string_view payload) {
  PayloadReader r(payload);
  int32_t code = 0;
  if (!r.readInt32(code)) {
    return Error::fatal(sqlstate::kProtocolViolation, "invalid startup packet layout",
                        "the packet is shorter than its 4-byte request code");
  }
  switch (code) {
    case kSslRequestCode: {
      auto m = SslRequest::decode(payload);
      if (!m) return std::move(m).error();
      return StartupPacket(std::move(m).value());
    }
    case kGssEncRequestCode: {
      auto m = GssEncRequest::decode(payload);
      if (!m) return std::move(m).error();
      return StartupPacket(std::move(m).value());
    }
    case kCancelRequestCode: {
      auto m = CancelRequest::decode(payload);
      if (!m) return std::move(m).error();
      return StartupPacket(std::move(m).value());
    }
    default:
      break;
  }
  if (protocolMajor(code) != 3) {
    return Error::fatal(sqlstate::kFeatureNotSupported,
                        "unsupported frontend protocol " + std::to_string(protocolMajor(code)) +
                            "." + std::to_string(protocolMinor(code)) +
                            ": server supports 3.0 to 3.0");
  }
  auto m = StartupMessage::decode(payload);
  if (!m) return std::move(m).error();
  return StartupPacket(std::move(m).value());
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

// ---- simple query ----

Result<Query> Query::decode(std::string_view payload) {
  MessageDecoder d(payload, "Query");
  Query m;
  if (!d.cstring(m.sql, "query string") || !d.end()) return d.error();
  return m;
}

void Query::encode(std::string& out) const {
  MessageWriter(out, fe::kQuery).cstring(sql).finish();
}

// ---- extended query ----

Result<Parse> Parse::decode(std::string_view payload) {
  MessageDecoder d(payload, "Parse");
  Parse m;
  size_t n = 0;
  if (!d.cstring(m.name, "statement name") || !d.cstring(m.query, "query string") ||
      !d.ucount16(n, "number of parameter types", 4)) {
    return d.error();
  }
  m.param_types.resize(n);
  for (auto& t : m.param_types) {
    if (!d.int32(t, "parameter type")) return d.error();
  }
  if (!d.end()) return d.error();
  return m;
}

void Parse::encode(std::string& out) const {
  MessageWriter w(out, fe::kParse);
  w.cstring(name).cstring(query).int16(static_cast<int16_t>(param_types.size()));
  for (int32_t t : param_types) w.int32(t);
  w.finish();
}

int16_t Bind::paramFormat(size_t i) const {
  if (param_formats.empty()) return 0;
  if (param_formats.size() == 1) return param_formats[0];
  return i < param_formats.size() ? param_formats[i] : 0;
}

Result<Bind> Bind::decode(std::string_view payload) {
  MessageDecoder d(payload, "Bind");
  Bind m;
  if (!d.cstring(m.portal, "portal name") || !d.cstring(m.statement, "statement name") ||
      !readFormats(d, m.param_formats, "number of parameter format code",
                   "parameter format code") ||
      !readValues(d, m.params, "number of parameter value", "parameter value") ||
      !checkFormatCount(d, m.param_formats.size(), m.params.size(), "parameter") ||
      !readFormats(d, m.result_formats, "number of result format code", "result format code") ||
      !d.end()) {
    return d.error();
  }
  return m;
}

Status BindView::decode(std::string_view payload) {
  MessageDecoder d(payload, "Bind");
  if (!d.cstring(portal, "portal name") || !d.cstring(statement, "statement name") ||
      !readFormats(d, param_formats, "number of parameter format code", "parameter format code") ||
      !readValues(d, params, "number of parameter value", "parameter value") ||
      !checkFormatCount(d, param_formats.size(), params.size(), "parameter") ||
      !readFormats(d, result_formats, "number of result format code", "result format code") ||
      !d.end()) {
    return d.error();
  }
  return {};
}

void Bind::encode(std::string& out) const {
  MessageWriter w(out, fe::kBind);
  w.cstring(portal).cstring(statement);
  writeFormats(w, param_formats);
  writeValues(w, params);
  writeFormats(w, result_formats);
  w.finish();
}

namespace {

// Describe and Close share their layout: a kind byte ('S' or 'P') and a name.
bool readKindAndName(MessageDecoder& d, char& kind, std::string& name) {
  uint8_t k = 0;
  if (!d.int8(k, "kind")) return false;
  if (k != 'S' && k != 'P') {
    return d.fail("invalid kind byte " + std::to_string(k) + " (expected 'S' or 'P')");
  }
  kind = static_cast<char>(k);
  return d.cstring(name, kind == 'S' ? "statement name" : "portal name") && d.end();
}

}  // namespace

Result<Describe> Describe::decode(std::string_view payload) {
  MessageDecoder d(payload, "Describe");
  Describe m;
  if (!readKindAndName(d, m.kind, m.name)) return d.error();
  return m;
}

void Describe::encode(std::string& out) const {
  MessageWriter(out, fe::kDescribe).int8(static_cast<uint8_t>(kind)).cstring(name).finish();
}

Result<Execute> Execute::decode(std::string_view payload) {
  MessageDecoder d(payload, "Execute");
  Execute m;
  if (!d.cstring(m.portal, "portal name") || !d.int32(m.max_rows, "maximum row count") ||
      !d.end()) {
    return d.error();
  }
  return m;
}

void Execute::encode(std::string& out) const {
  MessageWriter(out, fe::kExecute).cstring(portal).int32(max_rows).finish();
}

Result<Close> Close::decode(std::string_view payload) {
  MessageDecoder d(payload, "Close");
  Close m;
  if (!readKindAndName(d, m.kind, m.name)) return d.error();
  return m;
}

void Close::encode(std::string& out) const {
  MessageWriter(out, fe::kClose).int8(static_cast<uint8_t>(kind)).cstring(name).finish();
}

Result<Sync> Sync::decode(std::string_view payload) {
  return decodeEmpty<Sync>(payload, "Sync");
}
void Sync::encode(std::string& out) const {
  encodeEmpty(out, fe::kSync);
}

Result<Flush> Flush::decode(std::string_view payload) {
  return decodeEmpty<Flush>(payload, "Flush");
}
void Flush::encode(std::string& out) const {
  encodeEmpty(out, fe::kFlush);
}

Result<Terminate> Terminate::decode(std::string_view payload) {
  return decodeEmpty<Terminate>(payload, "Terminate");
}
void Terminate::encode(std::string& out) const {
  encodeEmpty(out, fe::kTerminate);
}

// ---- COPY ----

Result<CopyData> CopyData::decode(std::string_view payload) {
  return CopyData{std::string(payload)};
}

void CopyData::encode(std::string& out) const {
  MessageWriter(out, fe::kCopyData).bytes(data).finish();
}

Result<CopyDone> CopyDone::decode(std::string_view payload) {
  return decodeEmpty<CopyDone>(payload, "CopyDone");
}
void CopyDone::encode(std::string& out) const {
  encodeEmpty(out, fe::kCopyDone);
}

Result<CopyFail> CopyFail::decode(std::string_view payload) {
  MessageDecoder d(payload, "CopyFail");
  CopyFail m;
  if (!d.cstring(m.message, "error message") || !d.end()) return d.error();
  return m;
}

void CopyFail::encode(std::string& out) const {
  MessageWriter(out, fe::kCopyFail).cstring(message).finish();
}

// ---- authentication responses ----

Result<PasswordMessage> PasswordMessage::decode(std::string_view payload) {
  MessageDecoder d(payload, "password");
  PasswordMessage m;
  if (!d.cstring(m.password, "password") || !d.end()) return d.error();
  return m;
}

void PasswordMessage::encode(std::string& out) const {
  MessageWriter(out, fe::kPassword).cstring(password).finish();
}

Result<SaslInitialResponse> SaslInitialResponse::decode(std::string_view payload) {
  MessageDecoder d(payload, "SASLInitialResponse");
  SaslInitialResponse m;
  if (!d.cstring(m.mechanism, "mechanism name") || !d.nullableBytes(m.data, "initial response") ||
      !d.end()) {
    return d.error();
  }
  return m;
}

void SaslInitialResponse::encode(std::string& out) const {
  MessageWriter w(out, fe::kPassword);
  w.cstring(mechanism).nullableBytes(data);
  w.finish();
}

Result<SaslResponse> SaslResponse::decode(std::string_view payload) {
  return SaslResponse{std::string(payload)};
}

void SaslResponse::encode(std::string& out) const {
  MessageWriter(out, fe::kPassword).bytes(data).finish();
}

// ---- function call ----

Result<FunctionCall> FunctionCall::decode(std::string_view payload) {
  MessageDecoder d(payload, "FunctionCall");
  FunctionCall m;
  if (!d.int32(m.function_oid, "function OID") ||
      !readFormats(d, m.arg_formats, "number of argument format code", "argument format code") ||
      !readValues(d, m.args, "number of argument value", "argument value") ||
      !checkFormatCount(d, m.arg_formats.size(), m.args.size(), "argument") ||
      !d.formatCode(m.result_format, "result format code") || !d.end()) {
    return d.error();
  }
  return m;
}

void FunctionCall::encode(std::string& out) const {
  MessageWriter w(out, fe::kFunctionCall);
  w.int32(function_oid);
  writeFormats(w, arg_formats);
  writeValues(w, args);
  w.int16(result_format);
  w.finish();
}

}  // namespace shardgate::wire
