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
#include "nlohmann/json_fwd.hpp"

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
// nm_pod_counters summed over CPUs, by name, in the header's order.
nlohmann::json PodCountersJson(const nm_pod_counters& counters);
std::string_view CounterName(nm_counter counter);

// An attached program, as the kernel reports its link (for the admin API's /kernel).
struct AttachedProgram {
  std::string name;         // the program's name in bpf/nodemesh.bpf.c
  std::string type;         // "cgroup_sock_addr", "sk_lookup", ... (libbpf's names)
  std::string attach_type;  // "cgroup_inet4_connect", "sk_lookup", ...
  uint32_t program_id = 0;  // the kernel's ids, as bpftool shows them
  uint32_t link_id = 0;
  uint64_t cgroup_id = 0;    // a cgroup link's cgroup
  uint32_t netns_inode = 0;  // a netns link's namespace
};
// The kernel's view of the link `link_fd`; `name` is what the agent calls its program.
absl::StatusOr<AttachedProgram> DescribeLink(int link_fd, std::string name);

// One of the programs' maps, read from the kernel at the time of asking.
struct MapSummary {
  std::string name;
  std::string type;  // "hash", "lru_hash", "array", "sockhash", ...
  uint32_t map_id = 0;
  uint64_t entries = 0;   // keys present; for an array, its non-zero elements
  uint32_t capacity = 0;  // max_entries
};

// Detaches on destruction.
class NetnsLink {
 public:
  explicit NetnsLink(bpf_link* link) : link_(link) {}
  ~NetnsLink();
  int fd() const;
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
  // `pod_id`'s kernel counters: made before its first redirect (TrackPod), read by
  // PodCounters, removed on release.
  absl::Status TrackPod(uint32_t pod_id);
  void ForgetPod(uint32_t pod_id);
  std::optional<nm_pod_counters> PodCounters(uint32_t pod_id) const;
  absl::Status AddCapturedPort(const Endpoint& endpoint, uint32_t pod_id);
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

  // The programs attached to the cgroup root, and every map with its entries counted.
  std::vector<AttachedProgram> CgroupPrograms() const;
  std::vector<MapSummary> Maps() const;
  // The map `name`'s entries decoded with bpf/nodemesh.h's types (addresses, ports, pod
  // ids, socket cookies), at most `limit` of them: {"map", "type", "capacity", "count",
  // "entries": [...], "truncated"}. NotFound names the maps there are.
  absl::StatusOr<nlohmann::json> DumpMap(std::string_view name, size_t limit) const;

 private:
  Datapath() = default;
  nodemesh_bpf* skeleton_ = nullptr;
  int cgroup_fd_ = -1;
  std::vector<bpf_link*> cgroup_links_;
  std::vector<std::string> cgroup_link_programs_;  // the program of each link
};

}  // namespace nodemesh::agent
