#include "common/kube/client.h"

#include <curl/curl.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "common/base/file.h"
#include "common/base/format.h"
#include "common/base/log.h"
#include "common/base/version.h"

namespace nodemesh::kube {
namespace {

using Clock = std::chrono::steady_clock;

// Bodies and stream lines larger than this are refused rather than buffered: no Kubernetes
// object comes near it (etcd caps values at 1.5 MiB), a broken server might.
constexpr size_t kMaxBody = 256u << 20;
// How often a stream looks at its stop flag and its stall deadline.
constexpr std::chrono::milliseconds kStreamPoll{100};
constexpr std::chrono::milliseconds kMaxConnectTimeout{std::chrono::seconds(10)};

void InitCurlOnce() {
  // curl_global_init is not thread-safe itself; a function-local static runs it exactly once.
  static const CURLcode result = curl_global_init(CURL_GLOBAL_DEFAULT);
  if (result != CURLE_OK) {
    Log(LogLevel::kError, "kube: libcurl failed to initialise: {}", curl_easy_strerror(result));
  }
}

std::string_view Trim(std::string_view text) {
  const size_t begin = text.find_first_not_of(" \t\r\n");
  if (begin == std::string_view::npos) return {};
  const size_t end = text.find_last_not_of(" \t\r\n");
  return text.substr(begin, end - begin + 1);
}

std::string JoinPath(std::string_view dir, std::string_view name) {
  std::string path(dir);
  if (!path.empty() && path.back() != '/') path += '/';
  path += name;
  return path;
}

std::string_view ReasonPhrase(long status) {
  switch (status) {
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 406:
      return "Not Acceptable";
    case 409:
      return "Conflict";
    case 410:
      return "Gone";
    case 413:
      return "Request Entity Too Large";
    case 415:
      return "Unsupported Media Type";
    case 422:
      return "Unprocessable Entity";
    case 429:
      return "Too Many Requests";
    case 500:
      return "Internal Server Error";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    default:
      return {};
  }
}

// What a request does, in the API's own words, for messages: "list pods",
// "get pods emojivoto/web-1", "watch pods in emojivoto", "patch namespaces emojivoto". A
// path that is not a resource path is described as "GET /path".
std::string Describe(std::string_view method, std::string_view path) {
  const size_t question = path.find('?');
  const std::string_view query = question == std::string_view::npos ? "" : path.substr(question);
  const std::string_view bare = path.substr(0, question);
  std::vector<std::string_view> segments;
  for (size_t at = 0; at < bare.size();) {
    const size_t slash = bare.find('/', at);
    const size_t end = slash == std::string_view::npos ? bare.size() : slash;
    if (end > at) segments.push_back(bare.substr(at, end - at));
    at = end + 1;
  }
  size_t first = 0;
  if (segments.size() >= 2 && segments[0] == "api") {
    first = 2;  // /api/v1
  } else if (segments.size() >= 3 && segments[0] == "apis") {
    first = 3;  // /apis/group/version
  } else {
    return fmt::format("{} {}", method, bare);
  }
  std::string namespace_name;
  if (segments.size() >= first + 3 && segments[first] == "namespaces") {
    namespace_name = std::string(segments[first + 1]);
    first += 2;
  }
  if (segments.size() <= first) return fmt::format("{} {}", method, bare);
  const std::string_view resource = segments[first];
  const bool named = segments.size() > first + 1;
  std::string verb;
  if (method == "GET") {
    const bool watch = query.find("watch=1") != std::string_view::npos ||
                       query.find("watch=true") != std::string_view::npos;
    verb = watch ? "watch" : named ? "get" : "list";
  } else if (method == "PATCH") {
    verb = "patch";
  } else if (method == "POST") {
    verb = "create";
  } else if (method == "PUT") {
    verb = "update";
  } else if (method == "DELETE") {
    verb = named ? "delete" : "deletecollection";
  } else {
    verb = std::string(method);
  }
  std::string description = fmt::format("{} {}", verb, resource);
  if (named) {
    description += ' ';
    if (!namespace_name.empty()) description += namespace_name + "/";
    description += segments[first + 1];
    for (size_t i = first + 2; i < segments.size(); ++i) {
      description += '/';
      description += segments[i];
    }
  } else if (!namespace_name.empty()) {
    description += " in " + namespace_name;
  }
  return description;
}

struct EasyDeleter {
  void operator()(CURL* easy) const { curl_easy_cleanup(easy); }
};
using EasyHandle = std::unique_ptr<CURL, EasyDeleter>;

struct SlistDeleter {
  void operator()(curl_slist* list) const { curl_slist_free_all(list); }
};
using Slist = std::unique_ptr<curl_slist, SlistDeleter>;

struct MultiDeleter {
  void operator()(CURLM* multi) const { curl_multi_cleanup(multi); }
};

// Options every request shares; the easy handle must outlive the strings it was given
// (libcurl copies string options, not blobs unless told to: CURL_BLOB_COPY is used).
void Configure(CURL* easy, const Config& config, const std::string& url, curl_slist* headers,
               char* error_buffer) {
  curl_easy_setopt(easy, CURLOPT_URL, url.c_str());
  curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, error_buffer);
  // Threads: no SIGALRM for name-resolution timeouts.
  curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "https,http");
  static const std::string user_agent = fmt::format("nodemesh/{}", kVersion);
  curl_easy_setopt(easy, CURLOPT_USERAGENT, user_agent.c_str());
  curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
  if (config.insecure_skip_tls_verify) {
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 0L);
  } else {
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 2L);
    if (!config.ca_data.empty() || !config.ca_file.empty()) {
      // The cluster's CA alone: not also the system's directory of CAs.
      curl_easy_setopt(easy, CURLOPT_CAPATH, nullptr);
    }
    if (!config.ca_data.empty()) {
      curl_blob blob{const_cast<char*>(config.ca_data.data()), config.ca_data.size(),
                     CURL_BLOB_COPY};
      curl_easy_setopt(easy, CURLOPT_CAINFO_BLOB, &blob);
    } else if (!config.ca_file.empty()) {
      curl_easy_setopt(easy, CURLOPT_CAINFO, config.ca_file.c_str());
    }
  }
  if (!config.client_certificate_data.empty()) {
    curl_blob blob{const_cast<char*>(config.client_certificate_data.data()),
                   config.client_certificate_data.size(), CURL_BLOB_COPY};
    curl_easy_setopt(easy, CURLOPT_SSLCERT_BLOB, &blob);
    curl_easy_setopt(easy, CURLOPT_SSLCERTTYPE, "PEM");
  } else if (!config.client_certificate_file.empty()) {
    curl_easy_setopt(easy, CURLOPT_SSLCERT, config.client_certificate_file.c_str());
    curl_easy_setopt(easy, CURLOPT_SSLCERTTYPE, "PEM");
  }
  if (!config.client_key_data.empty()) {
    curl_blob blob{const_cast<char*>(config.client_key_data.data()), config.client_key_data.size(),
                   CURL_BLOB_COPY};
    curl_easy_setopt(easy, CURLOPT_SSLKEY_BLOB, &blob);
    curl_easy_setopt(easy, CURLOPT_SSLKEYTYPE, "PEM");
  } else if (!config.client_key_file.empty()) {
    curl_easy_setopt(easy, CURLOPT_SSLKEY, config.client_key_file.c_str());
    curl_easy_setopt(easy, CURLOPT_SSLKEYTYPE, "PEM");
  }
  if (config.insecure_skip_tls_verify) {
    Log(LogLevel::kWarning,
        "kube: {} does not verify the API server's certificate (insecure-skip-tls-verify): "
        "anyone on the path can read and change this request",
        config.source.empty() ? config.server : config.source);
  }
}

