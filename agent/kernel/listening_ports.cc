#include "agent/kernel/listening_ports.h"

#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

namespace nodemesh::agent {

absl::StatusOr<ListeningPorts> ListeningPorts::Open(const Netns& target, const Netns& home) {
  ScopedNetns in_target(target, home);
  if (!in_target.status().ok()) return in_target.status();
  UniqueFd fd(socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG));
  if (!fd.valid()) return ErrnoStatus("sock_diag socket", errno);
  return ListeningPorts(std::move(fd));
}

absl::StatusOr<std::vector<Endpoint>> ListeningPorts::List() {
  std::vector<Endpoint> endpoints;
  for (int family : {AF_INET, AF_INET6}) {
    if (absl::Status status = Query(family, &endpoints); !status.ok()) return status;
  }
  return endpoints;
}

absl::Status ListeningPorts::Query(int family, std::vector<Endpoint>* out) {
  struct {
    nlmsghdr header;
    inet_diag_req_v2 request;
  } message{};
  message.header.nlmsg_len = sizeof message;
  message.header.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  message.header.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  message.request.sdiag_family = static_cast<uint8_t>(family);
  message.request.sdiag_protocol = IPPROTO_TCP;
  message.request.idiag_states = 1u << TCP_LISTEN;
  if (send(fd_.get(), &message, sizeof message, 0) < 0) return ErrnoStatus("sock_diag send", errno);

  alignas(nlmsghdr) char buffer[32768];
  for (;;) {
    const ssize_t n = recv(fd_.get(), buffer, sizeof buffer, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("sock_diag recv", errno);
    }
    int remaining = static_cast<int>(n);
    // NLMSG_OK compares the header's unsigned length with the int count it is given (an int
    // so that NLMSG_NEXT's subtraction cannot wrap): the comparison is the macro's own.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wsign-compare"
    for (auto* header = reinterpret_cast<nlmsghdr*>(buffer); NLMSG_OK(header, remaining);
         header = NLMSG_NEXT(header, remaining)) {
#pragma GCC diagnostic pop
      if (header->nlmsg_type == NLMSG_DONE) return absl::OkStatus();
      if (header->nlmsg_type == NLMSG_ERROR) {
        const auto* error = static_cast<const nlmsgerr*>(NLMSG_DATA(header));
        return ErrnoStatus("sock_diag", -error->error);
      }
      const auto* diag = static_cast<const inet_diag_msg*>(NLMSG_DATA(header));
      sockaddr_storage storage{};
      if (diag->idiag_family == AF_INET) {
        auto* in = reinterpret_cast<sockaddr_in*>(&storage);
        in->sin_family = AF_INET;
        std::memcpy(&in->sin_addr, diag->id.idiag_src, 4);
        in->sin_port = diag->id.idiag_sport;
      } else {
        auto* in6 = reinterpret_cast<sockaddr_in6*>(&storage);
        in6->sin6_family = AF_INET6;
        std::memcpy(&in6->sin6_addr, diag->id.idiag_src, 16);
        in6->sin6_port = diag->id.idiag_sport;
      }
      if (auto endpoint = Endpoint::FromSockaddr(storage)) out->push_back(*endpoint);
    }
  }
}

}  // namespace nodemesh::agent
