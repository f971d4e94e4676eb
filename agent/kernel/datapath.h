// The agent's handle on the kernel programs of bpf/: loads them, attaches them, and keeps
// their maps. Links belong to this object (and so to the agent process): when it goes, the
// kernel detaches everything and traffic flows direct.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "agent/options.h"
#include "bpf/nodemesh.h"
#include "common/net/address.h"

struct nodemesh_bpf;
struct bpf_link;

namespace nodemesh::agent {

// Where an intercepted connection was going, as the application asked.
struct OriginalDestination {
  Endpoint endpoint;
  uint32_t pod_id = 0;
  uint64_t cgroup_id = 0;
};

using CounterValues = std::array<uint64_t, NM_COUNTER_COUNT>;
std::string_view CounterName(nm_counter counter);

// Detaches on destruction.
class NetnsLink {
 public:
  explicit NetnsLink(bpf_link* link) : link_(link) {}
  ~NetnsLink();
  NetnsLink(const NetnsLink&) = delete;
  NetnsLink& operator=(const NetnsLink&) = delete;

 private:
  bpf_link* link_;
};

class Datapath {
 public:
  // Loads the programs (told the outbound port and the socket marks, their pod maps sized
  // for max_pods) and attaches the cgroup ones to `cgroup_dir`, an absolute path: they
  // cover that cgroup's subtree.
  static absl::StatusOr<std::unique_ptr<Datapath>> Load(const AgentOptions& options,
                                                        const std::string& cgroup_dir);
  ~Datapath();
  Datapath(const Datapath&) = delete;
  Datapath& operator=(const Datapath&) = delete;

  // Connects from this cgroup (or its descendants) are redirected from now on; their
  // getsockname answers with the pod's address (`pod_ips`' first of each family).
  absl::Status EnrolCgroup(uint64_t cgroup_id, uint32_t pod_id, bool has_ipv6_listener,
                           const std::vector<IpAddress>& pod_ips);
  void ReleaseCgroup(uint64_t cgroup_id);

  // Inbound capture of a pod: the sk_lookup program on its netns, the listener SYNs go to,
  // and the ports steered there.
  absl::StatusOr<std::unique_ptr<NetnsLink>> AttachInbound(int netns_fd);
  absl::Status SetInboundListener(const IpAddress& pod_ip, int listener_fd);
  void RemoveInboundListener(const IpAddress& pod_ip);
  absl::Status AddCapturedPort(const Endpoint& endpoint);
  void RemoveCapturedPort(const Endpoint& endpoint);

  // The agent's connection from `caller` (the original caller's address, bound
  // transparently) to `pod` reaches the application instead of being captured again.
  absl::Status AllowPassthrough(const Endpoint& caller, const Endpoint& pod);
  void ForgetPassthrough(const Endpoint& caller, const Endpoint& pod);

  absl::Status SetExcludedPort(uint16_t port, bool excluded);

  // The original destination of a connection accepted on an outbound listener, removed
  // from the map as it is read. `netns_cookie` is the accepted socket's SO_NETNS_COOKIE.
  std::optional<OriginalDestination> TakeOriginalDestination(uint64_t netns_cookie,
                                                             const Endpoint& app,
                                                             const Endpoint& listener);

  CounterValues ReadCounters() const;

 private:
  Datapath() = default;
  nodemesh_bpf* skeleton_ = nullptr;
  int cgroup_fd_ = -1;
  std::vector<bpf_link*> cgroup_links_;
};

}  // namespace nodemesh::agent
