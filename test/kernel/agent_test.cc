// Kernel tier for the agent: the real nodemesh-agent binary, its eBPF programs attached to
// a simulated node's cgroup subtree and pod namespaces, and plain TCP peers in the pods.
// Every check through the agent is made against the same traffic sent direct first.
#include <fmt/format.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <csignal>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "common/base/unique_fd.h"
#include "test/kernel/kernel_cluster.h"
#include "test/lib/agent_process.h"
#include "test/lib/files.h"
#include "test/lib/peers.h"
#include "test/lib/process.h"
#include "test/lib/test_node.h"
#include "test/lib/tier.h"

namespace nodemesh::testing {
namespace {

using namespace std::chrono_literals;

constexpr uint16_t kEchoPort = 7000;
constexpr uint16_t kClosedPort = 7999;  // nothing listens there

AgentProcessOptions AgentOptions() {
  return {.binary = NODEMESH_AGENT_BINARY, .log_level = "debug"};
}

// The agent as it runs by default (a call between two meshed pods of the node dialled
// straight to the server: one hop) or with --same-node-direct=off (out of the client's
// listener, into the server's: two hops).
AgentProcessOptions AgentOptions(bool one_hop) {
  AgentProcessOptions options = AgentOptions();
  if (!one_hop) options.extra_args = {"--same-node-direct=off"};
  return options;
}

using Cluster = KernelCluster;

// Polls until the echo server has logged `count` connections in all.
bool WaitForAccepted(const Process& server, size_t count) {
  return PollUntil([&] { return AcceptedFrom(server).size() >= count; }, 10s);
}

// The agent exits cleanly on SIGTERM: under the sanitizer build this is where leaks and
// other reports would show.
void StopCleanly(AgentProcess& agent) {
  const std::optional<ExitStatus> status = agent.Stop();
  INFO(agent.output());
  REQUIRE(status);
  CHECK(status->ok());
  CHECK(agent.output().find("Sanitizer") == std::string::npos);
}

// Programs attached to a cgroup directly (not inherited), as bpftool lists them.
std::string AttachedPrograms(const std::string& cgroup_dir) {
  const CommandResult listed = RunCommand({"bpftool", "cgroup", "show", cgroup_dir});
  return listed.output;
}

TEST_CASE("an outbound connection is proxied and the server sees the client pod's address") {
  Cluster cluster;
  Process meshed_server = StartEchoServer(cluster.server, kEchoPort);
  Process other_server = StartEchoServer(cluster.remote, kEchoPort);
  const std::string to_meshed = Target(cluster.server, kEchoPort);
  const std::string to_other = Target(cluster.remote, kEchoPort);

  // Direct, before the agent exists.
  for (const std::string& target : {to_meshed, to_other}) {
    const CommandResult direct = Dial(cluster.client, target);
    INFO(Describe(direct));
    REQUIRE(direct.exit_code == 0);
    CHECK(FieldOf(direct.output, "dial 0 ok", "peer") == target);
  }
  REQUIRE(WaitForAccepted(meshed_server, 1));
  REQUIRE(WaitForAccepted(other_server, 1));

  const bool one_hop = GENERATE(true, false);
  INFO((one_hop ? "one hop" : "two hops"));
  AgentProcess agent(cluster.node_a, AgentOptions(one_hop));
  REQUIRE(agent.WaitForInboundPort(cluster.server, kEchoPort));
  // The meshed server's side is proxied too: the caller is on the same node, so one
  // connection goes out of web-1 and into emoji-1 through the agent, straight (one hop)
  // or through its inbound listener in emoji-1 (two).
  for (const std::string& target : {to_meshed, to_other}) {
    const CommandResult proxied = Dial(cluster.client, target);
    INFO(Describe(proxied) << "\nagent:\n" << agent.output());
    REQUIRE(proxied.exit_code == 0);
    CHECK(FieldOf(proxied.output, "dial 0 ok", "peer") == target);
  }
  REQUIRE(WaitForAccepted(meshed_server, 2));
  REQUIRE(WaitForAccepted(other_server, 2));
  CHECK(AcceptedFrom(meshed_server) ==
        std::vector<std::string>{cluster.client.ip, cluster.client.ip});
  CHECK(AcceptedFrom(other_server) ==
        std::vector<std::string>{cluster.client.ip, cluster.client.ip});

  const nlohmann::json stats = agent.Get("/stats");
  INFO(stats.dump(2));
  CHECK(stats["proxy"]["accepted_outbound"] == 2);
  CHECK(stats["proxy"]["accepted_inbound"] == (one_hop ? 0 : 1));
  CHECK(stats["proxy"]["same_node_direct"] == (one_hop ? 1 : 0));
  CHECK(stats["proxy"]["origin_missing"] == 0);
  CHECK(stats["proxy"]["upstream_refused"] == 0);
  CHECK(stats["kernel"]["redirected_ipv4"] == 2);
  CHECK(stats["kernel"]["inbound_steered"] == (one_hop ? 0 : 1));
  // "dial <i>\n" from each side: the bytes went through the agent, both ways.
  CHECK(stats["proxy"]["bytes_to_upstream"].get<uint64_t>() > 0);
  CHECK(stats["proxy"]["bytes_to_client"] == stats["proxy"]["bytes_to_upstream"]);
  StopCleanly(agent);
}

// "10.77.0.11:40312" -> "10.77.0.11", "::ffff:10.77.0.11:40312" -> "::ffff:10.77.0.11".
std::string HostOf(const std::string& address) { return address.substr(0, address.rfind(':')); }

// A connection held open from `caller` to `target` (tcp_peer.py hold: a ping a second),
// once its first pings are answered.
Process HoldOpen(const Pod& caller, const std::string& target) {
  Process held = caller.Run(TcpPeer("hold", {"--connect", target}));
  REQUIRE(held.WaitForOutput("ping 3 ok", 20s));
  return held;
}

// The held connection still carries its bytes: ten more pings answered, and no error.
bool KeepsFlowing(Process& held) {
  const int pings = CountLines(held.output(), "ping ");
  return PollUntil([&] { return CountLines(held.output(), "ping ") >= pings + 10; }, 20s) &&
         held.IsRunning() && held.output().find("error") == std::string::npos;
}

TEST_CASE("a same-node call is dialled straight and listed for both pods, others keep their path") {
  Cluster cluster;
  Process meshed_server = StartEchoServer(cluster.server, kEchoPort);
  Process plain_server = StartEchoServer(cluster.plain, kEchoPort);
  AgentProcess agent(cluster.node_a, AgentOptions());
  REQUIRE(agent.WaitForInboundPort(cluster.server, kEchoPort));

  // Held open, so that /connections shows it live.
  Process held = HoldOpen(cluster.client, Target(cluster.server, kEchoPort));
  // One accept, outbound in web-1, and none in emoji-1: the one hop.
  CHECK(agent.ProxyCounter("accepted_outbound") == 1);
  CHECK(agent.ProxyCounter("same_node_direct") == 1);
  CHECK(agent.ProxyCounter("accepted_inbound") == 0);
  CHECK(agent.KernelCounter("inbound_steered") == 0);
  REQUIRE(WaitForAccepted(meshed_server, 1));
  CHECK(AcceptedFrom(meshed_server) == std::vector<std::string>{cluster.client.ip});

  // Listed once for each pod, as each sees it: web-1 dialled emoji-1; emoji-1 was called
  // from web-1's address with the port its application sees.
  const nlohmann::json connections = agent.Get("/connections")["connections"];
  INFO(connections.dump(2));
  REQUIRE(connections.size() == 2);
  const auto of_pod = [&](const std::string& pod) {
    for (const nlohmann::json& c : connections) {
      if (c["pod"] == pod) return c;
    }
    return nlohmann::json();
  };
  const nlohmann::json out = of_pod("emojivoto/web-1"), in = of_pod("emojivoto/emoji-1");
  REQUIRE(out.is_object());
  REQUIRE(in.is_object());
  CHECK(out["id"] == in["id"]);
  CHECK(out["direction"] == "outbound");
  CHECK(in["direction"] == "inbound");
  CHECK(out["same_node_direct"] == true);
  CHECK(in["same_node_direct"] == true);
  CHECK(out["destination"] == Target(cluster.server, kEchoPort));
  CHECK(in["destination"] == Target(cluster.server, kEchoPort));
  CHECK(HostOf(in["client"].get<std::string>()) == cluster.client.ip);
  CHECK(HostOf(out["client"].get<std::string>()) == "127.0.0.1");  // the redirected socket's

  // A meshed pod calling an unmeshed one of the node: outbound only, as before.
  const CommandResult to_plain = Dial(cluster.client, Target(cluster.plain, kEchoPort));
  INFO(Describe(to_plain));
  CHECK(to_plain.exit_code == 0);
  REQUIRE(WaitForAccepted(plain_server, 1));
  CHECK(AcceptedFrom(plain_server) == std::vector<std::string>{cluster.client.ip});
  CHECK(agent.ProxyCounter("accepted_outbound") == 2);
  CHECK(agent.ProxyCounter("same_node_direct") == 1);
  CHECK(agent.ProxyCounter("accepted_inbound") == 0);
  held.Kill();
  StopCleanly(agent);
}

TEST_CASE(
    "a same-node call dialled straight keeps its bytes while its server, then its client, "
    "is released") {
  Cluster cluster;
  Process server = StartEchoServer(cluster.server, kEchoPort);
  const std::string target = Target(cluster.server, kEchoPort);
  AgentProcess agent(cluster.node_a, AgentOptions());
  REQUIRE(agent.WaitForInboundPort(cluster.server, kEchoPort));

  Process held = HoldOpen(cluster.client, target);
  REQUIRE(agent.ProxyCounter("same_node_direct") == 1);
  for (const Pod* released : {&cluster.server, &cluster.client}) {
    INFO("released " << released->name << "\nagent:\n" << agent.output());
    cluster.node_a.SetMeshed(*released, false);
    REQUIRE(agent.WaitUntilEnrolled(*released, false));
    CHECK(KeepsFlowing(held));
  }
  // New calls go direct now; the held one is still the agent's, one hop.
  const CommandResult direct = Dial(cluster.client, target, 2);
  INFO(Describe(direct));
  CHECK(direct.exit_code == 0);
  REQUIRE(WaitForAccepted(server, 3));
  CHECK(AcceptedFrom(server) == std::vector<std::string>(3, cluster.client.ip));
  const nlohmann::json stats = agent.Get("/stats");
  INFO(stats.dump(2));
  CHECK(stats["proxy"]["accepted_outbound"] == 1);
  CHECK(stats["proxy"]["accepted_inbound"] == 0);
  CHECK(stats["proxy"]["active"] == 1);
  CHECK(agent.Get("/connections")["connections"].size() == 2);
  held.Kill();
  StopCleanly(agent);
}

TEST_CASE("the client's getpeername sees the address it dialled, getsockname the pod's own") {
  Cluster cluster;
  Process server = StartEchoServer(cluster.remote, kEchoPort);
  const std::string v4 = Target(cluster.remote, kEchoPort);
  const std::string mapped = "[::ffff:" + cluster.remote.ip + "]:" + std::to_string(kEchoPort);
  const std::string mapped_peer = "::ffff:" + cluster.remote.ip + ":" + std::to_string(kEchoPort);

  const CommandResult direct_v4 = Dial(cluster.client, v4);
  const CommandResult direct_mapped = Dial(cluster.client, mapped);
  INFO(Describe(direct_v4) << Describe(direct_mapped));
  REQUIRE(FieldOf(direct_v4.output, "dial 0 ok", "peer") == v4);
  REQUIRE(FieldOf(direct_mapped.output, "dial 0 ok", "peer") == mapped_peer);
  REQUIRE(HostOf(FieldOf(direct_v4.output, "dial 0 ok", "local")) == cluster.client.ip);
  REQUIRE(HostOf(FieldOf(direct_mapped.output, "dial 0 ok", "local")) ==
          "::ffff:" + cluster.client.ip);

  AgentProcess agent(cluster.node_a, AgentOptions());
  const CommandResult proxied_v4 = Dial(cluster.client, v4);
  const CommandResult proxied_mapped = Dial(cluster.client, mapped);
  INFO(Describe(proxied_v4) << Describe(proxied_mapped) << "\nagent:\n" << agent.output());
  CHECK(FieldOf(proxied_v4.output, "dial 0 ok", "peer") == v4);
  CHECK(FieldOf(proxied_mapped.output, "dial 0 ok", "peer") == mapped_peer);
  // The pod's address, not the loopback the socket is connected to the agent over.
  CHECK(HostOf(FieldOf(proxied_v4.output, "dial 0 ok", "local")) == cluster.client.ip);
  CHECK(HostOf(FieldOf(proxied_mapped.output, "dial 0 ok", "local")) ==
        "::ffff:" + cluster.client.ip);
  // Both were intercepted: the answers above came from the getpeername and getsockname
  // programs.
  REQUIRE(WaitForAccepted(server, 4));
  CHECK(AcceptedFrom(server) == std::vector<std::string>(4, cluster.client.ip));
  const nlohmann::json stats = agent.Get("/stats");
  INFO(stats.dump(2));
  CHECK(stats["proxy"]["accepted_outbound"] == 2);
  CHECK(stats["kernel"]["redirected_ipv4"] == 1);
  CHECK(stats["kernel"]["redirected_ipv6"] == 1);
  CHECK(stats["kernel"]["peername_rewritten"].get<uint64_t>() >= 2);
  CHECK(stats["kernel"]["sockname_rewritten"].get<uint64_t>() >= 2);
  StopCleanly(agent);
}

TEST_CASE("an IPv6 connection is proxied out of one pod and into another, addresses kept") {
  RequireRoot("kernel");
  PodNetwork network;
  TestNode node(network, "node-a");
  const Pod& client = node.AddPod({.namespace_name = "emojivoto",
                                   .name = "web-1",
                                   .owner_name = "web",
                                   .meshed = true,
                                   .ipv6 = true});
  const Pod& server = node.AddPod({.namespace_name = "emojivoto",
                                   .name = "emoji-1",
                                   .owner_name = "emoji",
                                   .meshed = true,
                                   .ipv6 = true});
  Process echo = StartEchoServer(server, kEchoPort, server.ip6);
  // As tcp_peer.py prints addresses: "host:port", no brackets.
  const std::string target = server.ip6 + ":" + std::to_string(kEchoPort);

  const CommandResult direct = Dial(client, target);
  INFO(Describe(direct));
  REQUIRE(direct.exit_code == 0);
  REQUIRE(FieldOf(direct.output, "dial 0 ok", "peer") == target);
  REQUIRE(HostOf(FieldOf(direct.output, "dial 0 ok", "local")) == client.ip6);
  REQUIRE(WaitForAccepted(echo, 1));

  const bool one_hop = GENERATE(true, false);
  INFO((one_hop ? "one hop" : "two hops"));
  AgentProcess agent(node, AgentOptions(one_hop));
  REQUIRE(agent.WaitForInboundPort(server, kEchoPort, 20s, /*ipv6=*/true));
  const CommandResult proxied = Dial(client, target);
  INFO(Describe(proxied) << "\nagent:\n" << agent.output());
  REQUIRE(proxied.exit_code == 0);
  CHECK(FieldOf(proxied.output, "dial 0 ok", "peer") == target);
  CHECK(HostOf(FieldOf(proxied.output, "dial 0 ok", "local")) == client.ip6);
  REQUIRE(WaitForAccepted(echo, 2));
  // Out through the agent and into the server pod, straight or through it again, and the
  // server still sees the client pod's own IPv6 address.
  CHECK(AcceptedFrom(echo) == std::vector<std::string>(2, client.ip6));
  const nlohmann::json stats = agent.Get("/stats");
  INFO(stats.dump(2));
  CHECK(stats["kernel"]["redirected_ipv6"] == 1);
  CHECK(stats["kernel"]["inbound_steered"] == (one_hop ? 0 : 1));
  CHECK(stats["proxy"]["accepted_outbound"] == 1);
  CHECK(stats["proxy"]["accepted_inbound"] == (one_hop ? 0 : 1));
  CHECK(stats["proxy"]["same_node_direct"] == (one_hop ? 1 : 0));
  CHECK(stats["proxy"]["origin_missing"] == 0);
  StopCleanly(agent);
}

TEST_CASE("a refused upstream connect fails the client's connection") {
  Cluster cluster;
  Process server = StartEchoServer(cluster.server, kEchoPort);  // a meshed pod, other port
  const std::vector<std::string> targets = {Target(cluster.server, kClosedPort),
                                            Target(cluster.remote, kClosedPort)};
  for (const std::string& target : targets) {
    const CommandResult direct = Dial(cluster.client, target);
    INFO(Describe(direct));
    CHECK(direct.exit_code == 1);
    CHECK(direct.output.starts_with("dial 0 connect-error ECONNREFUSED"));
  }

  AgentProcess agent(cluster.node_a, AgentOptions());
  REQUIRE(agent.WaitForInboundPort(cluster.server, kEchoPort));
  for (const std::string& target : targets) {
    // The agent accepted the connect before it knew the upstream would refuse: the client
    // sees its connection reset instead of refused (while connecting or on first use, as
    // the reset races the client), never a success and never a hang.
    const CommandResult proxied = Dial(cluster.client, target, 1, 30s);
    INFO(Describe(proxied) << "\nagent:\n" << agent.output());
    CHECK_FALSE(proxied.timed_out);
    CHECK(proxied.exit_code == 1);
    const bool refused = proxied.output.starts_with("dial 0 connect-error ECONNREFUSED");
    const bool reset = proxied.output.starts_with("dial 0 connect-error ECONNRESET") ||
                       proxied.output.starts_with("dial 0 io-error ECONNRESET");
    CHECK((refused || reset));
  }
  const nlohmann::json stats = agent.Get("/stats");
  INFO(stats.dump(2));
  CHECK(stats["proxy"]["accepted_outbound"] == 2);
  CHECK(stats["proxy"]["upstream_refused"] == 2);
  // The closed port of a meshed pod is not captured inbound: only listening ports are.
  CHECK(stats["proxy"]["accepted_inbound"] == 0);

  // The agent carries on.
  const CommandResult after = Dial(cluster.client, Target(cluster.server, kEchoPort));
  INFO(Describe(after));
  CHECK(after.exit_code == 0);
  StopCleanly(agent);
}

TEST_CASE("an upstream connect the kernel rejects at once fails the client's connection") {
  Cluster cluster;
  // TCP to a broadcast address fails in connect() itself, before any packet is sent.
  const std::string subnet = cluster.network.subnet();
  const std::string target =
      subnet.substr(0, subnet.rfind('.')) + ".255:" + std::to_string(kEchoPort);
  const CommandResult direct = Dial(cluster.client, target);
  INFO(Describe(direct));
  REQUIRE(direct.output.starts_with("dial 0 connect-error ENETUNREACH"));

  AgentProcess agent(cluster.node_a, AgentOptions());
  const CommandResult proxied = Dial(cluster.client, target, 1, 30s);
  INFO(Describe(proxied) << "\nagent:\n" << agent.output());
  CHECK(proxied.exit_code == 1);
  CHECK((proxied.output.starts_with("dial 0 connect-error ECONNRESET") ||
         proxied.output.starts_with("dial 0 io-error ECONNRESET")));
  const nlohmann::json stats = agent.Get("/stats");
  INFO(stats.dump(2));
  CHECK(stats["proxy"]["accepted_outbound"] == 1);
  CHECK(stats["proxy"]["upstream_failed"] == 1);
  // Nothing is left of it: a connection the agent could not proxy is closed, not active.
  CHECK(stats["proxy"]["active"] == 0);
  CHECK(stats["proxy"]["closed"] == 1);
  CHECK(agent.Get("/connections")["connections"].empty());
  StopCleanly(agent);
}

TEST_CASE("an upstream that does not answer in time fails the client's connection") {
  Cluster cluster;
  // An address of the pod network that no pod has: the SYN waits for an ARP answer that
  // never comes, and a direct connect fails only when the kernel gives up on it (~3 s).
  const std::string subnet = cluster.network.subnet();
  const std::string target =
      subnet.substr(0, subnet.rfind('.')) + ".254:" + std::to_string(kEchoPort);
  const CommandResult direct = Dial(cluster.client, target, 1, 30s);
  INFO(Describe(direct));
  REQUIRE(direct.exit_code == 1);
  CHECK((direct.output.starts_with("dial 0 connect-error EHOSTUNREACH") ||
         direct.output.starts_with("dial 0 connect-error timeout")));

  AgentProcessOptions options = AgentOptions();
  options.extra_args = {"--connect-timeout", "1s"};
  AgentProcess agent(cluster.node_a, options);
  const CommandResult proxied = Dial(cluster.client, target, 1, 30s);
  INFO(Describe(proxied) << "\nagent:\n" << agent.output());
  // The agent accepted at once; its own connect gave up after 1 s, before the kernel would
  // have (that would count as upstream_failed), and the client's connection was reset.
  CHECK(proxied.exit_code == 1);
  CHECK((proxied.output.starts_with("dial 0 io-error ECONNRESET") ||
         proxied.output.starts_with("dial 0 connect-error ECONNRESET")));
  const nlohmann::json stats = agent.Get("/stats");
  INFO(stats.dump(2));
  CHECK(stats["proxy"]["accepted_outbound"] == 1);
  CHECK(stats["proxy"]["connect_timeouts"] == 1);
  CHECK(stats["proxy"]["upstream_failed"] == 0);
  CHECK(stats["proxy"]["active"] == 0);
  StopCleanly(agent);
}

TEST_CASE("a connection idle past the idle timeout is closed, a busy one is not") {
  Cluster cluster;
  Process server = StartEchoServer(cluster.remote, kEchoPort);
  const std::string target = Target(cluster.remote, kEchoPort);
  AgentProcessOptions options = AgentOptions();
  options.extra_args = {"--idle-timeout", "1s"};
  AgentProcess agent(cluster.node_a, options);

  // One connection pings every 0.2 s, the other every 3 s.
  Process busy = cluster.client.Run(TcpPeer("hold", {"--connect", target, "--interval", "0.2"}));
  Process idle = cluster.client.Run(TcpPeer("hold", {"--connect", target, "--interval", "3"}));
  REQUIRE(busy.WaitForOutput("ping 0 ok", 20s));
  REQUIRE(idle.WaitForOutput("ping 0 ok", 20s));

  // The idle one is closed by the agent while it sleeps: its next ping finds the
  // connection gone. The busy one carries on through it all.
  const std::optional<ExitStatus> ended = idle.Wait(20s);
  INFO("idle:\n"
       << idle.output() << "\nbusy:\n"
       << busy.output() << "\nagent:\n"
       << agent.output());
  REQUIRE(ended);
  CHECK(idle.output().find("hold error") != std::string::npos);
  CHECK(idle.output().find("ping 1 ok") == std::string::npos);
  const int busy_pings = CountLines(busy.output(), "ping ");
  CHECK(PollUntil([&] { return CountLines(busy.output(), "ping ") >= busy_pings + 10; }, 20s));
  CHECK(busy.IsRunning());
  CHECK(busy.output().find("error") == std::string::npos);

  const nlohmann::json stats = agent.Get("/stats");
  INFO(stats.dump(2));
  CHECK(stats["proxy"]["idle_timeouts"] == 1);
  CHECK(stats["proxy"]["accepted_outbound"] == 2);
  CHECK(agent.Get("/connections")["connections"].size() == 1);
  StopCleanly(agent);
}

TEST_CASE("every proxied connection is classified even when it ends before its protocol is known") {
  Cluster cluster;
  Process server = StartEchoServer(cluster.remote, kEchoPort);
  AgentProcess agent(cluster.node_a, AgentOptions());
  // Nothing at all; the start of an HTTP/1 request; the start of the HTTP/2 preface.
  for (const std::string message : {"", "GE", "PRI * HTTP/2"}) {
    const CommandResult dialled = cluster.client.RunCommand(
        TcpPeer("dial", {"--connect", Target(cluster.remote, kEchoPort), "--message", message}));
    INFO(Describe(dialled));
    CHECK(dialled.exit_code == 0);
  }
  nlohmann::json stats;
  const bool all_closed = PollUntil(
      [&] {
        stats = agent.Get("/stats");
        return stats["proxy"]["closed"] == 3;
      },
      10s);
  INFO(stats.dump(2) << "\nagent:\n" << agent.output());
  REQUIRE(all_closed);
  CHECK(stats["proxy"]["accepted_outbound"] == 3);
  // None of them said enough to be HTTP: opaque, once each.
  CHECK(stats["proxy"]["opaque"] == 3);
  CHECK(stats["proxy"]["http1"] == 0);
  CHECK(stats["proxy"]["http2"] == 0);
  StopCleanly(agent);
}

TEST_CASE("with --l7 off every connection is opaque TCP, its bytes passed on unparsed") {
  Cluster cluster;
  Process server = StartEchoServer(cluster.remote, kEchoPort);
  const std::string target = Target(cluster.remote, kEchoPort);
  // Bytes that read as an HTTP request: with L7 on they would be parsed as one.
  const std::string request = "GET /api/list HTTP/1.1\r\nHost: voting\r\n\r\n";
  const auto dial = [&] {
    return cluster.client.RunCommand(TcpPeer("dial", {"--connect", target, "--message", request}));
  };
  for (const bool l7 : {true, false}) {
    INFO("--l7 " << (l7 ? "on" : "off"));
    AgentProcessOptions options = AgentOptions();
    options.extra_args = {"--l7", l7 ? "on" : "off"};
    AgentProcess agent(cluster.node_a, options);
    const CommandResult proxied = dial();
    INFO(Describe(proxied) << "\nagent:\n" << agent.output());
    CHECK(proxied.exit_code == 0);  // echoed byte for byte either way
    const nlohmann::json stats = agent.Get("/stats");
    INFO(stats.dump(2));
    CHECK(stats["proxy"]["accepted_outbound"] == 1);
    CHECK(stats["proxy"]["http1"] == (l7 ? 1 : 0));
    CHECK(stats["proxy"]["requests"] == (l7 ? 1 : 0));
    CHECK(stats["proxy"]["opaque"] == (l7 ? 0 : 1));
    CHECK(stats["proxy"]["bytes_to_upstream"] == request.size());
    StopCleanly(agent);
  }
}

TEST_CASE("loopback and excluded ports and unmeshed pods pass the agent untouched") {
  Cluster cluster;
  Process server = StartEchoServer(cluster.remote, kEchoPort);
  Process excluded_server = StartEchoServer(cluster.remote, kEchoPort + 1);
  Process loopback_server = cluster.client.Run(
      TcpPeer("echo-server", {"--listen", "127.0.0.1", "--port", std::to_string(kEchoPort)}));
  REQUIRE(loopback_server.WaitForOutput("listening", 20s));
  AgentProcessOptions options = AgentOptions();
  options.extra_args = {"--exclude-ports", std::to_string(kEchoPort + 1)};
  AgentProcess agent(cluster.node_a, options);

  const std::vector<std::pair<const Pod*, std::string>> untouched = {
      {&cluster.client, "127.0.0.1:" + std::to_string(kEchoPort)},
      {&cluster.client, Target(cluster.remote, kEchoPort + 1)},
      {&cluster.plain, Target(cluster.remote, kEchoPort)}};
  for (const auto& [caller, target] : untouched) {
    const CommandResult dialled = Dial(*caller, target);
    INFO(caller->name << " -> " << target << ": " << Describe(dialled));
    CHECK(dialled.exit_code == 0);
  }
  const nlohmann::json stats = agent.Get("/stats");
  INFO(stats.dump(2));
  CHECK(stats["proxy"]["accepted_outbound"] == 0);
  CHECK(stats["kernel"]["redirected_ipv4"] == 0);
  REQUIRE(WaitForAccepted(loopback_server, 1));
  CHECK(AcceptedFrom(loopback_server) == std::vector<std::string>{"127.0.0.1"});
  REQUIRE(WaitForAccepted(excluded_server, 1));
  CHECK(AcceptedFrom(excluded_server) == std::vector<std::string>{cluster.client.ip});
  REQUIRE(WaitForAccepted(server, 1));
  CHECK(AcceptedFrom(server) == std::vector<std::string>{cluster.plain.ip});

  // And the same pod to a port that is not excluded is intercepted.
  const CommandResult intercepted = Dial(cluster.client, Target(cluster.remote, kEchoPort));
  INFO(Describe(intercepted));
  CHECK(intercepted.exit_code == 0);
  CHECK(agent.ProxyCounter("accepted_outbound") == 1);
  StopCleanly(agent);
}

TEST_CASE("when the agent is killed new connections go direct") {
  Cluster cluster;
  Process server = StartEchoServer(cluster.remote, kEchoPort);
  Process meshed_server = StartEchoServer(cluster.server, kEchoPort);
  const std::string target = Target(cluster.remote, kEchoPort);

  AgentProcess agent(cluster.node_a, AgentOptions());
  REQUIRE(agent.WaitForInboundPort(cluster.server, kEchoPort));
  const CommandResult proxied = Dial(cluster.client, target);
  REQUIRE(proxied.exit_code == 0);
  REQUIRE(agent.ProxyCounter("accepted_outbound") == 1);
  REQUIRE_FALSE(AttachedPrograms(cluster.node_a.cgroup_dir()).empty());

  agent.Kill();
  CHECK_FALSE(agent.TryGet("/stats"));
  // The links died with the process: nothing is left on the node's cgroup.
  CHECK(PollUntil([&] { return AttachedPrograms(cluster.node_a.cgroup_dir()).empty(); }, 10s));

  // Outbound from a formerly meshed pod, and inbound into one, both direct.
  const CommandResult out = Dial(cluster.client, target, 3);
  INFO(Describe(out));
  CHECK(out.exit_code == 0);
  CHECK(FieldOf(out.output, "dial 2 ok", "peer") == target);
  const CommandResult in = Dial(cluster.remote, Target(cluster.server, kEchoPort));
  INFO(Describe(in));
  CHECK(in.exit_code == 0);
  REQUIRE(WaitForAccepted(server, 4));
  CHECK(AcceptedFrom(server) == std::vector<std::string>(4, cluster.client.ip));
  REQUIRE(WaitForAccepted(meshed_server, 1));
  CHECK(AcceptedFrom(meshed_server) == std::vector<std::string>{cluster.remote.ip});

  // A new agent takes over where the dead one left (its rules in the pods are still there).
  AgentProcess restarted(cluster.node_a, AgentOptions());
  REQUIRE(restarted.WaitForInboundPort(cluster.server, kEchoPort));
  const CommandResult again = Dial(cluster.client, Target(cluster.server, kEchoPort));
  INFO(Describe(again) << "\nagent:\n" << restarted.output());
  CHECK(again.exit_code == 0);
  CHECK(restarted.ProxyCounter("accepted_outbound") == 1);
  CHECK(restarted.ProxyCounter("same_node_direct") == 1);
  REQUIRE(WaitForAccepted(meshed_server, 2));
  CHECK(AcceptedFrom(meshed_server).back() == cluster.client.ip);
  StopCleanly(restarted);
}

TEST_CASE("a client pod released live goes direct while its open connection keeps working") {
  Cluster cluster;
  Process server = StartEchoServer(cluster.remote, kEchoPort);
  const std::string target = Target(cluster.remote, kEchoPort);
  AgentProcess agent(cluster.node_a, AgentOptions());

  Process held = HoldOpen(cluster.client, target);
  REQUIRE(agent.ProxyCounter("accepted_outbound") == 1);
  REQUIRE(agent.Get("/connections")["connections"].size() == 1);

  cluster.node_a.SetMeshed(cluster.client, false);
  REQUIRE(agent.WaitUntilEnrolled(cluster.client, false));
  INFO("agent:\n" << agent.output());
  CHECK(agent.output().find("released emojivoto/web-1") != std::string::npos);

  // New connections go direct: the server still sees the pod, the agent nothing.
  const CommandResult direct = Dial(cluster.client, target, 2);
  INFO(Describe(direct));
  CHECK(direct.exit_code == 0);
  CHECK(FieldOf(direct.output, "dial 1 ok", "peer") == target);
  REQUIRE(WaitForAccepted(server, 3));
  CHECK(AcceptedFrom(server) == std::vector<std::string>(3, cluster.client.ip));
  const nlohmann::json stats = agent.Get("/stats");
  CHECK(stats["proxy"]["accepted_outbound"] == 1);
  CHECK(stats["kernel"]["redirected_ipv4"] == 1);

  // The connection opened before the release is still proxied, and still flows.
  CHECK(KeepsFlowing(held));
  const nlohmann::json connections = agent.Get("/connections")["connections"];
  INFO(connections.dump(2));
  REQUIRE(connections.size() == 1);
  CHECK(connections[0]["destination"] == target);
  CHECK(connections[0]["bytes_to_upstream"].get<uint64_t>() >= 10 * std::string("ping 0\n").size());
  StopCleanly(agent);
}

TEST_CASE("a server pod released live stops capturing while its open connection keeps working") {
  Cluster cluster;
  Process server = StartEchoServer(cluster.server, kEchoPort);
  const std::string target = Target(cluster.server, kEchoPort);
  AgentProcess agent(cluster.node_a, AgentOptions());
  REQUIRE(agent.WaitForInboundPort(cluster.server, kEchoPort));

  // From node-b, outside the agent's reach: only the inbound side is proxied.
  Process held = HoldOpen(cluster.remote, target);
  REQUIRE(agent.ProxyCounter("accepted_inbound") == 1);

  cluster.node_a.SetMeshed(cluster.server, false);
  REQUIRE(agent.WaitUntilEnrolled(cluster.server, false));
  const CommandResult direct = Dial(cluster.remote, target, 2);
  INFO(Describe(direct) << "\nagent:\n" << agent.output());
  CHECK(direct.exit_code == 0);
  REQUIRE(WaitForAccepted(server, 3));
  CHECK(AcceptedFrom(server) == std::vector<std::string>(3, cluster.remote.ip));
  CHECK(agent.ProxyCounter("accepted_inbound") == 1);
  CHECK(agent.KernelCounter("inbound_steered") == 1);

  CHECK(KeepsFlowing(held));
  CHECK(agent.Get("/connections")["connections"].size() == 1);
  StopCleanly(agent);
}

TEST_CASE("a pod enrolled live is intercepted without restarting its processes") {
  Cluster cluster;
  cluster.node_a.SetMeshed(cluster.client, false);
  Process server = StartEchoServer(cluster.remote, kEchoPort);
  const std::string target = Target(cluster.remote, kEchoPort);
  AgentProcess agent(cluster.node_a, AgentOptions());

  // One process that keeps dialling, started before the pod is meshed.
  Process dialler = cluster.client.Run(TcpPeer("dial", {"--connect", target, "--count", "0"}));
  const pid_t pid = dialler.pid();
  REQUIRE(dialler.WaitForOutput("dial 2 ok", 20s));
  CHECK(agent.ProxyCounter("accepted_outbound") == 0);

  cluster.node_a.SetMeshed(cluster.client, true);
  REQUIRE(agent.WaitUntilEnrolled(cluster.client));
  INFO("dialler:\n" << dialler.output() << "\nagent:\n" << agent.output());
  CHECK(agent.output().find("enrolled emojivoto/web-1") != std::string::npos);
  CHECK(PollUntil([&] { return agent.ProxyCounter("accepted_outbound") >= 3; }, 20s));
  const int dials_when_intercepted = CountLines(dialler.output(), "dial ");
  CHECK(PollUntil(
      [&] { return CountLines(dialler.output(), "dial ") >= dials_when_intercepted + 3; }, 20s));

  // The same process all along, every connection fine, the server seeing the pod's address.
  CHECK(dialler.IsRunning());
  CHECK(dialler.pid() == pid);
  dialler.Kill();
  const std::string output = dialler.output();
  CHECK(CountLines(output, "dial ") >= 6);
  CHECK(output.find("error") == std::string::npos);
  CHECK(output.find("short-echo") == std::string::npos);
  const std::vector<std::string> accepted = AcceptedFrom(server);
  CHECK(accepted.size() >= 6);
  CHECK(accepted == std::vector<std::string>(accepted.size(), cluster.client.ip));
  StopCleanly(agent);
}

// The lines of a dialler's output that report a failed attempt.
std::string FailedDials(const std::string& output) {
  std::istringstream lines(output);
  std::string line, failed;
  while (std::getline(lines, line)) {
    if (line.starts_with("dial ") && line.find(" ok ") == std::string::npos) failed += line + "\n";
  }
  return failed;
}

TEST_CASE("enrolling and releasing pods while they dial breaks none of their connections") {
  Cluster cluster;
  Process server = StartEchoServer(cluster.server, kEchoPort);
  Process other_server = StartEchoServer(cluster.remote, kEchoPort);
  // One worker takes every event, so releases land in busy event batches, where a removed
  // listener may still have an event pending (under the sanitizer build this caught a
  // use-after-free in about one run in eight).
  AgentProcessOptions options = AgentOptions();
  options.workers = 1;
  AgentProcess agent(cluster.node_a, options);
  REQUIRE(agent.WaitForInboundPort(cluster.server, kEchoPort));

  // As fast as they can, several at once so that the agent's workers are busy when a
  // release comes: out of a pod being toggled, and into one being toggled.
  constexpr int kDiallersEachWay = 3;
  std::vector<Process> diallers;
  for (int i = 0; i < kDiallersEachWay; ++i) {
    diallers.push_back(
        cluster.client.Run(TcpPeer("dial", {"--connect", Target(cluster.remote, kEchoPort),
                                            "--count", "0", "--interval", "0"})));
    diallers.push_back(
        cluster.remote.Run(TcpPeer("dial", {"--connect", Target(cluster.server, kEchoPort),
                                            "--count", "0", "--interval", "0"})));
  }
  for (int round = 0; round < 6; ++round) {
    for (const bool meshed : {false, true}) {
      cluster.node_a.SetMeshed(cluster.client, meshed);
      cluster.node_a.SetMeshed(cluster.server, meshed);
      INFO("round " << round << ", meshed " << meshed << "\nagent:\n" << agent.output());
      REQUIRE(agent.WaitUntilEnrolled(cluster.client, meshed));
      REQUIRE(agent.WaitUntilEnrolled(cluster.server, meshed));
      if (meshed) REQUIRE(agent.WaitForInboundPort(cluster.server, kEchoPort));
      // Let some connections through in this state.
      for (Process& dialler : diallers) {
        const int dials = CountLines(dialler.output(), "dial ");
        REQUIRE(
            PollUntil([&] { return CountLines(dialler.output(), "dial ") >= dials + 20; }, 20s));
      }
    }
  }
  for (Process& dialler : diallers) {
    dialler.Kill();
    INFO(dialler.command());
    CHECK(FailedDials(dialler.output()).empty());
  }
  INFO("agent:\n" << agent.output());
  CHECK(agent.ProxyCounter("accepted_outbound") > 0);
  CHECK(agent.ProxyCounter("accepted_inbound") > 0);
  CHECK(agent.ProxyCounter("origin_missing") == 0);
  StopCleanly(agent);
}

TEST_CASE("an unmeshed caller reaching a meshed pod is captured inbound") {
  Cluster cluster;
  Process server = StartEchoServer(cluster.server, kEchoPort);
  const std::string target = Target(cluster.server, kEchoPort);
  // From another node and from an unmeshed pod on this node.
  for (const Pod* caller : {&cluster.remote, &cluster.plain}) {
    const CommandResult direct = Dial(*caller, target);
    INFO(Describe(direct));
    REQUIRE(direct.exit_code == 0);
  }

  AgentProcess agent(cluster.node_a, AgentOptions());
  REQUIRE(agent.WaitForInboundPort(cluster.server, kEchoPort));
  for (const Pod* caller : {&cluster.remote, &cluster.plain}) {
    const CommandResult captured = Dial(*caller, target, 2);
    INFO(Describe(captured) << "\nagent:\n" << agent.output());
    CHECK(captured.exit_code == 0);
    // The caller sees the server's address: nothing was rewritten on its side.
    CHECK(FieldOf(captured.output, "dial 1 ok", "peer") == target);
  }
  REQUIRE(WaitForAccepted(server, 6));
  // The application sees the real callers, not the agent.
  CHECK(AcceptedFrom(server) == std::vector<std::string>{cluster.remote.ip, cluster.plain.ip,
                                                         cluster.remote.ip, cluster.remote.ip,
                                                         cluster.plain.ip, cluster.plain.ip});
  const nlohmann::json stats = agent.Get("/stats");
  INFO(stats.dump(2));
  CHECK(stats["proxy"]["accepted_inbound"] == 4);
  CHECK(stats["proxy"]["accepted_outbound"] == 0);
  CHECK(stats["kernel"]["inbound_steered"] == 4);
  CHECK(stats["kernel"]["redirected_ipv4"] == 0);
  StopCleanly(agent);
}

// The agent's listeners (outbound 15001, inbound 15006) in a pod's network namespace.
int AgentListenersIn(const Pod& pod) {
  const CommandResult listening = pod.RunCommand({"ss", "-Hltn"});
  std::istringstream lines(listening.output);
  std::string line;
  int count = 0;
  while (std::getline(lines, line)) {
    if (line.find(":15001 ") != std::string::npos || line.find(":15006 ") != std::string::npos) {
      ++count;
    }
  }
  return count;
}

TEST_CASE("a pod whose enrolment fails at its last step leaves nothing behind: a retry enrols it") {
  Cluster cluster;
  cluster.node_a.SetMeshed(cluster.server, false);
  Process server = StartEchoServer(cluster.server, kEchoPort);
  Process remote_server = StartEchoServer(cluster.remote, kEchoPort);
  // The kernel's pod map has room for one pod: web-1 takes it, and emoji-1's enrolment
  // fails at its very last step, after its listeners and inbound capture were set up.
  AgentProcessOptions options = AgentOptions();
  options.extra_args = {"--max-pods", "1"};
  AgentProcess agent(cluster.node_a, options);
  const uint64_t listeners = agent.ProxyCounter("listeners");
  REQUIRE(AgentListenersIn(cluster.client) == static_cast<int>(listeners));

  cluster.node_a.SetMeshed(cluster.server, true);
  nlohmann::json pod;
  const bool refused = PollUntil(
      [&] {
        const nlohmann::json pods = agent.Get("/pods");
        for (const nlohmann::json& entry : pods["pods"]) {
          if (entry["name"] == cluster.server.name && entry.contains("enrolment_error")) {
            pod = entry;
            return true;
          }
        }
        return false;
      },
      20s);
  INFO(pod.dump(2) << "\nagent:\n" << agent.output());
  REQUIRE(refused);
  CHECK(pod["enrolled"] == false);
  CHECK(pod["enrolment_error"].get<std::string>().starts_with("enrolling a cgroup"));
  CHECK(agent.output().find("pod emojivoto/emoji-1: not enrolled: enrolling a cgroup") !=
        std::string::npos);
  // Nothing of it is left: no listener in its netns or on a worker, no inbound capture, no
  // redirection of its connects.
  CHECK(agent.ProxyCounter("listeners") == listeners);
  CHECK(AgentListenersIn(cluster.server) == 0);
  const CommandResult inbound = Dial(cluster.remote, Target(cluster.server, kEchoPort));
  const CommandResult outbound = Dial(cluster.server, Target(cluster.remote, kEchoPort));
  INFO(Describe(inbound) << Describe(outbound));
  CHECK(inbound.exit_code == 0);
  CHECK(outbound.exit_code == 0);
  REQUIRE(WaitForAccepted(server, 1));
  REQUIRE(WaitForAccepted(remote_server, 1));
  nlohmann::json stats = agent.Get("/stats");
  CHECK(stats["proxy"]["accepted_inbound"] == 0);
  CHECK(stats["proxy"]["accepted_outbound"] == 0);
  CHECK(stats["kernel"]["inbound_steered"] == 0);
  CHECK(stats["kernel"]["redirected_ipv4"] == 0);

  // Room again: releasing web-1 frees the map, and the retry enrols emoji-1 whole, with as
  // many listeners as web-1 had, not one more.
  cluster.node_a.SetMeshed(cluster.client, false);
  REQUIRE(agent.WaitUntilEnrolled(cluster.server));
  REQUIRE(agent.WaitForInboundPort(cluster.server, kEchoPort));
  CHECK(agent.ProxyCounter("listeners") == listeners);
  CHECK(AgentListenersIn(cluster.server) == static_cast<int>(listeners));
  CHECK(AgentListenersIn(cluster.client) == 0);
  CHECK(Dial(cluster.remote, Target(cluster.server, kEchoPort)).exit_code == 0);
  CHECK(Dial(cluster.server, Target(cluster.remote, kEchoPort)).exit_code == 0);
  REQUIRE(WaitForAccepted(server, 2));
  REQUIRE(WaitForAccepted(remote_server, 2));
  CHECK(AcceptedFrom(server).back() == cluster.remote.ip);
  CHECK(AcceptedFrom(remote_server).back() == cluster.server.ip);
  stats = agent.Get("/stats");
  CHECK(stats["proxy"]["accepted_inbound"] == 1);
  CHECK(stats["proxy"]["accepted_outbound"] == 1);
  CHECK(agent.Get("/pods")["pods"][1].contains("enrolment_error") == false);
  StopCleanly(agent);
}

TEST_CASE("the agent forgets the names of pods that left the cluster") {
  Cluster cluster;
  AgentProcess agent(cluster.node_a, AgentOptions());
  const nlohmann::json original = nlohmann::json::parse(ReadFile(agent.inventory_path()));
  const uint64_t named = agent.ProxyCounter("identities");
  // The inventory with 100 pods of another node, numbered from `first`, in place of the
  // last ones: pods come and go elsewhere in the cluster.
  const auto write_with_pods = [&](int first) {
    nlohmann::json inventory = original;
    for (int i = first; i < first + 100; ++i) {
      inventory["pods"].push_back(nlohmann::json{
          {"namespace", "elsewhere"},
          {"name", fmt::format("gone-{}", i)},
          {"ips", {fmt::format("10.{}.{}.{}", 100 + i / 60'000, i / 250 % 240, i % 250 + 1)}},
          {"cgroup", "/elsewhere"},
          {"netns", "/var/run/netns/elsewhere"},
          {"node", "node-z"}});
    }
    const std::string temporary = agent.inventory_path() + ".tmp";
    WriteFile(temporary, inventory.dump());
    REQUIRE(::rename(temporary.c_str(), agent.inventory_path().c_str()) == 0);
  };
  write_with_pods(0);
  REQUIRE(PollUntil([&] { return agent.ProxyCounter("identities") == named + 100; }, 10s));
  // The first hundred are named nowhere any more: the next forgetting pass (every 10 s)
  // forgets exactly them, and the new hundred stay.
  const auto forgotten = [&] {
    const std::string output = agent.output();
    int count = 0;
    for (size_t at = output.find("forgot 100 identities"); at != std::string::npos;
         at = output.find("forgot 100 identities", at + 1)) {
      ++count;
    }
    return count;
  };
  CHECK(forgotten() == 0);
  write_with_pods(100);
  CHECK(PollUntil([&] { return forgotten() == 1; }, 30s));
  CHECK(agent.ProxyCounter("identities") == named + 100);
  write_with_pods(100'000);  // and again with another hundred
  CHECK(PollUntil([&] { return forgotten() == 2; }, 30s));
  CHECK(agent.ProxyCounter("identities") == named + 100);
  StopCleanly(agent);
}

// ---- startup errors ----

struct NodeForErrors {
  RootRequired root_required{"kernel"};
  PodNetwork network;
  TestNode node{network, "node-a"};
  TempDir dir;
  std::string inventory = dir.path() + "/pods.json";

  CommandResult RunAgent(const std::string& cgroup_root) {
    return RunCommand({NODEMESH_AGENT_BINARY, "--node", node.name(), "--inventory", inventory,
                       "--cgroup-root", cgroup_root, "--admin-socket", dir.path() + "/admin.sock",
                       "--metrics-address", "127.0.0.1:0"},
                      30s);
  }
  CommandResult RunAgent() { return RunAgent(node.cgroup_path()); }

  void WriteInventory(const std::string& text) { std::ofstream(inventory) << text; }
};

TEST_CASE("the agent refuses a bad inventory entry and names the pod and the field") {
  NodeForErrors setup;
  const Pod& pod = setup.node.AddPod({.namespace_name = "emojivoto", .name = "web-1"});
  setup.WriteInventory(R"({"pods":[{"namespace":"emojivoto","name":"web-1","ips":["10.77.0"],)"
                       R"("cgroup":")" +
                       pod.cgroup_path + R"(","netns":")" + pod.netns_path +
                       R"(","meshed":true}]})");
  const CommandResult result = setup.RunAgent();
  INFO(result.output);
  CHECK(result.exit_code == 1);
  CHECK(result.output.find("nodemesh-agent: inventory " + setup.inventory +
                           ": pods[0]: pod emojivoto/web-1: \"ips\"[0]: \"10.77.0\" is not an IP "
                           "address") != std::string::npos);
  // It cleaned up after itself: no programs stay attached to the node.
  CHECK(AttachedPrograms(setup.node.cgroup_dir()).empty());
}

TEST_CASE("the agent refuses a meshed pod it cannot enrol and names the pod") {
  NodeForErrors setup;
  const Pod& pod = setup.node.AddPod({.namespace_name = "emojivoto", .name = "web-1"});
  setup.WriteInventory(R"({"pods":[{"namespace":"emojivoto","name":"web-1","ips":[")" + pod.ip +
                       R"("],"cgroup":")" + pod.cgroup_path +
                       R"(","netns":"/var/run/netns/nodemesh-no-such-netns","meshed":true}]})");
  const CommandResult result = setup.RunAgent();
  INFO(result.output);
  CHECK(result.exit_code == 1);
  CHECK(result.output.find("pod emojivoto/web-1: network namespace "
                           "/var/run/netns/nodemesh-no-such-netns: No such file or directory") !=
        std::string::npos);
}

