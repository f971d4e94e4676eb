// meshctl's path to the aggregator's API (flags, environment, kubeconfig, in-cluster, the
// local cluster), and what it says when the Kubernetes API server or the aggregator behind it
// refuses: meshctl run in this process against the test API server (real HTTPS, tokens, RBAC).
#include "cli/kube_api_client.h"

#include <fmt/format.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "cli/commands/command.h"
#include "cli/golden.h"
#include "cli/run_in_process.h"
#include "common/httpapi/json.h"
#include "common/httpapi/permissions.h"
#include "test/lib/files.h"
#include "test/lib/kube_apiserver.h"

namespace nodemesh::cli {
namespace {

using nodemesh::testing::KubeApiServer;
using nodemesh::testing::TempDir;
using testing::CheckGolden;
using testing::Result;
using testing::Run;

// The path meshctl takes with `flags` set on the invocation and `env` as its environment.
absl::StatusOr<ApiPath> PathWith(const std::map<std::string, std::string>& env,
                                 const std::function<void(Invocation&)>& flags = {}) {
  std::ostringstream out, err;
  CancelSource cancel;
  const Context context{
      .out = out,
      .err = err,
      .getenv = [&env](const std::string& name) -> std::optional<std::string> {
        const auto it = env.find(name);
        if (it == env.end()) return std::nullopt;
        return it->second;
      },
      .now_unix_seconds = [] { return testing::kNow; },
      .cancel = cancel,
  };
  Invocation invocation{.context = context};
  if (flags) flags(invocation);
  return invocation.Path();
}

ApiPath Aggregator(const std::string& address) { return {ApiPath::Kind::kAggregator, address}; }

TEST_CASE(
    "meshctl's path to the API: --aggregator, NODEMESH_AGGREGATOR, a kubeconfig, "
    "in-cluster, else the local cluster",
    "[meshctl][kube]") {
  const TempDir home;
  const TempDir home_with_kubeconfig;
  std::filesystem::create_directories(home_with_kubeconfig.path() + "/.kube");
  home_with_kubeconfig.Write(".kube/config", "apiVersion: v1\nkind: Config\n");
  const std::map<std::string, std::string> in_cluster = {{"KUBERNETES_SERVICE_HOST", "10.96.0.1"},
                                                         {"KUBERNETES_SERVICE_PORT", "443"}};
  const auto with = [](std::map<std::string, std::string> env,
                       const std::map<std::string, std::string>& more) {
    env.insert(more.begin(), more.end());
    return env;
  };

  SECTION("nothing at all: the local cluster's aggregator") {
    CHECK(PathWith({}).value() == Aggregator("127.0.0.1:8085"));
    CHECK(PathWith({{"HOME", home.path()}}).value() == Aggregator("127.0.0.1:8085"));
    // Set but empty is not set, as with kubectl.
    CHECK(PathWith({{"KUBECONFIG", ""}, {"NODEMESH_AGGREGATOR", ""}}).value() ==
          Aggregator("127.0.0.1:8085"));
  }
  SECTION("1. --aggregator or NODEMESH_AGGREGATOR: the aggregator itself, before any kubeconfig") {
    const std::map<std::string, std::string> everything =
        with(in_cluster, {{"KUBECONFIG", "/k"}, {"HOME", home_with_kubeconfig.path()}});
    CHECK(PathWith(everything, [](Invocation& i) { i.aggregator = "10.0.0.1:8085"; }).value() ==
          Aggregator("10.0.0.1:8085"));
    CHECK(PathWith(with(everything, {{"NODEMESH_AGGREGATOR", "10.0.0.2:8085"}})).value() ==
          Aggregator("10.0.0.2:8085"));
    // The flag over the environment.
    CHECK(PathWith({{"NODEMESH_AGGREGATOR", "10.0.0.2:8085"}}, [](Invocation& i) {
            i.aggregator = "10.0.0.1:8085";
          }).value() == Aggregator("10.0.0.1:8085"));
  }
  SECTION("2. a kubeconfig: --kubeconfig or --context, KUBECONFIG, ~/.kube/config") {
    const ApiPath kubeconfig{ApiPath::Kind::kKubeconfig};
    // A flag given on the command line wins over NODEMESH_AGGREGATOR in the environment.
    CHECK(PathWith({{"NODEMESH_AGGREGATOR", "10.0.0.2:8085"}}, [](Invocation& i) {
            i.kubeconfig = "/k";
          }).value() == kubeconfig);
    CHECK(PathWith({}, [](Invocation& i) { i.kube_context = "prod"; }).value() == kubeconfig);
    CHECK(PathWith(with(in_cluster, {{"KUBECONFIG", "/k"}})).value() == kubeconfig);
    CHECK(PathWith(with(in_cluster, {{"HOME", home_with_kubeconfig.path()}})).value() ==
          kubeconfig);
  }
  SECTION("3. in a pod: its own credentials") {
    CHECK(PathWith(in_cluster).value() == ApiPath{ApiPath::Kind::kInCluster});
    CHECK(PathWith(with(in_cluster, {{"HOME", home.path()}})).value() ==
          ApiPath{ApiPath::Kind::kInCluster});
    CHECK(PathWith({{"KUBERNETES_SERVICE_HOST", "10.96.0.1"}}).value() ==
          Aggregator("127.0.0.1:8085"));
  }
  SECTION("--aggregator and --kubeconfig/--context together: a usage error") {
    const Result both =
        Run({"--aggregator", "127.0.0.1:8085", "--context", "prod", "stat", "deploy"});
    CHECK(both.code == 2);
    CHECK(both.err ==
          "meshctl: --aggregator (the aggregator itself) and --kubeconfig/--context (through the "
          "Kubernetes API server) do not go together: give one or the other\n");
  }
}

// A user whose kubeconfig names the test API server, with the chart's user roles: alice may
// read emojivoto, nothing else; the ServiceAccount ci/deployer nothing at all.
class Cluster {
 public:
  Cluster()
      : server_({.rbac_file = dir_.Write("rbac.json", Rbac().dump())}),
        alice_(Kubeconfig("alice", server_.IssueUserToken("alice"))),
        deployer_(Kubeconfig("deployer", server_.IssueToken("ci", "deployer"))) {}

