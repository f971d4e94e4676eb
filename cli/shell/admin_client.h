// The agent's admin API, as meshctl shell reads it: JSON answers to GETs (and a POST to set
// the log level). Two ways to reach it: the agent's root-only Unix socket on its node, or
// the aggregator, which relays GETs to the agent over the stream the agent holds open.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "cli/api.h"

namespace nodemesh::cli {

inline constexpr std::string_view kDefaultAdminSocket = "/run/nodemesh/agent.sock";

class AdminClient {
 public:
  virtual ~AdminClient() = default;

  // GET `path` (with its query); the JSON body of a 200, or an error that says what to do:
  // no agent, no permission, the agent's own message for a 4xx.
  absl::StatusOr<nlohmann::json> Get(std::string_view path);
  // POST `path`; the body of a 200.
  absl::StatusOr<std::string> Post(std::string_view path);

 protected:
  struct Reply {
    int status = 0;
    std::string body;
  };
  virtual absl::StatusOr<Reply> Request(std::string_view method, std::string_view path) = 0;
};

// HTTP/1.1 over the agent's Unix socket, one request per connection.
class SocketAdminClient : public AdminClient {
 public:
  explicit SocketAdminClient(std::string socket_path) : socket_path_(std::move(socket_path)) {}

 protected:
  absl::StatusOr<Reply> Request(std::string_view method, std::string_view path) override;

 private:
  std::string socket_path_;
};

// Through the aggregator (Api.NodeAdmin) to the agent of `node`: GETs only; the agent's
// settings are changed on its node.
class RelayedAdminClient : public AdminClient {
 public:
  RelayedAdminClient(AggregatorApi& aggregator, std::string node)
      : aggregator_(aggregator), node_(std::move(node)) {}

 protected:
  absl::StatusOr<Reply> Request(std::string_view method, std::string_view path) override;

 private:
  AggregatorApi& aggregator_;
  std::string node_;
};

}  // namespace nodemesh::cli
