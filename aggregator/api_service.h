// Api over gRPC: each call checked first against the caller's rights as its certificate
// gives them (authorization.h), then answered by the transport-free calls of api_calls.h.
// Threads: queries and relayed requests run on gRPC's pool for as long as they take; a tap
// holds its handler thread while its client listens.
#pragma once

#include "aggregator/api_calls.h"
#include "aggregator/authorization.h"
#include "nodemesh/v1/nodemesh.grpc.pb.h"

namespace nodemesh::aggregator {

class ApiServiceImpl final : public v1::Api::Service {
 public:
  ApiServiceImpl(const Authorizer& authorizer, const ApiCalls& calls)
      : authorizer_(authorizer), calls_(calls) {}

  grpc::Status StatSummary(grpc::ServerContext* context, const v1::StatSummaryRequest* request,
                           v1::StatSummaryResponse* response) override;
  grpc::Status Edges(grpc::ServerContext* context, const v1::EdgesRequest* request,
                     v1::EdgesResponse* response) override;
  grpc::Status TopRoutes(grpc::ServerContext* context, const v1::TopRoutesRequest* request,
                         v1::TopRoutesResponse* response) override;
  grpc::Status ListPods(grpc::ServerContext* context, const v1::ListPodsRequest* request,
                        v1::ListPodsResponse* response) override;
  grpc::Status View(grpc::ServerContext* context, const v1::ViewRequest* request,
                    v1::ViewResponse* response) override;
  grpc::Status NodeAdmin(grpc::ServerContext* context, const v1::NodeAdminRequest* request,
                         v1::NodeAdminResponse* response) override;
  grpc::Status Tap(grpc::ServerContext* context, const v1::TapRequestSpec* spec,
                   grpc::ServerWriter<v1::TapStreamMessage>* writer) override;

 private:
  const Authorizer& authorizer_;
  const ApiCalls& calls_;
};

}  // namespace nodemesh::aggregator
