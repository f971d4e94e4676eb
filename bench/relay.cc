// nodemesh-relay: the least a userspace TCP hop can do, as a baseline for proxy_bench.
// Per accepted connection it connects to the target and runs one thread per direction,
// each a blocking recv() then send() of what arrived: no event loop, no parsing, no
// buffering policy, one wake-up per chunk and direction. Whatever a real proxy adds on
// top of this is its own cost; what this adds over a direct connection is the cost of any
// userspace hop on the machine (two more wake-ups and TCP trips per request).
//
//   nodemesh-relay --listen 127.0.0.1:15001 --to 10.77.0.12:8080
#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <thread>

namespace {

sockaddr_in ParseIpv4Endpoint(const std::string& text) {
  const size_t colon = text.rfind(':');
  sockaddr_in address{};
  address.sin_family = AF_INET;
  if (colon == std::string::npos ||
      inet_pton(AF_INET, text.substr(0, colon).c_str(), &address.sin_addr) != 1) {
    throw CLI::ValidationError(text, "expected IPV4:PORT");
  }
  address.sin_port = htons(static_cast<uint16_t>(std::stoi(text.substr(colon + 1))));
  return address;
}

// Both sockets of a relayed connection, closed when both directions are done.
struct Pair {
  int client, upstream;
  ~Pair() {
    close(client);
    close(upstream);
  }
};

// Copies `from` to `to` until `from` ends, then passes the end on. `pair` is held so that
// the sockets stay open until both directions are done.
void Pump([[maybe_unused]] std::shared_ptr<Pair> pair, int from, int to) {
  char buffer[64 * 1024];
  for (;;) {
    const ssize_t n = recv(from, buffer, sizeof buffer, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    for (ssize_t sent = 0; sent < n;) {
      const ssize_t m = send(to, buffer + sent, n - sent, MSG_NOSIGNAL);
      if (m < 0 && errno == EINTR) continue;
      if (m < 0) {
        shutdown(from, SHUT_RD);
        return;
      }
      sent += m;
    }
  }
  shutdown(to, SHUT_WR);
}

}  // namespace

int main(int argc, char** argv) {
  std::string listen_text, target_text;
  CLI::App app{"The least a userspace TCP hop does: a baseline for proxy_bench", "nodemesh-relay"};
  app.add_option("--listen", listen_text, "IPV4:PORT to accept on")->required();
  app.add_option("--to", target_text, "IPV4:PORT to relay each connection to")->required();
  CLI11_PARSE(app, argc, argv);
  sockaddr_in listen_address, target;
  try {
    listen_address = ParseIpv4Endpoint(listen_text);
    target = ParseIpv4Endpoint(target_text);
  } catch (const CLI::Error& error) {
    return app.exit(error);
  }

  const int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int one = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(listener, reinterpret_cast<const sockaddr*>(&listen_address), sizeof listen_address) !=
          0 ||
      listen(listener, 1024) != 0) {
    fmt::print(stderr, "nodemesh-relay: listening on {}: {}\n", listen_text, std::strerror(errno));
    return 1;
  }
  for (;;) {
    const int client = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) continue;
    const int upstream = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    std::shared_ptr<Pair> pair(new Pair{client, upstream});
    if (connect(upstream, reinterpret_cast<const sockaddr*>(&target), sizeof target) != 0) {
      fmt::print(stderr, "nodemesh-relay: connecting to {}: {}\n", target_text,
                 std::strerror(errno));
      continue;  // the pair closes both
    }
    setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(upstream, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    std::thread(Pump, pair, client, upstream).detach();
    std::thread(Pump, pair, upstream, client).detach();
  }
}
