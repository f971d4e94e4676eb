#include "common/http/listener.h"

#include <netdb.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <optional>

#include "common/base/errno_status.h"
#include "common/base/format.h"
#include "common/net/address.h"
#include "common/net/address_holder.h"

namespace nodemesh::http {

absl::StatusOr<TcpListener> ListenTcp(const std::string& address, int backlog) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos) {
    return absl::InvalidArgumentError(
        fmt::format("'{}' is not HOST:PORT (e.g. 0.0.0.0:9990 or :9990)", address));
  }
  std::string host = address.substr(0, colon);
  const std::string port = address.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  if (const int rc =
          getaddrinfo(host.empty() ? nullptr : host.c_str(), port.c_str(), &hints, &found);
      rc != 0) {
    return absl::InvalidArgumentError(fmt::format("'{}': {}", address, gai_strerror(rc)));
  }
  std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> owner(found, freeaddrinfo);
  UniqueFd fd(socket(found->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return ErrnoStatus("socket", errno);
  // SO_REUSEADDR lets a restarted server bind past its old connections in TIME_WAIT; it does
  // not let two listeners share the address (SO_REUSEPORT would).
  const int one = 1;
  setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(fd.get(), found->ai_addr, found->ai_addrlen) != 0) {
    const int error = errno;
    sockaddr_storage wanted{};
    std::memcpy(&wanted, found->ai_addr, found->ai_addrlen);
    const std::optional<Endpoint> endpoint = Endpoint::FromSockaddr(wanted);
    if (const std::optional<std::string> holder =
            error == EADDRINUSE && endpoint ? TcpListenerHolder(*endpoint) : std::nullopt) {
      return absl::AlreadyExistsError(
          fmt::format("cannot listen on {}: the address is in use by {}", address, *holder));
    }
    return ErrnoStatus(fmt::format("listening on {}", address), error);
  }
  if (listen(fd.get(), backlog) != 0) return ErrnoStatus("listen", errno);
  const std::optional<Endpoint> bound = Endpoint::Local(fd.get());
  return TcpListener{std::move(fd), bound ? bound->ToString() : address};
}

}  // namespace nodemesh::http
