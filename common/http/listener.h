// A TCP listening socket taken exclusively, for every HTTP server of the project: an address
// another process already listens on is an error naming that process, never shared.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "common/base/unique_fd.h"

namespace nodemesh::http {

struct TcpListener {
  UniqueFd fd;          // listening, close-on-exec
  std::string address;  // as bound, e.g. "127.0.0.1:39123" (useful with port 0)
};

// `address` is "127.0.0.1:9090", "[::]:9090" or ":9090" (all addresses).
absl::StatusOr<TcpListener> ListenTcp(const std::string& address, int backlog);

}  // namespace nodemesh::http
