// An enrolled pod as the agent holds it: the id the kernel maps know it by, its network
// namespace held open (the workers make its upstream sockets and listeners there), and its
// latest view (pod_view.h). Made by its enrolment (enrolment.h) and shared with the workers'
// listeners in the pod; a connection keeps only the view it started with. And the endpoints
// the enrolled pods are captured on inbound, with the pod behind each, where a worker may
// dial a call between two pods of the node straight (CapturedEndpoints).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

#include "absl/container/flat_hash_map.h"
#include "agent/kernel/system.h"
#include "agent/pod_view.h"
#include "common/net/address.h"

namespace nodemesh::agent {

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

// Every address and port the enrolled pods are captured on inbound (what the kernel's
// meshed_ports map holds), with the pod behind each: where the sk_lookup program would
// steer a SYN to the agent's inbound listener. A snapshot, replaced whole by the control
// thread in step with the map (added to after the map, taken from before it) and read
// without a lock by the workers, once per outbound connection.
class CapturedEndpoints {
 public:
  using Map = absl::flat_hash_map<Endpoint, std::shared_ptr<const PodRuntime>>;
  // The pod captured on `endpoint`; null when none is.
  std::shared_ptr<const PodRuntime> Lookup(const Endpoint& endpoint) const {
    const std::shared_ptr<const Map> map = map_.load(std::memory_order_acquire);
    const auto it = map->find(endpoint);
    return it == map->end() ? nullptr : it->second;
  }
  void Replace(Map map) {
    map_.store(std::make_shared<const Map>(std::move(map)), std::memory_order_release);
  }

 private:
  std::atomic<std::shared_ptr<const Map>> map_{std::make_shared<const Map>()};
};

}  // namespace nodemesh::agent
