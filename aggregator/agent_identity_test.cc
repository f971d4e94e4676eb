// Agents known by their ServiceAccount tokens, over real in-process gRPC, with the test
// Kubernetes API server (test/lib/kube_apiserver.h) reviewing the tokens under the RBAC the
// aggregator is given: which node a token may report for, which tokens are refused and why,
// the cache of reviews, and an API server down or slow.
#include "aggregator/agent_identity.h"

#include <fmt/format.h>
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>

#include "aggregator/server.h"
#include "nodemesh/v1/nodemesh.grpc.pb.h"
#include "test/lib/files.h"
#include "test/lib/kube_apiserver.h"

namespace nodemesh::aggregator {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using nodemesh::testing::KubeApiServer;

constexpr std::string_view kAgentsNamespace = "nodemesh";
constexpr std::string_view kAgentAccount = "nodemesh-agent";

// The aggregator's own RBAC: system:auth-delegator for TokenReviews, get on pods.
json AggregatorRbac() {
  return json::parse(R"([
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
     "metadata": {"name": "nodemesh-aggregator:system:auth-delegator"},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:auth-delegator"},
     "subjects": [{"kind": "ServiceAccount", "name": "nodemesh-aggregator", "namespace": "nodemesh"}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
     "metadata": {"name": "nodemesh-aggregator", "namespace": "nodemesh"},
     "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
     "metadata": {"name": "nodemesh-aggregator", "namespace": "nodemesh"},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "nodemesh-aggregator"},
     "subjects": [{"kind": "ServiceAccount", "name": "nodemesh-aggregator", "namespace": "nodemesh"}]}
  ])");
}

json AgentPod(const std::string& name, const std::string& node) {
  return {{"apiVersion", "v1"},
          {"kind", "Pod"},
          {"metadata", {{"name", name}}},
          {"spec", {{"nodeName", node}, {"serviceAccountName", kAgentAccount}}}};
}

// A settable clock for the review cache.
class IdentityClock {
 public:
  Clock clock() {
    return
        [this] { return std::chrono::system_clock::time_point(std::chrono::seconds(now_.load())); };
  }
  void Set(int64_t unix_seconds) { now_ = unix_seconds; }

 private:
  std::atomic<int64_t> now_{std::chrono::duration_cast<std::chrono::seconds>(
                                std::chrono::system_clock::now().time_since_epoch())
                                .count()};
};

// An agent's stream with a token: the Hello said, then everything the aggregator sends read
// on a thread of its own until the stream ends.
class TokenAgent {
 public:
  TokenAgent(const std::string& address, const std::string& node, const std::string& token)
      : stub_(v1::AgentService::NewStub(
            grpc::CreateChannel(address, grpc::InsecureChannelCredentials()))) {
    if (!token.empty()) context_.AddMetadata("authorization", "Bearer " + token);
    stream_ = stub_->Connect(&context_);
    v1::AgentMessage hello;
    hello.mutable_hello()->set_node(node);
    hello.mutable_hello()->set_version("test");
    stream_->Write(hello);
    reader_ = std::thread([this] {
      v1::AggregatorMessage message;
      while (stream_->Read(&message)) {
        std::lock_guard lock(mutex_);
        admitted_ = true;  // the first message of an admitted stream: the cluster's pods
        changed_.notify_all();
      }
      grpc::Status status = stream_->Finish();
      std::lock_guard lock(mutex_);
      status_ = std::move(status);
      changed_.notify_all();
    });
  }
  ~TokenAgent() {
    context_.TryCancel();
    reader_.join();
  }

  // True once the aggregator has sent the stream something: it was admitted.
  bool WaitAdmitted(std::chrono::milliseconds timeout = 10s) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, timeout, [&] { return admitted_ || status_; }) && admitted_;
  }
  // How the aggregator ended the stream; nullopt while it is open after `timeout`.
  std::optional<grpc::Status> WaitEnded(std::chrono::milliseconds timeout = 10s) {
    std::unique_lock lock(mutex_);
    changed_.wait_for(lock, timeout, [&] { return status_.has_value(); });
    return status_;
  }
  bool open() {
    std::lock_guard lock(mutex_);
    return !status_.has_value();
  }

 private:
  grpc::ClientContext context_;
  std::unique_ptr<v1::AgentService::Stub> stub_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::AgentMessage, v1::AggregatorMessage>> stream_;
  std::mutex mutex_;
  std::condition_variable changed_;
  bool admitted_ = false;
  std::optional<grpc::Status> status_;
  std::thread reader_;
};

