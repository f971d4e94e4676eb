#include "aggregator/agent_identity.h"

#include <fmt/format.h>
#include <grpcpp/server_context.h>
#include <openssl/sha.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "common/base/format.h"
#include "common/kube/client.h"
#include "nlohmann/json.hpp"

namespace nodemesh::aggregator {
namespace {

constexpr std::string_view kExtraPrefix = "authentication.kubernetes.io/";
// A cached review ends this long before its token expires: an agent that connects then
// is reviewed again, and so hears from the API server that its token has expired.
constexpr int64_t kExpirySkewSeconds = 30;
// How long the review of a token without a readable `exp` is cached.
constexpr int64_t kCacheWithoutExpirySeconds = 10;

std::string Sha256(std::string_view text) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(), digest);
  return std::string(reinterpret_cast<const char*>(digest), sizeof digest);
}

// The first value of the review's extra `authentication.kubernetes.io/NAME`, or "".
std::string ExtraOf(const nlohmann::json& user, std::string_view name) {
  const auto extra = user.find("extra");
  if (extra == user.end() || !extra->is_object()) return "";
  const auto values = extra->find(fmt::format("{}{}", kExtraPrefix, name));
  if (values == extra->end() || !values->is_array() || values->empty() ||
      !values->front().is_string()) {
    return "";
  }
  return values->front().get<std::string>();
}

// An API server that cannot say: the agent retries, and the operator reads why.
absl::Status CannotReview(const absl::Status& status) {
  std::string hint;
  if (absl::IsPermissionDenied(status) || absl::IsUnauthenticated(status)) {
    hint =
        "; the aggregator's ServiceAccount needs the ClusterRole system:auth-delegator (create "
        "tokenreviews) and get on pods in the agents' namespace";
  }
  return absl::UnavailableError(
      fmt::format("cannot review the agent's token: {}{}", status.message(), hint));
}

std::chrono::milliseconds Left(std::chrono::steady_clock::time_point deadline) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(deadline -
                                                               std::chrono::steady_clock::now());
}

// May an agent whose token is bound as `binding` report for `node`?
absl::Status MayReportAs(const AgentBinding& binding, std::string_view node) {
  if (binding.node == node) return absl::OkStatus();
  return absl::PermissionDeniedError(
      fmt::format("the token of pod {} (on node {}) may not report for node {}: an agent "
                  "reports for the node its pod runs on",
                  binding.pod, binding.node, node));
}

}  // namespace

absl::Status ParseAgentServiceAccount(std::string_view text, AgentTokenOptions* options) {
  const std::vector<std::string> parts =
      absl::StrSplit(absl::string_view(text.data(), text.size()), '/');
  if (parts.size() != 2 || parts[0].empty() || parts[1].empty()) {
    return absl::InvalidArgumentError(fmt::format(
        "--agent-service-account '{}' is not NAMESPACE/NAME: give the agents' ServiceAccount "
        "in the release namespace, e.g. nodemesh/nodemesh-agent",
        text));
  }
  options->service_account_namespace = parts[0];
  options->service_account_name = parts[1];
  return absl::OkStatus();
}

std::string BearerTokenOf(const grpc::ServerContext& context) {
  const auto& metadata = context.client_metadata();
  const auto found = metadata.find("authorization");
  if (found == metadata.end()) return "";
  const absl::string_view value(found->second.data(), found->second.size());
  if (value.size() < 7 || !absl::EqualsIgnoreCase(value.substr(0, 7), "bearer ")) return "";
  return std::string(absl::StripAsciiWhitespace(value.substr(7)));
}

std::optional<int64_t> TokenExpiry(std::string_view token) {
  const std::vector<absl::string_view> parts =
      absl::StrSplit(absl::string_view(token.data(), token.size()), '.');
  if (parts.size() != 3) return std::nullopt;
  std::string payload;
  if (!absl::WebSafeBase64Unescape(parts[1], &payload)) return std::nullopt;
  const nlohmann::json claims = nlohmann::json::parse(payload, nullptr, false);
  if (!claims.is_object()) return std::nullopt;
  const auto exp = claims.find("exp");
  if (exp == claims.end() || !exp->is_number()) return std::nullopt;
  return exp->get<int64_t>();
}

AgentTokenReviewer::AgentTokenReviewer(kube::Client& client, AgentTokenOptions options, Clock clock)
    : client_(client), options_(std::move(options)), clock_(std::move(clock)) {}

