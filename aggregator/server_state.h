// What the aggregator's services (agent_service.h, api_calls.h) act on: the parts that
// AggregatorServer owns (server.h), which outlive every call. Each part locks for itself
// (docs/ARCHITECTURE.md 4.2); the services own no lock.
#pragma once

#include <grpcpp/support/status.h>

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
  // The second the aggregator started in: no window reaches before it
  // (QueryContext::history_start_second).
  int64_t history_start_second = 0;
  Store& store;
  // The store that answers windows longer than the Store's; null without one.
  const PrometheusClient* prometheus;
  Cluster& cluster;
  TapHub& tap_hub;
  AdminRelay& admin_relay;
  const Authorizer& authorizer;
  // Null unless agents are known by their ServiceAccount tokens.
  AgentTokenReviewer* agent_tokens;
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