// The test API server with the agents' pods, and an aggregator that knows agents by their
// tokens and reaches it as its own ServiceAccount.
struct TokenCluster {
  explicit TokenCluster(std::chrono::milliseconds review_timeout = 5s, size_t max_cached = 100)
      : api({.rbac_file = rbac_dir.Write("rbac.json", AggregatorRbac().dump())}) {
    const std::string pods = fmt::format("/api/v1/namespaces/{}/pods", kAgentsNamespace);
    api.Create(pods, AgentPod("agent-a", "node-a"));
    api.Create(pods, AgentPod("agent-b", "node-b"));
    ServerOptions options;
    options.listen_address = "127.0.0.1:0";
    options.clock = clock.clock();
    options.housekeeping_interval = 0ms;
    kube::Config api_server;
    api_server.server = api.url();
    api_server.ca_file = api.ca_file();
    api_server.token = api.IssueToken(kAgentsNamespace, "nodemesh-aggregator");
    options.kubernetes.api_server = api_server;
    options.kubernetes.agent_tokens =
        AgentTokenOptions{.service_account_namespace = std::string(kAgentsNamespace),
                          .service_account_name = std::string(kAgentAccount),
                          .review_timeout = review_timeout,
                          .max_cached = max_cached};
    server = std::make_unique<AggregatorServer>(std::move(options));
    const absl::StatusOr<int> port = server->Start();
    REQUIRE(port.ok());
    address = fmt::format("127.0.0.1:{}", *port);
  }

  // A projected token of an agent's pod, for the aggregator's audience.
  std::string AgentToken(const std::string& pod, const std::string& node = "") {
    return api.IssueToken(kAgentsNamespace, kAgentAccount,
                          {.audiences = {std::string(kDefaultAgentTokenAudience)},
                           .expiration = std::chrono::seconds(3600),
                           .pod_name = pod,
                           .node_name = node});
  }

  // How a stream of `node` with `token` ends (UNKNOWN if it was admitted instead).
  grpc::Status Refusal(const std::string& node, const std::string& token) {
    TokenAgent agent(address, node, token);
    const std::optional<grpc::Status> ended = agent.WaitEnded();
    return ended.value_or(grpc::Status(grpc::StatusCode::UNKNOWN, "admitted"));
  }

  uint64_t reviews() const { return server->agent_tokens()->reviews(); }

  nodemesh::testing::TempDir rbac_dir;
  KubeApiServer api;
  IdentityClock clock;
  std::unique_ptr<AggregatorServer> server;
  std::string address;
};

TEST_CASE("An agent's token reports for the node its pod runs on, and for no other node",
          "[unit]") {
  TokenCluster cluster;
  // Kubernetes 1.30+: the review names the node.
  TokenAgent a(cluster.address, "node-a", cluster.AgentToken("agent-a", "node-a"));
  CHECK(a.WaitAdmitted());
  const grpc::Status elsewhere = cluster.Refusal("node-b", cluster.AgentToken("agent-a", "node-a"));
  CHECK(elsewhere.error_code() == grpc::StatusCode::PERMISSION_DENIED);
  CHECK(elsewhere.error_message() ==
        "the token of pod nodemesh/agent-a (on node node-a) may not report for node node-b: an "
        "agent reports for the node its pod runs on");

  // Before 1.30: the node is the pod's, looked up by the aggregator.
  cluster.api.Delete("/_test/requests");
  TokenAgent b(cluster.address, "node-b", cluster.AgentToken("agent-b"));
  CHECK(b.WaitAdmitted());
  CHECK(cluster.Refusal("node-a", cluster.AgentToken("agent-b")).error_message() ==
        "the token of pod nodemesh/agent-b (on node node-b) may not report for node node-a: an "
        "agent reports for the node its pod runs on");
  bool looked_up = false;
  for (const KubeApiServer::Request& request : cluster.api.Requests()) {
    looked_up |= request.path == "/api/v1/namespaces/nodemesh/pods/agent-b" &&
                 request.status == 200 && request.rule == "Role/nodemesh/nodemesh-aggregator#0";
  }
  CHECK(looked_up);
  // The aggregator used exactly its RBAC: each rule at least once.
  for (const auto& [rule, uses] : cluster.api.RbacRuleUses()) {
    INFO(rule);
    CHECK(uses > 0);
  }
}

