// ApiCalls: the clients' calls as the aggregator answers them, whatever carries them: the
// questions (stat, edges, routes, pods, views), answered by the pure queries of queries.h over the
// store and the cluster; taps (tap_hub.h); and admin requests relayed to a node's agent down
// its stream (admin_relay.h). A transport (api_service.h: gRPC) decodes a call, checks the
// caller's rights first (authorization.h), calls one of these and encodes what it returns, so
// that every transport answers alike, in the same words.
//
// Threads: any; the calls share nothing but the parts of ServerState, which lock for
// themselves. A question runs on its caller's thread for as long as it takes; a relayed
// request waits there for the agent's answer; a tap holds its caller's thread while its client
// listens.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "aggregator/queries.h"
#include "aggregator/server_state.h"
#include "nodemesh/v1/nodemesh.pb.h"

namespace nodemesh::aggregator {

// Who makes a call, as its transport knows them.
struct CallOrigin {
  std::string key;   // one per person or host, for limits per caller (TapHub::Open)
  std::string peer;  // where the call comes from, for the log
};

// A tap's way to its client: the transport's stream.
class TapStream {
 public:
  virtual ~TapStream() = default;
  // Sends one message; false once the client is gone.
  virtual bool Write(const v1::TapStreamMessage& message) = 0;
  // The client left or the call was cancelled: asked between messages, at least every 100 ms.
  virtual bool Cancelled() const = 0;
  // Nothing was sent for TapPacing::heartbeat_interval: tells the client the tap is alive,
  // so that the proxies on the way keep a quiet stream open; false once the client is gone.
  // A transport with keepalives of its own sends nothing.
  virtual bool Heartbeat() = 0;
};

// How often a tap's client hears from it when its events do not speak for it.
struct TapPacing {
  // Events the agents or the stream dropped are told this often (when there were any).
  std::chrono::milliseconds drops_interval{1000};
  // A stream quiet for this long gets a heartbeat (TapStream::Heartbeat).
  std::chrono::milliseconds heartbeat_interval{10000};
};

class ApiCalls {
 public:
  ApiCalls(ServerState& state, TapPacing tap_pacing) : state_(state), tap_pacing_(tap_pacing) {}

  absl::StatusOr<v1::StatSummaryResponse> StatSummary(const v1::StatSummaryRequest& request) const;
  absl::StatusOr<v1::EdgesResponse> Edges(const v1::EdgesRequest& request) const;
  absl::StatusOr<v1::TopRoutesResponse> TopRoutes(const v1::TopRoutesRequest& request) const;
  v1::ListPodsResponse ListPods(const v1::ListPodsRequest& request) const;
  absl::StatusOr<v1::ViewResponse> View(const v1::ViewRequest& request) const;
  // A GET of the node's admin API through its agent's stream. INVALID_ARGUMENT for a target
  // that is no admin path, NOT_FOUND naming the connected nodes when the node's agent is not
  // connected, else AdminRelay::Call's failures; `cancelled` says the caller left.
  absl::StatusOr<v1::NodeAdminResponse> NodeAdmin(const v1::NodeAdminRequest& request,
                                                  const std::function<bool()>& cancelled) const;
  // Streams the tap's events, its drops and heartbeats as TapPacing says, to `stream` until the
  // client goes (CANCELLED) or the aggregator shuts down (UNAVAILABLE); a tap the hub cannot
  // open fails at once with the hub's reason.
  absl::Status Tap(const v1::TapRequestSpec& spec, const CallOrigin& origin,
                   TapStream& stream) const;
  // Tap in two steps, for a transport that answers a refusal otherwise than a stream's end
  // (HTTP: its status line goes before the first event). OpenTap fails at once with the
  // hub's reason; StreamTap streams an open tap as Tap does, and closes it.
  absl::StatusOr<std::shared_ptr<TapSession>> OpenTap(const v1::TapRequestSpec& spec,
                                                      const CallOrigin& origin) const;
  absl::Status StreamTap(std::shared_ptr<TapSession> session, const v1::TapRequestSpec& spec,
                         TapStream& stream) const;

 private:
  QueryContext Context() const;

  ServerState& state_;
  const TapPacing tap_pacing_;
};

}  // namespace nodemesh::aggregator
