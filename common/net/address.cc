#include "common/net/address.h"

#include <arpa/inet.h>

#include <charconv>
#include <cstring>

#include "common/base/format.h"

namespace nodemesh {
namespace {

constexpr std::array<uint8_t, 12> kV4MappedPrefix = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

}  // namespace

IpAddress IpAddress::V4(uint32_t host_order) {
  IpAddress ip;
  std::memcpy(ip.bytes.data(), kV4MappedPrefix.data(), kV4MappedPrefix.size());
  const uint32_t network_order = htonl(host_order);
  std::memcpy(&ip.bytes[12], &network_order, 4);
  return ip;
}

IpAddress IpAddress::Loopback6() {
  IpAddress ip;
  ip.bytes[15] = 1;
  return ip;
}

std::optional<IpAddress> IpAddress::Parse(std::string_view text) {
  // inet_pton stops at a NUL: "10.0.0.1\0junk" (possible in JSON as \u0000) is not an
  // address, whatever its prefix.
  if (text.find('\0') != std::string_view::npos) return std::nullopt;
  const std::string nul_terminated(text);
  in_addr v4;
  if (inet_pton(AF_INET, nul_terminated.c_str(), &v4) == 1) return V4(ntohl(v4.s_addr));
  IpAddress ip;
  if (inet_pton(AF_INET6, nul_terminated.c_str(), ip.bytes.data()) == 1) return ip;
  return std::nullopt;
}

bool IpAddress::is_v4() const {
  return std::memcmp(bytes.data(), kV4MappedPrefix.data(), kV4MappedPrefix.size()) == 0;
}

bool IpAddress::is_unspecified() const { return *this == IpAddress{} || *this == V4(0); }

bool IpAddress::is_loopback() const { return is_v4() ? bytes[12] == 127 : *this == Loopback6(); }

std::string IpAddress::ToString() const {
  char text[INET6_ADDRSTRLEN] = {};
  if (is_v4()) {
    inet_ntop(AF_INET, &bytes[12], text, sizeof text);
  } else {
    inet_ntop(AF_INET6, bytes.data(), text, sizeof text);
  }
  return text;
}

std::optional<Endpoint> Endpoint::Parse(std::string_view host_port) {
  const size_t colon = host_port.rfind(':');
  if (colon == std::string_view::npos) return std::nullopt;
  std::string_view host = host_port.substr(0, colon);
  const std::string_view port_text = host_port.substr(colon + 1);
  uint32_t port = 0;
  const auto [end, error] =
      std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (error != std::errc() || end != port_text.data() + port_text.size() || port_text.empty() ||
      port > 0xffff) {
    return std::nullopt;
  }
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  Endpoint endpoint;
  endpoint.port = static_cast<uint16_t>(port);
  if (host == "localhost") {
    endpoint.ip = IpAddress::Loopback4();
  } else if (!host.empty()) {
    const std::optional<IpAddress> ip = IpAddress::Parse(host);
    if (!ip) return std::nullopt;
    endpoint.ip = *ip;
  }
  return endpoint;
}

std::optional<Endpoint> Endpoint::FromSockaddr(const sockaddr_storage& storage) {
  Endpoint endpoint;
  if (storage.ss_family == AF_INET) {
    const auto& in = reinterpret_cast<const sockaddr_in&>(storage);
    endpoint.ip = IpAddress::V4(ntohl(in.sin_addr.s_addr));
    endpoint.port = ntohs(in.sin_port);
    return endpoint;
  }
  if (storage.ss_family == AF_INET6) {
    const auto& in6 = reinterpret_cast<const sockaddr_in6&>(storage);
    std::memcpy(endpoint.ip.bytes.data(), &in6.sin6_addr, 16);
    endpoint.port = ntohs(in6.sin6_port);
    return endpoint;
  }
  return std::nullopt;
}

std::optional<Endpoint> Endpoint::Local(int fd) {
  sockaddr_storage storage{};
  socklen_t length = sizeof storage;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&storage), &length) != 0) return std::nullopt;
  return FromSockaddr(storage);
}

std::optional<Endpoint> Endpoint::Peer(int fd) {
  sockaddr_storage storage{};
  socklen_t length = sizeof storage;
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&storage), &length) != 0) return std::nullopt;
  return FromSockaddr(storage);
}

socklen_t Endpoint::ToSockaddr(sockaddr_storage* storage) const {
  *storage = {};
  if (ip.is_v4()) {
    auto* in = reinterpret_cast<sockaddr_in*>(storage);
    in->sin_family = AF_INET;
    std::memcpy(&in->sin_addr, &ip.bytes[12], 4);
    in->sin_port = htons(port);
    return sizeof(sockaddr_in);
  }
  auto* in6 = reinterpret_cast<sockaddr_in6*>(storage);
  in6->sin6_family = AF_INET6;
  std::memcpy(&in6->sin6_addr, ip.bytes.data(), 16);
  in6->sin6_port = htons(port);
  return sizeof(sockaddr_in6);
}

std::string Endpoint::ToString() const {
  return ip.is_v4() ? fmt::format("{}:{}", ip.ToString(), port)
                    : fmt::format("[{}]:{}", ip.ToString(), port);
}

}  // namespace nodemesh
