// Tests for strict canonical base64 (common/base64.h): RFC 4648 vectors, round trips of every
// byte and length, and malformed input of every kind.
#include "common/base64.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace shardgate {
namespace {

using namespace std::string_literals;

TEST(Base64, Rfc4648Vectors) {
  const std::vector<std::pair<std::string, std::string>> vectors = {{"", ""},
                                                                    {"f", "Zg=="},
                                                                    {"fo", "Zm8="},
                                                                    {"foo", "Zm9v"},
                                                                    {"foob", "Zm9vYg=="},
                                                                    {"fooba", "Zm9vYmE="},
                                                                    {"foobar", "Zm9vYmFy"}};
  for (const auto& [raw, text] : vectors) {
    EXPECT_EQ(base64Encode(raw), text);
    auto decoded = base64Decode(text);
    ASSERT_TRUE(decoded.has_value()) << text;
    EXPECT_EQ(*decoded, raw);
  }
  EXPECT_EQ(base64Encode("n,,"), "biws");
  EXPECT_EQ(base64Encode("y,,"), "eSws");
  EXPECT_EQ(base64Encode("\xfb\xff\xbf"s), "+/+/");
}

TEST(Base64, RoundTripsEveryByteAndLength) {
  std::mt19937 rng(42);
  for (size_t length = 0; length < 70; ++length) {
    std::string raw(length, '\0');
    for (auto& c : raw) c = static_cast<char>(rng() & 0xff);
    auto decoded = base64Decode(base64Encode(raw));
    ASSERT_TRUE(decoded.has_value()) << length;
    EXPECT_EQ(*decoded, raw);
  }
  std::string all;
  for (int i = 0; i < 256; ++i) all.push_back(static_cast<char>(i));
  EXPECT_EQ(*base64Decode(base64Encode(all)), all);
}

TEST(Base64, StrictDecodingRejectsBadInput) {
  for (std::string_view bad :
       {"Zg", "Zg=", "Zm9vY", "Z===", "====", "Zg==Zg==", "Zm=v", "Zm9v\n", " Zm9v", "Zm9v YmFy",
        "Zm9-", "Zm9_", "Zh==", "Zm9=", "Zm8=====", "Zg=a"}) {
    EXPECT_FALSE(base64Decode(bad).has_value()) << bad;
  }
  // Embedded NUL is not part of the alphabet.
  EXPECT_FALSE(base64Decode("Zm9\0"s).has_value());
}

// The cases the config loader's own decoder was tested with before it used this one.
TEST(Base64, DecodesPaddedGroupsAndRefusesMisplacedPadding) {
  EXPECT_EQ(base64Decode(""), "");
  EXPECT_EQ(base64Decode("Zg=="), "f");
  EXPECT_EQ(base64Decode("Zm8="), "fo");
  EXPECT_EQ(base64Decode("Zm9v"), "foo");
  EXPECT_EQ(base64Decode("Zm9vYmFy"), "foobar");
  EXPECT_EQ(base64Decode("+/+/"), std::string("\xfb\xff\xbf", 3));
  EXPECT_FALSE(base64Decode("Zg"));        // padding required
  EXPECT_FALSE(base64Decode("Zg=a"));      // '=' only at the end
  EXPECT_FALSE(base64Decode("Z==="));      // at most two '='
  EXPECT_FALSE(base64Decode("Zg==Zm9v"));  // '=' only in the last group
  EXPECT_FALSE(base64Decode("Zm9*"));
  EXPECT_FALSE(base64Decode("Zm9v\n"));
}

}  // namespace
}  // namespace shardgate
