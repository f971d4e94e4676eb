#include "aggregator/agent_service.h"

#include "aggregator/agent_session.h"

namespace nodemesh::aggregator {

grpc::Status AgentServiceImpl::Connect(grpc::ServerContext* context, AgentStream* stream) {
  AgentSession session(state_, *context, *stream);
  if (grpc::Status admitted = session.Admit(); !admitted.ok()) return admitted;
  session.Register();
  session.Dispatch();
  session.Teardown();
  return grpc::Status::OK;
}

}  // namespace nodemesh::aggregator
