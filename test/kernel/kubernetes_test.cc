// Kernel tier for the agent in Kubernetes mode: the real nodemesh-agent with
// `--inventory kubernetes` against a test API server speaking the real list/watch protocol
// (test/lib/kube_apiserver.h), on a simulated node whose pods are made the way a kubelet
// makes them (test/lib/kubelet.h: the Pod object first, then kubelet cgroups, a netns and a
// container process, then the status).
#include <fmt/format.h>
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <thread>

#include "test/lib/agent_process.h"
#include "test/lib/files.h"
#include "test/lib/kube_apiserver.h"
#include "test/lib/kubelet.h"
#include "test/lib/peers.h"
#include "test/lib/scoped_env.h"
#include "test/lib/test_node.h"
#include "test/lib/tier.h"

namespace nodemesh::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

constexpr uint16_t kEchoPort = 7000;
constexpr std::string_view kMeshLabel = "nodemesh.io/mesh";

std::vector<std::string> EchoServer(uint16_t port) {
  return TcpPeer("echo-server", {"--listen", "0.0.0.0", "--port", std::to_string(port)});
}
const std::vector<std::string> kIdle = {"sleep", "3600"};

// One node of a cluster: an API server, a kubelet (systemd cgroup driver unless said), and
// the agent once StartAgent is called, with its own service account's token.
struct KubeNode {
  explicit KubeNode(CgroupDriver driver = CgroupDriver::kSystemd) : kubelet(api, node, driver) {
    token = api.IssueToken("nodemesh", "nodemesh-agent");
    kubeconfig = directory.path() + "/kubeconfig";
    api.WriteKubeconfig(kubeconfig, token);
  }

  // With a kubeconfig unless `in_cluster` (the service account directory and environment a
  // pod gets). Short stall timeout and retention so that tests see them act.
  AgentProcess& StartAgent(bool in_cluster = false, std::vector<std::string> extra = {},
                           std::vector<std::string> launcher = {}) {
    std::vector<std::string> inventory = {"--inventory", "kubernetes"};
    // The environment a pod gets for the API server's Service, while the agent starts.
    std::optional<ScopedEnv> host, port;
    if (in_cluster) {
      host.emplace("KUBERNETES_SERVICE_HOST", api.host());
      port.emplace("KUBERNETES_SERVICE_PORT", std::to_string(api.port()));
      service_account_dir = directory.path() + "/serviceaccount";
      api.WriteServiceAccountDir(service_account_dir, token, "nodemesh");
      inventory.insert(inventory.end(), {"--service-account-dir", service_account_dir});
    } else {
      inventory.insert(inventory.end(), {"--kubeconfig", kubeconfig});
    }
    extra.insert(extra.end(), {"--watch-stall-timeout", "2s"});
    agent.emplace(node, AgentProcessOptions{.binary = NODEMESH_AGENT_BINARY,
                                            .log_level = "debug",
                                            .extra_args = std::move(extra),
                                            .inventory = std::move(inventory),
                                            .launcher = std::move(launcher)});
    return *agent;
  }

  // The pod as the agent's /pods shows it, or null.
  json AgentPod(const KubePod& pod) const {
    const json pods = agent->Get("/pods")["pods"];
    for (const json& entry : pods) {
      if (entry["namespace"] == pod.spec.namespace_name && entry["name"] == pod.spec.name) {
        return entry;
      }
    }
    return nullptr;
  }
  std::string StateOf(const KubePod& pod) const {
    const json entry = AgentPod(pod);
    return entry.is_null() ? "absent" : entry["state"].get<std::string>();
  }
  bool WaitForState(const KubePod& pod, std::string_view state,
                    std::chrono::milliseconds timeout = 20s) const {
    return PollUntil([&] { return StateOf(pod) == state; }, timeout);
  }
  json KubernetesStats() const { return agent->Get("/stats")["kubernetes"]; }
  // The pods watch's last error; empty also before the source has made its watches (the
  // agent serves /stats while it still waits for its first lists).
  std::string PodsLastError() const {
    const json stats = KubernetesStats();
    if (!stats.is_object() || !stats.contains("pods")) return "";
    return stats["pods"].value("last_error", std::string());
  }

  void LabelNamespace(const std::string& name, std::optional<std::string> value) {
    api.MergePatch("/api/v1/namespaces/" + name,
                   {{"metadata", {{"labels", {{kMeshLabel, value ? json(*value) : json()}}}}}});
  }

