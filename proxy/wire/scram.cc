// SCRAM-SHA-256 secrets and exchanges on top of OpenSSL (SHA-256, HMAC, PBKDF2, RAND_bytes).
#include "proxy/wire/scram.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>

#include "common/base64.h"

namespace shardgate::wire {

namespace {

constexpr size_t kKeyLength = 32;       // SHA-256 output
constexpr size_t kRawNonceLength = 18;  // as Postgres (SCRAM_RAW_NONCE_LEN)
constexpr size_t kDefaultSaltLength = 16;

// Without entropy no nonce or salt would be safe to hand out, and there is no useful way to go
// on; OpenSSL only fails here when the system has no random source at all.
std::string randomBytes(size_t n) {
  std::string out(n, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(n)) != 1) {
    std::fputs("shardgate: RAND_bytes failed, no secure random source\n", stderr);
    std::abort();
  }
  return out;
}

std::string sha256(std::string_view data) {
  std::string out(kKeyLength, '\0');
  unsigned int length = 0;
  if (EVP_Digest(data.data(), data.size(), reinterpret_cast<unsigned char*>(out.data()), &length,
                 EVP_sha256(), nullptr) != 1) {
    std::abort();  // SHA-256 missing from libcrypto: a broken installation
  }
  return out;
}

std::string hmacSha256(std::string_view key, std::string_view data) {
  std::string out(kKeyLength, '\0');
  unsigned int length = 0;
  if (HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
           reinterpret_cast<const unsigned char*>(data.data()), data.size(),
           reinterpret_cast<unsigned char*>(out.data()), &length) == nullptr) {
    std::abort();
  }
  return out;
}

std::string saltedPassword(std::string_view password, std::string_view salt, int iterations) {
  std::string out(kKeyLength, '\0');
  if (PKCS5_PBKDF2_HMAC(password.data(), static_cast<int>(password.size()),
                        reinterpret_cast<const unsigned char*>(salt.data()),
                        static_cast<int>(salt.size()), iterations, EVP_sha256(),
                        static_cast<int>(out.size()),
                        reinterpret_cast<unsigned char*>(out.data())) != 1) {
    std::abort();
  }
  return out;
}

// The salted password a SCRAM client derives from the salt and iteration count the server sent.
// PBKDF2 over thousands of HMAC rounds costs about a millisecond of CPU, and Postgres keeps one
// salt per role, so every connection a pool opens would derive the same key again: the keys are
// memoised for the process (workers share them under a mutex), as PgBouncer keeps them per user.
// Bounded: a config with more distinct (password, salt) pairs than this starts over. The memo is
// keyed by a digest of the inputs, so it holds no password.
std::string memoisedSaltedPassword(std::string_view password, std::string_view salt,
                                   int iterations) {
  constexpr size_t kMaxEntries = 256;
  static std::mutex mutex;
  static std::unordered_map<std::string, std::string> keys;
  std::string inputs = std::to_string(iterations) + ':' + std::to_string(salt.size()) + ':';
  inputs.append(salt).append(password);
  const std::string id = sha256(inputs);
  OPENSSL_cleanse(inputs.data(), inputs.size());
  std::lock_guard lock(mutex);
  if (const auto it = keys.find(id); it != keys.end()) return it->second;
  if (keys.size() >= kMaxEntries) {
    for (auto& [k, v] : keys) OPENSSL_cleanse(v.data(), v.size());
    keys.clear();
  }
  std::string salted = saltedPassword(password, salt, iterations);
  keys.emplace(id, salted);
  return salted;
}

std::string xorBytes(std::string_view a, std::string_view b) {
  std::string out(a.size(), '\0');
  for (size_t i = 0; i < a.size(); ++i) out[i] = static_cast<char>(a[i] ^ b[i]);
  return out;
}

