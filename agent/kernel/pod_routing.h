// Lets the agent forward an inbound connection to the application with the caller's own
// address as source (IP_TRANSPARENT), so the application sees who really called. The
// application's replies to that address must come back to the agent rather than leave the
// pod: sockets the agent makes carry a mark, the pod reflects a SYN's mark onto the
// connection it accepts (net.ipv4.tcp_fwmark_accept), and a policy rule delivers marked
// packets locally. Unmarked traffic, and so every connection the agent does not proxy, is
// untouched.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "agent/kernel/system.h"

namespace nodemesh::agent {

// Idempotent: installs the sysctl, rule and route in `pod` if missing. The sysctl is
// written under `proc_root`/sys/net, which answers for the namespace of the thread that
// opens it, whichever procfs mount it is reached through.
absl::Status PrepareTransparentInbound(const Netns& pod, const Netns& home, uint32_t mark,
                                       uint32_t table, const std::string& proc_root);

}  // namespace nodemesh::agent
