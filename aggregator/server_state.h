// What the aggregator's services (agent_service.h, api_calls.h) act on: the parts that
// AggregatorServer owns (server.h), which outlive every call. Each part locks for itself
// (docs/ARCHITECTURE.md 4.2); the services own no lock.
#pragma once

#include <grpcpp/support/status.h>

#include <atomic>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "aggregator/admin_relay.h"
#include "aggregator/agent_identity.h"
#include "aggregator/authorization.h"
#include "aggregator/clock.h"
#include "aggregator/cluster.h"
#include "aggregator/connected_agents.h"
#include "aggregator/prometheus_source.h"
#include "aggregator/store.h"
#include "aggregator/tap_hub.h"

namespace nodemesh::aggregator {

struct ServerState {
  Clock clock;
  // The first second the store holds whole: the one the aggregator started in, or earlier
  // ones a peer replica gave it (backfill.h). No window reaches before it
  // (QueryContext::history_start_second).
  std::atomic<int64_t> history_start_second = 0;
  // Deltas stamped before this second are acknowledged but not filed: with peer replicas,
  // the seconds before this one's start come whole from a peer (backfill.h), and an agent's
  // copy would count them twice. 0: every delta is filed.
  int64_t first_agent_second = 0;
  // While this replica fills the seconds before its start from a peer; a peer asking it then
  // is told so (BackfillReply.catching_up).
  std::atomic<bool> catching_up = false;
  // This replica among its peers, drawn at start: a replica that finds itself among them
  // (a headless Service names every replica) does not ask itself.
  std::string replica_id;
  Store& store;
  // The store that answers windows longer than the Store's; null without one.
  const PrometheusClient* prometheus;
  Cluster& cluster;
  TapHub& tap_hub;
  AdminRelay& admin_relay;
  const Authorizer& authorizer;
  // Null unless agents are known by their ServiceAccount tokens.
  AgentTokenReviewer* agent_tokens;
  // Null unless peer replicas are known by their ServiceAccount tokens (backfill.h).
  AgentTokenReviewer* peer_tokens;
  ConnectedAgents& agents;

  int64_t NowSeconds() const { return UnixSeconds(clock()); }
};

// A refusal or failure as the caller hears it: the same code and words.
inline grpc::Status ToGrpc(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message().data(), status.message().size()));
}

}  // namespace nodemesh::aggregator
