// The relay alone, without root, a worker or the kernel programs: real sockets (socketpairs
// and loopback TCP), a real edge-triggered epoll loop, and a clock of the test's own for the
// deadlines. Peers that need to block run on threads of their own. The tests of what any
// relay does run on both of its paths: copied (the observer watches every byte) and spliced
// (the observer watches none, or only the first bytes of a side).
#include "agent/proxy/relay.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cerrno>
#include <chrono>
#include <climits>
#include <csignal>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "agent/proxy/buffer_pool.h"
#include "agent/proxy/pipe_pool.h"
#include "agent/proxy/relay_timeouts.h"

namespace nodemesh::agent {
namespace {

using namespace std::chrono_literals;

constexpr int64_t kSecond = 1'000'000'000;
constexpr int64_t kConnectTimeout = 10 * kSecond;
constexpr int64_t kIdleTimeout = 60 * kSecond;
constexpr int64_t kQuietAfter = 10 * kSecond;

// How the bytes of the relays under test move.
enum class Path : uint8_t {
  kCopy,    // the observer watches every byte: recv and send through a buffer
  kSplice,  // the observer watches none (or up to Hosted::watch_limit): socket -> pipe -> socket
};
std::string_view PathName(Path path) { return path == Path::kCopy ? "copy" : "splice"; }

void SetNonBlocking(int fd) { REQUIRE(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) == 0); }

void SetBuffers(int fd, int bytes) {
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof bytes);
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes);
}

// A TCP listener on 127.0.0.1 with a port of its own.
struct Listener {
  explicit Listener(int backlog = 16) : fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(bind(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
    REQUIRE(listen(fd.get(), backlog) == 0);
    socklen_t length = sizeof address;
    REQUIRE(getsockname(fd.get(), reinterpret_cast<sockaddr*>(&address), &length) == 0);
    port = ntohs(address.sin_port);
  }
  UniqueFd Accept() const { return UniqueFd(accept4(fd.get(), nullptr, nullptr, SOCK_CLOEXEC)); }

  UniqueFd fd;
  uint16_t port = 0;
};

// A socket connecting to 127.0.0.1:`port`; `non_blocking` leaves the connect in flight.
UniqueFd Dial(uint16_t port, bool non_blocking, int buffer_bytes = 0) {
  UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (non_blocking ? SOCK_NONBLOCK : 0), 0));
  if (buffer_bytes > 0) SetBuffers(fd.get(), buffer_bytes);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(port);
  const int result = connect(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof address);
  REQUIRE((result == 0 || (non_blocking && errno == EINPROGRESS)));
  return fd;
}

// A port nothing listens on (bound, then closed).
uint16_t ClosedPort() {
  const Listener listener;
  return listener.port;
}

std::string RandomBytes(size_t size, uint32_t seed) {
  std::mt19937 random(seed);
  std::string bytes(size, '\0');
  for (char& c : bytes) c = static_cast<char>(random());
  return bytes;
}

// Blocking peers' helpers.
void SendAll(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t sent = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (sent <= 0) return;
    bytes.remove_prefix(static_cast<size_t>(sent));
  }
}
// Everything until EOF; nullopt and the errno if the connection failed instead.
struct Received {
  std::string bytes;
  int error = 0;  // 0: ended with EOF
};
Received ReceiveAll(int fd) {
  Received received;
  char buffer[65536];
  for (;;) {
    const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n > 0) {
      received.bytes.append(buffer, static_cast<size_t>(n));
    } else if (n == 0) {
      return received;
    } else if (errno != EINTR) {
      received.error = errno;
      return received;
    }
  }
}

// A blocking peer on a thread of its own, while the test's thread runs the loop.
class Background {
 public:
  explicit Background(std::function<void()> work)
      : thread_([this, work = std::move(work)] {
          work();
          done_ = true;
        }) {}
  ~Background() { thread_.join(); }
  bool done() const { return done_; }

 private:
  std::atomic<bool> done_{false};
  std::thread thread_;
};

// How much a loop's relays may hold: small, so that they run out.
struct Pools {
  size_t buffer_size = 16 * 1024;
  size_t max_buffers = 64;
  size_t max_pipes = 64;
};

// The worker, reduced to what relays need: a small shared buffer pool (so that it runs
// out), a pipe pool, the deadlines, an edge-triggered epoll loop, and the test's clock.
class Loop {
 public:
  explicit Loop(Path path, Pools pools = {})
      : path_(path),
        buffers_(pools.buffer_size, pools.max_buffers),
        max_buffers_(pools.max_buffers),
        pipes_(pools.max_pipes, pools.buffer_size),
        timeouts_(kConnectTimeout, kIdleTimeout, kQuietAfter) {
    REQUIRE(epoll_.valid());
    // As the agent does: splicing into a socket whose peer is gone raises it.
    signal(SIGPIPE, SIG_IGN);
  }

