// Maps sharding-key values to shards: hash (Postgres PARTITION BY HASH), range and list.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "conf/config.h"

namespace shardgate::planner {

using conf::KeyType;
using conf::KeyValue;

// A key that no shard holds: outside every range, or not listed and no default_shard. SQLSTATE
// 22023 (invalid_parameter_value): the value is the problem, not a missing feature; the message is
// "no shard for key <k> of table <t>: ...".
inline constexpr std::string_view kNoShardForKey = sqlstate::kInvalidParameterValue;

// A key from a SQL literal or a text-format parameter, parsed as Postgres's input function for the
// type would: "42", " -7 ", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
// "{A0EEBC999C0B4EF8BB6D6BB9BD380A11}", any text. It lives in conf (the config loader parses key
// values too); this makes it planner::parseKeyText as well.
using conf::parseKeyText;

// Text keys are hashed as the shards store them, in UTF-8. A client whose client_encoding is
// another (LATIN1, WIN1252, ...) sends other bytes for the same non-ASCII text, which Postgres
// converts but shardgate does not: such a key gets 0A000 (ASCII is the same in every encoding).
// `client_utf8`: the client's encoding is UTF8 (or SQL_ASCII: no conversion either).
Status requireKeyInServerEncoding(KeyType type, std::string_view text, bool client_utf8);

// Whether a client_encoding value (as Postgres reports it: "UTF8", "LATIN1", ...) sends text as the
// shards store it.
bool clientEncodingIsUtf8(std::string_view client_encoding);

// A key from a binary-format parameter of type `type` (the parameter's type, which may differ from
// the column's: see shardForKey): int2/int4/int8 big-endian two's complement of exactly 2/4/8
// bytes, uuid 16 bytes, text/varchar the bytes themselves. A wrong length is 22P03.
Result<KeyValue> parseKeyBinary(KeyType type, std::string_view bytes);

// The key type of a parameter or column type OID (int2 21, int4 23, int8 20, text 25, varchar 1043,
// uuid 2950), or nullopt for a type that cannot be a sharding key.
std::optional<KeyType> keyTypeFromOid(uint32_t type_oid);

// The one-column partition row hash of `key` (before % modulus): hash_combine64(0,
// <type>hashextended(key, HASH_PARTITION_SEED)). Integer keys hash alike whatever their integer
// type (hashint2/4/8 agree on equal values); an integer key of a text or uuid column is hashed as
// an integer (shardForKey refuses that mismatch before hashing).
uint64_t partitionHash(KeyType type, const KeyValue& key);

// The shard of `key` under hash sharding over `shard_count` shards: the remainder of Postgres's
// hash partition with MODULUS shard_count. Errors: 42804 if the key's kind does not fit the type
// (an integer for a text column, a uuid that is not 16 bytes), 22023 if shard_count is 0.
Result<uint32_t> hashShard(KeyType type, size_t shard_count, const KeyValue& key);

// The shard of `key` for `table` (strategy hash, range or list). Integer values of any integer
// type are accepted for an integer key column: a value out of the column type's range can match no
// row, and the hash of an in-range value is the same whichever integer type carries it.
// Errors: kNoShardForKey (22023) for keys no shard holds; 42804 for a key of the wrong kind;
// 0A000 for strategy directory, whose keys must be looked up in the directory table (see
// conf::DirectoryConfig) — after a miss there, a "hash" fallback is hashShard().
Result<uint32_t> shardForKey(const conf::ShardedTable& table, size_t shard_count,
                             const KeyValue& key);

// The shards that may hold rows whose key lies in the interval from `lo` to `hi` (nullopt:
// unbounded; the flags say whether each end is included), ascending and without repeats. Range
// strategy: the shards of the ranges the interval meets. List strategy: the shards of the listed
// values inside it, plus default_shard if any. Hash and directory: every shard. Never too few
// shards; for text and uuid keys a range that touches the interval only at an excluded end may be
// included (over-inclusion costs a query that returns nothing, never a wrong answer).
std::vector<uint32_t> shardsForRange(const conf::ShardedTable& table, size_t shard_count,
                                     const std::optional<KeyValue>& lo, bool lo_inclusive,
                                     const std::optional<KeyValue>& hi, bool hi_inclusive);

}  // namespace shardgate::planner
