// Which TCP ports listen in a network namespace, from the kernel's sock_diag interface.
// The netlink socket is made inside the namespace once and keeps answering for it, so a
// refresh needs no namespace switch.
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "agent/kernel/system.h"
#include "common/net/address.h"

namespace nodemesh::agent {

class ListeningPorts {
 public:
  static absl::StatusOr<ListeningPorts> Open(const Netns& target, const Netns& home);
  // The local addresses of every listening TCP socket, IPv4 and IPv6.
  absl::StatusOr<std::vector<Endpoint>> List();

 private:
  explicit ListeningPorts(UniqueFd fd) : fd_(std::move(fd)) {}
  absl::Status Query(int family, std::vector<Endpoint>* out);
  UniqueFd fd_;
};

}  // namespace nodemesh::agent
