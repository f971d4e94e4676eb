// The kernel tier's cluster (test/lib/two_node_cluster.h): node-a is the node under test,
// with two meshed pods (web-1 calls emoji-1) and an unmeshed one; node-b's pod stands for
// the rest of the cluster, a server or a caller the agent of node-a does not own (meshed,
// but node-b runs no agent unless a test starts one).
#pragma once

#include "test/lib/two_node_cluster.h"

namespace nodemesh::testing {

struct KernelCluster : TwoNodeCluster {
  const Pod& client = node_a.AddPod({.namespace_name = "emojivoto",
                                     .name = "web-1",
                                     .owner_name = "web",
                                     .labels = {{"app", "web"}},
                                     .service_account = "web",
                                     .meshed = true});
  const Pod& server = node_a.AddPod({.namespace_name = "emojivoto",
                                     .name = "emoji-1",
                                     .owner_name = "emoji",
                                     .service_account = "emoji",
                                     .meshed = true});
  const Pod& plain = node_a.AddPod({.namespace_name = "emojivoto",
                                    .name = "vote-bot-1",
                                    .owner_name = "vote-bot",
                                    .meshed = false});
  const Pod& remote = node_b.AddPod(
      {.namespace_name = "emojivoto", .name = "voting-1", .owner_name = "voting", .meshed = true});
};

}  // namespace nodemesh::testing
