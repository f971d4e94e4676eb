// Asking the Kubernetes API server what a user may do: the review asked, the refusal in the
// API server's words, the bounded cache of answers, RBAC deciding through the test API
// server, and an API server that is down, failing or slow making a clear UNAVAILABLE within
// the review's timeout.
#include "aggregator/kube_authorizer.h"

#include <fmt/format.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <catch2/catch.hpp>

#include "common/base/unique_fd.h"
#include "test/lib/files.h"
#include "test/lib/kube_apiserver.h"

namespace nodemesh::aggregator {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

KubeUser Alice() {
  return KubeUser{.name = "alice",
                  .groups = {"dev", "system:authenticated"},
                  .extra = {{"authentication.kubernetes.io/credential-id", {"X509SHA256=ab"}}}};
}

Permission TapIn(const std::string& namespace_name) {
  return Permission{.verb = "watch", .resource = "taps", .namespace_name = namespace_name};
}

Permission NodeAdminOfA() {
  return Permission{.verb = "get", .resource = "nodes", .subresource = "admin", .name = "node-a"};
}

TEST_CASE("a SubjectAccessReview asks about the user and one permission of nodemesh.io") {
  CHECK(SubjectAccessReview(Alice(), TapIn("emojivoto")) ==
        json::parse(R"({"apiVersion":"authorization.k8s.io/v1","kind":"SubjectAccessReview",
          "spec":{"user":"alice","groups":["dev","system:authenticated"],
                  "extra":{"authentication.kubernetes.io/credential-id":["X509SHA256=ab"]},
                  "resourceAttributes":{"namespace":"emojivoto","verb":"watch",
                                        "group":"nodemesh.io","version":"v1alpha1",
                                        "resource":"taps"}}})"));
  const KubeUser bob{.name = "bob", .uid = "u-2"};
  CHECK(SubjectAccessReview(bob, NodeAdminOfA()) ==
        json::parse(R"({"apiVersion":"authorization.k8s.io/v1","kind":"SubjectAccessReview",
          "spec":{"user":"bob","uid":"u-2",
                  "resourceAttributes":{"verb":"get","group":"nodemesh.io","version":"v1alpha1",
                                        "resource":"nodes","subresource":"admin",
                                        "name":"node-a"}}})"));
}

TEST_CASE("a review's key tells apart every user and permission it could ask about") {
  const std::string key = AccessReviewKey(Alice(), TapIn("a"));
  CHECK(key == AccessReviewKey(Alice(), TapIn("a")));
  CHECK(key != AccessReviewKey(Alice(), TapIn("b")));
  KubeUser other_groups = Alice();
  other_groups.groups.pop_back();
  CHECK(key != AccessReviewKey(other_groups, TapIn("a")));
  KubeUser other_extra = Alice();
  other_extra.extra.begin()->second.push_back("X509SHA256=cd");
  CHECK(key != AccessReviewKey(other_extra, TapIn("a")));
  KubeUser with_uid = Alice();
  with_uid.uid = "u-1";
  CHECK(key != AccessReviewKey(with_uid, TapIn("a")));
  // Fields are not merely joined: moving a character from one to the next is another key.
  CHECK(AccessReviewKey(KubeUser{.name = "ab", .groups = {"c"}}, TapIn("a")) !=
        AccessReviewKey(KubeUser{.name = "a", .groups = {"bc"}}, TapIn("a")));
  CHECK(AccessReviewKey(KubeUser{.name = "a", .groups = {"b", "c"}}, TapIn("a")) !=
        AccessReviewKey(KubeUser{.name = "a", .groups = {"b,c"}}, TapIn("a")));
}

TEST_CASE("cached answers last their time and the least recently used goes first") {
  using Answer = AccessReviewCache::Answer;
  const AccessReviewCache::TimePoint start{};
  AccessReviewCache cache(2);
  cache.Put("a", Answer{.allowed = true}, start + 10s);
  cache.Put("b", Answer{.allowed = false, .reason = "no"}, start + 5s);
  CHECK(cache.Find("a", start + 9s)->allowed);
  CHECK(cache.Find("b", start + 4s)->reason == "no");
  CHECK_FALSE(cache.Find("b", start + 5s));  // its time is up
  CHECK(cache.size() == 1);

  cache.Put("b", Answer{.allowed = true}, start + 20s);
  CHECK(cache.Find("a", start + 1s));  // now "b" is the least recently used
  cache.Put("c", Answer{.allowed = true}, start + 20s);
  CHECK(cache.size() == 2);
  CHECK_FALSE(cache.Find("b", start + 1s));
  CHECK(cache.Find("a", start + 1s));
  CHECK(cache.Find("c", start + 1s));

  // A new answer for a key replaces the old one.
  cache.Put("a", Answer{.allowed = false}, start + 30s);
  CHECK(cache.size() == 2);
  CHECK_FALSE(cache.Find("a", start + 25s)->allowed);
}

kube::Config ConfigFor(const std::string& server) {
  kube::Config config;
  config.server = server;
  config.token = "unused";
  return config;
}

TEST_CASE("an API server that is down makes a clear UNAVAILABLE at once") {
  nodemesh::testing::KubeApiServer api_server;
  kube::Client client(ConfigFor(api_server.url()));
  api_server.Stop();
  KubeAuthorizer authorizer(client);
  const auto start = std::chrono::steady_clock::now();
  const absl::Status status = authorizer.Check(Alice(), TapIn("emojivoto"));
  CHECK(std::chrono::steady_clock::now() - start < 3s);
  CHECK(status.code() == absl::StatusCode::kUnavailable);
  CHECK(std::string(status.message())
            .starts_with("cannot check whether alice may watch taps in namespace emojivoto: the "
                         "Kubernetes API "
                         "server's SubjectAccessReview failed: create subjectaccessreviews: cannot "
                         "connect to the "
                         "API server at "));
  // A failure is not an answer: the next check asks again.
  CHECK(authorizer.Check(Alice(), TapIn("emojivoto")).code() == absl::StatusCode::kUnavailable);
  CHECK(authorizer.stats().reviews == 2);
}

TEST_CASE("an API server that does not answer makes UNAVAILABLE within the review's timeout") {
  // A listener that never accepts: the kernel completes the TCP handshake, and then nothing.
  UniqueFd listener(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  REQUIRE(bind(listener.get(), reinterpret_cast<sockaddr*>(&address), length) == 0);
  REQUIRE(listen(listener.get(), 8) == 0);
  REQUIRE(getsockname(listener.get(), reinterpret_cast<sockaddr*>(&address), &length) == 0);
  kube::Client client(ConfigFor("https://127.0.0.1:" + std::to_string(ntohs(address.sin_port))));

  KubeAuthorizer authorizer(client, KubeAuthorizerOptions{.review_timeout = 500ms});
  const auto start = std::chrono::steady_clock::now();
  const absl::Status status = authorizer.Check(Alice(), NodeAdminOfA());
  const auto took = std::chrono::steady_clock::now() - start;
  CHECK(took >= 500ms);
  CHECK(took < 3s);
  CHECK(status.code() == absl::StatusCode::kUnavailable);
  CHECK(std::string(status.message())
            .starts_with(
                "cannot check whether alice may get nodes/admin node-a at the cluster scope: the "
                "Kubernetes API server's SubjectAccessReview failed: "));
  CHECK(status.message().find("within 500 ms") != std::string::npos);
}

TEST_CASE("system:masters may do anything without a review") {
  nodemesh::testing::KubeApiServer api_server;
  kube::Client client(ConfigFor(api_server.url()));
  api_server.Stop();  // a review would fail
  KubeAuthorizer authorizer(client);
  CHECK(authorizer
            .CheckAll(KubeUser{.name = "root", .groups = {"system:masters"}},
                      {TapIn(""), NodeAdminOfA()})
            .ok());
  CHECK(authorizer.stats().reviews == 0);
}

// The aggregator's review rights (system:auth-delegator) and alice's tap in namespace a.
json AuthorizerRbac() {
  return json::parse(R"([
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
     "metadata": {"name": "aggregator:system:auth-delegator"},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                 "name": "system:auth-delegator"},
     "subjects": [{"kind": "ServiceAccount", "name": "aggregator", "namespace": "nodemesh"}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
     "metadata": {"name": "nodemesh-tap"},
     "rules": [{"apiGroups": ["nodemesh.io"], "resources": ["taps"], "verbs": ["watch"]}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
     "metadata": {"name": "alice-nodemesh-tap", "namespace": "a"},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                 "name": "nodemesh-tap"},
     "subjects": [{"kind": "User", "name": "alice"}]}
  ])");
}

