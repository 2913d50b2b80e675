// Tests of the message codec: round trips for every message, golden bytes, hostile payloads.
#include <gtest/gtest.h>

#include <string>
#include <string_view>

#include "proxy/wire/backend_messages.h"
#include "proxy/wire/framing.h"
#include "proxy/wire/frontend_messages.h"
#include "proxy/wire/payload.h"

namespace shardgate::wire {
namespace {

using namespace std::string_literals;

constexpr uint32_t kMax = 1 << 24;

// encode -> frameTyped -> decode must give back the same message and consume every byte.
template <typename T>
void roundTrip(const T& message, char type) {
  std::string buf = "junk";  // encode appends
  message.encode(buf);
  std::string_view framed = std::string_view(buf).substr(4);
  FrameResult r = frameTyped(framed, kMax);
  ASSERT_EQ(r.status, FrameStatus::kComplete);
  EXPECT_EQ(r.frame.type, type);
  EXPECT_EQ(r.frame.size, framed.size());
  Result<T> decoded = T::decode(r.frame.payload);
  ASSERT_TRUE(decoded.ok()) << decoded.error().describe();
  EXPECT_TRUE(*decoded == message);
}

template <typename T>
void startupRoundTrip(const T& message) {
  std::string buf;
  message.encode(buf);
  FrameResult r = frameUntyped(buf, kMax);
  ASSERT_EQ(r.status, FrameStatus::kComplete);
  EXPECT_EQ(r.frame.type, 0);
  EXPECT_EQ(r.frame.size, buf.size());
  Result<T> decoded = T::decode(r.frame.payload);
  ASSERT_TRUE(decoded.ok()) << decoded.error().describe();
  EXPECT_TRUE(*decoded == message);
  Result<StartupPacket> packet = decodeStartupPacket(r.frame.payload);
  ASSERT_TRUE(packet.ok()) << packet.error().describe();
  ASSERT_TRUE(std::holds_alternative<T>(*packet));
  EXPECT_TRUE(std::get<T>(*packet) == message);
}

template <typename T>
void authRoundTrip(const T& message) {
  roundTrip(message, be::kAuthentication);
  std::string buf;
  message.encode(buf);
  Result<AuthenticationRequest> decoded = decodeAuthentication(std::string_view(buf).substr(5));
  ASSERT_TRUE(decoded.ok()) << decoded.error().describe();
  ASSERT_TRUE(std::holds_alternative<T>(*decoded));
  EXPECT_TRUE(std::get<T>(*decoded) == message);
}

// The payload (after type and length) of an encoded message.
template <typename T>
std::string payloadOf(const T& message) {
  std::string buf;
  message.encode(buf);
  return buf.substr(5);
}

// Every decode error is 08P01 "invalid <name> message" with a detail.
template <typename T>
void expectInvalid(std::string_view payload, std::string_view detail_part = {}) {
  Result<T> r = T::decode(payload);
  ASSERT_FALSE(r.ok()) << "accepted a malformed payload of " << payload.size() << " bytes";
  EXPECT_EQ(r.error().sqlstate, "08P01");
  EXPECT_EQ(r.error().message.rfind("invalid ", 0), 0u) << r.error().message;
  EXPECT_FALSE(r.error().detail.empty());
  if (!detail_part.empty()) {
    EXPECT_NE(r.error().detail.find(detail_part), std::string::npos) << r.error().detail;
  }
}

// Every proper prefix of a valid payload must be rejected (for messages without a trailing
// free-form byte field), and so must the payload with a byte appended.
template <typename T>
void expectPrefixesAndTrailingRejected(const T& message) {
  const std::string payload = payloadOf(message);
  for (size_t n = 0; n < payload.size(); ++n) {
    SCOPED_TRACE("prefix of " + std::to_string(n) + " bytes");
    expectInvalid<T>(std::string_view(payload).substr(0, n));
  }
  expectInvalid<T>(payload + "x", "trailing");
}

// ---------------------------------------------------------------- startup phase

TEST(StartupRoundTrip, StartupMessage) {
  StartupMessage m;
  m.parameters = {{"user", "alice"}, {"database", "app"}, {"application_name", ""}};
  startupRoundTrip(m);
  startupRoundTrip(StartupMessage{});
  startupRoundTrip(StartupMessage{kProtocolVersion30 + 1, {{"user", "x"}}});  // 3.1 is accepted
}

TEST(StartupRoundTrip, RequestPackets) {
  startupRoundTrip(SslRequest{});
  startupRoundTrip(GssEncRequest{});
  startupRoundTrip(CancelRequest{1234, -559038737});
}

TEST(StartupGolden, MatchesLibpqBytes) {
  std::string buf;
  SslRequest{}.encode(buf);
  EXPECT_EQ(buf, "\x00\x00\x00\x08\x04\xd2\x16\x2f"s);
  buf.clear();
  GssEncRequest{}.encode(buf);
  EXPECT_EQ(buf, "\x00\x00\x00\x08\x04\xd2\x16\x30"s);
  buf.clear();
  CancelRequest{1, 2}.encode(buf);
  EXPECT_EQ(buf, "\x00\x00\x00\x10\x04\xd2\x16\x2e\x00\x00\x00\x01\x00\x00\x00\x02"s);
  buf.clear();
  StartupMessage{kProtocolVersion30, {{"user", "u"}}}.encode(buf);
  EXPECT_EQ(buf, "\x00\x00\x00\x10\x00\x03\x00\x00user\0u\0\0"s);
}

TEST(StartupMessage, GetReturnsTheLastValue) {
  StartupMessage m{kProtocolVersion30, {{"user", "a"}, {"database", "d"}, {"user", "b"}}};
  ASSERT_NE(m.get("user"), nullptr);
  EXPECT_EQ(*m.get("user"), "b");
  EXPECT_EQ(*m.get("database"), "d");
  EXPECT_EQ(m.get("options"), nullptr);
}

TEST(StartupHostile, StartupMessage) {
  const std::string v3 = "\x00\x03\x00\x00"s;
  auto fails = [](const std::string& p) {
    Result<StartupMessage> r = StartupMessage::decode(p);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().severity, "FATAL");
    EXPECT_EQ(r.error().sqlstate, "08P01");
  };
  fails("");
  fails("\x00\x03"s);
  fails(v3);                        // no terminator
  fails(v3 + "user\0alice\0"s);     // no terminator
  fails(v3 + "user\0alice"s);       // value without NUL
  fails(v3 + "user"s);              // name without NUL
  fails(v3 + "user\0alice\0\0x"s);  // bytes after the terminator
  fails("\x00\x02\x00\x00\0"s);     // protocol 2.0
  EXPECT_TRUE(StartupMessage::decode(v3 + "\0"s).ok());
}

TEST(StartupHostile, RequestPackets) {
  EXPECT_FALSE(SslRequest::decode("\x04\xd2\x16\x2f\x00"s).ok());
  EXPECT_FALSE(SslRequest::decode("\x04\xd2\x16"s).ok());
  EXPECT_FALSE(SslRequest::decode("\x04\xd2\x16\x30"s).ok());  // GSSENCRequest code
  EXPECT_FALSE(GssEncRequest::decode("\x04\xd2\x16\x2f"s).ok());
  EXPECT_FALSE(CancelRequest::decode("\x04\xd2\x16\x2e\x00\x00\x00\x01"s).ok());
  EXPECT_FALSE(CancelRequest::decode("\x04\xd2\x16\x2e\x00\x00\x00\x01\x00\x00\x00\x02\x00"s).ok());
}

TEST(StartupHostile, DecodeStartupPacket) {
  Result<StartupPacket> r = decodeStartupPacket("\x00\x02\x00\x00\0"s);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().sqlstate, "0A000");
  EXPECT_EQ(r.error().severity, "FATAL");
  EXPECT_EQ(r.error().message, "unsupported frontend protocol 2.0: server supports 3.0 to 3.0");