uint64_t AgentTokenReviewer::reviews() const {
  std::lock_guard lock(mutex_);
  return reviews_;
}

absl::StatusOr<AgentBinding> AgentTokenReviewer::Review(std::string_view token) {
  std::string key = Sha256(token);
  if (std::optional<AgentBinding> cached = Cached(key)) return *std::move(cached);
  absl::StatusOr<AgentBinding> binding = ReviewNow(token);
  if (!binding.ok()) return binding.status();
  const int64_t now = UnixSeconds(clock_());
  const std::optional<int64_t> expiry = TokenExpiry(token);
  Remember(std::move(key), *binding,
           expiry ? *expiry - kExpirySkewSeconds : now + kCacheWithoutExpirySeconds);
  return binding;
}

absl::StatusOr<AgentBinding> AgentTokenReviewer::ReviewNow(std::string_view token) {
  {
    std::lock_guard lock(mutex_);
    ++reviews_;
  }
  const auto deadline = std::chrono::steady_clock::now() + options_.review_timeout;
  const nlohmann::json request = {{"apiVersion", "authentication.k8s.io/v1"},
                                  {"kind", "TokenReview"},
                                  {"spec", {{"token", token}, {"audiences", {options_.audience}}}}};
  const absl::StatusOr<nlohmann::json> review =
      Ask("POST", "/apis/authentication.k8s.io/v1/tokenreviews", request.dump(),
          options_.review_timeout);
  if (!review.ok()) return review.status();
  absl::StatusOr<ReviewedUser> user = UserOf(*review);
  if (!user.ok()) return user.status();
  AgentBinding binding{
      .node = user->node,
      .pod = fmt::format("{}/{}", options_.service_account_namespace, user->pod_name)};
  if (binding.node.empty()) {
    absl::StatusOr<std::string> node = NodeOfPod(user->pod_name, user->pod_uid, deadline);
    if (!node.ok()) return node.status();
    binding.node = *std::move(node);
  }
  return binding;
}

absl::StatusOr<nlohmann::json> AgentTokenReviewer::Ask(std::string_view method,
                                                       std::string_view path, std::string_view body,
                                                       std::chrono::milliseconds timeout) {
  const std::string what = kube::DescribeRequest(method, path);
  if (timeout <= std::chrono::milliseconds(0)) {
    return absl::UnavailableError(
        fmt::format("cannot review the agent's token: the API server took more than {} ms",
                    options_.review_timeout.count()));
  }
  const absl::StatusOr<kube::Response> response =
      client_.Request(method, path, body, "application/json", timeout);
  if (!response.ok()) return CannotReview(response.status());
  if (response->status == 404) return absl::NotFoundError(what);
  if (response->status < 200 || response->status > 299) {
    return CannotReview(kube::StatusFromResponse(*response, what));
  }
  nlohmann::json answer = nlohmann::json::parse(response->body, nullptr, false);
  if (!answer.is_object()) {
    return absl::UnavailableError(fmt::format(
        "cannot review the agent's token: the API server's answer to {} is not a JSON object",
        what));
  }
  return answer;
}

absl::StatusOr<AgentTokenReviewer::ReviewedUser> AgentTokenReviewer::UserOf(
    const nlohmann::json& review) const {
  ReviewedUser reviewed;
  try {
    const nlohmann::json status = review.value("status", nlohmann::json::object());
    if (!status.value("authenticated", false)) {
      return absl::UnauthenticatedError(fmt::format(
          "the API server did not accept the agent's token for audience {}: {}; an agent "
          "presents a current projected ServiceAccount token with that audience "
          "(--aggregator-token-file)",
          options_.audience, status.value("error", "no reason given")));
    }
    const auto audiences = status.value("audiences", std::vector<std::string>{});
    if (std::find(audiences.begin(), audiences.end(), options_.audience) == audiences.end()) {
      return absl::UnauthenticatedError(
          fmt::format("the API server accepted the agent's token, but not for audience {}: the "
                      "agent's projected token must be issued for that audience",
                      options_.audience));
    }
    const nlohmann::json user = status.value("user", nlohmann::json::object());
    reviewed.username = user.value("username", "");
    reviewed.pod_name = ExtraOf(user, "pod-name");
    reviewed.pod_uid = ExtraOf(user, "pod-uid");
    reviewed.node = ExtraOf(user, "node-name");
  } catch (const nlohmann::json::exception& e) {
    return absl::UnavailableError(fmt::format(
        "cannot review the agent's token: the API server's TokenReview is not understood: {}",
        e.what()));
  }
  const std::string expected =
      fmt::format("system:serviceaccount:{}:{}", options_.service_account_namespace,
                  options_.service_account_name);
  if (reviewed.username != expected) {
    return absl::PermissionDeniedError(fmt::format(
        "the token of '{}' is not an agent's: agents run as the ServiceAccount {}/{} "
        "(--agent-service-account)",
        reviewed.username, options_.service_account_namespace, options_.service_account_name));
  }
  if (reviewed.pod_name.empty() || reviewed.pod_uid.empty()) {
    return absl::PermissionDeniedError(fmt::format(
        "the agent's token of {} is not bound to a pod, so the node it may report for is not "
        "known: give the agent its pod's projected ServiceAccount token",
        expected));
  }
  return reviewed;
}

