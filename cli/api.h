// The aggregator's API as meshctl's commands use it, whatever carries it (client.h: gRPC to
// the aggregator's address). Each call is bounded in time, and a failure is one line that
// says what to do.
#pragma once

#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cli/cancel.h"
#include "nodemesh/v1/nodemesh.pb.h"

namespace nodemesh::cli {

class AggregatorApi {
 public:
  virtual ~AggregatorApi() = default;

  virtual absl::StatusOr<v1::StatSummaryResponse> StatSummary(
      const v1::StatSummaryRequest& request) = 0;
  virtual absl::StatusOr<v1::EdgesResponse> Edges(const v1::EdgesRequest& request) = 0;
  virtual absl::StatusOr<v1::TopRoutesResponse> TopRoutes(const v1::TopRoutesRequest& request) = 0;
  virtual absl::StatusOr<v1::ListPodsResponse> ListPods(const v1::ListPodsRequest& request) = 0;
  virtual absl::StatusOr<v1::NodeAdminResponse> NodeAdmin(const v1::NodeAdminRequest& request) = 0;
  // A whole view (namespaces, workloads, graph, one workload) in one call.
  virtual absl::StatusOr<v1::ViewResponse> View(const v1::ViewRequest& request) = 0;

  // Hands each message to `on_message` until it returns false or `cancel` fires (both OK,
  // and the call is cancelled), or the stream fails or the aggregator ends it (an error).
  virtual absl::Status Tap(const v1::TapRequestSpec& spec, CancelSource& cancel,
                           const std::function<bool(const v1::TapStreamMessage&)>& on_message) = 0;

  // Where the API is reached, as meshctl names it to its user ("127.0.0.1:8085").
  virtual const std::string& address() const = 0;
};

// The line meshctl prints for a failure, without its newline: "meshctl: <message>" (every
// command, and meshctl dashboard's answers to its page).
inline std::string FailureLine(const absl::Status& status) {
  return "meshctl: " + std::string(status.message());
}

}  // namespace nodemesh::cli