  RootRequired root_required{"kernel"};
  TempDir directory;
  KubeApiServer api;
  PodNetwork network;
  TestNode node{network, "node-a"};
  Kubelet kubelet;
  std::string token, kubeconfig, service_account_dir;
  std::optional<AgentProcess> agent;
};

// A caller and an echo server in namespace `ns`, both Deployments' pods.
struct ShopPods {
  explicit ShopPods(KubeNode& cluster, const std::string& ns = "shop")
      : server(cluster.kubelet.StartPod({.namespace_name = ns,
                                         .name = "cart-7f9c4-x2k8p",
                                         .workload_name = "cart",
                                         .labels = {{"app", "cart"}},
                                         .service_account = "cart"},
                                        EchoServer(kEchoPort))),
        client(cluster.kubelet.StartPod(
            {.namespace_name = ns, .name = "web-5d8c9-q7w2e", .workload_name = "web"}, kIdle)) {
    REQUIRE(server.process->WaitForOutput("listening", 20s));
  }
  std::string target() const { return server.pod->ip + ":" + std::to_string(kEchoPort); }
  KubePod& server;
  KubePod& client;
};

TEST_CASE("kubernetes: a namespace labelled live has its running pods enrolled and then released") {
  KubeNode cluster;
  cluster.kubelet.CreateNamespace("shop");
  ShopPods shop(cluster);
  const int server_pid = shop.server.process->pid();
  AgentProcess& agent = cluster.StartAgent();
  INFO("agent:\n" << agent.output());

  // Unlabelled: seen, named, not meshed, and why.
  REQUIRE(cluster.WaitForState(shop.client, "unmeshed"));
  json web = cluster.AgentPod(shop.client);
  CHECK(web["owner"] == json({{"kind", "Deployment"}, {"name", "web"}}));
  CHECK(web["uid"] == shop.client.uid);
  CHECK(web["state_reason"].get<std::string>().find("nodemesh.io/mesh=enabled") !=
        std::string::npos);
  CHECK(Dial(*shop.client.pod, shop.target()).exit_code == 0);
  CHECK(agent.ProxyCounter("accepted_outbound") == 0);

  cluster.LabelNamespace("shop", "enabled");
  REQUIRE(cluster.WaitForState(shop.client, "enrolled"));
  REQUIRE(cluster.WaitForState(shop.server, "enrolled"));
  web = cluster.AgentPod(shop.client);
  // The pod-level cgroup of the kubelet's systemd layout, and a netns of its process.
  CHECK(web["cgroup"].get<std::string>().ends_with(
      Kubelet::PodCgroup(CgroupDriver::kSystemd, QosClass::kBestEffort, shop.client.uid)));
  CHECK(web["netns"].get<std::string>().ends_with("/ns/net"));
  CHECK(web["state_reason"] == "namespace shop is labelled nodemesh.io/mesh=enabled");

  // Held across the release below: a live connection through the agent.
  Process held = shop.client.pod->Run(TcpPeer("hold", {"--connect", shop.target()}));
  REQUIRE(held.WaitForOutput("ping 3 ok", 20s));
  const CommandResult dialled = Dial(*shop.client.pod, shop.target());
  INFO(Describe(dialled));
  CHECK(dialled.exit_code == 0);
  CHECK(agent.ProxyCounter("accepted_outbound") == 2);
  CHECK(shop.server.process->pid() == server_pid);  // nothing restarted

  // A pod label overrides its namespace.
  cluster.api.MergePatch(shop.server.path(),
                         {{"metadata", {{"labels", {{kMeshLabel, "disabled"}}}}}});
  REQUIRE(cluster.WaitForState(shop.server, "unmeshed"));
  CHECK(cluster.AgentPod(shop.server)["state_reason"] ==
        "the pod is labelled nodemesh.io/mesh=disabled");
  CHECK(cluster.StateOf(shop.client) == "enrolled");

  // The label removed: released, and the held connection carries on.
  cluster.LabelNamespace("shop", std::nullopt);
  REQUIRE(cluster.WaitForState(shop.client, "unmeshed"));
  const int pings = CountLines(held.output(), "ping ");
  CHECK(PollUntil([&] { return CountLines(held.output(), "ping ") >= pings + 5; }, 20s));
  CHECK(held.IsRunning());
  CHECK(held.output().find("error") == std::string::npos);
  CHECK(Dial(*shop.client.pod, shop.target()).exit_code == 0);
  CHECK(agent.ProxyCounter("accepted_outbound") == 2);  // the new one went direct
}

