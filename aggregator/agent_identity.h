// Agents known by their ServiceAccount. An agent presents the projected ServiceAccount token
// the kubelet mounts for it (gRPC metadata `authorization: Bearer TOKEN`, on every stream it
// opens); the aggregator asks the API server about it (a TokenReview for the aggregator's own
// audience), requires the agents' ServiceAccount, and binds the stream to the node the
// token's pod runs on: the review's authentication.kubernetes.io/node-name extra where the
// cluster gives it (Kubernetes 1.30+), otherwise the spec.nodeName of the pod the
// authentication.kubernetes.io/pod-name extra names, which must still be the pod of the
// pod-uid extra (a pod made again under the same name is another pod).
//
// A reviewed token is cached, by its SHA-256, until 30 s before its `exp` (10 s if it has
// none that can be read), for at most max_cached tokens, least recently used out first;
// refusals are not cached. A binding holds for the stream's life, as a certificate is checked
// only at the handshake: a rotated token or an API server outage never ends an admitted
// stream; the next stream presents the current token.
//
// Threads: Review and MayReportFor are called from the gRPC handler threads of agent streams,
// any number at once. The cache locks for itself; a review runs on the caller's thread
// outside that lock.
#pragma once

#include <chrono>
#include <cstdint>
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "aggregator/authorization.h"
#include "aggregator/clock.h"
#include "nlohmann/json.hpp"

namespace grpc {
class ServerContext;
}

namespace nodemesh::kube {
class Client;
}

namespace nodemesh::aggregator {

inline constexpr std::string_view kDefaultAgentTokenAudience = "nodemesh.io/aggregator";

struct AgentTokenOptions {
  // The agents' ServiceAccount, in the release namespace: only its tokens are agents'.
  std::string service_account_namespace;
  std::string service_account_name;
  // The audience the agents' tokens are issued for, and the review asks for.
  std::string audience = std::string(kDefaultAgentTokenAudience);
  // A review (the TokenReview and the pod's lookup together) not answered within this is
  // UNAVAILABLE: the agent retries, and no stream waits on an API server that hangs.
  std::chrono::milliseconds review_timeout{std::chrono::seconds(5)};
  // Tokens whose reviews are kept.
  size_t max_cached = 10'000;
};

// Reads "NAMESPACE/NAME" (the --agent-service-account flag) into `options`; an
// INVALID_ARGUMENT saying what the flag takes otherwise.
absl::Status ParseAgentServiceAccount(std::string_view text, AgentTokenOptions* options);

// What a reviewed token proves: the pod it belongs to and the node that pod runs on.
struct AgentBinding {
  std::string node;
  std::string pod;  // NAMESPACE/NAME
};

// The token of a call's `authorization: Bearer TOKEN` metadata; "" if it has none.
std::string BearerTokenOf(const grpc::ServerContext& context);

// The `exp` claim of a JWT (Unix seconds), read without checking the signature: it only
// shortens how long a review is cached, the API server's review decides. nullopt if the token
// is not a JWT with a numeric `exp`.
std::optional<int64_t> TokenExpiry(std::string_view token);

class AgentTokenReviewer {
 public:
  // `client` outlives the reviewer.
  AgentTokenReviewer(kube::Client& client, AgentTokenOptions options, Clock clock);
  AgentTokenReviewer(const AgentTokenReviewer&) = delete;
  AgentTokenReviewer& operator=(const AgentTokenReviewer&) = delete;

  // The binding of `token`, from the cache or reviewed now. UNAUTHENTICATED when the API
  // server does not accept the token for the audience (expired, revoked, its pod gone);
  // PERMISSION_DENIED when it is another ServiceAccount's or not bound to a pod; UNAVAILABLE
  // when the API server cannot tell within review_timeout (down, slow, or refusing the
  // aggregator's own requests). Each message says what is wrong and what to do.
  absl::StatusOr<AgentBinding> Review(std::string_view token);

  const AgentTokenOptions& options() const { return options_; }
  // Reviews asked of the API server (not answered from the cache).
  uint64_t reviews() const;

 private:
  struct CacheEntry {
    std::string key;  // SHA-256 of the token
    AgentBinding binding;
    int64_t expires = 0;  // Unix seconds
  };

  // Who an accepted TokenReview says the token's holder is.
  struct ReviewedUser {
    std::string username;
    std::string pod_name, pod_uid;  // the pod-name and pod-uid extras
    std::string node;               // the node-name extra; "" before Kubernetes 1.30
  };

  absl::StatusOr<AgentBinding> ReviewNow(std::string_view token);
  // A request to the API server within `timeout`, its JSON answer; NOT_FOUND for a 404, and
  // UNAVAILABLE saying why for anything else that is not an answer.
  absl::StatusOr<nlohmann::json> Ask(std::string_view method, std::string_view path,
                                     std::string_view body, std::chrono::milliseconds timeout);
  // The agent a TokenReview accepted, or why the token is not one.
  absl::StatusOr<ReviewedUser> UserOf(const nlohmann::json& review) const;
  // The node of the pod a token without the node-name extra names.
  absl::StatusOr<std::string> NodeOfPod(const std::string& pod_name, const std::string& pod_uid,
                                        std::chrono::steady_clock::time_point deadline);
  std::optional<AgentBinding> Cached(const std::string& key);
  void Remember(std::string key, const AgentBinding& binding, int64_t expires);

  kube::Client& client_;
  const AgentTokenOptions options_;
  const Clock clock_;
  mutable std::mutex mutex_;       // for the members below
  std::list<CacheEntry> entries_;  // most recently used first
  absl::flat_hash_map<std::string, std::list<CacheEntry>::iterator> by_key_;
  uint64_t reviews_ = 0;
};

// Whether the caller of an agent stream may report for `node`. Without a reviewer (agents
// known by certificates only), the certificate rule of authorization.h. With one, a verified
// client certificate still follows that rule; otherwise the stream's token is reviewed and
// must be bound to `node`.
absl::Status MayReportFor(const Authorizer& authorizer, AgentTokenReviewer* reviewer,
                          const grpc::ServerContext& context, std::string_view node);

}  // namespace nodemesh::aggregator
