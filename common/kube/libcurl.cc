#include "common/kube/libcurl.h"

#include <cstring>

#include "common/base/format.h"
#include "common/base/log.h"
#include "common/base/version.h"

namespace nodemesh::kube {
namespace {

// Which CA the server's certificate was checked against, for TLS messages.
std::string CaDescription(const Config& config) {
  const std::string source = config.source.empty() ? "the configuration" : config.source;
  if (!config.ca_data.empty()) return fmt::format("the certificate-authority-data of {}", source);
  if (!config.ca_file.empty()) return fmt::format("the CA file {} ({})", config.ca_file, source);
  return "the system's CA certificates (no CA configured)";
}

// One part of a parsed URL, "" if it has none.
std::string UrlPart(CURLU* url, CURLUPart part, unsigned int flags = 0) {
  char* value = nullptr;
  if (curl_url_get(url, part, &value, flags) != CURLUE_OK) return {};
  std::string text(value);
  curl_free(value);
  return text;
}

}  // namespace

Endpoint::Endpoint(const Config& config) : base_url_(config.server) {
  if (config.tls_server_name.empty()) return;
  // A server URL libcurl cannot parse is left as it is: the request then fails naming it.
  const std::unique_ptr<CURLU, decltype(&curl_url_cleanup)> url(curl_url(), curl_url_cleanup);
  if (url == nullptr ||
      curl_url_set(url.get(), CURLUPART_URL, config.server.c_str(), 0) != CURLUE_OK) {
    return;
  }
  const std::string host = UrlPart(url.get(), CURLUPART_HOST);  // an IPv6 address in brackets
  const std::string port = UrlPart(url.get(), CURLUPART_PORT, CURLU_DEFAULT_PORT);
  if (host.empty() || port.empty() ||
      curl_url_set(url.get(), CURLUPART_HOST, config.tls_server_name.c_str(), 0) != CURLUE_OK) {
    return;
  }
  base_url_ = UrlPart(url.get(), CURLUPART_URL);
  while (base_url_.size() > 1 && base_url_.back() == '/') base_url_.pop_back();
  // Any host and port of the URL: connect to the server's own.
  connect_to_.reset(curl_slist_append(nullptr, fmt::format("::{}:{}", host, port).c_str()));
}

void InitCurlOnce() {
  // curl_global_init is not thread-safe itself; a function-local static runs it exactly once.
  static const CURLcode result = curl_global_init(CURL_GLOBAL_DEFAULT);
  if (result != CURLE_OK) {
    Log(LogLevel::kError, "kube: libcurl failed to initialise: {}", curl_easy_strerror(result));
  }
}

curl_slist* BaseHeaders(const std::string& authorization) {
  curl_slist* headers = curl_slist_append(nullptr, "Accept: application/json");
  if (!authorization.empty()) {
    headers = curl_slist_append(headers, ("Authorization: " + authorization).c_str());
  }
  return headers;
}

void Configure(CURL* easy, const Config& config, const Endpoint& endpoint,
               const RequestCredentials& credentials, std::string_view path, curl_slist* headers,
               char* error_buffer) {
  curl_easy_setopt(easy, CURLOPT_URL, endpoint.Url(path).c_str());
  curl_easy_setopt(easy, CURLOPT_CONNECT_TO, endpoint.connect_to());
  if (!config.proxy_url.empty()) curl_easy_setopt(easy, CURLOPT_PROXY, config.proxy_url.c_str());
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
  if (!credentials.client_certificate_pem.empty()) {
    const auto blob = [](const std::string& pem) {
      return curl_blob{const_cast<char*>(pem.data()), pem.size(), CURL_BLOB_COPY};
    };
    curl_blob certificate = blob(credentials.client_certificate_pem);
    curl_blob key = blob(credentials.client_key_pem);
    curl_easy_setopt(easy, CURLOPT_SSLCERT_BLOB, &certificate);
    curl_easy_setopt(easy, CURLOPT_SSLCERTTYPE, "PEM");
    curl_easy_setopt(easy, CURLOPT_SSLKEY_BLOB, &key);
    curl_easy_setopt(easy, CURLOPT_SSLKEYTYPE, "PEM");
  }
  if (config.insecure_skip_tls_verify) {
    Log(LogLevel::kWarning,
        "kube: {} does not verify the API server's certificate (insecure-skip-tls-verify): "
        "anyone on the path can read and change this request",
        config.source.empty() ? config.server : config.source);
  }
}

size_t AppendToString(char* data, size_t size, size_t count, void* user) {
  auto* body = static_cast<std::string*>(user);
  const size_t bytes = size * count;
  if (body->size() + bytes > kMaxBody) return 0;  // fails the transfer (CURLE_WRITE_ERROR)
  body->append(data, bytes);
  return bytes;
}

absl::Status TransportError(const Config& config, std::string_view what, CURLcode code,
                            const char* error_buffer, long os_errno,
                            std::chrono::milliseconds timeout) {
  const std::string detail = error_buffer != nullptr && error_buffer[0] != '\0'
                                 ? std::string(error_buffer)
                                 : std::string(curl_easy_strerror(code));
  switch (code) {
    case CURLE_PEER_FAILED_VERIFICATION:
      return absl::UnavailableError(fmt::format(
          "{}: TLS: the API server's certificate at {}{} did not verify against {}: {}; check "
          "that this CA signed the server's certificate and that the server name matches",
          what, config.server,
          config.tls_server_name.empty()
              ? std::string()
              : fmt::format(" (as {}, the cluster's tls-server-name)", config.tls_server_name),
          CaDescription(config), detail));
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
      return absl::UnavailableError(fmt::format(
          "{}: cannot connect to the API server at {}{} ({})", what, config.server,
          config.proxy_url.empty() ? std::string()
                                   : fmt::format(" through the proxy {}", config.proxy_url),
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

}  // namespace nodemesh::kube
