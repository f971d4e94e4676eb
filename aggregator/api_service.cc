#include "aggregator/api_service.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "aggregator/stream_link.h"
#include "common/base/log.h"

namespace nodemesh::aggregator {
namespace {

// A tap's handler looks this often whether its client is still there.
constexpr auto kTapPollInterval = std::chrono::milliseconds(100);
// An admin API path and query: a few parameters.
constexpr size_t kMaxAdminTarget = 4096;

template <typename Response>
grpc::Status Answer(absl::StatusOr<Response> answer, Response* response) {
  if (!answer.ok()) return ToGrpc(answer.status());
  *response = *std::move(answer);
  return grpc::Status::OK;
}

}  // namespace

grpc::Status ApiServiceImpl::StatSummary(grpc::ServerContext* context,
                                         const v1::StatSummaryRequest* request,
                                         v1::StatSummaryResponse* response) {
  if (absl::Status may = state_.authorizer.Read(*context); !may.ok()) return ToGrpc(may);
  return Answer(aggregator::StatSummary(Context(), state_.cluster.Pods(), *request), response);
}

grpc::Status ApiServiceImpl::Edges(grpc::ServerContext* context, const v1::EdgesRequest* request,
                                   v1::EdgesResponse* response) {
  if (absl::Status may = state_.authorizer.Read(*context); !may.ok()) return ToGrpc(may);
  return Answer(aggregator::Edges(Context(), *request), response);
}

grpc::Status ApiServiceImpl::TopRoutes(grpc::ServerContext* context,
                                       const v1::TopRoutesRequest* request,
                                       v1::TopRoutesResponse* response) {
  if (absl::Status may = state_.authorizer.Read(*context); !may.ok()) return ToGrpc(may);
  return Answer(aggregator::TopRoutes(Context(), *request), response);
}

grpc::Status ApiServiceImpl::ListPods(grpc::ServerContext* context,
                                      const v1::ListPodsRequest* request,
                                      v1::ListPodsResponse* response) {
  if (absl::Status may = state_.authorizer.Read(*context); !may.ok()) return ToGrpc(may);
  *response = aggregator::ListPods(state_.cluster.Pods(), state_.cluster.Nodes(state_.NowSeconds()),
                                   *request);
  return grpc::Status::OK;
}

grpc::Status ApiServiceImpl::NodeAdmin(grpc::ServerContext* context,
                                       const v1::NodeAdminRequest* request,
                                       v1::NodeAdminResponse* response) {
  if (absl::Status may = state_.authorizer.RelayToNode(*context, request->node()); !may.ok()) {
    return ToGrpc(may);
  }
  const std::string& target = request->target();
  if (target.empty() || target[0] != '/' || target.size() > kMaxAdminTarget) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        fmt::format("target must be an admin API path with its query, starting "
                                    "with / and at most {} bytes, e.g. /pods",
                                    kMaxAdminTarget));
  }
  std::vector<std::string> nodes;
  const std::shared_ptr<StreamLink> link = state_.agents.LinkOf(request->node(), &nodes);
  if (link == nullptr) {
    return grpc::Status(
        grpc::StatusCode::NOT_FOUND,
        fmt::format("no agent of node '{}' is connected to this aggregator (connected: {})",
                    request->node(),
                    nodes.empty() ? "none" : fmt::format("{}", fmt::join(nodes, ", "))));
  }
  absl::StatusOr<v1::AdminResponse> answer = state_.admin_relay.Call(
      *link, request->node(), target, [context] { return context->IsCancelled(); });
  if (!answer.ok()) return ToGrpc(answer.status());
  response->set_status(answer->status());
  response->set_content_type(std::move(*answer->mutable_content_type()));
  response->set_body(std::move(*answer->mutable_body()));
  return grpc::Status::OK;
}

grpc::Status ApiServiceImpl::Tap(grpc::ServerContext* context, const v1::TapRequestSpec* spec,
                                 grpc::ServerWriter<v1::TapStreamMessage>* writer) {
  if (absl::Status may = state_.authorizer.Tap(*context, *spec); !may.ok()) {
    Log(LogLevel::kWarning, "tap refused for {}: {}", context->peer(), may.message());
    return ToGrpc(may);
  }
  absl::StatusOr<std::shared_ptr<TapSession>> opened =
      state_.tap_hub.Open(*spec, CallerKey(*context));
  if (!opened.ok()) {
    Log(LogLevel::kInfo, "tap refused for {}: {}", context->peer(), opened.status().message());
    return ToGrpc(opened.status());
  }
  const std::shared_ptr<TapSession> session = *std::move(opened);
  Log(LogLevel::kInfo, "tap {} started for {} ({}/{})", session->id(), context->peer(),
      spec->target().type(), spec->target().name());

  const auto poll = std::min<std::chrono::milliseconds>(kTapPollInterval, tap_drops_interval_);
  auto last_drops = std::chrono::steady_clock::now();
  std::vector<v1::TapEvent> events;
  bool client_there = true;
  uint64_t sent = 0;
  const auto enough = [&] { return spec->max_events() != 0 && sent >= spec->max_events(); };
  while (client_there && !enough() && !context->IsCancelled()) {
    events.clear();
    const bool open = session->Wait(poll, &events);
    for (v1::TapEvent& event : events) {
      if (enough()) break;
      v1::TapStreamMessage message;
      *message.mutable_event() = std::move(event);
      if (!writer->Write(message)) {
        client_there = false;
        break;
      }
      ++sent;
    }
    const auto now = std::chrono::steady_clock::now();
    if (client_there && now - last_drops >= tap_drops_interval_) {
      last_drops = now;
      v1::TapDrops drops = session->TakeDrops();
      if (drops.agent_dropped() != 0 || drops.stream_dropped() != 0) {
        v1::TapStreamMessage message;
        *message.mutable_drops() = std::move(drops);
        client_there = writer->Write(message);
      }
    }
    if (!open) break;  // the aggregator is shutting down
  }
  state_.tap_hub.Close(session);
  Log(LogLevel::kInfo, "tap {} ended", session->id());
  if (enough()) return grpc::Status::OK;
  if (context->IsCancelled() || !client_there) {
    return grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
  }
  return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the aggregator is shutting down");
}

QueryContext ApiServiceImpl::Context() const {
  const int64_t now = state_.NowSeconds();
  return QueryContext{state_.store, state_.cluster.StaleNodes(now), now,
                      state_.history_start_second};
}

}  // namespace nodemesh::aggregator
