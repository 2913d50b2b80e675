// Error value carried through every layer; maps 1:1 onto a Postgres ErrorResponse.
#pragma once

#include <string>
#include <string_view>
#include <utility>

namespace shardgate {

// SQLSTATE codes used by shardgate itself (Postgres appendix A).
namespace sqlstate {
inline constexpr std::string_view kConnectionFailure = "08006";
inline constexpr std::string_view kConnectionException = "08000";
inline constexpr std::string_view kProtocolViolation = "08P01";
inline constexpr std::string_view kFeatureNotSupported = "0A000";
inline constexpr std::string_view kInvalidAuthorization = "28000";
inline constexpr std::string_view kInvalidPassword = "28P01";
inline constexpr std::string_view kInvalidCatalogName = "3D000";
inline constexpr std::string_view kTooManyConnections = "53300";
inline constexpr std::string_view kOutOfMemory = "53200";
inline constexpr std::string_view kAdminShutdown = "57P01";
inline constexpr std::string_view kCannotConnectNow = "57P03";
inline constexpr std::string_view kQueryCanceled = "57014";
inline constexpr std::string_view kInternalError = "XX000";
inline constexpr std::string_view kConfigFileError = "F0000";
inline constexpr std::string_view kSyntaxError = "42601";
inline constexpr std::string_view kInvalidParameterValue = "22023";
inline constexpr std::string_view kCantChangeRuntimeParam = "55P02";
inline constexpr std::string_view kCharacterNotInRepertoire = "22021";
inline constexpr std::string_view kStatementTooComplex = "54001";
inline constexpr std::string_view kDuplicatePreparedStatement = "42P05";
inline constexpr std::string_view kDuplicateCursor = "42P03";  // a portal name bound twice
inline constexpr std::string_view kDeadlockDetected = "40P01";
inline constexpr std::string_view kInvalidStatementName = "26000";
inline constexpr std::string_view kInvalidTextRepresentation = "22P02";
inline constexpr std::string_view kInvalidRowCountInLimit = "2201W";
inline constexpr std::string_view kInvalidRowCountInOffset = "2201X";
inline constexpr std::string_view kUndefinedObject = "42704";
// Sent by Postgres to logins of a database that does not allow connections (datallowconn).
inline constexpr std::string_view kObjectNotInPrerequisiteState = "55000";
}  // namespace sqlstate

// An expected failure: bad client input, a network problem, an unsupported query.
// Never thrown; returned inside Result<T>.
struct Error {
  std::string severity = "ERROR";  // ERROR, FATAL or PANIC (as Postgres spells them)
  std::string sqlstate = std::string(sqlstate::kInternalError);
  std::string message;
  std::string detail;
  std::string hint;

  static Error make(std::string_view code, std::string message, std::string detail = {},
                    std::string hint = {}) {
    Error e;
    e.sqlstate = std::string(code);
    e.message = std::move(message);
    e.detail = std::move(detail);
    e.hint = std::move(hint);
    return e;
  }
  static Error fatal(std::string_view code, std::string message, std::string detail = {},
                     std::string hint = {}) {
    Error e = make(code, std::move(message), std::move(detail), std::move(hint));
    e.severity = "FATAL";
    return e;
  }

  // "SQLSTATE: message (detail)" for logs.
  std::string describe() const {
    std::string s = sqlstate + ": " + message;
    if (!detail.empty()) s += " (" + detail + ")";
    return s;
  }
};

}  // namespace shardgate
