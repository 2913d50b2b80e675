// Tests of message framing (frameTyped / frameUntyped) and of PayloadReader / MessageWriter.
#include <gtest/gtest.h>

#include <string>
#include <string_view>

#include "proxy/wire/framing.h"
#include "proxy/wire/payload.h"
#include "proxy/wire/protocol.h"

namespace shardgate::wire {
namespace {

using namespace std::string_literals;

constexpr uint32_t kMax = 1 << 20;

// A typed message with a given raw length word and body.
std::string typed(char type, uint32_t length_word, std::string_view body) {
  std::string s(1, type);
  s.push_back(static_cast<char>(length_word >> 24));
  s.push_back(static_cast<char>(length_word >> 16));
  s.push_back(static_cast<char>(length_word >> 8));
  s.push_back(static_cast<char>(length_word));
  s.append(body);
  return s;
}

std::string untyped(uint32_t length_word, std::string_view body) {
  return typed('x', length_word, body).substr(1);
}

TEST(FrameTyped, EmptyBufferNeedsMoreWithUnknownLength) {
  FrameResult r = frameTyped("", kMax);
  EXPECT_EQ(r.status, FrameStatus::kNeedMore);
  EXPECT_EQ(r.needed, 0u);
}

TEST(FrameTyped, PartialHeaderNeedsMoreWithUnknownLength) {
  const std::string msg = typed('Q', 9, "abcd\0"s);
  for (size_t n = 1; n < 5; ++n) {
    FrameResult r = frameTyped(std::string_view(msg).substr(0, n), kMax);
    EXPECT_EQ(r.status, FrameStatus::kNeedMore) << n;
    EXPECT_EQ(r.needed, 0u) << n;
  }
}

TEST(FrameTyped, PartialBodyReportsTotalSize) {
  const std::string msg = typed('Q', 9, "abcd\0"s);
  for (size_t n = 5; n < msg.size(); ++n) {
    FrameResult r = frameTyped(std::string_view(msg).substr(0, n), kMax);
    EXPECT_EQ(r.status, FrameStatus::kNeedMore) << n;
    EXPECT_EQ(r.needed, 10u) << n;
  }
}

TEST(FrameTyped, CompleteMessagePointsIntoTheBuffer) {
  const std::string msg = typed('Q', 9, "abcd\0"s);
  FrameResult r = frameTyped(msg, kMax);
  ASSERT_EQ(r.status, FrameStatus::kComplete);
  EXPECT_EQ(r.frame.type, 'Q');
  EXPECT_EQ(r.frame.size, 10u);
  EXPECT_EQ(r.frame.payload, "abcd\0"s);
  EXPECT_EQ(r.frame.payload.data(), msg.data() + 5);  // no copy
}

TEST(FrameTyped, EmptyPayload) {
  const std::string msg = typed('S', 4, "");
  FrameResult r = frameTyped(msg, kMax);
  ASSERT_EQ(r.status, FrameStatus::kComplete);
  EXPECT_EQ(r.frame.type, 'S');
  EXPECT_EQ(r.frame.size, 5u);
  EXPECT_TRUE(r.frame.payload.empty());
}

TEST(FrameTyped, TwoMessagesBackToBack) {
  const std::string buf = typed('P', 7, "a\0b"s) + typed('S', 4, "") + "Z"s;
  FrameResult first = frameTyped(buf, kMax);
  ASSERT_EQ(first.status, FrameStatus::kComplete);
  EXPECT_EQ(first.frame.type, 'P');
  EXPECT_EQ(first.frame.payload, "a\0b"s);
  ASSERT_EQ(first.frame.size, 8u);

  std::string_view rest = std::string_view(buf).substr(first.frame.size);
  FrameResult second = frameTyped(rest, kMax);
  ASSERT_EQ(second.status, FrameStatus::kComplete);
  EXPECT_EQ(second.frame.type, 'S');
  EXPECT_EQ(second.frame.size, 5u);

  rest = rest.substr(second.frame.size);
  EXPECT_EQ(frameTyped(rest, kMax).status, FrameStatus::kNeedMore);
}

TEST(FrameTyped, LengthBelowFourIsInvalid) {
  for (uint32_t length : {0u, 1u, 3u}) {
    FrameResult r = frameTyped(typed('Q', length, "xxxx"), kMax);
    ASSERT_EQ(r.status, FrameStatus::kInvalid) << length;
    EXPECT_EQ(r.error.sqlstate, "08P01");
    EXPECT_EQ(r.error.severity, "FATAL");
    EXPECT_EQ(r.error.message, "invalid message length " + std::to_string(length));
  }
}

TEST(FrameTyped, NegativeLengthIsInvalid) {
  FrameResult r = frameTyped(typed('Q', 0xFFFFFFFFu, ""), UINT32_MAX);
  ASSERT_EQ(r.status, FrameStatus::kInvalid);
  EXPECT_EQ(r.error.message, "invalid message length -1");
  r = frameTyped(typed('Q', 0x80000000u, ""), UINT32_MAX);
  EXPECT_EQ(r.status, FrameStatus::kInvalid);
}

TEST(FrameTyped, LengthAboveMaximumIsInvalidBeforeTheBodyArrives) {
  FrameResult r = frameTyped(typed('Q', 1001, ""), 1000);
  ASSERT_EQ(r.status, FrameStatus::kInvalid);
  EXPECT_EQ(r.error.sqlstate, "08P01");
  EXPECT_EQ(r.error.severity, "FATAL");
  EXPECT_EQ(r.error.message, "message of 1001 bytes exceeds the limit of 1000 bytes");

  // Exactly at the limit is fine.
  r = frameTyped(typed('Q', 1000, ""), 1000);
  EXPECT_EQ(r.status, FrameStatus::kNeedMore);
  EXPECT_EQ(r.needed, 1001u);
}

TEST(FrameUntyped, PartialHeaderAndBody) {
  const std::string msg = untyped(8, "\x04\xd2\x16\x2f");  // SSLRequest
  for (size_t n = 0; n < 4; ++n) {
    FrameResult r = frameUntyped(std::string_view(msg).substr(0, n), kMax);
    EXPECT_EQ(r.status, FrameStatus::kNeedMore);
    EXPECT_EQ(r.needed, 0u);
  }
  for (size_t n = 4; n < 8; ++n) {
    FrameResult r = frameUntyped(std::string_view(msg).substr(0, n), kMax);
    EXPECT_EQ(r.status, FrameStatus::kNeedMore);
    EXPECT_EQ(r.needed, 8u);
  }
  FrameResult r = frameUntyped(msg, kMax);
  ASSERT_EQ(r.status, FrameStatus::kComplete);
  EXPECT_EQ(r.frame.type, 0);
  EXPECT_EQ(r.frame.size, 8u);
  EXPECT_EQ(r.frame.payload, "\x04\xd2\x16\x2f");
  EXPECT_EQ(r.frame.payload.data(), msg.data() + 4);
}

TEST(FrameUntyped, BackToBack) {
  // A client may pipeline its StartupMessage right behind the SSLRequest.
  const std::string buf = untyped(8, "\x04\xd2\x16\x2f") + untyped(9, "\x00\x03\x00\x00\x00"s);
  FrameResult first = frameUntyped(buf, kMax);
  ASSERT_EQ(first.status, FrameStatus::kComplete);
  FrameResult second = frameUntyped(std::string_view(buf).substr(first.frame.size), kMax);
  ASSERT_EQ(second.status, FrameStatus::kComplete);
  EXPECT_EQ(second.frame.size, 9u);
  EXPECT_EQ(second.frame.payload, "\x00\x03\x00\x00\x00"s);
}

TEST(FrameUntyped, LengthBelowEightIsInvalid) {
  for (uint32_t length : {0u, 4u, 7u, 0xFFFFFFF0u}) {
    FrameResult r = frameUntyped(untyped(length, "12345678"), kMax);
    ASSERT_EQ(r.status, FrameStatus::kInvalid) << length;
    EXPECT_EQ(r.error.sqlstate, "08P01");
    EXPECT_EQ(r.error.severity, "FATAL");
    EXPECT_EQ(r.error.message, "invalid length of startup packet");
  }
}

TEST(FrameUntyped, LengthAboveTenThousandIsInvalidWhateverTheMaximum) {
  FrameResult r = frameUntyped(untyped(10001, ""), kMax);
  ASSERT_EQ(r.status, FrameStatus::kInvalid);
  EXPECT_NE(r.error.detail.find("10001"), std::string::npos);
  EXPECT_EQ(frameUntyped(untyped(10000, ""), kMax).needed, 10000u);
}

TEST(FrameUntyped, LengthAboveASmallerMaximumIsInvalid) {
  EXPECT_EQ(frameUntyped(untyped(101, ""), 100).status, FrameStatus::kInvalid);
  EXPECT_EQ(frameUntyped(untyped(100, ""), 100).status, FrameStatus::kNeedMore);
}

TEST(PayloadReader, ReadsBigEndianAndStrings) {
  const std::string p = "\x01\xff\xfe\x80\x00\x00\x01hello\0rest"s;
  PayloadReader r(p);
  uint8_t i8;
  int16_t i16;
  int32_t i32;
  std::string_view s;
  ASSERT_TRUE(r.readInt8(i8));
  EXPECT_EQ(i8, 1);
  ASSERT_TRUE(r.readInt16(i16));
  EXPECT_EQ(i16, -2);
  ASSERT_TRUE(r.readInt32(i32));
  EXPECT_EQ(i32, static_cast<int32_t>(0x80000001u));
  ASSERT_TRUE(r.readCString(s));
  EXPECT_EQ(s, "hello");
  EXPECT_EQ(r.remaining(), 4u);
  EXPECT_FALSE(r.readCString(s));  // no NUL left
  EXPECT_FALSE(r.readBytes(5, s));
  ASSERT_TRUE(r.readBytes(4, s));
  EXPECT_EQ(s, "rest");
  EXPECT_TRUE(r.atEnd());
  EXPECT_FALSE(r.readInt8(i8));
}

TEST(PayloadReader, FailedReadsDoNotMove) {
  const std::string payload = "\x00\x01\x02"s;
  PayloadReader r(payload);
  int32_t i32;
  EXPECT_FALSE(r.readInt32(i32));
  EXPECT_EQ(r.remaining(), 3u);
  int16_t i16;
  ASSERT_TRUE(r.readInt16(i16));
  EXPECT_EQ(i16, 1);
  EXPECT_FALSE(r.readInt16(i16));
  EXPECT_EQ(r.remaining(), 1u);
}

TEST(MessageWriter, PatchesTheLengthWord) {
  std::string out = "prefix";
  MessageWriter(out, 'Q').cstring("select 1").finish();
  EXPECT_EQ(out, "prefixQ\x00\x00\x00\x0dselect 1\0"s);
}

TEST(MessageWriter, UntypedPacket) {
  std::string out;
  MessageWriter(out, 0).int32(kSslRequestCode).finish();
  EXPECT_EQ(out, "\x00\x00\x00\x08\x04\xd2\x16\x2f"s);
}

TEST(MessageWriter, IntegersAreBigEndian) {
  std::string out;
  MessageWriter(out, 'x').int8(0xAB).int16(-2).int32(0x01020304).bytes("zz").finish();
  EXPECT_EQ(out, "x\x00\x00\x00\x0d\xab\xff\xfe\x01\x02\x03\x04zz"s);
}

TEST(MessageWriter, CStringIsCutAtAnEmbeddedNul) {
  std::string out;
  MessageWriter(out, 'Q').cstring("ab\0cd"s).finish();
  EXPECT_EQ(out,
            "Q\x00\x00\x00\x07"
            "ab\0"s);
}

TEST(Protocol, MessageTypes) {
  for (char c : std::string_view("QPBDECSHXdcfpF")) EXPECT_TRUE(isFrontendMessageType(c)) << c;
  for (char c : std::string_view("RK23CdcGHWDIEVvnNAtS1sZT")) {
    EXPECT_TRUE(isBackendMessageType(c)) << c;
  }
  for (char c : "aZTR12\0"s) EXPECT_FALSE(isFrontendMessageType(c)) << c;
  for (char c : "QPBXfpFa\0"s) EXPECT_FALSE(isBackendMessageType(c)) << c;
  EXPECT_EQ(kProtocolVersion30, 3 << 16);
  EXPECT_EQ(protocolMajor(kProtocolVersion30), 3);
  EXPECT_EQ(protocolMinor(kProtocolVersion30 + 2), 2);
}

}  // namespace
}  // namespace shardgate::wire