bool equalConstantTime(std::string_view a, std::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

Error malformed(std::string detail) {
  return Error::fatal(sqlstate::kProtocolViolation, "malformed SCRAM message", std::move(detail));
}

Error authenticationFailed(std::string_view user_name) {
  return Error::fatal(sqlstate::kInvalidPassword,
                      "password authentication failed for user \"" + std::string(user_name) + "\"");
}

// A character for an error detail: printable ASCII as is, anything else as a hex escape.
std::string describeChar(char c) {
  if (c >= 0x21 && c <= 0x7e) return std::string(1, c);
  char buffer[8];
  std::snprintf(buffer, sizeof buffer, "0x%02x", static_cast<unsigned char>(c));
  return buffer;
}

// RFC 5802 "printable": 0x21-0x7E except ','. Nonces must be made of these.
bool isPrintable(std::string_view text) {
  for (char c : text) {
    if (c < 0x21 || c > 0x7e || c == ',') return false;
  }
  return true;
}

// Reads "a=value,b=value,..." attribute by attribute, as RFC 5802 lays messages out. Every
// failure is a malformed-message error naming which message it was.
class AttributeReader {
 public:
  AttributeReader(std::string_view text, std::string_view message_name)
      : text_(text), message_name_(message_name) {}

  bool atEnd() const { return pos_ == text_.size(); }
  size_t position() const { return pos_; }
  // Reads the next attribute, which must be `expected`.
  Result<std::string_view> read(char expected) {
    auto attribute = readAny();
    if (!attribute.ok()) return std::move(attribute).error();
    if (attribute->first != expected) {
      return malformed("Expected attribute \"" + std::string(1, expected) + "\" but found \"" +
                       describeChar(attribute->first) + "\" in " + std::string(message_name_) +
                       ".");
    }
    return attribute->second;
  }

  // Reads the next "x=value" attribute, whatever its name.
  Result<std::pair<char, std::string_view>> readAny() {
    if (pos_ > 0) {
      // Attributes after the first are separated by exactly one comma.
      if (pos_ >= text_.size() || text_[pos_] != ',') return garbage();
      ++pos_;
    }
    if (pos_ >= text_.size()) {
      return malformed("Unexpected end of " + std::string(message_name_) + ".");
    }
    char name = text_[pos_];
    if (!((name >= 'a' && name <= 'z') || (name >= 'A' && name <= 'Z'))) {
      return malformed("Attribute expected, but found invalid character \"" + describeChar(name) +
                       "\" in " + std::string(message_name_) + ".");
    }
    if (pos_ + 1 >= text_.size() || text_[pos_ + 1] != '=') {
      return malformed("Expected character \"=\" for attribute \"" + std::string(1, name) +
                       "\" in " + std::string(message_name_) + ".");
    }
    size_t begin = pos_ + 2;
    size_t end = text_.find(',', begin);
    if (end == std::string_view::npos) end = text_.size();
    pos_ = end;
    return std::pair<char, std::string_view>(name, text_.substr(begin, end - begin));
  }

  Error garbage() const {
    return malformed("Garbage found at the end of " + std::string(message_name_) + ".");
  }

 private:
  std::string_view text_;
  std::string_view message_name_;
  size_t pos_ = 0;
};

// Per-process key that makes mock salts unpredictable but stable for a given user name, so an
// attacker cannot tell a mock from a real user by asking twice and comparing salts.
const std::string& mockAuthKey() {
  static const std::string key = randomBytes(kKeyLength);
  return key;
}

// RFC 5802 saslname: ',' and '=' must be escaped.
std::string escapeSaslName(std::string_view name) {
  std::string out;
  for (char c : name) {
    if (c == ',') {
      out += "=2C";
    } else if (c == '=') {
      out += "=3D";
    } else {
      out.push_back(c);
    }
  }
  return out;
}

}  // namespace

// ---- secrets ------------------------------------------------------------------------------------

