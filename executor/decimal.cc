// Exact numeric arithmetic with Postgres's scale and rounding rules (see decimal.h).
#include "executor/decimal.h"

#include <algorithm>
#include <cctype>
#include <limits>

#include "proxy/wire/payload.h"

namespace shardgate::executor {
namespace {

// numeric.c constants.
constexpr int kMinSignificantDigits = 16;  // NUMERIC_MIN_SIG_DIGITS
constexpr int kMaxDisplayScale = 1000;     // NUMERIC_MAX_DISPLAY_SCALE
constexpr int kDecimalDigitsPerWord = 4;   // DEC_DIGITS (NBASE = 10000)
constexpr uint16_t kSignPositive = 0x0000;
constexpr uint16_t kSignNegative = 0x4000;
constexpr uint16_t kSignNaN = 0xC000;
constexpr uint16_t kSignPositiveInfinity = 0xD000;
constexpr uint16_t kSignNegativeInfinity = 0xF000;

Error invalidNumeric(std::string_view text) {
  return Error::make("22P02",
                     "invalid input syntax for type numeric: \"" + std::string(text) + "\"");
}

bool equalsIgnoringCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

int specialRank(Decimal::Kind kind) {
  switch (kind) {
    case Decimal::Kind::kNegativeInfinity:
      return 0;
    case Decimal::Kind::kFinite:
      return 1;
    case Decimal::Kind::kPositiveInfinity:
      return 2;
    case Decimal::Kind::kNaN:
      return 3;
  }
  return 3;
}

int signOf(const BigInt& v) {
  return v.sign();
}

}  // namespace

BigInt powerOfTen(int n) {
  if (n <= 0) return 1;
  return boost::multiprecision::pow(BigInt(10), static_cast<unsigned>(n));
}

BigInt divideRoundHalfAway(const BigInt& numerator, const BigInt& denominator) {
  BigInt quotient = numerator / denominator;  // truncates toward zero
  BigInt remainder = numerator % denominator;
  if (remainder != 0 && 2 * abs(remainder) >= abs(denominator)) {
    quotient += (signOf(numerator) == signOf(denominator)) ? 1 : -1;
  }
  return quotient;
}

Result<Decimal> Decimal::parseText(std::string_view text) {
  std::string_view s = text;
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  if (equalsIgnoringCase(s, "nan")) return special(Kind::kNaN);
  if (equalsIgnoringCase(s, "infinity") || equalsIgnoringCase(s, "+infinity")) {
    return special(Kind::kPositiveInfinity);
  }
  if (equalsIgnoringCase(s, "-infinity")) return special(Kind::kNegativeInfinity);

  size_t i = 0;
  bool negative = false;
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) negative = s[i++] == '-';
  std::string digits;
  int fraction_digits = 0;
  bool seen_point = false;
  bool any_digit = false;
  for (; i < s.size(); ++i) {
    const char c = s[i];
    if (c >= '0' && c <= '9') {
      digits.push_back(c);
      any_digit = true;
      if (seen_point) ++fraction_digits;
    } else if (c == '.' && !seen_point) {
      seen_point = true;
    } else {
      break;
    }
  }
  if (!any_digit) return invalidNumeric(text);
  long exponent = 0;
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    bool exponent_negative = false;
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) exponent_negative = s[i++] == '-';
    if (i >= s.size()) return invalidNumeric(text);
    for (; i < s.size() && s[i] >= '0' && s[i] <= '9'; ++i) {
      exponent = exponent * 10 + (s[i] - '0');
      if (exponent > 2 * kMaxDisplayScale) return invalidNumeric(text);
    }
    if (exponent_negative) exponent = -exponent;
  }
  if (i != s.size()) return invalidNumeric(text);
  // cpp_int reads a leading 0 as an octal prefix: strip leading zeros first.
  const size_t significant = std::min(digits.find_first_not_of('0'), digits.size() - 1);
  BigInt unscaled(digits.substr(significant));
  int scale = fraction_digits - static_cast<int>(exponent);
  if (scale < 0) {
    unscaled *= powerOfTen(-scale);
    scale = 0;
  }
  if (scale > kMaxDisplayScale) return invalidNumeric(text);
  if (negative) unscaled = -unscaled;
  return Decimal(Kind::kFinite, std::move(unscaled), scale);
}

