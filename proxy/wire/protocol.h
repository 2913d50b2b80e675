// Constants of the Postgres frontend/backend protocol 3.0: request codes and message type bytes.
#pragma once

#include <cstdint>

namespace shardgate::wire {

// Startup-phase request codes (the int32 after the length word of an untyped packet).
inline constexpr int32_t kProtocolVersion30 = 196608;  // 3 << 16
inline constexpr int32_t kCancelRequestCode = 80877102;
inline constexpr int32_t kSslRequestCode = 80877103;
inline constexpr int32_t kGssEncRequestCode = 80877104;

// Postgres refuses startup packets longer than this (MAX_STARTUP_PACKET_LENGTH in pqcomm.h).
inline constexpr uint32_t kMaxStartupPacketLength = 10000;

inline constexpr int protocolMajor(int32_t version) {
  return static_cast<int>(static_cast<uint32_t>(version) >> 16);
}
inline constexpr int protocolMinor(int32_t version) {
  return static_cast<int>(static_cast<uint32_t>(version) & 0xFFFF);
}

// Message type bytes sent by the frontend (client) after the startup phase.
namespace fe {
inline constexpr char kQuery = 'Q';
inline constexpr char kParse = 'P';
inline constexpr char kBind = 'B';
inline constexpr char kDescribe = 'D';
inline constexpr char kExecute = 'E';
inline constexpr char kClose = 'C';
inline constexpr char kSync = 'S';
inline constexpr char kFlush = 'H';
inline constexpr char kTerminate = 'X';
inline constexpr char kCopyData = 'd';
inline constexpr char kCopyDone = 'c';
inline constexpr char kCopyFail = 'f';
// Also SASLInitialResponse, SASLResponse and GSSResponse: which one is meant follows from the
// authentication request the server sent last.
inline constexpr char kPassword = 'p';
inline constexpr char kFunctionCall = 'F';
}  // namespace fe

// Message type bytes sent by the backend (server).
namespace be {
inline constexpr char kAuthentication = 'R';
inline constexpr char kBackendKeyData = 'K';
inline constexpr char kBindComplete = '2';
inline constexpr char kCloseComplete = '3';
inline constexpr char kCommandComplete = 'C';
inline constexpr char kCopyData = 'd';
inline constexpr char kCopyDone = 'c';
inline constexpr char kCopyInResponse = 'G';
inline constexpr char kCopyOutResponse = 'H';
inline constexpr char kCopyBothResponse = 'W';
inline constexpr char kDataRow = 'D';
inline constexpr char kEmptyQueryResponse = 'I';
inline constexpr char kErrorResponse = 'E';
inline constexpr char kFunctionCallResponse = 'V';
inline constexpr char kNegotiateProtocolVersion = 'v';
inline constexpr char kNoData = 'n';
inline constexpr char kNoticeResponse = 'N';
inline constexpr char kNotificationResponse = 'A';
inline constexpr char kParameterDescription = 't';
inline constexpr char kParameterStatus = 'S';
inline constexpr char kParseComplete = '1';
inline constexpr char kPortalSuspended = 's';
inline constexpr char kReadyForQuery = 'Z';
inline constexpr char kRowDescription = 'T';
}  // namespace be

// The int32 request code of an Authentication ('R') message.
namespace auth {
inline constexpr int32_t kOk = 0;
inline constexpr int32_t kKerberosV5 = 2;
inline constexpr int32_t kCleartextPassword = 3;
inline constexpr int32_t kMd5Password = 5;
inline constexpr int32_t kScmCredential = 6;
inline constexpr int32_t kGss = 7;
inline constexpr int32_t kGssContinue = 8;
inline constexpr int32_t kSspi = 9;
inline constexpr int32_t kSasl = 10;
inline constexpr int32_t kSaslContinue = 11;
inline constexpr int32_t kSaslFinal = 12;
}  // namespace auth

// ReadyForQuery transaction status bytes.
namespace txn {
inline constexpr char kIdle = 'I';
inline constexpr char kInBlock = 'T';
inline constexpr char kFailed = 'E';
}  // namespace txn

// Every type the frontend may send after startup (PasswordMessage and its SASL/GSS variants
// included).
constexpr bool isFrontendMessageType(char type) {
  switch (type) {
    case fe::kQuery:
    case fe::kParse:
    case fe::kBind:
    case fe::kDescribe:
    case fe::kExecute:
    case fe::kClose:
    case fe::kSync:
    case fe::kFlush:
    case fe::kTerminate:
    case fe::kCopyData:
    case fe::kCopyDone:
    case fe::kCopyFail:
    case fe::kPassword:
    case fe::kFunctionCall:
      return true;
    default:
      return false;
  }
}

// Every type the backend may send.
constexpr bool isBackendMessageType(char type) {
  switch (type) {
    case be::kAuthentication:
    case be::kBackendKeyData:
    case be::kBindComplete:
    case be::kCloseComplete:
    case be::kCommandComplete:
    case be::kCopyData:
    case be::kCopyDone:
    case be::kCopyInResponse:
    case be::kCopyOutResponse:
    case be::kCopyBothResponse:
    case be::kDataRow:
    case be::kEmptyQueryResponse:
    case be::kErrorResponse:
    case be::kFunctionCallResponse:
    case be::kNegotiateProtocolVersion:
    case be::kNoData:
    case be::kNoticeResponse:
    case be::kNotificationResponse:
    case be::kParameterDescription:
    case be::kParameterStatus:
    case be::kParseComplete:
    case be::kPortalSuspended:
    case be::kReadyForQuery:
    case be::kRowDescription:
      return true;
    default:
      return false;
  }
}

}  // namespace shardgate::wire
