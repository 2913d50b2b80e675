// Postgres's md5 password scheme: the stored hash, the salted wire response and their checks.
#pragma once

#include <string>
#include <string_view>

namespace shardgate::wire {

// 32 lower-case hex digits of MD5(data).
std::string md5Hex(std::string_view data);

// What Postgres stores in pg_authid.rolpassword: "md5" + md5Hex(password + user).
std::string md5PasswordHash(std::string_view user, std::string_view password);

// True for "md5" followed by exactly 32 lower-case hex digits (Postgres's own test).
bool isMd5PasswordHash(std::string_view text);

// The answer to AuthenticationMD5Password: "md5" + md5Hex(stored_hash[3:] + salt4), computed from
// the stored hash (see md5PasswordHash) and the 4-byte salt. Returns "" if the stored hash is not a
// valid md5 hash or the salt is not 4 bytes; never compare a client's answer against "" as is —
// use md5ResponseMatches, which refuses that case.
std::string md5SaltedResponse(std::string_view stored_md5_hash, std::string_view salt4);

// Server side: does the client's PasswordMessage answer the challenge? Constant-time comparison;
// false when the stored hash or the salt is malformed.
bool md5ResponseMatches(std::string_view stored_md5_hash, std::string_view salt4,
                        std::string_view client_response);

// Cleartext password auth against a stored md5 hash (constant-time comparison).
bool md5PasswordMatches(std::string_view stored_md5_hash, std::string_view user,
                        std::string_view password);

}  // namespace shardgate::wire
