// HTTP/1.1 to the API server, on Boost.Beast over Boost.Asio and OpenSSL, for the client's
// requests (client.cc) and watches (watch.cc), and to the other HTTP servers the binaries ask
// (the aggregator's Prometheus-compatible store, named by Config::server_role): the server's
// address parsed once, a connection per request (through an HTTP proxy when one is
// configured), TLS verified as the Config says, deadlines on every step, and a failed step as
// a status that says what to check. Boost and OpenSSL stay inside transport.cc.
//
// Threads: an Endpoint is immutable and shared; an Exchange belongs to the thread using it.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/kube/config.h"
#include "common/kube/credentials.h"
#include "common/kube/errors.h"

namespace nodemesh::kube {

// Bodies and stream lines larger than this are refused rather than buffered: no Kubernetes
// object comes near it (etcd caps values at 1.5 MiB), a broken server might.
inline constexpr size_t kMaxBody = 256u << 20;
// Connecting takes at most this long, whatever the request's own timeout.
inline constexpr std::chrono::milliseconds kMaxConnectTimeout{std::chrono::seconds(10)};

// Where a Config's requests go: the server URL's scheme, host, port and path prefix; the
// name TLS verifies the certificate against and sends as SNI (the tls-server-name, else the
// host); and the HTTP proxy on the way: the kubeconfig's proxy-url, else https_proxy (or
// http_proxy for an http:// server, then all_proxy, any in upper case too) unless no_proxy
// names the host. A URL that cannot be used is kept as an error that every request returns.
class Endpoint {
 public:
  explicit Endpoint(const Config& config);
  ~Endpoint();
  Endpoint(const Endpoint&) = delete;
  Endpoint& operator=(const Endpoint&) = delete;

  struct Parts;  // transport.cc
  const Parts& parts() const { return *parts_; }

 private:
  std::unique_ptr<const Parts> parts_;
};

// One request and its answer on a connection of its own, closed when the Exchange ends.
class Exchange {
 public:
  using Clock = std::chrono::steady_clock;

  // `what` names the request in every error (DescribeRequest).
  Exchange(const Config& config, const Endpoint& endpoint, std::string what);
  ~Exchange();
  Exchange(const Exchange&) = delete;
  Exchange& operator=(const Exchange&) = delete;

  // Connects (through the proxy, if any), with https handshakes TLS presenting the client
  // certificate of `credentials`, and sends the request with its `authorization`; all by
  // `deadline` (DEADLINE_EXCEEDED), the connection within kMaxConnectTimeout. A body goes
  // with its content type.
  absl::Status Send(std::string_view method, std::string_view path, std::string_view body,
                    std::string_view content_type, const RequestCredentials& credentials,
                    Clock::time_point deadline);

  // The whole answer by `deadline` (RESOURCE_EXHAUSTED past kMaxBody).
  absl::StatusOr<Response> Receive(Clock::time_point deadline);

  // The answer of a stream: its body handed to `on_data` piece by piece as it arrives (chunked
  // or not), until it ends (OK), `on_data` returns false (OK), `stop` becomes true
  // (CANCELLED; looked at every 100 ms), or no byte came for `stall_timeout`
  // (DEADLINE_EXCEEDED). status() tells `on_data` what the answer is.
  absl::Status ReceiveStream(const std::function<bool(std::string_view data)>& on_data,
                             std::chrono::milliseconds stall_timeout,
                             const std::atomic<bool>& stop);
  // The status code of the answer ReceiveStream reads, once its header came; 0 before.
  int status() const;

 private:
  struct State;  // transport.cc
  std::unique_ptr<State> state_;
};

}  // namespace nodemesh::kube
