// The aggregator's API (api.h) over gRPC to its address: a bounded wait to connect, a
// deadline on every answer, and failures turned into one line that says what to do.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "cli/api.h"
#include "cli/cancel.h"
#include "common/tls/tls.h"
#include "nodemesh/v1/nodemesh.grpc.pb.h"

namespace nodemesh::cli {

inline constexpr std::string_view kDefaultAggregator = "127.0.0.1:8085";

// HOST:PORT, [IPV6]:PORT; an error saying what is expected otherwise.
absl::Status ValidateAggregatorAddress(std::string_view address);

struct ClientOptions {
  std::string address;
  std::chrono::milliseconds connect_timeout{5000};
  std::chrono::milliseconds answer_timeout{10000};
  TlsFiles tls;  // none: plaintext, to a loopback address only
};

class GrpcApiClient final : public AggregatorApi {
 public:
  // Why the options cannot work, if they cannot (a TLS file, plaintext off loopback).
  static absl::StatusOr<std::unique_ptr<GrpcApiClient>> Make(ClientOptions options);

  absl::StatusOr<v1::StatSummaryResponse> StatSummary(
      const v1::StatSummaryRequest& request) override;
  absl::StatusOr<v1::EdgesResponse> Edges(const v1::EdgesRequest& request) override;
  absl::StatusOr<v1::TopRoutesResponse> TopRoutes(const v1::TopRoutesRequest& request) override;
  absl::StatusOr<v1::ListPodsResponse> ListPods(const v1::ListPodsRequest& request) override;
  absl::StatusOr<v1::ViewResponse> View(const v1::ViewRequest& request) override;
  absl::StatusOr<v1::NodeAdminResponse> NodeAdmin(const v1::NodeAdminRequest& request) override;
  absl::Status Tap(const v1::TapRequestSpec& spec, CancelSource& cancel,
                   const std::function<bool(const v1::TapStreamMessage&)>& on_message) override;

  const std::string& address() const override { return options_.address; }

 private:
  GrpcApiClient(ClientOptions options, const AggregatorDialer& dialer);

  template <typename Request, typename Response>
  using Method = grpc::Status (v1::Api::Stub::*)(grpc::ClientContext*, const Request&, Response*);
  template <typename Request, typename Response>
  absl::StatusOr<Response> Call(std::string_view rpc, Method<Request, Response> method,
                                const Request& request);

  // Waits (up to connect_timeout) until the channel is connected or has failed; a failed
  // one makes the next call fail at once with the reason.
  absl::Status WaitUntilReachable();
  absl::Status Explain(const grpc::Status& status, std::string_view rpc) const;

  ClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Api::Stub> stub_;
};

}  // namespace nodemesh::cli
