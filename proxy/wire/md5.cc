// Postgres's md5 password scheme on top of OpenSSL's MD5.
#include "proxy/wire/md5.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <cstdlib>

namespace shardgate::wire {

namespace {

constexpr std::string_view kMd5Prefix = "md5";
constexpr size_t kMd5HashLength = 35;  // "md5" + 32 hex digits

bool equalConstantTime(std::string_view a, std::string_view b) {
  // Lengths are public (every valid answer is 35 bytes); only the contents must not leak.
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace

std::string md5Hex(std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (EVP_Digest(data.data(), data.size(), digest, &length, EVP_md5(), nullptr) != 1) {
    // Only possible if the MD5 implementation is unavailable (e.g. a FIPS-only provider): a
    // broken installation, not an input problem, and no answer here would be correct.
    std::abort();
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(length * 2);
  for (unsigned int i = 0; i < length; ++i) {
    out.push_back(kHex[digest[i] >> 4]);
    out.push_back(kHex[digest[i] & 0x0f]);
  }
  return out;
}

std::string md5PasswordHash(std::string_view user, std::string_view password) {
  std::string input;
  input.reserve(password.size() + user.size());
  input.append(password).append(user);
  return std::string(kMd5Prefix) + md5Hex(input);
}

bool isMd5PasswordHash(std::string_view text) {
  if (text.size() != kMd5HashLength || !text.starts_with(kMd5Prefix)) return false;
  for (char c : text.substr(kMd5Prefix.size())) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

std::string md5SaltedResponse(std::string_view stored_md5_hash, std::string_view salt4) {
  if (!isMd5PasswordHash(stored_md5_hash) || salt4.size() != 4) return {};
  std::string input(stored_md5_hash.substr(kMd5Prefix.size()));
  input.append(salt4);
  return std::string(kMd5Prefix) + md5Hex(input);
}

bool md5ResponseMatches(std::string_view stored_md5_hash, std::string_view salt4,
                        std::string_view client_response) {
  std::string expected = md5SaltedResponse(stored_md5_hash, salt4);
  if (expected.empty()) return false;
  return equalConstantTime(expected, client_response);
}

bool md5PasswordMatches(std::string_view stored_md5_hash, std::string_view user,
                        std::string_view password) {
  if (!isMd5PasswordHash(stored_md5_hash)) return false;
  return equalConstantTime(md5PasswordHash(user, password), stored_md5_hash);
}

}  // namespace shardgate::wire
