// The Linux capabilities the agent's work needs. A container whose capabilities were
// trimmed too far must say which one to grant back and why, not fail with a bare EPERM at
// its first pod or connection.
//
//   CAP_SYS_ADMIN   setns() into pods' network namespaces, where the agent makes its
//                   listeners. The kernel also accepts it for every BPF operation (it
//                   stands in for CAP_BPF, CAP_PERFMON and the CAP_NET_ADMIN that cgroup
//                   and sk_lookup programs need), so CAP_BPF adds nothing beside it.
//   CAP_NET_ADMIN   marking the agent's own sockets (SO_MARK, IP_TRANSPARENT), which the
//                   kernel programs recognise and pass, and conntrack queries (netlink).
//   CAP_SYS_PTRACE  opening /proc/<pid>/ns/net of pods' processes (Kubernetes inventory),
//                   which belong to other containers with capabilities of their own.
#pragma once

#include <linux/capability.h>

#include <initializer_list>

#include "absl/status/status.h"
#include "agent/kernel/system.h"

namespace nodemesh::agent {

// Whether the calling thread's effective set holds `capability` (CAP_SYS_ADMIN, ...).
bool HasCapability(int capability);

// A permission error with the capabilities of `needed` that the agent lacks named, each
// with what it is for: "<message>: the agent lacks CAP_SYS_PTRACE (...)". Any other status,
// and a permission error while every one of `needed` is held, comes back unchanged.
absl::Status NameMissingCapabilities(absl::Status status, std::initializer_list<int> needed);

// Does once, at start, the privileged operations that otherwise first happen at the first
// pod (entering a network namespace: CAP_SYS_ADMIN) or connection (marking a socket:
// CAP_NET_ADMIN), so that an agent without them stops at once and says what to grant.
absl::Status CheckPrivileges(const Netns& home, uint32_t socket_mark);

}  // namespace nodemesh::agent
