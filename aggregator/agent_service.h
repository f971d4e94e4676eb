// AgentService: one long stream per node agent (docs/ARCHITECTURE.md 2.5), each run as an
// AgentSession (agent_session.h), and the seconds a peer replica missed (backfill.h).
// Threads: Connect holds a gRPC handler thread for the life of its stream, Backfill for its
// answer.
#pragma once

#include "aggregator/server_state.h"
#include "aggregator/stream_link.h"
#include "nodemesh/v1/nodemesh.grpc.pb.h"

namespace nodemesh::aggregator {

class AgentServiceImpl final : public v1::AgentService::Service {
 public:
  explicit AgentServiceImpl(ServerState& state) : state_(state) {}

  grpc::Status Connect(grpc::ServerContext* context, AgentStream* stream) override;
  // Allowed to whoever may read aggregates (authorization.h): it gives what stat shows; and
  // to a peer replica presenting a token of the replicas' ServiceAccount.
  grpc::Status Backfill(grpc::ServerContext* context, const v1::BackfillRequest* request,
                        grpc::ServerWriter<v1::BackfillReply>* writer) override;

 private:
  absl::Status MayBackfill(const grpc::ServerContext& context) const;

  ServerState& state_;
};

}  // namespace nodemesh::aggregator