// Which CA the server's certificate was checked against, for TLS messages.
std::string CaDescription(const Config& config) {
  const std::string source = config.source.empty() ? "the configuration" : config.source;
  if (!config.ca_data.empty()) return fmt::format("the certificate-authority-data of {}", source);
  if (!config.ca_file.empty()) return fmt::format("the CA file {} ({})", config.ca_file, source);
  return "the system's CA certificates (no CA configured)";
}

// A transport failure as a status that says what to check.
absl::Status TransportError(const Config& config, std::string_view what, CURLcode code,
                            const char* error_buffer, long os_errno,
                            std::chrono::milliseconds timeout) {
  const std::string detail = error_buffer != nullptr && error_buffer[0] != '\0'
                                 ? std::string(error_buffer)
                                 : std::string(curl_easy_strerror(code));
  switch (code) {
    case CURLE_PEER_FAILED_VERIFICATION:
      return absl::UnavailableError(fmt::format(
          "{}: TLS: the API server's certificate at {} did not verify against {}: {}; check "
          "that this CA signed the server's certificate and that the server name matches",
          what, config.server, CaDescription(config), detail));
    case CURLE_SSL_CACERT_BADFILE:
      return absl::UnavailableError(
          fmt::format("{}: TLS: cannot use {} ({}); it must hold PEM certificates", what,
                      CaDescription(config), detail));
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
      return absl::UnavailableError(
          fmt::format("{}: TLS: cannot use the client certificate or key of {} ({})", what,
                      config.source.empty() ? "the configuration" : config.source, detail));
    case CURLE_SSL_CONNECT_ERROR:
      return absl::UnavailableError(fmt::format(
          "{}: TLS handshake with {} failed ({}); the server's certificate was checked against {}",
          what, config.server, detail, CaDescription(config)));
    case CURLE_COULDNT_RESOLVE_HOST:
      return absl::UnavailableError(fmt::format(
          "{}: cannot resolve the API server's name in {} ({})", what, config.server, detail));
    case CURLE_COULDNT_CONNECT:
      // The system's reason alone: libcurl's own text carries a duration, and messages are
      // compared to log each distinct failure once.
      return absl::UnavailableError(
          fmt::format("{}: cannot connect to the API server at {} ({})", what, config.server,
                      os_errno != 0 ? std::strerror(static_cast<int>(os_errno)) : detail));
    case CURLE_OPERATION_TIMEDOUT:
      return absl::DeadlineExceededError(
          fmt::format("{}: no complete answer from the API server at {} within {} ms", what,
                      config.server, timeout.count()));
    case CURLE_PARTIAL_FILE:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
      return absl::UnavailableError(fmt::format(
          "{}: the connection to the API server at {} was cut ({})", what, config.server, detail));
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
      return absl::InvalidArgumentError(fmt::format(
          "{}: the API server address {} is not a usable URL ({})", what, config.server, detail));
    default:
      return absl::UnavailableError(fmt::format("{}: request to the API server at {} failed ({})",
                                                what, config.server, detail));
  }
}