ScramSecret makeScramSecret(std::string_view password, std::string_view salt, int iterations) {
  ScramSecret secret;
  secret.iterations = iterations < 1 ? 1 : iterations;
  secret.salt = salt.empty() ? randomBytes(kDefaultSaltLength) : std::string(salt);
  std::string salted = saltedPassword(password, secret.salt, secret.iterations);
  secret.stored_key = sha256(hmacSha256(salted, "Client Key"));
  secret.server_key = hmacSha256(salted, "Server Key");
  OPENSSL_cleanse(salted.data(), salted.size());
  return secret;
}

bool scramPasswordMatches(const ScramSecret& secret, std::string_view password) {
  if (secret.iterations < 1 || secret.salt.empty()) return false;
  ScramSecret candidate = makeScramSecret(password, secret.salt, secret.iterations);
  // Both keys must match; evaluate both so timing does not depend on which one differs.
  bool stored_ok = equalConstantTime(candidate.stored_key, secret.stored_key);
  bool server_ok = equalConstantTime(candidate.server_key, secret.server_key);
  return stored_ok && server_ok;
}

// ---- server ------------------------------------------------------------------------------------

ScramServer::ScramServer(ScramSecret secret, std::string server_nonce)
    : ScramServer(std::move(secret), std::move(server_nonce), false) {}

ScramServer::ScramServer(ScramSecret secret, std::string server_nonce, bool doomed)
    : secret_(std::move(secret)),
      server_nonce_(server_nonce.empty() ? base64Encode(randomBytes(kRawNonceLength))
                                         : std::move(server_nonce)),
      doomed_(doomed) {}

ScramServer ScramServer::mock(std::string_view user_name, int iterations) {
  // Like Postgres's scram_mock_salt: SHA-256(user name || per-process key), cut to salt length.
  std::string input(user_name);
  input += mockAuthKey();
  ScramSecret secret;
  secret.iterations = iterations < 1 ? 1 : iterations;
  secret.salt = sha256(input).substr(0, kDefaultSaltLength);
  // Random keys so that the final step does the same work as a real check; the result is ignored.
  secret.stored_key = randomBytes(kKeyLength);
  secret.server_key = randomBytes(kKeyLength);
  return ScramServer(std::move(secret), {}, true);
}

Result<std::string> ScramServer::handleClientFirst(std::string_view client_first) {
  if (state_ != State::kExpectClientFirst) {
    state_ = State::kFailed;
    return malformed("Unexpected client-first-message at this point of the SCRAM exchange.");
  }
  auto result = parseClientFirst(client_first);
  state_ = result.ok() ? State::kExpectClientFinal : State::kFailed;
  return result;
}

Result<std::string> ScramServer::parseClientFirst(std::string_view message) {
  // gs2-header = gs2-cbind-flag "," [ authzid ] ","
  size_t pos = 0;
  if (message.starts_with("n=") || message.starts_with("m=")) {
    gs2_header_ = "n,,";  // a bare message: the gs2 header was stripped by the caller
  } else {
    if (message.empty()) return malformed("Empty client-first-message.");
    switch (message[0]) {
      case 'n':  // the client does not support channel binding
      case 'y':  // the client supports it but thinks we do not (true: it is never offered)
        break;
      case 'p':
        return malformed(
            "The client selected SCRAM-SHA-256 without channel binding, but the SCRAM message "
            "includes channel binding data.");
      default:
        return malformed("Unexpected channel-binding flag \"" + describeChar(message[0]) + "\".");
    }
    if (message.size() < 2 || message[1] != ',') {
      return malformed("Comma expected after the channel-binding flag.");
    }
    if (message.size() > 2 && message[2] == 'a') {
      return Error::fatal(sqlstate::kFeatureNotSupported,
                          "client uses authorization identity, but it is not supported");
    }
    if (message.size() < 3 || message[2] != ',') {
      return malformed("Unexpected attribute in client-first-message.");
    }
    pos = 3;
    gs2_header_ = std::string(message.substr(0, pos));
  }

  std::string_view bare = message.substr(pos);
  if (bare.starts_with("m=")) {
    return Error::fatal(sqlstate::kFeatureNotSupported,
                        "client requires an unsupported SCRAM extension");
  }
  AttributeReader reader(bare, "client-first-message");
  // The user name is ignored: Postgres takes it from the startup packet, and clients send "n=".
  if (auto user = reader.read('n'); !user.ok()) return std::move(user).error();
  auto nonce = reader.read('r');
  if (!nonce.ok()) return std::move(nonce).error();
  if (nonce->empty()) return malformed("Empty client nonce in client-first-message.");
  if (!isPrintable(*nonce)) return malformed("Client nonce contains non-printable characters.");
  // Optional extensions follow; none is supported, so they are read and ignored.
  while (!reader.atEnd()) {
    if (auto extension = reader.readAny(); !extension.ok()) return std::move(extension).error();
  }

  client_first_bare_ = std::string(bare);
  client_nonce_ = std::string(*nonce);
  server_first_ = "r=" + client_nonce_ + server_nonce_ + ",s=" + base64Encode(secret_.salt) +
                  ",i=" + std::to_string(secret_.iterations);
  return server_first_;
}