  r = decodeStartupPacket("\x04\xd2\x16\x31"s);  // 1234.5681: no such request
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().sqlstate, "0A000");

  r = decodeStartupPacket("\x00\x03"s);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().sqlstate, "08P01");

  r = decodeStartupPacket("\x04\xd2\x16\x2e\x00"s);  // truncated CancelRequest
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().sqlstate, "08P01");
}

// ---------------------------------------------------------------- frontend

TEST(FrontendRoundTrip, SimpleAndExtendedQuery) {
  roundTrip(Query{"select 1"}, fe::kQuery);
  roundTrip(Query{""}, fe::kQuery);
  roundTrip(Parse{"s1", "select $1::int, $2", {23, 0}}, fe::kParse);
  roundTrip(Parse{}, fe::kParse);
  Bind b;
  b.portal = "p";
  b.statement = "s1";
  b.param_formats = {0, 1};
  b.params = {"42"s, std::nullopt};
  b.result_formats = {1};
  roundTrip(b, fe::kBind);
  roundTrip(Bind{}, fe::kBind);
  Bind one_format;
  one_format.param_formats = {1};
  one_format.params = {"\x00\x00\x00\x01"s, ""s, std::nullopt};
  roundTrip(one_format, fe::kBind);
  roundTrip(Describe{'S', "s1"}, fe::kDescribe);
  roundTrip(Describe{'P', ""}, fe::kDescribe);
  roundTrip(Execute{"", 0}, fe::kExecute);
  roundTrip(Execute{"p", 100}, fe::kExecute);
  roundTrip(Close{'S', "s1"}, fe::kClose);
  roundTrip(Close{'P', "p"}, fe::kClose);
  roundTrip(Sync{}, fe::kSync);
  roundTrip(Flush{}, fe::kFlush);
  roundTrip(Terminate{}, fe::kTerminate);
}