size_t AppendToString(char* data, size_t size, size_t count, void* user) {
  auto* body = static_cast<std::string*>(user);
  const size_t bytes = size * count;
  if (body->size() + bytes > kMaxBody) return 0;  // fails the transfer (CURLE_WRITE_ERROR)
  body->append(data, bytes);
  return bytes;
}

// What a stream's callbacks share with the loop that drives it.
struct StreamState {
  CURL* easy = nullptr;
  const std::function<bool(std::string_view)>* on_line = nullptr;
  std::string pending;     // the part of a line received so far
  std::string error_body;  // the whole body of an answer >= 300
  long status = 0;
  bool ended_by_callback = false;
  bool too_long = false;
  Clock::time_point last_byte;
  curl_off_t last_downloaded = 0;
};

size_t StreamWrite(char* data, size_t size, size_t count, void* user) {
  auto* state = static_cast<StreamState*>(user);
  const size_t bytes = size * count;
  state->last_byte = Clock::now();
  if (state->status == 0) curl_easy_getinfo(state->easy, CURLINFO_RESPONSE_CODE, &state->status);
  if (state->status >= 300) {
    return AppendToString(data, size, count, &state->error_body);
  }
  std::string_view chunk(data, bytes);
  while (!chunk.empty()) {
    const size_t newline = chunk.find('\n');
    if (newline == std::string_view::npos) {
      if (state->pending.size() + chunk.size() > kMaxBody) {
        state->too_long = true;
        return 0;
      }
      state->pending.append(chunk);
      break;
    }
    std::string_view line = chunk.substr(0, newline);
    chunk.remove_prefix(newline + 1);
    if (!state->pending.empty()) {
      state->pending.append(line);
      line = state->pending;
    }
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    const bool more = (*state->on_line)(line);
    state->pending.clear();
    if (!more) {
      state->ended_by_callback = true;
      return 0;
    }
  }
  return bytes;
}