  // One relay with its host and an observer recording what it sees.
  struct Hosted final : RelayHost, RelayObserver {
    Hosted(Loop& loop, UniqueFd client, UniqueFd upstream)
        : loop_(loop), relay(*this, *this, std::move(client), std::move(upstream), loop.now) {
      loop_.timeouts_.Connecting(timer_, relay);
      loop_.Watch(relay.fd(Side::kClient), this, 0);
      loop_.Watch(relay.fd(Side::kUpstream), this, 1);
    }

    // RelayHost
    std::unique_ptr<Buffer> AcquireBuffer() override {
      std::unique_ptr<Buffer> buffer = loop_.buffers_.Acquire();
      if (!buffer && !waiting_) {
        waiting_ = true;
        loop_.waiting_.push_back(this);
      }
      return buffer;
    }
    void ReleaseBuffer(std::unique_ptr<Buffer> buffer) override {
      loop_.buffers_.Release(std::move(buffer));
    }
    std::unique_ptr<Pipe> AcquirePipe() override { return loop_.pipes_.Acquire(); }
    void ReleasePipe(std::unique_ptr<Pipe> pipe) override { loop_.pipes_.Release(std::move(pipe)); }
    void OnEstablished(int64_t) override { loop_.timeouts_.Active(timer_, relay); }
    void OnActivity(int64_t) override { loop_.timeouts_.Active(timer_, relay); }
    void OnEnded(RelayEnd end, int64_t) override {
      loop_.timeouts_.Remove(timer_);
      ended = end;
    }

    // RelayObserver
    void OnConnected(int64_t) override { connected = true; }
    bool Watching(Side from) const override {
      return loop_.path_ == Path::kCopy || seen[static_cast<size_t>(from)].size() < watch_limit;
    }
    void OnBytes(Side from, std::string_view bytes, int64_t) override {
      CHECK(Watching(from));
      CHECK(unseen[static_cast<size_t>(from)] == 0);  // never a seen byte after unseen ones
      seen[static_cast<size_t>(from)].append(bytes);
    }
    void OnBytesUnseen(Side from, uint64_t count, int64_t) override {
      CHECK_FALSE(Watching(from));
      unseen[static_cast<size_t>(from)] += count;
    }
    void OnHalfClose(Side from, int64_t) override { half_closes.push_back(from); }
    void OnQuiet() override { ++quiet; }
    void OnClosed(RelayEnd end, int64_t) override { closed = end; }

    // Every byte `from` sent, as the observer was told of it.
    uint64_t told(Side from) const {
      return seen[static_cast<size_t>(from)].size() + unseen[static_cast<size_t>(from)];
    }

    // Spliced: the observer watches a side until it has seen this many of its bytes.
    size_t watch_limit = 0;
    bool connected = false;
    std::string seen[2];   // by Side
    uint64_t unseen[2]{};  // by Side
    std::vector<Side> half_closes;
    int quiet = 0;                   // times told the relay went quiet
    std::optional<RelayEnd> closed;  // as the observer heard it
    std::optional<RelayEnd> ended;   // as the host heard it
    Loop& loop_;
    RelayTimeouts::Entry timer_;
    bool waiting_ = false;
    Relay relay;
  };

  Hosted& Add(UniqueFd client, UniqueFd upstream) {
    hosted_.push_back(std::make_unique<Hosted>(*this, std::move(client), std::move(upstream)));
    return *hosted_.back();
  }
  // Deletes an ended relay, as a worker does: what it held goes back to the pool.
  void Forget(const Hosted& ended) {
    std::erase(waiting_, &ended);
    std::erase_if(hosted_,
                  [&](const std::unique_ptr<Hosted>& hosted) { return hosted.get() == &ended; });
  }

