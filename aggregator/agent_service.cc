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
  if (absl::Status may = state_.authorizer.Read(*context); !may.ok()) return ToGrpc(may);
  return ServeBackfill(state_, *request, writer);
}

}  // namespace nodemesh::aggregator
