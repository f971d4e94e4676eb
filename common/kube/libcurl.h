// libcurl as the client's requests (client.cc) and watches (watch.cc) both use it: handles
// owned, the options every request shares, bodies read into memory up to a limit, and a
// failed transfer as a status that says what to check. Internal to common/kube.
#pragma once

#include <curl/curl.h>

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "common/kube/config.h"
#include "common/kube/credentials.h"

namespace nodemesh::kube {

// Bodies and stream lines larger than this are refused rather than buffered: no Kubernetes
// object comes near it (etcd caps values at 1.5 MiB), a broken server might.
inline constexpr size_t kMaxBody = 256u << 20;
// Connecting takes at most this long, whatever the request's own timeout.
inline constexpr std::chrono::milliseconds kMaxConnectTimeout{std::chrono::seconds(10)};

// curl_global_init, exactly once per process, before the first handle.
void InitCurlOnce();

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
using MultiHandle = std::unique_ptr<CURLM, MultiDeleter>;

// The headers every request sends: JSON accepted, and `authorization`
// (RequestCredentials::authorization) unless it is empty.
curl_slist* BaseHeaders(const std::string& authorization);

// Where a Config's requests go. With a tls-server-name the URLs name that server, so that
// TLS verifies the certificate against it and sends it as SNI, while CURLOPT_CONNECT_TO still
// connects to the host and port of `server`. Made once per client: libcurl keeps the list's
// pointer, not a copy, for as long as a handle uses it.
class Endpoint {
 public:
  explicit Endpoint(const Config& config);
  std::string Url(std::string_view path) const { return base_url_ + std::string(path); }
  curl_slist* connect_to() const { return connect_to_.get(); }

 private:
  std::string base_url_;
  Slist connect_to_;
};

// Options every request shares, the client certificate of `credentials` among them; the easy
// handle must outlive the strings it was given (libcurl copies string options, not blobs
// unless told to: CURL_BLOB_COPY is used), and `endpoint` must outlive the transfer.
void Configure(CURL* easy, const Config& config, const Endpoint& endpoint,
               const RequestCredentials& credentials, std::string_view path, curl_slist* headers,
               char* error_buffer);

// A CURLOPT_WRITEFUNCTION appending to the std::string at `user`; past kMaxBody it fails the
// transfer (CURLE_WRITE_ERROR).
size_t AppendToString(char* data, size_t size, size_t count, void* user);

// A transport failure as a status that says what to check; `what` names the request
// (DescribeRequest), `timeout` is the one the transfer had.
absl::Status TransportError(const Config& config, std::string_view what, CURLcode code,
                            const char* error_buffer, long os_errno,
                            std::chrono::milliseconds timeout);

}  // namespace nodemesh::kube
