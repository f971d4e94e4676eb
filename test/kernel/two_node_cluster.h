// A simulated cluster for the kernel tests: node-a runs the agent, with two
// meshed pods and an unmeshed one; node-b's pod is a server elsewhere in the cluster.
#pragma once

#include "test/lib/test_node.h"
#include "test/lib/tier.h"

namespace nodemesh::testing {

struct TwoNodeCluster {
  RootRequired root_required{"kernel"};
  PodNetwork network;
  TestNode node_a{network, "node-a"};
  TestNode node_b{network, "node-b"};
  const Pod& client = node_a.AddPod(
      {.namespace_name = "emojivoto", .name = "web-1", .owner_name = "web", .meshed = true});
  const Pod& server = node_a.AddPod(
      {.namespace_name = "emojivoto", .name = "emoji-1", .owner_name = "emoji", .meshed = true});
  const Pod& plain = node_a.AddPod({.namespace_name = "emojivoto",
                                    .name = "vote-bot-1",
                                    .owner_name = "vote-bot",
                                    .meshed = false});
  const Pod& remote = node_b.AddPod(
      {.namespace_name = "emojivoto", .name = "voting-1", .owner_name = "voting", .meshed = true});
};

}  // namespace nodemesh::testing