TEST_CASE(
    "kubernetes: a pod that starts after its namespace is labelled is enrolled once it runs") {
  KubeNode cluster(CgroupDriver::kCgroupfs);
  cluster.kubelet.CreateNamespace("shop", {{std::string(kMeshLabel), "enabled"}});
  AgentProcess& agent = cluster.StartAgent();
  INFO("agent:\n" << agent.output());

  // Scheduled, not started: the agent says what it waits for.
  KubePod& server = cluster.kubelet.StartPod({.namespace_name = "shop",
                                              .name = "cart-0",
                                              .workload_kind = "StatefulSet",
                                              .workload_name = "cart",
                                              .qos = QosClass::kGuaranteed,
                                              .ipv6 = true},
                                             {}, /*start=*/false);
  REQUIRE(cluster.WaitForState(server, "pending"));
  const std::string reason = cluster.AgentPod(server)["state_reason"];
  CHECK((reason == "it has no IP address yet" || reason == "its containers have not started yet"));

  cluster.kubelet.RunPod(server, EchoServer(kEchoPort));
  REQUIRE(server.process->WaitForOutput("listening", 20s));
  REQUIRE(cluster.WaitForState(server, "enrolled"));
  const json entry = cluster.AgentPod(server);
  CHECK(entry["owner"] == json({{"kind", "StatefulSet"}, {"name", "cart"}}));
  CHECK(entry["ips"] == json({server.pod->ip, server.pod->ip6}));  // status.podIPs, both families
  // Guaranteed pods have no QoS level in the cgroupfs layout.
  CHECK(entry["cgroup"].get<std::string>().ends_with("/kubepods/pod" + server.uid));

  // Captured inbound: a caller outside the mesh reaches it through the agent.
  KubePod& caller = cluster.kubelet.StartPod({.namespace_name = "shop",
                                              .name = "probe",
                                              .workload_kind = "",
                                              .labels = {{std::string(kMeshLabel), "disabled"}}},
                                             kIdle);
  REQUIRE(agent.WaitForInboundPort(*server.pod, kEchoPort));
  CHECK(Dial(*caller.pod, server.pod->ip + ":" + std::to_string(kEchoPort)).exit_code == 0);
  CHECK(PollUntil([&] { return agent.ProxyCounter("accepted_inbound") >= 1; }, 10s));
}

TEST_CASE("kubernetes: a static pod is found by its manifest hash and named as its own workload") {
  KubeNode cluster(CgroupDriver::kCgroupfs);
  cluster.kubelet.CreateNamespace("kube-system", {{std::string(kMeshLabel), "enabled"}});
  KubePod& pod = cluster.kubelet.StartPod({.namespace_name = "kube-system",
                                           .name = "etcd-node-a",
                                           .workload_kind = "",
                                           .qos = QosClass::kBurstable,
                                           .static_pod = true},
                                          EchoServer(kEchoPort));
  REQUIRE(pod.process->WaitForOutput("listening", 20s));
  AgentProcess& agent = cluster.StartAgent();
  INFO("agent:\n" << agent.output());
  REQUIRE(cluster.WaitForState(pod, "enrolled"));
  const json entry = cluster.AgentPod(pod);
  CHECK(entry["owner"] == json({{"kind", "Pod"}, {"name", "etcd-node-a"}}));
  CHECK(entry["cgroup"].get<std::string>().ends_with("/kubepods/burstable/pod" + pod.cgroup_id));
}

