// meshctl with nothing but a kubeconfig: its own process, through the test API server's
// aggregation layer (test/lib/kube_apiserver.py) to a real nodemesh-aggregator serving
// nodemesh.io/v1alpha1 (--api-listen), registered as its APIService. Users are known by the
// API server (an exec plugin's token, a bearer token) and RBAC decides what they may read and
// tap; an agent of the test's own (gRPC, with a node's certificate) feeds the aggregator pods
// and tap events.
#include <fmt/format.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "common/tls/tls.h"
#include "nodemesh/v1/nodemesh.grpc.pb.h"
#include "test/lib/aggregator_process.h"
#include "test/lib/browser.h"
#include "test/lib/certificates.h"
#include "test/lib/dashboard_process.h"
#include "test/lib/fake_agent.h"
#include "test/lib/files.h"
#include "test/lib/kube_apiserver.h"
#include "test/lib/peers.h"
#include "test/lib/process.h"

namespace nodemesh::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

json ClusterRole(const std::string& name, const json& resources, const std::string& verb) {
  return {
      {"apiVersion", "rbac.authorization.k8s.io/v1"},
      {"kind", "ClusterRole"},
      {"metadata", {{"name", name}}},
      {"rules", {{{"apiGroups", {"nodemesh.io"}}, {"resources", resources}, {"verbs", {verb}}}}}};
}

json RoleBinding(const std::string& user, const std::string& role) {
  return {{"apiVersion", "rbac.authorization.k8s.io/v1"},
          {"kind", "RoleBinding"},
          {"metadata", {{"name", user + "-" + role}, {"namespace", "emojivoto"}}},
          {"roleRef",
           {{"apiGroup", "rbac.authorization.k8s.io"}, {"kind", "ClusterRole"}, {"name", role}}},
          {"subjects",
           {{{"kind", "User"}, {"name", user}, {"apiGroup", "rbac.authorization.k8s.io"}}}}};
}

// The chart's user roles; alice may read emojivoto, bob read and tap it; nobody anything in
// payments.
std::string Rbac() {
  return json{ClusterRole("nodemesh-read", {"stats", "edges", "routes", "inventory"}, "get"),
              ClusterRole("nodemesh-tap", {"taps"}, "watch"), RoleBinding("alice", "nodemesh-read"),
              RoleBinding("bob", "nodemesh-read"), RoleBinding("bob", "nodemesh-tap")}
      .dump();
}

v1::Pod Pod(const std::string& name, const std::string& deployment) {
  return MeshedPod("emojivoto", name, deployment, "node-a");
}

// `count` tap events of `subscription`: POSTs from web-1 to voting-1, as node-a's agent reports
// them.
v1::AgentMessage TapEvents(uint64_t subscription, int count) {
  v1::AgentMessage message;
  for (int i = 1; i <= count; ++i) {
    v1::TapEvent& event = *message.mutable_tap()->add_events();
    event.set_subscription(subscription);
    event.set_request_id(fmt::format("node-a:{}:1", i));
    *event.mutable_source() = Pod("web-1", "web").identity();
    *event.mutable_destination() = Pod("voting-1", "voting").identity();
    event.mutable_request()->set_method("POST");
    event.mutable_request()->set_path("/emojivoto.v1.VotingService/VotePizza");
  }
  return message;
}

// The test API server with the user roles, and the aggregator registered as its APIService.
struct AggregatedCluster {
  AggregatedCluster() : api({.rbac_file = dir.Write("rbac.json", Rbac())}) {
    MakeCa(dir, "ca");
    MakeServerCertificate(dir, "ca", "aggregator", {"nodemesh-aggregator.nodemesh.svc"});
    MakeClientCertificate(dir, "ca", "node-a", "/CN=system:node:node-a/O=system:nodes");
    const std::string kubeconfig = dir.path() + "/aggregator.kubeconfig";
    api.WriteKubeconfig(kubeconfig, api.admin_token());
    aggregator.emplace(AggregatorProcessOptions{
        .binary = NODEMESH_AGGREGATOR_BINARY,
        .extra_args = {"--api-listen", "127.0.0.1:0", "--tls-cert", Path("aggregator.crt"),
                       "--tls-key", Path("aggregator.key"), "--tls-ca", Path("ca.crt"),
                       "--kubeconfig", kubeconfig}});
    const auto credentials = ClientCredentials(TlsFiles{.ca = Path("ca.crt"),
                                                        .cert = Path("node-a.crt"),
                                                        .key = Path("node-a.key"),
                                                        .server_name = ""},
                                               "--");
    REQUIRE(credentials.ok());
    agent.emplace(aggregator->address(), "node-a",
                  std::vector<v1::Pod>{Pod("web-1", "web"), Pod("voting-1", "voting")}, "",
                  *credentials);
    REQUIRE(aggregator->WaitForNode("node-a"));
    // Available once the aggregator has read the front proxy's settings and answers the API
    // server's check, which is made again each second until then.
    Register(aggregator->api_address());
    PollUntil([&] { return api.ExtensionStatus().at("available") == true; }, 15s, 100ms);
    INFO(api.ExtensionStatus().dump(2) << "\n" << aggregator->output());
    REQUIRE(api.ExtensionStatus().at("available") == true);
  }