Result<Decimal> Decimal::parseBinary(std::string_view bytes) {
  wire::PayloadReader reader(bytes);
  int16_t ndigits = 0;
  int16_t weight = 0;
  uint16_t sign = 0;
  uint16_t dscale = 0;
  auto invalid = [] { return Error::make("22P03", "invalid external \"numeric\" value"); };
  if (!reader.readInt16(ndigits) || !reader.readInt16(weight) || !reader.readUint16(sign) ||
      !reader.readUint16(dscale) || ndigits < 0) {
    return invalid();
  }
  if (sign == kSignNaN) return special(Kind::kNaN);
  if (sign == kSignPositiveInfinity) return special(Kind::kPositiveInfinity);
  if (sign == kSignNegativeInfinity) return special(Kind::kNegativeInfinity);
  if ((sign != kSignPositive && sign != kSignNegative) || dscale > kMaxDisplayScale) {
    return invalid();
  }
  BigInt digits = 0;
  for (int i = 0; i < ndigits; ++i) {
    int16_t digit = 0;
    if (!reader.readInt16(digit) || digit < 0 || digit > 9999) return invalid();
    digits = digits * 10000 + digit;
  }
  if (!reader.atEnd()) return invalid();
  // value = digits * 10000^(weight - ndigits + 1)
  const int exponent = kDecimalDigitsPerWord * (weight - ndigits + 1);
  const int shift = exponent + dscale;  // unscaled = digits * 10^shift
  BigInt unscaled =
      shift >= 0 ? BigInt(digits * powerOfTen(shift)) : BigInt(digits / powerOfTen(-shift));
  if (sign == kSignNegative) unscaled = -unscaled;
  return Decimal(Kind::kFinite, std::move(unscaled), dscale);
}

std::string Decimal::toText() const {
  switch (kind_) {
    case Kind::kNaN:
      return "NaN";
    case Kind::kPositiveInfinity:
      return "Infinity";
    case Kind::kNegativeInfinity:
      return "-Infinity";
    case Kind::kFinite:
      break;
  }
  std::string digits = BigInt(abs(unscaled_)).str();
  if (static_cast<int>(digits.size()) <= scale_) {
    digits.insert(0, static_cast<size_t>(scale_) + 1 - digits.size(), '0');
  }
  std::string out = unscaled_ < 0 ? "-" : "";
  out += digits.substr(0, digits.size() - scale_);
  if (scale_ > 0) {
    out += '.';
    out += digits.substr(digits.size() - scale_);
  }
  return out;
}

std::string Decimal::toBinary() const {
  std::string out;
  auto put16 = [&out](uint16_t v) {
    out.push_back(static_cast<char>(v >> 8));
    out.push_back(static_cast<char>(v & 0xFF));
  };
  if (!isFinite()) {
    put16(0);
    put16(0);
    put16(kind_ == Kind::kNaN                ? kSignNaN
          : kind_ == Kind::kPositiveInfinity ? kSignPositiveInfinity
                                             : kSignNegativeInfinity);
    // numeric_send reads the display scale out of the special value's short header, which gives
    // 32 for the infinities and 0 for NaN; sent the same, byte for byte.
    put16(kind_ == Kind::kNaN ? 0 : 32);
    return out;
  }
  const int padded_scale =
      (scale_ + kDecimalDigitsPerWord - 1) / kDecimalDigitsPerWord * kDecimalDigitsPerWord;
  BigInt magnitude = abs(unscaled_) * powerOfTen(padded_scale - scale_);
  std::vector<uint16_t> words;  // least significant first
  while (magnitude != 0) {
    words.push_back(static_cast<uint16_t>(static_cast<unsigned>(magnitude % 10000)));
    magnitude /= 10000;
  }
  const int weight =
      words.empty() ? 0 : static_cast<int>(words.size()) - 1 - padded_scale / kDecimalDigitsPerWord;
  size_t low = 0;  // Postgres strips trailing zero words
  while (low < words.size() && words[low] == 0) ++low;
  const size_t ndigits = words.size() - low;
  put16(static_cast<uint16_t>(ndigits));
  put16(static_cast<uint16_t>(static_cast<int16_t>(weight)));
  put16(unscaled_ < 0 ? kSignNegative : kSignPositive);
  put16(static_cast<uint16_t>(scale_));
  for (size_t i = words.size(); i > low; --i) put16(words[i - 1]);
  return out;
}

