// An HTTP/1.1 server: routes (routes.h) served over TLS that asks each client for a
// certificate without requiring it (tls.h), or as plain HTTP on a loopback address only,
// answers whole or streamed, with bounded requests, deadlines and a connection limit. The engine
// (Boost.Beast on Asio) stays inside server.cc, so that only that file pays for its headers.
//
// Threads: a few I/O threads run every connection's reads and writes; handlers run on a pool
// of handler threads, created as needed up to a bound, never on an I/O thread, so a handler
// may block (a review against the Kubernetes API, a stream waiting for events). A request
// that finds every handler thread busy is answered 503 at once. A streamed answer keeps its
// handler thread for its life.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/http/routes.h"
#include "common/http/tls.h"

namespace nodemesh::http {

struct HttpServerLimits {
  size_t max_head_bytes = 16 * 1024;  // request line and headers; past it, 431
  size_t max_body_bytes = 64 * 1024;  // past it, 413
  // For the TLS handshake (if any), and for each request from its first byte to its last: a client
  // that sends slowly is cut off then (the connection closed).
  std::chrono::milliseconds request_deadline{10'000};
  // How long a kept-alive connection may wait for its next request.
  std::chrono::milliseconds idle_timeout{120'000};
  size_t max_connections = 512;  // past it, a new connection is closed at once
  size_t max_handler_threads = 96;
  int io_threads = 2;
};

class HttpServer {
 public:
  // Listens on `address` ("127.0.0.1:8443", "[::]:8443", ":8443"), taken exclusively (an
  // address another process listens on is an error naming it). The error names a
  // certificate or key that cannot be used.
  static absl::StatusOr<std::unique_ptr<HttpServer>> ListenTcp(const std::string& address,
                                                               TlsServerOptions tls,
                                                               HttpServerLimits limits = {});
  // Plain HTTP on a loopback address only ("127.0.0.1:0", "[::1]:8085", "localhost:8085";
  // 127.0.0.0/8 or ::1): anything else is INVALID_ARGUMENT, since plain HTTP must not be
  // reachable from another machine. For a browser on this machine (meshctl dashboard). Requests
  // carry no PeerCertificate (`presented` false).
  static absl::StatusOr<std::unique_ptr<HttpServer>> ListenLoopback(const std::string& address,
                                                                    HttpServerLimits limits = {});
  ~HttpServer();  // Stop()
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Before Start().
  void Serve(HttpRoutes routes);
  void Start();
  // Stops accepting, closes every connection (streams see ClientGone and their writes fail),
  // waits for the handlers to return and the I/O threads to end. Idempotent.
  void Stop();

  // The bound address, e.g. "127.0.0.1:39123" (useful with port 0).
  const std::string& address() const;

 private:
  class Engine;  // server.cc
  explicit HttpServer(std::unique_ptr<Engine> engine);
  static absl::StatusOr<std::unique_ptr<HttpServer>> Listen(std::unique_ptr<Engine> engine,
                                                            const std::string& address);
  std::unique_ptr<Engine> engine_;
};

}  // namespace nodemesh::http
