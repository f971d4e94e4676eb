#include "agent/kernel/capabilities.h"

#include <linux/capability.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_join.h"
#include "common/base/errno_status.h"
#include "common/base/log.h"
#include "common/base/unique_fd.h"

namespace nodemesh::agent {
namespace {

struct CapabilityUse {
  int capability;
  std::string_view name;
  std::string_view needed_for;
};

constexpr CapabilityUse kUses[] = {
    {CAP_SYS_ADMIN, "CAP_SYS_ADMIN",
     "to enter pods' network namespaces (setns) and make its listeners there"},
    {CAP_NET_ADMIN, "CAP_NET_ADMIN",
     "to mark its own sockets (SO_MARK, IP_TRANSPARENT) and query conntrack"},
    {CAP_SYS_PTRACE, "CAP_SYS_PTRACE",
     "to open the network namespaces of pods' processes under /proc"},
};

const CapabilityUse* UseOf(int capability) {
  for (const CapabilityUse& use : kUses) {
    if (use.capability == capability) return &use;
  }
  return nullptr;
}

}  // namespace

bool HasCapability(int capability) {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
  if (::syscall(SYS_capget, &header, data) != 0) return false;
  const int word = capability / 32;
  if (word >= _LINUX_CAPABILITY_U32S_3) return false;
  return (data[word].effective & (1u << (capability % 32))) != 0;
}

absl::Status NameMissingCapabilities(absl::Status status, std::initializer_list<int> needed) {
  if (!absl::IsPermissionDenied(status)) return status;
  std::vector<std::string> missing;
  for (int capability : needed) {
    if (HasCapability(capability)) continue;
    const CapabilityUse* use = UseOf(capability);
    missing.push_back(use != nullptr ? fmt::format("{} ({})", use->name, use->needed_for)
                                     : fmt::format("capability {}", capability));
  }
  if (missing.empty()) return status;
  return absl::PermissionDeniedError(fmt::format(
      "{}: the agent lacks {}; grant it", status.message(), absl::StrJoin(missing, " and ")));
}

absl::Status CheckPrivileges(const Netns& home, uint32_t socket_mark) {
  {
    ScopedNetns again(home, home);  // the same namespace: only the permission is tried
    if (!again.status().ok()) return NameMissingCapabilities(again.status(), {CAP_SYS_ADMIN});
  }
  UniqueFd socket(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!socket.valid()) return ErrnoStatus("making a socket", errno);
  if (::setsockopt(socket.get(), SOL_SOCKET, SO_MARK, &socket_mark, sizeof socket_mark) != 0) {
    return NameMissingCapabilities(ErrnoStatus("marking a socket (SO_MARK)", errno),
                                   {CAP_NET_ADMIN});
  }
  return absl::OkStatus();
}

}  // namespace nodemesh::agent