// Counts bytes libcurl received that never reach the write callback (transfer framing),
// so that a server's keep-alive traffic also keeps the stream alive.
int StreamProgress(void* user, curl_off_t, curl_off_t downloaded, curl_off_t, curl_off_t) {
  auto* state = static_cast<StreamState*>(user);
  if (downloaded != state->last_downloaded) {
    state->last_downloaded = downloaded;
    state->last_byte = Clock::now();
  }
  return 0;
}

}  // namespace

absl::StatusOr<Config> InClusterConfig(std::string_view service_account_dir) {
  const char* host = std::getenv("KUBERNETES_SERVICE_HOST");
  const char* port = std::getenv("KUBERNETES_SERVICE_PORT");
  if (host == nullptr || *host == '\0' || port == nullptr || *port == '\0') {
    return absl::FailedPreconditionError(
        "not running in a Kubernetes pod: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT "
        "are not set (the kubelet sets them in every container); run in a pod, or use a "
        "kubeconfig instead");
  }
  Config config;
  config.source = "in-cluster";
  const std::string_view host_view(host);
  // An IPv6 address must be bracketed in a URL.
  const bool ipv6 = host_view.find(':') != std::string_view::npos && host_view.front() != '[';
  config.server =
      fmt::format("https://{}{}{}:{}", ipv6 ? "[" : "", host_view, ipv6 ? "]" : "", port);

  const std::string token_file = JoinPath(service_account_dir, "token");
  absl::StatusOr<std::string> token = ReadFile(token_file);
  if (!token.ok()) {
    return absl::FailedPreconditionError(fmt::format(
        "in-cluster configuration: cannot read the service-account token {0} ({0}: {1}); the "
        "pod has no token mounted: give it a service account with automountServiceAccountToken "
        "enabled, or use a kubeconfig",
        token_file, token.status().message()));
  }
  if (Trim(*token).empty()) {
    return absl::FailedPreconditionError(
        fmt::format("in-cluster configuration: the service-account token {} is empty", token_file));
  }
  config.token_file = token_file;

  const std::string ca_file = JoinPath(service_account_dir, "ca.crt");
  struct stat ca_stat;
  if (::stat(ca_file.c_str(), &ca_stat) != 0) {
    return absl::FailedPreconditionError(fmt::format(
        "in-cluster configuration: no cluster CA certificate at {} ({}); it is mounted with the "
        "service-account token: check the pod's service-account volume",
        ca_file, std::strerror(errno)));
  }
  config.ca_file = ca_file;

  // The namespace file is optional (client-go falls back to "default" too).
  const absl::StatusOr<std::string> namespace_name =
      ReadFile(JoinPath(service_account_dir, "namespace"));
  if (namespace_name.ok() && !Trim(*namespace_name).empty()) {
    config.namespace_name = std::string(Trim(*namespace_name));
  }
  return config;
}

Client::Client(Config config) : config_(std::move(config)) { InitCurlOnce(); }

Client::~Client() {
  for (void* easy : idle_handles_) curl_easy_cleanup(easy);
}