TEST(FrontendRoundTrip, CopyAndAuth) {
  roundTrip(CopyData{"1\talice\n2\tbob\n"}, fe::kCopyData);
  roundTrip(CopyData{"\0\xff binary\0"s}, fe::kCopyData);
  roundTrip(CopyData{}, fe::kCopyData);
  roundTrip(CopyDone{}, fe::kCopyDone);
  roundTrip(CopyFail{"client gave up"}, fe::kCopyFail);
  roundTrip(PasswordMessage{"md5abcdef0123456789abcdef012345678"}, fe::kPassword);
  roundTrip(SaslInitialResponse{"SCRAM-SHA-256", "n,,n=,r=abc"s}, fe::kPassword);
  roundTrip(SaslInitialResponse{"SCRAM-SHA-256", std::nullopt}, fe::kPassword);
  roundTrip(SaslInitialResponse{"SCRAM-SHA-256", ""s}, fe::kPassword);
  roundTrip(SaslResponse{"c=biws,r=abc,p=xyz"}, fe::kPassword);
  roundTrip(FunctionCall{1598, {0}, {"x"s, std::nullopt}, 1}, fe::kFunctionCall);
  roundTrip(FunctionCall{}, fe::kFunctionCall);
}

TEST(FrontendRoundTrip, BindWithManyParameters) {
  // Postgres reads parameter counts unsigned: up to 65535 parameters are legal.
  Bind b;
  b.param_formats = {1};
  b.params.assign(40000, "v"s);
  roundTrip(b, fe::kBind);
  Parse p{"", "insert ...", std::vector<int32_t>(65535, 23)};
  roundTrip(p, fe::kParse);
}

TEST(FrontendGolden, MatchesProtocolBytes) {
  std::string buf;
  Query{"select 1"}.encode(buf);
  EXPECT_EQ(buf, "Q\x00\x00\x00\x0dselect 1\0"s);
  buf.clear();
  Parse{"", "select $1", {23}}.encode(buf);
  EXPECT_EQ(buf, "P\x00\x00\x00\x15\0select $1\0\x00\x01\x00\x00\x00\x17"s);
  buf.clear();
  Bind b;
  b.params = {"7"s, std::nullopt};
  b.encode(buf);
  EXPECT_EQ(buf,
            "B\x00\x00\x00\x15\0\0\x00\x00\x00\x02\x00\x00\x00\x01"
            "7\xff\xff\xff\xff\x00\x00"s);
  buf.clear();
  Execute{"", 0}.encode(buf);
  Sync{}.encode(buf);
  EXPECT_EQ(buf, "E\x00\x00\x00\x09\0\x00\x00\x00\x00S\x00\x00\x00\x04"s);
  buf.clear();
  SaslInitialResponse{"SCRAM-SHA-256", "abc"s}.encode(buf);
  EXPECT_EQ(buf,
            "p\x00\x00\x00\x19SCRAM-SHA-256\0\x00\x00\x00\x03"
            "abc"s);
}

