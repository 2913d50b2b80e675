// Unit tests for password shape recognition (conf/password.h). Base64 and SCRAM verifier parsing
// live in common/ and are tested in common_base64_test.cc and common_scram_verifier_test.cc.
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

}  // namespace
}  // namespace shardgate::conf