  KubeApiServer& server() { return server_; }
  const std::string& alice() const { return alice_; }
  const std::string& deployer() const { return deployer_; }

  // What meshctl says, the address of the API server in it written as API_SERVER.
  std::string Said(const Result& result, const std::string& kubeconfig) const {
    std::string said = result.err;
    const std::string address = fmt::format(
        "the Kubernetes API server {} (kubeconfig {}, context test)", server_.url(), kubeconfig);
    for (size_t at; (at = said.find(address)) != std::string::npos;) {
      said.replace(at, address.size(), "API_SERVER");
    }
    return said;
  }

 private:
  static nlohmann::json Rbac() {
    const auto role = [](const std::string& name, const nlohmann::json& resources,
                         const std::string& verb) {
      return nlohmann::json{
          {"apiVersion", "rbac.authorization.k8s.io/v1"},
          {"kind", "ClusterRole"},
          {"metadata", {{"name", name}}},
          {"rules",
           {{{"apiGroups", {"nodemesh.io"}}, {"resources", resources}, {"verbs", {verb}}}}}};
    };
    return {role("nodemesh-read", {"stats", "edges", "routes", "inventory"}, "get"),
            role("nodemesh-tap", {"taps"}, "watch"),
            {{"apiVersion", "rbac.authorization.k8s.io/v1"},
             {"kind", "RoleBinding"},
             {"metadata", {{"name", "alice-nodemesh-read"}, {"namespace", "emojivoto"}}},
             {"roleRef",
              {{"apiGroup", "rbac.authorization.k8s.io"},
               {"kind", "ClusterRole"},
               {"name", "nodemesh-read"}}},
             {"subjects",
              {{{"kind", "User"}, {"name", "alice"}, {"apiGroup", "rbac.authorization.k8s.io"}}}}}};
  }

  std::string Kubeconfig(const std::string& name, const std::string& token) {
    const std::string path = dir_.path() + "/" + name + ".kubeconfig";
    server_.WriteKubeconfig(path, token, "test");
    return path;
  }

