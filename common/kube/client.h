// A client of the Kubernetes API server, on libcurl: HTTPS verified against the cluster's
// CA, a bearer token re-read from its file when the file changes (the kubelet rotates
// projected service-account tokens), or a client certificate from a kubeconfig.
//
//   absl::StatusOr<kube::Config> config = kube::InClusterConfig();
//   kube::Client client(*config);
//   absl::StatusOr<nlohmann::json> pods = client.Get("/api/v1/pods?fieldSelector=...");
//
// Errors carry the API server's own words: a 403 becomes PERMISSION_DENIED with the
// Status object's message ("pods is forbidden: User ... cannot list resource ..."), a 401
// UNAUTHENTICATED, a 404 NOT_FOUND, a 410 Gone FAILED_PRECONDITION with kGoneReason in the
// message, an unreachable server UNAVAILABLE naming the address, a TLS failure UNAVAILABLE
// saying which CA was used.
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
#include "nlohmann/json.hpp"

namespace nodemesh::kube {

inline constexpr std::string_view kServiceAccountDir =
    "/var/run/secrets/kubernetes.io/serviceaccount";
// In the message of the status a 410 Gone maps to (so callers can tell it from others).
inline constexpr std::string_view kGoneReason = "resourceVersion too old (410 Gone)";

// Where the API server is and how to prove who we are. Exactly one of the credential
// forms is used: token_file (re-read when it changes), token, or client certificate.
struct Config {
  std::string server;  // https://host:port
  // The CA that signed the server's certificate: a PEM file or PEM bytes. Both empty: the
  // system's CAs.
  std::string ca_file;
  std::string ca_data;
  bool insecure_skip_tls_verify = false;  // kubeconfig's option; said in a warning per request
  std::string token_file;
  std::string token;
  std::string client_certificate_file, client_certificate_data;  // PEM
  std::string client_key_file, client_key_data;                  // PEM
  // The context's namespace (kubeconfig), or the pod's own (in-cluster); "default" if none.
  std::string namespace_name = "default";
  // Where the configuration came from, for messages: "in-cluster", "kubeconfig ~/.kube/config
  // (context kind-dev)".
  std::string source;
};

// client-go's in-cluster configuration: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT,
// the CA and token files of `service_account_dir`, the namespace from its `namespace`
// file. Fails saying what is missing (not in a pod, no token mounted).
absl::StatusOr<Config> InClusterConfig(std::string_view service_account_dir = kServiceAccountDir);

// A kubeconfig like kubectl reads it: `path` if given, else each file of $KUBECONFIG
// (colon-separated, first one naming a thing wins), else ~/.kube/config; the context
// `context_name` if given, else current-context. Supports server, certificate-authority
// (-data), insecure-skip-tls-verify, token, tokenFile, client-certificate(-data),
// client-key(-data), and the context's namespace; relative file paths are relative to
// the kubeconfig's directory. Exec and auth-provider plugins are refused with a message
// saying so.
absl::StatusOr<Config> LoadKubeconfig(std::string_view path = {},
                                      std::string_view context_name = {});

struct Response {
  long status = 0;  // HTTP status
  std::string body;
};

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

  // GET, with a status >= 300 mapped to an error as above.
  absl::StatusOr<nlohmann::json> Get(std::string_view path);
  // PATCH with a JSON merge patch (application/merge-patch+json); returns the new object.
  absl::StatusOr<nlohmann::json> MergePatch(std::string_view path, const nlohmann::json& patch);

  // A streaming GET (a watch): calls `on_line` with every newline-terminated line of the
  // body as it arrives. Returns OK when the server ends the stream, or when `on_line`
  // returns false; DEADLINE_EXCEEDED when no byte at all came for `stall_timeout`;
  // CANCELLED when `stop` became true (checked at least every 100 ms); an HTTP status
  // >= 300 (its body read whole) as an error mapped as above.
  absl::Status Stream(std::string_view path, std::chrono::milliseconds stall_timeout,
                      const std::function<bool(std::string_view line)>& on_line,
                      const std::atomic<bool>& stop);

 private:
  // The Authorization header's value ("" with no token), reading the token file again if it
  // changed; an error only when no token could ever be read.
  absl::StatusOr<std::string> Bearer();
  // Easy handles (CURL*) kept between requests, so that their connections and TLS sessions
  // are reused; one request uses a handle at a time.
  void* TakeHandle();
  void ReturnHandle(void* handle);

  const Config config_;
  ClientStats stats_;
  std::mutex token_mutex_;
  std::string token_;
  int64_t token_mtime_ns_ = -1;
  uint64_t token_size_ = 0;
  uint64_t token_inode_ = 0;
  std::mutex handles_mutex_;
  std::vector<void*> idle_handles_;
};

// The error a non-2xx response means (see the top of this file); `what` says what was
// asked ("list pods").
absl::Status StatusFromResponse(const Response& response, std::string_view what);

}  // namespace nodemesh::kube