// A test API server that enforces AuthorizerRbac.
struct RbacApiServer {
  nodemesh::testing::TempDir dir;
  nodemesh::testing::KubeApiServer server{
      {.rbac_file = dir.Write("rbac.json", AuthorizerRbac().dump())}};
};

// How a failed review of alice's tap in namespace a begins.
constexpr std::string_view kAliceTapReviewFailed =
    "cannot check whether alice may watch taps in namespace a: the Kubernetes API server's "
    "SubjectAccessReview failed: ";

// The aggregator's client of `api_server`, as its ServiceAccount `service_account`.
kube::Config AggregatorConfig(nodemesh::testing::KubeApiServer& api_server,
                              const std::string& service_account = "aggregator") {
  kube::Config config;
  config.server = api_server.url();
  config.ca_file = api_server.ca_file();
  config.token = api_server.IssueToken("nodemesh", service_account);
  return config;
}

// The SubjectAccessReviews the server decided, oldest first.
std::vector<json> ReviewsDecided(nodemesh::testing::KubeApiServer& api_server) {
  std::vector<json> reviews;
  for (const nodemesh::testing::KubeApiServer::Request& request : api_server.Requests()) {
    if (!request.review.is_null() && request.review.contains("resourceAttributes")) {
      reviews.push_back(request.review);
    }
  }
  return reviews;
}