TEST_CASE("kubernetes: host-network pods and nodemesh's own pods are never meshed") {
  KubeNode cluster;
  cluster.kubelet.CreateNamespace("shop", {{std::string(kMeshLabel), "enabled"}});
  KubePod& host = cluster.kubelet.StartPod({.namespace_name = "shop",
                                            .name = "node-exporter-abcde",
                                            .workload_kind = "DaemonSet",
                                            .workload_name = "node-exporter",
                                            .host_network = true},
                                           kIdle);
  KubePod& own = cluster.kubelet.StartPod({.namespace_name = "shop",
                                           .name = "nodemesh-aggregator-6b7d8-zz9x1",
                                           .workload_name = "nodemesh-aggregator",
                                           .labels = {{"app.kubernetes.io/part-of", "nodemesh"}}},
                                          kIdle);
  ShopPods shop(cluster);
  cluster.StartAgent();
  REQUIRE(cluster.WaitForState(shop.client, "enrolled"));
  CHECK(cluster.StateOf(host) == "unmeshed");
  CHECK(cluster.AgentPod(host)["state_reason"].get<std::string>().find("hostNetwork") !=
        std::string::npos);
  CHECK(cluster.StateOf(own) == "unmeshed");
  // Not even the pod label can mesh a host-network pod.
  cluster.api.MergePatch(host.path(), {{"metadata", {{"labels", {{kMeshLabel, "enabled"}}}}}});
  std::this_thread::sleep_for(2s);
  CHECK(cluster.StateOf(host) == "unmeshed");
}

TEST_CASE(
    "kubernetes: a pod deleted while enrolled is released, its identity and routes forgotten") {
  KubeNode cluster;
  cluster.kubelet.CreateNamespace("shop", {{std::string(kMeshLabel), "enabled"}});
  ShopPods shop(cluster);
  AgentProcess& agent = cluster.StartAgent(false, {"--metrics-retain-idle", "1s"});
  INFO("agent:\n" << agent.output());
  REQUIRE(cluster.WaitForState(shop.client, "enrolled"));
  REQUIRE(cluster.WaitForState(shop.server, "enrolled"));
  // Bytes that read as an HTTP request: the agent names their route.
  const std::string request = "GET /api/cart/42 HTTP/1.1\r\nHost: cart\r\n\r\n";
  REQUIRE(shop.client.pod
              ->RunCommand(TcpPeer("dial", {"--connect", shop.target(), "--message", request}))
              .exit_code == 0);
  const auto routes = [&] { return agent.Get("/stats")["proxy"]["routes"].get<uint64_t>(); };
  REQUIRE(PollUntil([&] { return routes() > 0; }, 10s));
  const uint64_t identities = agent.Get("/stats")["proxy"]["identities"];

  cluster.kubelet.DeletePod(shop.server);
  REQUIRE(cluster.WaitForState(shop.server, "absent"));
  CHECK(agent.output().find("released shop/cart-7f9c4-x2k8p") != std::string::npos);
  // Forgotten within a forgetting round (10 s) once its series went idle (1 s).
  CHECK(PollUntil(
      [&] { return agent.Get("/stats")["proxy"]["identities"].get<uint64_t>() < identities; },
      25s));
  // Its routes too: nothing counts under them any more.
  CHECK(PollUntil([&] { return routes() == 0; }, 25s));
}

TEST_CASE("kubernetes: in-cluster credentials work and a rotated token is used without a restart") {
  KubeNode cluster;
  cluster.kubelet.CreateNamespace("shop");
  ShopPods shop(cluster);
  AgentProcess& agent = cluster.StartAgent(/*in_cluster=*/true);
  INFO("agent:\n" << agent.output());
  REQUIRE(cluster.WaitForState(shop.client, "unmeshed"));

  // The kubelet writes a new token and the old one expires.
  const std::string rotated = cluster.api.IssueToken("nodemesh", "nodemesh-agent");
  WriteFile(cluster.service_account_dir + "/token.new", rotated);
  REQUIRE(::rename((cluster.service_account_dir + "/token.new").c_str(),
                   (cluster.service_account_dir + "/token").c_str()) == 0);
  cluster.api.RevokeToken(cluster.token);
  cluster.api.CloseWatches();  // the next requests need a token

  cluster.LabelNamespace("shop", "enabled");
  REQUIRE(cluster.WaitForState(shop.client, "enrolled"));
  CHECK(cluster.KubernetesStats()["token_reloads"].get<uint64_t>() >= 1);
  for (const KubeApiServer::Request& request : cluster.api.Requests()) {
    if (request.user != "admin") CHECK(request.status != 401);
  }
}

