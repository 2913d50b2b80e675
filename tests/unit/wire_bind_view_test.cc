// BindView (the routing hot path's copy-free Bind reader) reads what Bind::decode reads and
// refuses what it refuses, with the same errors.
#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <vector>

#include "proxy/wire/frontend_messages.h"

namespace shardgate::wire {
namespace {

using namespace std::string_literals;

// The payload of an encoded message (after its type byte and length).
std::string payloadOf(const Bind& b) {
  std::string buf;
  b.encode(buf);
  return buf.substr(5);
}

void expectSameAsBind(std::string_view payload, BindView& view) {
  Result<Bind> bind = Bind::decode(payload);
  Status read = view.decode(payload);
  ASSERT_EQ(bind.ok(), read.ok()) << (bind.ok() ? read.error().describe()
                                                : bind.error().describe());
  if (!bind.ok()) {
    EXPECT_EQ(read.error().sqlstate, bind.error().sqlstate);
    EXPECT_EQ(read.error().message, bind.error().message);
    EXPECT_EQ(read.error().detail, bind.error().detail);
    return;
  }
  EXPECT_EQ(view.portal, bind->portal);
  EXPECT_EQ(view.statement, bind->statement);
  EXPECT_EQ(view.param_formats, bind->param_formats);
  EXPECT_EQ(view.result_formats, bind->result_formats);
  ASSERT_EQ(view.params.size(), bind->params.size());
  for (size_t i = 0; i < view.params.size(); ++i) {
    ASSERT_EQ(view.params[i].has_value(), bind->params[i].has_value()) << i;
    if (view.params[i]) {
      EXPECT_EQ(*view.params[i], *bind->params[i]) << i;
    }
  }
}

TEST(BindView, ReadsWhatBindReads) {
  BindView view;  // one view for every case: it is reused from Bind to Bind
  Bind b;
  expectSameAsBind(payloadOf(b), view);
  b.portal = "portal";
  b.statement = "a_statement_name_longer_than_sso";
  b.param_formats = {1, 0, 1};
  b.params = {"\x00\x00\x00\x2a"s, std::nullopt, ""s};
  b.result_formats = {1};
  expectSameAsBind(payloadOf(b), view);
  b = Bind{};
  b.statement = "s";
  b.params = {"7"s};
  expectSameAsBind(payloadOf(b), view);
  EXPECT_TRUE(view.param_formats.empty());
  EXPECT_TRUE(view.result_formats.empty());
  b.params.assign(40000, "v"s);  // counts are unsigned: up to 65535 parameters
  b.param_formats = {1};
  expectSameAsBind(payloadOf(b), view);
}

TEST(BindView, RefusesWhatBindRefuses) {
  BindView view;
  const std::vector<std::string> hostile = {
      ""s,
      "\0"s,
      "\0\0\xff\xff"s,
      "\0\0\x00\x00\x00\x03\x00\x00\x00\x01x\x00\x00"s,
      "\0\0\x00\x00\x00\x01\xff\xff\xff\xfe\x00\x00"s,
      "\0\0\x00\x00\x00\x01\x7f\xff\xff\xff\x00\x00"s,
      "\0\0\x00\x00\x00\x01\x00\x00"s,
      "\0\0\x00\x01\x00\x02\x00\x00\x00\x00"s,
      "\0\0\x00\x00\x00\x00\x00\x01\x00\x07"s,
      "\0\0\x00\x02\x00\x00\x00\x01\x00\x03\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"
      "\x00\x00"s,
      "\0\0\x00\x00\x00\x00\x00\x00trailing"s,
  };
  for (const std::string& payload : hostile) {
    SCOPED_TRACE(testing::PrintToString(payload));
    expectSameAsBind(payload, view);
  }
  // Every prefix of a valid Bind is refused alike.
  Bind b;
  b.statement = "s";
  b.param_formats = {0, 1};
  b.params = {"abc"s, std::nullopt};
  b.result_formats = {0, 1};
  const std::string full = payloadOf(b);
  for (size_t n = 0; n < full.size(); ++n) {
    SCOPED_TRACE(n);
    expectSameAsBind(std::string_view(full).substr(0, n), view);
  }
}

}  // namespace
}  // namespace shardgate::wire