absl::StatusOr<std::string> Client::Bearer() {
  if (config_.token_file.empty()) {
    if (config_.token.empty()) return std::string();
    return "Bearer " + config_.token;
  }
  std::lock_guard lock(token_mutex_);
  // stat the path each time (no cached descriptor): the kubelet replaces the file by
  // swapping a symlink, so a new token is a new inode behind the same name.
  struct stat file_stat;
  if (::stat(config_.token_file.c_str(), &file_stat) != 0) {
    const int error = errno;
    if (!token_.empty()) return "Bearer " + token_;  // keep the last token we had
    return absl::UnauthenticatedError(
        fmt::format("cannot read the token file {}: {}", config_.token_file, std::strerror(error)));
  }
  const int64_t mtime_ns =
      int64_t{file_stat.st_mtim.tv_sec} * 1'000'000'000 + file_stat.st_mtim.tv_nsec;
  const uint64_t size = static_cast<uint64_t>(file_stat.st_size);
  const uint64_t inode = static_cast<uint64_t>(file_stat.st_ino);
  if (mtime_ns != token_mtime_ns_ || size != token_size_ || inode != token_inode_ ||
      token_.empty()) {
    absl::StatusOr<std::string> contents = ReadFile(config_.token_file);
    if (!contents.ok()) {
      if (!token_.empty()) return "Bearer " + token_;
      return absl::UnauthenticatedError(fmt::format("cannot read the token file {0}: {0}: {1}",
                                                    config_.token_file,
                                                    contents.status().message()));
    }
    const std::string_view token = Trim(*contents);
    if (token.empty()) {
      // Caught between a truncation and a write: keep the last token, read again next time.
      if (!token_.empty()) return "Bearer " + token_;
      return absl::UnauthenticatedError(
          fmt::format("the token file {} is empty", config_.token_file));
    }
    if (token_mtime_ns_ >= 0) stats_.token_reloads.fetch_add(1, std::memory_order_relaxed);
    token_ = std::string(token);
    token_mtime_ns_ = mtime_ns;
    token_size_ = size;
    token_inode_ = inode;
  }
  return "Bearer " + token_;
}

