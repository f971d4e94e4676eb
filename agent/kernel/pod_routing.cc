#include "agent/kernel/pod_routing.h"

#include <fcntl.h>
#include <linux/fib_rules.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/base/format.h"

namespace nodemesh::agent {
namespace {

// A netlink request with room for a few attributes.
struct Request {
  nlmsghdr header;
  union {
    fib_rule_hdr rule;
    rtmsg route;
  };
  char attributes[128];

  void AddAttribute(uint16_t type, const void* data, size_t size) {
    auto* attribute =
        reinterpret_cast<rtattr*>(reinterpret_cast<char*>(this) + NLMSG_ALIGN(header.nlmsg_len));
    attribute->rta_type = type;
    attribute->rta_len = static_cast<uint16_t>(RTA_LENGTH(size));
    std::memcpy(RTA_DATA(attribute), data, size);
    header.nlmsg_len = NLMSG_ALIGN(header.nlmsg_len) + RTA_ALIGN(attribute->rta_len);
  }
  template <typename T>
  void AddAttribute(uint16_t type, const T& value) {
    AddAttribute(type, &value, sizeof value);
  }
};

// Sends one request and waits for its acknowledgement; "already there" is success.
absl::Status Transact(int fd, Request& request, std::string_view what) {
  request.header.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
  if (send(fd, &request, request.header.nlmsg_len, 0) < 0) return ErrnoStatus(what, errno);
  alignas(nlmsghdr) char reply[4096];
  const ssize_t n = recv(fd, reply, sizeof reply, 0);
  if (n < 0) return ErrnoStatus(what, errno);
  const auto* header = reinterpret_cast<const nlmsghdr*>(reply);
  if (header->nlmsg_type == NLMSG_ERROR) {
    const int error = -static_cast<const nlmsgerr*>(NLMSG_DATA(header))->error;
    if (error != 0 && error != EEXIST) return ErrnoStatus(what, error);
  }
  return absl::OkStatus();
}

absl::Status AddRule(int fd, uint8_t family, uint32_t mark, uint32_t table) {
  Request request{};
  request.header.nlmsg_len = NLMSG_LENGTH(sizeof(fib_rule_hdr));
  request.header.nlmsg_type = RTM_NEWRULE;
  request.rule.family = family;
  request.rule.action = FR_ACT_TO_TBL;
  request.rule.table = RT_TABLE_UNSPEC;
  request.AddAttribute(FRA_FWMARK, mark);
  request.AddAttribute(FRA_TABLE, table);
  request.AddAttribute(FRA_PRIORITY, uint32_t{100});
  return Transact(fd, request,
                  family == AF_INET ? "adding the IPv4 mark rule" : "adding the IPv6 mark rule");
}

absl::Status AddLocalRoute(int fd, uint8_t family, uint32_t table) {
  Request request{};
  request.header.nlmsg_len = NLMSG_LENGTH(sizeof(rtmsg));
  request.header.nlmsg_type = RTM_NEWROUTE;
  request.route.rtm_family = family;
  request.route.rtm_dst_len = 0;  // every destination
  request.route.rtm_table = RT_TABLE_UNSPEC;
  request.route.rtm_protocol = RTPROT_STATIC;
  request.route.rtm_scope = RT_SCOPE_HOST;
  request.route.rtm_type = RTN_LOCAL;
  request.AddAttribute(RTA_TABLE, table);
  request.AddAttribute(RTA_OIF, static_cast<uint32_t>(if_nametoindex("lo")));
  return Transact(
      fd, request,
      family == AF_INET ? "adding the IPv4 local route" : "adding the IPv6 local route");
}

absl::Status WriteSysctl(const std::string& path, std::string_view value) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd.valid() && errno == EROFS) {
    return absl::FailedPreconditionError(fmt::format(
        "{} is read-only, as a container's /proc/sys is: mount the node's /proc/sys/net "
        "writable at {} and pass --proc-root",
        path, path.substr(0, path.find("/sys/net") + 8)));
  }
  if (!fd.valid()) return ErrnoStatus(path, errno);
  if (::write(fd.get(), value.data(), value.size()) < 0) return ErrnoStatus(path, errno);
  return absl::OkStatus();
}

}  // namespace

absl::Status PrepareTransparentInbound(const Netns& pod, const Netns& home, uint32_t mark,
                                       uint32_t table, const std::string& proc_root) {
  ScopedNetns in_pod(pod, home);
  if (!in_pod.status().ok()) return in_pod.status();
  if (absl::Status status = WriteSysctl(proc_root + "/sys/net/ipv4/tcp_fwmark_accept", "1");
      !status.ok()) {
    return status;
  }
  UniqueFd fd(socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
  if (!fd.valid()) return ErrnoStatus("rtnetlink socket", errno);
  // A pod without IPv6 has no IPv6 routing to prepare.
  const bool ipv6 = ::access((proc_root + "/sys/net/ipv6").c_str(), F_OK) == 0;
  for (uint8_t family : {uint8_t{AF_INET}, uint8_t{AF_INET6}}) {
    if (family == AF_INET6 && !ipv6) continue;
    if (absl::Status status = AddRule(fd.get(), family, mark, table); !status.ok()) return status;
    if (absl::Status status = AddLocalRoute(fd.get(), family, table); !status.ok()) return status;
  }
  return absl::OkStatus();
}

}  // namespace nodemesh::agent
