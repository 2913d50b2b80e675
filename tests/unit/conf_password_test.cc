// Unit tests for password shape recognition, base64 and SCRAM verifier parsing (conf/password.h).
#include <gtest/gtest.h>

#include "conf/password.h"

namespace shardgate::conf {
namespace {

TEST(ConfPassword, Classify) {
  EXPECT_EQ(classifyPassword(""), PasswordKind::kNone);
  EXPECT_EQ(classifyPassword("postgres"), PasswordKind::kPlain);
  EXPECT_EQ(classifyPassword("md5"), PasswordKind::kPlain);
  EXPECT_EQ(classifyPassword("md54a0a68b43b6cd5cf266fa02f196e2371"), PasswordKind::kMd5Hash);
  EXPECT_EQ(classifyPassword("md54a0a68b43b6cd5cf266fa02f196e23710"), PasswordKind::kPlain);
  EXPECT_EQ(classifyPassword("SCRAM-SHA-256$whatever"), PasswordKind::kScramVerifier);
  EXPECT_EQ(classifyPassword("scram-sha-256$whatever"), PasswordKind::kPlain);
}

TEST(ConfPassword, Md5HashShape) {
  EXPECT_TRUE(isWellFormedMd5Hash("md54a0a68b43b6cd5cf266fa02f196e2371"));
  EXPECT_FALSE(isWellFormedMd5Hash("md54A0A68B43B6CD5CF266FA02F196E2371"));
  EXPECT_FALSE(isWellFormedMd5Hash("md54a0a68b43b6cd5cf266fa02f196e237g"));
  EXPECT_FALSE(isWellFormedMd5Hash("md54a0a68b43b6cd5cf266fa02f196e237"));
}

TEST(ConfPassword, Base64) {
  EXPECT_EQ(decodeBase64(""), "");
  EXPECT_EQ(decodeBase64("Zg=="), "f");
  EXPECT_EQ(decodeBase64("Zm8="), "fo");
  EXPECT_EQ(decodeBase64("Zm9v"), "foo");
  EXPECT_EQ(decodeBase64("Zm9vYmFy"), "foobar");
  EXPECT_EQ(decodeBase64("+/+/"), std::string("\xfb\xff\xbf", 3));
  EXPECT_FALSE(decodeBase64("Zg"));        // padding required
  EXPECT_FALSE(decodeBase64("Zg=a"));      // '=' only at the end
  EXPECT_FALSE(decodeBase64("Z==="));      // at most two '='
  EXPECT_FALSE(decodeBase64("Zg==Zm9v"));  // '=' only in the last group
  EXPECT_FALSE(decodeBase64("Zm9*"));
  EXPECT_FALSE(decodeBase64("Zm9v\n"));
}

TEST(ConfPassword, ParsesAValidVerifier) {
  auto v = parseScramVerifier(
      "SCRAM-SHA-256$4096:c2hhcmRnYXRlLXNhbHQxNg==$0ZzQRwiH54iQ4aqwX6ctaymwERqzmu3JRfWLLJtSIiE=:"
      "vzfgNe5vza/NVu050k98IZYFZRzrT0Mhv/gjPRwzZ2g=");
  ASSERT_TRUE(v.ok()) << v.error().message;
  EXPECT_EQ(v->iterations, 4096u);
  EXPECT_EQ(v->salt, "shardgate-salt16");
  EXPECT_EQ(v->stored_key.size(), 32u);
  EXPECT_EQ(v->server_key.size(), 32u);
  EXPECT_EQ(static_cast<unsigned char>(v->stored_key[0]), 0xd1);
}

TEST(ConfPassword, RefusesMalformedVerifiers) {
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
    EXPECT_FALSE(v.ok()) << text;
    if (!v.ok()) {
      EXPECT_TRUE(v.error().message.starts_with("malformed SCRAM verifier")) << text;
    }
  }
  EXPECT_TRUE(parseScramVerifier("SCRAM-SHA-256$1:c2FsdA==$" + key + ":" + key).ok());
}

}  // namespace
}  // namespace shardgate::conf