TEST_CASE("kubernetes: a 410 Gone as a status or inside the stream makes the agent list again") {
  const auto mode =
      GENERATE(KubeApiServer::GoneMode::kHttpStatus, KubeApiServer::GoneMode::kErrorEvent);
  KubeNode cluster;
  cluster.kubelet.CreateNamespace("shop");
  ShopPods shop(cluster);
  cluster.StartAgent();
  INFO("agent:\n" << cluster.agent->output());
  REQUIRE(cluster.WaitForState(shop.client, "unmeshed"));
  const uint64_t lists = cluster.KubernetesStats()["namespaces"]["lists"];

  cluster.api.ExpireHistory(mode);
  cluster.api.CloseWatches();
  cluster.LabelNamespace("shop", "enabled");
  REQUIRE(cluster.WaitForState(shop.client, "enrolled"));
  const json stats = cluster.KubernetesStats();
  INFO(stats.dump(2));
  CHECK(stats["namespaces"]["gone"].get<uint64_t>() >= 1);
  CHECK(stats["namespaces"]["lists"].get<uint64_t>() > lists);
}

TEST_CASE("kubernetes: a stalled watch is started again from where it was without a new list") {
  KubeNode cluster;
  cluster.kubelet.CreateNamespace("shop");
  ShopPods shop(cluster);
  cluster.StartAgent();
  INFO("agent:\n" << cluster.agent->output());
  REQUIRE(cluster.WaitForState(shop.client, "unmeshed"));
  const json before = cluster.KubernetesStats();

  cluster.api.StallWatches(true);
  cluster.LabelNamespace("shop", "enabled");
  // Silence past the stall timeout (2 s): the watch is given up and started again.
  CHECK(PollUntil([&] { return cluster.KubernetesStats()["namespaces"]["stalls"] >= 1; }, 10s));
  cluster.api.StallWatches(false);
  REQUIRE(cluster.WaitForState(shop.client, "enrolled"));
  const json after = cluster.KubernetesStats();
  INFO(after.dump(2));
  CHECK(after["namespaces"]["lists"] == before["namespaces"]["lists"]);
}

TEST_CASE(
    "kubernetes: with the API server down the agent keeps its pods and proxies and then catches "
    "up") {
  KubeNode cluster;
  cluster.kubelet.CreateNamespace("shop", {{std::string(kMeshLabel), "enabled"}});
  ShopPods shop(cluster);
  AgentProcess& agent = cluster.StartAgent();
  INFO("agent:\n" << agent.output());
  REQUIRE(cluster.WaitForState(shop.client, "enrolled"));

  cluster.api.Stop();
  std::this_thread::sleep_for(3s);  // past a stall timeout: watches and lists fail meanwhile
  CHECK(cluster.StateOf(shop.client) == "enrolled");
  CHECK(Dial(*shop.client.pod, shop.target()).exit_code == 0);
  CHECK(agent.ProxyCounter("accepted_outbound") == 1);
  CHECK_FALSE(cluster.PodsLastError().empty());

  cluster.api.Start();
  cluster.api.MergePatch(shop.client.path(),
                         {{"metadata", {{"labels", {{kMeshLabel, "disabled"}}}}}});
  REQUIRE(cluster.WaitForState(shop.client, "unmeshed", 40s));
  CHECK(cluster.PodsLastError().empty());
  CHECK(agent.process().IsRunning());
}

TEST_CASE("kubernetes: a refused token is logged and retried until a valid one is written") {
  KubeNode cluster;
  cluster.kubelet.CreateNamespace("shop", {{std::string(kMeshLabel), "enabled"}});
  ShopPods shop(cluster);
  const std::string valid = cluster.token;
  cluster.token = "not-a-token";
  AgentProcess& agent = cluster.StartAgent(/*in_cluster=*/true);
  CHECK(PollUntil([&] { return cluster.PodsLastError().find("401") != std::string::npos; }, 20s));
  CHECK(cluster.StateOf(shop.client) == "absent");
  CHECK(agent.process().IsRunning());

  WriteFile(cluster.service_account_dir + "/token", valid);
  REQUIRE(cluster.WaitForState(shop.client, "enrolled", 60s));
  CHECK(cluster.PodsLastError().empty());
  INFO("agent:\n" << agent.output());
  CHECK(agent.output().find("401") != std::string::npos);  // said in its log
}

