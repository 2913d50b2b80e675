// ClientAuthenticator: one object per logging-in client, driving the chosen exchange.
#include "proxy/client_auth.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "common/scram_verifier.h"
#include "proxy/wire/backend_messages.h"
#include "proxy/wire/frontend_messages.h"
#include "proxy/wire/md5.h"

namespace shardgate::proxy {

namespace {
bool constantTimeEquals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}
}  // namespace

std::optional<wire::ScramSecret> scramSecretFor(const conf::User& user) {
  switch (user.password_kind) {
    case conf::PasswordKind::kPlain:
      return wire::makeScramSecret(user.password, {}, 4096);
    case conf::PasswordKind::kScramVerifier: {
      auto parsed = parseScramVerifier(user.password);
      if (parsed.ok()) return *parsed;
      return std::nullopt;
    }
    default:
      return std::nullopt;
  }
}

Error ClientAuthenticator::passwordFailed(std::string_view user_name) {
  return Error::fatal(sqlstate::kInvalidPassword,
                      "password authentication failed for user \"" + std::string(user_name) + "\"");
}

ClientAuthenticator::ClientAuthenticator(const conf::User* user, std::string user_name,
                                         std::shared_ptr<const wire::ScramSecret> scram_secret)
    : user_(user), user_name_(std::move(user_name)), scram_secret_(std::move(scram_secret)) {}

ClientAuthenticator::~ClientAuthenticator() = default;

ClientAuthenticator::Outcome ClientAuthenticator::begin(std::string& out) {
  conf::AuthMethod method = user_ ? user_->auth_method : conf::AuthMethod::kScramSha256;
  switch (method) {
    case conf::AuthMethod::kTrust:
      step_ = Step::kDone;
      return Outcome::kAuthenticated;
    case conf::AuthMethod::kCleartext:
      step_ = Step::kCleartext;
      wire::AuthenticationCleartextPassword{}.encode(out);
      return Outcome::kContinue;
    case conf::AuthMethod::kMd5:
      step_ = Step::kMd5;
      RAND_bytes(reinterpret_cast<unsigned char*>(md5_salt_.data()), md5_salt_.size());
      wire::AuthenticationMd5Password{md5_salt_}.encode(out);
      return Outcome::kContinue;
    case conf::AuthMethod::kScramSha256:
      step_ = Step::kSaslInitial;
      wire::AuthenticationSasl{{std::string(wire::ScramServer::kMechanism)}}.encode(out);
      return Outcome::kContinue;
  }
  return Outcome::kContinue;
}

Result<ClientAuthenticator::Outcome> ClientAuthenticator::onMessage(std::string_view payload,
                                                                    std::string& out) {
  switch (step_) {
    case Step::kCleartext:
      return onCleartext(payload);
    case Step::kMd5:
      return onMd5(payload);
    case Step::kSaslInitial:
      return onSaslInitial(payload, out);
    case Step::kSaslContinue:
      return onSaslResponse(payload, out);
    default:
      return Error::fatal(sqlstate::kProtocolViolation, "unexpected password message");
  }
}

bool ClientAuthenticator::cleartextMatches(std::string_view password) const {
  if (user_ == nullptr) return false;
  switch (user_->password_kind) {
    case conf::PasswordKind::kPlain:
      return constantTimeEquals(password, user_->password);
    case conf::PasswordKind::kMd5Hash:
      return constantTimeEquals(wire::md5PasswordHash(user_name_, password), user_->password);
    case conf::PasswordKind::kScramVerifier:
      return scram_secret_ && wire::scramPasswordMatches(*scram_secret_, password);
    case conf::PasswordKind::kNone:
      return false;
  }
  return false;
}

Result<ClientAuthenticator::Outcome> ClientAuthenticator::onCleartext(std::string_view payload) {
  auto message = wire::PasswordMessage::decode(payload);
  if (!message.ok()) return message.error();
  if (!cleartextMatches(message->password)) return passwordFailed(user_name_);
  step_ = Step::kDone;
  return Outcome::kAuthenticated;
}

Result<ClientAuthenticator::Outcome> ClientAuthenticator::onMd5(std::string_view payload) {
  auto message = wire::PasswordMessage::decode(payload);
  if (!message.ok()) return message.error();
  if (user_ == nullptr) return passwordFailed(user_name_);
  std::string stored = user_->password_kind == conf::PasswordKind::kMd5Hash
                           ? user_->password
                           : wire::md5PasswordHash(user_name_, user_->password);
  std::string expected =
      wire::md5SaltedResponse(stored, std::string_view(md5_salt_.data(), md5_salt_.size()));
  if (!constantTimeEquals(message->password, expected)) return passwordFailed(user_name_);
  step_ = Step::kDone;
  return Outcome::kAuthenticated;
}

Result<ClientAuthenticator::Outcome> ClientAuthenticator::onSaslInitial(std::string_view payload,
                                                                        std::string& out) {
  auto message = wire::SaslInitialResponse::decode(payload);
  if (!message.ok()) return message.error();
  if (message->mechanism != wire::ScramServer::kMechanism) {
    return Error::fatal(sqlstate::kProtocolViolation,
                        "client selected an invalid SASL authentication mechanism");
  }
  if (!message->data) {
    return Error::fatal(sqlstate::kProtocolViolation, "malformed SCRAM message",
                        "SASLInitialResponse carries no client-first-message");
  }
  scram_ = (user_ && scram_secret_)
               ? std::make_unique<wire::ScramServer>(*scram_secret_)
               : std::make_unique<wire::ScramServer>(wire::ScramServer::mock(user_name_));
  auto server_first = scram_->handleClientFirst(*message->data);
  if (!server_first.ok()) return server_first.error();
  wire::AuthenticationSaslContinue{*server_first}.encode(out);
  step_ = Step::kSaslContinue;
  return Outcome::kContinue;
}

Result<ClientAuthenticator::Outcome> ClientAuthenticator::onSaslResponse(std::string_view payload,
                                                                         std::string& out) {
  auto message = wire::SaslResponse::decode(payload);
  if (!message.ok()) return message.error();
  auto server_final = scram_->handleClientFinal(message->data, user_name_);
  if (!server_final.ok()) return server_final.error();
  if (user_ == nullptr) return passwordFailed(user_name_);  // mock() fails anyway; be explicit
  wire::AuthenticationSaslFinal{*server_final}.encode(out);
  step_ = Step::kDone;
  return Outcome::kAuthenticated;
}

}  // namespace shardgate::proxy