  // Runs the loop (on the test's clock, which only the test moves) until `done` holds or
  // `limit` of real time passes; false on the limit.
  bool RunUntil(const std::function<bool()>& done, std::chrono::milliseconds limit = 10s) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!done()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      RunOnce(10);
    }
    return true;
  }
  // Runs the loop for `duration` of real time, whatever happens.
  void RunFor(std::chrono::milliseconds duration) {
    const auto end = std::chrono::steady_clock::now() + duration;
    while (std::chrono::steady_clock::now() < end) RunOnce(10);
  }
  // Moves the test's clock and fires the deadlines that passed.
  void Advance(int64_t ns) {
    now += ns;
    timeouts_.Expire(now);
  }
  size_t buffers_in_use() const { return buffers_.in_use(); }
  size_t pipes_in_use() const { return pipes_.in_use(); }
  size_t pipes_kept() const { return pipes_.kept(); }
  // What holds bytes in flight on the loop's path: buffers copying, or pipes splicing.
  size_t holders_in_use() const { return buffers_.in_use() + pipes_.in_use(); }

  int64_t now = 1'000 * kSecond;

 private:
  void Watch(int fd, Hosted* hosted, uintptr_t upstream) {
    epoll_event event{};
    event.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    event.data.ptr = reinterpret_cast<void*>(reinterpret_cast<uintptr_t>(hosted) | upstream);
    REQUIRE(epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &event) == 0);
  }
  void RunOnce(int timeout_ms) {
    epoll_event events[64];
    const int n = epoll_wait(epoll_.get(), events, 64, timeout_ms);
    for (int i = 0; i < n; ++i) {
      const auto data = reinterpret_cast<uintptr_t>(events[i].data.ptr);
      auto* hosted = reinterpret_cast<Hosted*>(data & ~uintptr_t{1});
      hosted->relay.OnEvents((data & 1) ? Side::kUpstream : Side::kClient, events[i].events, now);
    }
    while (!waiting_.empty() && buffers_.in_use() < max_buffers_) {
      Hosted* hosted = waiting_.front();
      waiting_.erase(waiting_.begin());
      hosted->waiting_ = false;
      hosted->relay.OnBufferAvailable(now);
    }
    timeouts_.Expire(now);
  }
  const Path path_;
  UniqueFd epoll_{epoll_create1(EPOLL_CLOEXEC)};
  BufferPool buffers_;
  const size_t max_buffers_;
  PipePool pipes_;
  RelayTimeouts timeouts_;
  std::vector<Hosted*> waiting_;
  std::vector<std::unique_ptr<Hosted>> hosted_;
};

// Runs `loop` until `relay` has sent something from `from` and then nothing more for a while
// (its other side does not read, so that it stalls); what it sent.
uint64_t RunUntilStalled(Loop& loop, const Relay& relay, Side from) {
  uint64_t relayed = 0;
  for (int stable = 0; stable < 5;) {
    loop.RunFor(50ms);
    const uint64_t now = relay.bytes_from(from);
    stable = now == relayed && now > 0 ? stable + 1 : 0;
    relayed = now;
  }
  return relayed;
}

// A proxied TCP connection over loopback: the application's socket, the relay between, and
// the server's socket.
struct TcpHop {
  explicit TcpHop(Loop& loop, int buffer_bytes = 0) {
    const Listener front, back;
    app = Dial(front.port, false, buffer_bytes);
    UniqueFd accepted = front.Accept();
    REQUIRE(accepted.valid());
    SetNonBlocking(accepted.get());
    if (buffer_bytes > 0) SetBuffers(accepted.get(), buffer_bytes);
    UniqueFd upstream = Dial(back.port, true, buffer_bytes);
    server = back.Accept();
    REQUIRE(server.valid());
    if (buffer_bytes > 0) SetBuffers(server.get(), buffer_bytes);
    hosted = &loop.Add(std::move(accepted), std::move(upstream));
    REQUIRE(loop.RunUntil([&] { return hosted->connected; }));
  }
  UniqueFd app;
  UniqueFd server;
  Loop::Hosted* hosted = nullptr;
};