  std::string Path(const std::string& name) const { return dir.path() + "/" + name; }

  void Register(const std::string& address) {
    api.RegisterExtension({.address = address, .ca_bundle_pem = ReadFile(Path("ca.crt"))});
  }

  // A kubeconfig for `user`'s bearer token.
  std::string Kubeconfig(const std::string& user) {
    const std::string path = Path(user + ".kubeconfig");
    api.WriteKubeconfig(path, api.IssueUserToken(user), "test");
    return path;
  }

  TempDir dir;
  KubeApiServer api;
  std::optional<AggregatorProcess> aggregator;
  std::optional<FakeAgent> agent;
};

// meshctl as a person runs it: no aggregator address, HOME an empty directory; `env` adds to
// (or replaces in) that environment.
std::vector<std::pair<std::string, std::string>> MeshctlEnv(
    const TempDir& home, std::vector<std::pair<std::string, std::string>> env) {
  for (const char* name :
       {"HOME", "NODEMESH_AGGREGATOR", "KUBECONFIG", "KUBERNETES_SERVICE_HOST"}) {
    const bool given = std::any_of(env.begin(), env.end(),
                                   [name](const auto& variable) { return variable.first == name; });
    if (!given) env.emplace_back(name, name == std::string_view("HOME") ? home.path() : "");
  }
  return env;
}

CommandResult Meshctl(const TempDir& home, std::vector<std::string> args,
                      std::vector<std::pair<std::string, std::string>> env = {}) {
  args.insert(args.begin(), NODEMESH_MESHCTL_BINARY);
  CommandResult result = RunCommand(args, 60s, {.env = MeshctlEnv(home, std::move(env))});
  UNSCOPED_INFO(fmt::format("{}", fmt::join(args, " ")) << " -> exit " << result.exit_code << ":\n"
                                                        << result.output);
  return result;
}

