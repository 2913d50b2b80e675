// SessionSettings::reportedAtLogin: which startup settings a login answered without a server can
// report, and with the value Postgres 15 would report for them.
#include "proxy/session_settings.h"

#include <gtest/gtest.h>

#include <optional>
#include <string>

namespace shardgate::proxy {
namespace {

const backends::ServerParameters kServer = {
    {"application_name", ""},    {"client_encoding", "UTF8"},
    {"DateStyle", "ISO, MDY"},   {"IntervalStyle", "postgres"},
    {"TimeZone", "Etc/UTC"},     {"standard_conforming_strings", "on"},
    {"server_version", "15.18"}, {"default_transaction_read_only", "off"},
    {"is_superuser", "on"},      {"session_authorization", "postgres"},
    {"integer_datetimes", "on"}, {"server_encoding", "UTF8"},
};

std::optional<backends::ServerParameters> reportedFor(const SettingList& startup) {
  SessionSettings settings;
  settings.setStartup(startup);
  return settings.reportedAtLogin(kServer);
}

TEST(SessionSettingsLogin, NoStartupSettingsReportsTheServers) {
  auto reported = reportedFor({});
  ASSERT_TRUE(reported);
  EXPECT_EQ(*reported, kServer);
}

TEST(SessionSettingsLogin, KnownValuesAreReportedAsPostgresSpellsThem) {
  auto reported = reportedFor({{"application_name", "billing worker"},
                               {"client_encoding", "utf-8"},
                               {"DateStyle", "iso"},
                               {"extra_float_digits", "3"},
                               {"TimeZone", "Etc/UTC"}});
  ASSERT_TRUE(reported);
  EXPECT_EQ(reported->at("application_name"), "billing worker");
  EXPECT_EQ(reported->at("client_encoding"), "UTF8");
  EXPECT_EQ(reported->at("DateStyle"), "ISO, MDY");
  EXPECT_EQ(reported->at("TimeZone"), "Etc/UTC");
  EXPECT_EQ(reported->count("extra_float_digits"), 0u);  // not a reported setting
  auto utf_8 = reportedFor({{"client_encoding", "Utf_8"}});
  ASSERT_TRUE(utf_8);
  EXPECT_EQ(utf_8->at("client_encoding"), "UTF8");
}

TEST(SessionSettingsLogin, ValuesOnlyPostgresCanTellNeedAServer) {
  for (const SettingList& startup : std::vector<SettingList>{
           {{"TimeZone", "utc"}},                         // reported as "UTC"
           {{"DateStyle", "German"}},                     // reported with its field order
           {{"client_encoding", "LATIN1"}},               // another encoding
           {{"client_encoding", "UNICODE"}},              // reported as given, for old drivers
           {{"application_name", std::string(64, 'a')}},  // truncated by Postgres
           {{"application_name", "caf\xc3\xa9"}},         // non-ASCII: '?' in Postgres
           {{"extra_float_digits", "4"}},                 // out of range: the login fails
           {{"search_path", "app, public"}},              // not reported, not checked here
           {{"is_superuser", "on"}},                      // may not be set at all
       }) {
    EXPECT_FALSE(reportedFor(startup)) << startup.front().first << "=" << startup.front().second;
  }
}

}  // namespace
}  // namespace shardgate::proxy