TEST_CASE("relay: bytes pass unchanged both ways, as the observer was told of them", "[unit]") {
  const Path path = GENERATE(Path::kCopy, Path::kSplice);
  INFO(PathName(path));
  Loop loop(path);
  int app_pair[2], server_pair[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, app_pair) == 0);
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, server_pair) == 0);
  UniqueFd app(app_pair[0]), server(server_pair[0]);
  SetNonBlocking(app_pair[1]);
  SetNonBlocking(server_pair[1]);
  Loop::Hosted& hosted = loop.Add(UniqueFd(app_pair[1]), UniqueFd(server_pair[1]));

  const std::string request = RandomBytes(3 << 20, 1), response = RandomBytes(5 << 20, 2);
  Received at_server, at_app;
  {
    const Background app_reader([&] { at_app = ReceiveAll(app.get()); });
    const Background server_reader([&] { at_server = ReceiveAll(server.get()); });
    const Background app_writer([&] {
      SendAll(app.get(), request);
      shutdown(app.get(), SHUT_WR);
    });
    const Background server_writer([&] {
      SendAll(server.get(), response);
      shutdown(server.get(), SHUT_WR);
    });
    REQUIRE(loop.RunUntil([&] {
      return hosted.ended && app_reader.done() && server_reader.done() && app_writer.done() &&
             server_writer.done();
    }));
  }
  CHECK(*hosted.ended == RelayEnd::kClosed);
  CHECK(hosted.closed == hosted.ended);
  CHECK(at_server.error == 0);
  CHECK(at_app.error == 0);
  CHECK(at_server.bytes == request);
  CHECK(at_app.bytes == response);
  // Copied, the observer saw every byte; spliced, it was told how many.
  const std::string no_bytes;
  CHECK(hosted.seen[static_cast<size_t>(Side::kClient)] ==
        (path == Path::kCopy ? request : no_bytes));
  CHECK(hosted.seen[static_cast<size_t>(Side::kUpstream)] ==
        (path == Path::kCopy ? response : no_bytes));
  CHECK(hosted.told(Side::kClient) == request.size());
  CHECK(hosted.told(Side::kUpstream) == response.size());
  CHECK(hosted.relay.bytes_from(Side::kClient) == request.size());
  CHECK(hosted.relay.bytes_from(Side::kUpstream) == response.size());
  CHECK(loop.holders_in_use() == 0);  // an ended relay holds no buffer and no pipe
}

TEST_CASE("relay: the client's half-close passes on while the server still answers", "[unit]") {
  const Path path = GENERATE(Path::kCopy, Path::kSplice);
  INFO(PathName(path));
  Loop loop(path);
  TcpHop hop(loop);
  SendAll(hop.app.get(), "request");
  REQUIRE(shutdown(hop.app.get(), SHUT_WR) == 0);
  // The server reads the request to its end: the FIN came through.
  Received at_server;
  {
    const Background server([&] { at_server = ReceiveAll(hop.server.get()); });
    REQUIRE(loop.RunUntil([&] { return server.done(); }));
  }
  CHECK(hop.hosted->half_closes == std::vector<Side>{Side::kClient});
  CHECK(at_server.bytes == "request");
  CHECK(at_server.error == 0);
  CHECK_FALSE(hop.hosted->ended);  // the other direction is still open
  SendAll(hop.server.get(), "response");
  hop.server.Reset();
  REQUIRE(loop.RunUntil([&] { return hop.hosted->ended.has_value(); }));
  CHECK(*hop.hosted->ended == RelayEnd::kClosed);
  CHECK(hop.hosted->half_closes == std::vector<Side>{Side::kClient, Side::kUpstream});
  const Received at_app = ReceiveAll(hop.app.get());
  CHECK(at_app.bytes == "response");
  CHECK(at_app.error == 0);
}

TEST_CASE("relay: the server's half-close passes on while the client still sends", "[unit]") {
  const Path path = GENERATE(Path::kCopy, Path::kSplice);
  INFO(PathName(path));
  Loop loop(path);
  TcpHop hop(loop);
  SendAll(hop.server.get(), "banner");
  REQUIRE(shutdown(hop.server.get(), SHUT_WR) == 0);
  Received at_app;
  {
    const Background app([&] { at_app = ReceiveAll(hop.app.get()); });
    REQUIRE(loop.RunUntil([&] { return app.done(); }));
  }
  CHECK(hop.hosted->half_closes == std::vector<Side>{Side::kUpstream});
  CHECK(at_app.bytes == "banner");
  CHECK(at_app.error == 0);
  SendAll(hop.app.get(), "late words");
  hop.app.Reset();
  REQUIRE(loop.RunUntil([&] { return hop.hosted->ended.has_value(); }));
  CHECK(*hop.hosted->ended == RelayEnd::kClosed);
  CHECK(ReceiveAll(hop.server.get()).bytes == "late words");
}

