// Two simulated nodes on one pod network, for the tests of more than one node: the nodes,
// and when a test asks, an aggregator and an agent on each node reporting to it.
//
// What runs on the nodes is the test's own: its fixture derives from this one and adds its
// pods (and servers, kubelets, an API server) as members, which are made once the nodes
// exist. The agents go first when the cluster goes (then the aggregator, the nodes, the
// network); a fixture whose members the agents read (a kubelet's API server) stops them in
// its own destructor with StopAgents.
//
//   struct Shop : TwoNodeCluster {
//     Shop() : TwoNodeCluster({.tier = "e2e"}) {
//       StartAggregator({.binary = NODEMESH_AGGREGATOR_BINARY});
//       StartAgents({.binary = NODEMESH_AGENT_BINARY});  // both connected to it
//     }
//     const Pod& web = node_a.AddPod({.namespace_name = "shop", .name = "web-1", ...});
//   };
//
// Requires root (RequireRoot with the options' tier, before anything is made). Not
// thread-safe.
#pragma once

#include <catch2/catch.hpp>  // tier.h: RootRequired fails the test, not the process
#include <memory>
#include <optional>
#include <string>

#include "test/lib/agent_process.h"
#include "test/lib/aggregator_process.h"
#include "test/lib/test_node.h"
#include "test/lib/tier.h"

namespace nodemesh::testing {

struct TwoNodeClusterOptions {
  std::string tier = "kernel";  // the CTest label a missing root names: kernel, e2e
  PodNetworkOptions network{};
  std::string node_a = "node-a";
  std::string node_b = "node-b";
};

class TwoNodeCluster {
 public:
  explicit TwoNodeCluster(const TwoNodeClusterOptions& options = {});
  ~TwoNodeCluster();  // the agents, then the aggregator, then the nodes and the network
  TwoNodeCluster(const TwoNodeCluster&) = delete;
  TwoNodeCluster& operator=(const TwoNodeCluster&) = delete;

  // Starts the cluster's aggregator (on a free loopback port unless `options` name one);
  // returns once it listens. Throws std::runtime_error if it does not.
  AggregatorProcess& StartAggregator(AggregatorProcessOptions options);
  // The aggregator StartAggregator started; throws std::logic_error before.
  AggregatorProcess& aggregator();

  // Starts the agent of `node` (node_a or node_b) and returns once it is ready (as
  // AgentProcess says). With an aggregator started, the agent reports to it and this waits,
  // too, until the aggregator says the node connected; throws std::runtime_error, with both
  // logs, if it does not within 15 s.
  AgentProcess& StartAgent(TestNode& node, AgentProcessOptions options);
  // StartAgent on node_a, then node_b, with the same options.
  void StartAgents(const AgentProcessOptions& options);
  // Stops the agents (SIGTERM, then SIGKILL) and forgets them.
  void StopAgents();

  RootRequired root_required;
  PodNetwork network;
  TestNode node_a;
  TestNode node_b;
  // The agents StartAgent started on each node (null before, and after StopAgents).
  std::unique_ptr<AgentProcess> agent_a;
  std::unique_ptr<AgentProcess> agent_b;

 private:
  std::optional<AggregatorProcess> aggregator_;
};

}  // namespace nodemesh::testing
