// Where a Kubernetes pod lives on this node: its pod-level cgroup v2 directory and a network
// namespace of one of its processes, found from the pod's UID the way the kubelet lays
// them out, without asking the container runtime.
//
// Cgroups. The kubelet makes one cgroup per pod, named after its UID, and the runtime one
// per container below it:
//   cgroupfs driver  /kubepods/burstable/pod<uid>/<container id>          (Burstable)
//                    /kubepods/besteffort/pod<uid>/...                    (BestEffort)
//                    /kubepods/pod<uid>/...                               (Guaranteed)
//   systemd driver   /kubepods.slice/kubepods-burstable.slice/
//                        kubepods-burstable-pod<uid, '-' as '_'>.slice/cri-containerd-<id>.scope
//                    (crio-<id>.scope, docker-<id>.scope; crun adds a `container` sub-cgroup)
// and under whatever the node puts above them (kind's /kubelet.slice/kubelet-kubepods.slice,
// k3s-in-docker's /docker/<id>/kubepods, RKE2's and k3s's /kubepods). The locator scans the
// tree under its root for directories whose name carries a pod UID, so every layout above
// is found without a list of prefixes; the pod-level directory is the one enrolled (every
// container of the pod is below it). A static pod's cgroup carries the kubelet's UID for
// it (its config hash, 32 hex digits), not its mirror pod's API UID, so it is not found.
//
// Network namespace. From a process of the pod: its pids come from the cgroup.procs files
// of the pod's subtree, or, when those show none of them (a /proc of another pid namespace,
// mounted from the host), by reading <proc root>/<pid>/cgroup for the pod's UID (paths there
// may start with "/.." when the reader sits in a cgroup namespace: the UID still matches).
// The namespace is <proc root>/<pid>/ns/net, accepted only if it is not the host's (the
// agent's own, or pid 1's) and holds one of the pod's IPs.
#pragma once

#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/net/address.h"

namespace nodemesh::agent {

struct NodePaths {
  std::string cgroup_mount = "/sys/fs/cgroup";
  std::string cgroup_root = "/";    // the subtree to search, under the mount
  std::string proc_root = "/proc";  // the host's /proc (mounted elsewhere in a container)
};

struct PodLocation {
  std::string cgroup;  // the pod-level cgroup, under the mount, with a leading '/'
  std::string netns;   // <proc root>/<pid>/ns/net
  int pid = 0;
};

// Thread-safe: Rescan may run while other threads call Locate.
class PodLocator {
 public:
  explicit PodLocator(NodePaths paths) : paths_(std::move(paths)) {}

  // Scans the cgroup tree again: directories down to 8 levels below the root, never below
  // a pod's directory, never through a symbolic link; unreadable ones are skipped. Call it
  // once before a batch of Locate calls, not per pod.
  void Rescan();

  // The pod's cgroup and netns. UNAVAILABLE with the reason while the pod is not ready to
  // be enrolled ("no cgroup for pod <uid> under /sys/fs/cgroup/ yet (its containers may
  // not have started)", "no process in its cgroup yet", "its processes are in the host's
  // network namespace", "no network namespace of its processes holds 10.1.0.4"): the
  // caller retries later. Another code when the node itself cannot be read (the cgroup
  // root at the last Rescan, a namespace the agent may not enter). An empty `ips` skips
  // the address check.
  absl::StatusOr<PodLocation> Locate(std::string_view uid, const std::vector<IpAddress>& ips) const;

  // The pod-level cgroup of `uid` as of the last Rescan, or nullopt.
  std::optional<std::string> CgroupOf(std::string_view uid) const;

 private:
  const NodePaths paths_;
  mutable std::mutex mutex_;
  absl::flat_hash_map<std::string, std::string> cgroup_by_uid_;  // guarded by mutex_
  absl::Status scan_status_;                                     // guarded by mutex_
};

// The pod UID a cgroup directory's name stands for ("pod<uid>",
// "kubepods-besteffort-pod<uid with '_'>.slice", "kubelet-kubepods-pod<...>.slice"), in the
// API's form (with '-'), or nullopt: for a container's directory, and for any name whose
// UID is not exactly a lowercase 8-4-4-4-12 UUID. A slice's parents must include the
// kubelet's "kubepods", followed by at most its QoS class.
std::optional<std::string> PodUidOfCgroupName(std::string_view name);

// The pod UID named in the text of a /proc/<pid>/cgroup file (its "0::<path>" line, which
// may start with "/.." and go on below the pod into its containers), or nullopt. With pod
// directories nested in one another (a node inside a pod), the outermost one, as Rescan.
std::optional<std::string> PodUidOfProcessCgroup(std::string_view proc_cgroup);

}  // namespace nodemesh::agent
