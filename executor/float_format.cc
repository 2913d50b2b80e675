// Postgres-compatible shortest float output (see float_format.h).
#include "executor/float_format.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace shardgate::executor {
namespace {

// `scientific` is std::to_chars's shortest scientific form ("-1.2345e-05"); re-laid out as
// Postgres's to_chars does: fixed-point when fixed_low <= exponent < fixed_high.
std::string layOut(std::string_view scientific, int fixed_high) {
  std::string out;
  if (!scientific.empty() && scientific.front() == '-') {
    out.push_back('-');
    scientific.remove_prefix(1);
  }
  const size_t e = scientific.find('e');
  const std::string_view mantissa = scientific.substr(0, e);
  const int exponent = std::atoi(std::string(scientific.substr(e + 1)).c_str());
  std::string digits;
  for (char c : mantissa) {
    if (c != '.') digits.push_back(c);
  }
  if (exponent >= -4 && exponent < fixed_high) {
    if (exponent < 0) {
      out += "0.";
      out.append(static_cast<size_t>(-exponent - 1), '0');
      out += digits;
    } else if (static_cast<int>(digits.size()) <= exponent + 1) {
      out += digits;
      out.append(static_cast<size_t>(exponent + 1) - digits.size(), '0');
    } else {
      out += digits.substr(0, exponent + 1);
      out += '.';
      out += digits.substr(exponent + 1);
    }
    return out;
  }
  out += digits.substr(0, 1);
  if (digits.size() > 1) {
    out += '.';
    out += digits.substr(1);
  }
  out += exponent < 0 ? "e-" : "e+";
  const int magnitude = std::abs(exponent);
  if (magnitude < 10) out += '0';
  out += std::to_string(magnitude);
  return out;
}

template <typename Float>
std::string format(Float value, int fixed_high) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "Infinity" : "-Infinity";
  if (value == 0) return std::signbit(value) ? "-0" : "0";
  char buffer[64];
  const auto result =
      std::to_chars(buffer, buffer + sizeof buffer, value, std::chars_format::scientific);
  return layOut(std::string_view(buffer, static_cast<size_t>(result.ptr - buffer)), fixed_high);
}

}  // namespace

// pg_strfromd: printf's %g with `digits` significant digits, Postgres's spellings of NaN and
// infinity.
std::string formatWithDigits(double value, int digits) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "Infinity" : "-Infinity";
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.*g", std::max(digits, 1), value);
  return buffer;
}

std::string formatFloat8(double value, int extra_float_digits) {
  if (extra_float_digits <= 0) return formatWithDigits(value, 15 + extra_float_digits);
  return format(value, 15);  // DBL_DIG
}

std::string formatFloat4(float value, int extra_float_digits) {
  if (extra_float_digits <= 0) return formatWithDigits(value, 6 + extra_float_digits);
  return format(value, 6);  // FLT_DIG
}

}  // namespace shardgate::executor
