// IP addresses and endpoints as the BPF maps hold them: 16 bytes, IPv4 v4-mapped.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace nodemesh {

struct IpAddress {
  std::array<uint8_t, 16> bytes{};

  static IpAddress V4(uint32_t host_order);
  static IpAddress Loopback4() { return V4(INADDR_LOOPBACK); }
  static IpAddress Loopback6();
  // "10.0.0.1", "::1"; nullopt when not an address.
  static std::optional<IpAddress> Parse(std::string_view text);

  bool is_v4() const;
  bool is_loopback() const;
  bool is_unspecified() const;  // 0.0.0.0 or ::, a listener's "every address"
  std::string ToString() const;
  bool operator==(const IpAddress&) const = default;
  template <typename H>
  friend H AbslHashValue(H h, const IpAddress& ip) {
    return H::combine(std::move(h), ip.bytes);
  }
};

struct Endpoint {
  IpAddress ip;
  uint16_t port = 0;

  static std::optional<Endpoint> FromSockaddr(const sockaddr_storage& storage);
  // "10.0.0.1:80", "[::1]:80", "localhost:80" (127.0.0.1) or ":80" (every address, ::), as
  // listen flags are written; nullopt for anything else (a host name, a port out of range).
  static std::optional<Endpoint> Parse(std::string_view host_port);
  // The socket's local (getsockname) or remote (getpeername) address.
  static std::optional<Endpoint> Local(int fd);
  static std::optional<Endpoint> Peer(int fd);
  // IPv4 as sockaddr_in, else sockaddr_in6.
  socklen_t ToSockaddr(sockaddr_storage* storage) const;
  int family() const { return ip.is_v4() ? AF_INET : AF_INET6; }
  std::string ToString() const;  // "10.0.0.1:80", "[::1]:80"
  bool operator==(const Endpoint&) const = default;
  template <typename H>
  friend H AbslHashValue(H h, const Endpoint& e) {
    return H::combine(std::move(h), e.ip, e.port);
  }
};

}  // namespace nodemesh
