// The agent's admin API, as meshctl shell reads it: HTTP/1.1 over the agent's root-only
// Unix socket, one request per connection, JSON answers.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace nodemesh::cli {

inline constexpr std::string_view kDefaultAdminSocket = "/run/nodemesh/agent.sock";

class AdminClient {
 public:
  explicit AdminClient(std::string socket_path) : socket_path_(std::move(socket_path)) {}
  virtual ~AdminClient() = default;

  // GET `path` (with its query); the JSON body of a 200, or an error that says what to do:
  // no agent on the socket, no permission, the agent's own message for a 4xx.
  virtual absl::StatusOr<nlohmann::json> Get(std::string_view path);
  // POST `path`; the body of a 200.
  virtual absl::StatusOr<std::string> Post(std::string_view path);

  const std::string& socket_path() const { return socket_path_; }

 private:
  struct Reply {
    int status = 0;
    std::string body;
  };
  absl::StatusOr<Reply> Request(std::string_view method, std::string_view path);

  std::string socket_path_;
};

}  // namespace nodemesh::cli
