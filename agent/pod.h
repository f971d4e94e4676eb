// An enrolled pod as the data plane sees it.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "agent/kernel/system.h"
#include "agent/metrics/identity_table.h"
#include "common/inventory/inventory.h"
#include "common/metrics/sample.h"

namespace nodemesh::agent {

// Which side of a pod the agent is proxying for: its calls out, or calls into it.
using metrics::Direction;
using metrics::DirectionName;

// What the data plane knows of a pod at one moment.
struct PodView {
  PodInfo info;
  metrics::IdentityTable::Id identity = metrics::IdentityTable::kExternal;
};

class PodRuntime {
 public:
  PodRuntime(uint32_t id, PodView view, Netns netns)
      : id_(id),
        netns_(std::move(netns)),
        view_(std::make_shared<const PodView>(std::move(view))) {}

  uint32_t id() const { return id_; }
  const Netns& netns() const { return netns_; }
  // Identity fields (labels, owner, ...) may change while connections run: readers get a
  // consistent snapshot.
  std::shared_ptr<const PodView> view() const { return view_.load(std::memory_order_acquire); }
  void set_view(PodView view) {
    view_.store(std::make_shared<const PodView>(std::move(view)), std::memory_order_release);
  }

 private:
  const uint32_t id_;
  const Netns netns_;
  std::atomic<std::shared_ptr<const PodView>> view_;
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
// Replaced whole when the inventory changes, like the peers'.
using ServiceDirectory = PeerDirectory;

}  // namespace nodemesh::agent
