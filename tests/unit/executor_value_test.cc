// Unit tests of the executor's value layer: exact numeric arithmetic, float output, and ordering of
// every supported type in text and binary form. Expected values come from Postgres 15.20
// (psql against a scratch server, en_US.UTF-8 database); the queries are quoted beside them.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "executor/decimal.h"
#include "executor/float_format.h"
#include "executor/value.h"

namespace shardgate::executor {
namespace {

std::string hexToBytes(std::string_view hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<char>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16)));
  }
  return out;
}

std::string bytesToHex(std::string_view bytes) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out.push_back(digits[c >> 4]);
    out.push_back(digits[c & 15]);
  }
  return out;
}

Decimal dec(std::string_view text) {
  auto d = Decimal::parseText(text);
  EXPECT_TRUE(d.ok()) << text;
  return d.ok() ? *d : Decimal();
}

// select x, numeric_send(x::numeric) from unnest(array[...]) x
TEST(ExecutorDecimalTest, BinaryFormMatchesNumericSend) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"0", "0000000000000000"},
      {"0.00", "0000000000000002"},
      {"1", "00010000000000000001"},
      {"-1.5", "000200004000000100011388"},
      {"12345.678", "0003000100000003000109291a7c"},
      {"10000", "00010001000000000001"},
      {"0.0001", "0001ffff000000040001"},
      {"-0.00012", "0002ffff40000005000107d0"},
      {"123456789012345678901234567890.123456789",
       "000b000700000009000c0d801ed204d2162e23340d801ed204d2162e2328"},
      {"NaN", "00000000c0000000"},
      {"Infinity", "00000000d0000020"},
      {"-Infinity", "00000000f0000020"},
      {"1.50", "000200000000000200011388"},
  };
  for (const auto& [text, hex] : cases) {
    const Decimal d = dec(text);
    EXPECT_EQ(bytesToHex(d.toBinary()), hex) << text;
    EXPECT_EQ(d.toText(), text);
    auto back = Decimal::parseBinary(hexToBytes(hex));
    ASSERT_TRUE(back.ok()) << text;
    EXPECT_EQ(back->toText(), text);
  }
}

TEST(ExecutorDecimalTest, RejectsMalformedInput) {
  for (std::string_view bad : {"", "-", "1.2.3", "abc", "1e", "--1", "1 2"}) {
    EXPECT_FALSE(Decimal::parseText(bad).ok()) << bad;
  }
  EXPECT_FALSE(Decimal::parseBinary(hexToBytes("0001")).ok());
  EXPECT_FALSE(Decimal::parseBinary(hexToBytes("000100000000000027ff")).ok());  // digit 10239
  EXPECT_FALSE(Decimal::parseBinary(hexToBytes("00010000000000000001ff")).ok());
  EXPECT_EQ(dec("1.5e3").toText(), "1500");
  EXPECT_EQ(dec("1.5e-3").toText(), "0.0015");
}

// numeric_div's scale (select_div_scale) and rounding, as avg() shows them:
// select avg(x) from (values ...) v(x)
TEST(ExecutorDecimalTest, DivisionScaleMatchesAvg) {
  struct Case {
    std::string sum, count, expected;
  };
  const std::vector<Case> cases = {
      {"3", "2", "1.5000000000000000"},                          // (1),(2)
      {"3.000", "2", "1.5000000000000000"},                      // (1::numeric(10,3)),(2)
      {"10000000002", "2", "5000000001.00000000"},               // (10000000000),(2)
      {"5", "3", "1.6666666666666667"},                          // (1),(2),(2)
      {"0.005", "3", "0.00166666666666666667"},                  // (0.001),(0.002),(0.002)
      {"123456790.123", "2", "61728395.061500000000"},           // (123456789.123),(1)
      {"4e-20", "2", "0.000000000000000000020000000000000000"},  // (1e-20),(3e-20)
      {"100000000000000000000.5", "2", "50000000000000000000.3"},
      {"-5", "2", "-2.5000000000000000"},   // (-7),(2)
      {"5.00", "2", "2.5000000000000000"},  // (2::numeric(5,2)),(3)
  };
  for (const auto& c : cases) {
    auto q = dec(c.sum).divide(dec(c.count));
    ASSERT_TRUE(q.ok());
    EXPECT_EQ(q->toText(), c.expected) << c.sum << " / " << c.count;
  }
  auto by_zero = dec("1").divide(dec("0.00"));
  ASSERT_FALSE(by_zero.ok());
  EXPECT_EQ(by_zero.error().sqlstate, "22012");
  // select 'NaN'::numeric + 1, 'Infinity'::numeric + 1, 'Infinity'::numeric + '-Infinity'
  EXPECT_EQ(dec("NaN").add(dec("1")).toText(), "NaN");
  EXPECT_EQ(dec("Infinity").add(dec("1")).toText(), "Infinity");
  EXPECT_EQ(dec("Infinity").add(dec("-Infinity")).toText(), "NaN");
  EXPECT_EQ(dec("Infinity").divide(dec("2"))->toText(), "Infinity");
  EXPECT_EQ(dec("1.5").add(dec("2.25")).add(dec("-0.75")).toText(), "3.00");
}

