// The emojivoto story in Kubernetes mode, end to end: two simulated nodes whose pods a
// kubelet-like fixture makes (systemd cgroup layout on one, cgroupfs on the other), a test
// API server holding the Pods, Namespace and Services, kube-proxy-style NAT for the
// Services, a nodemesh-agent per node with `--inventory kubernetes`, one aggregator, and
// the app dialling Service cluster IPs. The namespace is meshed live with `meshctl inject`
// against the API server; meshctl then names the workloads behind the Services.
//
// Kubernetes authenticates everyone, as the chart installs it: the agents present projected
// tokens of their pods, which the aggregator reviews; the aggregator is the APIService
// v1alpha1.nodemesh.io behind the API server's aggregation layer; meshctl has only a user's
// kubeconfig, and RBAC decides what that user may read and tap.

#include <catch2/catch.hpp>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "test/lib/agent_process.h"
#include "test/lib/certificates.h"
#include "test/lib/files.h"
#include "test/lib/kube_apiserver.h"
#include "test/lib/kubelet.h"
#include "test/lib/peers.h"
#include "test/lib/process.h"
#include "test/lib/test_node.h"
#include "test/lib/tier.h"
#include "test/lib/two_node_cluster.h"

namespace nodemesh::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

constexpr uint16_t kAppPort = 8080;

// RBAC as the chart installs it: the agents read pods, namespaces and Services; the
// aggregator reviews tokens and access, reads the front proxy's settings and its agents'
// pods; the user roles. alice may read and tap emojivoto, bob only read it.
json StoryRbac() {
  return json::parse(R"([
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
     "metadata": {"name": "nodemesh-agent"},
     "rules": [{"apiGroups": [""], "resources": ["pods", "namespaces", "services"],
                "verbs": ["list", "watch"]}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
     "metadata": {"name": "nodemesh-agent"},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                 "name": "nodemesh-agent"},
     "subjects": [{"kind": "ServiceAccount", "name": "nodemesh-agent", "namespace": "nodemesh"}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
     "metadata": {"name": "nodemesh-aggregator-auth-delegator"},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                 "name": "system:auth-delegator"},
     "subjects": [{"kind": "ServiceAccount", "name": "nodemesh-aggregator",
                   "namespace": "nodemesh"}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
     "metadata": {"name": "nodemesh-aggregator-auth-reader", "namespace": "kube-system"},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                 "name": "extension-apiserver-authentication-reader"},
     "subjects": [{"kind": "ServiceAccount", "name": "nodemesh-aggregator",
                   "namespace": "nodemesh"}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
     "metadata": {"name": "nodemesh-aggregator", "namespace": "nodemesh"},
     "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
     "metadata": {"name": "nodemesh-aggregator", "namespace": "nodemesh"},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                 "name": "nodemesh-aggregator"},
     "subjects": [{"kind": "ServiceAccount", "name": "nodemesh-aggregator",
                   "namespace": "nodemesh"}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
     "metadata": {"name": "nodemesh-read"},
     "rules": [{"apiGroups": ["nodemesh.io"], "resources": ["stats", "edges", "routes", "inventory"],
                "verbs": ["get"]}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
     "metadata": {"name": "nodemesh-tap"},
     "rules": [{"apiGroups": ["nodemesh.io"], "resources": ["taps"], "verbs": ["watch"]}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
     "metadata": {"name": "alice-nodemesh-read", "namespace": "emojivoto"},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                 "name": "nodemesh-read"},
     "subjects": [{"kind": "User", "name": "alice"}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
     "metadata": {"name": "alice-nodemesh-tap", "namespace": "emojivoto"},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                 "name": "nodemesh-tap"},
     "subjects": [{"kind": "User", "name": "alice"}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
     "metadata": {"name": "bob-nodemesh-read", "namespace": "emojivoto"},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                 "name": "nodemesh-read"},
     "subjects": [{"kind": "User", "name": "bob"}]}
  ])");
}

std::vector<std::string> App(const std::string& script, std::vector<std::string> arguments) {
  std::vector<std::string> argv = {kPython, "-u", SourcePath("demo/emojivoto/app/" + script)};
  argv.insert(argv.end(), arguments.begin(), arguments.end());
  return argv;
}

