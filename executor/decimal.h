// Decimal: exact Postgres `numeric` values and the arithmetic the merge needs, with Postgres's
// result scales and rounding (src/backend/utils/adt/numeric.c), in text and binary wire form.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <boost/multiprecision/cpp_int.hpp>

#include "common/result.h"

namespace shardgate::executor {

using BigInt = boost::multiprecision::cpp_int;

// value = unscaled * 10^-scale; `scale` is Postgres's display scale (dscale): 1.50 has scale 2.
class Decimal {
 public:
  enum class Kind : uint8_t { kFinite, kNaN, kPositiveInfinity, kNegativeInfinity };

  Decimal() = default;
  static Decimal fromInteger(const BigInt& value) { return Decimal(Kind::kFinite, value, 0); }
  static Decimal special(Kind kind) { return Decimal(kind, 0, 0); }

  // numeric_in: "-12.50", "NaN", "Infinity", "-Infinity", also exponents ("1.5e3") as in SQL
  // constants. 22P02 on anything else.
  static Result<Decimal> parseText(std::string_view text);
  // numeric_recv: the binary wire form (ndigits, weight, sign, dscale, base-10000 digits).
  static Result<Decimal> parseBinary(std::string_view bytes);

  std::string toText() const;    // numeric_out
  std::string toBinary() const;  // numeric_send

  Kind kind() const { return kind_; }
  bool isFinite() const { return kind_ == Kind::kFinite; }
  bool isNaN() const { return kind_ == Kind::kNaN; }
  bool isZero() const { return isFinite() && unscaled_ == 0; }
  int scale() const { return scale_; }
  const BigInt& unscaled() const { return unscaled_; }

  // cmp_numerics: -Infinity < finite values < Infinity < NaN (NaN equals NaN); 1.0 equals 1.00.
  int compare(const Decimal& other) const;

  // numeric_add / numeric_sub: exact, scale = the larger input scale.
  Decimal add(const Decimal& other) const;
  Decimal subtract(const Decimal& other) const;
  // numeric_mul: exact product rounded to `rscale` (the exact scale is the sum of the scales).
  Decimal multiply(const Decimal& other) const { return multiply(other, scale_ + other.scale_); }
  Decimal multiply(const Decimal& other, int rscale) const;
  // numeric_div: the quotient rounded (half away from zero) to select_div_scale digits; 22012
  // division by zero.
  Result<Decimal> divide(const Decimal& divisor) const;
  // div_var with an explicit result scale.
  Decimal divideRounded(const Decimal& divisor, int rscale) const;
  // sqrt_var: the square root rounded to `rscale` digits (the value must not be negative).
  Decimal squareRoot(int rscale) const;

  // select_div_scale: at least 16 significant digits, never fewer than either input's scale.
  int selectDivScale(const Decimal& divisor) const;

  // Equal values give equal keys (1.0 and 1.00 too): for grouping and DISTINCT.
  std::string equalityKey() const;
  // A value in the int64 range, for int8 results.
  bool toInt64(int64_t& out) const;

 private:
  Decimal(Kind kind, BigInt unscaled, int scale)
      : kind_(kind), unscaled_(std::move(unscaled)), scale_(scale) {}
  // Weight and first digit of the value written in base 10000 (0, 0 for zero), as numeric.c's
  // NumericVar holds them.
  void leadingBase10000Digit(int& weight, int& first_digit) const;
  Decimal rescaled(int scale) const;  // exact: only for scale >= scale_

  Kind kind_ = Kind::kFinite;
  BigInt unscaled_ = 0;
  int scale_ = 0;
};

// 10^n as a BigInt (n >= 0).
BigInt powerOfTen(int n);
// Rounds numerator/denominator to an integer, halves away from zero (numeric.c round_var).
BigInt divideRoundHalfAway(const BigInt& numerator, const BigInt& denominator);

}  // namespace shardgate::executor