// select sqrt(2::numeric), sqrt(0.0002::numeric)  (sqrt picks its own scale; here given)
TEST(ExecutorDecimalTest, SquareRootRoundsToScale) {
  EXPECT_EQ(dec("2").squareRoot(15).toText(), "1.414213562373095");
  EXPECT_EQ(dec("0.0002").squareRoot(17).toText(), "0.01414213562373095");
  EXPECT_EQ(dec("0").squareRoot(3).toText(), "0.000");
}

TEST(ExecutorDecimalTest, CompareAndEqualityKeys) {
  EXPECT_EQ(dec("1.0").compare(dec("1.00")), 0);
  EXPECT_EQ(dec("1.0").equalityKey(), dec("1").equalityKey());
  EXPECT_NE(dec("10").equalityKey(), dec("1").equalityKey());
  EXPECT_LT(dec("-Infinity").compare(dec("-1e100")), 0);
  EXPECT_LT(dec("1e100").compare(dec("Infinity")), 0);
  EXPECT_LT(dec("Infinity").compare(dec("NaN")), 0);
  EXPECT_EQ(dec("NaN").compare(dec("NaN")), 0);
}

// select 1e20::float8, 1e15::float8, 1e14::float8, 123456789012345.6::float8, 0.0001::float8,
//        0.00001::float8, 1.5e-5::float8, 'nan'::float8, '-inf'::float8, 0.1::float8+0.2::float8,
//        1e100::float8, 1.23e-300::float8, '-0'::float8
TEST(ExecutorFloatFormatTest, ShortestOutputLikePostgres) {
  const std::vector<std::pair<double, std::string>> doubles = {
      {1e20, "1e+20"},
      {1e15, "1e+15"},
      {1e14, "100000000000000"},
      {123456789012345.6, "123456789012345.6"},
      {0.0001, "0.0001"},
      {0.00001, "1e-05"},
      {1.5e-5, "1.5e-05"},
      {0.1 + 0.2, "0.30000000000000004"},
      {1e100, "1e+100"},
      {1.23e-300, "1.23e-300"},
      {1.5, "1.5"},
      {-2.5, "-2.5"},
      {1.6666666666666667, "1.6666666666666667"},
      {-0.0, "-0"},
      {0.0, "0"},
      {std::numeric_limits<double>::quiet_NaN(), "NaN"},
      {-std::numeric_limits<double>::infinity(), "-Infinity"},
  };
  for (const auto& [v, text] : doubles) EXPECT_EQ(formatFloat8(v), text);
  // select 1e6::float4, 1e5::float4, 123456::float4, 1.5e-5::float4, 3.4e38::float4
  const std::vector<std::pair<float, std::string>> floats = {
      {1e6f, "1e+06"},      {1e5f, "100000"},     {123456.f, "123456"},
      {1.5e-5f, "1.5e-05"}, {3.4e38f, "3.4e+38"}, {0.1f, "0.1"},
  };
  for (const auto& [v, text] : floats) EXPECT_EQ(formatFloat4(v), text);
}