TEST_CASE("relay: a reader that does not read stops the relay reading its writer", "[unit]") {
  const Path path = GENERATE(Path::kCopy, Path::kSplice);
  INFO(PathName(path));
  Loop loop(path);
  // Socket buffers of a few segments (loopback segments are 64 KiB): what the sockets can
  // hold stays well below the stream.
  TcpHop hop(loop, /*buffer_bytes=*/256 << 10);
  const std::string stream = RandomBytes(32 << 20, 3);
  const Background app([&] {
    SendAll(hop.app.get(), stream);
    shutdown(hop.app.get(), SHUT_WR);
  });
  // The server does not read: the relay may hold what the sockets and one buffer hold, no
  // more; the application's send blocks.
  const uint64_t relayed = RunUntilStalled(loop, hop.hosted->relay, Side::kClient);
  CHECK(relayed < 8 << 20);
  CHECK(loop.holders_in_use() <= 1);
  // Once the server reads, everything arrives, in order, and the FIN after it.
  Received at_server;
  {
    const Background server([&] { at_server = ReceiveAll(hop.server.get()); });
    REQUIRE(loop.RunUntil([&] { return server.done() && app.done(); }, 30s));
  }
  hop.server.Reset();
  REQUIRE(loop.RunUntil([&] { return hop.hosted->ended.has_value(); }));
  CHECK(*hop.hosted->ended == RelayEnd::kClosed);
  CHECK(at_server.bytes.size() == stream.size());
  CHECK(at_server.bytes == stream);
}

TEST_CASE("relay: bytes a relay ended before sending never reach the next connection", "[unit]") {
  const Path path = GENERATE(Path::kCopy, Path::kSplice);
  INFO(PathName(path));
  Loop loop(path);
  {
    TcpHop stalled(loop, /*buffer_bytes=*/256 << 10);
    // The application never reads: the relay holds a buffer (or a pipe) of the server's bytes
    // it cannot send on, until the application vanishes with a reset.
    const Background server([&] { SendAll(stalled.server.get(), std::string(8 << 20, 'y')); });
    RunUntilStalled(loop, stalled.hosted->relay, Side::kUpstream);
    REQUIRE(loop.holders_in_use() == 1);
    const linger hard{.l_onoff = 1, .l_linger = 0};
    setsockopt(stalled.app.get(), SOL_SOCKET, SO_LINGER, &hard, sizeof hard);
    stalled.app.Reset();
    REQUIRE(loop.RunUntil([&] { return stalled.hosted->ended.has_value() && server.done(); }));
    loop.Forget(*stalled.hosted);
  }
  REQUIRE(loop.holders_in_use() == 0);
  // The next connection takes the buffer the ended one held (a pipe that held bytes is
  // closed, not kept): only its own bytes pass.
  TcpHop next(loop);
  SendAll(next.app.get(), "next request");
  REQUIRE(shutdown(next.app.get(), SHUT_WR) == 0);
  Received at_server;
  {
    const Background server([&] { at_server = ReceiveAll(next.server.get()); });
    REQUIRE(loop.RunUntil([&] { return server.done(); }));
  }
  CHECK(at_server.bytes == "next request");
}

TEST_CASE("relay: a reset from the server is mirrored to the application", "[unit]") {
  const Path path = GENERATE(Path::kCopy, Path::kSplice);
  INFO(PathName(path));
  Loop loop(path);
  TcpHop hop(loop);
  const linger hard{.l_onoff = 1, .l_linger = 0};
  setsockopt(hop.server.get(), SOL_SOCKET, SO_LINGER, &hard, sizeof hard);
  hop.server.Reset();
  REQUIRE(loop.RunUntil([&] { return hop.hosted->ended.has_value(); }));
  CHECK(*hop.hosted->ended == RelayEnd::kReset);
  CHECK(IsFailedEnd(*hop.hosted->ended));
  CHECK(ReceiveAll(hop.app.get()).error == ECONNRESET);
}

TEST_CASE("relay: a refused connect reaches the application as a reset", "[unit]") {
  const Path path = GENERATE(Path::kCopy, Path::kSplice);
  INFO(PathName(path));
  Loop loop(path);
  const Listener front;
  UniqueFd app = Dial(front.port, false);
  UniqueFd accepted = front.Accept();
  SetNonBlocking(accepted.get());
  Loop::Hosted& hosted = loop.Add(std::move(accepted), Dial(ClosedPort(), true));
  REQUIRE(loop.RunUntil([&] { return hosted.ended.has_value(); }));
  CHECK(*hosted.ended == RelayEnd::kRefused);
  CHECK_FALSE(hosted.connected);
  CHECK(ReceiveAll(app.get()).error == ECONNRESET);
}