TEST_CASE("the agent says which file is missing or which cgroup does not exist") {
  NodeForErrors setup;
  const CommandResult missing = setup.RunAgent();  // nothing written yet
  INFO(missing.output);
  CHECK(missing.exit_code != 0);
  CHECK(missing.output.find(setup.inventory) != std::string::npos);

  setup.WriteInventory(R"({"pods":[]})");
  const CommandResult no_cgroup = setup.RunAgent(setup.node.cgroup_path() + "/no-such-cgroup");
  INFO(no_cgroup.output);
  CHECK(no_cgroup.exit_code == 1);
  CHECK(no_cgroup.output.find("no-such-cgroup: No such file or directory") != std::string::npos);
}

TEST_CASE(
    "a second agent on an admin socket or metrics address already served fails naming "
    "the first, which still serves") {
  Cluster cluster;
  AgentProcess first(cluster.node_a, AgentOptions());
  const std::string metrics = first.metrics_address();
  TempDir dir;
  std::ofstream(dir.path() + "/pods.json") << R"({"pods":[]})";
  // A second agent for the same node, as one left over from an interrupted run would be.
  const auto run_second = [&](const std::string& admin_socket, const std::string& address) {
    return RunCommand({NODEMESH_AGENT_BINARY, "--node", cluster.node_a.name(), "--inventory",
                       dir.path() + "/pods.json", "--cgroup-root", cluster.node_a.cgroup_path(),
                       "--admin-socket", admin_socket, "--metrics-address", address},
                      30s);
  };
  const std::string holder = fmt::format("nodemesh-agent (pid {})", first.process().pid());

  const CommandResult same_socket = run_second(first.admin_socket(), "127.0.0.1:0");
  INFO(same_socket.output);
  CHECK(same_socket.exit_code == 1);
  CHECK_THAT(same_socket.output,
             Catch::Contains(fmt::format("admin socket {} is in use by {}: another agent serves "
                                         "it; stop it, or give --admin-socket another path",
                                         first.admin_socket(), holder)));

  const CommandResult same_port = run_second(dir.path() + "/admin.sock", metrics);
  INFO(same_port.output);
  CHECK(same_port.exit_code == 1);
  CHECK_THAT(same_port.output,
             Catch::Contains(fmt::format("nodemesh-agent: metrics: cannot listen on {}: the "
                                         "address is in use by {}",
                                         metrics, holder)));
  // Neither took anything: the second's socket file is gone with it, and no second set of
  // programs was ever attached to the node (it stopped before loading them).
  CHECK(access((dir.path() + "/admin.sock").c_str(), F_OK) != 0);

  // The first serves both addresses alone, and proxies as before.
  const std::optional<HttpReply> ready = first.GetMetricsPort("/readyz");
  REQUIRE(ready);
  CHECK(ready->status == 200);
  Process server = StartEchoServer(cluster.remote, kEchoPort);
  const CommandResult proxied = Dial(cluster.client, Target(cluster.remote, kEchoPort));
  INFO(Describe(proxied));
  CHECK(proxied.exit_code == 0);
  CHECK(first.ProxyCounter("accepted_outbound") == 1);
  StopCleanly(first);
}