// set extra_float_digits = 0; select 0.1::float8+0.2::float8, 1e20::float8, 2/3::float8,
//   (-0.0::float8)*1, 'nan'::float8, 1.5e-5::float8, 123456789012345678::float8,
//   (0.1::float4 + 0.2::float4)
// set extra_float_digits = -3; select 2/3::float8;  set extra_float_digits = 3; select 2/3::float8
TEST(ExecutorFloatFormatTest, FewerDigitsWhenTheClientAsksForThem) {
  EXPECT_EQ(formatFloat8(0.1 + 0.2, 0), "0.3");
  EXPECT_EQ(formatFloat8(1e20, 0), "1e+20");
  EXPECT_EQ(formatFloat8(2.0 / 3, 0), "0.666666666666667");
  EXPECT_EQ(formatFloat8(-0.0, 0), "-0");
  EXPECT_EQ(formatFloat8(std::numeric_limits<double>::quiet_NaN(), 0), "NaN");
  EXPECT_EQ(formatFloat8(1.5e-5, 0), "1.5e-05");
  EXPECT_EQ(formatFloat8(123456789012345678.0, 0), "1.23456789012346e+17");
  EXPECT_EQ(formatFloat4(0.1f + 0.2f, 0), "0.3");
  EXPECT_EQ(formatFloat8(2.0 / 3, -3), "0.666666666667");
  EXPECT_EQ(formatFloat8(2.0 / 3, 3), "0.6666666666666666");
}

// Ordering: each list is ascending as Postgres sorts it (string_agg(x::text, ' | ' order by x));
// entries joined by '=' compare equal.
struct OrderCase {
  int32_t type;
  std::vector<std::string> ascending;
};

int compareText(int32_t type, std::string_view a, std::string_view b, const Collation& collation) {
  auto ka = decodeValue(ColumnType{type, 0}, a);
  auto kb = decodeValue(ColumnType{type, 0}, b);
  EXPECT_TRUE(ka.ok()) << a << ": " << (ka.ok() ? "" : ka.error().message);
  EXPECT_TRUE(kb.ok()) << b << ": " << (kb.ok() ? "" : kb.error().message);
  if (!ka.ok() || !kb.ok()) return 99;
  return compareKeys(*ka, *kb, collation);
}

void expectAscending(const OrderCase& c, const Collation& collation) {
  for (size_t i = 0; i + 1 < c.ascending.size(); ++i) {
    for (size_t j = i + 1; j < c.ascending.size(); ++j) {
      const std::string& a = c.ascending[i];
      const std::string& b = c.ascending[j];
      EXPECT_LT(compareText(c.type, a, b, collation), 0)
          << typeName(c.type) << ": " << a << " < " << b;
      EXPECT_GT(compareText(c.type, b, a, collation), 0)
          << typeName(c.type) << ": " << b << " > " << a;
    }
  }
}

TEST(ExecutorValueOrderTest, EveryTypeInTextForm) {
  auto c_collation = Collation::open("C");
  ASSERT_TRUE(c_collation.ok());
  const std::vector<OrderCase> cases = {
      {pg_type::kInt2, {"-32768", "-1", "0", "7", "32767"}},
      {pg_type::kInt4, {"-2147483648", "-10", "9", "10", "2147483647"}},
      {pg_type::kInt8, {"-9223372036854775808", "-1", "0", "9223372036854775807"}},
      {pg_type::kOid, {"0", "1", "4294967295"}},
      // array['NaN','-Infinity','1','-0','0','1e-300','-1e300','Infinity']::float8[]
      {pg_type::kFloat8, {"-Infinity", "-1e+300", "0", "1e-300", "1", "Infinity", "NaN"}},
      {pg_type::kFloat4, {"-Infinity", "-3.4e+38", "-1.5", "0", "1.5e-05", "1", "Infinity", "NaN"}},
      // array['-infinity','-1.5','0','0.5','1','1.0','2','100','Infinity','NaN']::numeric[]
      {pg_type::kNumeric, {"-Infinity", "-1.5", "0", "0.5", "1", "2", "100", "Infinity", "NaN"}},
      {pg_type::kBool, {"f", "t"}},
      // array['2000-01-01','1999-12-31','0001-01-01 BC','0001-01-01','infinity','-infinity',
      //       '10000-01-01','2024-02-29']::date[]
      {pg_type::kDate,
       {"-infinity", "0001-01-01 BC", "0001-01-01", "1999-12-31", "2000-01-01", "2024-02-29",
        "10000-01-01", "infinity"}},
      {pg_type::kTime, {"00:00:00", "00:00:00.000001", "12:30:00", "23:59:59.999999", "24:00:00"}},
      // array['12:00:00+05','07:00:00+00','06:59:59.999999+00','12:00:00-01','00:00:00+14']::timetz[]
      {pg_type::kTimeTz,
       {"00:00:00+14", "06:59:59.999999+00", "12:00:00+05", "07:00:00+00", "12:00:00-01"}},
      {pg_type::kTimestamp,
       {"-infinity", "0044-03-15 12:00:00 BC", "1999-12-31 23:59:59.999999", "2000-01-01 00:00:00",
        "2024-02-29 12:00:00.5", "infinity"}},
      // set timezone='Europe/Berlin'; array[...]::timestamptz[]
      {pg_type::kTimestampTz,
       {"-infinity", "0044-03-15 12:53:28+00:53:28 BC", "2000-01-01 00:59:59.999999+01",
        "2024-03-31 03:30:00+02", "2024-10-27 02:30:00+02", "2024-10-27 02:30:00+01", "infinity"}},
      // array['1 year','11 mons 30 days','1 mon','30 days','-1 days +02:00:00','23:00:00','1 day',
      //       '24:00:00','00:00:00','-00:00:01']::interval[]
      {pg_type::kInterval,
       {"-1 days +02:00:00", "-00:00:01", "00:00:00", "23:00:00", "1 day", "1 mon", "1 year",
        "1 year 2 mons 3 days 04:05:06.5"}},
      {pg_type::kUuid,
       {"00000000-0000-0000-0000-000000000000", "0a0b0c0d-0000-0000-0000-000000000000",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "ffffffff-ffff-ffff-ffff-ffffffffffff"}},
      // array['\x00','\x','\x0001','\xff','\x7f']::bytea[]
      {pg_type::kBytea, {"\\x", "\\x00", "\\x0001", "\\x7f", "\\xff"}},
      {pg_type::kName, {"A", "B", "_a", "a"}},
      {pg_type::kChar, {"A", "a", "\\377"}},
  };
  for (const auto& c : cases) expectAscending(c, **c_collation);
}

