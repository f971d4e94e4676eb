// Api: the clients' questions (meshctl's stat, edges, routes, pods), answered by the pure
// queries of queries.h over the store and the cluster; taps (tap_hub.h); and admin requests
// relayed to a node's agent down its stream (admin_relay.h). Every call is checked first
// against the caller's rights (authorization.h). Threads: queries and relayed requests run on
// gRPC's pool for as long as they take; a tap holds its handler thread while its client
// listens.
#pragma once

#include <chrono>

#include "aggregator/queries.h"
#include "aggregator/server_state.h"
#include "nodemesh/v1/nodemesh.grpc.pb.h"

namespace nodemesh::aggregator {

class ApiServiceImpl final : public v1::Api::Service {
 public:
  // A tap's client hears of dropped events every `tap_drops_interval` (when there were any).
  ApiServiceImpl(ServerState& state, std::chrono::milliseconds tap_drops_interval)
      : state_(state), tap_drops_interval_(tap_drops_interval) {}

  grpc::Status StatSummary(grpc::ServerContext* context, const v1::StatSummaryRequest* request,
                           v1::StatSummaryResponse* response) override;
  grpc::Status Edges(grpc::ServerContext* context, const v1::EdgesRequest* request,
                     v1::EdgesResponse* response) override;
  grpc::Status TopRoutes(grpc::ServerContext* context, const v1::TopRoutesRequest* request,
                         v1::TopRoutesResponse* response) override;
  grpc::Status ListPods(grpc::ServerContext* context, const v1::ListPodsRequest* request,
                        v1::ListPodsResponse* response) override;
  grpc::Status NodeAdmin(grpc::ServerContext* context, const v1::NodeAdminRequest* request,
                         v1::NodeAdminResponse* response) override;
  grpc::Status Tap(grpc::ServerContext* context, const v1::TapRequestSpec* spec,
                   grpc::ServerWriter<v1::TapStreamMessage>* writer) override;

 private:
  QueryContext Context() const;

  ServerState& state_;
  const std::chrono::milliseconds tap_drops_interval_;
};

}  // namespace nodemesh::aggregator
