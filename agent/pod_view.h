// Pods as the data plane reads them: an enrolled pod's view (what it is, how it is named), the
// directory naming every pod address of the cluster, and the one naming Services' cluster IPs.
// Snapshots, replaced by the control thread and read without a lock by the workers and
// their observers. What owns an enrolled pod's namespace is pod_runtime.h.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "agent/metrics/identity_table.h"
#include "common/base/bucketed_map.h"
#include "common/inventory/inventory.h"
#include "common/metrics/sample.h"

namespace nodemesh::agent {

// Which side of a pod the agent is proxying for: its calls out, or calls into it.
using metrics::Direction;
using metrics::DirectionName;

// What the data plane knows of a pod at one moment. Its key (namespace/name) never changes;
// identity fields (labels, owner, ...) may, in a newer view (PodRuntime::set_view).
struct PodView {
  PodInfo info;
  metrics::IdentityTable::Id identity = metrics::IdentityTable::kExternal;
};

// Which identity each pod address of the cluster has, for naming the other end of a
// connection. Replaced whole when the inventory changes; read once per connection.
class PeerDirectory {
 public:
  using Map = absl::flat_hash_map<IpAddress, metrics::IdentityTable::Id>;
  metrics::IdentityTable::Id Lookup(const IpAddress& ip) const {
    const std::shared_ptr<const Map> map = map_.load(std::memory_order_acquire);
    const auto it = map->find(ip);
    return it == map->end() ? metrics::IdentityTable::kExternal : it->second;
  }
  void Replace(Map map) {
    map_.store(std::make_shared<const Map>(std::move(map)), std::memory_order_release);
  }
  void AddReferencedIdentities(absl::flat_hash_set<metrics::IdentityTable::Id>* ids) const {
    for (const auto& [ip, id] : *map_.load(std::memory_order_acquire)) ids->insert(id);
  }

 private:
  std::atomic<std::shared_ptr<const Map>> map_{std::make_shared<const Map>()};
};

// Which Service each cluster IP belongs to (an identity of owner kind "Service", pod empty),
// for the connections dialled to one: Lookup gives kExternal for an address of no Service.
// A cluster may have tens of thousands of Services, changing one at a time: the control
// thread changes its own copy of the map per Service changed and publishes it with Replace,
// which shares with the previous snapshot every bucket the change did not touch.
class ServiceDirectory {
 public:
  using Map = BucketedMap<IpAddress, metrics::IdentityTable::Id>;
  metrics::IdentityTable::Id Lookup(const IpAddress& ip) const {
    const metrics::IdentityTable::Id* id = map_.load(std::memory_order_acquire)->Find(ip);
    return id == nullptr ? metrics::IdentityTable::kExternal : *id;
  }
  void Replace(const Map& map) {
    map_.store(std::make_shared<const Map>(map), std::memory_order_release);
  }
  void AddReferencedIdentities(absl::flat_hash_set<metrics::IdentityTable::Id>* ids) const {
    map_.load(std::memory_order_acquire)->ForEach([ids](const IpAddress&, uint32_t id) {
      ids->insert(id);
    });
  }

 private:
  std::atomic<std::shared_ptr<const Map>> map_{std::make_shared<const Map>()};
};

}  // namespace nodemesh::agent