TEST(ExecutorValueOrderTest, EqualValuesCompareEqual) {
  auto c = Collation::open("C");
  ASSERT_TRUE(c.ok());
  const std::vector<std::tuple<int32_t, std::string, std::string>> equal = {
      {pg_type::kNumeric, "1", "1.0"},
      {pg_type::kFloat8, "-0", "0"},
      {pg_type::kFloat8, "NaN", "NaN"},
      {pg_type::kInterval, "1 year", "11 mons 30 days"},
      {pg_type::kInterval, "1 day", "24:00:00"},
      {pg_type::kInterval, "1 mon", "30 days"},
      {pg_type::kTimestampTz, "2024-03-31 01:30:00+00", "2024-03-31 03:30:00+02"},
      {pg_type::kBpchar, "a  ", "a"},  // char(n) ignores trailing blanks
      {pg_type::kUuid, "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11", "a0eebc999c0b4ef8bb6d6bb9bd380a11"},
  };
  for (const auto& [type, a, b] : equal) {
    EXPECT_EQ(compareText(type, a, b, **c), 0) << typeName(type) << ": " << a << " = " << b;
    auto ka = decodeValue(ColumnType{type, 0}, a);
    auto kb = decodeValue(ColumnType{type, 0}, b);
    std::string ea, eb;
    appendEqualityBytes(*ka, ea);
    appendEqualityBytes(*kb, eb);
    EXPECT_EQ(ea, eb) << typeName(type) << ": " << a << " = " << b;
  }
  // Not equal although they look alike: timetz compares the zone too.
  EXPECT_NE(compareText(pg_type::kTimeTz, "12:00:00+05", "07:00:00+00", **c), 0);
}

// select string_agg(x, ' | ' order by x) from unnest(array['a','B','b','A','é','e','E','ab',
//   'a b','Z','z','_a','1','10','9',' a','a-b','ab-','ä','Ä']) x      -- en_US.UTF-8 database
TEST(ExecutorValueOrderTest, TextUnderEnUsCollation) {
  auto en = Collation::open("en_US.UTF-8");
  if (!en.ok()) GTEST_SKIP() << "en_US.UTF-8 locale not installed";
  const OrderCase c{pg_type::kText, {"1",   "10", "9",   " a", "_a", "a", "A", "ä", "Ä", "a b",
                                     "a-b", "ab", "ab-", "b",  "B",  "e", "E", "é", "z", "Z"}};
  expectAscending(c, **en);
  EXPECT_FALSE((*en)->isBytewise());
}

