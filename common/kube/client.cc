#include "common/kube/client.h"

#include <algorithm>
#include <string>

#include "common/base/format.h"
#include "common/kube/transport.h"

namespace nodemesh::kube {
namespace {

// The object a successful answer carries, or the error the answer means.
absl::StatusOr<nlohmann::json> ObjectOf(const absl::StatusOr<Response>& response,
                                        const std::string& what) {
  if (!response.ok()) return response.status();
  if (response->status >= 300) return StatusFromResponse(*response, what);
  nlohmann::json object =
      nlohmann::json::parse(response->body, nullptr, /*allow_exceptions=*/false);
  if (object.is_discarded()) {
    return absl::InternalError(fmt::format(
        "{}: the API server answered {} with a body that is not JSON", what, response->status));
  }
  return object;
}

}  // namespace

Client::Client(Config config, ExecEnvironment environment)
    : config_(std::move(config)),
      endpoint_(std::make_unique<const Endpoint>(config_)),
      credentials_(config_, std::move(environment), stats_.token_reloads, stats_.exec_runs) {}

Client::~Client() = default;

absl::StatusOr<RequestCredentials> Client::StartRequest(std::string_view what) {
  stats_.requests.fetch_add(1, std::memory_order_relaxed);
  absl::StatusOr<RequestCredentials> credentials = credentials_.Get();
  if (!credentials.ok()) {
    stats_.failures.fetch_add(1, std::memory_order_relaxed);
    return absl::Status(credentials.status().code(),
                        fmt::format("{}: {}", what, credentials.status().message()));
  }
  return credentials;
}

absl::StatusOr<std::optional<RequestCredentials>> Client::RenewAfterUnauthorized(
    const RequestCredentials& used, std::string_view what) {
  const absl::StatusOr<bool> renewed = credentials_.RefreshAfterUnauthorized(used.generation);
  if (!renewed.ok()) {
    stats_.failures.fetch_add(1, std::memory_order_relaxed);
    return absl::Status(renewed.status().code(),
                        fmt::format("{}: 401 Unauthorized, and renewing the credentials failed: {}",
                                    what, renewed.status().message()));
  }
  if (!*renewed) return std::optional<RequestCredentials>();
  absl::StatusOr<RequestCredentials> credentials = StartRequest(what);
  if (!credentials.ok()) return credentials.status();
  return *std::move(credentials);
}

absl::StatusOr<Response> Client::Request(std::string_view method, std::string_view path,
                                         std::string_view body, std::string_view content_type,
                                         std::chrono::milliseconds timeout) {
  const std::string what = DescribeRequest(method, path);
  const absl::StatusOr<RequestCredentials> credentials = StartRequest(what);
  if (!credentials.ok()) return credentials.status();
  absl::StatusOr<Response> response =
      Perform(method, path, body, content_type, timeout, *credentials, what);
  if (!response.ok() || response->status != 401) return response;
  const absl::StatusOr<std::optional<RequestCredentials>> renewed =
      RenewAfterUnauthorized(*credentials, what);
  if (!renewed.ok()) return renewed.status();
  if (!renewed->has_value()) return response;
  return Perform(method, path, body, content_type, timeout, **renewed, what);
}

absl::StatusOr<Response> Client::Perform(std::string_view method, std::string_view path,
                                         std::string_view body, std::string_view content_type,
                                         std::chrono::milliseconds timeout,
                                         const RequestCredentials& credentials,
                                         const std::string& what) {
  Exchange exchange(config_, *endpoint_, what);
  const Exchange::Clock::time_point deadline = Exchange::Clock::now() + timeout;
  const absl::Status sent = exchange.Send(method, path, body, content_type, credentials, deadline);
  absl::StatusOr<Response> response = sent.ok() ? exchange.Receive(deadline) : sent;
  if (!response.ok() || response->status >= 400) {
    stats_.failures.fetch_add(1, std::memory_order_relaxed);
  }
  return response;
}

absl::StatusOr<nlohmann::json> Client::Get(std::string_view path) {
  return ObjectOf(Request("GET", path), DescribeRequest("GET", path));
}

absl::StatusOr<nlohmann::json> Client::MergePatch(std::string_view path,
                                                  const nlohmann::json& patch) {
  const std::string body = patch.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return ObjectOf(Request("PATCH", path, body, "application/merge-patch+json"),
                  DescribeRequest("PATCH", path));
}

}  // namespace nodemesh::kube
