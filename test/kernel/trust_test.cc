// Kernel tier for trust between the mesh's parts: the agent and meshctl talk TLS to a real
// aggregator, which knows them by certificates of its client CA. An agent reports only for
// its own node, reading needs a certificate, tapping a namespace needs that namespace in the
// certificate, and the shell's relay needs every namespace. A relay that records every byte
// between the agent and the aggregator proves nothing crosses that wire in the clear. Agents
// known by their pod's ServiceAccount token instead, reviewed by the test API server, report
// for their pod's node only, and keep their stream when the token rotates.
#include <fmt/format.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "test/kernel/kernel_cluster.h"
#include "test/lib/agent_process.h"
#include "test/lib/aggregator_process.h"
#include "test/lib/certificates.h"
#include "test/lib/files.h"
#include "test/lib/kube_apiserver.h"
#include "test/lib/peers.h"
#include "test/lib/process.h"
#include "test/lib/test_node.h"
#include "test/lib/tier.h"

namespace nodemesh::testing {
namespace {

using namespace std::chrono_literals;
using Json = nlohmann::json;
using nodemesh::testing::KubeApiServer;

// The cluster's CA and the certificates it issued, and a CA nobody trusts.
struct Certificates {
  TempDir dir;
  Certificates() {
    MakeCa(dir, "ca");
    MakeCa(dir, "other-ca");
    MakeServerCertificate(dir, "ca", "aggregator");
    MakeClientCertificate(dir, "ca", "node-a", "/CN=system:node:node-a/O=system:nodes");
    MakeClientCertificate(dir, "ca", "node-b", "/CN=system:node:node-b/O=system:nodes");
    MakeClientCertificate(dir, "ca", "alice", "/CN=alice/O=nodemesh:tap:emojivoto");
    MakeClientCertificate(dir, "ca", "bob", "/CN=bob/O=viewers");
    MakeClientCertificate(dir, "ca", "ops", "/CN=ops/O=nodemesh:tap:*");
    MakeClientCertificate(dir, "other-ca", "mallory", "/CN=mallory/O=nodemesh:tap:*");
  }
  std::string crt(const std::string& name) const { return dir.path() + "/" + name + ".crt"; }
  std::string key(const std::string& name) const { return dir.path() + "/" + name + ".key"; }
};

// The cluster's aggregator serving TLS on loopback, which knows callers by `certificates'`
// CA.
AggregatorProcess& StartTlsAggregator(TwoNodeCluster& cluster, const Certificates& certificates) {
  AggregatorProcess& aggregator = cluster.StartAggregator(
      {.binary = NODEMESH_AGGREGATOR_BINARY,
       .extra_args = {"--tls-cert", certificates.crt("aggregator"), "--tls-key",
                      certificates.key("aggregator"), "--tls-ca", certificates.crt("ca")}});
  if (!aggregator.process().WaitForOutput("known by certificates", 10s)) {
    throw std::runtime_error("the aggregator did not start:\n" + aggregator.output());
  }
  return aggregator;
}

// The agent's flags that dial `address` with TLS, as the node whose certificate is `as`.
std::vector<std::string> AgentTlsArgs(const Certificates& certificates, const std::string& address,
                                      const std::string& as) {
  return {"--aggregator",      address,
          "--aggregator-ca",   certificates.crt("ca"),
          "--aggregator-cert", certificates.crt(as),
          "--aggregator-key",  certificates.key(as)};
}

TEST_CASE("agents and meshctl talk TLS to the aggregator which lets in only what it trusts") {
  KernelCluster cluster;  // web-1 on node-a calls voting-1 on node-b
  Process http =
      cluster.remote.Run({kPython, "-u", "-m", "http.server", "8000", "--bind", cluster.remote.ip});
  REQUIRE(http.WaitForOutput("Serving HTTP", 10s));
  const Certificates certificates;
  AggregatorProcess& aggregator = StartTlsAggregator(cluster, certificates);
  INFO("aggregator:\n" << aggregator.output());

  TempDir dir;
  const std::string record = dir.path() + "/agent-to-aggregator.bytes";
  const uint16_t recorder_port = FreeLoopbackPort();
  Process recorder({kPython, "-u", SourcePath("test/lib/wire_recorder.py"), "--listen",
                    std::to_string(recorder_port), "--connect", aggregator.address(), "--record",
                    record});
  REQUIRE(recorder.WaitForOutput("listening", 10s));
  AgentProcess agent(cluster.node_a,
                     {.binary = NODEMESH_AGENT_BINARY,
                      .extra_args = AgentTlsArgs(
                          certificates, fmt::format("127.0.0.1:{}", recorder_port), "node-a")});
  INFO("agent:\n" << agent.output());
  REQUIRE(aggregator.WaitForNode("node-a"));
  CHECK(agent.Get("/config")["aggregator_tls"]["ca"] == certificates.crt("ca"));

  // meshctl as `user`, with its certificate as flags; no user: the CA alone.
  const auto meshctl = [&](const std::string& user, std::vector<std::string> arguments) {
    std::vector<std::string> argv = {NODEMESH_MESHCTL_BINARY, "--aggregator", aggregator.address(),
                                     "--ca", certificates.crt("ca")};
    if (!user.empty()) {
      argv.insert(argv.end(), {"--cert", certificates.crt(user), "--key", certificates.key(user)});
    }
    argv.insert(argv.end(), arguments.begin(), arguments.end());
    return RunCommand(argv, 30s);
  };
  const std::string url = fmt::format("http://{}:8000/trust-check-path", cluster.remote.ip);
  const auto request = [&] {
    cluster.client.RunCommand({"curl", "-s", "-o", "/dev/null", "--max-time", "5", url});
  };

  SECTION("a certificate with the namespace's tap group taps it and the wire shows none of it") {
    Process tap({NODEMESH_MESHCTL_BINARY, "--aggregator", aggregator.address(), "--ca",
                 certificates.crt("ca"), "--cert", certificates.crt("alice"), "--key",
                 certificates.key("alice"), "tap", "deploy/web", "-n", "emojivoto", "--max-events",
                 "1", "-o", "json"});
    const bool tapped = PollUntil(
        [&] {
          request();
          return !tap.IsRunning();
        },
        30s, 200ms);
    INFO("tap:\n" << tap.output());
    REQUIRE(tapped);
    CHECK(tap.output().find("\"path\":\"/trust-check-path\"") != std::string::npos);
    // The pod list, the tap subscription and the event crossed that wire, all encrypted.
    const std::string wire = ReadFile(record);
    CHECK(wire.size() > 1000);
    for (const char* clear : {"trust-check-path", "web-1", "voting-1", "emojivoto"}) {
      INFO(clear);
      CHECK(wire.find(clear) == std::string::npos);
    }
  }

  SECTION("any certificate of the CA reads aggregates and tapping needs the namespace") {
    request();
    CommandResult stat;
    REQUIRE(PollUntil(
        [&] {
          stat = meshctl("bob", {"stat", "deploy", "-n", "emojivoto", "-o", "json"});
          return stat.exit_code == 0 && stat.output.find("\"web\"") != std::string::npos;
        },
        15s));

    const CommandResult tap = meshctl("bob", {"tap", "deploy/web", "-n", "emojivoto"});
    CHECK(tap.exit_code == 1);
    CHECK(tap.output ==
          "meshctl: the aggregator refused Tap: 'bob' may not tap namespace emojivoto: its "
          "certificate needs O=nodemesh:tap:emojivoto or O=nodemesh:tap:*\n");
    const CommandResult elsewhere = meshctl("alice", {"tap", "deploy/web", "-n", "payments"});
    CHECK(elsewhere.exit_code == 1);
    CHECK(elsewhere.output.find("'alice' may not tap namespace payments") != std::string::npos);

    const CommandResult anonymous = meshctl("", {"stat", "deploy", "-n", "emojivoto"});
    CHECK(anonymous.exit_code == 1);
    CHECK(anonymous.output ==
          "meshctl: the aggregator refused StatSummary: reading the aggregator needs a client "
          "certificate issued by the aggregator's client CA: give meshctl --cert and --key (or "
          "NODEMESH_CERT and NODEMESH_KEY)\n");
  }

  SECTION("the shell's relay needs every namespace and credentials come from the environment") {
    const std::vector<std::string> shell = {NODEMESH_MESHCTL_BINARY,
                                            "--aggregator",
                                            aggregator.address(),
                                            "shell",
                                            "--node",
                                            "node-a",
                                            "-c",
                                            "pods"};
    const auto as = [&](const std::string& user) {
      return std::vector<std::string>{"env", "NODEMESH_CA=" + certificates.crt("ca"),
                                      "NODEMESH_CERT=" + certificates.crt(user),
                                      "NODEMESH_KEY=" + certificates.key(user)};
    };
    std::vector<std::string> ops = as("ops");
    ops.insert(ops.end(), shell.begin(), shell.end());
    const CommandResult pods = RunCommand(ops, 30s);
    INFO(pods.output);
    CHECK(pods.exit_code == 0);
    CHECK(pods.output.find("emojivoto/web-1") != std::string::npos);

    std::vector<std::string> alice = as("alice");
    alice.insert(alice.end(), shell.begin(), shell.end());
    const CommandResult refused = RunCommand(alice, 30s);
    CHECK(refused.exit_code == 1);
    CHECK(refused.output.find("'alice' may not open the shell of node node-a") !=
          std::string::npos);
  }

  SECTION("a certificate of another CA and a client without TLS are turned away") {
    const CommandResult mallory = meshctl("mallory", {"stat", "deploy", "-n", "emojivoto"});
    INFO(mallory.output);
    CHECK(mallory.exit_code == 1);
    CHECK(mallory.output.find("meshctl: cannot reach the aggregator at " + aggregator.address()) ==
          0);

    const CommandResult plaintext =
        RunCommand({NODEMESH_MESHCTL_BINARY, "--aggregator", aggregator.address(), "stat", "deploy",
                    "-n", "emojivoto"},
                   30s);
    INFO(plaintext.output);
    CHECK(plaintext.exit_code == 1);
    CHECK(plaintext.output.find("meshctl: cannot reach the aggregator at " +
                                aggregator.address()) == 0);
  }
}

TEST_CASE("an agent that is not the node its certificate names is refused") {
  KernelCluster cluster;
  const Certificates certificates;
  AggregatorProcess& aggregator = StartTlsAggregator(cluster, certificates);

  SECTION("another node's certificate") {
    AgentProcess agent(cluster.node_a,
                       {.binary = NODEMESH_AGENT_BINARY,
                        .extra_args = AgentTlsArgs(certificates, aggregator.address(), "node-b")});
    const std::string refusal =
        "the certificate of 'system:node:node-b' may not report for node node-a";
    CHECK(aggregator.process().WaitForOutput(refusal, 15s));
    INFO(agent.output());
    CHECK(agent.process().WaitForOutput(refusal, 15s));
    CHECK(aggregator.output().find("node node-a connected") == std::string::npos);
  }

  SECTION("no certificate at all") {
    AgentProcess agent(cluster.node_a, {.binary = NODEMESH_AGENT_BINARY,
                                        .extra_args = {"--aggregator", aggregator.address(),
                                                       "--aggregator-ca", certificates.crt("ca")}});
    CHECK(aggregator.process().WaitForOutput("an agent needs a client certificate to report", 15s));
    CHECK(aggregator.output().find("node node-a connected") == std::string::npos);
  }
}

// The test API server with the agents' pods and the aggregator's RBAC, and an aggregator
// that knows agents by their ServiceAccount tokens, reviewed there.
struct TokenTrust {
  explicit TokenTrust(TwoNodeCluster& cluster)
      : api({.rbac_file = dir.Write("rbac.json", Json::parse(R"([
          {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
           "metadata": {"name": "nodemesh-aggregator:system:auth-delegator"},
           "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                       "name": "system:auth-delegator"},
           "subjects": [{"kind": "ServiceAccount", "name": "nodemesh-aggregator",
                         "namespace": "nodemesh"}]}])")
                                                     .dump())}) {
    api.Create("/api/v1/namespaces/nodemesh/pods",
               {{"metadata", {{"name", "agent-a"}}}, {"spec", {{"nodeName", "node-a"}}}});
    api.Create("/api/v1/namespaces/nodemesh/pods",
               {{"metadata", {{"name", "agent-b"}}}, {"spec", {{"nodeName", "node-b"}}}});
    const std::string kubeconfig = dir.path() + "/aggregator.kubeconfig";
    api.WriteKubeconfig(kubeconfig, api.IssueToken("nodemesh", "nodemesh-aggregator"));
    aggregator = &cluster.StartAggregator(
        {.binary = NODEMESH_AGGREGATOR_BINARY,
         .extra_args = {"--agent-service-account", "nodemesh/nodemesh-agent", "--kubeconfig",
                        kubeconfig}});
    if (!aggregator->process().WaitForOutput("agents are known by the projected tokens", 10s)) {
      throw std::runtime_error("the aggregator did not start:\n" + aggregator->output());
    }
  }

