// Postgres's stored SCRAM-SHA-256 verifier text, parsed and formatted (no cryptography here).
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "common/result.h"

namespace shardgate {

// What pg_authid.rolpassword holds for a SCRAM user:
// "SCRAM-SHA-256$<iterations>:<salt b64>$<StoredKey b64>:<ServerKey b64>".
inline constexpr std::string_view kScramVerifierPrefix = "SCRAM-SHA-256$";

// A stored SCRAM-SHA-256 secret. salt, stored_key and server_key hold raw bytes (decoded).
struct ScramVerifier {
  int iterations = 4096;   // 1..INT_MAX: what PBKDF2 in OpenSSL and Postgres accept
  std::string salt;        // non-empty
  std::string stored_key;  // 32 bytes: H(ClientKey)
  std::string server_key;  // 32 bytes
};

// A SCRAM iteration count as Postgres writes it: decimal digits only, 1 to INT_MAX (PBKDF2 takes
// an int). nullopt for anything else. The verifier and the server-first-message ("i=") use it.
std::optional<int> parseScramIterations(std::string_view text);

// Parses a verifier. Base64 must be canonical (common/base64.h). Errors are 22023 "invalid SCRAM
// verifier" with a detail that names the bad part but never echoes the salt or keys, so the
// config loader and the login path refuse exactly the same strings.
Result<ScramVerifier> parseScramVerifier(std::string_view text);

// The verifier text of `verifier`, as Postgres writes it; parseScramVerifier reads it back.
std::string formatScramVerifier(const ScramVerifier& verifier);

}  // namespace shardgate