TEST(Bind, ParamFormat) {
  Bind b;
  b.params = {"1"s, "2"s};
  EXPECT_EQ(b.paramFormat(1), 0);
  b.param_formats = {1};
  EXPECT_EQ(b.paramFormat(0), 1);
  EXPECT_EQ(b.paramFormat(1), 1);
  b.param_formats = {0, 1};
  EXPECT_EQ(b.paramFormat(0), 0);
  EXPECT_EQ(b.paramFormat(1), 1);
}

TEST(FrontendHostile, TruncatedAndTrailing) {
  expectPrefixesAndTrailingRejected(Query{"select 1"});
  expectPrefixesAndTrailingRejected(Parse{"s", "select $1", {23, 25}});
  Bind b;
  b.portal = "p";
  b.statement = "s";
  b.param_formats = {1, 0};
  b.params = {"abc"s, std::nullopt};
  b.result_formats = {0, 1, 1};
  expectPrefixesAndTrailingRejected(b);
  expectPrefixesAndTrailingRejected(Describe{'S', "s"});
  expectPrefixesAndTrailingRejected(Execute{"p", 5});
  expectPrefixesAndTrailingRejected(Close{'P', "p"});
  expectPrefixesAndTrailingRejected(CopyFail{"why"});
  expectPrefixesAndTrailingRejected(PasswordMessage{"secret"});
  expectPrefixesAndTrailingRejected(SaslInitialResponse{"SCRAM-SHA-256", "n,,n=,r=x"s});
  expectPrefixesAndTrailingRejected(FunctionCall{1598, {0, 1}, {"x"s, "y"s}, 0});
  expectInvalid<Sync>("x");
  expectInvalid<Flush>("x");
  expectInvalid<Terminate>("x");
  expectInvalid<CopyDone>("x");
}

TEST(FrontendHostile, MissingNul) {
  expectInvalid<Query>("select 1", "NUL");
  expectInvalid<Parse>("s\0select 1"s, "NUL");
  expectInvalid<Describe>("Sname", "NUL");
  expectInvalid<PasswordMessage>("secret", "NUL");
}

TEST(FrontendHostile, BadKinds) {
  expectInvalid<Describe>("X\0"s, "kind");
  expectInvalid<Close>("s\0"s, "kind");
  expectInvalid<Describe>(""s);
}

TEST(FrontendHostile, BadBindCountsAndLengths) {
  // Huge parameter-format count with nothing behind it.
  expectInvalid<Bind>("\0\0\xff\xff"s, "number of parameter format code");
  // 3 parameter values announced, 1 present.
  expectInvalid<Bind>("\0\0\x00\x00\x00\x03\x00\x00\x00\x01x\x00\x00"s,
                      "number of parameter value");
  // Value length -2.
  expectInvalid<Bind>("\0\0\x00\x00\x00\x01\xff\xff\xff\xfe\x00\x00"s, "invalid length -2");
  // Value length larger than the payload.
  expectInvalid<Bind>("\0\0\x00\x00\x00\x01\x7f\xff\xff\xff\x00\x00"s, "truncated");
  // Format code 2.
  expectInvalid<Bind>("\0\0\x00\x01\x00\x02\x00\x00\x00\x00"s, "format");
  // Result format code 7.
  expectInvalid<Bind>("\0\0\x00\x00\x00\x00\x00\x01\x00\x07"s, "format");
  // Two parameter formats but three parameters.
  expectInvalid<Bind>(
      "\0\0\x00\x02\x00\x00\x00\x01\x00\x03\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"
      "\x00\x00"s,
      "2 parameter formats but 3 parameters");
}

