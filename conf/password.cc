// Password shape recognition and SCRAM verifier parsing (see password.h).
#include "conf/password.h"

#include <charconv>

namespace shardgate::conf {
namespace {

constexpr size_t kMd5HashLength = 3 + 32;
constexpr size_t kScramKeyLength = 32;  // SHA-256 output

int base64Value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

Error malformed(std::string what) {
  return Error::fatal(sqlstate::kConfigFileError, "malformed SCRAM verifier: " + std::move(what));
}

}  // namespace

PasswordKind classifyPassword(std::string_view password) {
  if (password.empty()) return PasswordKind::kNone;
  if (password.starts_with(kScramVerifierPrefix)) return PasswordKind::kScramVerifier;
  if (password.size() == kMd5HashLength && password.starts_with("md5")) {
    return PasswordKind::kMd5Hash;
  }
  return PasswordKind::kPlain;
}

bool isWellFormedMd5Hash(std::string_view text) {
  if (text.size() != kMd5HashLength || !text.starts_with("md5")) return false;
  for (char c : text.substr(3)) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

std::optional<std::string> decodeBase64(std::string_view text) {
  if (text.size() % 4 != 0) return std::nullopt;
  std::string out;
  out.reserve(text.size() / 4 * 3);
  for (size_t i = 0; i < text.size(); i += 4) {
    const bool last = i + 4 == text.size();
    int v[4];
    int padding = 0;
    for (int j = 0; j < 4; ++j) {
      const char c = text[i + j];
      // '=' may only end the last group: "xx==" or "xxx=".
      if (c == '=' && last && j >= 2 && (j == 3 || text[i + 3] == '=')) {
        v[j] = 0;
        ++padding;
        continue;
      }
      v[j] = base64Value(c);
      if (v[j] < 0) return std::nullopt;
    }
    const uint32_t bits =
        (uint32_t(v[0]) << 18) | (uint32_t(v[1]) << 12) | (uint32_t(v[2]) << 6) | uint32_t(v[3]);
    out.push_back(char((bits >> 16) & 0xff));
    if (padding < 2) out.push_back(char((bits >> 8) & 0xff));
    if (padding < 1) out.push_back(char(bits & 0xff));
  }
  return out;
}

Result<ScramVerifier> parseScramVerifier(std::string_view text) {
  if (!text.starts_with(kScramVerifierPrefix)) {
    return malformed("it must start with \"SCRAM-SHA-256$\"");
  }
  std::string_view rest = text.substr(kScramVerifierPrefix.size());
  const size_t dollar = rest.find('$');
  if (dollar == std::string_view::npos) {
    return malformed("expected \"SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>\"");
  }
  const std::string_view params = rest.substr(0, dollar);
  const std::string_view keys = rest.substr(dollar + 1);
  const size_t colon1 = params.find(':');
  const size_t colon2 = keys.find(':');
  if (colon1 == std::string_view::npos || colon2 == std::string_view::npos) {
    return malformed("expected \"SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>\"");
  }

  ScramVerifier v;
  const std::string_view iterations = params.substr(0, colon1);
  const auto [end, ec] =
      std::from_chars(iterations.data(), iterations.data() + iterations.size(), v.iterations);
  if (iterations.empty() || ec != std::errc() || end != iterations.data() + iterations.size() ||
      v.iterations == 0) {
    return malformed("the iteration count \"" + std::string(iterations) +
                     "\" is not a positive integer");
  }

  auto salt = decodeBase64(params.substr(colon1 + 1));
  if (!salt || salt->empty()) return malformed("the salt is not non-empty base64");
  auto stored_key = decodeBase64(keys.substr(0, colon2));
  if (!stored_key || stored_key->size() != kScramKeyLength) {
    return malformed("the StoredKey is not 32 bytes of base64");
  }
  auto server_key = decodeBase64(keys.substr(colon2 + 1));
  if (!server_key || server_key->size() != kScramKeyLength) {
    return malformed("the ServerKey is not 32 bytes of base64");
  }
  v.salt = std::move(*salt);
  v.stored_key = std::move(*stored_key);
  v.server_key = std::move(*server_key);
  return v;
}

}  // namespace shardgate::conf