Result<std::string> ScramServer::handleClientFinal(std::string_view client_final,
                                                   std::string_view user_name) {
  if (state_ != State::kExpectClientFinal) {
    state_ = State::kFailed;
    return malformed("Unexpected client-final-message at this point of the SCRAM exchange.");
  }
  auto result = parseClientFinal(client_final, user_name);
  state_ = result.ok() ? State::kSucceeded : State::kFailed;
  return result;
}

Result<std::string> ScramServer::parseClientFinal(std::string_view message,
                                                  std::string_view user_name) {
  AttributeReader reader(message, "client-final-message");
  auto binding = reader.read('c');
  if (!binding.ok()) return std::move(binding).error();
  // Without channel binding, c= carries the gs2 header the client sent first: "biws" for "n,,",
  // "eSws" for "y,,".
  auto decoded_binding = base64Decode(*binding);
  if (!decoded_binding || *decoded_binding != gs2_header_) {
    return malformed("Unexpected SCRAM channel-binding attribute in client-final-message.");
  }
  auto nonce = reader.read('r');
  if (!nonce.ok()) return std::move(nonce).error();
  if (*nonce != client_nonce_ + server_nonce_) return malformed("Final nonce does not match.");

  // Optional extensions are ignored; the proof comes last.
  size_t proof_start = 0;
  std::string_view proof_b64;
  while (true) {
    proof_start = reader.position();
    auto attribute = reader.readAny();
    if (!attribute.ok()) return std::move(attribute).error();
    if (attribute->first == 'p') {
      proof_b64 = attribute->second;
      break;
    }
  }
  if (!reader.atEnd()) return reader.garbage();
  auto proof = base64Decode(proof_b64);
  if (!proof || proof->size() != kKeyLength) {
    return malformed("Malformed proof in client-final-message.");
  }

  // AuthMessage = client-first-message-bare "," server-first-message ","
  //               client-final-message-without-proof
  std::string auth_message =
      client_first_bare_ + "," + server_first_ + "," + std::string(message.substr(0, proof_start));
  std::string client_signature = hmacSha256(secret_.stored_key, auth_message);
  std::string client_key = xorBytes(*proof, client_signature);
  bool proof_ok = equalConstantTime(sha256(client_key), secret_.stored_key);
  OPENSSL_cleanse(client_key.data(), client_key.size());
  if (!proof_ok || doomed_) return authenticationFailed(user_name);
  return "v=" + base64Encode(hmacSha256(secret_.server_key, auth_message));
}

// ---- client ------------------------------------------------------------------------------------

ScramClient::ScramClient(std::string password, std::string client_nonce, std::string user_name)
    : password_(std::move(password)),
      client_nonce_(client_nonce.empty() ? base64Encode(randomBytes(kRawNonceLength))
                                         : std::move(client_nonce)) {
  client_first_bare_ = "n=" + escapeSaslName(user_name) + ",r=" + client_nonce_;
}

