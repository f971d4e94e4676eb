#include "aggregator/agent_service.h"

#include "aggregator/agent_session.h"
#include "aggregator/backfill.h"

namespace nodemesh::aggregator {

grpc::Status AgentServiceImpl::Connect(grpc::ServerContext* context, AgentStream* stream) {
  AgentSession session(state_, *context, *stream);
  if (grpc::Status admitted = session.Admit(); !admitted.ok()) return admitted;
  session.Register();
  session.Dispatch();
  session.Teardown();
  return grpc::Status::OK;
}

grpc::Status AgentServiceImpl::Backfill(grpc::ServerContext* context,
                                        const v1::BackfillRequest* request,
                                        grpc::ServerWriter<v1::BackfillReply>* writer) {
  if (absl::Status may = MayBackfill(*context); !may.ok()) return ToGrpc(may);
  return ServeBackfill(state_, *request, writer);
}

absl::Status AgentServiceImpl::MayBackfill(const grpc::ServerContext& context) const {
  const absl::Status may_read = state_.authorizer.Read(context);
  const std::string token = BearerTokenOf(context);
  if (may_read.ok() || state_.peer_tokens == nullptr || token.empty()) return may_read;
  // A token of the replicas' ServiceAccount, bound to a pod: another replica.
  const absl::StatusOr<AgentBinding> peer = state_.peer_tokens->Review(token);
  return peer.ok() ? absl::OkStatus() : peer.status();
}

}  // namespace nodemesh::aggregator