TEST_CASE("Tokens that are not an agent's pod's, or not for the aggregator, are refused saying why",
          "[unit]") {
  TokenCluster cluster;
  const auto refusal = [&](const std::string& token) {
    const grpc::Status status = cluster.Refusal("node-a", token);
    INFO(status.error_message());
    return status;
  };

  const grpc::Status other_account = refusal(cluster.api.IssueToken(
      kAgentsNamespace, "web", {.audiences = {std::string(kDefaultAgentTokenAudience)}}));
  CHECK(other_account.error_code() == grpc::StatusCode::PERMISSION_DENIED);
  CHECK(other_account.error_message() ==
        "the token of 'system:serviceaccount:nodemesh:web' is not an agent's: agents run as the "
        "ServiceAccount nodemesh/nodemesh-agent (--agent-service-account)");

  const grpc::Status other_namespace = refusal(cluster.api.IssueToken(
      "default", kAgentAccount, {.audiences = {std::string(kDefaultAgentTokenAudience)}}));
  CHECK(other_namespace.error_code() == grpc::StatusCode::PERMISSION_DENIED);
  CHECK_THAT(other_namespace.error_message(),
             Catch::StartsWith("the token of 'system:serviceaccount:default:nodemesh-agent' is "
                               "not an agent's"));

  const grpc::Status other_audience = refusal(cluster.api.IssueToken(
      kAgentsNamespace, kAgentAccount, {.pod_name = "agent-a", .node_name = "node-a"}));
  CHECK(other_audience.error_code() == grpc::StatusCode::UNAUTHENTICATED);
  CHECK_THAT(other_audience.error_message(),
             Catch::StartsWith("the API server did not accept the agent's token for audience "
                               "nodemesh.io/aggregator: token audiences") &&
                 Catch::EndsWith("an agent presents a current projected ServiceAccount token "
                                 "with that audience (--aggregator-token-file)"));

  const grpc::Status unbound = refusal(cluster.api.IssueToken(
      kAgentsNamespace, kAgentAccount, {.audiences = {std::string(kDefaultAgentTokenAudience)}}));
  CHECK(unbound.error_code() == grpc::StatusCode::PERMISSION_DENIED);
  CHECK(unbound.error_message() ==
        "the agent's token of system:serviceaccount:nodemesh:nodemesh-agent is not bound to a "
        "pod, so the node it may report for is not known: give the agent its pod's projected "
        "ServiceAccount token");

  const std::string pod_gone = cluster.AgentToken("agent-b");
  cluster.api.Delete("/api/v1/namespaces/nodemesh/pods/agent-b");
  const grpc::Status gone = refusal(pod_gone);
  CHECK(gone.error_code() == grpc::StatusCode::UNAUTHENTICATED);
  CHECK_THAT(gone.error_message(),
             Catch::Contains("nodemesh/agent-b") && Catch::Contains("no longer exists"));

  const grpc::Status none = refusal("");
  CHECK(none.error_code() == grpc::StatusCode::UNAUTHENTICATED);
  CHECK(none.error_message() ==
        "an agent needs a ServiceAccount token or a client certificate to report: give the "
        "agent of node node-a --aggregator-token-file with its pod's projected token (audience "
        "nodemesh.io/aggregator), or --aggregator-cert and --aggregator-key");
  CHECK(cluster.server->cluster().Nodes(0).empty());  // none of them was let in
}

TEST_CASE("A rotated token or an API server down or slow cuts no admitted stream", "[unit]") {
  TokenCluster cluster(/*review_timeout=*/2s);
  const std::string token_a = cluster.AgentToken("agent-a", "node-a");
  const std::string token_b = cluster.AgentToken("agent-b", "node-b");
  TokenAgent a(cluster.address, "node-a", token_a);
  TokenAgent b(cluster.address, "node-b", token_b);
  REQUIRE(a.WaitAdmitted());
  REQUIRE(b.WaitAdmitted());

  // The kubelet rotated a's token and the old one is no longer valid: the stream goes on.
  cluster.AgentToken("agent-a", "node-a");
  cluster.api.RevokeToken(token_a);
  CHECK(cluster.Refusal("node-a", token_a + "x").error_code() ==
        grpc::StatusCode::UNAUTHENTICATED);  // a review made since
  CHECK(a.open());

  SECTION("the API server down") {
    cluster.api.Stop();
    const auto started = std::chrono::steady_clock::now();
    const grpc::Status down = cluster.Refusal("node-a", "an.unreviewed.token");
    CHECK(std::chrono::steady_clock::now() - started < 5s);
    CHECK(down.error_code() == grpc::StatusCode::UNAVAILABLE);
    CHECK_THAT(down.error_message(),
               Catch::StartsWith("cannot review the agent's token: create tokenreviews: cannot "
                                 "connect to the API server at " +
                                 cluster.api.url()));
    CHECK(a.open());
    CHECK(b.open());
    // A token reviewed before is known without the API server (this stream replaces b's).
    TokenAgent cached(cluster.address, "node-b", token_b);
    CHECK(cached.WaitAdmitted());
  }

  SECTION("the API server slow, then failing") {
    cluster.api.SetReviewFaults({.delay = 30s});
    const auto started = std::chrono::steady_clock::now();
    const grpc::Status slow = cluster.Refusal("node-a", cluster.AgentToken("agent-a", "node-a"));
    CHECK(std::chrono::steady_clock::now() - started < 4s);
    CHECK(slow.error_code() == grpc::StatusCode::UNAVAILABLE);
    CHECK(slow.error_message() ==
          "cannot review the agent's token: create tokenreviews: no complete answer from the API "
          "server at " +
              cluster.api.url() + " within 2000 ms");
    cluster.api.SetReviewFaults({.unavailable = true});
    const grpc::Status failing = cluster.Refusal("node-b", cluster.AgentToken("agent-b", "node-b"));
    CHECK(failing.error_code() == grpc::StatusCode::UNAVAILABLE);
    CHECK_THAT(failing.error_message(),
               Catch::StartsWith("cannot review the agent's token: create tokenreviews: 503"));
    CHECK(a.open());
    CHECK(b.open());
  }
}

