// Parsing and formatting of SCRAM-SHA-256 verifiers (see scram_verifier.h).
#include "common/scram_verifier.h"

#include <charconv>
#include <climits>
#include <utility>

#include "common/base64.h"

namespace shardgate {

namespace {

constexpr size_t kKeyLength = 32;  // SHA-256 output
// Long enough for any count a person could mean, short enough that echoing it stays readable.
constexpr size_t kMaxEchoedDigits = 20;

Error invalidVerifier(std::string detail) {
  return Error::make(sqlstate::kInvalidParameterValue, "invalid SCRAM verifier", std::move(detail));
}

// The detail for a count parseScramIterations refused.
Error invalidIterations(std::string_view text) {
  // A digit string is no secret (the count is sent to every client in server-first-message), so
  // it may be quoted; anything else might be a mistyped password and is not.
  const bool digits =
      !text.empty() && text.find_first_not_of("0123456789") == std::string_view::npos;
  if (!digits) return invalidVerifier("The iteration count is not a positive integer.");
  const std::string quoted =
      text.size() <= kMaxEchoedDigits ? "\"" + std::string(text) + "\" " : std::string();
  if (text.find_first_not_of('0') == std::string_view::npos) {
    return invalidVerifier("The iteration count " + quoted + "is not a positive integer.");
  }
  return invalidVerifier("The iteration count " + quoted + "is out of range (1.." +
                         std::to_string(INT_MAX) + ").");
}

}  // namespace

std::optional<int> parseScramIterations(std::string_view text) {
  if (text.empty() || text.find_first_not_of("0123456789") != std::string_view::npos) {
    return std::nullopt;
  }
  long long value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value < 1 || value > INT_MAX) {
    return std::nullopt;
  }
  return static_cast<int>(value);
}

Result<ScramVerifier> parseScramVerifier(std::string_view text) {
  if (!text.starts_with(kScramVerifierPrefix)) {
    return invalidVerifier("A SCRAM verifier starts with \"SCRAM-SHA-256$\".");
  }
  std::string_view rest = text.substr(kScramVerifierPrefix.size());
  size_t dollar = rest.find('$');
  if (dollar == std::string_view::npos) {
    return invalidVerifier("Expected \"<iterations>:<salt>$<StoredKey>:<ServerKey>\".");
  }
  std::string_view params = rest.substr(0, dollar);
  std::string_view keys = rest.substr(dollar + 1);
  size_t colon = params.find(':');
  size_t key_colon = keys.find(':');
  if (colon == std::string_view::npos || key_colon == std::string_view::npos) {
    return invalidVerifier("Expected \"<iterations>:<salt>$<StoredKey>:<ServerKey>\".");
  }
  ScramVerifier verifier;
  const std::optional<int> iterations = parseScramIterations(params.substr(0, colon));
  if (!iterations) return invalidIterations(params.substr(0, colon));
  verifier.iterations = *iterations;
  auto salt = base64Decode(params.substr(colon + 1));
  if (!salt || salt->empty()) return invalidVerifier("The salt is not valid base64.");
  verifier.salt = std::move(*salt);
  auto stored_key = base64Decode(keys.substr(0, key_colon));
  if (!stored_key || stored_key->size() != kKeyLength) {
    return invalidVerifier("The StoredKey is not 32 bytes of base64.");
  }
  auto server_key = base64Decode(keys.substr(key_colon + 1));
  if (!server_key || server_key->size() != kKeyLength) {
    return invalidVerifier("The ServerKey is not 32 bytes of base64.");
  }
  verifier.stored_key = std::move(*stored_key);
  verifier.server_key = std::move(*server_key);
  return verifier;
}

std::string formatScramVerifier(const ScramVerifier& verifier) {
  return std::string(kScramVerifierPrefix) + std::to_string(verifier.iterations) + ":" +
         base64Encode(verifier.salt) + "$" + base64Encode(verifier.stored_key) + ":" +
         base64Encode(verifier.server_key);
}

}  // namespace shardgate
