// Recognises the password forms a config may hold: plain text, an md5 hash or a SCRAM verifier.
// A SCRAM verifier's contents are parsed by common/scram_verifier.h.
#pragma once

#include <string_view>

#include "conf/config.h"

namespace shardgate::conf {

// The kind a password string is, by its shape alone, the way Postgres tells them apart:
// "" -> kNone, "SCRAM-SHA-256$..." -> kScramVerifier, "md5" + 32 characters -> kMd5Hash,
// anything else -> kPlain. Does not check that a verifier or hash is well-formed.
PasswordKind classifyPassword(std::string_view password);

// True if `text` is "md5" followed by 32 lowercase hex digits (what Postgres's md5 produces).
bool isWellFormedMd5Hash(std::string_view text);

}  // namespace shardgate::conf