TEST(FrontendHostile, BadParseCounts) {
  expectInvalid<Parse>("\0select\0\xff\xff"s, "number of parameter types");
  expectInvalid<Parse>("\0select\0\x00\x02\x00\x00\x00\x17"s);
}

TEST(FrontendHostile, SaslInitialResponseLengths) {
  expectInvalid<SaslInitialResponse>("M\0\xff\xff\xff\xfe"s, "invalid length -2");
  expectInvalid<SaslInitialResponse>(
      "M\0\x00\x00\x00\x05"
      "abc"s,
      "truncated");
  expectInvalid<SaslInitialResponse>("M\0\x00\x00"s);
}

TEST(FrontendHostile, FunctionCallResultFormat) {
  expectInvalid<FunctionCall>("\x00\x00\x00\x01\x00\x00\x00\x00\x00\x05"s, "format");
}

// ---------------------------------------------------------------- backend

TEST(BackendRoundTrip, Authentication) {
  authRoundTrip(AuthenticationOk{});
  authRoundTrip(AuthenticationCleartextPassword{});
  authRoundTrip(AuthenticationMd5Password{{'\x01', '\xff', '\0', 'z'}});
  authRoundTrip(AuthenticationSasl{{"SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"}});
  authRoundTrip(AuthenticationSasl{});
  authRoundTrip(AuthenticationSaslContinue{"r=abc,s=c2FsdA==,i=4096"});
  authRoundTrip(AuthenticationSaslFinal{"v=c2lnbmF0dXJl"});
}

TEST(BackendRoundTrip, SessionAndResults) {
  roundTrip(BackendKeyData{4242, -7}, be::kBackendKeyData);
  roundTrip(ParameterStatus{"server_version", "15.6"}, be::kParameterStatus);
  roundTrip(ReadyForQuery{'I'}, be::kReadyForQuery);
  roundTrip(ReadyForQuery{'T'}, be::kReadyForQuery);
  roundTrip(ReadyForQuery{'E'}, be::kReadyForQuery);
  roundTrip(NegotiateProtocolVersion{0, {"_pq_.compression", "_pq_.x"}},
            be::kNegotiateProtocolVersion);
  roundTrip(NegotiateProtocolVersion{}, be::kNegotiateProtocolVersion);
  RowDescription rd;
  rd.fields = {
      {"id", 16384, 1, 20, 8, -1, 0}, {"name", 16384, 2, 25, -1, -1, 1}, {"", 0, 0, 23, 4, -1, 0}};
  roundTrip(rd, be::kRowDescription);
  roundTrip(RowDescription{}, be::kRowDescription);
  roundTrip(DataRow{{"1"s, std::nullopt, ""s, "\0\xff"s}}, be::kDataRow);
  roundTrip(DataRow{}, be::kDataRow);
  roundTrip(CommandComplete{"INSERT 0 3"}, be::kCommandComplete);
  roundTrip(EmptyQueryResponse{}, be::kEmptyQueryResponse);
}

TEST(BackendRoundTrip, ErrorsAndNotices) {
  ErrorResponse e;
  e.fields = {{'S', "ERROR"}, {'V', "ERROR"},
              {'C', "42P01"}, {'M', "relation \"t\" does not exist"},
              {'P', "15"},    {'F', "parse_relation.c"},
              {'L', "1392"},  {'R', "parserOpenTable"}};
  roundTrip(e, be::kErrorResponse);
  roundTrip(ErrorResponse{}, be::kErrorResponse);
  NoticeResponse n;
  n.fields = {{'S', "NOTICE"}, {'V', "NOTICE"}, {'C', "00000"}, {'M', "hello"}};
  roundTrip(n, be::kNoticeResponse);
}