// ... order by x collate "C"
TEST(ExecutorValueOrderTest, TextUnderCCollation) {
  auto c = Collation::open("C");
  ASSERT_TRUE(c.ok());
  const OrderCase order{pg_type::kVarchar,
                        {" a",  "1",   "10", "9",   "A", "B", "E", "Z", "_a", "a",
                         "a b", "a-b", "ab", "ab-", "b", "e", "z", "Ä", "ä",  "é"}};
  expectAscending(order, **c);
}

TEST(ExecutorValueOrderTest, MissingLocaleIsFeatureNotSupported) {
  auto missing = Collation::open("xx_NOPE.UTF-8");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().sqlstate, "0A000");
}

// Binary forms (int8send, float8send, numeric_send, date_send, timestamp_send, interval_send,
// timetz_send) order like their text forms.
TEST(ExecutorValueOrderTest, BinaryForms) {
  auto c = Collation::open("C");
  ASSERT_TRUE(c.ok());
  auto key = [](int32_t type, std::string_view hex) {
    auto k = decodeValue(ColumnType{type, 1}, hexToBytes(hex));
    EXPECT_TRUE(k.ok()) << hex;
    return k.ok() ? *k : ValueKey();
  };
  auto less = [&](int32_t type, std::string_view a, std::string_view b) {
    return compareKeys(key(type, a), key(type, b), **c) < 0;
  };
  EXPECT_TRUE(less(pg_type::kInt8, "ffffffffffffffff", "0000000000000000"));
  EXPECT_TRUE(less(pg_type::kInt4, "80000000", "7fffffff"));
  EXPECT_TRUE(less(pg_type::kInt2, "fffe", "0001"));
  EXPECT_TRUE(less(pg_type::kOid, "7fffffff", "ffffffff"));                     // oid is unsigned
  EXPECT_TRUE(less(pg_type::kFloat8, "bff8000000000000", "3ff8000000000000"));  // -1.5 < 1.5
  EXPECT_TRUE(less(pg_type::kFloat8, "7ff0000000000000", "7ff8000000000000"));  // Inf < NaN
  EXPECT_EQ(compareKeys(key(pg_type::kFloat8, "8000000000000000"),
                        key(pg_type::kFloat8, "0000000000000000"), **c),
            0);  // float8send(-0.0) = 0
  EXPECT_TRUE(less(pg_type::kFloat4, "bfc00000", "3fc00000"));
  EXPECT_TRUE(less(pg_type::kNumeric, "000200004000000100011388", "00010000000000000001"));
  EXPECT_TRUE(less(pg_type::kNumeric, "00000000d0000020", "00000000c0000000"));
  EXPECT_TRUE(less(pg_type::kDate, "00000000", "00002279"));  // 2000-01-01 < 2024-02-29
  // timestamp_send('2000-01-02 00:00:01') vs 2000-01-01
  EXPECT_TRUE(less(pg_type::kTimestamp, "0000000000000000", "000000141de6a240"));
  // interval_send('1 year 2 mons 3 days 04:05:06.5') vs 1 year (12 months)
  EXPECT_TRUE(less(pg_type::kInterval, "0000000000000000000000000000000c",
                   "000000036c9361a0000000030000000e"));
  // The interval's text and binary forms decode to the same span.
  EXPECT_EQ(
      compareKeys(
          key(pg_type::kInterval, "000000036c9361a0000000030000000e"),
          *decodeValue(ColumnType{pg_type::kInterval, 0}, "1 year 2 mons 3 days 04:05:06.5"), **c),
      0);
  // timetz_send('12:00:00+05') decodes like its text.
  EXPECT_EQ(compareKeys(key(pg_type::kTimeTz, "0000000a0eebb000ffffb9b0"),
                        *decodeValue(ColumnType{pg_type::kTimeTz, 0}, "12:00:00+05"), **c),
            0);
  EXPECT_EQ(compareKeys(key(pg_type::kDate, "00002279"),
                        *decodeValue(ColumnType{pg_type::kDate, 0}, "2024-02-29"), **c),
            0);
  EXPECT_EQ(
      compareKeys(key(pg_type::kTimestamp, "000000141de6a240"),
                  *decodeValue(ColumnType{pg_type::kTimestamp, 0}, "2000-01-02 00:00:01"), **c),
      0);
  // Wrong widths are errors, not crashes.
  EXPECT_FALSE(decodeValue(ColumnType{pg_type::kInt8, 1}, "abc").ok());
  EXPECT_FALSE(decodeValue(ColumnType{pg_type::kUuid, 1}, "abc").ok());
  EXPECT_FALSE(decodeValue(ColumnType{pg_type::kInterval, 1}, "").ok());
}