int Decimal::compare(const Decimal& other) const {
  if (!isFinite() || !other.isFinite()) {
    const int a = specialRank(kind_);
    const int b = specialRank(other.kind_);
    return a < b ? -1 : (a > b ? 1 : 0);
  }
  const int scale = std::max(scale_, other.scale_);
  const BigInt a = unscaled_ * powerOfTen(scale - scale_);
  const BigInt b = other.unscaled_ * powerOfTen(scale - other.scale_);
  return a < b ? -1 : (a > b ? 1 : 0);
}

Decimal Decimal::rescaled(int scale) const {
  if (!isFinite() || scale <= scale_) return *this;
  return Decimal(Kind::kFinite, unscaled_ * powerOfTen(scale - scale_), scale);
}

Decimal Decimal::add(const Decimal& other) const {
  if (isNaN() || other.isNaN()) return special(Kind::kNaN);
  if (!isFinite() || !other.isFinite()) {
    if (!isFinite() && !other.isFinite() && kind_ != other.kind_) return special(Kind::kNaN);
    return isFinite() ? other : *this;
  }
  const int scale = std::max(scale_, other.scale_);
  return Decimal(Kind::kFinite, rescaled(scale).unscaled_ + other.rescaled(scale).unscaled_, scale);
}

Decimal Decimal::subtract(const Decimal& other) const {
  Decimal negated = other;
  if (negated.kind_ == Kind::kPositiveInfinity) {
    negated.kind_ = Kind::kNegativeInfinity;
  } else if (negated.kind_ == Kind::kNegativeInfinity) {
    negated.kind_ = Kind::kPositiveInfinity;
  } else {
    negated.unscaled_ = -negated.unscaled_;
  }
  return add(negated);
}

Decimal Decimal::multiply(const Decimal& other, int rscale) const {
  if (isNaN() || other.isNaN()) return special(Kind::kNaN);
  if (!isFinite() || !other.isFinite()) {
    const int a = isFinite() ? signOf(unscaled_) : (kind_ == Kind::kPositiveInfinity ? 1 : -1);
    const int b = other.isFinite() ? signOf(other.unscaled_)
                                   : (other.kind_ == Kind::kPositiveInfinity ? 1 : -1);
    if (a == 0 || b == 0) return special(Kind::kNaN);
    return special(a * b > 0 ? Kind::kPositiveInfinity : Kind::kNegativeInfinity);
  }
  BigInt product = unscaled_ * other.unscaled_;
  const int exact_scale = scale_ + other.scale_;
  if (rscale >= exact_scale) {
    return Decimal(Kind::kFinite, product * powerOfTen(rscale - exact_scale), rscale);
  }
  return Decimal(Kind::kFinite, divideRoundHalfAway(product, powerOfTen(exact_scale - rscale)),
                 rscale);
}

void Decimal::leadingBase10000Digit(int& weight, int& first_digit) const {
  weight = 0;
  first_digit = 0;
  if (!isFinite() || unscaled_ == 0) return;
  const int padded_scale =
      (scale_ + kDecimalDigitsPerWord - 1) / kDecimalDigitsPerWord * kDecimalDigitsPerWord;
  const BigInt magnitude = abs(unscaled_) * powerOfTen(padded_scale - scale_);
  const int decimal_digits = static_cast<int>(magnitude.str().size());
  const int words = (decimal_digits + kDecimalDigitsPerWord - 1) / kDecimalDigitsPerWord;
  first_digit = static_cast<int>(magnitude / powerOfTen((words - 1) * kDecimalDigitsPerWord));
  weight = words - 1 - padded_scale / kDecimalDigitsPerWord;
}