TEST_CASE("kubernetes: an exec plugin's kubeconfig: run never interactive, again after a 401") {
  KubeNode cluster;
  cluster.kubelet.CreateNamespace("shop", {{std::string(kMeshLabel), "enabled"}});
  ShopPods shop(cluster);
  // The counting plugin (test/lib/exec_plugin.sh) hands out the agent's token, then a second.
  const std::string plugin_dir = cluster.directory.path() + "/plugin";
  std::filesystem::create_directories(plugin_dir);
  const std::string second = cluster.api.IssueToken("nodemesh", "nodemesh-agent");
  WriteFile(plugin_dir + "/tokens", cluster.token + "\n" + second + "\n");
  WriteFile(cluster.kubeconfig,
            fmt::format("clusters:\n- name: c\n  cluster: {{server: \"{}\", "
                        "certificate-authority: \"{}\"}}\n"
                        "users:\n- name: agent\n  user:\n    exec:\n"
                        "      apiVersion: client.authentication.k8s.io/v1\n"
                        "      command: {}\n"
                        "      interactiveMode: IfAvailable\n"
                        "      env: [{{name: PLUGIN_DIR, value: \"{}\"}}]\n"
                        "contexts:\n- name: c\n  context: {{cluster: c, user: agent}}\n"
                        "current-context: c\n",
                        cluster.api.url(), cluster.api.ca_file(),
                        SourcePath("test/lib/exec_plugin.sh"), plugin_dir));
  AgentProcess& agent = cluster.StartAgent();
  REQUIRE(cluster.WaitForState(shop.client, "enrolled", 60s));
  INFO("agent:\n" << agent.output());
  CHECK(cluster.KubernetesStats()["exec_runs"] == 1);
  CHECK(ReadFile(plugin_dir + "/exec-info") ==
        R"({"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1",)"
        R"("spec":{"interactive":false}})");
  // Its stderr in the agent's log.
  CHECK(agent.output().find("exec plugin run 1") != std::string::npos);

  // The token revoked and the watches cut: their next request gets a 401, the plugin runs
  // again and the watches go on with the second token, with no error left.
  cluster.api.RevokeToken(cluster.token);
  cluster.api.CloseWatches();
  REQUIRE(PollUntil([&] { return cluster.KubernetesStats()["exec_runs"] == 2; }, 20s));
  CHECK(PollUntil([&] { return cluster.api.OpenWatches() == 3; }, 20s));  // pods, ns, svc
  int refused = 0;
  for (const KubeApiServer::Request& request : cluster.api.Requests())
    refused += request.status == 401;
  CHECK(refused >= 1);
  CHECK(cluster.PodsLastError().empty());
  CHECK(cluster.StateOf(shop.client) == "enrolled");
}

TEST_CASE("kubernetes: an API server whose certificate does not verify is refused and said so") {
  KubeNode cluster;
  cluster.kubelet.CreateNamespace("shop", {{std::string(kMeshLabel), "enabled"}});
  ShopPods shop(cluster);
  std::string text = ReadFile(cluster.kubeconfig);
  const size_t at = text.find(cluster.api.ca_file());
  REQUIRE(at != std::string::npos);
  text.replace(at, cluster.api.ca_file().size(), cluster.api.other_ca_file());
  WriteFile(cluster.kubeconfig, text);
  AgentProcess& agent = cluster.StartAgent();
  CHECK(PollUntil(
      [&] {
        return cluster.PodsLastError().find(cluster.api.other_ca_file()) != std::string::npos;
      },
      20s));
  CHECK(cluster.StateOf(shop.client) == "absent");
  CHECK(agent.process().IsRunning());
  for (const KubeApiServer::Request& request : cluster.api.Requests()) {
    CHECK(request.user == "admin");  // nothing of the agent's got through
  }
}

TEST_CASE("kubernetes: an agent inside a cgroup namespace of its own finds and enrols the pods") {
  KubeNode cluster;
  cluster.kubelet.CreateNamespace("shop", {{std::string(kMeshLabel), "enabled"}});
  ShopPods shop(cluster);
  // As a container runtime would start it: its own cgroup, then a cgroup namespace rooted
  // there, so that the pods' cgroups lie outside it ("/.." in /proc/<pid>/cgroup).
  const std::string own = cluster.node.cgroup_dir() + "/nodemesh-agent";
  REQUIRE(::mkdir(own.c_str(), 0755) == 0);
  AgentProcess& agent = cluster.StartAgent(
      false, {},
      {"/bin/sh", "-c",
       "echo $$ > " + own + "/cgroup.procs && exec unshare --cgroup \"$0\" \"$@\""});
  INFO("agent:\n" << agent.output());
  REQUIRE(cluster.WaitForState(shop.client, "enrolled"));
  REQUIRE(cluster.WaitForState(shop.server, "enrolled"));
  CHECK(std::filesystem::read_symlink(fmt::format("/proc/{}/ns/cgroup", agent.process().pid())) !=
        std::filesystem::read_symlink("/proc/self/ns/cgroup"));
  CHECK(Dial(*shop.client.pod, shop.target()).exit_code == 0);
  CHECK(agent.ProxyCounter("accepted_outbound") == 1);
}

