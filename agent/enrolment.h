// One enrolled pod: the agent's listeners in its network namespace on every worker, its
// inbound capture (the sk_lookup link on its netns, the listener and the ports SYNs are
// steered to), and last its cgroup in the kernel's map, from which moment its connects are
// redirected. Made whole or not at all: a step that fails undoes the ones before it, so a
// retry starts from nothing. Undone when it goes (release): new connections go direct,
// those already proxied carry on. The pod's routing for transparent inbound legs
// (pod_routing.h: a sysctl, a rule and a route that only touch packets with the agent's mark)
// is set up once and left in place: it is idempotent and changes nothing else.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "agent/kernel/datapath.h"
#include "agent/kernel/listening_ports.h"
#include "agent/kernel/system.h"
#include "agent/options.h"
#include "agent/pod_runtime.h"
#include "agent/pod_view.h"
#include "agent/worker/worker.h"

namespace nodemesh::agent {

class PodEnrolment {
 public:
  // What enrolment works with, all owned by the agent and outliving every enrolment.
  struct Context {
    const AgentOptions& options;
    Datapath& datapath;
    const Netns& home;  // the agent's own network namespace
    const std::string& cgroup_mount;
    const std::vector<std::unique_ptr<Worker>>& workers;
  };

  // Enrols `view.info` under `pod_id`, or fails (saying which step and why) with nothing
  // left behind.
  static absl::StatusOr<std::unique_ptr<PodEnrolment>> Enrol(const Context& context,
                                                             uint32_t pod_id, PodView view);
  ~PodEnrolment();
  PodEnrolment(const PodEnrolment&) = delete;
  PodEnrolment& operator=(const PodEnrolment&) = delete;

  PodRuntime& runtime() { return *runtime_; }
  const PodRuntime& runtime() const { return *runtime_; }
  // Shared with what outlives the enrolment: its listeners' and its captured endpoints'.
  std::shared_ptr<const PodRuntime> shared_runtime() const { return runtime_; }
  uint64_t cgroup_id() const { return cgroup_id_; }
  bool ipv6() const { return ipv6_; }
  // The sk_lookup link on the pod's netns; null until attached.
  const NetnsLink* inbound_link() const { return inbound_link_.get(); }
  // The pod's addresses and ports captured inbound, as "ip:port", sorted.
  std::vector<std::string> CapturedPorts() const;
  // The same, as the kernel's meshed_ports map holds them.
  const absl::flat_hash_set<Endpoint>& captured() const { return captured_; }

  // Captures inbound the ports the inventory lists for the pod, or (when it lists none)
  // those the pod listens on now; stops capturing the others. True if that changed any.
  bool RefreshCapturedPorts();

 private:
  PodEnrolment(const Context& context, std::shared_ptr<PodRuntime> runtime, uint64_t cgroup_id)
      : context_(context), runtime_(std::move(runtime)), cgroup_id_(cgroup_id) {}
  // One SO_REUSEPORT listener per worker on `address`, made inside the pod's netns.
  absl::StatusOr<std::vector<UniqueFd>> MakeListeners(const Endpoint& address) const;
  void GiveListeners(std::vector<UniqueFd> listeners, Direction direction);
  absl::Status Build();

  const Context context_;
  const std::shared_ptr<PodRuntime> runtime_;
  const uint64_t cgroup_id_;
  bool ipv6_ = false;
  // What is done so far, for undoing it.
  bool counters_tracked_ = false;
  bool listeners_given_ = false;
  std::unique_ptr<NetnsLink> inbound_link_;
  std::vector<IpAddress> inbound_listener_ips_;
  std::optional<ListeningPorts> listening_;  // when the inbound ports are discovered
  absl::flat_hash_set<Endpoint> captured_;
  bool cgroup_enrolled_ = false;
};

}  // namespace nodemesh::agent