TEST_CASE("RBAC decides through the review, and its answers are kept for their time") {
  RbacApiServer rbac;
  nodemesh::testing::KubeApiServer& api_server = rbac.server;
  kube::Client client(AggregatorConfig(api_server));
  AccessReviewCache::TimePoint now{};
  KubeAuthorizer authorizer(client, KubeAuthorizerOptions{.now = [&now] { return now; }});

  CHECK(authorizer.Check(Alice(), TapIn("a")).ok());
  const absl::Status in_b = authorizer.Check(Alice(), TapIn("b"));
  CHECK(in_b.code() == absl::StatusCode::kPermissionDenied);
  CHECK(
      std::string(in_b.message())
          .starts_with(
              "taps.nodemesh.io is forbidden: User \"alice\" cannot watch resource \"taps\" in API "
              "group \"nodemesh.io\" in the namespace \"b\""));
  // Tapping every namespace is a permission of its own, which a RoleBinding does not give.
  CHECK(authorizer.Check(Alice(), TapIn("")).code() == absl::StatusCode::kPermissionDenied);
  CHECK(authorizer.stats().reviews == 3);

  // The review asked what the call needs, for the user as the front proxy named them.
  const std::vector<json> reviews = ReviewsDecided(api_server);
  REQUIRE(reviews.size() == 3);
  CHECK(reviews[0].at("user") == "alice");
  CHECK(reviews[0].at("groups") == json{"dev", "system:authenticated"});
  CHECK(reviews[0].at("resourceAttributes") == json{{"group", "nodemesh.io"},
                                                    {"version", "v1alpha1"},
                                                    {"resource", "taps"},
                                                    {"verb", "watch"},
                                                    {"namespace", "a"}});
  CHECK(reviews[0].at("allowed") == true);
  CHECK(reviews[1].at("allowed") == false);

  // Within their time the answers come from the cache.
  now += 4s;
  CHECK(authorizer.Check(Alice(), TapIn("a")).ok());
  CHECK(authorizer.Check(Alice(), TapIn("b")).code() == absl::StatusCode::kPermissionDenied);
  CHECK(authorizer.stats().reviews == 3);
  CHECK(authorizer.stats().cached == 2);
  // A refusal is kept 5 s, an allowance 10 s.
  now += 2s;
  CHECK(authorizer.Check(Alice(), TapIn("b")).code() == absl::StatusCode::kPermissionDenied);
  CHECK(authorizer.Check(Alice(), TapIn("a")).ok());
  CHECK(authorizer.stats().reviews == 4);
  now += 5s;
  CHECK(authorizer.Check(Alice(), TapIn("a")).ok());
  CHECK(authorizer.stats().reviews == 5);
  CHECK(ReviewsDecided(api_server).size() == 5);

  // Both of a tap's namespaces must allow it: the first refusal answers.
  CHECK(authorizer.CheckAll(Alice(), {TapIn("a"), TapIn("b")}).code() ==
        absl::StatusCode::kPermissionDenied);
}

TEST_CASE("an aggregator the API server does not let review is told what it lacks") {
  RbacApiServer rbac;
  nodemesh::testing::KubeApiServer& api_server = rbac.server;
  kube::Client client(AggregatorConfig(api_server, "stranger"));
  KubeAuthorizer authorizer(client);
  const absl::Status status = authorizer.Check(Alice(), TapIn("a"));
  CHECK(status.code() == absl::StatusCode::kUnavailable);
  CHECK(std::string(status.message())
            .starts_with(fmt::format("{}create subjectaccessreviews: ", kAliceTapReviewFailed)));
  CHECK(status.message().find("(the aggregator needs the ClusterRole system:auth-delegator)") !=
        absl::string_view::npos);
}

TEST_CASE("slow or failing reviews are UNAVAILABLE within the review's timeout, never a wait") {
  RbacApiServer rbac;
  nodemesh::testing::KubeApiServer& api_server = rbac.server;
  kube::Client client(AggregatorConfig(api_server));
  KubeAuthorizer authorizer(client, KubeAuthorizerOptions{.review_timeout = 1s});

  api_server.SetReviewFaults({.delay = 8s});
  const auto start = std::chrono::steady_clock::now();
  const absl::Status slow = authorizer.Check(Alice(), TapIn("a"));
  const auto took = std::chrono::steady_clock::now() - start;
  api_server.SetReviewFaults({});  // releases the review still waiting there
  CHECK(took < 3s);
  CHECK(slow.code() == absl::StatusCode::kUnavailable);
  CHECK(slow.message().find("within 1000 ms") != absl::string_view::npos);

  api_server.SetReviewFaults({.unavailable = true});
  const absl::Status failing = authorizer.Check(Alice(), TapIn("a"));
  CHECK(failing.code() == absl::StatusCode::kUnavailable);
  CHECK(std::string(failing.message()).starts_with(kAliceTapReviewFailed));

  // Failures were not kept: the API server back, the same check is answered.
  api_server.SetReviewFaults({});
  CHECK(authorizer.Check(Alice(), TapIn("a")).ok());
}

}  // namespace
}  // namespace nodemesh::aggregator