TEST_CASE("kubernetes: the agent is ready once its first inventory is applied, and healthy") {
  KubeNode cluster;
  cluster.kubelet.CreateNamespace("shop", {{std::string(kMeshLabel), "enabled"}});
  ShopPods shop(cluster);
  cluster.api.Stop();  // the first lists cannot be made yet
  AgentProcess& agent = cluster.StartAgent();
  INFO("agent:\n" << agent.output());
  std::optional<HttpReply> ready = agent.GetMetricsPort("/readyz");
  REQUIRE(ready);
  CHECK(ready->status == 503);
  CHECK_THAT(ready->body, Catch::StartsWith("not ready: waiting for the first inventory"));
  std::optional<HttpReply> healthy = agent.GetMetricsPort("/healthz");
  REQUIRE(healthy);
  CHECK(healthy->status == 200);  // starting is not failing: no restart while the API is away

  cluster.api.Start();
  CHECK(PollUntil(
      [&] {
        ready = agent.GetMetricsPort("/readyz");
        return ready && ready->status == 200;
      },
      30s));
  CHECK(ready->body == "ready\n");
  CHECK(cluster.WaitForState(shop.client, "enrolled"));
  healthy = agent.GetMetricsPort("/healthz");
  REQUIRE(healthy);
  CHECK(healthy->status == 200);
  CHECK(healthy->body == "ok\n");
}

// The capabilities the Helm chart grants the agent's container, everything else dropped.
const std::vector<std::string> kGranted = {"sys_admin", "net_admin", "sys_ptrace"};

// A launcher that starts the agent, root as in its container, with only `capabilities`
// (setpriv bounds them: root's permitted set after exec is the bounding set).
std::vector<std::string> WithOnly(const std::vector<std::string>& capabilities) {
  std::string set = "-all";
  for (const std::string& capability : capabilities) set += ",+" + capability;
  return {"setpriv", "--bounding-set", set, "--inh-caps", set, "--"};
}

std::vector<std::string> GrantedBut(const std::string& missing) {
  std::vector<std::string> capabilities;
  for (const std::string& capability : kGranted) {
    if (capability != missing) capabilities.push_back(capability);
  }
  return WithOnly(capabilities);
}

TEST_CASE("kubernetes: the capabilities the chart grants are enough to enrol, proxy and count") {
  KubeNode cluster;
  cluster.kubelet.CreateNamespace("shop", {{std::string(kMeshLabel), "enabled"}});
  ShopPods shop(cluster);
  AgentProcess& agent = cluster.StartAgent(false, {}, WithOnly(kGranted));
  INFO("agent:\n" << agent.output());
  REQUIRE(cluster.WaitForState(shop.client, "enrolled"));
  REQUIRE(cluster.WaitForState(shop.server, "enrolled"));
  CHECK(Dial(*shop.client.pod, shop.target()).exit_code == 0);
  CHECK(agent.ProxyCounter("accepted_outbound") == 1);
  // Dialled straight into the server pod, transparently from the client's address: the
  // inbound path's socket, made with the same capabilities.
  CHECK(PollUntil([&] { return agent.ProxyCounter("same_node_direct") == 1; }, 5s));
  const std::string status = ReadFile(fmt::format("/proc/{}/status", agent.process().pid()));
  CHECK_THAT(status, Catch::Contains("CapEff:\t0000000000281000"));  // exactly those three
}