struct EmojivotoCluster : TwoNodeCluster {
  TempDir directory;
  KubeApiServer api{{.rbac_file = directory.Write("rbac.json", StoryRbac().dump())}};
  Kubelet kubelet_1{api, node_a, CgroupDriver::kSystemd};
  Kubelet kubelet_2{api, node_b, CgroupDriver::kCgroupfs};
  // meshctl's kubeconfigs: the operator's (cluster admin), and two users'.
  std::map<std::string, std::string> kubeconfigs;
  std::map<std::string, KubePod*> pods;

  EmojivotoCluster()
      : TwoNodeCluster(
            {.tier = "e2e", .network = {.routed = true}, .node_a = "node-1", .node_b = "node-2"}) {
    StartRegisteredAggregator();
    kubelet_1.CreateNamespace("emojivoto");
    for (const std::string user : {"operator", "alice", "bob"}) {
      kubeconfigs[user] = directory.path() + "/" + user + ".kubeconfig";
      api.WriteKubeconfig(kubeconfigs[user],
                          user == "operator" ? api.admin_token() : api.IssueUserToken(user));
    }
    // Backends first, then the Services in front of them, then their callers.
    pods["emoji"] = &Start(kubelet_1, "emoji", "emoji-6c9f7-k2x8q", "emoji",
                           App("emoji.py", {"--listen", "0.0.0.0:8080"}));
    pods["voting"] = &Start(kubelet_2, "voting", "voting-7d4b8-p9z3m", "voting",
                            App("voting.py", {"--listen", "0.0.0.0:8080"}));
    const Service& emoji_svc = AddService("emoji-svc", *pods["emoji"]);
    const Service& voting_svc = AddService("voting-svc", *pods["voting"]);
    pods["web"] = &Start(kubelet_2, "web", "web-5f8d6-w4n7c", "web",
                         App("web.py", {"--listen", "0.0.0.0:8080", "--emoji-addr",
                                        emoji_svc.target(), "--voting-addr", voting_svc.target()}));
    const Service& web_svc = AddService("web-svc", *pods["web"]);
    pods["vote-bot"] = &Start(kubelet_1, "vote-bot", "vote-bot-84b7d-h6t2r", "default",
                              App("vote_bot.py", {"--web-addr", web_svc.target(), "--rate", "5"}));

    // Each agent runs as a pod of the DaemonSet: it reads the API server with its
    // ServiceAccount's token and reports to the aggregator with its pod's projected one.
    const std::string token = api.IssueToken("nodemesh", "nodemesh-agent");
    const std::string agent_kubeconfig = directory.path() + "/agent-kubeconfig";
    api.WriteKubeconfig(agent_kubeconfig, token);
    for (TestNode* node : {&node_a, &node_b}) {
      const std::string pod = "nodemesh-agent-" + node->name();
      api.Create(
          "/api/v1/namespaces/nodemesh/pods",
          {{"metadata", {{"name", pod}}},
           {"spec", {{"nodeName", node->name()}, {"serviceAccountName", "nodemesh-agent"}}}});
      const std::string projected =
          directory.Write(pod + ".token", api.IssueToken("nodemesh", "nodemesh-agent",
                                                         {.audiences = {"nodemesh.io/aggregator"},
                                                          .expiration = std::chrono::seconds(3600),
                                                          .pod_name = pod,
                                                          .node_name = node->name()}));
      StartAgent(*node,
                 {.binary = NODEMESH_AGENT_BINARY,
                  .extra_args = {"--aggregator-ca", directory.path() + "/aggregator-ca.crt",
                                 "--aggregator-token-file", projected},
                  .inventory = {"--inventory", "kubernetes", "--kubeconfig", agent_kubeconfig}});
    }
  }
  // The agents watch the API server and read the kubeconfigs in `directory`: they stop
  // before those go.
  ~EmojivotoCluster() { StopAgents(); }

