// The agent's small HTTP server (/metrics, probes, the admin API) against clients that
// misbehave: one serving thread must never be held by one of them.
#include "agent/http_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <string>
#include <thread>

#include "common/net/address.h"

namespace nodemesh::agent {
namespace {

using namespace std::chrono_literals;

// A TCP connection to `address` ("127.0.0.1:PORT").
int Connect(const std::string& address) {
  const size_t colon = address.rfind(':');
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(static_cast<uint16_t>(std::stoi(address.substr(colon + 1))));
  inet_pton(AF_INET, address.substr(0, colon).c_str(), &to.sin_addr);
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to) == 0);
  return fd;
}

// Everything the server sends until it closes, waiting at most `timeout`.
std::string ReadAll(int fd, std::chrono::milliseconds timeout) {
  std::string text;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    pollfd readable{fd, POLLIN, 0};
    if (left.count() <= 0 || ::poll(&readable, 1, static_cast<int>(left.count())) <= 0) break;
    char buffer[4096];
    const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n <= 0) break;
    text.append(buffer, static_cast<size_t>(n));
  }
  return text;
}

TEST_CASE("a client sending its request a byte at a time holds the server 5 s at most") {
  absl::StatusOr<std::unique_ptr<HttpServer>> server = HttpServer::ListenTcp("127.0.0.1:0");
  REQUIRE(server.ok());
  (*server)->Handle("/healthz", [](const http::HttpRequest&) {
    return http::HttpResponse(200, "text/plain; charset=utf-8", "ok\n");
  });
  (*server)->Start();

  // Slowloris: a byte every 500 ms, each read well within any per-read timeout, for 8 s.
  const int slow = Connect((*server)->address());
  std::atomic<size_t> trickled{0};
  std::thread trickle([slow, &trickled] {
    const std::string request = "GET /healthz HTTP/1.1\r\nHost: x\r\n";
    for (size_t i = 0; i < 16 && i < request.size(); ++i) {
      if (::send(slow, &request[i], 1, MSG_NOSIGNAL) != 1) return;
      ++trickled;
      std::this_thread::sleep_for(500ms);
    }
  });
  std::this_thread::sleep_for(200ms);
  // A probe behind it is answered once the slow client has been turned away.
  const int probe = Connect((*server)->address());
  const std::string get = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
  REQUIRE(::send(probe, get.data(), get.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(get.size()));
  const std::string answer = ReadAll(probe, 7s);
  // Answered while the slow client still had bytes to send: it did not hold the server
  // until it was done.
  CHECK(trickled < 16);
  CHECK(answer.starts_with("HTTP/1.1 200 OK\r\n"));

  const std::string refused = ReadAll(slow, 3s);
  CHECK(refused.starts_with("HTTP/1.1 408 Request Timeout\r\n"));
  CHECK(refused.find("the request did not arrive whole within 5 s") != std::string::npos);
  trickle.join();
  ::close(slow);
  ::close(probe);
  (*server)->Stop();
}

}  // namespace
}  // namespace nodemesh::agent
