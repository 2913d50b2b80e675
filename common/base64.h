// Strict standard base64 (RFC 4648 section 4, with padding) for SCRAM messages and verifiers.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace shardgate {

// Encodes with the standard alphabet and '=' padding, no line breaks.
std::string base64Encode(std::string_view raw);

// Decodes canonical base64 only: the length must be a multiple of 4, padding appears only at the
// end, no whitespace, and the unused bits of the last group must be zero. Anything else is
// nullopt, so a value always has exactly one accepted spelling (what SCRAM peers produce).
// The empty string decodes to the empty string.
std::optional<std::string> base64Decode(std::string_view text);

}  // namespace shardgate