  // Writes a new projected token of the agent pod `pod` (on `node`, named in the token as
  // Kubernetes 1.30+ does) into the agent's token file, as the kubelet does: a new file
  // renamed over the old one. Returns the token.
  std::string Project(const std::string& pod, const std::string& node) {
    const std::string token = api.IssueToken("nodemesh", "nodemesh-agent",
                                             {.audiences = {"nodemesh.io/aggregator"},
                                              .expiration = std::chrono::seconds(3600),
                                              .pod_name = pod,
                                              .node_name = node});
    WriteFile(token_file + ".new", token);
    std::filesystem::rename(token_file + ".new", token_file);
    return token;
  }

  // The agent's flags for the aggregator and its token.
  std::vector<std::string> AgentArgs() const {
    return {"--aggregator", aggregator->address(), "--aggregator-token-file", token_file};
  }

  TempDir dir;
  KubeApiServer api;
  AggregatorProcess* aggregator = nullptr;
  const std::string token_file = dir.path() + "/token";
};

TEST_CASE("an agent known by its ServiceAccount token reports for its pod's node only") {
  KernelCluster cluster;
  TokenTrust trust(cluster);

  SECTION("a token whose pod runs on another node") {
    trust.Project("agent-b", "node-b");
    AgentProcess agent(cluster.node_a,
                       {.binary = NODEMESH_AGENT_BINARY, .extra_args = trust.AgentArgs()});
    const std::string refusal =
        "the token of pod nodemesh/agent-b (on node node-b) may not report for node node-a";
    CHECK(trust.aggregator->process().WaitForOutput(refusal, 15s));
    INFO(agent.output());
    CHECK(agent.process().WaitForOutput(refusal, 15s));
    CHECK(trust.aggregator->Connections("node-a") == 0);
  }

  SECTION("its own node's token, then rotated, keeps the stream through an API server outage") {
    Process http = cluster.remote.Run(
        {kPython, "-u", "-m", "http.server", "8000", "--bind", cluster.remote.ip});
    REQUIRE(http.WaitForOutput("Serving HTTP", 10s));
    const std::string first = trust.Project("agent-a", "node-a");
    AgentProcess agent(cluster.node_a,
                       {.binary = NODEMESH_AGENT_BINARY, .extra_args = trust.AgentArgs()});
    INFO("agent:\n" << agent.output());
    REQUIRE(trust.aggregator->WaitForNode("node-a"));
    CHECK(agent.Get("/config")["aggregator_token_file"] == trust.token_file);

    // The kubelet rotates the token, the old one stops being valid, the API server goes.
    trust.Project("agent-a", "node-a");
    trust.api.RevokeToken(first);
    trust.api.Stop();
    // The stream still carries the node's metrics: a request made now reaches meshctl.
    const std::string url = fmt::format("http://{}:8000/rotated", cluster.remote.ip);
    CommandResult stat;
    REQUIRE(PollUntil(
        [&] {
          cluster.client.RunCommand({"curl", "-s", "-o", "/dev/null", "--max-time", "5", url});
          stat = RunCommand({NODEMESH_MESHCTL_BINARY, "--aggregator", trust.aggregator->address(),
                             "stat", "deploy", "-n", "emojivoto", "-o", "json"},
                            30s);
          return stat.exit_code == 0 && stat.output.find("\"web\"") != std::string::npos;
        },
        30s, 500ms));
    CHECK(trust.aggregator->Connections("node-a") == 1);

    // A new stream presents the rotated token, which the API server reviews once it is back.
    trust.api.Start();
    trust.aggregator->Restart();
    REQUIRE(trust.aggregator->WaitForNode("node-a"));
    // Two tokens reviewed and accepted: the first, before the outage, and the rotated one.
    int accepted = 0;
    for (const KubeApiServer::Request& request : trust.api.Requests()) {
      accepted += !request.review.is_null() && request.review.value("authenticated", false);
    }
    CHECK(accepted == 2);
  }
}

TEST_CASE("plaintext is refused off loopback by the aggregator and the agent") {
  RootRequired root_required{"kernel"};
  const CommandResult aggregator =
      RunCommand({NODEMESH_AGGREGATOR_BINARY, "--listen", "0.0.0.0:0"}, 10s);
  CHECK(aggregator.exit_code == 1);
  CHECK(aggregator.output.find("--listen 0.0.0.0:0 is not a loopback address, and plaintext is "
                               "for loopback only (a local cluster): give --tls-cert and "
                               "--tls-key") != std::string::npos);
  const CommandResult meshctl =
      RunCommand({NODEMESH_MESHCTL_BINARY, "--aggregator", "10.0.0.1:8085", "stat", "deploy"}, 10s);
  CHECK(meshctl.exit_code == 2);
  CHECK(meshctl.output ==
        "meshctl: the aggregator at 10.0.0.1:8085 is not on loopback, and plaintext is for "
        "loopback only: give --ca, the CA that issued the aggregator's certificate\n");
}

}  // namespace
}  // namespace nodemesh::testing