TEST_CASE("meshctl with only a kubeconfig: stat and tap through the API server, RBAC deciding",
          "[meshctl][kube]") {
  AggregatedCluster cluster;
  const TempDir home;

  SECTION("alice, an exec plugin's user bound to nodemesh-read: stat works, tap is refused") {
    // The plugin a managed cluster's kubeconfig names (test/lib/exec_plugin.sh), found from
    // KUBECONFIG: no --kubeconfig, no --aggregator.
    const std::string plugin = home.path() + "/plugin";
    std::filesystem::create_directories(plugin);
    std::filesystem::copy_file(SourcePath("test/lib/exec_plugin.sh"), home.path() + "/get-token");
    WriteFile(plugin + "/tokens", cluster.api.IssueUserToken("alice") + "\n");
    const std::string kubeconfig = home.path() + "/alice.kubeconfig";
    WriteFile(kubeconfig,
              fmt::format("apiVersion: v1\nkind: Config\n"
                          "clusters:\n- name: c\n  cluster:\n    server: {}\n"
                          "    certificate-authority: {}\n"
                          "users:\n- name: alice\n  user:\n    exec:\n"
                          "      apiVersion: client.authentication.k8s.io/v1\n"
                          "      command: ./get-token\n"
                          "      interactiveMode: Never\n"
                          "      env: [{{name: PLUGIN_DIR, value: {}}}]\n"
                          "contexts:\n- name: cloud\n  context: {{cluster: c, user: alice}}\n"
                          "current-context: cloud\n",
                          cluster.api.url(), cluster.api.ca_file(), plugin));

    const CommandResult stat =
        Meshctl(home, {"stat", "deploy", "-n", "emojivoto"}, {{"KUBECONFIG", kubeconfig}});
    CHECK(stat.exit_code == 0);
    CHECK(stat.output.find("voting") != std::string::npos);
    CHECK(stat.output.find("web") != std::string::npos);
    CHECK(ReadFile(plugin + "/calls") == "1\n");
    // The API server authenticated alice, allowed her by her RoleBinding, and proxied the
    // call; the aggregator asked it about alice too (a SubjectAccessReview).
    bool proxied = false, reviewed = false;
    for (const KubeApiServer::Request& request : cluster.api.Requests()) {
      proxied |= request.user == "alice" && request.status == 200 &&
                 request.path.starts_with(
                     "/apis/nodemesh.io/v1alpha1/namespaces/emojivoto/stats/deployment");
      reviewed |= request.review.is_object() && request.review.value("user", "") == "alice" &&
                  request.review.value("allowed", false);
    }
    CHECK(proxied);
    CHECK(reviewed);

    const CommandResult tap =
        Meshctl(home, {"tap", "deploy/voting", "-n", "emojivoto"}, {{"KUBECONFIG", kubeconfig}});
    CHECK(tap.exit_code == 1);
    // A new process runs the plugin again; what it writes to stderr is passed on.
    CHECK(tap.output ==
          "exec plugin run 2\n"
          "meshctl: alice may not tap namespace emojivoto: that needs permission 'watch taps' "
          "(API group nodemesh.io) in namespace emojivoto. Someone who may grant it runs:\n"
          "  kubectl create rolebinding alice-nodemesh-tap -n emojivoto "
          "--clusterrole=nodemesh-tap --user=alice\n");
  }

  SECTION("alice in meshctl dashboard: a refused tap answers 403 with meshctl tap's own line") {
    const std::string kubeconfig = cluster.Kubeconfig("alice");
    const CommandResult tap =
        Meshctl(home, {"tap", "deploy/voting", "-n", "emojivoto"}, {{"KUBECONFIG", kubeconfig}});
    REQUIRE(tap.exit_code == 1);
    // No credentials of its own: the page's requests go as alice's, through the API server.
    DashboardProcess dashboard(
        {.binary = NODEMESH_MESHCTL_BINARY, .env = MeshctlEnv(home, {{"KUBECONFIG", kubeconfig}})});
    INFO(dashboard.process().output());
    DashboardProcess::BodyAndStatus(dashboard.Curl("/?token=" + dashboard.token()));
    const auto [refused, status] = DashboardProcess::BodyAndStatus(
        dashboard.Curl("/api/v1alpha1/namespaces/emojivoto/taps?watch=true"
                       "&target.type=deployment&target.name=voting"));
    INFO(refused);
    CHECK(status == 403);
    CHECK(json::parse(refused) == json{{"code", "PERMISSION_DENIED"},
                                       {"message", tap.output.substr(0, tap.output.size() - 1)}});
    const auto [info, info_status] =
        DashboardProcess::BodyAndStatus(dashboard.Curl("/api/dashboard/info"));
    CHECK(info_status == 200);
    CHECK(json::parse(info)["apiPath"].get<std::string>().starts_with("the Kubernetes API server " +
                                                                      cluster.api.url()));
  }

  SECTION("bob, bound to nodemesh-tap: tap --max-events 3 streams three events and ends") {
    // ~/.kube/config this time.
    std::filesystem::create_directories(home.path() + "/.kube");
    std::filesystem::copy_file(cluster.Kubeconfig("bob"), home.path() + "/.kube/config");
    Process tap(
        {NODEMESH_MESHCTL_BINARY, "tap", "deploy/voting", "-n", "emojivoto", "--max-events", "3"},
        {.env = MeshctlEnv(home, {})});
    std::set<uint64_t> subscribed;
    const bool asked =
        PollUntil([&] { return !(subscribed = cluster.agent->subscribed()).empty(); }, 10s, 10ms);
    INFO(tap.output());
    REQUIRE(asked);
    cluster.agent->Send(TapEvents(*subscribed.begin(), 4));
    const std::optional<ExitStatus> ended = tap.Wait(20s);
    INFO(tap.output());
    REQUIRE(ended.has_value());
    CHECK(ended->ok());
    const std::string output = tap.output();
    CHECK(std::count(output.begin(), output.end(), '\n') == 3);
    CHECK(output.find("POST") != std::string::npos);
    CHECK(output.find("/emojivoto.v1.VotingService/VotePizza") != std::string::npos);
  }

  SECTION("bob may not tap what goes to payments: the aggregator's own review refuses it") {
    const std::string kubeconfig = cluster.Kubeconfig("bob");
    const CommandResult tap =
        Meshctl(home, {"--kubeconfig", kubeconfig, "tap", "deploy/voting", "-n", "emojivoto",
                       "--to", "deploy/db", "--to-namespace", "payments"});
    CHECK(tap.exit_code == 1);
    CHECK(tap.output ==
          "meshctl: bob may not tap namespace payments: that needs permission 'watch taps' "
          "(API group nodemesh.io) in namespace payments. Someone who may grant it runs:\n"
          "  kubectl create rolebinding bob-nodemesh-tap -n payments --clusterrole=nodemesh-tap "
          "--user=bob\n");
    // The API server let the watch in emojivoto through; the aggregator asked about payments.
    bool denied = false;
    for (const KubeApiServer::Request& request : cluster.api.Requests()) {
      if (!request.review.is_object() || request.review.value("user", "") != "bob") continue;
      const json attributes = request.review.value("resourceAttributes", json::object());
      denied |=
          attributes.value("namespace", "") == "payments" && !request.review.value("allowed", true);
    }
    CHECK(denied);
  }

  SECTION("the aggregator gone: its APIService is unavailable, and meshctl says so") {
    const std::string address = cluster.aggregator->api_address();
    cluster.aggregator.reset();
    cluster.Register(address);
    REQUIRE(cluster.api.ExtensionStatus().at("available") == false);
    const CommandResult stat = Meshctl(
        home, {"--kubeconfig", cluster.Kubeconfig("alice"), "stat", "deploy", "-n", "emojivoto"});
    CHECK(stat.exit_code == 1);
    CHECK(stat.output.starts_with(
        "meshctl: APIService v1alpha1.nodemesh.io is unavailable (the Kubernetes API server " +
        cluster.api.url()));
    CHECK(stat.output.find("answered: service unavailable): the aggregator is not running or "
                           "the API server cannot reach it") != std::string::npos);
  }
}

