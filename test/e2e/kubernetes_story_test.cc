// The emojivoto story in Kubernetes mode, end to end: two simulated nodes whose pods a
// kubelet-like fixture makes (systemd cgroup layout on one, cgroupfs on the other), a test
// API server holding the Pods, Namespace and Services, kube-proxy-style NAT for the
// Services, a nodemesh-agent per node with `--inventory kubernetes`, one aggregator, and
// the app dialling Service cluster IPs. The namespace is meshed live with `meshctl inject`
// against the API server; meshctl then names the workloads behind the Services.

#include <catch2/catch.hpp>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "test/lib/agent_process.h"
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

std::vector<std::string> App(const std::string& script, std::vector<std::string> arguments) {
  std::vector<std::string> argv = {kPython, "-u", SourcePath("demo/emojivoto/app/" + script)};
  argv.insert(argv.end(), arguments.begin(), arguments.end());
  return argv;
}

struct EmojivotoCluster : TwoNodeCluster {
  TempDir directory;
  KubeApiServer api;
  Kubelet kubelet_1{api, node_a, CgroupDriver::kSystemd};
  Kubelet kubelet_2{api, node_b, CgroupDriver::kCgroupfs};
  std::string kubeconfig;  // the operator's, for meshctl
  std::map<std::string, KubePod*> pods;
  std::string aggregator_address;

  EmojivotoCluster()
      : TwoNodeCluster(
            {.tier = "e2e", .network = {.routed = true}, .node_a = "node-1", .node_b = "node-2"}) {
    aggregator_address = StartAggregator({.binary = NODEMESH_AGGREGATOR_BINARY}).address();
    kubelet_1.CreateNamespace("emojivoto");
    kubeconfig = directory.path() + "/kubeconfig";
    api.WriteKubeconfig(kubeconfig, api.admin_token());
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

    const std::string token = api.IssueToken("nodemesh", "nodemesh-agent");
    const std::string agent_kubeconfig = directory.path() + "/agent-kubeconfig";
    api.WriteKubeconfig(agent_kubeconfig, token);
    StartAgents({.binary = NODEMESH_AGENT_BINARY,
                 .inventory = {"--inventory", "kubernetes", "--kubeconfig", agent_kubeconfig}});
  }
  // The agents watch the API server and read the kubeconfigs in `directory`: they stop
  // before those go.
  ~EmojivotoCluster() { StopAgents(); }

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

  CommandResult Meshctl(std::vector<std::string> arguments,
                        std::chrono::milliseconds timeout = 60s) const {
    arguments.insert(arguments.begin(), NODEMESH_MESHCTL_BINARY);
    return RunCommand(arguments, timeout,
                      Process::Options{.env = {{"NODEMESH_AGGREGATOR", aggregator_address},
                                               {"KUBECONFIG", kubeconfig}}});
  }

  std::map<std::string, json> Stat(std::vector<std::string> arguments) const {
    arguments.insert(arguments.begin(), "stat");
    arguments.insert(arguments.end(), {"-n", "emojivoto", "-o", "json"});
    const CommandResult result = Meshctl(arguments);
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

TEST_CASE("kubernetes: emojivoto meshed live with meshctl inject and traced through its Services") {
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

  const CommandResult injected = c.Meshctl({"inject", "ns/emojivoto"});
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
  const CommandResult tap = c.Meshctl({"tap", "deploy/web", "-n", "emojivoto", "--to",
                                       "deploy/voting", "--path", path, "--max-events", "6"},
                                      90s);
  INFO(tap.output);
  CHECK(tap.exit_code == 0);
  CHECK(tap.output.find(":path=" + path) != std::string::npos);
  CHECK(std::regex_search(tap.output, std::regex("(^|\\n)end id=\\S+ .*grpc-status=Unknown")));

  // The same processes as before inject.
  CHECK(c.AppPids() == pids);
  for (const auto& [name, pod] : c.pods) {
    CAPTURE(name);
    CHECK(pod->process->IsRunning());
  }
}

}  // namespace
}  // namespace nodemesh::testing