  TempDir dir_;
  KubeApiServer server_;
  std::string alice_, deployer_;
};

TEST_CASE(
    "through the API server, a 403 names the permission and the kubectl command that "
    "grants it",
    "[meshctl][kube]") {
  Cluster cluster;
  SECTION("a user: a RoleBinding in the namespace") {
    const Result tap =
        Run({"--kubeconfig", cluster.alice(), "tap", "deploy/web", "-n", "emojivoto"});
    CHECK(tap.code == 1);
    CheckGolden("kube_forbidden_user.golden", cluster.Said(tap, cluster.alice()));
    // The request reached the API server as alice's, which refused it.
    const std::vector<KubeApiServer::Request> requests = cluster.server().Requests();
    REQUIRE_FALSE(requests.empty());
    CHECK(requests.back().user == "alice");
    CHECK(requests.back().status == 403);
    CHECK(requests.back().path ==
          "/apis/nodemesh.io/v1alpha1/namespaces/emojivoto/taps?watch=true&target.type=deployment"
          "&target.name=web");
  }
  SECTION("every namespace: a ClusterRoleBinding") {
    const Result stat = Run({"--kubeconfig", cluster.alice(), "stat", "deploy", "-A"});
    CHECK(stat.code == 1);
    CheckGolden("kube_forbidden_cluster.golden", cluster.Said(stat, cluster.alice()));
  }
  SECTION("a ServiceAccount: --serviceaccount") {
    const Result stat =
        Run({"--kubeconfig", cluster.deployer(), "stat", "deploy", "-n", "emojivoto"});
    CHECK(stat.code == 1);
    CheckGolden("kube_forbidden_service_account.golden", cluster.Said(stat, cluster.deployer()));
  }
}

TEST_CASE("through the API server of a cluster without nodemesh.io/v1alpha1, meshctl says so",
          "[meshctl][kube]") {
  Cluster cluster;
  // alice may read emojivoto, but no APIService serves it: 404, and the group's discovery
  // path too.
  const Result stat = Run({"--kubeconfig", cluster.alice(), "stat", "deploy", "-n", "emojivoto"});
  CHECK(stat.code == 1);
  const std::string not_served =
      "meshctl: the cluster does not serve nodemesh.io/v1alpha1: is nodemesh installed with "
      "auth.mode=kubernetes? 'kubectl get apiservice v1alpha1.nodemesh.io' shows whether its "
      "APIService is registered there (API_SERVER); or use --aggregator HOST:PORT to reach an "
      "aggregator directly\n";
  CHECK(cluster.Said(stat, cluster.alice()) == not_served);
  // check reads every namespace: alice may not.
  const Result check = Run({"--kubeconfig", cluster.alice(), "check"});
  CHECK(check.code == 1);
  CHECK(check.err.starts_with("meshctl: alice may not list the pods of every namespace: "));
  const Result pods = Run({"--kubeconfig", cluster.alice(), "edges", "deploy", "-n", "emojivoto"});
  CHECK(cluster.Said(pods, cluster.alice()) == not_served);
}

TEST_CASE("the aggregator's certificates with a path through the API server: a usage error",
          "[meshctl][kube]") {
  Cluster cluster;
  const Result result = Run({"--kubeconfig", cluster.alice(), "--ca", "/ca.crt", "stat", "deploy"});
  CHECK(result.code == 2);
  CHECK(result.err ==
        "meshctl: --ca, --cert, --key and --tls-server-name (or NODEMESH_CA, NODEMESH_CERT, "
        "NODEMESH_KEY) are for reaching the aggregator itself: give its address with "
        "--aggregator HOST:PORT too, or leave them out to go through the Kubernetes API server\n");
}

TEST_CASE("ExplainAnswer: the aggregation layer's 503, the aggregator's own refusals",
          "[meshctl][kube]") {
  v1::TapRequestSpec tap;
  tap.mutable_target()->set_type("deployment");
  tap.mutable_target()->set_name("web");
  tap.mutable_target()->set_namespace_("a");
  tap.mutable_to()->set_type("deployment");
  tap.mutable_to()->set_name("db");
  tap.mutable_to()->set_namespace_("b");
  const httpapi::ApiRequest request = tap;

  SECTION("the APIService not Available: kube-aggregator's plain 503") {
    const absl::Status status =
        ExplainAnswer({503, "service unavailable\n"}, request, "API_SERVER", true);
    CHECK(absl::IsUnavailable(status));
    CHECK(status.message() ==
          "APIService v1alpha1.nodemesh.io is unavailable (API_SERVER answered: service "
          "unavailable): the aggregator is not running or the API server cannot reach it; "
          "'kubectl get apiservice v1alpha1.nodemesh.io' says why, or use --aggregator "
          "HOST:PORT to reach an aggregator directly");
  }
  SECTION("the aggregator's own 503, a Status: its words") {
    const httpapi::ErrorAnswer answer = httpapi::ErrorAnswerFor(
        absl::UnavailableError("the SubjectAccessReview did not come back within 5s"));
    const absl::Status status =
        ExplainAnswer({answer.http_status, answer.body}, request, "API_SERVER", true);
    CHECK(status.message() ==
          "the aggregator could not answer Tap just now: the SubjectAccessReview did not come "
          "back within 5s: run the command again");
  }
  SECTION("the aggregator's 403 for the `to` namespace: the permission there") {
    const std::vector<httpapi::Permission> needed = httpapi::PermissionsFor(request);
    REQUIRE(needed.size() == 2);
    const httpapi::ErrorAnswer answer =
        httpapi::ErrorAnswerFor(httpapi::Forbidden(needed[1], "bob@example.com"), &needed[1]);
    const absl::Status status =
        ExplainAnswer({answer.http_status, answer.body}, request, "API_SERVER", true);
    CHECK(absl::IsPermissionDenied(status));
    CHECK(status.message() ==
          "bob@example.com may not tap namespace b: that needs permission 'watch taps' (API "
          "group nodemesh.io) in namespace b. Someone who may grant it runs:\n"
          "  kubectl create rolebinding bob-example.com-nodemesh-tap -n b "
          "--clusterrole=nodemesh-tap --user=bob@example.com");
  }
  SECTION("a 403 that names no user: YOUR_USER") {
    const absl::Status status = ExplainAnswer({403, "forbidden"}, request, "API_SERVER", true);
    CHECK(status.message() ==
          "you may not tap namespace a: that needs permission 'watch taps' (API group "
          "nodemesh.io) in namespace a. Someone who may grant it runs:\n"
          "  kubectl create rolebinding your-user-nodemesh-tap -n a --clusterrole=nodemesh-tap "
          "--user=YOUR_USER");
  }
  SECTION("a 404 of the aggregator's, the API being served: its words") {
    v1::NodeAdminRequest admin;
    admin.set_node("node-9");
    admin.set_target("/pods");
    const httpapi::ErrorAnswer answer =
        httpapi::ErrorAnswerFor(absl::NotFoundError("no agent of node 'node-9' is connected"));
    const absl::Status status =
        ExplainAnswer({answer.http_status, answer.body}, admin, "API_SERVER", true);
    CHECK(status.message() ==
          "the aggregator refused NodeAdmin: no agent of node 'node-9' is connected");
    const httpapi::ApiRequest admin_request = admin;
    const absl::Status cluster_scope = ExplainAnswer(
        {403, R"({"kind":"Status","message":"nodes.nodemesh.io \"node-9\" is forbidden: User )"
              R"(\"ops\" cannot get resource \"nodes/admin\" in API group \"nodemesh.io\" at )"
              R"(the cluster scope"})"},
        admin_request, "API_SERVER", true);
    CHECK(cluster_scope.message() ==
          "ops may not reach the agent of node node-9: that needs permission 'get nodes/admin' "
          "(API group nodemesh.io) at cluster scope. Someone who may grant it runs:\n"
          "  kubectl create clusterrolebinding ops-nodemesh-node-admin "
          "--clusterrole=nodemesh-node-admin --user=ops");
  }
}

}  // namespace
}  // namespace nodemesh::cli
