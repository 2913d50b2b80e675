// SCRAM-SHA-256 (RFC 5802, RFC 7677) as Postgres speaks it: secrets, the server and client
// exchanges.
//
// No SASLprep is applied to passwords: ASCII passwords are unaffected, and Postgres itself falls
// back to the raw password bytes whenever SASLprep fails, so raw bytes match Postgres for every
// password that a client would send unnormalised. Channel binding is never offered, so
// SCRAM-SHA-256-PLUS is not a mechanism here and a client that demands binding ("p=") is refused.
#pragma once

#include <string>
#include <string_view>

#include "common/result.h"
#include "common/scram_verifier.h"

namespace shardgate::wire {

// A stored SCRAM-SHA-256 secret (raw bytes). Its text form, as in pg_authid.rolpassword, is read
// and written by parseScramVerifier / formatScramVerifier in common/scram_verifier.h, which the
// config loader uses too, so both refuse the same verifiers.
using ScramSecret = ScramVerifier;

// Derives a secret from a cleartext password. An empty salt means 16 random bytes (Postgres's
// default salt length); iterations below 1 are raised to 1.
ScramSecret makeScramSecret(std::string_view password, std::string_view salt = {},
                            int iterations = 4096);

// Verifying a cleartext password (the cleartext auth method) against a stored SCRAM secret.
bool scramPasswordMatches(const ScramSecret& secret, std::string_view password);

// Server side: shardgate authenticating a client. One object per exchange:
//   handleClientFirst (SASLInitialResponse) -> server-first (AuthenticationSASLContinue)
//   handleClientFinal (SASLResponse)        -> server-final (AuthenticationSASLFinal)
// Any error ends the exchange; later calls fail too.
class ScramServer {
 public:
  static constexpr std::string_view kMechanism = "SCRAM-SHA-256";

  // server_nonce is used as given (printable ASCII without ','); empty = 18 random bytes, base64.
  explicit ScramServer(ScramSecret secret, std::string server_nonce = {});

  // For an unknown user: an exchange that runs like a real one (the salt is derived from the user
  // name and a per-process random key, as Postgres does, so it is stable across attempts) and
  // always fails at the end with the same error as a wrong password, so a client cannot tell that
  // the user does not exist.
  static ScramServer mock(std::string_view user_name, int iterations = 4096);

  // client-first-message with its gs2 header (as carried by SASLInitialResponse) or bare
  // (starting "n="; then the gs2 header is taken to be "n,,"). Returns server-first-message.
  Result<std::string> handleClientFirst(std::string_view client_first);

  // Returns server-final-message ("v=...") once the client's proof is verified. A wrong proof is
  // FATAL 28P01 "password authentication failed for user \"<user_name>\""; malformed messages are
  // FATAL 08P01 "malformed SCRAM message" with a detail.
  Result<std::string> handleClientFinal(std::string_view client_final, std::string_view user_name);

  // True only once the client has proven it knows the password (never for a mock exchange).
  bool done() const { return state_ == State::kSucceeded; }

 private:
  enum class State { kExpectClientFirst, kExpectClientFinal, kSucceeded, kFailed };

  ScramServer(ScramSecret secret, std::string server_nonce, bool doomed);
  Result<std::string> parseClientFirst(std::string_view client_first);
  Result<std::string> parseClientFinal(std::string_view client_final, std::string_view user_name);

  ScramSecret secret_;
  std::string server_nonce_;
  bool doomed_ = false;  // a mock exchange: fail at the end whatever the proof
  State state_ = State::kExpectClientFirst;
  std::string gs2_header_;         // exactly as the client sent it, e.g. "n,,"
  std::string client_first_bare_;  // the part of AuthMessage the client sent first
  std::string client_nonce_;
  std::string server_first_;
};

// Client side: shardgate logging in to Postgres.
//   clientFirstMessage  -> SASLInitialResponse data
//   handleServerFirst   (AuthenticationSASLContinue data) -> SASLResponse data
//   handleServerFinal   (AuthenticationSASLFinal data)    -> ok once the server proved itself
class ScramClient {
 public:
  static constexpr std::string_view kMechanism = "SCRAM-SHA-256";

  // client_nonce: empty = 18 random bytes, base64. user_name goes into "n=" (Postgres ignores it
  // and libpq sends it empty, which is the default); it is escaped as RFC 5802 requires.
  explicit ScramClient(std::string password, std::string client_nonce = {},
                       std::string user_name = {});

  // "n,,n=<user>,r=<nonce>". The same string every call.
  std::string clientFirstMessage();

  // Checks the server's nonce, salt and iteration count and returns client-final-message.
  Result<std::string> handleServerFirst(std::string_view server_first);

  // Verifies the server signature: 08P01 when the message is malformed, 28P01 on a mismatch or a
  // server-reported error ("e=").
  Status handleServerFinal(std::string_view server_final);

  // True once the server signature has been verified.
  bool done() const { return state_ == State::kSucceeded; }

 private:
  enum class State { kExpectServerFirst, kExpectServerFinal, kSucceeded, kFailed };

  Result<std::string> parseServerFirst(std::string_view server_first);
  Status parseServerFinal(std::string_view server_final);

  std::string password_;
  std::string client_nonce_;
  std::string client_first_bare_;
  State state_ = State::kExpectServerFirst;
  std::string expected_server_signature_;
};

}  // namespace shardgate::wire
