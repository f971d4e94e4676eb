#include "aggregator/api_service.h"

#include <utility>

#include "common/base/log.h"

namespace nodemesh::aggregator {
namespace {

template <typename Response>
grpc::Status Reply(absl::StatusOr<Response> answer, Response* response) {
  if (!answer.ok()) return ToGrpc(answer.status());
  *response = *std::move(answer);
  return grpc::Status::OK;
}

// A tap's gRPC stream.
class GrpcTapStream final : public TapStream {
 public:
  GrpcTapStream(const grpc::ServerContext& context,
                grpc::ServerWriter<v1::TapStreamMessage>& writer)
      : context_(context), writer_(writer) {}

  bool Write(const v1::TapStreamMessage& message) override { return writer_.Write(message); }
  bool Cancelled() const override { return context_.IsCancelled(); }
  // HTTP/2 pings keep the call; an empty message would only wake the client.
  bool Heartbeat() override { return !context_.IsCancelled(); }

 private:
  const grpc::ServerContext& context_;
  grpc::ServerWriter<v1::TapStreamMessage>& writer_;
};

}  // namespace

grpc::Status ApiServiceImpl::StatSummary(grpc::ServerContext* context,
                                         const v1::StatSummaryRequest* request,
                                         v1::StatSummaryResponse* response) {
  if (absl::Status may = authorizer_.Read(*context); !may.ok()) return ToGrpc(may);
  return Reply(calls_.StatSummary(*request), response);
}

grpc::Status ApiServiceImpl::Edges(grpc::ServerContext* context, const v1::EdgesRequest* request,
                                   v1::EdgesResponse* response) {
  if (absl::Status may = authorizer_.Read(*context); !may.ok()) return ToGrpc(may);
  return Reply(calls_.Edges(*request), response);
}

grpc::Status ApiServiceImpl::TopRoutes(grpc::ServerContext* context,
                                       const v1::TopRoutesRequest* request,
                                       v1::TopRoutesResponse* response) {
  if (absl::Status may = authorizer_.Read(*context); !may.ok()) return ToGrpc(may);
  return Reply(calls_.TopRoutes(*request), response);
}

grpc::Status ApiServiceImpl::ListPods(grpc::ServerContext* context,
                                      const v1::ListPodsRequest* request,
                                      v1::ListPodsResponse* response) {
  if (absl::Status may = authorizer_.Read(*context); !may.ok()) return ToGrpc(may);
  *response = calls_.ListPods(*request);
  return grpc::Status::OK;
}

grpc::Status ApiServiceImpl::View(grpc::ServerContext* context, const v1::ViewRequest* request,
                                  v1::ViewResponse* response) {
  if (absl::Status may = authorizer_.Read(*context); !may.ok()) return ToGrpc(may);
  return Reply(calls_.View(*request), response);
}

grpc::Status ApiServiceImpl::NodeAdmin(grpc::ServerContext* context,
                                       const v1::NodeAdminRequest* request,
                                       v1::NodeAdminResponse* response) {
  if (absl::Status may = authorizer_.RelayToNode(*context, request->node()); !may.ok()) {
    return ToGrpc(may);
  }
  return Reply(calls_.NodeAdmin(*request, [context] { return context->IsCancelled(); }), response);
}

grpc::Status ApiServiceImpl::Tap(grpc::ServerContext* context, const v1::TapRequestSpec* spec,
                                 grpc::ServerWriter<v1::TapStreamMessage>* writer) {
  if (absl::Status may = authorizer_.Tap(*context, *spec); !may.ok()) {
    Log(LogLevel::kWarning, "tap refused for {}: {}", context->peer(), may.message());
    return ToGrpc(may);
  }
  GrpcTapStream stream(*context, *writer);
  return ToGrpc(calls_.Tap(*spec, CallOrigin{CallerKey(*context), context->peer()}, stream));
}

}  // namespace nodemesh::aggregator
