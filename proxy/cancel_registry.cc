// CancelRegistry: random, unique BackendKeyData, so a key cannot be guessed to cancel others'
// queries.
#include "proxy/cancel_registry.h"

#include <openssl/rand.h>

#include <cstring>

namespace shardgate::proxy {

namespace {
int32_t randomInt32() {
  int32_t value = 0;
  unsigned char bytes[sizeof(value)];
  if (RAND_bytes(bytes, sizeof(bytes)) != 1) {
    // RAND_bytes failing means no entropy source; fall back to something non-constant.
    static thread_local uint32_t fallback = 0x9e3779b9u;
    fallback = fallback * 1664525u + 1013904223u;
    std::memcpy(bytes, &fallback, sizeof(bytes));
  }
  std::memcpy(&value, bytes, sizeof(value));
  return value;
}
}  // namespace

CancelRegistry::Key CancelRegistry::add(CancelTarget target) {
  std::lock_guard lock(mutex_);
  int32_t pid;
  do {
    // Positive, like a real process id, so clients that print it are not confused.
    pid = randomInt32() & 0x7fffffff;
  } while (pid == 0 || entries_.count(pid) > 0);
  int32_t secret = randomInt32();
  entries_.emplace(pid, Entry{secret, target});
  return Key{pid, secret};
}

void CancelRegistry::remove(int32_t process_id) {
  std::lock_guard lock(mutex_);
  entries_.erase(process_id);
}

std::optional<CancelTarget> CancelRegistry::find(int32_t process_id, int32_t secret_key) const {
  std::lock_guard lock(mutex_);
  auto it = entries_.find(process_id);
  if (it == entries_.end() || it->second.secret_key != secret_key) return std::nullopt;
  return it->second.target;
}

size_t CancelRegistry::size() const {
  std::lock_guard lock(mutex_);
  return entries_.size();
}

}  // namespace shardgate::proxy
