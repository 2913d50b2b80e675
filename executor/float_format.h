// Text output of float4 and float8 exactly as Postgres 15 prints them with the default
// extra_float_digits = 1: the shortest digits that read back to the same value (Ryu in Postgres,
// std::to_chars here), fixed-point for decimal exponents in [-4, 15) (float4: [-4, 6)), else
// exponent form "1e+20", "1.5e-05"; "NaN", "Infinity", "-Infinity", "-0".
#pragma once

#include <string>

namespace shardgate::executor {

// `extra_float_digits` is the client's setting: above 0 (the default 1, and what drivers set),
// the shortest exact digits; 0 or below, DBL_DIG (FLT_DIG) + extra_float_digits significant
// digits as printf's %g gives them, as Postgres prints then.
std::string formatFloat8(double value, int extra_float_digits = 1);
std::string formatFloat4(float value, int extra_float_digits = 1);

}  // namespace shardgate::executor
