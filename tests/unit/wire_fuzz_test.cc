// Randomized robustness test: random and mutated bytes fed to every framing and decode function.
// Nothing may crash or read out of bounds (run under the ASan build), and whatever decodes must
// encode back to exactly the same bytes.
#include <gtest/gtest.h>

#include <functional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/wire/backend_messages.h"
#include "proxy/wire/framing.h"
#include "proxy/wire/frontend_messages.h"

namespace shardgate::wire {
namespace {

using namespace std::string_literals;

// Decodes a payload and, on success, checks that re-encoding reproduces it.
using Checker = std::function<void(std::string_view payload)>;

template <typename T>
Checker typedChecker() {
  return [](std::string_view payload) {
    Result<T> r = T::decode(payload);
    if (!r.ok()) {
      EXPECT_FALSE(r.error().message.empty());
      return;
    }
    std::string buf;
    r->encode(buf);
    ASSERT_GE(buf.size(), 5u);
    EXPECT_EQ(std::string_view(buf).substr(5), payload) << typeid(T).name();
  };
}

template <typename T>
Checker untypedChecker() {
  return [](std::string_view payload) {
    Result<T> r = T::decode(payload);
    if (!r.ok()) return;
    std::string buf;
    r->encode(buf);
    EXPECT_EQ(std::string_view(buf).substr(4), payload) << typeid(T).name();
  };
}

std::vector<Checker> allCheckers() {
  return {
      untypedChecker<StartupMessage>(),
      untypedChecker<SslRequest>(),
      untypedChecker<GssEncRequest>(),
      untypedChecker<CancelRequest>(),
      [](std::string_view p) { (void)decodeStartupPacket(p); },
      typedChecker<Query>(),
      typedChecker<Parse>(),
      typedChecker<Bind>(),
      typedChecker<Describe>(),
      typedChecker<Execute>(),
      typedChecker<Close>(),
      typedChecker<Sync>(),
      typedChecker<Flush>(),
      typedChecker<Terminate>(),
      typedChecker<CopyData>(),
      typedChecker<CopyDone>(),
      typedChecker<CopyFail>(),
      typedChecker<PasswordMessage>(),
      typedChecker<SaslInitialResponse>(),
      typedChecker<SaslResponse>(),
      typedChecker<FunctionCall>(),
      typedChecker<AuthenticationOk>(),
      typedChecker<AuthenticationCleartextPassword>(),
      typedChecker<AuthenticationMd5Password>(),
      typedChecker<AuthenticationSasl>(),
      typedChecker<AuthenticationSaslContinue>(),
      typedChecker<AuthenticationSaslFinal>(),
      [](std::string_view p) { (void)decodeAuthentication(p); },
      typedChecker<BackendKeyData>(),
      typedChecker<ParameterStatus>(),
      typedChecker<ReadyForQuery>(),
      typedChecker<NegotiateProtocolVersion>(),
      typedChecker<RowDescription>(),
      typedChecker<DataRow>(),
      typedChecker<CommandComplete>(),
      typedChecker<EmptyQueryResponse>(),
      typedChecker<ErrorResponse>(),
      typedChecker<NoticeResponse>(),
      typedChecker<ParseComplete>(),
      typedChecker<BindComplete>(),
      typedChecker<CloseComplete>(),
      typedChecker<NoData>(),
      typedChecker<PortalSuspended>(),
      typedChecker<ParameterDescription>(),
      typedChecker<CopyInResponse>(),
      typedChecker<CopyOutResponse>(),
      typedChecker<CopyBothResponse>(),
      typedChecker<NotificationResponse>(),
      typedChecker<FunctionCallResponse>(),
  };
}

// Valid payloads to mutate: random bytes alone rarely get past the first field.
std::vector<std::string> seeds() {
  std::vector<std::string> out;
  auto add = [&out](const auto& message, size_t header) {
    std::string buf;
    message.encode(buf);
    out.push_back(buf.substr(header));
  };
  add(StartupMessage{kProtocolVersion30, {{"user", "u"}, {"database", "d"}}}, 4);
  add(CancelRequest{1, 2}, 4);
  add(SslRequest{}, 4);
  add(Parse{"s", "select $1", {23, 25}}, 5);
  Bind b;
  b.param_formats = {1, 0};
  b.params = {"\x00\x00\x00\x01"s, std::nullopt};
  b.result_formats = {1};
  add(b, 5);
  add(Describe{'P', "p"}, 5);
  add(Execute{"p", 10}, 5);
  add(SaslInitialResponse{"SCRAM-SHA-256", "n,,n=,r=abc"s}, 5);
  add(FunctionCall{1, {0}, {"a"s}, 0}, 5);
  add(AuthenticationSasl{{"SCRAM-SHA-256"}}, 5);
  add(AuthenticationMd5Password{{'a', 'b', 'c', 'd'}}, 5);
  add(RowDescription{{{"a", 1, 1, 23, 4, -1, 0}, {"b", 0, 0, 25, -1, -1, 1}}}, 5);
  add(DataRow{{"1"s, std::nullopt, ""s}}, 5);
  add(ErrorResponse::fromError(Error::make("42P01", "m", "d", "h")), 5);
  add(ParameterDescription{{23, 25}}, 5);
  add(CopyOutResponse{1, {0, 1}}, 5);
  add(NegotiateProtocolVersion{0, {"_pq_.a"}}, 5);
  add(NotificationResponse{1, "c", "p"}, 5);
  add(FunctionCallResponse{"x"s}, 5);
  add(ReadyForQuery{'I'}, 5);
  return out;
}

std::string randomBytes(std::mt19937& rng, size_t max_len) {
  std::uniform_int_distribution<size_t> len(0, max_len);
  std::uniform_int_distribution<int> byte(0, 255);
  std::string s(len(rng), '\0');
  for (auto& c : s) c = static_cast<char>(byte(rng));
  return s;
}

std::string mutate(std::mt19937& rng, std::string s) {
  std::uniform_int_distribution<int> op(0, 4);
  std::uniform_int_distribution<int> byte(0, 255);
  const int edits = 1 + static_cast<int>(rng() % 3);
  for (int e = 0; e < edits; ++e) {
    const size_t at = s.empty() ? 0 : rng() % (s.size() + 1);
    switch (op(rng)) {
      case 0:  // flip a byte
        if (at < s.size()) s[at] = static_cast<char>(byte(rng));
        break;
      case 1:  // truncate
        s.resize(at);
        break;
      case 2:  // insert a byte
        s.insert(s.begin() + static_cast<std::ptrdiff_t>(at), static_cast<char>(byte(rng)));
        break;
      case 3:  // an extreme value where a length or count might be
        if (at < s.size()) s[at] = static_cast<char>(rng() % 2 ? 0xff : 0x7f);
        break;
      default:  // remove a byte
        if (at < s.size()) s.erase(at, 1);
        break;
    }
  }
  return s;
}

void checkFraming(std::string_view buf) {
  for (uint32_t max : {0u, 16u, 10000u, UINT32_MAX}) {
    FrameResult t = frameTyped(buf, max);
    if (t.status == FrameStatus::kComplete) {
      ASSERT_LE(t.frame.size, buf.size());
      EXPECT_EQ(t.frame.size, t.frame.payload.size() + 5);
      EXPECT_EQ(t.frame.payload.data(), buf.data() + 5);
      EXPECT_LE(t.frame.payload.size() + 4, max);
    } else if (t.status == FrameStatus::kNeedMore) {
      EXPECT_TRUE(t.needed == 0 || t.needed > buf.size());
    } else {
      EXPECT_EQ(t.error.sqlstate, "08P01");
    }
    FrameResult u = frameUntyped(buf, max);
    if (u.status == FrameStatus::kComplete) {
      ASSERT_LE(u.frame.size, buf.size());
      EXPECT_EQ(u.frame.size, u.frame.payload.size() + 4);
      EXPECT_GE(u.frame.size, 8u);
      EXPECT_LE(u.frame.size, 10000u);
    } else if (u.status == FrameStatus::kNeedMore) {
      EXPECT_TRUE(u.needed == 0 || u.needed > buf.size());
    } else {
      EXPECT_EQ(u.error.sqlstate, "08P01");
    }
  }
}

// Each input is copied into an exactly sized heap buffer so that ASan flags any over-read.
void feed(const std::vector<Checker>& checkers, const std::string& input) {
  std::vector<char> exact(input.begin(), input.end());
  std::string_view view(exact.data(), exact.size());
  for (const auto& check : checkers) check(view);
  checkFraming(view);
}

TEST(WireFuzz, RandomBytes) {
  std::mt19937 rng(20240611);
  const auto checkers = allCheckers();
  for (int i = 0; i < 20000; ++i) feed(checkers, randomBytes(rng, 64));
}

TEST(WireFuzz, MutatedValidMessages) {
  std::mt19937 rng(7);
  const auto checkers = allCheckers();
  const auto inputs = seeds();
  for (int i = 0; i < 20000; ++i) {
    feed(checkers, mutate(rng, inputs[static_cast<size_t>(i) % inputs.size()]));
  }
}

TEST(WireFuzz, SeedsDecodeAsThemselves) {
  // The mutation test is only worth something if its seeds are valid to begin with.
  const auto checkers = allCheckers();
  for (const auto& s : seeds()) feed(checkers, s);
  EXPECT_TRUE(Bind::decode(seeds()[4]).ok());
  EXPECT_TRUE(RowDescription::decode(seeds()[11]).ok());
}

}  // namespace
}  // namespace shardgate::wire