TEST_CASE(
    "kubernetes: an agent without CAP_SYS_ADMIN or CAP_NET_ADMIN stops at once and names it") {
  const auto [capability, name] = GENERATE(table<std::string, std::string>(
      {{"sys_admin", "CAP_SYS_ADMIN"}, {"net_admin", "CAP_NET_ADMIN"}}));
  CAPTURE(name);
  KubeNode cluster;
  try {
    cluster.StartAgent(false, {}, GrantedBut(capability));
    FAIL("the agent started without " << name);
  } catch (const std::runtime_error& e) {
    const std::string message = e.what();
    INFO(message);
    CHECK(message.find("the agent lacks " + name) != std::string::npos);
    CHECK(message.find("grant it") != std::string::npos);
  }
}

TEST_CASE("kubernetes: without CAP_SYS_PTRACE the agent cannot see into pods and says why") {
  KubeNode cluster;
  cluster.kubelet.CreateNamespace("shop", {{std::string(kMeshLabel), "enabled"}});
  ShopPods shop(cluster);
  AgentProcess& agent = cluster.StartAgent(false, {}, GrantedBut("sys_ptrace"));
  INFO("agent:\n" << agent.output());
  REQUIRE(cluster.WaitForState(shop.client, "pending"));
  const std::string reason = cluster.AgentPod(shop.client)["state_reason"];
  CHECK_THAT(reason, Catch::Contains("Permission denied") &&
                         Catch::Contains("the agent lacks CAP_SYS_PTRACE"));
  CHECK_THAT(agent.output(),
             Catch::Contains(shop.client.spec.namespace_name + "/" + shop.client.spec.name +
                             " is meshed but not enrolled yet") &&
                 Catch::Contains("the agent lacks CAP_SYS_PTRACE"));
  CHECK(Dial(*shop.client.pod, shop.target()).exit_code == 0);  // direct, as if unmeshed
  CHECK(agent.ProxyCounter("accepted_outbound") == 0);
}

// As a container runtime mounts it: /proc/sys read-only in a mount namespace of the
// agent's own; `host_proc`, if not empty, gets the host's /proc (writable) beforehand, as
// the chart mounts the node's /proc and /proc/sys/net.
std::vector<std::string> WithReadOnlyProcSys(const std::string& host_proc) {
  std::string script = "set -e; ";
  if (!host_proc.empty()) script += "mount --rbind /proc " + host_proc + "; ";
  script += "mount --bind /proc/sys /proc/sys; mount -o remount,bind,ro /proc/sys; ";
  script += "exec \"$0\" \"$@\"";
  return {"unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", script};
}

TEST_CASE(
    "kubernetes: with a read-only /proc/sys the agent sets pods' sysctls through --proc-root") {
  KubeNode cluster;
  cluster.kubelet.CreateNamespace("shop", {{std::string(kMeshLabel), "enabled"}});
  ShopPods shop(cluster);
  SECTION("through the host's /proc mounted elsewhere: enrolled, proxied both ways") {
    const std::string host_proc = cluster.directory.path() + "/host-proc";
    REQUIRE(::mkdir(host_proc.c_str(), 0755) == 0);
    AgentProcess& agent =
        cluster.StartAgent(false, {"--proc-root", host_proc}, WithReadOnlyProcSys(host_proc));
    INFO("agent:\n" << agent.output());
    REQUIRE(cluster.WaitForState(shop.server, "enrolled"));
    REQUIRE(cluster.WaitForState(shop.client, "enrolled"));
    REQUIRE(agent.WaitForInboundPort(*shop.server.pod, kEchoPort));
    CHECK(Dial(*shop.client.pod, shop.target()).exit_code == 0);
    // Into the server pod from the client's address, whose replies the sysctl brings back.
    CHECK(PollUntil([&] { return agent.ProxyCounter("same_node_direct") == 1; }, 5s));
    CHECK(shop.server.pod->RunCommand({"cat", "/proc/sys/net/ipv4/tcp_fwmark_accept"}).output ==
          "1\n");
  }
  SECTION("through its own read-only /proc/sys: the pod fails and the agent says what to mount") {
    AgentProcess& agent = cluster.StartAgent(false, {}, WithReadOnlyProcSys(""));
    INFO("agent:\n" << agent.output());
    REQUIRE(cluster.WaitForState(shop.server, "failed"));
    CHECK_THAT(cluster.AgentPod(shop.server)["enrolment_error"].get<std::string>(),
               Catch::Contains("is read-only") && Catch::Contains("/proc/sys/net writable"));
  }
}

}  // namespace
}  // namespace nodemesh::testing