TEST_CASE("Reviews are cached until 30 s before the token expires, for a bounded number of tokens",
          "[unit]") {
  TokenCluster cluster(5s, /*max_cached=*/2);
  const std::string a = cluster.AgentToken("agent-a", "node-a");
  const std::optional<int64_t> expiry = TokenExpiry(a);
  REQUIRE(expiry.has_value());
  CHECK(TokenExpiry("not-a-jwt") == std::nullopt);
  CHECK(TokenExpiry("a.b.c") == std::nullopt);

  const auto admitted = [&](const std::string& node, const std::string& token) {
    TokenAgent agent(cluster.address, node, token);
    return agent.WaitAdmitted();
  };
  CHECK(admitted("node-a", a));
  CHECK(admitted("node-a", a));
  CHECK(cluster.reviews() == 1);
  CHECK_FALSE(admitted("node-b", a));  // the binding is cached; the node is checked each time
  CHECK(cluster.reviews() == 1);
  // A token the API server refused is asked about again each time.
  const std::string for_api = cluster.api.IssueToken(
      kAgentsNamespace, kAgentAccount, {.pod_name = "agent-a", .node_name = "node-a"});
  CHECK_FALSE(admitted("node-a", for_api));
  CHECK_FALSE(admitted("node-a", for_api));
  CHECK(cluster.reviews() == 3);

  // The review ends 30 s before the token does.
  cluster.clock.Set(*expiry - 31);
  CHECK(admitted("node-a", a));
  CHECK(cluster.reviews() == 3);
  cluster.clock.Set(*expiry - 30);
  CHECK(admitted("node-a", a));
  CHECK(cluster.reviews() == 4);

  // Two tokens are kept: a third pushes out the least recently used.
  cluster.clock.Set(*expiry - 3600);  // when the token was issued
  const std::string b = cluster.AgentToken("agent-b", "node-b");
  const std::string c = cluster.AgentToken("agent-b", "node-b");
  CHECK(admitted("node-a", a));
  CHECK(admitted("node-b", b));
  CHECK(admitted("node-b", c));
  CHECK(cluster.reviews() == 7);
  CHECK(admitted("node-a", a));  // pushed out by c
  CHECK(cluster.reviews() == 8);
  CHECK(admitted("node-b", c));  // still there
  CHECK(cluster.reviews() == 8);
}

TEST_CASE("The agents' ServiceAccount is given as NAMESPACE/NAME", "[unit]") {
  AgentTokenOptions options;
  CHECK(ParseAgentServiceAccount("nodemesh/nodemesh-agent", &options).ok());
  CHECK(options.service_account_namespace == "nodemesh");
  CHECK(options.service_account_name == "nodemesh-agent");
  for (const char* wrong : {"nodemesh-agent", "a/b/c", "/b", "a/"}) {
    const absl::Status status = ParseAgentServiceAccount(wrong, &options);
    CHECK(status.code() == absl::StatusCode::kInvalidArgument);
    CHECK(status.message() ==
          fmt::format("--agent-service-account '{}' is not NAMESPACE/NAME: give the agents' "
                      "ServiceAccount in the release namespace, e.g. nodemesh/nodemesh-agent",
                      wrong));
  }
}

}  // namespace
}  // namespace nodemesh::aggregator