int Decimal::selectDivScale(const Decimal& divisor) const {
  int weight1 = 0, first1 = 0, weight2 = 0, first2 = 0;
  leadingBase10000Digit(weight1, first1);
  divisor.leadingBase10000Digit(weight2, first2);
  // Estimated quotient weight; with equal first digits, assume the dividend is the smaller.
  int quotient_weight = weight1 - weight2;
  if (first1 <= first2) --quotient_weight;
  int rscale = kMinSignificantDigits - quotient_weight * kDecimalDigitsPerWord;
  rscale = std::max({rscale, scale_, divisor.scale_, 0});
  return std::min(rscale, kMaxDisplayScale);
}

Decimal Decimal::divideRounded(const Decimal& divisor, int rscale) const {
  // (a * 10^-sa) / (b * 10^-sb) * 10^rscale = a * 10^(rscale + sb - sa) / b
  const int shift = rscale + divisor.scale_ - scale_;
  BigInt numerator = unscaled_;
  BigInt denominator = divisor.unscaled_;
  if (shift >= 0) {
    numerator *= powerOfTen(shift);
  } else {
    denominator *= powerOfTen(-shift);
  }
  return Decimal(Kind::kFinite, divideRoundHalfAway(numerator, denominator), rscale);
}

Result<Decimal> Decimal::divide(const Decimal& divisor) const {
  if (isNaN() || divisor.isNaN()) return special(Kind::kNaN);
  if (!isFinite()) {
    if (!divisor.isFinite()) return special(Kind::kNaN);
    const int s = signOf(divisor.unscaled_);
    if (s == 0) return Error::make("22012", "division by zero");
    const bool positive = (kind_ == Kind::kPositiveInfinity) == (s > 0);
    return special(positive ? Kind::kPositiveInfinity : Kind::kNegativeInfinity);
  }
  if (!divisor.isFinite()) return fromInteger(0);
  if (divisor.unscaled_ == 0) return Error::make("22012", "division by zero");
  return divideRounded(divisor, selectDivScale(divisor));
}

Decimal Decimal::squareRoot(int rscale) const {
  if (!isFinite()) {
    return kind_ == Kind::kPositiveInfinity ? *this : special(Kind::kNaN);
  }
  if (unscaled_ <= 0) return Decimal(Kind::kFinite, 0, rscale);
  // One digit more than asked for, truncated, then rounded half up: the correctly rounded root.
  const int shift = 2 * (rscale + 1) - scale_;
  const BigInt radicand =
      shift >= 0 ? BigInt(unscaled_ * powerOfTen(shift)) : BigInt(unscaled_ / powerOfTen(-shift));
  const BigInt root = boost::multiprecision::sqrt(radicand);
  BigInt rounded = root / 10;
  if (root % 10 >= 5) rounded += 1;
  return Decimal(Kind::kFinite, std::move(rounded), rscale);
}

std::string Decimal::equalityKey() const {
  switch (kind_) {
    case Kind::kNaN:
      return "NaN";
    case Kind::kPositiveInfinity:
      return "+Inf";
    case Kind::kNegativeInfinity:
      return "-Inf";
    case Kind::kFinite:
      break;
  }
  BigInt v = unscaled_;
  int scale = scale_;
  while (scale > 0 && v % 10 == 0) {
    v /= 10;
    --scale;
  }
  return v.str() + "e-" + std::to_string(scale);
}

bool Decimal::toInt64(int64_t& out) const {
  if (!isFinite()) return false;
  const BigInt divisor = powerOfTen(scale_);
  if (unscaled_ % divisor != 0) return false;
  const BigInt whole = unscaled_ / divisor;
  if (whole < std::numeric_limits<int64_t>::min() || whole > std::numeric_limits<int64_t>::max()) {
    return false;
  }
  out = static_cast<int64_t>(whole);
  return true;
}

}  // namespace shardgate::executor
