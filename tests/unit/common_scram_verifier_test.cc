// Tests for SCRAM verifier text (common/scram_verifier.h): a verifier Postgres made, the range of
// iteration counts, and malformed verifiers refused without echoing the secret.
#include "common/scram_verifier.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace shardgate {
namespace {

const std::string kSalt = "4tDHuU3bh/r6oQmDlIkong==";
const std::string kKey = "pBnu7DV9zKTKc0xv9V/pLqHzFhrsxjLHSK3gUdNnyzU=";

std::string verifierWithIterations(const std::string& iterations) {
  return "SCRAM-SHA-256$" + iterations + ":" + kSalt + "$" + kKey + ":" + kKey;
}

void expectRefused(const std::string& text) {
  auto parsed = parseScramVerifier(text);
  ASSERT_FALSE(parsed.ok()) << text;
  EXPECT_EQ(parsed.error().sqlstate, "22023") << text;
  EXPECT_EQ(parsed.error().message, "invalid SCRAM verifier") << text;
  EXPECT_FALSE(parsed.error().detail.empty()) << text;
  // The detail names the bad part without echoing the secret.
  EXPECT_EQ(parsed.error().detail.find(kKey), std::string::npos) << text;
  EXPECT_EQ(parsed.error().detail.find(kSalt), std::string::npos) << text;
}

TEST(ScramVerifierText, ParsesAValidVerifier) {
  auto v = parseScramVerifier(
      "SCRAM-SHA-256$4096:c2hhcmRnYXRlLXNhbHQxNg==$0ZzQRwiH54iQ4aqwX6ctaymwERqzmu3JRfWLLJtSIiE=:"
      "vzfgNe5vza/NVu050k98IZYFZRzrT0Mhv/gjPRwzZ2g=");
  ASSERT_TRUE(v.ok()) << v.error().describe();
  EXPECT_EQ(v->iterations, 4096);
  EXPECT_EQ(v->salt, "shardgate-salt16");
  EXPECT_EQ(v->stored_key.size(), 32u);
  EXPECT_EQ(v->server_key.size(), 32u);
  EXPECT_EQ(static_cast<unsigned char>(v->stored_key[0]), 0xd1);
}

TEST(ScramVerifierText, FormatIsTheInverseOfParse) {
  const std::string text = verifierWithIterations("4096");
  auto parsed = parseScramVerifier(text);
  ASSERT_TRUE(parsed.ok()) << parsed.error().describe();
  EXPECT_EQ(formatScramVerifier(*parsed), text);
  ScramVerifier made;
  made.iterations = 1;
  made.salt = "salt";
  made.stored_key = std::string(32, 'k');
  made.server_key = std::string(32, 's');
  auto round_trip = parseScramVerifier(formatScramVerifier(made));
  ASSERT_TRUE(round_trip.ok()) << round_trip.error().describe();
  EXPECT_EQ(round_trip->iterations, 1);
  EXPECT_EQ(round_trip->salt, made.salt);
  EXPECT_EQ(round_trip->stored_key, made.stored_key);
  EXPECT_EQ(round_trip->server_key, made.server_key);
}

// Iterations are an int for PBKDF2: 1..2147483647, so a verifier that parses can be used to log
// in. A count above that used to pass config validation and fail only at login.
TEST(ScramVerifierText, IterationCountIsBetweenOneAndIntMax) {
  auto one = parseScramVerifier(verifierWithIterations("1"));
  ASSERT_TRUE(one.ok()) << one.error().describe();
  EXPECT_EQ(one->iterations, 1);
  auto max = parseScramVerifier(verifierWithIterations("2147483647"));
  ASSERT_TRUE(max.ok()) << max.error().describe();
  EXPECT_EQ(max->iterations, 2147483647);

  for (const std::string iterations : {"2147483648", "3000000000", "4294967295", "4294967296"}) {
    auto parsed = parseScramVerifier(verifierWithIterations(iterations));
    ASSERT_FALSE(parsed.ok()) << iterations;
    EXPECT_EQ(parsed.error().detail,
              "The iteration count \"" + iterations + "\" is out of range (1..2147483647).");
  }
  auto zero = parseScramVerifier(verifierWithIterations("0"));
  ASSERT_FALSE(zero.ok());
  EXPECT_EQ(zero.error().detail, "The iteration count \"0\" is not a positive integer.");
  // Anything but digits is not quoted: it might be a password typed in the wrong place.
  auto word = parseScramVerifier(verifierWithIterations("hunter2"));
  ASSERT_FALSE(word.ok());
  EXPECT_EQ(word.error().detail, "The iteration count is not a positive integer.");
  // Nor is a digit string too long to be meant as a count.
  const std::string many_digits(40, '9');
  auto huge = parseScramVerifier(verifierWithIterations(many_digits));
  ASSERT_FALSE(huge.ok());
  EXPECT_EQ(huge.error().detail.find(many_digits), std::string::npos);
}

TEST(ScramVerifierText, RejectsMalformedVerifiers) {
  const std::string salt = kSalt;
  const std::string key = kKey;
  const std::string short_key = "pBnu7DV9zKTKc0xv9V/pLqHzFhrsxjLHSK3gUdNnyw==";  // 31 bytes
  const std::vector<std::string> bad = {
      "",
      "md53175bce1d3201d16594cebf9d7eb3f9d",
      "postgres",
      "SCRAM-SHA-256$",
      "SCRAM-SHA-1$4096:" + salt + "$" + key + ":" + key,
      "scram-sha-256$4096:" + salt + "$" + key + ":" + key,
      "SCRAM-SHA-256$4096:" + salt + "$" + key,
      "SCRAM-SHA-256$4096:" + salt + ":" + key + ":" + key,
      "SCRAM-SHA-256$" + salt + "$" + key + ":" + key,
      "SCRAM-SHA-256$0:" + salt + "$" + key + ":" + key,
      "SCRAM-SHA-256$-1:" + salt + "$" + key + ":" + key,
      "SCRAM-SHA-256$+4096:" + salt + "$" + key + ":" + key,
      "SCRAM-SHA-256$ 4096:" + salt + "$" + key + ":" + key,
      "SCRAM-SHA-256$4096x:" + salt + "$" + key + ":" + key,
      "SCRAM-SHA-256$99999999999:" + salt + "$" + key + ":" + key,
      "SCRAM-SHA-256$4096::$" + key + ":" + key,
      "SCRAM-SHA-256$4096:not*base64$" + key + ":" + key,
      "SCRAM-SHA-256$4096:" + salt + "$" + short_key + ":" + key,
      "SCRAM-SHA-256$4096:" + salt + "$" + key + ":" + short_key,
      "SCRAM-SHA-256$4096:" + salt + "$" + key + ":" + key + "$",
      "SCRAM-SHA-256$4096:" + salt + "$" + key + ":" + key + ":" + key,
      "SCRAM-SHA-256$4096:" + salt + "$" + key + ":",
  };
  for (const auto& text : bad) expectRefused(text);
}

// The cases the config loader's own parser was tested with before it used this one.
TEST(ScramVerifierText, RefusesWhatTheConfigLoaderRefused) {
  const std::string key = "0ZzQRwiH54iQ4aqwX6ctaymwERqzmu3JRfWLLJtSIiE=";
  const std::string bad[] = {
      "SCRAM-SHA-256$",
      "SCRAM-SHA-256$4096:c2FsdA==",
      "SCRAM-SHA-256$4096:c2FsdA==$" + key,
      "SCRAM-SHA-256$4096$" + key + ":" + key,
      "SCRAM-SHA-256$:c2FsdA==$" + key + ":" + key,
      "SCRAM-SHA-256$-1:c2FsdA==$" + key + ":" + key,
      "SCRAM-SHA-256$4096x:c2FsdA==$" + key + ":" + key,
      "SCRAM-SHA-256$99999999999:c2FsdA==$" + key + ":" + key,
      "SCRAM-SHA-256$4096:$" + key + ":" + key,
      "SCRAM-SHA-256$4096:c2FsdA==$" + key + ":c2FsdA==",
      "SCRAM-SHA-256$4096:c2FsdA==$" + key + ":" + key + "x",
      "SCRAM-SHA-1$4096:c2FsdA==$" + key + ":" + key,
  };
  for (const std::string& text : bad) {
    auto v = parseScramVerifier(text);
    ASSERT_FALSE(v.ok()) << text;
    EXPECT_EQ(v.error().message, "invalid SCRAM verifier") << text;
    EXPECT_EQ(v.error().detail.find(key), std::string::npos) << text;
  }
  EXPECT_TRUE(parseScramVerifier("SCRAM-SHA-256$1:c2FsdA==$" + key + ":" + key).ok());
}

}  // namespace
}  // namespace shardgate