TEST(BackendRoundTrip, ExtendedQueryRepliesCopyAndAsync) {
  roundTrip(ParseComplete{}, be::kParseComplete);
  roundTrip(BindComplete{}, be::kBindComplete);
  roundTrip(CloseComplete{}, be::kCloseComplete);
  roundTrip(NoData{}, be::kNoData);
  roundTrip(PortalSuspended{}, be::kPortalSuspended);
  roundTrip(ParameterDescription{{23, 25, 0}}, be::kParameterDescription);
  roundTrip(ParameterDescription{}, be::kParameterDescription);
  roundTrip(CopyInResponse{0, {0, 0, 0}}, be::kCopyInResponse);
  roundTrip(CopyInResponse{1, {1, 1}}, be::kCopyInResponse);
  roundTrip(CopyOutResponse{0, {0}}, be::kCopyOutResponse);
  roundTrip(CopyOutResponse{1, {0, 1}}, be::kCopyOutResponse);
  roundTrip(CopyBothResponse{0, {}}, be::kCopyBothResponse);
  roundTrip(CopyData{"row\n"}, be::kCopyData);
  roundTrip(CopyDone{}, be::kCopyDone);
  roundTrip(NotificationResponse{99, "jobs", "{\"id\":1}"}, be::kNotificationResponse);
  roundTrip(NotificationResponse{99, "jobs", ""}, be::kNotificationResponse);
  roundTrip(FunctionCallResponse{"result"s}, be::kFunctionCallResponse);
  roundTrip(FunctionCallResponse{std::nullopt}, be::kFunctionCallResponse);
  roundTrip(FunctionCallResponse{""s}, be::kFunctionCallResponse);
}

TEST(BackendGolden, MatchesPostgresBytes) {
  std::string buf;
  writeReadyForQuery(buf, 'I');
  EXPECT_EQ(buf, "Z\x00\x00\x00\x05I"s);
  buf.clear();
  writeParameterStatus(buf, "client_encoding", "UTF8");
  EXPECT_EQ(buf,
            "S\x00\x00\x00\x19"
            "client_encoding\0UTF8\0"s);
  buf.clear();
  AuthenticationMd5Password{{'a', 'b', 'c', 'd'}}.encode(buf);
  EXPECT_EQ(buf,
            "R\x00\x00\x00\x0c\x00\x00\x00\x05"
            "abcd"s);
  buf.clear();
  AuthenticationSasl{{"SCRAM-SHA-256"}}.encode(buf);
  EXPECT_EQ(buf, "R\x00\x00\x00\x17\x00\x00\x00\x0aSCRAM-SHA-256\0\0"s);
  buf.clear();
  DataRow{{"1"s, std::nullopt}}.encode(buf);
  EXPECT_EQ(buf,
            "D\x00\x00\x00\x0f\x00\x02\x00\x00\x00\x01"
            "1\xff\xff\xff\xff"s);
}

TEST(BackendGolden, DecodesARealPostgresError) {
  // As sent by Postgres 15 for "select * from nope".
  const std::string payload =
      "SERROR\0VERROR\0C42P01\0Mrelation \"nope\" does not exist\0P15\0"
      "Fparse_relation.c\0L1392\0RparserOpenTable\0\0"s;
  Result<ErrorResponse> r = ErrorResponse::decode(payload);
  ASSERT_TRUE(r.ok()) << r.error().describe();
  EXPECT_EQ(r->field('C'), "42P01");
  EXPECT_EQ(r->field('P'), "15");
  EXPECT_EQ(r->field('D'), "");
  Error e = r->toError();
  EXPECT_EQ(e.severity, "ERROR");
  EXPECT_EQ(e.sqlstate, "42P01");
  EXPECT_EQ(e.message, "relation \"nope\" does not exist");
  EXPECT_TRUE(e.detail.empty());
}