// Buffers are the copy's: out of pipes, a spliced relay copies (tested below).
TEST_CASE("relay: out of buffers, a relay waits and goes on when one comes back", "[unit]") {
  Loop loop(Path::kCopy, {.max_buffers = 1});
  TcpHop busy(loop, 256 << 10), waiting(loop, 256 << 10);
  // The busy relay takes the only buffer and keeps it: its server does not read.
  const Background flood([&] {
    SendAll(busy.app.get(), RandomBytes(16 << 20, 4));
    shutdown(busy.app.get(), SHUT_WR);
  });
  REQUIRE(loop.RunUntil([&] { return loop.buffers_in_use() == 1; }));
  loop.RunFor(100ms);
  SendAll(waiting.app.get(), "hello");
  loop.RunFor(200ms);
  CHECK(waiting.hosted->relay.bytes_from(Side::kClient) == 0);  // no buffer to read into
  // The busy server reads: the buffer comes back, and the waiting relay goes on.
  const Background drain([&] { ReceiveAll(busy.server.get()); });
  REQUIRE(loop.RunUntil([&] { return waiting.hosted->relay.bytes_from(Side::kClient) == 5; }, 30s));
  char buffer[5];
  REQUIRE(recv(waiting.server.get(), buffer, sizeof buffer, MSG_WAITALL) == 5);
  CHECK(std::string(buffer, 5) == "hello");
  REQUIRE(loop.RunUntil([&] { return flood.done() && drain.done(); }, 30s));
}

TEST_CASE("relay: an upstream that does not answer in time resets the application", "[unit]") {
  const Path path = GENERATE(Path::kCopy, Path::kSplice);
  INFO(PathName(path));
  Loop loop(path);
  // A listener whose one-place queue is taken: the relay's SYN is dropped and its connect
  // stays in flight.
  const Listener silent(/*backlog=*/0);
  const UniqueFd queued = Dial(silent.port, false);
  const Listener front;
  UniqueFd app = Dial(front.port, false);
  UniqueFd accepted = front.Accept();
  SetNonBlocking(accepted.get());
  Loop::Hosted& hosted = loop.Add(std::move(accepted), Dial(silent.port, true));
  loop.RunFor(50ms);
  loop.Advance(kConnectTimeout);  // at the deadline: not yet past it
  loop.RunFor(20ms);
  CHECK_FALSE(hosted.ended);
  loop.Advance(1);
  REQUIRE(hosted.ended);
  CHECK(*hosted.ended == RelayEnd::kConnectTimeout);
  CHECK_FALSE(hosted.connected);
  CHECK(ReceiveAll(app.get()).error == ECONNRESET);
}

TEST_CASE("relay: an idle connection is closed at its deadline: activity postpones it", "[unit]") {
  const Path path = GENERATE(Path::kCopy, Path::kSplice);
  INFO(PathName(path));
  Loop loop(path);
  TcpHop hop(loop);
  loop.Advance(kIdleTimeout * 6 / 10);
  SendAll(hop.app.get(), "still here");
  REQUIRE(loop.RunUntil([&] { return hop.hosted->relay.bytes_from(Side::kClient) == 10; }));
  loop.Advance(kIdleTimeout * 6 / 10);  // 1.2 timeouts since it connected, 0.6 since active
  CHECK_FALSE(hop.hosted->ended);
  loop.Advance(kIdleTimeout * 5 / 10);  // 1.1 since active
  REQUIRE(hop.hosted->ended);
  CHECK(*hop.hosted->ended == RelayEnd::kIdleTimeout);
  CHECK_FALSE(IsFailedEnd(*hop.hosted->ended));
  // A clean close both ways, not a reset.
  const Received at_server = ReceiveAll(hop.server.get());
  CHECK(at_server.bytes == "still here");
  CHECK(at_server.error == 0);
  CHECK(ReceiveAll(hop.app.get()).error == 0);
}

TEST_CASE("relay: an idle connection is told once it went quiet, again after new activity",
          "[unit]") {
  Loop loop(Path::kCopy);
  TcpHop hop(loop);
  loop.Advance(kQuietAfter);  // at the spell: not yet past it
  CHECK(hop.hosted->quiet == 0);
  loop.Advance(1);
  CHECK(hop.hosted->quiet == 1);
  loop.Advance(kQuietAfter);  // told once per quiet spell
  CHECK(hop.hosted->quiet == 1);
  // The next bytes pass as ever; the spell starts over with them.
  SendAll(hop.app.get(), "next request");
  REQUIRE(loop.RunUntil([&] { return hop.hosted->relay.bytes_from(Side::kClient) == 12; }));
  char buffer[12];
  REQUIRE(recv(hop.server.get(), buffer, sizeof buffer, MSG_WAITALL) == 12);
  CHECK(std::string(buffer, 12) == "next request");
  CHECK(hop.hosted->seen[static_cast<size_t>(Side::kClient)] == "next request");
  loop.Advance(kQuietAfter + 1);
  CHECK(hop.hosted->quiet == 2);
  // A quiet connection keeps its idle deadline, counted from its last activity.
  loop.Advance(kIdleTimeout - kQuietAfter - 1);
  CHECK_FALSE(hop.hosted->ended);
  loop.Advance(1);
  REQUIRE(hop.hosted->ended);
  CHECK(*hop.hosted->ended == RelayEnd::kIdleTimeout);
}

