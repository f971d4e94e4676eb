// The aggregator's API (api.h) through the Kubernetes API server, as nodemesh.io/v1alpha1
// (common/httpapi/paths.h): every call a GET with the user's own kubeconfig or in-cluster
// credentials (common/kube: tokens, certificates, exec plugins), so that Kubernetes
// authenticates the caller and RBAC decides what it may read and tap. Answers are protobuf's
// JSON of the gRPC API's messages; a tap is a watch, one TapStreamMessage per line.
//
// Failures are the API server's or the aggregator's Kubernetes Status, made into one meshctl
// error that says what to do (ExplainAnswer): a 403 names the permission the call needed and
// the kubectl command that grants it; a 404 of the whole API says nodemesh is not served
// there; a 503 of the aggregation layer says its APIService is unavailable.
//
// One call at a time per client; Tap blocks its caller until the stream ends.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cli/api.h"
#include "cli/cancel.h"
#include "common/httpapi/paths.h"
#include "common/kube/client.h"

namespace nodemesh::cli {

// The APIService that makes the API server serve nodemesh.io/v1alpha1.
inline constexpr std::string_view kApiServiceName = "v1alpha1.nodemesh.io";

class KubeApiClient final : public AggregatorApi {
 public:
  // A tap stream that brings nothing for this long, not even the aggregator's heartbeat
  // (sent after 10 s of silence), is taken as broken.
  static constexpr std::chrono::milliseconds kTapStallTimeout{30000};

  KubeApiClient(kube::Config config, kube::ExecEnvironment environment);

  absl::StatusOr<v1::StatSummaryResponse> StatSummary(
      const v1::StatSummaryRequest& request) override;
  absl::StatusOr<v1::EdgesResponse> Edges(const v1::EdgesRequest& request) override;
  absl::StatusOr<v1::TopRoutesResponse> TopRoutes(const v1::TopRoutesRequest& request) override;
  absl::StatusOr<v1::ListPodsResponse> ListPods(const v1::ListPodsRequest& request) override;
  absl::StatusOr<v1::ViewResponse> View(const v1::ViewRequest& request) override;
  // Any answer of the agent (its status and body) is the response; an answer that is a
  // Kubernetes Status came from the API server or the aggregator, never from the agent, and
  // is an error.
  absl::StatusOr<v1::NodeAdminResponse> NodeAdmin(const v1::NodeAdminRequest& request) override;
  // Asks the aggregator to end the stream after spec.max_events events (if set): a stream it
  // ends there is a success.
  absl::Status Tap(const v1::TapRequestSpec& spec, CancelSource& cancel,
                   const std::function<bool(const v1::TapStreamMessage&)>& on_message) override;

  // "the Kubernetes API server https://10.0.0.1:6443 (kubeconfig /home/a/.kube/config, context
  // prod)".
  const std::string& address() const override { return address_; }

 private:
  template <typename Response>
  absl::StatusOr<Response> Get(const httpapi::ApiRequest& request);
  // A request that got no answer (UNAVAILABLE, DEADLINE_EXCEEDED), with what to do added.
  absl::Status Unanswered(const absl::Status& failure) const;
  // Whether the API server serves nodemesh.io/v1alpha1: its discovery path is not a 404.
  bool ApiServed();
  // ExplainAnswer for `answer`, asking ApiServed when the answer is a 404.
  absl::Status Explain(const kube::Response& answer, const httpapi::ApiRequest& request);

  kube::Client client_;
  const std::string address_;
};

// What an answer other than 2xx to `request` means, as a meshctl error whose message says
// what to do. `api_server` is KubeApiClient::address(); `api_served` says whether the API
// server serves nodemesh.io/v1alpha1 (its discovery path is not a 404): a 404 of a cluster
// that does not is told apart from the aggregator's own 404 so.
absl::Status ExplainAnswer(const kube::Response& answer, const httpapi::ApiRequest& request,
                           std::string_view api_server, bool api_served);

}  // namespace nodemesh::cli
