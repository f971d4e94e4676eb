// One agent's stream (AgentService.Connect), from its Hello to its end, in four stages:
//   Admit     the Hello naming the node, the caller's right to speak for that node (its
//             certificate, authorization.h, or its token, agent_identity.h), and room under
//             --max-nodes. A refusal ends the stream before
//             anything of it is kept.
//   Register  the node connected in the Cluster with the Hello's pods (checked against the
//             node, reports.h), the stream made the node's current one (a previous stream of
//             the node is cancelled), the tap hub told, and the cluster's pods sent to every
//             agent.
//   Dispatch  every message read until the stream ends: deltas into the Store (each numbered
//             one filed once and acknowledged), pod lists into the Cluster, tap events to the
//             TapHub, admin answers to the AdminRelay. A report about another node's pods is
//             refused and counted, and the stream goes on.
//   Teardown  what Register did, undone, and the node marked disconnected unless a newer
//             stream of it has replaced this one.
// Threads: a session runs on the gRPC handler thread of its stream, which reads it; what goes
// down the stream is written by its StreamLink's own thread (docs/ARCHITECTURE.md 4.2).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "aggregator/server_state.h"
#include "aggregator/stream_link.h"

namespace nodemesh::aggregator {

class AgentSession {
 public:
  AgentSession(ServerState& state, grpc::ServerContext& context, AgentStream& stream)
      : state_(state), context_(context), stream_(stream) {}
  AgentSession(const AgentSession&) = delete;
  AgentSession& operator=(const AgentSession&) = delete;

  // The status to end the stream with when the agent is refused; OK when it may go on.
  grpc::Status Admit();
  // After an OK Admit.
  void Register();
  // Returns when the stream ends: the agent closed it, it broke, or it was cancelled (the node
  // connected again, the agent stopped reading, the aggregator is shutting down).
  void Dispatch();
  // After Register, once.
  void Teardown();

 private:
  void OnMetrics(const v1::MetricsDelta& delta);
  void OnPods(const google::protobuf::RepeatedPtrField<v1::Pod>& pods);
  // A report about another node's pods: counted for the node, and logged.
  void Refused(const absl::Status& status);
  // Tells every agent about every pod of the cluster, so that each names peers on other
  // nodes as the pods they are rather than as external addresses.
  void BroadcastPods();
  // Refusals and delta errors are logged at most this often per stream.
  bool ErrorLogDue();

  ServerState& state_;
  grpc::ServerContext& context_;
  AgentStream& stream_;
  v1::Hello hello_;
  std::shared_ptr<StreamLink> link_;
  uint64_t generation_ = 0;  // of the node's stream in the Cluster
  std::chrono::steady_clock::time_point last_error_log_{};
};

}  // namespace nodemesh::aggregator
