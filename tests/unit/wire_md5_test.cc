// Tests for Postgres's md5 password scheme (proxy/wire/md5.h) against known answers.
#include "proxy/wire/md5.h"

#include <gtest/gtest.h>

#include <string>

namespace shardgate::wire {
namespace {

using namespace std::string_literals;

TEST(Md5, HexKnownAnswers) {
  EXPECT_EQ(md5Hex(""), "d41d8cd98f00b204e9800998ecf8427e");
  EXPECT_EQ(md5Hex("The quick brown fox jumps over the lazy dog"),
            "9e107d9d372bb6826bd81d3542a419d6");
  EXPECT_EQ(md5Hex("postgrespostgres"), "3175bce1d3201d16594cebf9d7eb3f9d");
}

TEST(Md5, PasswordHashIsPasswordThenUser) {
  EXPECT_EQ(md5PasswordHash("postgres", "postgres"), "md53175bce1d3201d16594cebf9d7eb3f9d");
  // Produced by Postgres 15: SET password_encryption='md5'; CREATE ROLE bob PASSWORD 'postgres'.
  EXPECT_EQ(md5PasswordHash("bob", "postgres"), "md565170a859842ceb2930dc2fa1454af9d");
  // Swapping the arguments gives a different hash: the order matters.
  EXPECT_NE(md5PasswordHash("postgres", "bob"), md5PasswordHash("bob", "postgres"));
}

TEST(Md5, SaltedResponseKnownAnswers) {
  // Computed with Python: "md5" + md5(stored[3:] + salt).hexdigest().
  EXPECT_EQ(md5SaltedResponse("md53175bce1d3201d16594cebf9d7eb3f9d", "\x01\x02\x03\x04"),
            "md568be9ed08db75f318087ab337aaea044");
  // A salt with a NUL byte and high bytes must be hashed as raw bytes.
  EXPECT_EQ(md5SaltedResponse("md565170a859842ceb2930dc2fa1454af9d", "\x9a\x00\xff\x10"s),
            "md5f05888eb04df0621414a391f635750c5");
}

TEST(Md5, RecognisesStoredHashes) {
  EXPECT_TRUE(isMd5PasswordHash("md53175bce1d3201d16594cebf9d7eb3f9d"));
  EXPECT_FALSE(isMd5PasswordHash(""));
  EXPECT_FALSE(isMd5PasswordHash("md5"));
  EXPECT_FALSE(isMd5PasswordHash("md53175bce1d3201d16594cebf9d7eb3f9"));    // 31 digits
  EXPECT_FALSE(isMd5PasswordHash("md53175bce1d3201d16594cebf9d7eb3f9d0"));  // 33 digits
  EXPECT_FALSE(isMd5PasswordHash("md53175BCE1D3201D16594CEBF9D7EB3F9D"));   // upper case
  EXPECT_FALSE(isMd5PasswordHash("md53175bce1d3201d16594cebf9d7eb3f9g"));
  EXPECT_FALSE(isMd5PasswordHash("MD53175bce1d3201d16594cebf9d7eb3f9d"));
  EXPECT_FALSE(isMd5PasswordHash("SCRAM-SHA-256$4096:abc"));
}

TEST(Md5, SaltedResponseRefusesMalformedInput) {
  EXPECT_EQ(md5SaltedResponse("postgres", "\x01\x02\x03\x04"), "");
  EXPECT_EQ(md5SaltedResponse("md53175bce1d3201d16594cebf9d7eb3f9d", "abc"), "");
  EXPECT_EQ(md5SaltedResponse("md53175bce1d3201d16594cebf9d7eb3f9d", "abcde"), "");
}

TEST(Md5, ResponseMatches) {
  const std::string stored = md5PasswordHash("alice", "s3cret");
  const std::string salt = "\x00\x11\x22\x33"s;
  // What a client computes from the cleartext password matches the server's expectation.
  const std::string client_answer = md5SaltedResponse(md5PasswordHash("alice", "s3cret"), salt);
  EXPECT_TRUE(md5ResponseMatches(stored, salt, client_answer));
  EXPECT_FALSE(md5ResponseMatches(stored, "\x00\x11\x22\x34"s, client_answer));
  EXPECT_FALSE(
      md5ResponseMatches(stored, salt, md5SaltedResponse(md5PasswordHash("alice", "x"), salt)));
  EXPECT_FALSE(md5ResponseMatches(stored, salt, client_answer.substr(0, 34)));
  EXPECT_FALSE(md5ResponseMatches(stored, salt, ""));
  // A malformed stored hash never matches, not even an empty answer.
  EXPECT_FALSE(md5ResponseMatches("garbage", salt, ""));
  EXPECT_FALSE(md5ResponseMatches("", salt, ""));
}

TEST(Md5, CleartextPasswordMatches) {
  EXPECT_TRUE(md5PasswordMatches("md565170a859842ceb2930dc2fa1454af9d", "bob", "postgres"));
  EXPECT_FALSE(md5PasswordMatches("md565170a859842ceb2930dc2fa1454af9d", "bob", "postgre"));
  EXPECT_FALSE(md5PasswordMatches("md565170a859842ceb2930dc2fa1454af9d", "alice", "postgres"));
  EXPECT_FALSE(md5PasswordMatches("postgres", "bob", "postgres"));
}

}  // namespace
}  // namespace shardgate::wire
