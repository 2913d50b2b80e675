// Authenticating a client: trust, cleartext, md5 and SCRAM-SHA-256 exchanges against the config.
#pragma once

#include <array>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "common/result.h"
#include "conf/config.h"
#include "proxy/wire/scram.h"

namespace shardgate::proxy {

class ClientAuthenticator {
 public:
  enum class Outcome { kContinue, kAuthenticated };

  // `user` is null for a user not in the config: the exchange then runs as for a SCRAM user
  // and fails at the end with the same error a wrong password gives. `scram_secret` is the
  // user's SCRAM secret (derived once per config), needed for SCRAM and for cleartext checks.
  ClientAuthenticator(const conf::User* user, std::string user_name,
                      std::shared_ptr<const wire::ScramSecret> scram_secret);
  ~ClientAuthenticator();

  // Writes the first authentication request. Returns kAuthenticated for trust (nothing written).
  Outcome begin(std::string& out);
  // Handles the payload of one PasswordMessage / SASLInitialResponse / SASLResponse ('p').
  // On success writes the next request, or the SASL final message; AuthenticationOk is the
  // caller's to write. Errors are FATAL and meant for the client as they are.
  Result<Outcome> onMessage(std::string_view payload, std::string& out);

  // The error a failed login gets, whether the user exists or not (as Postgres words it).
  static Error passwordFailed(std::string_view user_name);

 private:
  enum class Step { kNone, kCleartext, kMd5, kSaslInitial, kSaslContinue, kDone };
  Result<Outcome> onCleartext(std::string_view payload);
  Result<Outcome> onMd5(std::string_view payload);
  Result<Outcome> onSaslInitial(std::string_view payload, std::string& out);
  Result<Outcome> onSaslResponse(std::string_view payload, std::string& out);
  bool cleartextMatches(std::string_view password) const;

  const conf::User* user_;
  std::string user_name_;
  std::shared_ptr<const wire::ScramSecret> scram_secret_;
  Step step_ = Step::kNone;
  std::array<char, 4> md5_salt_{};
  std::unique_ptr<wire::ScramServer> scram_;
};

// Derives the SCRAM secret for a configured user (plain password or stored verifier).
// nullopt when the user's password cannot yield one (md5 hash, no password).
std::optional<wire::ScramSecret> scramSecretFor(const conf::User& user);

}  // namespace shardgate::proxy