  // The aggregator as the chart runs it: its own ServiceAccount's token, HTTPS for the
  // aggregation layer with a certificate for its Service's name, registered as the
  // APIService with its CA.
  void StartRegisteredAggregator() {
    MakeCa(directory, "aggregator-ca");
    MakeServerCertificate(directory, "aggregator-ca", "aggregator",
                          {"nodemesh-aggregator.nodemesh.svc"});
    const std::string kubeconfig = directory.path() + "/aggregator.kubeconfig";
    api.WriteKubeconfig(kubeconfig, api.IssueToken("nodemesh", "nodemesh-aggregator"));
    const AggregatorProcess& aggregator = TwoNodeCluster::StartAggregator(
        {.binary = NODEMESH_AGGREGATOR_BINARY,
         .extra_args = {"--tls-cert", directory.path() + "/aggregator.crt", "--tls-key",
                        directory.path() + "/aggregator.key", "--api-listen", "127.0.0.1:0",
                        "--kubeconfig", kubeconfig, "--agent-service-account",
                        "nodemesh/nodemesh-agent"}});
    // Available once it has read the front proxy's settings and answers the API server's
    // check, which is made again each second until then.
    api.RegisterExtension({.address = aggregator.api_address(),
                           .ca_bundle_pem = ReadFile(directory.path() + "/aggregator-ca.crt")});
    const bool available =
        PollUntil([&] { return api.ExtensionStatus().at("available") == true; }, 15s, 100ms);
    INFO(api.ExtensionStatus().dump(1));
    REQUIRE(available);
  }

  KubePod& Start(Kubelet& kubelet, const std::string& workload, const std::string& name,
                 const std::string& service_account, std::vector<std::string> command) {
    KubePod& pod = kubelet.StartPod({.namespace_name = "emojivoto",
                                     .name = name,
                                     .workload_name = workload,
                                     .labels = {{"app", workload}},
                                     .service_account = service_account},
                                    std::move(command));
    if (workload != "vote-bot") REQUIRE(pod.process->WaitForOutput("ready: serving", 30s));
    return pod;
  }

  const Service& AddService(const std::string& name, const KubePod& backend) {
    const Service& service = network.AddService({.namespace_name = "emojivoto",
                                                 .name = name,
                                                 .port = kAppPort,
                                                 .backends = {Target(*backend.pod, kAppPort)}});
    kubelet_1.PublishService(service);
    return service;
  }

  // meshctl as `user` runs it: with nothing but that user's kubeconfig.
  CommandResult Meshctl(const std::string& user, std::vector<std::string> arguments,
                        std::chrono::milliseconds timeout = 60s) const {
    arguments.insert(arguments.begin(), NODEMESH_MESHCTL_BINARY);
    return RunCommand(arguments, timeout,
                      Process::Options{.env = {{"KUBECONFIG", kubeconfigs.at(user)}}});
  }

  std::map<std::string, json> Stat(std::vector<std::string> arguments) const {
    arguments.insert(arguments.begin(), "stat");
    arguments.insert(arguments.end(), {"-n", "emojivoto", "-o", "json"});
    const CommandResult result = Meshctl("alice", arguments);
    INFO(result.output);
    REQUIRE(result.exit_code == 0);
    const size_t start = result.output.find('{');
    REQUIRE(start != std::string::npos);
    const json stat =
        json::parse(result.output.substr(start, result.output.rfind('}') - start + 1));
    std::map<std::string, json> rows;
    for (const json& row : stat["rows"]) rows[row["name"]] = row;
    return rows;
  }

  std::map<std::string, int> AppPids() const {
    std::map<std::string, int> pids;
    for (const auto& [name, pod] : pods) pids[name] = pod->process->pid();
    return pids;
  }
};

