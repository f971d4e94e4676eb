#include "common/tls/replicas.h"

#include <fmt/format.h>
#include <netdb.h>

#include <algorithm>
#include <cstring>
#include <optional>

#include "common/net/address.h"

namespace nodemesh {
namespace {

struct HostPort {
  std::string host;  // without brackets
  std::string port;
};

std::optional<HostPort> SplitHostPort(std::string_view address) {
  const size_t colon = address.rfind(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 == address.size()) {
    return std::nullopt;
  }
  std::string_view host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  const std::string_view port = address.substr(colon + 1);
  if (!std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return std::nullopt;
  }
  return HostPort{std::string(host), std::string(port)};
}

// The comma-separated entries, without blanks around them; empty ones skipped.
std::vector<std::string_view> Entries(std::string_view addresses) {
  std::vector<std::string_view> entries;
  while (!addresses.empty()) {
    const size_t comma = std::min(addresses.find(','), addresses.size());
    std::string_view entry = addresses.substr(0, comma);
    addresses.remove_prefix(std::min(comma + 1, addresses.size()));
    while (!entry.empty() && entry.front() == ' ') entry.remove_prefix(1);
    while (!entry.empty() && entry.back() == ' ') entry.remove_suffix(1);
    if (!entry.empty()) entries.push_back(entry);
  }
  return entries;
}

// The addresses of one family that `host` resolves to, as IpAddress.
std::vector<IpAddress> Resolve(const std::string& host, int family) {
  addrinfo hints{};
  hints.ai_family = family;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (getaddrinfo(host.c_str(), nullptr, &hints, &found) != 0) return {};
  std::vector<IpAddress> ips;
  for (const addrinfo* entry = found; entry != nullptr; entry = entry->ai_next) {
    sockaddr_storage storage{};
    std::memcpy(&storage, entry->ai_addr, std::min<size_t>(entry->ai_addrlen, sizeof storage));
    if (const std::optional<Endpoint> endpoint = Endpoint::FromSockaddr(storage)) {
      ips.push_back(endpoint->ip);
    }
  }
  freeaddrinfo(found);
  return ips;
}

}  // namespace

absl::Status CheckReplicaAddresses(std::string_view addresses, std::string_view flag,
                                   const TlsFiles& files, std::string_view flag_prefix) {
  const std::vector<std::string_view> entries = Entries(addresses);
  if (entries.empty()) {
    return absl::InvalidArgumentError(
        fmt::format("{} is empty: give HOST:PORT, or several separated by commas", flag));
  }
  for (const std::string_view entry : entries) {
    if (!SplitHostPort(entry)) {
      return absl::InvalidArgumentError(
          fmt::format("{}: '{}' is not HOST:PORT: give HOST:PORT, or several separated by commas",
                      flag, entry));
    }
    // As given, so that plaintext off loopback is refused now rather than at each dial.
    if (absl::StatusOr<AggregatorDialer> dialer =
            AggregatorDialer::Make(std::string(entry), files, flag_prefix);
        !dialer.ok()) {
      return dialer.status();
    }
  }
  return absl::OkStatus();
}

std::vector<ReplicaAddress> ResolveReplicas(std::string_view addresses) {
  std::vector<ReplicaAddress> replicas;
  for (const std::string_view entry : Entries(addresses)) {
    const std::optional<HostPort> split = SplitHostPort(entry);
    if (!split) continue;
    // An address, or localhost (one host whatever its families): as given.
    if (IpAddress::Parse(split->host) || split->host == "localhost") {
      replicas.push_back({.address = std::string(entry), .server_name = ""});
      continue;
    }
    std::vector<IpAddress> ips = Resolve(split->host, AF_INET);
    if (ips.empty()) ips = Resolve(split->host, AF_INET6);
    for (const IpAddress& ip : ips) {
      const std::string host = ip.is_v4() ? ip.ToString() : fmt::format("[{}]", ip.ToString());
      replicas.push_back(
          {.address = fmt::format("{}:{}", host, split->port), .server_name = split->host});
    }
  }
  std::sort(replicas.begin(), replicas.end());
  replicas.erase(std::unique(replicas.begin(), replicas.end()), replicas.end());
  return replicas;
}

absl::StatusOr<AggregatorDialer> DialerFor(const ReplicaAddress& replica, TlsFiles files,
                                           std::string_view flag_prefix) {
  if (files.server_name.empty()) files.server_name = replica.server_name;
  return AggregatorDialer::Make(replica.address, files, flag_prefix);
}

}  // namespace nodemesh