TEST_CASE(
    "an admin socket left by an agent that is gone is taken over, and a file that is not a "
    "socket is not") {
  NodeForErrors setup;
  setup.WriteInventory(R"({"pods":[]})");
  const std::string socket_path = setup.dir.path() + "/admin.sock";
  {
    // A socket nobody accepts on any more: what an agent killed with SIGKILL leaves.
    UniqueFd left(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::snprintf(address.sun_path, sizeof address.sun_path, "%s", socket_path.c_str());
    REQUIRE(bind(left.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
  }
  Process agent({NODEMESH_AGENT_BINARY, "--node", setup.node.name(), "--inventory", setup.inventory,
                 "--cgroup-root", setup.node.cgroup_path(), "--admin-socket", socket_path,
                 "--metrics-address", "127.0.0.1:0"});
  CHECK(PollUntil([&] { return HttpGetUnix(socket_path, "/stats").has_value(); }, 30s));
  INFO(agent.output());
  agent.Signal(SIGTERM);
  const std::optional<ExitStatus> stopped = agent.Wait(10s);
  REQUIRE(stopped);
  CHECK(stopped->ok());

  std::ofstream(socket_path) << "not a socket";
  const CommandResult refused = setup.RunAgent();
  INFO(refused.output);
  CHECK(refused.exit_code == 1);
  CHECK_THAT(refused.output, Catch::Contains(fmt::format(
                                 "admin socket {}: a file that is not a socket is there: remove "
                                 "it, or give --admin-socket another path",
                                 socket_path)));
  CHECK(ReadFile(socket_path) == "not a socket");
}

}  // namespace
}  // namespace nodemesh::testing
