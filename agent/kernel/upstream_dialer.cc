#include "agent/kernel/upstream_dialer.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cerrno>

#include "common/base/log.h"

namespace nodemesh::agent {

absl::Status UpstreamDialer::OpenConntrack() {
  absl::StatusOr<std::unique_ptr<Conntrack>> conntrack = Conntrack::Open();
  if (!conntrack.ok()) return conntrack.status();
  conntrack_ = *std::move(conntrack);
  return absl::OkStatus();
}

UniqueFd UpstreamDialer::MakeSocket(const Netns& pod_netns, int family, uint32_t mark) {
  UniqueFd socket_fd;
  {
    // Made inside the pod's netns: outbound, the server sees the pod's own address and the
    // pod's routing applies; inbound, the application is reached locally.
    ScopedNetns in_pod(pod_netns, home_);
    if (!in_pod.status().ok()) {
      Log(LogLevel::kError, "{}", in_pod.status().message());
      errno = EBADF;
      return UniqueFd();
    }
    socket_fd.Reset(socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  }
  if (socket_fd.valid()) setsockopt(socket_fd.get(), SOL_SOCKET, SO_MARK, &mark, sizeof mark);
  return socket_fd;
}

UpstreamLeg UpstreamDialer::DialOutbound(const Netns& pod_netns, const Endpoint& destination) {
  UpstreamLeg leg;
  leg.socket = MakeSocket(pod_netns, destination.family(), marks_.upstream);
  if (!leg.socket.valid()) {
    leg.error = errno;
    return leg;
  }
  Connect(destination, &leg);
  return leg;
}

UpstreamLeg UpstreamDialer::DialInbound(const Netns& pod_netns, const Endpoint& caller,
                                        const Endpoint& destination) {
  UpstreamLeg leg;
  // The socket takes the caller's address with a port of its own; should the kernel pick the
  // caller's very port, the application's SYN would match the accepted connection's 4-tuple
  // from the other side, so that socket is dropped for another.
  constexpr int kBindAttempts = 3;
  const int one = 1;
  for (int attempt = 0; attempt < kBindAttempts; ++attempt) {
    leg.socket = MakeSocket(pod_netns, destination.family(), marks_.transparent);
    if (!leg.socket.valid()) break;
    if (caller.ip.is_v4()) {
      setsockopt(leg.socket.get(), SOL_IP, IP_TRANSPARENT, &one, sizeof one);
    } else {
      setsockopt(leg.socket.get(), SOL_IPV6, IPV6_TRANSPARENT, &one, sizeof one);
    }
    sockaddr_storage address;
    const socklen_t length = Endpoint{caller.ip, 0}.ToSockaddr(&address);
    if (bind(leg.socket.get(), reinterpret_cast<sockaddr*>(&address), length) != 0) {
      leg.socket.Reset();
      break;
    }
    leg.bound_as_caller = Endpoint::Local(leg.socket.get());
    if (leg.bound_as_caller && leg.bound_as_caller->port != caller.port) break;
    leg.bound_as_caller.reset();
    leg.socket.Reset();
  }
  if (!leg.socket.valid()) {
    leg.error = errno;
    return leg;
  }
  if (absl::Status status = datapath_.AllowPassthrough(*leg.bound_as_caller, destination);
      !status.ok()) {
    Log(LogLevel::kWarning, "inbound {}: {}", destination.ToString(), status.message());
    leg.socket.Reset();
    leg.bound_as_caller.reset();
    leg.error = ENOSPC;
    return leg;
  }
  Connect(destination, &leg);
  return leg;
}

void UpstreamDialer::Connect(const Endpoint& destination, UpstreamLeg* leg) {
  const int one = 1;
  setsockopt(leg->socket.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  sockaddr_storage address;
  const socklen_t length = destination.ToSockaddr(&address);
  if (connect(leg->socket.get(), reinterpret_cast<sockaddr*>(&address), length) == 0 ||
      errno == EINPROGRESS) {
    return;
  }
  leg->error = errno;
  if (leg->bound_as_caller) datapath_.ForgetPassthrough(*leg->bound_as_caller, destination);
  leg->bound_as_caller.reset();
  leg->socket.Reset();
}

std::optional<Endpoint> UpstreamDialer::TranslatedDestination(int upstream_fd,
                                                              const Endpoint& dialled) {
  if (!conntrack_) {
    service_lookups_unavailable_.Add();
    return std::nullopt;
  }
  const std::optional<Endpoint> local = Endpoint::Local(upstream_fd);
  if (!local) return std::nullopt;
  return conntrack_->TranslatedDestination(*local, dialled);
}

}  // namespace nodemesh::agent
