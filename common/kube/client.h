// A client of the Kubernetes API server: HTTPS verified against the cluster's
// CA, with the credentials of credentials.h: a bearer token re-read from its file when the
// file changes (the kubelet rotates projected service-account tokens), a client certificate,
// or what the kubeconfig's exec plugin hands out. A request answered 401 Unauthorized makes
// the credentials renew themselves (the plugin runs again) and, when that gave new ones, is
// sent once more: client-go returns that first 401, which would fail one call of every
// long-lived client per expiry.
//
//   absl::StatusOr<kube::Config> config = kube::InClusterConfig();
//   kube::Client client(*config);
//   absl::StatusOr<nlohmann::json> pods = client.Get("/api/v1/pods?fieldSelector=...");
//
// Where the configuration comes from is config.h; what the answers mean, errors.h. Errors
// carry the API server's own words (errors.h); an unreachable server is UNAVAILABLE naming the
// address, a TLS failure UNAVAILABLE saying which CA was used. Requests are client.cc, the
// streaming watch watch.cc, and HTTP on Boost.Beast, with proxies and TLS, transport.h.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/kube/config.h"
#include "common/kube/credentials.h"
#include "common/kube/errors.h"
#include "common/kube/exec_credential.h"
#include "nlohmann/json.hpp"

namespace nodemesh::kube {

class Endpoint;  // transport.h

// Counters of one client, for the agent's /stats and for tests.
struct ClientStats {
  std::atomic<uint64_t> requests{0};
  std::atomic<uint64_t> failures{0};       // transport errors and HTTP status >= 400
  std::atomic<uint64_t> token_reloads{0};  // the token file changed and was read again
  std::atomic<uint64_t> exec_runs{0};      // the exec plugin ran
};

class Client {
 public:
  // `environment` matters only for an exec plugin: a daemon's default is never interactive.
  explicit Client(Config config, ExecEnvironment environment = {});
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  const Config& config() const { return config_; }
  const ClientStats& stats() const { return stats_; }

  // One request. `path` starts with "/" and carries its query string. Transport failures
  // (connect, TLS, timeout) are errors; any HTTP status is a Response.
  absl::StatusOr<Response> Request(std::string_view method, std::string_view path,
                                   std::string_view body = {},
                                   std::string_view content_type = "application/json",
                                   std::chrono::milliseconds timeout = std::chrono::seconds(30));

  // GET, with a status >= 300 mapped to an error as StatusFromResponse does.
  absl::StatusOr<nlohmann::json> Get(std::string_view path);
  // PATCH with a JSON merge patch (application/merge-patch+json); returns the new object.
  absl::StatusOr<nlohmann::json> MergePatch(std::string_view path, const nlohmann::json& patch);

  // A streaming GET (a watch): calls `on_line` with every newline-terminated line of the
  // body as it arrives. Returns OK when the server ends the stream, or when `on_line`
  // returns false; DEADLINE_EXCEEDED when no byte at all came for `stall_timeout`;
  // CANCELLED when `stop` became true (checked at least every 100 ms); an HTTP status
  // >= 300 (its body read whole) as an error mapped as StatusFromResponse does.
  absl::Status Stream(std::string_view path, std::chrono::milliseconds stall_timeout,
                      const std::function<bool(std::string_view line)>& on_line,
                      const std::atomic<bool>& stop);

 private:
  // Counts a request described as `what` (DescribeRequest) and gives the credentials it
  // presents; an error, counted as a failure, when there are none to be had.
  absl::StatusOr<RequestCredentials> StartRequest(std::string_view what);
  // After a 401 to a request made with `used`: the credentials to send it again with, or
  // nullopt when there are none newer. An error when renewing them failed.
  absl::StatusOr<std::optional<RequestCredentials>> RenewAfterUnauthorized(
      const RequestCredentials& used, std::string_view what);
  absl::StatusOr<Response> Perform(std::string_view method, std::string_view path,
                                   std::string_view body, std::string_view content_type,
                                   std::chrono::milliseconds timeout,
                                   const RequestCredentials& credentials, const std::string& what);
  absl::Status StreamOnce(std::string_view path, std::chrono::milliseconds stall_timeout,
                          const std::function<bool(std::string_view line)>& on_line,
                          const std::atomic<bool>& stop, const RequestCredentials& credentials,
                          const std::string& what);

  const Config config_;
  const std::unique_ptr<const Endpoint> endpoint_;
  ClientStats stats_;
  Credentials credentials_;
};

}  // namespace nodemesh::kube
