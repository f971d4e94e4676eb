// meshctl's path to the aggregator's API (flags, environment, kubeconfig, in-cluster, the
// local cluster), and what it says when the Kubernetes API server or the aggregator behind it
// refuses: meshctl run in this process against the test API server (real HTTPS, tokens, RBAC).
#include "cli/kube_api_client.h"

#include <fmt/format.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <filesystem>
#include <future>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>

#include "cli/commands/command.h"
#include "cli/golden.h"
#include "cli/run_in_process.h"
#include "common/http/server.h"
#include "common/httpapi/discovery.h"
#include "common/httpapi/json.h"
#include "common/httpapi/permissions.h"
#include "test/lib/certificates.h"
#include "test/lib/files.h"
#include "test/lib/kube_apiserver.h"
#include "test/lib/process.h"

namespace nodemesh::cli {
namespace {

using namespace std::chrono_literals;
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

TEST_CASE("an API server that does not answer: meshctl says what to check", "[meshctl][kube]") {
  Cluster cluster;
  cluster.server().Stop();
  const Result stat = Run({"--kubeconfig", cluster.alice(), "stat", "deploy", "-n", "emojivoto"});
  CHECK(stat.code == 1);
  CHECK(stat.err ==
        fmt::format("meshctl: get stats emojivoto/deployment: cannot connect to the API server at "
                    "{} (Connection refused): is the cluster of kubeconfig {}, context test up? "
                    "('kubectl cluster-info' checks it), or use --aggregator HOST:PORT to reach "
                    "an aggregator directly\n",
                    cluster.server().url(), cluster.alice()));
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

// An API server that answers nodemesh.io/v1alpha1 as the test says: a tap's lines, an
// agent's relayed answer, the aggregator's Status.
class ScriptedApiServer {
 public:
  explicit ScriptedApiServer(http::HttpRoutes routes) {
    nodemesh::testing::MakeCa(dir_, "ca");
    nodemesh::testing::MakeServerCertificate(dir_, "ca");
    routes.Handle(std::string(httpapi::kApiPath), [](const http::HttpRequest&) {
      return http::HttpResponse(200, "application/json", httpapi::ResourceListJson());
    });
    server_ =
        http::HttpServer::ListenTcp(
            "127.0.0.1:0", {nodemesh::testing::ReadFile(dir_.path() + "/server.crt"),
                            nodemesh::testing::ReadFile(dir_.path() + "/server.key"), nullptr})
            .value();
    server_->Serve(std::move(routes));
    server_->Start();
  }

  std::string url() const { return "https://" + server_->address(); }

  KubeApiClient Client() const {
    kube::Config config;
    config.server = url();
    config.ca_file = dir_.path() + "/ca.crt";
    config.token = "t";
    config.source = "kubeconfig K, context C";
    return KubeApiClient(std::move(config), {});
  }

 private:
  TempDir dir_;
  std::unique_ptr<http::HttpServer> server_;
};

std::string EventLine(const std::string& id) {
  v1::TapStreamMessage message;
  message.mutable_event()->set_request_id(id);
  return httpapi::MessageJson(message);
}

// Taps whose target's name says how the stream goes.
http::HttpRoutes TapRoutes() {
  http::HttpRoutes routes;
  routes.Handle(std::string(httpapi::kApiPath) + "/", [](const http::HttpRequest& request) {
    const std::string how =
        request.query.count("target.name") ? request.query.at("target.name") : "";
    return http::HttpResponse::Stream(200, "application/json", [how](http::ResponseStream& out) {
      v1::TapStreamMessage drops;
      drops.mutable_drops()->set_agent_dropped(7);
      // A heartbeat, an event, drops, an empty line, another heartbeat, an event.
      for (const std::string& line :
           {std::string("{}\n"), EventLine("e1"), httpapi::MessageJson(drops), std::string("\n"),
            std::string("{}\n"), EventLine("e2")}) {
        if (!out.Write(line, 5s)) return;
      }
      if (how == "last-word") {
        out.Write(
            httpapi::ErrorAnswerFor(absl::UnavailableError("the aggregator is shutting down")).body,
            5s);
      } else if (how == "held") {
        while (!out.ClientGone()) std::this_thread::sleep_for(10ms);
      }
      // Else the stream ends here: after maxEvents 2, or too early.
    });
  });
  return routes;
}

TEST_CASE(
    "a tap through the API server: heartbeats skipped, ended by maxEvents, by the "
    "aggregator's last word, by Ctrl-C",
    "[meshctl][kube]") {
  const ScriptedApiServer server(TapRoutes());
  KubeApiClient client = server.Client();
  CHECK(client.address() ==
        "the Kubernetes API server " + server.url() + " (kubeconfig K, context C)");
  const auto spec = [](const std::string& how, uint64_t max_events) {
    v1::TapRequestSpec tap;
    tap.mutable_target()->set_type("deployment");
    tap.mutable_target()->set_name(how);
    tap.mutable_target()->set_namespace_("emojivoto");
    tap.set_max_events(max_events);
    return tap;
  };
  std::vector<std::string> seen;
  const auto collect = [&seen](const v1::TapStreamMessage& message) {
    seen.push_back(message.has_event() ? message.event().request_id()
                                       : fmt::format("drops {}", message.drops().agent_dropped()));
    return true;
  };
  CancelSource cancel;

  SECTION("the aggregator ends it after maxEvents: a success") {
    CHECK(client.Tap(spec("ends", 2), cancel, collect).ok());
    CHECK(seen == std::vector<std::string>{"e1", "drops 7", "e2"});
  }
  SECTION("ended before maxEvents, or without: run it again") {
    const absl::Status early = client.Tap(spec("ends", 0), cancel, collect);
    CHECK(absl::IsUnavailable(early));
    CHECK(early.message() ==
          fmt::format("the aggregator behind {} ended the tap stream: run the command again",
                      client.address()));
  }
  SECTION("the aggregator's last word, a Status line") {
    const absl::Status ended = client.Tap(spec("last-word", 0), cancel, collect);
    CHECK(seen == std::vector<std::string>{"e1", "drops 7", "e2"});
    CHECK(ended.message() ==
          "the aggregator ended the tap stream (the aggregator is shutting down): run the "
          "command again");
  }
  SECTION("the caller stops it, or Ctrl-C does: a success") {
    CHECK(client
              .Tap(spec("held", 0), cancel,
                   [](const v1::TapStreamMessage& message) { return !message.has_drops(); })
              .ok());
    std::atomic<int> events{0};
    std::future<absl::Status> held = std::async(std::launch::async, [&] {
      return client.Tap(spec("held", 0), cancel, [&events](const v1::TapStreamMessage& message) {
        events += message.has_event() ? 1 : 0;
        return true;
      });
    });
    const bool streaming = nodemesh::testing::PollUntil([&] { return events >= 2; }, 10s, 5ms);
    cancel.Cancel();  // before a failed REQUIRE too: the future's end waits for the tap's
    REQUIRE(streaming);
    REQUIRE(held.wait_for(5s) == std::future_status::ready);
    CHECK(held.get().ok());
  }
}

TEST_CASE("a view through the API server: its path and parameters, its answer, its refusal",
          "[meshctl][kube]") {
  http::HttpRoutes routes;
  routes.Handle(std::string(httpapi::kApiPath) + "/", [](const http::HttpRequest& request) {
    if (request.path.ends_with("/namespaces/a/views/graph") &&
        request.raw_query == "namespaces=b&windowSeconds=60&filter.onlyFailing=true") {
      v1::ViewResponse view;
      view.mutable_size()->set_nodes(7);
      view.set_unix_seconds(1'800'000'000);
      return http::HttpResponse(200, "application/json", httpapi::MessageJson(view));
    }
    // Anything else reads namespace c, which the user may not.
    const httpapi::Permission views{"get", "views", "", "c", "graph"};
    const httpapi::ErrorAnswer refused =
        httpapi::ErrorAnswerFor(httpapi::Forbidden(views, "alice"), &views);
    return http::HttpResponse(refused.http_status, "application/json", refused.body);
  });
  const ScriptedApiServer server(std::move(routes));
  KubeApiClient client = server.Client();
  v1::ViewRequest request;
  request.set_kind(v1::ViewRequest::GRAPH);
  request.add_namespaces("a");
  request.add_namespaces("b");
  request.set_window_seconds(60);
  request.mutable_filter()->set_only_failing(true);
  const absl::StatusOr<v1::ViewResponse> view = client.View(request);
  INFO(view.status().ToString());
  REQUIRE(view.ok());
  CHECK(view->size().nodes() == 7);
  CHECK(view->unix_seconds() == 1'800'000'000);

  request.add_namespaces("c");
  const absl::Status refused = client.View(request).status();
  CHECK(absl::IsPermissionDenied(refused));
  CHECK(std::string(refused.message()).find("'get views' (API group nodemesh.io) in namespace c") !=
        std::string::npos);
  CHECK(std::string(refused.message())
            .find("kubectl create rolebinding alice-nodemesh-read -n c "
                  "--clusterrole=nodemesh-read --user=alice") != std::string::npos);
}

TEST_CASE(
    "shell --node through the API server: the agent's answers relayed, the aggregator's "
    "refusals explained",
    "[meshctl][kube]") {
  http::HttpRoutes routes;
  routes.Handle(std::string(httpapi::kApiPath) + "/", [](const http::HttpRequest& request) {
    if (request.path.ends_with("/nodes/node-1/admin/pods")) {
      return http::HttpResponse(200, "application/json", R"({"pods":[]})");
    }
    if (request.path.ends_with("/nodes/node-1/admin/kernel/map/nope")) {
      return http::HttpResponse(404, "text/plain", "no map nope\n");
    }
    return http::HttpResponse(
        404, "application/json",
        httpapi::ErrorAnswerFor(absl::NotFoundError("no agent of node 'node-9' is connected"))
            .body);
  });
  const ScriptedApiServer server(std::move(routes));
  KubeApiClient client = server.Client();
  v1::NodeAdminRequest request;
  request.set_node("node-1");
  request.set_target("/pods");
  absl::StatusOr<v1::NodeAdminResponse> pods = client.NodeAdmin(request);
  REQUIRE(pods.ok());
  CHECK(pods->status() == 200);
  CHECK(pods->body() == R"({"pods":[]})");
  request.set_target("/kernel/map/nope");
  absl::StatusOr<v1::NodeAdminResponse> map = client.NodeAdmin(request);
  REQUIRE(map.ok());
  CHECK(map->status() == 404);
  CHECK(map->body() == "no map nope\n");
  request.set_node("node-9");
  const absl::StatusOr<v1::NodeAdminResponse> gone = client.NodeAdmin(request);
  CHECK(gone.status().message() ==
        "the aggregator refused NodeAdmin: no agent of node 'node-9' is connected");
}

}  // namespace
}  // namespace nodemesh::cli
