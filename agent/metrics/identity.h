// Who is on each end of a connection, as metrics and tap name them.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"

namespace nodemesh::metrics {

struct Identity {
  std::string namespace_name;
  std::string pod;
  std::string owner_kind;  // "Deployment", ...; "External" for addresses outside the inventory
  std::string owner_name;
  std::string service_account;
  std::string node;

  bool operator==(const Identity&) const = default;
  template <typename H>
  friend H AbslHashValue(H h, const Identity& id) {
    return H::combine(std::move(h), id.namespace_name, id.pod, id.owner_kind, id.owner_name,
                      id.service_account, id.node);
  }
};

// Every peer outside the inventory is one identity, not one series per address.
inline Identity ExternalIdentity() { return Identity{"", "", "External", "external", "", ""}; }

// Identities interned as small integers, so that metric keys on the data path are a few
// integers. Interning takes a lock; it happens per connection, never per request.
class IdentityTable {
 public:
  using Id = uint32_t;
  IdentityTable() { Intern(ExternalIdentity()); }  // id 0

  static constexpr Id kExternal = 0;

  Id Intern(const Identity& identity) {
    std::lock_guard lock(mutex_);
    auto [it, inserted] = ids_.try_emplace(identity, static_cast<Id>(identities_.size()));
    if (inserted) identities_.push_back(identity);
    return it->second;
  }
  Identity Get(Id id) const {
    std::lock_guard lock(mutex_);
    return id < identities_.size() ? identities_[id] : ExternalIdentity();
  }

 private:
  mutable std::mutex mutex_;
  absl::flat_hash_map<Identity, Id> ids_;
  std::vector<Identity> identities_;
};

}  // namespace nodemesh::metrics
