// Recognises the password forms a config may hold: plain text, an md5 hash or a SCRAM verifier.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/result.h"
#include "conf/config.h"

namespace shardgate::conf {

// A parsed "SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>" (as pg_authid stores it).
// The byte strings are decoded from base64.
struct ScramVerifier {
  uint32_t iterations = 0;
  std::string salt;        // non-empty
  std::string stored_key;  // 32 bytes: H(ClientKey)
  std::string server_key;  // 32 bytes
};

inline constexpr std::string_view kScramVerifierPrefix = "SCRAM-SHA-256$";

// The kind a password string is, by its shape alone, the way Postgres tells them apart:
// "" -> kNone, "SCRAM-SHA-256$..." -> kScramVerifier, "md5" + 32 characters -> kMd5Hash,
// anything else -> kPlain. Does not check that a verifier or hash is well-formed.
PasswordKind classifyPassword(std::string_view password);

// Parses a SCRAM verifier. The error's message says what is wrong (without a file position).
Result<ScramVerifier> parseScramVerifier(std::string_view text);

// True if `text` is "md5" followed by 32 lowercase hex digits (what Postgres's md5 produces).
bool isWellFormedMd5Hash(std::string_view text);

// Strict standard base64 (RFC 4648 alphabet, '=' padding required): nullopt if malformed.
std::optional<std::string> decodeBase64(std::string_view text);

}  // namespace shardgate::conf