TEST_CASE(
    "kubernetes: emojivoto meshed live with meshctl inject and traced through its Services, "
    "every caller known to Kubernetes") {
  EmojivotoCluster c;

  // Before inject: the pods are known and unmeshed, and there is no traffic to show.
  std::map<std::string, json> rows;
  REQUIRE(PollUntil([&] { return (rows = c.Stat({"deploy"})).size() == 4; }, 30s, 500ms));
  for (const auto& [name, row] : rows) {
    CAPTURE(name);
    CHECK(row["meshed"] == 0);
    CHECK(row["running"] == 1);
    CHECK(row["requests"] == 0);
  }
  const std::map<std::string, int> pids = c.AppPids();

  const CommandResult injected = c.Meshctl("operator", {"inject", "ns/emojivoto"});
  INFO(injected.output);
  REQUIRE(injected.exit_code == 0);
  CHECK(injected.output.find("namespace emojivoto labelled nodemesh.io/mesh=enabled") !=
        std::string::npos);

  // Every deployment serving requests has some, from half a minute of traffic.
  const bool traffic = PollUntil(
      [&] {
        rows = c.Stat({"deploy"});
        for (const char* name : {"web", "emoji", "voting"}) {
          if (!rows.count(name) || rows[name]["requests"].get<uint64_t>() < 20) return false;
        }
        return true;
      },
      120s, 1s);
  INFO(json(rows).dump(1));
  REQUIRE(traffic);
  for (const char* name : {"web", "emoji", "voting", "vote-bot"}) {
    CAPTURE(name);
    CHECK(rows[name]["meshed"] == 1);
  }
  CHECK(rows["emoji"]["success_rate"].get<double>() == 1.0);
  CHECK(rows["voting"]["success_rate"].get<double>() < 1.0);
  CHECK(rows["web"]["success_rate"].get<double>() < 1.0);

  // web dials Service cluster IPs; the workloads it reached are named, not "External".
  std::set<std::string> called;
  for (const auto& [name, row] : c.Stat({"deploy", "--from", "deploy/web"})) {
    if (row["requests"].get<uint64_t>() > 0) called.insert(name);
  }
  CHECK(called == std::set<std::string>{"emoji", "voting"});
  const std::map<std::string, json> services = c.Stat({"svc"});
  INFO(json(services).dump(1));
  for (const char* name : {"emoji-svc", "voting-svc", "web-svc"}) {
    CAPTURE(name);
    REQUIRE(services.count(name));
    CHECK(services.at(name)["requests"].get<uint64_t>() > 0);
  }

  // Who dialled voting-svc: web.
  std::set<std::string> callers;
  for (const auto& [name, row] : c.Stat({"deploy", "--to", "svc/voting-svc"})) {
    if (row["requests"].get<uint64_t>() > 0) callers.insert(name);
  }
  CHECK(callers == std::set<std::string>{"web"});

  // Tap: a doughnut vote fails with grpc-status Unknown.
  const std::string path = "/emojivoto.v1.VotingService/VoteDoughnut";
  const CommandResult tap = c.Meshctl("alice",
                                      {"tap", "deploy/web", "-n", "emojivoto", "--to",
                                       "deploy/voting", "--path", path, "--max-events", "6"},
                                      90s);
  INFO(tap.output);
  CHECK(tap.exit_code == 0);
  CHECK(tap.output.find(":path=" + path) != std::string::npos);
  CHECK(std::regex_search(tap.output, std::regex("(^|\\n)end id=\\S+ .*grpc-status=Unknown")));

  // bob may read emojivoto but not tap it: meshctl says which permission that needs and how
  // to grant it.
  const CommandResult refused = c.Meshctl("bob", {"tap", "deploy/web", "-n", "emojivoto"});
  INFO(refused.output);
  CHECK(refused.exit_code != 0);
  CHECK(refused.output.find("kubectl create rolebinding bob-nodemesh-tap -n emojivoto "
                            "--clusterrole=nodemesh-tap --user=bob") != std::string::npos);

  // Every answer alice had came through the API server, as hers.
  std::set<std::string> resources;
  for (const KubeApiServer::Request& request : c.api.Requests()) {
    if (request.user == "alice" && request.status == 200) {
      resources.insert(request.path.substr(0, request.path.find('?')));
    }
  }
  CHECK(resources.count("/apis/nodemesh.io/v1alpha1/namespaces/emojivoto/stats/deployment"));
  CHECK(resources.count("/apis/nodemesh.io/v1alpha1/namespaces/emojivoto/taps"));

  // The same processes as before inject.
  CHECK(c.AppPids() == pids);
  for (const auto& [name, pod] : c.pods) {
    CAPTURE(name);
    CHECK(pod->process->IsRunning());
  }
}

}  // namespace
}  // namespace nodemesh::testing