#if NODEMESH_DASHBOARD
TEST_CASE("meshctl dashboard shows alice the tap she may not open, with the grant command",
          "[meshctl][kube][dashboard]") {
  AggregatedCluster cluster;
  const TempDir home;
  Process dashboard({NODEMESH_MESHCTL_BINARY, "dashboard", "--no-browser"},
                    {.env = MeshctlEnv(home, {{"KUBECONFIG", cluster.Kubeconfig("alice")}})});
  REQUIRE(PollUntil([&] { return dashboard.output().find("?token=") != std::string::npos; }, 30s,
                    50ms));
  std::smatch address;
  const std::string printed = dashboard.output();
  INFO(printed);
  REQUIRE(std::regex_search(printed, address,
                            std::regex(R"(http://127\.0\.0\.1:\d+/\?token=[^#\s]+)")));
  const std::string screenshots = std::string(NODEMESH_BINARY_DIR) + "/test-artifacts/dashboard";
  const BrowserRun run = RunBrowser({
      {{"open", address.str() + "#/tap?target=emojivoto/deploy/voting"}},
      {{"wait", "document.body.dataset.state === 'error'"}, {"timeout", 30}},
      {{"eval", "document.querySelector('[data-error]').textContent"}},
      {{"screenshot", screenshots + "/7-tap-forbidden.png"}},
  });
  INFO(run.output);
  REQUIRE(run.ok);
  CHECK(run.Value(2) ==
        "meshctl: alice may not tap namespace emojivoto: that needs permission 'watch taps' (API "
        "group "
        "nodemesh.io) in namespace emojivoto. Someone who may grant it runs:\n"
        "  kubectl create rolebinding alice-nodemesh-tap -n emojivoto "
        "--clusterrole=nodemesh-tap --user=alice");
}
#endif  // NODEMESH_DASHBOARD

}  // namespace
}  // namespace nodemesh::testing