std::string ScramClient::clientFirstMessage() {
  return "n,," + client_first_bare_;
}

Result<std::string> ScramClient::handleServerFirst(std::string_view server_first) {
  if (state_ != State::kExpectServerFirst) {
    state_ = State::kFailed;
    return malformed("Unexpected server-first-message at this point of the SCRAM exchange.");
  }
  auto result = parseServerFirst(server_first);
  state_ = result.ok() ? State::kExpectServerFinal : State::kFailed;
  return result;
}

Result<std::string> ScramClient::parseServerFirst(std::string_view message) {
  if (message.starts_with("m=")) {
    return malformed("The server requires an unsupported SCRAM extension.");
  }
  AttributeReader reader(message, "server-first-message");
  auto nonce = reader.read('r');
  if (!nonce.ok()) return std::move(nonce).error();
  // The combined nonce must extend ours; otherwise this answers some other exchange.
  if (nonce->size() <= client_nonce_.size() || !nonce->starts_with(client_nonce_) ||
      !isPrintable(*nonce)) {
    return malformed("Invalid nonce in server-first-message.");
  }
  auto salt_b64 = reader.read('s');
  if (!salt_b64.ok()) return std::move(salt_b64).error();
  auto salt = base64Decode(*salt_b64);
  if (!salt || salt->empty()) return malformed("Invalid salt in server-first-message.");
  auto iterations_text = reader.read('i');
  if (!iterations_text.ok()) return std::move(iterations_text).error();
  auto iterations = parseScramIterations(*iterations_text);
  if (!iterations) return malformed("Invalid iteration count in server-first-message.");
  while (!reader.atEnd()) {
    if (auto extension = reader.readAny(); !extension.ok()) return std::move(extension).error();
  }

  std::string salted = memoisedSaltedPassword(password_, *salt, *iterations);
  std::string client_key = hmacSha256(salted, "Client Key");
  std::string stored_key = sha256(client_key);
  std::string server_key = hmacSha256(salted, "Server Key");
  std::string without_proof = "c=biws,r=" + std::string(*nonce);  // biws = base64("n,,")
  std::string auth_message = client_first_bare_ + "," + std::string(message) + "," + without_proof;
  std::string proof = xorBytes(client_key, hmacSha256(stored_key, auth_message));
  expected_server_signature_ = hmacSha256(server_key, auth_message);
  OPENSSL_cleanse(salted.data(), salted.size());
  OPENSSL_cleanse(client_key.data(), client_key.size());
  return without_proof + ",p=" + base64Encode(proof);
}

Status ScramClient::handleServerFinal(std::string_view server_final) {
  if (state_ != State::kExpectServerFinal) {
    state_ = State::kFailed;
    return malformed("Unexpected server-final-message at this point of the SCRAM exchange.");
  }
  Status result = parseServerFinal(server_final);
  state_ = result.ok() ? State::kSucceeded : State::kFailed;
  return result;
}

Status ScramClient::parseServerFinal(std::string_view message) {
  AttributeReader reader(message, "server-final-message");
  auto attribute = reader.readAny();
  if (!attribute.ok()) return std::move(attribute).error();
  if (attribute->first == 'e') {
    return Error::fatal(sqlstate::kInvalidPassword,
                        "SCRAM authentication failed: the server reported \"" +
                            std::string(attribute->second) + "\"");
  }
  if (attribute->first != 'v') {
    return malformed("Expected attribute \"v\" in server-final-message.");
  }
  while (!reader.atEnd()) {
    if (auto extension = reader.readAny(); !extension.ok()) return std::move(extension).error();
  }
  auto signature = base64Decode(attribute->second);
  if (!signature || signature->size() != kKeyLength) {
    return malformed("Malformed server signature in server-final-message.");
  }
  if (!equalConstantTime(*signature, expected_server_signature_)) {
    return Error::fatal(sqlstate::kInvalidPassword, "incorrect server signature",
                        "The server could not prove that it knows the password.");
  }
  return {};
}

}  // namespace shardgate::wire