TEST(ErrorResponse, FromErrorAndBack) {
  Error e = Error::fatal(sqlstate::kProtocolViolation, "bad", "the detail");
  e.hint = "the hint";
  ErrorResponse r = ErrorResponse::fromError(e);
  ASSERT_EQ(r.fields.size(), 6u);
  EXPECT_EQ(r.fields[0], std::make_pair('S', "FATAL"s));
  EXPECT_EQ(r.fields[1], std::make_pair('V', "FATAL"s));
  EXPECT_EQ(r.field('C'), "08P01");
  EXPECT_EQ(r.field('M'), "bad");
  EXPECT_EQ(r.field('D'), "the detail");
  EXPECT_EQ(r.field('H'), "the hint");
  Error back = r.toError();
  EXPECT_EQ(back.severity, "FATAL");
  EXPECT_EQ(back.sqlstate, "08P01");
  EXPECT_EQ(back.message, "bad");
  EXPECT_EQ(back.detail, "the detail");
  EXPECT_EQ(back.hint, "the hint");

  // No detail or hint: those fields are left out.
  ErrorResponse plain = ErrorResponse::fromError(Error::make("0A000", "nope"));
  EXPECT_EQ(plain.fields.size(), 4u);
  EXPECT_EQ(plain.field('S'), "ERROR");
}

TEST(ErrorResponse, WriteErrorMatchesFromError) {
  Error e = Error::make(sqlstate::kFeatureNotSupported, "no", "", "try this");
  std::string a, b;
  writeError(a, e);
  ErrorResponse::fromError(e).encode(b);
  EXPECT_EQ(a, b);
  FrameResult f = frameTyped(a, kMax);
  ASSERT_EQ(f.status, FrameStatus::kComplete);
  EXPECT_EQ(f.frame.type, 'E');
  Result<ErrorResponse> r = ErrorResponse::decode(f.frame.payload);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->field('H'), "try this");

  Error n = Error::make("00000", "just saying");
  n.severity = "NOTICE";
  std::string c, d;
  writeNotice(c, n);
  NoticeResponse::fromError(n).encode(d);
  EXPECT_EQ(c, d);
  EXPECT_EQ(c[0], 'N');
}

TEST(ErrorResponse, ToErrorPrefersNonLocalizedSeverity) {
  ErrorResponse r{{{'S', "FEHLER"}, {'V', "ERROR"}, {'M', "x"}}};
  EXPECT_EQ(r.toError().severity, "ERROR");
  ErrorResponse old{{{'S', "ERROR"}, {'M', "x"}}};
  EXPECT_EQ(old.toError().severity, "ERROR");
  EXPECT_EQ(old.toError().sqlstate, "XX000");  // no C field: Error's default
}

TEST(BackendHostile, TruncatedAndTrailing) {
  expectPrefixesAndTrailingRejected(AuthenticationOk{});
  expectPrefixesAndTrailingRejected(AuthenticationCleartextPassword{});
  expectPrefixesAndTrailingRejected(AuthenticationMd5Password{{'a', 'b', 'c', 'd'}});
  expectPrefixesAndTrailingRejected(AuthenticationSasl{{"SCRAM-SHA-256"}});
  expectPrefixesAndTrailingRejected(BackendKeyData{1, 2});
  expectPrefixesAndTrailingRejected(ParameterStatus{"a", "b"});
  expectPrefixesAndTrailingRejected(ReadyForQuery{'T'});
  expectPrefixesAndTrailingRejected(NegotiateProtocolVersion{0, {"_pq_.a"}});
  RowDescription rd;
  rd.fields = {{"id", 1, 1, 23, 4, -1, 0}, {"x", 1, 2, 25, -1, -1, 1}};
  expectPrefixesAndTrailingRejected(rd);
  expectPrefixesAndTrailingRejected(DataRow{{"1"s, std::nullopt, "abc"s}});
  expectPrefixesAndTrailingRejected(CommandComplete{"SELECT 1"});
  expectPrefixesAndTrailingRejected(ErrorResponse{{{'S', "ERROR"}, {'M', "m"}}});
  expectPrefixesAndTrailingRejected(NoticeResponse{{{'S', "NOTICE"}}});
  expectPrefixesAndTrailingRejected(ParameterDescription{{23, 25}});
  expectPrefixesAndTrailingRejected(CopyInResponse{1, {0, 1}});
  expectPrefixesAndTrailingRejected(CopyOutResponse{0, {0}});
  expectPrefixesAndTrailingRejected(CopyBothResponse{0, {0, 0}});
  expectPrefixesAndTrailingRejected(NotificationResponse{1, "c", "p"});
  expectPrefixesAndTrailingRejected(FunctionCallResponse{"r"s});
  expectPrefixesAndTrailingRejected(FunctionCallResponse{std::nullopt});
  expectInvalid<EmptyQueryResponse>("x");
  expectInvalid<ParseComplete>("x");
  expectInvalid<BindComplete>("x");
  expectInvalid<CloseComplete>("x");
  expectInvalid<NoData>("x");
  expectInvalid<PortalSuspended>("x");
  // The SASL continue/final data is free-form but the request code is not.
  expectInvalid<AuthenticationSaslContinue>("\x00\x00\x00"s);
  expectInvalid<AuthenticationSaslFinal>("\x00\x00\x00\x0b"s, "request code 11");
}

