// The identities the agent's metric keys refer to, interned as small integers so that keys
// on the data path are a few integers. Interning takes a lock; it happens when the
// inventory changes, never per request. The agent forgets identities that no series,
// connection or address directory refers to any more (Retain), so the table follows the
// cluster's pods as they are, not every pod there ever was.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "common/base/interner.h"
#include "common/metrics/identity.h"
#include "common/metrics/sample.h"

namespace nodemesh::metrics {

class IdentityTable {
 public:
  using Id = uint32_t;
  static constexpr Id kExternal = 0;  // every peer outside the inventory; never forgotten

  IdentityTable() { table_.Intern(ExternalIdentity()); }

  Id Intern(const Identity& identity) { return *table_.Intern(identity); }
  // The identity of `id`; External for an id that is not (or no longer) interned.
  Identity Get(Id id) const { return table_.Get(id).value_or(ExternalIdentity()); }

  // Forgets every identity whose id is not in `in_use` (External stays); their ids may be
  // given out again from now on. Returns the forgotten ids.
  std::vector<Id> Retain(const absl::flat_hash_set<Id>& in_use) {
    return table_.ForgetIf([&](Id id, int64_t) { return id != kExternal && !in_use.contains(id); });
  }

  size_t size() const { return table_.size(); }

 private:
  Interner<Identity> table_;
};

// Adds both ends of `key`, and the Service dialled, to `ids`.
inline void AddIdentitiesOf(const TrafficKey& key, absl::flat_hash_set<IdentityTable::Id>* ids) {
  ids->insert(key.source);
  ids->insert(key.destination);
  if (key.service != IdentityTable::kExternal) ids->insert(key.service);
}

}  // namespace nodemesh::metrics