void* Client::TakeHandle() {
  {
    std::lock_guard lock(handles_mutex_);
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

void Client::ReturnHandle(void* easy) {
  // A few idle handles are enough for the agent's few concurrent requests.
  constexpr size_t kMaxIdleHandles = 4;
  std::lock_guard lock(handles_mutex_);
  if (idle_handles_.size() < kMaxIdleHandles) {
    idle_handles_.push_back(easy);
  } else {
    curl_easy_cleanup(easy);
  }
}

absl::StatusOr<Response> Client::Request(std::string_view method, std::string_view path,
                                         std::string_view body, std::string_view content_type,
                                         std::chrono::milliseconds timeout) {
  stats_.requests.fetch_add(1, std::memory_order_relaxed);
  const std::string what = Describe(method, path);
  absl::StatusOr<std::string> bearer = Bearer();
  if (!bearer.ok()) {
    stats_.failures.fetch_add(1, std::memory_order_relaxed);
    return absl::Status(bearer.status().code(),
                        fmt::format("{}: {}", what, bearer.status().message()));
  }
  CURL* easy = static_cast<CURL*>(TakeHandle());
  if (easy == nullptr) {
    stats_.failures.fetch_add(1, std::memory_order_relaxed);
    return absl::ResourceExhaustedError(fmt::format("{}: curl_easy_init failed", what));
  }

  curl_slist* raw_headers = curl_slist_append(nullptr, "Accept: application/json");
  if (!bearer->empty()) {
    raw_headers = curl_slist_append(raw_headers, ("Authorization: " + *bearer).c_str());
  }
  if (!body.empty()) {
    raw_headers =
        curl_slist_append(raw_headers, fmt::format("Content-Type: {}", content_type).c_str());
  }
  // No "Expect: 100-continue" round trip before a body.
  raw_headers = curl_slist_append(raw_headers, "Expect:");
  const Slist headers(raw_headers);

  char error_buffer[CURL_ERROR_SIZE] = {};
  const std::string url = config_.server + std::string(path);
  Configure(easy, config_, url, headers.get(), error_buffer);
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
  ReturnHandle(easy);
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

absl::StatusOr<nlohmann::json> Client::Get(std::string_view path) {
  return ObjectOf(Request("GET", path), Describe("GET", path));
}

absl::StatusOr<nlohmann::json> Client::MergePatch(std::string_view path,
                                                  const nlohmann::json& patch) {
  const std::string body = patch.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return ObjectOf(Request("PATCH", path, body, "application/merge-patch+json"),
                  Describe("PATCH", path));
}

absl::Status Client::Stream(std::string_view path, std::chrono::milliseconds stall_timeout,
                            const std::function<bool(std::string_view line)>& on_line,
                            const std::atomic<bool>& stop) {
  stats_.requests.fetch_add(1, std::memory_order_relaxed);
  const std::string what = Describe("GET", path);
  absl::StatusOr<std::string> bearer = Bearer();
  if (!bearer.ok()) {
    stats_.failures.fetch_add(1, std::memory_order_relaxed);
    return absl::Status(bearer.status().code(),
                        fmt::format("{}: {}", what, bearer.status().message()));
  }
  // A handle of its own: a stream runs for minutes and its connection is not reused after
  // being cut, so the pool would gain nothing.
  const EasyHandle easy(curl_easy_init());
  const std::unique_ptr<CURLM, MultiDeleter> multi(curl_multi_init());
  if (easy == nullptr || multi == nullptr) {
    stats_.failures.fetch_add(1, std::memory_order_relaxed);
    return absl::ResourceExhaustedError(fmt::format("{}: libcurl handle allocation failed", what));
  }
  curl_slist* raw_headers = curl_slist_append(nullptr, "Accept: application/json");
  if (!bearer->empty()) {
    raw_headers = curl_slist_append(raw_headers, ("Authorization: " + *bearer).c_str());
  }
  const Slist headers(raw_headers);
  char error_buffer[CURL_ERROR_SIZE] = {};
  const std::string url = config_.server + std::string(path);
  Configure(easy.get(), config_, url, headers.get(), error_buffer);
  curl_easy_setopt(easy.get(), CURLOPT_HTTPGET, 1L);
  // A connection that cannot be made is a failure (UNAVAILABLE), not a stall; the stall
  // check below covers everything after.
  const std::chrono::milliseconds connect_timeout =
      std::max(std::min(stall_timeout, kMaxConnectTimeout), std::chrono::milliseconds(1));
  curl_easy_setopt(easy.get(), CURLOPT_CONNECTTIMEOUT_MS,
                   static_cast<long>(connect_timeout.count()));

  StreamState state;
  state.easy = easy.get();
  state.on_line = &on_line;
  state.last_byte = Clock::now();
  curl_easy_setopt(easy.get(), CURLOPT_WRITEFUNCTION, StreamWrite);
  curl_easy_setopt(easy.get(), CURLOPT_WRITEDATA, &state);
  curl_easy_setopt(easy.get(), CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(easy.get(), CURLOPT_XFERINFOFUNCTION, StreamProgress);
  curl_easy_setopt(easy.get(), CURLOPT_XFERINFODATA, &state);

  curl_multi_add_handle(multi.get(), easy.get());
  // Removes the easy handle from the multi before either is cleaned up, on every path.
  struct Detach {
    CURLM* multi;
    CURL* easy;
    ~Detach() {
      curl_multi_remove_handle(multi, easy);
      // The error buffer lives in this frame; the handle outlives it by a little.
      curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, nullptr);
    }
  } detach{multi.get(), easy.get()};

  CURLcode result = CURLE_OK;
  while (true) {
    int running = 0;
    const CURLMcode multi_code = curl_multi_perform(multi.get(), &running);
    if (multi_code != CURLM_OK) {
      stats_.failures.fetch_add(1, std::memory_order_relaxed);
      return absl::InternalError(
          fmt::format("{}: libcurl: {}", what, curl_multi_strerror(multi_code)));
    }
    if (running == 0) {
      int queued = 0;
      while (CURLMsg* message = curl_multi_info_read(multi.get(), &queued)) {
        if (message->msg == CURLMSG_DONE) result = message->data.result;
      }
      break;
    }
    if (stop.load()) {
      return absl::CancelledError(fmt::format("{}: stopped", what));
    }
    if (Clock::now() - state.last_byte >= stall_timeout) {
      stats_.failures.fetch_add(1, std::memory_order_relaxed);
      return absl::DeadlineExceededError(
          fmt::format("{}: not a byte from the API server at {} for {} ms", what, config_.server,
                      stall_timeout.count()));
    }
    curl_multi_poll(multi.get(), nullptr, 0, static_cast<int>(kStreamPoll.count()), nullptr);
  }

  if (state.ended_by_callback) return absl::OkStatus();
  if (state.status == 0) curl_easy_getinfo(easy.get(), CURLINFO_RESPONSE_CODE, &state.status);
  if (result != CURLE_OK) {
    stats_.failures.fetch_add(1, std::memory_order_relaxed);
    if (state.too_long) {
      return absl::ResourceExhaustedError(
          fmt::format("{}: a line of the stream is longer than {} bytes", what, kMaxBody));
    }
    if (result == CURLE_WRITE_ERROR && state.status >= 300) {
      return absl::ResourceExhaustedError(
          fmt::format("{}: the answer {} is larger than {} bytes", what, state.status, kMaxBody));
    }
    if (result == CURLE_OPERATION_TIMEDOUT) {
      // The only libcurl timeout a stream has is the connect timeout.
      return absl::UnavailableError(
          fmt::format("{}: cannot connect to the API server at {} within {} ms", what,
                      config_.server, connect_timeout.count()));
    }
    long os_errno = 0;
    curl_easy_getinfo(easy.get(), CURLINFO_OS_ERRNO, &os_errno);
    return TransportError(config_, what, result, error_buffer, os_errno, connect_timeout);
  }
  if (state.status >= 300) {
    if (state.status >= 400) stats_.failures.fetch_add(1, std::memory_order_relaxed);
    return StatusFromResponse(Response{state.status, std::move(state.error_body)}, what);
  }
  // A last line the server did not end with a newline.
  if (!state.pending.empty()) {
    std::string_view line = state.pending;
    if (line.back() == '\r') line.remove_suffix(1);
    on_line(line);
  }
  return absl::OkStatus();
}

absl::Status StatusFromResponse(const Response& response, std::string_view what) {
  if (response.status >= 200 && response.status < 300) return absl::OkStatus();
  std::string message;
  std::string reason;
  const nlohmann::json body =
      nlohmann::json::parse(response.body, nullptr, /*allow_exceptions=*/false);
  if (body.is_object() && body.value("kind", "") == "Status") {
    message = body.value("message", "");
    reason = body.value("reason", "");
  } else {
    // Not a Status (a proxy's page, plain text): its start, on one line.
    std::string text(Trim(response.body).substr(0, 200));
    std::replace(text.begin(), text.end(), '\n', ' ');
    message = std::move(text);
  }
  std::string text;
  if (response.status == 410) {
    text = fmt::format("{}: {}", what, kGoneReason);
  } else {
    text = fmt::format("{}: {}", what, response.status);
    const std::string_view phrase = ReasonPhrase(response.status);
    if (!phrase.empty()) text += fmt::format(" {}", phrase);
  }
  if (!message.empty()) text += fmt::format(": {}", message);

  switch (response.status) {
    case 401:
      return absl::UnauthenticatedError(text);
    case 403:
      return absl::PermissionDeniedError(text);
    case 404:
      return absl::NotFoundError(text);
    case 409:
      if (reason == "AlreadyExists") return absl::AlreadyExistsError(text);
      return absl::AbortedError(text);
    case 410:
      return absl::FailedPreconditionError(text);
    default:
      if (response.status >= 500 && response.status < 600) return absl::UnavailableError(text);
      return absl::UnknownError(text);
  }
}

}  // namespace nodemesh::kube