TEST_CASE("relay: a side no longer watched mid-stream is spliced, after the bytes read before",
          "[unit]") {
  Loop loop(Path::kSplice);
  TcpHop hop(loop, /*buffer_bytes=*/256 << 10);
  hop.hosted->watch_limit = SIZE_MAX;  // watched, and so copied, to begin with
  const std::string stream = RandomBytes(32 << 20, 5);
  const Background app([&] {
    SendAll(hop.app.get(), stream);
    shutdown(hop.app.get(), SHUT_WR);
  });
  // The server does not read yet: the relay's buffer holds bytes it cannot send on.
  RunUntilStalled(loop, hop.hosted->relay, Side::kClient);
  REQUIRE(loop.buffers_in_use() == 1);
  const size_t seen_before = hop.hosted->seen[static_cast<size_t>(Side::kClient)].size();
  REQUIRE(seen_before > hop.hosted->relay.bytes_from(Side::kClient));  // bytes pending
  // The observer stops watching: what the buffer holds goes first, then the rest, spliced.
  hop.hosted->watch_limit = 0;
  Received at_server;
  {
    const Background server([&] { at_server = ReceiveAll(hop.server.get()); });
    REQUIRE(loop.RunUntil([&] { return server.done() && app.done(); }, 30s));
  }
  CHECK(at_server.bytes.size() == stream.size());
  CHECK(at_server.bytes == stream);
  CHECK(hop.hosted->seen[static_cast<size_t>(Side::kClient)] == stream.substr(0, seen_before));
  CHECK(hop.hosted->unseen[static_cast<size_t>(Side::kClient)] == stream.size() - seen_before);
  CHECK(hop.hosted->relay.bytes_from(Side::kClient) == stream.size());
  hop.server.Reset();
  REQUIRE(loop.RunUntil([&] { return hop.hosted->ended.has_value(); }));
  CHECK(*hop.hosted->ended == RelayEnd::kClosed);
  CHECK(loop.holders_in_use() == 0);
}

TEST_CASE("relay: a half-close after spliced bytes passes on after them", "[unit]") {
  Loop loop(Path::kSplice);
  TcpHop hop(loop);
  const std::string request = RandomBytes(4 << 20, 6), response = RandomBytes(6 << 20, 7);
  Received at_server;
  {
    const Background app([&] {
      SendAll(hop.app.get(), request);
      shutdown(hop.app.get(), SHUT_WR);
    });
    const Background server([&] { at_server = ReceiveAll(hop.server.get()); });
    REQUIRE(loop.RunUntil([&] { return server.done() && app.done(); }, 30s));
  }
  CHECK(at_server.bytes == request);
  CHECK(at_server.error == 0);
  CHECK(hop.hosted->half_closes == std::vector<Side>{Side::kClient});
  CHECK_FALSE(hop.hosted->ended);
  // The server answers after the client's FIN, as much again, and closes.
  Received at_app;
  {
    const Background app([&] { at_app = ReceiveAll(hop.app.get()); });
    const Background server([&] {
      SendAll(hop.server.get(), response);
      hop.server.Reset();
    });
    REQUIRE(loop.RunUntil([&] { return app.done() && hop.hosted->ended.has_value(); }, 30s));
  }
  CHECK(at_app.bytes == response);
  CHECK(at_app.error == 0);
  CHECK(*hop.hosted->ended == RelayEnd::kClosed);
  CHECK(hop.hosted->unseen[static_cast<size_t>(Side::kClient)] == request.size());
  CHECK(hop.hosted->unseen[static_cast<size_t>(Side::kUpstream)] == response.size());
}

