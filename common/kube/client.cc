#include "common/kube/client.h"

#include <algorithm>
#include <string>

#include "common/base/format.h"
#include "common/kube/libcurl.h"

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
      endpoint_((InitCurlOnce(), std::make_unique<const Endpoint>(config_))),
      credentials_(config_, std::move(environment), stats_.token_reloads, stats_.exec_runs) {}

Client::~Client() {
  for (void* easy : idle_handles_) curl_easy_cleanup(easy);
}

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

void* Client::TakeHandle(uint64_t generation) {
  {
    std::lock_guard lock(handles_mutex_);
    if (generation != idle_generation_) {
      for (void* easy : idle_handles_) curl_easy_cleanup(easy);
      idle_handles_.clear();
      idle_generation_ = generation;
    }
    if (!idle_handles_.empty()) {
      void* easy = idle_handles_.back();
      idle_handles_.pop_back();
      // Forgets every option but keeps the handle's open connections and TLS sessions.
      curl_easy_reset(easy);
      return easy;
    }
  }
  return curl_easy_init();
}

void Client::ReturnHandle(void* easy, uint64_t generation) {
  // A few idle handles are enough for the agent's few concurrent requests.
  constexpr size_t kMaxIdleHandles = 4;
  std::lock_guard lock(handles_mutex_);
  if (generation == idle_generation_ && idle_handles_.size() < kMaxIdleHandles) {
    idle_handles_.push_back(easy);
  } else {
    curl_easy_cleanup(easy);
  }
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
  CURL* easy = static_cast<CURL*>(TakeHandle(credentials.generation));
  if (easy == nullptr) {
    stats_.failures.fetch_add(1, std::memory_order_relaxed);
    return absl::ResourceExhaustedError(fmt::format("{}: curl_easy_init failed", what));
  }

  curl_slist* raw_headers = BaseHeaders(credentials.authorization);
  if (!body.empty()) {
    raw_headers =
        curl_slist_append(raw_headers, fmt::format("Content-Type: {}", content_type).c_str());
  }
  // No "Expect: 100-continue" round trip before a body.
  raw_headers = curl_slist_append(raw_headers, "Expect:");
  const Slist headers(raw_headers);

  char error_buffer[CURL_ERROR_SIZE] = {};
  Configure(easy, config_, *endpoint_, credentials, path, headers.get(), error_buffer);
  curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout.count()));
  curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS,
                   static_cast<long>(std::min(timeout, kMaxConnectTimeout).count()));
  const std::string method_string(method);
  if (method == "GET") {
    curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L);
  } else {
    curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, method_string.c_str());
  }
  if (!body.empty()) {
    curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
    curl_easy_setopt(easy, CURLOPT_POSTFIELDS, body.data());
  }
  Response response;
  curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, AppendToString);
  curl_easy_setopt(easy, CURLOPT_WRITEDATA, &response.body);

  const CURLcode code = curl_easy_perform(easy);
  curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &response.status);
  long os_errno = 0;
  curl_easy_getinfo(easy, CURLINFO_OS_ERRNO, &os_errno);
  // The handle keeps pointers to this frame's buffers until reset: detach them now.
  curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, nullptr);
  curl_easy_setopt(easy, CURLOPT_HTTPHEADER, nullptr);
  ReturnHandle(easy, credentials.generation);
  if (code != CURLE_OK) {
    stats_.failures.fetch_add(1, std::memory_order_relaxed);
    if (code == CURLE_WRITE_ERROR) {
      return absl::ResourceExhaustedError(
          fmt::format("{}: the answer is larger than {} bytes", what, kMaxBody));
    }
    return TransportError(config_, what, code, error_buffer, os_errno, timeout);
  }
  if (response.status >= 400) stats_.failures.fetch_add(1, std::memory_order_relaxed);
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
