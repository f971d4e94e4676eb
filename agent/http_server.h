// A small HTTP/1.1 server for the agent's own endpoints: /metrics for Prometheus on TCP,
// and the admin API on a root-only Unix socket. One thread, one request per connection,
// bounded request size and read time: these endpoints serve a scraper and a person, not
// the data path.
#pragma once

#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "agent/kernel/system.h"
#include "common/http/routes.h"

namespace nodemesh::agent {

// Serves an http::HttpRoutes table (common/http/routes.h).
class HttpServer {
 public:
  using Handler = http::HttpRoutes::Handler;

  // "127.0.0.1:9090", "[::]:9090" or ":9090" (all addresses), taken exclusively: an address
  // another process listens on is an error naming it.
  static absl::StatusOr<std::unique_ptr<HttpServer>> ListenTcp(const std::string& address);
  // A Unix socket only its owner (root) may use. A socket file left by a server that has gone
  // is replaced; one still served is not, and the error names who serves it.
  static absl::StatusOr<std::unique_ptr<HttpServer>> ListenUnix(const std::string& path);
  ~HttpServer();

  // Before Start().
  void Handle(const std::string& path, Handler handler) {
    routes_.Handle(path, std::move(handler));
  }
  void Serve(http::HttpRoutes routes) { routes_ = std::move(routes); }
  void Start();
  void Stop();
  // The bound address, e.g. "127.0.0.1:39123" (useful with port 0).
  const std::string& address() const { return address_; }

 private:
  HttpServer(UniqueFd listener, std::string address, std::string unix_path);
  void Serve();
  void ServeOne(int fd);

  UniqueFd listener_;
  UniqueFd stop_;
  // Held so that when the process runs out of descriptors this server can still accept one
  // client and answer it (an operator asking /stats why), by letting this one go first.
  UniqueFd reserve_;
  std::string address_;
  std::string unix_path_;
  http::HttpRoutes routes_;
  std::thread thread_;
};

}  // namespace nodemesh::agent
