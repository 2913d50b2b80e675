// Password shape recognition (see password.h).
#include "conf/password.h"

#include "common/scram_verifier.h"

namespace shardgate::conf {
namespace {

constexpr size_t kMd5HashLength = 3 + 32;

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

}  // namespace shardgate::conf
