// Kernel tier for the agent's conntrack lookup (agent/kernel/conntrack.h): real connections
// from a pod, one through a kube-proxy-style Service's DNAT (test_node.h), one straight to a
// pod, looked up in this process's network namespace, the host's, where the NAT happens.
#include "agent/kernel/conntrack.h"

#include <catch2/catch.hpp>
#include <string>

#include "test/lib/peers.h"
#include "test/lib/process.h"
#include "test/lib/test_node.h"
#include "test/lib/tier.h"

namespace nodemesh::testing {
namespace {

using namespace std::chrono_literals;

Endpoint ParseEndpoint(const std::string& text) {
  const size_t colon = text.rfind(':');
  const std::optional<IpAddress> ip = IpAddress::Parse(text.substr(0, colon));
  REQUIRE(ip);
  return Endpoint{*ip, static_cast<uint16_t>(std::stoi(text.substr(colon + 1)))};
}

// A connection held open from `client` to `target`: the client's own address, as it sees it.
struct HeldConnection {
  Process process;
  Endpoint local;
};

HeldConnection Hold(const Pod& client, const std::string& target) {
  Process process = client.Run(TcpPeer("hold", {"--connect", target, "--interval", "1"}));
  INFO(process.output());
  REQUIRE(process.WaitForOutput("connected", 10s));
  const std::string local = FieldOf(process.output(), "connected", "local");
  REQUIRE_FALSE(local.empty());
  return HeldConnection{std::move(process), ParseEndpoint(local)};
}

TEST_CASE("conntrack: a DNATed connection's entry names the pod reached: others name none") {
  RootRequired root_required{"kernel"};
  PodNetwork network({.routed = true});
  TestNode node(network, "node-a");
  const Pod& client = node.AddPod({.name = "client-1", .owner_name = "client"});
  const Pod& backend = node.AddPod({.name = "web-a", .owner_name = "web"});
  Process server = StartEchoServer(backend, 8080);
  // Another port than the backend's, so that the lookup's port is the NAT's too.
  const Service& service =
      network.AddService({.name = "web-svc", .port = 80, .backends = {Target(backend, 8080)}});

  absl::StatusOr<std::unique_ptr<agent::Conntrack>> opened = agent::Conntrack::Open();
  INFO(opened.status().ToString());
  REQUIRE(opened.ok());
  agent::Conntrack& conntrack = **opened;

  HeldConnection via_service = Hold(client, service.target());
  const std::optional<Endpoint> reached =
      conntrack.TranslatedDestination(via_service.local, ParseEndpoint(service.target()));
  REQUIRE(reached);
  CHECK(reached->ToString() == Target(backend, 8080));
  CHECK(conntrack.stats().translated.value() == 1);

  // Straight to the pod: the host saw it (routed), but nothing translated it.
  HeldConnection direct = Hold(client, Target(backend, 8080));
  CHECK_FALSE(conntrack.TranslatedDestination(direct.local, ParseEndpoint(Target(backend, 8080))));
  // No such connection at all (port 1 is never an ephemeral one; entries of earlier runs
  // of the same subnet may linger for minutes, so no other port is sure to be free).
  CHECK_FALSE(conntrack.TranslatedDestination(Endpoint{via_service.local.ip, 1},
                                              ParseEndpoint(service.target())));
  CHECK(conntrack.stats().not_translated.value() == 2);
  // One socket for every query: each answer is read whole, none is left for the next.
  const std::optional<Endpoint> again =
      conntrack.TranslatedDestination(via_service.local, ParseEndpoint(service.target()));
  REQUIRE(again);
  CHECK(again->ToString() == Target(backend, 8080));
  CHECK(conntrack.stats().failed.value() == 0);
  // The client saw its connections accepted before the server said so: wait for its word.
  CHECK(PollUntil([&] { return AcceptedFrom(server).size() >= 2; }, 10s));
  CHECK(AcceptedFrom(server) == std::vector<std::string>{client.ip, client.ip});
}

}  // namespace
}  // namespace nodemesh::testing