TEST_CASE("relay: an unwatched side takes a pipe only once it carries bulk", "[unit]") {
  Loop loop(Path::kSplice);
  TcpHop hop(loop);
  // A small exchange and a FIN: copied, told as unseen, and no pipe ever made.
  Received at_server;
  {
    const Background app([&] { SendAll(hop.app.get(), "PING\r\n"); });
    const Background server([&] {
      char got[6];
      if (::recv(hop.server.get(), got, sizeof got, MSG_WAITALL) == 6) {
        at_server.bytes.assign(got, sizeof got);
      }
    });
    REQUIRE(loop.RunUntil([&] { return server.done() && app.done(); }));
  }
  CHECK(at_server.bytes == "PING\r\n");
  CHECK(hop.hosted->unseen[static_cast<size_t>(Side::kClient)] == 6);
  CHECK(loop.pipes_in_use() + loop.pipes_kept() == 0);
  // Then bulk: spliced through a pipe, which comes back to the pool empty once it is sent.
  const std::string stream = RandomBytes(8 << 20, 10);
  {
    const Background app([&] {
      SendAll(hop.app.get(), stream);
      shutdown(hop.app.get(), SHUT_WR);
    });
    const Background server([&] { at_server = ReceiveAll(hop.server.get()); });
    REQUIRE(loop.RunUntil([&] { return server.done() && app.done(); }, 30s));
  }
  CHECK(at_server.bytes == stream);
  CHECK(hop.hosted->unseen[static_cast<size_t>(Side::kClient)] == 6 + stream.size());
  CHECK(loop.pipes_in_use() == 0);
  CHECK(loop.pipes_kept() == 1);
}

TEST_CASE("relay: out of pipes, a relay copies what it would splice, byte for byte", "[unit]") {
  Loop loop(Path::kSplice, {.max_pipes = 1});
  TcpHop busy(loop, 256 << 10), copying(loop);
  // The busy relay takes the only pipe and keeps it: its server does not read.
  const Background flood([&] {
    SendAll(busy.app.get(), RandomBytes(16 << 20, 8));
    shutdown(busy.app.get(), SHUT_WR);
  });
  RunUntilStalled(loop, busy.hosted->relay, Side::kClient);
  REQUIRE(loop.pipes_in_use() == 1);
  const std::string stream = RandomBytes(8 << 20, 9);
  Received at_server;
  {
    const Background app([&] {
      SendAll(copying.app.get(), stream);
      shutdown(copying.app.get(), SHUT_WR);
    });
    const Background server([&] { at_server = ReceiveAll(copying.server.get()); });
    REQUIRE(loop.RunUntil([&] { return server.done() && app.done(); }, 30s));
  }
  CHECK(loop.pipes_in_use() == 1);  // still the busy relay's
  CHECK(at_server.bytes == stream);
  // Not watched, so told as unseen, though copied.
  CHECK(copying.hosted->seen[static_cast<size_t>(Side::kClient)].empty());
  CHECK(copying.hosted->unseen[static_cast<size_t>(Side::kClient)] == stream.size());
  const Background drain([&] { ReceiveAll(busy.server.get()); });
  REQUIRE(loop.RunUntil([&] { return flood.done() && drain.done(); }, 30s));
}

TEST_CASE("pipe pool: out of descriptors, no pipe (the relay copies)", "[unit]") {
  PipePool pool(/*max_pipes=*/4, /*pipe_size=*/64 << 10);
  rlimit saved{};
  REQUIRE(getrlimit(RLIMIT_NOFILE, &saved) == 0);
  // The lowest free descriptor becomes the limit: a pipe needs two below it.
  const int lowest_free = dup(STDIN_FILENO);
  REQUIRE(lowest_free >= 0);
  close(lowest_free);
  const rlimit low{.rlim_cur = static_cast<rlim_t>(lowest_free), .rlim_max = saved.rlim_max};
  REQUIRE(setrlimit(RLIMIT_NOFILE, &low) == 0);
  std::unique_ptr<Pipe> none = pool.Acquire();
  const int error = errno;
  REQUIRE(setrlimit(RLIMIT_NOFILE, &saved) == 0);
  CHECK(none == nullptr);
  CHECK(error == EMFILE);
  CHECK(pool.in_use() == 0);
  // With descriptors again, a pipe; given back empty, it is kept and taken again.
  std::unique_ptr<Pipe> pipe = pool.Acquire();
  REQUIRE(pipe != nullptr);
  CHECK(pipe->capacity() == 64 << 10);
  const Pipe* const first = pipe.get();
  pool.Release(std::move(pipe));
  CHECK(pool.kept() == 1);
  pipe = pool.Acquire();
  CHECK(pipe.get() == first);
  // One given back holding bytes is closed.
  REQUIRE(write(pipe->write_fd(), "x", 1) == 1);
  pipe->Filled(1);
  pool.Release(std::move(pipe));
  CHECK(pool.kept() == 0);
  CHECK(pool.in_use() == 0);
}

}  // namespace
}  // namespace nodemesh::agent
