#include "cli/client.h"

#include <fmt/format.h>
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <array>
#include <cctype>

#include "absl/strings/ascii.h"
#include "cli/views/format.h"

namespace nodemesh::cli {
namespace {

// The part of gRPC's connection error a person can act on.
std::string ConnectionFailure(const std::string& grpc_message) {
  const std::string message = absl::AsciiStrToLower(grpc_message);
  static constexpr std::array<std::pair<std::string_view, std::string_view>, 13> kKnown = {{
      {"certificate_verify_failed",
       "its certificate does not verify against --ca: give the CA that issued it"},
      {"tlsv1 alert unknown ca", "it does not know the CA of --cert: give a certificate it issued"},
      {"connection refused", "connection refused"},
      {"no route to host", "no route to host"},
      {"network is unreachable", "network unreachable"},
      {"dns resolution failed", "cannot resolve the host name"},
      {"name or service not known", "cannot resolve the host name"},
      {"domain name not found", "cannot resolve the host name"},
      {"connection reset", "connection reset"},
      {"timed out", "connection timed out"},
      {"socket closed", "connection closed"},
      {"failed parsing http/2", "the server there does not speak gRPC"},
      {"http1.x server", "the server there does not speak gRPC"},
  }};
  for (const auto& [needle, reason] : kKnown) {
    if (message.find(needle) != std::string::npos) return std::string(reason);
  }
  // gRPC wraps the cause: "failed to connect to all addresses; last error: UNKNOWN:
  // ipv4:10.0.0.1:8085: <cause>". The cause is what the user can act on.
  std::string cause = grpc_message.substr(0, grpc_message.find('\n'));
  if (const size_t colon = cause.rfind(": "); colon != std::string::npos) {
    cause = cause.substr(colon + 2);
  }
  if (cause.empty()) return "unavailable";
  if (cause.size() > 1 && std::isupper(static_cast<unsigned char>(cause[0])) &&
      std::islower(static_cast<unsigned char>(cause[1]))) {
    cause[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(cause[0])));
  }
  return cause;
}

// Rounded up: a wait of 300 ms is "within 1s", never "within 0s".
std::string Seconds(std::chrono::milliseconds duration) {
  return FormatSeconds(std::chrono::ceil<std::chrono::seconds>(duration).count());
}

}  // namespace

absl::Status ValidateAggregatorAddress(std::string_view address) {
  const size_t colon = address.rfind(':');
  const auto bad = [&] {
    return absl::InvalidArgumentError(fmt::format(
        "--aggregator '{}' is not HOST:PORT: write e.g. 127.0.0.1:8085 or aggregator.local:8085",
        address));
  };
  if (colon == std::string_view::npos || colon == 0 || colon + 1 == address.size()) return bad();
  const std::string_view port = address.substr(colon + 1);
  if (port.size() > 5 || !std::all_of(port.begin(), port.end(), [](char c) {
        return std::isdigit(static_cast<unsigned char>(c));
      })) {
    return bad();
  }
  const int number = std::stoi(std::string(port));
  if (number < 1 || number > 65535) return bad();
  const std::string_view host = address.substr(0, colon);
  // A bare IPv6 address needs brackets, or its last group would read as the port.
  if (host.find(':') != std::string_view::npos && (host.front() != '[' || host.back() != ']')) {
    return bad();
  }
  return absl::OkStatus();
}

namespace {

std::shared_ptr<grpc::Channel> MakeChannel(const AggregatorDialer& dialer) {
  grpc::ChannelArguments arguments;
  // gRPC's default of 4 MiB is a few thousand pods of `stat pods -A`.
  arguments.SetMaxReceiveMessageSize(256 << 20);
  return dialer.Dial(std::move(arguments));
}

}  // namespace

absl::StatusOr<std::unique_ptr<GrpcApiClient>> GrpcApiClient::Make(ClientOptions options) {
  absl::StatusOr<AggregatorDialer> dialer =
      AggregatorDialer::Make(options.address, options.tls, "--");
  if (!dialer.ok()) return dialer.status();
  return std::unique_ptr<GrpcApiClient>(new GrpcApiClient(std::move(options), *dialer));
}

GrpcApiClient::GrpcApiClient(ClientOptions options, const AggregatorDialer& dialer)
    : options_(std::move(options)),
      channel_(MakeChannel(dialer)),
      stub_(v1::Api::NewStub(channel_)) {}

absl::Status GrpcApiClient::WaitUntilReachable() {
  const auto deadline = std::chrono::system_clock::now() + options_.connect_timeout;
  grpc_connectivity_state state = channel_->GetState(/*try_to_connect=*/true);
  while (state != GRPC_CHANNEL_READY && state != GRPC_CHANNEL_TRANSIENT_FAILURE &&
         state != GRPC_CHANNEL_SHUTDOWN) {
    if (!channel_->WaitForStateChange(state, deadline)) {
      return absl::UnavailableError(
          fmt::format("cannot reach the aggregator at {} (no answer within {}): start it, or point "
                      "--aggregator / NODEMESH_AGGREGATOR at it",
                      options_.address, Seconds(options_.connect_timeout)));
    }
    state = channel_->GetState(/*try_to_connect=*/true);
  }
  return absl::OkStatus();
}

