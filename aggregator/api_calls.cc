#include "aggregator/api_calls.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "aggregator/stream_link.h"
#include "common/base/log.h"

namespace nodemesh::aggregator {
namespace {

// A tap looks this often whether its client is still there.
constexpr auto kTapPollInterval = std::chrono::milliseconds(100);
// An admin API path and query: a few parameters.
constexpr size_t kMaxAdminTarget = 4096;

}  // namespace

absl::StatusOr<v1::StatSummaryResponse> ApiCalls::StatSummary(
    const v1::StatSummaryRequest& request) const {
  return aggregator::StatSummary(Context(), state_.cluster.Pods(), request);
}

absl::StatusOr<v1::EdgesResponse> ApiCalls::Edges(const v1::EdgesRequest& request) const {
  return aggregator::Edges(Context(), request);
}

absl::StatusOr<v1::TopRoutesResponse> ApiCalls::TopRoutes(
    const v1::TopRoutesRequest& request) const {
  return aggregator::TopRoutes(Context(), request);
}

v1::ListPodsResponse ApiCalls::ListPods(const v1::ListPodsRequest& request) const {
  return aggregator::ListPods(state_.cluster.Pods(), state_.cluster.Nodes(state_.NowSeconds()),
                              request);
}

absl::StatusOr<v1::ViewResponse> ApiCalls::View(const v1::ViewRequest& request) const {
  const auto started = std::chrono::steady_clock::now();
  absl::StatusOr<v1::ViewResponse> view =
      aggregator::View(Context(), state_.cluster.Pods(), request);
  // What each dashboard refresh costs (one view a refresh), at debug level.
  Log(LogLevel::kDebug, "view {} of {} namespace(s) answered in {} ms{}",
      v1::ViewRequest::Kind_Name(request.kind()), request.namespaces_size(),
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                            started)
          .count(),
      view.ok() ? "" : ": " + std::string(view.status().message()));
  return view;
}

absl::StatusOr<v1::NodeAdminResponse> ApiCalls::NodeAdmin(
    const v1::NodeAdminRequest& request, const std::function<bool()>& cancelled) const {
  const std::string& target = request.target();
  if (target.empty() || target[0] != '/' || target.size() > kMaxAdminTarget) {
    return absl::InvalidArgumentError(
        fmt::format("target must be an admin API path with its query, starting with / and at "
                    "most {} bytes, e.g. /pods",
                    kMaxAdminTarget));
  }
  std::vector<std::string> nodes;
  const std::shared_ptr<StreamLink> link = state_.agents.LinkOf(request.node(), &nodes);
  if (link == nullptr) {
    return absl::NotFoundError(fmt::format(
        "no agent of node '{}' is connected to this aggregator (connected: {})", request.node(),
        nodes.empty() ? "none" : fmt::format("{}", fmt::join(nodes, ", "))));
  }
  absl::StatusOr<v1::AdminResponse> answer =
      state_.admin_relay.Call(*link, request.node(), target, cancelled);
  if (!answer.ok()) return answer.status();
  v1::NodeAdminResponse response;
  response.set_status(answer->status());
  response.set_content_type(std::move(*answer->mutable_content_type()));
  response.set_body(std::move(*answer->mutable_body()));
  return response;
}

absl::Status ApiCalls::Tap(const v1::TapRequestSpec& spec, const CallOrigin& origin,
                           TapStream& stream) const {
  absl::StatusOr<std::shared_ptr<TapSession>> opened = OpenTap(spec, origin);
  if (!opened.ok()) return opened.status();
  return StreamTap(*std::move(opened), spec, stream);
}

absl::StatusOr<std::shared_ptr<TapSession>> ApiCalls::OpenTap(const v1::TapRequestSpec& spec,
                                                              const CallOrigin& origin) const {
  absl::StatusOr<std::shared_ptr<TapSession>> opened = state_.tap_hub.Open(spec, origin.key);
  if (!opened.ok()) {
    Log(LogLevel::kInfo, "tap refused for {}: {}", origin.peer, opened.status().message());
    return opened.status();
  }
  Log(LogLevel::kInfo, "tap {} started for {} ({}/{})", (*opened)->id(), origin.peer,
      spec.target().type(), spec.target().name());
  return opened;
}

absl::Status ApiCalls::StreamTap(std::shared_ptr<TapSession> session,
                                 const v1::TapRequestSpec& spec, TapStream& stream) const {
  const auto poll =
      std::min({kTapPollInterval, tap_pacing_.drops_interval, tap_pacing_.heartbeat_interval});
  auto last_drops = std::chrono::steady_clock::now();
  auto last_sent = last_drops;
  std::vector<v1::TapEvent> events;
  bool client_there = true;
  uint64_t sent = 0;
  const auto enough = [&] { return spec.max_events() != 0 && sent >= spec.max_events(); };
  while (client_there && !enough() && !stream.Cancelled()) {
    events.clear();
    const bool open = session->Wait(poll, &events);
    for (v1::TapEvent& event : events) {
      if (enough()) break;
      v1::TapStreamMessage message;
      *message.mutable_event() = std::move(event);
      if (!stream.Write(message)) {
        client_there = false;
        break;
      }
      ++sent;
      last_sent = std::chrono::steady_clock::now();
    }
    const auto now = std::chrono::steady_clock::now();
    if (client_there && now - last_drops >= tap_pacing_.drops_interval) {
      last_drops = now;
      v1::TapDrops drops = session->TakeDrops();
      if (drops.agent_dropped() != 0 || drops.stream_dropped() != 0) {
        v1::TapStreamMessage message;
        *message.mutable_drops() = std::move(drops);
        client_there = stream.Write(message);
        last_sent = now;
      }
    }
    if (client_there && now - last_sent >= tap_pacing_.heartbeat_interval) {
      client_there = stream.Heartbeat();
      last_sent = now;
    }
    if (!open) break;  // the aggregator is shutting down
  }
  state_.tap_hub.Close(session);
  Log(LogLevel::kInfo, "tap {} ended", session->id());
  if (enough()) return absl::OkStatus();
  if (stream.Cancelled() || !client_there) return absl::CancelledError("the client went away");
  return absl::UnavailableError("the aggregator is shutting down");
}

QueryContext ApiCalls::Context() const {
  const int64_t now = state_.NowSeconds();
  return QueryContext{state_.store, state_.cluster.StaleNodes(now), now,
                      state_.history_start_second.load(std::memory_order_relaxed),
                      state_.prometheus};
}

}  // namespace nodemesh::aggregator
