// AgentService: one long stream per node agent (docs/ARCHITECTURE.md 2.5), each run as an
// AgentSession (agent_session.h). Threads: Connect holds a gRPC handler thread for the life
// of its stream.
#pragma once

#include "aggregator/server_state.h"
#include "aggregator/stream_link.h"
#include "nodemesh/v1/nodemesh.grpc.pb.h"

namespace nodemesh::aggregator {

class AgentServiceImpl final : public v1::AgentService::Service {
 public:
  explicit AgentServiceImpl(ServerState& state) : state_(state) {}

  grpc::Status Connect(grpc::ServerContext* context, AgentStream* stream) override;

 private:
  ServerState& state_;
};

}  // namespace nodemesh::aggregator
