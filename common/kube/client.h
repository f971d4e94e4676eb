// A client of the Kubernetes API server, on libcurl: HTTPS verified against the cluster's
// CA, a bearer token re-read from its file when the file changes (the kubelet rotates
// projected service-account tokens), or a client certificate from a kubeconfig.
//
//   absl::StatusOr<kube::Config> config = kube::InClusterConfig();
//   kube::Client client(*config);
//   absl::StatusOr<nlohmann::json> pods = client.Get("/api/v1/pods?fieldSelector=...");
//
// Where the configuration comes from is config.h; what the answers mean, errors.h. Errors
// carry the API server's own words (errors.h); an unreachable server is UNAVAILABLE naming the
// address, a TLS failure UNAVAILABLE saying which CA was used. Requests are client.cc, the
// streaming watch watch.cc, and what both share of libcurl libcurl.h.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/kube/config.h"
#include "common/kube/errors.h"
#include "nlohmann/json.hpp"

namespace nodemesh::kube {

class Endpoint;  // libcurl.h

// Counters of one client, for the agent's /stats and for tests.
struct ClientStats {
  std::atomic<uint64_t> requests{0};
  std::atomic<uint64_t> failures{0};       // transport errors and HTTP status >= 400
  std::atomic<uint64_t> token_reloads{0};  // the token file changed and was read again
};

class Client {
 public:
  explicit Client(Config config);
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
  // Counts a request described as `what` (DescribeRequest) and gives its Authorization
  // header's value ("" with no token); an error, counted as a failure, when no token could
  // be read.
  absl::StatusOr<std::string> StartRequest(std::string_view what);
  // Easy handles (CURL*) kept between requests, so that their connections and TLS sessions
  // are reused; one request uses a handle at a time.
  void* TakeHandle();
  void ReturnHandle(void* handle);

  const Config config_;
  const std::unique_ptr<const Endpoint> endpoint_;
  ClientStats stats_;
  BearerToken bearer_{config_, stats_.token_reloads};
  std::mutex handles_mutex_;
  std::vector<void*> idle_handles_;
};

}  // namespace nodemesh::kube
