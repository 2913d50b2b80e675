// Unit tests for the config keys of the metrics probes and the slow-query log.
#include <gtest/gtest.h>

#include <string>

#include "conf/config_loader.h"

namespace shardgate::conf {
namespace {

TEST(ConfObservability, Defaults) {
  auto result = parseConfig("", "test.toml");
  ASSERT_TRUE(result.ok()) << result.error().message;
  const General& g = (*result)->general;
  EXPECT_EQ(g.server_check_interval_ms, 5000u);
  EXPECT_EQ(g.table_stats_interval_ms, 60000u);
  EXPECT_EQ(g.slow_query_ms, 0u);
  EXPECT_EQ(g.slow_query_max_chars, 200u);
  EXPECT_FALSE(g.log_parameters);
}

TEST(ConfObservability, KeysRead) {
  auto result = parseConfig(R"([general]
server_check_interval_ms = 250
table_stats_interval_ms = 1000
slow_query_ms = 50
slow_query_max_chars = 80
log_parameters = true
)",
                            "test.toml");
  ASSERT_TRUE(result.ok()) << result.error().message;
  const General& g = (*result)->general;
  EXPECT_EQ(g.server_check_interval_ms, 250u);
  EXPECT_EQ(g.table_stats_interval_ms, 1000u);
  EXPECT_EQ(g.slow_query_ms, 50u);
  EXPECT_EQ(g.slow_query_max_chars, 80u);
  EXPECT_TRUE(g.log_parameters);
}

TEST(ConfObservability, RangesAreChecked) {
  for (const char* text :
       {"[general]\nserver_check_interval_ms = 10\n", "[general]\ntable_stats_interval_ms = 0\n",
        "[general]\nslow_query_ms = -1\n", "[general]\nslow_query_max_chars = 3\n",
        "[general]\nlog_parameters = \"yes\"\n"}) {
    auto result = parseConfig(text, "test.toml");
    ASSERT_FALSE(result.ok()) << text;
    EXPECT_NE(result.error().message.find("general."), std::string::npos) << result.error().message;
  }
}

}  // namespace
}  // namespace shardgate::conf
