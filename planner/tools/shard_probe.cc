// Test-only: prints the hash-partition remainder shardgate computes for each key read on stdin.
//
//   shard_probe <smallint|integer|bigint|text|varchar|uuid> <modulus>
//
// One key per line, in its text form (as a SQL literal's contents); in a line, "\\" stands for a
// backslash and "\xHH" for the byte 0xHH, so keys may hold newlines or any other byte. Prints one
// line per key: the remainder (0..modulus-1), or with modulus 0 the full 64-bit partition row hash,
// or "error: <message>" for a key that does not parse. tests/integration/test_hash_compat.py
// compares the output with Postgres's satisfies_hash_partition().
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>

#include "planner/sharding_function.h"

namespace {

using shardgate::conf::KeyType;

bool parseType(std::string_view name, KeyType& out) {
  for (KeyType t : {KeyType::kSmallint, KeyType::kInteger, KeyType::kBigint, KeyType::kText,
                    KeyType::kVarchar, KeyType::kUuid}) {
    if (shardgate::conf::keyTypeName(t) == name) {
      out = t;
      return true;
    }
  }
  return false;
}

int hexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Undoes the escaping described above; false on a malformed escape.
bool unescape(const std::string& line, std::string& out) {
  out.clear();
  for (size_t i = 0; i < line.size(); ++i) {
    if (line[i] != '\\') {
      out += line[i];
      continue;
    }
    if (i + 1 < line.size() && line[i + 1] == '\\') {
      out += '\\';
      i += 1;
    } else if (i + 3 < line.size() && line[i + 1] == 'x' && hexDigit(line[i + 2]) >= 0 &&
               hexDigit(line[i + 3]) >= 0) {
      out += static_cast<char>(hexDigit(line[i + 2]) * 16 + hexDigit(line[i + 3]));
      i += 3;
    } else {
      return false;
    }
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  KeyType type;
  char* end = nullptr;
  const unsigned long long modulus = argc == 3 ? std::strtoull(argv[2], &end, 10) : 0;
  if (argc != 3 || !parseType(argv[1], type) || !end || *end != '\0') {
    std::fprintf(stderr,
                 "usage: %s <smallint|integer|bigint|text|varchar|uuid> <modulus>\n"
                 "  keys on stdin, one per line (\\\\ and \\xHH escapes); modulus 0 prints the "
                 "full hash\n",
                 argv[0]);
    return 2;
  }
  std::ios::sync_with_stdio(false);
  std::string line;
  std::string key_text;
  std::string out;
  while (std::getline(std::cin, line)) {
    if (!unescape(line, key_text)) {
      out += "error: malformed escape\n";
      continue;
    }
    auto key = shardgate::planner::parseKeyText(type, key_text);
    if (!key.ok()) {
      out += "error: " + key.error().message + "\n";
      continue;
    }
    const uint64_t hash = shardgate::planner::partitionHash(type, *key);
    out += std::to_string(modulus == 0 ? hash : hash % modulus) + "\n";
    if (out.size() > (1u << 16)) {
      std::cout << out;
      out.clear();
    }
  }
  std::cout << out << std::flush;
  return std::cout ? 0 : 1;
}