absl::Status GrpcApiClient::Explain(const grpc::Status& status, std::string_view rpc) const {
  const std::string& message = status.error_message();
  // An HTTP/2 server that is not a gRPC one (a proxy, another service on that port) answers
  // with a plain HTTP status, which gRPC reports under some code or other.
  constexpr std::string_view kHttpStatus = "Received http2 header with status: ";
  if (const size_t at = message.find(kHttpStatus); at != std::string::npos) {
    return absl::UnavailableError(
        fmt::format("the server at {} is not a nodemesh aggregator (it answered HTTP {}): point "
                    "--aggregator / NODEMESH_AGGREGATOR at the aggregator",
                    options_.address, message.substr(at + kHttpStatus.size())));
  }
  switch (status.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
      return absl::UnavailableError(
          fmt::format("cannot reach the aggregator at {} ({}): start it, or point --aggregator / "
                      "NODEMESH_AGGREGATOR at it",
                      options_.address, ConnectionFailure(message)));
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return absl::DeadlineExceededError(
          fmt::format("the aggregator at {} did not answer {} within {}: see whether it is "
                      "overloaded, or try a shorter -t window",
                      options_.address, rpc, Seconds(options_.answer_timeout)));
    case grpc::StatusCode::UNIMPLEMENTED:
      return absl::UnimplementedError(
          fmt::format("the aggregator at {} does not serve {}: run an aggregator of the same "
                      "version as meshctl",
                      options_.address, rpc));
    case grpc::StatusCode::UNAUTHENTICATED:
      return absl::UnauthenticatedError(fmt::format("the aggregator refused {}: {}", rpc, message));
    case grpc::StatusCode::PERMISSION_DENIED:
      return absl::PermissionDeniedError(
          fmt::format("the aggregator refused {}: {}", rpc, message));
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return absl::ResourceExhaustedError(
          fmt::format("the aggregator refused {}: {}", rpc, message));
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::NOT_FOUND:
    case grpc::StatusCode::FAILED_PRECONDITION:
    case grpc::StatusCode::OUT_OF_RANGE:
      // The aggregator's own words say what is wrong with the request.
      return absl::InvalidArgumentError(fmt::format("the aggregator refused {}: {}", rpc, message));
    default:
      return absl::UnknownError(fmt::format("{} failed at the aggregator {} ({}: {}): see its log",
                                            rpc, options_.address,
                                            GrpcStatusName(status.error_code()), message));
  }
}

template <typename Request, typename Response>
absl::StatusOr<Response> GrpcApiClient::Call(std::string_view rpc, Method<Request, Response> method,
                                             const Request& request) {
  if (absl::Status reachable = WaitUntilReachable(); !reachable.ok()) return reachable;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + options_.answer_timeout);
  Response response;
  const grpc::Status status = (stub_.get()->*method)(&context, request, &response);
  if (!status.ok()) return Explain(status, rpc);
  return response;
}

absl::StatusOr<v1::StatSummaryResponse> GrpcApiClient::StatSummary(
    const v1::StatSummaryRequest& request) {
  return Call("StatSummary", &v1::Api::Stub::StatSummary, request);
}

absl::StatusOr<v1::EdgesResponse> GrpcApiClient::Edges(const v1::EdgesRequest& request) {
  return Call("Edges", &v1::Api::Stub::Edges, request);
}

absl::StatusOr<v1::TopRoutesResponse> GrpcApiClient::TopRoutes(
    const v1::TopRoutesRequest& request) {
  return Call("TopRoutes", &v1::Api::Stub::TopRoutes, request);
}

absl::StatusOr<v1::ListPodsResponse> GrpcApiClient::ListPods(const v1::ListPodsRequest& request) {
  return Call("ListPods", &v1::Api::Stub::ListPods, request);
}

absl::StatusOr<v1::ViewResponse> GrpcApiClient::View(const v1::ViewRequest& request) {
  return Call("View", &v1::Api::Stub::View, request);
}

absl::StatusOr<v1::NodeAdminResponse> GrpcApiClient::NodeAdmin(
    const v1::NodeAdminRequest& request) {
  return Call("NodeAdmin", &v1::Api::Stub::NodeAdmin, request);
}

absl::Status GrpcApiClient::Tap(
    const v1::TapRequestSpec& spec, CancelSource& cancel,
    const std::function<bool(const v1::TapStreamMessage&)>& on_message) {
  if (absl::Status reachable = WaitUntilReachable(); !reachable.ok()) return reachable;
  grpc::ClientContext context;
  const CancelSource::Registration registration =
      cancel.OnCancel([&context] { context.TryCancel(); });
  std::unique_ptr<grpc::ClientReader<v1::TapStreamMessage>> reader = stub_->Tap(&context, spec);
  v1::TapStreamMessage message;
  bool received = false, stopped = false;
  while (reader->Read(&message)) {
    received = true;
    if (!on_message(message)) {
      stopped = true;
      context.TryCancel();
      while (reader->Read(&message)) {
      }
      break;
    }
  }
  const grpc::Status status = reader->Finish();
  if (stopped || cancel.cancelled()) return absl::OkStatus();
  if (status.ok()) {
    return absl::UnavailableError(fmt::format(
        "the aggregator at {} ended the tap stream: run the command again", options_.address));
  }
  if (received && status.error_code() == grpc::StatusCode::UNAVAILABLE) {
    return absl::UnavailableError(
        fmt::format("the tap stream from the aggregator at {} broke ({}): run the command again",
                    options_.address, ConnectionFailure(status.error_message())));
  }
  return Explain(status, "Tap");
}

}  // namespace nodemesh::cli
