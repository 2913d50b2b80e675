// The BackendKeyData shardgate issues to clients, and which session each key belongs to.
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <unordered_map>

namespace shardgate::proxy {

struct CancelTarget {
  uint32_t worker = 0;
  uint64_t session_id = 0;
};

// Shared by all workers; touched only at login, logout and cancel, never per query.
class CancelRegistry {
 public:
  struct Key {
    int32_t process_id;
    int32_t secret_key;
  };

  // Issues a fresh key (unique process id, random secret) for a session.
  Key add(CancelTarget target);
  void remove(int32_t process_id);
  // The session a CancelRequest is for; nullopt when the key is unknown or the secret wrong.
  std::optional<CancelTarget> find(int32_t process_id, int32_t secret_key) const;
  size_t size() const;

 private:
  struct Entry {
    int32_t secret_key;
    CancelTarget target;
  };
  mutable std::mutex mutex_;
  std::unordered_map<int32_t, Entry> entries_;
};

}  // namespace shardgate::proxy
