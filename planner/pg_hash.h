// Bit-for-bit copies of the Postgres 15 hash functions behind PARTITION BY HASH.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace shardgate::planner {

// HASH_PARTITION_SEED (src/include/catalog/partition.h): the seed every partition key column's
// extended hash function is called with.
inline constexpr uint64_t kHashPartitionSeed = 0x7A5B22367996DCFDULL;

// hash_bytes_extended (src/common/hashfn.c): Bob Jenkins' lookup3 over `len` bytes, the 64-bit
// seed mixed in first (when non-zero), result (b << 32) | c. Little-endian byte order, as on the
// x86_64 and arm64 servers Postgres runs on.
uint64_t hashBytesExtended(const unsigned char* k, size_t len, uint64_t seed);
inline uint64_t hashBytesExtended(std::string_view bytes, uint64_t seed) {
  return hashBytesExtended(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(),
                           seed);
}

// hash_bytes_uint32_extended (hashfn.c): the same for one 32-bit word.
uint64_t hashBytesUint32Extended(uint32_t k, uint64_t seed);

// hashint2extended / hashint4extended (src/backend/access/hash/hashfunc.c): the value sign-extended
// to 32 bits, then hash_bytes_uint32_extended.
uint64_t hashInt2Extended(int16_t value, uint64_t seed);
uint64_t hashInt4Extended(int32_t value, uint64_t seed);
// hashint8extended: the high half folded into the low half (complemented for negative values), so
// that equal values of int2, int4 and int8 hash alike.
uint64_t hashInt8Extended(int64_t value, uint64_t seed);

// hashtextextended (src/backend/utils/adt/varlena.c) under a deterministic collation: the hash of
// the string's bytes. varchar has no hash function of its own: its hash opclass (varchar_ops) is
// in the text_ops family and uses hashtextextended too.
uint64_t hashTextExtended(std::string_view bytes, uint64_t seed);
inline uint64_t hashVarcharExtended(std::string_view bytes, uint64_t seed) {
  return hashTextExtended(bytes, seed);
}

// uuid_hash_extended (src/backend/utils/adt/uuid.c): the hash of the 16 bytes.
uint64_t uuidHashExtended(std::string_view bytes16, uint64_t seed);

// hash_combine64 (src/include/common/hashfn.h): folds one column's hash into a row hash.
constexpr uint64_t hashCombine64(uint64_t a, uint64_t b) {
  a ^= b + 0x49a0f4dd15e5a8e3ULL + (a << 54) + (a >> 7);
  return a;
}

// compute_partition_hash_value (src/backend/partitioning/partbounds.c) for a one-column key whose
// hash with kHashPartitionSeed is `column_hash`; the row belongs to the partition with remainder
// `rowHash % modulus` (satisfies_hash_partition checks exactly that).
constexpr uint64_t partitionRowHash(uint64_t column_hash) {
  return hashCombine64(0, column_hash);
}

}  // namespace shardgate::planner