absl::StatusOr<std::string> AgentTokenReviewer::NodeOfPod(
    const std::string& pod_name, const std::string& pod_uid,
    std::chrono::steady_clock::time_point deadline) {
  const std::string pod = fmt::format("{}/{}", options_.service_account_namespace, pod_name);
  const absl::StatusOr<nlohmann::json> answer = Ask(
      "GET",
      fmt::format("/api/v1/namespaces/{}/pods/{}", options_.service_account_namespace, pod_name),
      {}, Left(deadline));
  if (absl::IsNotFound(answer.status())) {
    return absl::UnauthenticatedError(
        fmt::format("the pod {} of the agent's token no longer exists", pod));
  }
  if (!answer.ok()) return answer.status();
  std::string uid, node;
  try {
    uid = answer->value("metadata", nlohmann::json::object()).value("uid", "");
    node = answer->value("spec", nlohmann::json::object()).value("nodeName", "");
  } catch (const nlohmann::json::exception& e) {
    return absl::UnavailableError(fmt::format(
        "cannot review the agent's token: the API server's pod {} is not understood: {}", pod,
        e.what()));
  }
  if (uid != pod_uid) {
    return absl::UnauthenticatedError(
        fmt::format("the agent's token belongs to pod {} with uid {}, which no longer exists "
                    "(the pod of that name now has uid {})",
                    pod, pod_uid, uid));
  }
  if (node.empty()) {
    return absl::UnavailableError(
        fmt::format("the pod {} of the agent's token is not scheduled to a node yet", pod));
  }
  return node;
}

std::optional<AgentBinding> AgentTokenReviewer::Cached(const std::string& key) {
  std::lock_guard lock(mutex_);
  const auto found = by_key_.find(key);
  if (found == by_key_.end()) return std::nullopt;
  const auto entry = found->second;
  if (UnixSeconds(clock_()) >= entry->expires) {
    entries_.erase(entry);
    by_key_.erase(found);
    return std::nullopt;
  }
  entries_.splice(entries_.begin(), entries_, entry);
  return entry->binding;
}

void AgentTokenReviewer::Remember(std::string key, const AgentBinding& binding, int64_t expires) {
  if (expires <= UnixSeconds(clock_()) || options_.max_cached == 0) return;
  std::lock_guard lock(mutex_);
  if (const auto found = by_key_.find(key); found != by_key_.end()) {
    entries_.erase(found->second);
    by_key_.erase(found);
  }
  while (entries_.size() >= options_.max_cached) {
    by_key_.erase(entries_.back().key);
    entries_.pop_back();
  }
  entries_.push_front({.key = key, .binding = binding, .expires = expires});
  by_key_[std::move(key)] = entries_.begin();
}

absl::Status MayReportFor(const Authorizer& authorizer, AgentTokenReviewer* reviewer,
                          const grpc::ServerContext& context, std::string_view node) {
  if (reviewer == nullptr) return authorizer.Report(context, node);
  if (const Caller caller = CallerOf(context); caller.authenticated) {
    return MayReport(caller, node);
  }
  const std::string token = BearerTokenOf(context);
  if (token.empty()) {
    return absl::UnauthenticatedError(fmt::format(
        "an agent needs a ServiceAccount token or a client certificate to report: give the "
        "agent of node {} --aggregator-token-file with its pod's projected token (audience "
        "{}), or --aggregator-cert and --aggregator-key",
        node, reviewer->options().audience));
  }
  const absl::StatusOr<AgentBinding> binding = reviewer->Review(token);
  if (!binding.ok()) return binding.status();
  return MayReportAs(*binding, node);
}

}  // namespace nodemesh::aggregator