TEST(BackendHostile, NegativeAndHugeCounts) {
  expectInvalid<DataRow>("\xff\xff"s, "negative");
  expectInvalid<DataRow>("\x7f\xff\x00\x00\x00\x00"s, "remaining");
  expectInvalid<DataRow>("\x00\x01\xff\xff\xff\xfe"s, "invalid length -2");
  expectInvalid<DataRow>("\x00\x01\x7f\xff\xff\xff"s, "truncated");
  expectInvalid<RowDescription>("\x80\x00"s, "negative");
  expectInvalid<RowDescription>(
      "\x00\x02"
      "a\0\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
      "\x00\x00\x00\x00\x00\x00"s,
      "remaining");
  expectInvalid<CopyInResponse>("\x00\xff\xfe"s, "negative");
  expectInvalid<CopyOutResponse>("\x00\x10\x00"s, "remaining");
  expectInvalid<ParameterDescription>("\xff\xff\x00\x00\x00\x17"s, "remaining");
  expectInvalid<NegotiateProtocolVersion>("\x00\x00\x00\x00\xff\xff\xff\xff"s, "negative");
  expectInvalid<NegotiateProtocolVersion>("\x00\x00\x00\x00\x7f\xff\xff\xff"s, "remaining");
}

TEST(BackendHostile, BadEnumsAndMissingNuls) {
  expectInvalid<ReadyForQuery>("X", "transaction status");
  expectInvalid<ReadyForQuery>("", "truncated");
  expectInvalid<CopyInResponse>("\x02\x00\x00"s, "overall format");
  expectInvalid<CopyInResponse>("\x00\x00\x01\x00\x01"s, "binary column format");
  expectInvalid<CopyOutResponse>("\x01\x00\x01\x00\x02"s, "format");
  RowDescription rd;
  rd.fields = {{"id", 1, 1, 23, 4, -1, 2}};
  expectInvalid<RowDescription>(payloadOf(rd), "format");
  expectInvalid<ErrorResponse>("SERROR"s, "NUL");
  expectInvalid<ErrorResponse>("SERROR\0"s);  // no terminator
  expectInvalid<ErrorResponse>("SERROR\0\0\0"s, "trailing");
  expectInvalid<ParameterStatus>("name\0value"s, "NUL");
  expectInvalid<CommandComplete>("SELECT 1", "NUL");
  expectInvalid<AuthenticationSasl>("\x00\x00\x00\x0aSCRAM-SHA-256\0"s);  // no empty terminator
}

TEST(BackendHostile, DecodeAuthentication) {
  Result<AuthenticationRequest> r = decodeAuthentication("\x00\x00\x00\x07"s);  // GSSAPI
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().sqlstate, "0A000");
  r = decodeAuthentication("\x00\x00\x00\x63"s);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().sqlstate, "08P01");
  EXPECT_EQ(r.error().message, "invalid Authentication message");
  r = decodeAuthentication("\x00\x00"s);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().sqlstate, "08P01");
  r = decodeAuthentication(
      "\x00\x00\x00\x05"
      "abc"s);  // short md5 salt
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().sqlstate, "08P01");
  r = decodeAuthentication("\x00\x00\x00\x00\x00"s);  // AuthenticationOk with a trailing byte
  ASSERT_FALSE(r.ok());
}

}  // namespace
}  // namespace shardgate::wire