TEST(ExecutorValueOrderTest, UnknownTypesAndBadTextAreErrors) {
  auto jsonb = decodeValue(ColumnType{3802, 0}, "{}");
  ASSERT_FALSE(jsonb.ok());
  EXPECT_EQ(jsonb.error().sqlstate, "0A000");
  EXPECT_EQ(requireOrderable(ColumnType{3802, 0}, 2, "sort on").error().sqlstate, "0A000");
  for (const auto& [type, text] :
       std::vector<std::pair<int32_t, std::string>>{{pg_type::kInt4, "12x"},
                                                    {pg_type::kDate, "2024-13-01"},
                                                    {pg_type::kTime, "noon"},
                                                    {pg_type::kTimestamp, "2024-01-01"},
                                                    {pg_type::kInterval, "P1Y"},
                                                    {pg_type::kFloat8, "1.2.3"},
                                                    {pg_type::kBool, "maybe"},
                                                    {pg_type::kBytea, "\\xabc"},
                                                    {pg_type::kUuid, "1234"}}) {
    EXPECT_FALSE(decodeValue(ColumnType{type, 0}, text).ok()) << typeName(type) << " " << text;
  }
  // timestamptz without an offset cannot be placed in time.
  auto no_zone = decodeValue(ColumnType{pg_type::kTimestampTz, 0}, "2024-01-01 00:00:00");
  ASSERT_FALSE(no_zone.ok());
  EXPECT_EQ(no_zone.error().sqlstate, "0A000");
}

}  // namespace
}  // namespace shardgate::executor

namespace shardgate::executor {
namespace {

// Arbitrary bytes as any type in either format: an error or a key, never a crash (run under
// ASan/UBSan by `make asan`).
TEST(ExecutorValueOrderTest, ArbitraryBytesNeverCrash) {
  const std::vector<int32_t> types = {pg_type::kBool,        pg_type::kBytea,
                                      pg_type::kChar,        pg_type::kName,
                                      pg_type::kInt8,        pg_type::kInt2,
                                      pg_type::kInt4,        pg_type::kText,
                                      pg_type::kOid,         pg_type::kFloat4,
                                      pg_type::kFloat8,      pg_type::kBpchar,
                                      pg_type::kVarchar,     pg_type::kDate,
                                      pg_type::kTime,        pg_type::kTimestamp,
                                      pg_type::kTimestampTz, pg_type::kInterval,
                                      pg_type::kTimeTz,      pg_type::kNumeric,
                                      pg_type::kUuid,        3802};
  const std::vector<std::string> seeds = {
      "",
      "-",
      "+",
      "1",
      "-0",
      "99999999999999999999999",
      "1e400",
      "NaN",
      "infinity",
      "\\x",
      "\\x0",
      "\\777",
      "2024-02-30",
      "0000-00-00",
      "24:00:00",
      "99:99:99.9999999",
      "1 year -2 mons +3 days -04:05:06",
      "12:00:00+99:99:99",
      "2024-01-01 00:00:00+05 BC",
      std::string(16, '\xff'),
      std::string(12, '\0'),
      std::string(8, '\x80'),
      std::string("\x00\x01\x00\x00\x40\x00\x00\x02\x27\x0f", 10),
      std::string(3, '\x7f')};
  uint32_t state = 12345;
  auto next = [&state] {
    state = state * 1103515245u + 12345u;
    return state >> 16;
  };
  auto c = Collation::open("C");
  ASSERT_TRUE(c.ok());
  for (int32_t type : types) {
    for (int16_t format : {0, 1}) {
      std::vector<std::string> inputs = seeds;
      for (int i = 0; i < 200; ++i) {
        std::string random(next() % 24, '\0');
        for (char& ch : random) ch = static_cast<char>(next());
        inputs.push_back(random);
      }
      std::optional<ValueKey> previous;
      for (const std::string& input : inputs) {
        auto key = decodeValue(ColumnType{type, format}, input);
        if (!key.ok()) continue;
        std::string bytes;
        appendEqualityBytes(*key, bytes);
        if (previous) (void)compareKeys(*previous, *key, **c);
        previous = *key;
      }
    }
  }
  for (const std::string& input : seeds) {
    (void)Decimal::parseText(input);
    (void)Decimal::parseBinary(input);
  }
}

}  // namespace
}  // namespace shardgate::executor
