// Bit-for-bit copies of the Postgres 15 hash functions behind PARTITION BY HASH (see pg_hash.h).
#include "planner/pg_hash.h"

namespace shardgate::planner {
namespace {

constexpr uint32_t rot(uint32_t x, int k) {
  return (x << k) | (x >> (32 - k));
}

// mix() and final() of lookup3, as hashfn.c defines them.
inline void mix(uint32_t& a, uint32_t& b, uint32_t& c) {
  a -= c;
  a ^= rot(c, 4);
  c += b;
  b -= a;
  b ^= rot(a, 6);
  a += c;
  c -= b;
  c ^= rot(b, 8);
  b += a;
  a -= c;
  a ^= rot(c, 16);
  c += b;
  b -= a;
  b ^= rot(a, 19);
  a += c;
  c -= b;
  c ^= rot(b, 4);
  b += a;
}

inline void final(uint32_t& a, uint32_t& b, uint32_t& c) {
  c ^= b;
  c -= rot(b, 14);
  a ^= c;
  a -= rot(c, 11);
  b ^= a;
  b -= rot(a, 25);
  c ^= b;
  c -= rot(b, 16);
  a ^= c;
  a -= rot(c, 4);
  b ^= a;
  b -= rot(a, 14);
  c ^= b;
  c -= rot(b, 24);
}

// Four bytes as a little-endian word (what the aligned path of hashfn.c reads on x86_64; its
// unaligned path assembles the same value byte by byte).
inline uint32_t word(const unsigned char* k) {
  return static_cast<uint32_t>(k[0]) | static_cast<uint32_t>(k[1]) << 8 |
         static_cast<uint32_t>(k[2]) << 16 | static_cast<uint32_t>(k[3]) << 24;
}

// The seed "is treated as part of the data being hashed", as a 12-byte chunk padded with zeroes.
inline void mixSeed(uint32_t& a, uint32_t& b, uint32_t& c, uint64_t seed) {
  if (seed != 0) {
    a += static_cast<uint32_t>(seed >> 32);
    b += static_cast<uint32_t>(seed);
    mix(a, b, c);
  }
}

}  // namespace

uint64_t hashBytesExtended(const unsigned char* k, size_t keylen, uint64_t seed) {
  // Postgres keeps the length in a uint32 (its callers pass an int; a datum is at most 1 GB).
  uint32_t len = static_cast<uint32_t>(keylen);
  uint32_t a = 0x9e3779b9u + len + 3923095u;
  uint32_t b = a;
  uint32_t c = a;
  mixSeed(a, b, c, seed);

  while (len >= 12) {
    a += word(k);
    b += word(k + 4);
    c += word(k + 8);
    mix(a, b, c);
    k += 12;
    len -= 12;
  }
  // The last 11 bytes; the lowest byte of c is reserved for the length (lookup2's habit, kept).
  switch (len) {
    case 11:
      c += static_cast<uint32_t>(k[10]) << 24;
      [[fallthrough]];
    case 10:
      c += static_cast<uint32_t>(k[9]) << 16;
      [[fallthrough]];
    case 9:
      c += static_cast<uint32_t>(k[8]) << 8;
      [[fallthrough]];
    case 8:
      b += static_cast<uint32_t>(k[7]) << 24;
      [[fallthrough]];
    case 7:
      b += static_cast<uint32_t>(k[6]) << 16;
      [[fallthrough]];
    case 6:
      b += static_cast<uint32_t>(k[5]) << 8;
      [[fallthrough]];
    case 5:
      b += k[4];
      [[fallthrough]];
    case 4:
      a += static_cast<uint32_t>(k[3]) << 24;
      [[fallthrough]];
    case 3:
      a += static_cast<uint32_t>(k[2]) << 16;
      [[fallthrough]];
    case 2:
      a += static_cast<uint32_t>(k[1]) << 8;
      [[fallthrough]];
    case 1:
      a += k[0];
      break;
    default:  // 0: nothing left to add
      break;
  }
  final(a, b, c);
  return static_cast<uint64_t>(b) << 32 | c;
}

uint64_t hashBytesUint32Extended(uint32_t k, uint64_t seed) {
  uint32_t a = 0x9e3779b9u + static_cast<uint32_t>(sizeof(uint32_t)) + 3923095u;
  uint32_t b = a;
  uint32_t c = a;
  mixSeed(a, b, c, seed);
  a += k;
  final(a, b, c);
  return static_cast<uint64_t>(b) << 32 | c;
}

uint64_t hashInt2Extended(int16_t value, uint64_t seed) {
  return hashBytesUint32Extended(static_cast<uint32_t>(static_cast<int32_t>(value)), seed);
}

uint64_t hashInt4Extended(int32_t value, uint64_t seed) {
  return hashBytesUint32Extended(static_cast<uint32_t>(value), seed);
}

uint64_t hashInt8Extended(int64_t value, uint64_t seed) {
  uint32_t lohalf = static_cast<uint32_t>(value);
  const uint32_t hihalf = static_cast<uint32_t>(static_cast<uint64_t>(value) >> 32);
  lohalf ^= value >= 0 ? hihalf : ~hihalf;
  return hashBytesUint32Extended(lohalf, seed);
}

uint64_t hashTextExtended(std::string_view bytes, uint64_t seed) {
  return hashBytesExtended(bytes, seed);
}

uint64_t uuidHashExtended(std::string_view bytes16, uint64_t seed) {
  return hashBytesExtended(bytes16, seed);
}

}  // namespace shardgate::planner
