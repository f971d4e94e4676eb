#include "bench/endurance/load_client.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string_view>
#include <utility>

namespace nodemesh::testing::endurance {
namespace {

int64_t NowNs() {
  timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return int64_t{now.tv_sec} * 1'000'000'000 + now.tv_nsec;
}

// ======================= the client, run inside a pod =======================

// One keep-alive connection. At most one request is outstanding on it (no pipelining), so
// an answer belongs to the request before it.
struct Connection {
  int fd = -1;
  uint32_t generation = 0;  // tells a closed connection's late epoll events from its slot's next
  uint64_t id = 0;          // unique over the client's life, part of every request's path
  uint32_t sent = 0;        // requests written on this connection
  uint32_t answered = 0;
  bool connecting = false;
  bool awaiting = false;
  bool queued = false;  // on the churn client's list of idle connections
  std::string expected_body{};
  std::string inbox{};
  std::string outbox{};
  size_t outbox_offset = 0;
};

enum class ConnectionEvent { kConnected, kAnswered, kEnded };

enum class ParseResult { kIncomplete, kComplete, kMalformed };

// Takes one HTTP/1.1 response off the front of `inbox`. nginx answers `return 200 "..."`
// with a Content-Length, never chunked, which is all this client needs to read.
ParseResult TakeResponse(std::string& inbox, int& status, std::string& body) {
  const size_t head_end = inbox.find("\r\n\r\n");
  if (head_end == std::string::npos) {
    return inbox.size() > 65536 ? ParseResult::kMalformed : ParseResult::kIncomplete;
  }
  if (!inbox.starts_with("HTTP/1.1 ") || head_end < 12) return ParseResult::kMalformed;
  std::from_chars(inbox.data() + 9, inbox.data() + 12, status);
  std::string head = inbox.substr(0, head_end);
  std::transform(head.begin(), head.end(), head.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  constexpr std::string_view kLength = "\r\ncontent-length:";
  size_t at = head.find(kLength);
  if (at == std::string::npos) return ParseResult::kMalformed;
  at += kLength.size();
  while (at < head.size() && head[at] == ' ') ++at;
  size_t length = 0;
  if (std::from_chars(head.data() + at, head.data() + head.size(), length).ec != std::errc()) {
    return ParseResult::kMalformed;
  }
  if (inbox.size() < head_end + 4 + length) return ParseResult::kIncomplete;
  body = inbox.substr(head_end + 4, length);
  inbox.erase(0, head_end + 4 + length);
  return ParseResult::kComplete;
}

// A pseudo-random number per (seed, connection, request), so that an answer carrying
// another connection's or another request's bytes cannot match by chance.
uint64_t Token(uint64_t seed, uint64_t connection, uint64_t request) {
  uint64_t z = seed ^ (connection * 0x9e3779b97f4a7c15ULL) ^ (request << 40);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return (z ^ (z >> 31)) % 1'000'000'000'000ULL;
}

// Many connections to one target on one epoll; the callers decide when to open, send and
// close, through the events it reports.
class Client {
 public:
  using Handler = std::function<void(size_t slot, ConnectionEvent event)>;

  Client(const std::string& target, size_t slots, uint64_t seed) : seed_(seed), slots_(slots) {
    const size_t colon = target.rfind(':');
    if (colon == std::string::npos ||
        ::inet_pton(AF_INET, target.substr(0, colon).c_str(), &target_.sin_addr) != 1) {
      throw std::runtime_error("bad --target " + target);
    }
    target_.sin_family = AF_INET;
    target_.sin_port = htons(static_cast<uint16_t>(std::stoi(target.substr(colon + 1))));
    epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
    if (epoll_fd_ < 0) throw std::runtime_error(fmt::format("epoll: {}", std::strerror(errno)));
  }
  ~Client() {
    for (Connection& connection : slots_) {
      if (connection.fd >= 0) ::close(connection.fd);
    }
    ::close(epoll_fd_);
  }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  Connection& slot(size_t index) { return slots_[index]; }
  size_t size() const { return slots_.size(); }
  ClientTotals& totals() { return totals_; }

  // Starts a connect on a closed slot. False (counted) if it failed at once.
  bool Open(size_t index) {
    Connection& connection = slots_[index];
    connection = Connection{.generation = connection.generation + 1, .id = next_id_++};
    ++totals_.connections_opened;
    connection.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (connection.fd < 0) {
      ++totals_.connect_failed;
      return false;
    }
    const int one = 1;
    ::setsockopt(connection.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (::connect(connection.fd, reinterpret_cast<const sockaddr*>(&target_), sizeof target_) !=
            0 &&
        errno != EINPROGRESS) {
      ++totals_.connect_failed;
      ::close(std::exchange(connection.fd, -1));
      return false;
    }
    connection.connecting = true;
    Watch(index, EPOLLOUT | EPOLLIN, EPOLL_CTL_ADD);
    return true;
  }

  // Writes the connection's next request: GET /c/<connection>/r/<request>/<token>, which
  // nginx answers with the path as the body. All-numeric segments make one route.
  void Send(size_t index) {
    Connection& connection = slots_[index];
    const uint32_t request = connection.sent++;
    connection.expected_body =
        fmt::format("/c/{}/r/{}/{}", connection.id, request, Token(seed_, connection.id, request));
    connection.outbox =
        fmt::format("GET {} HTTP/1.1\r\nHost: bench\r\n\r\n", connection.expected_body);
    connection.outbox_offset = 0;
    connection.awaiting = true;
    Flush(index);
  }

  // Closes a slot we are done with; `completed` counts it as a connection that did its job.
  void Close(size_t index, bool completed) {
    Connection& connection = slots_[index];
    if (connection.fd < 0) return;
    if (completed) ++totals_.connections_completed;
    ::close(std::exchange(connection.fd, -1));
    connection.connecting = connection.awaiting = false;
  }

  // Waits up to `timeout_ms` for events and reports them to `handler`.
  void Poll(int timeout_ms, const Handler& handler) {
    epoll_event events[256];
    const int ready = ::epoll_wait(epoll_fd_, events, 256, timeout_ms);
    for (int i = 0; i < ready; ++i) {
      const size_t index = events[i].data.u64 & 0xffffffffU;
      const uint32_t generation = static_cast<uint32_t>(events[i].data.u64 >> 32);
      Connection& connection = slots_[index];
      if (connection.fd < 0 || connection.generation != generation) continue;  // closed since
      if (connection.connecting) {
        int error = 0;
        socklen_t length = sizeof error;
        ::getsockopt(connection.fd, SOL_SOCKET, SO_ERROR, &error, &length);
        if (error != 0 || (events[i].events & (EPOLLERR | EPOLLHUP))) {
          ++totals_.connect_failed;
          End(index, handler, /*count_broken=*/false);
          continue;
        }
        connection.connecting = false;
        Watch(index, EPOLLIN, EPOLL_CTL_MOD);
        handler(index, ConnectionEvent::kConnected);
        continue;
      }
      if (events[i].events & EPOLLOUT) Flush(index);
      if (connection.fd >= 0 && (events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))) {
        Receive(index, handler);
      }
    }
  }

 private:
  void Watch(size_t index, uint32_t events, int operation) {
    epoll_event event{.events = events,
                      .data = {.u64 = (uint64_t{slots_[index].generation} << 32) | index}};
    ::epoll_ctl(epoll_fd_, operation, slots_[index].fd, &event);
  }

  void Flush(size_t index) {
    Connection& connection = slots_[index];
    if (connection.outbox.empty()) return;  // written whole already
    while (connection.outbox_offset < connection.outbox.size()) {
      const ssize_t n = ::send(connection.fd, connection.outbox.data() + connection.outbox_offset,
                               connection.outbox.size() - connection.outbox_offset, MSG_NOSIGNAL);
      if (n > 0) {
        connection.outbox_offset += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) {
        Watch(index, EPOLLIN | EPOLLOUT, EPOLL_CTL_MOD);
        return;
      }
      return;  // the error shows on the next read
    }
    ++totals_.requests_sent;
    connection.outbox.clear();
    Watch(index, EPOLLIN, EPOLL_CTL_MOD);
  }

  void Receive(size_t index, const Handler& handler) {
    Connection& connection = slots_[index];
    char buffer[16384];
    for (;;) {
      const ssize_t n = ::recv(connection.fd, buffer, sizeof buffer, 0);
      if (n > 0) {
        connection.inbox.append(buffer, static_cast<size_t>(n));
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) break;
      Note(connection, n == 0 ? std::string("ended by the peer (EOF)")
                              : fmt::format("ended by an error: {}", std::strerror(errno)));
      End(index, handler, /*count_broken=*/true);
      return;
    }
    int status = 0;
    std::string body;
    switch (TakeResponse(connection.inbox, status, body)) {
      case ParseResult::kIncomplete:
        return;
      case ParseResult::kMalformed:
        ++totals_.responses_corrupted;
        Note(connection, fmt::format("malformed answer '{}'", connection.inbox.substr(0, 200)));
        connection.awaiting = false;
        End(index, handler, /*count_broken=*/false);
        return;
      case ParseResult::kComplete:
        break;
    }
    if (!connection.awaiting || !connection.inbox.empty()) {
      // An answer nobody asked for, or bytes beyond the one answer: never from a
      // faithful relay.
      ++totals_.responses_corrupted;
      Note(connection, fmt::format("unexpected answer '{}' (then '{}')", body.substr(0, 200),
                                   connection.inbox.substr(0, 200)));
      connection.awaiting = false;
      End(index, handler, /*count_broken=*/false);
      return;
    }
    connection.awaiting = false;
    ++connection.answered;
    if (status == 200 && body == connection.expected_body) {
      ++totals_.responses_ok;
    } else {
      ++totals_.responses_corrupted;
      Note(connection,
           fmt::format("answer {} with status {} and body '{}', expected '{}'", connection.answered,
                       status, body.substr(0, 200), connection.expected_body));
    }
    handler(index, ConnectionEvent::kAnswered);
  }

  void Note(const Connection& connection, const std::string& what) {
    if (totals_.incidents.size() >= 20) return;
    totals_.incidents.push_back(fmt::format(
        "connection {} ({} sent, {} answered, {}): {}", connection.id, connection.sent,
        connection.answered, connection.awaiting ? "awaiting an answer" : "idle", what));
  }

  // The connection ended without us closing it: an outstanding request is lost.
  void End(size_t index, const Handler& handler, bool count_broken) {
    Connection& connection = slots_[index];
    if (connection.awaiting) ++totals_.requests_lost;
    if (count_broken) ++totals_.connections_broken;
    Close(index, /*completed=*/false);
    handler(index, ConnectionEvent::kEnded);
  }

  sockaddr_in target_{};
  uint64_t seed_;
  uint64_t next_id_ = 1;
  int epoll_fd_ = -1;
  std::vector<Connection> slots_;
  ClientTotals totals_;
};

// Blocks SIGUSR1, by which the benchmark tells a client to go on: taken with sigtimedwait,
// so that a signal sent before the client waits is not lost.
void BlockContinueSignal() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGUSR1);
  sigprocmask(SIG_BLOCK, &set, nullptr);
}

// How long a client waits for the benchmark between phases (which it spends measuring).
constexpr std::chrono::seconds kContinueTimeout{900};

bool WaitForContinue(std::chrono::seconds timeout) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGUSR1);
  const timespec limit{.tv_sec = timeout.count(), .tv_nsec = 0};
  return ::sigtimedwait(&set, nullptr, &limit) == SIGUSR1;
}

bool ContinueSignalled() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGUSR1);
  const timespec now{};
  return ::sigtimedwait(&set, nullptr, &now) == SIGUSR1;
}

void Say(const std::string& line) {
  fmt::print("{}\n", line);
  std::fflush(stdout);
}

}  // namespace

// Opens every connection with its first request answered, says "all-open", waits for
// SIGUSR1; sends the remaining requests on all of them at once, says "exchanged", waits;
// closes them all and prints its totals.
int RunConcurrentClient(const ConcurrentClientOptions& options) {
  BlockContinueSignal();
  const size_t total = static_cast<size_t>(options.connections);
  Client client(options.target, total, options.seed);
  size_t next = 0, in_flight = 0, settled = 0;  // settled: answered once, or failed
  const auto open_more = [&] {
    while (next < total && in_flight < static_cast<size_t>(options.connects_in_flight)) {
      if (client.Open(next++)) {
        ++in_flight;
      } else {
        ++settled;
      }
    }
  };
  bool exchanging = false;
  const Client::Handler handler = [&](size_t slot, ConnectionEvent event) {
    switch (event) {
      case ConnectionEvent::kConnected:
        client.Send(slot);
        return;
      case ConnectionEvent::kEnded:
        // Only a connection still owed something settles now: one that had its answers
        // settled then (and is counted broken by the client).
        if (!exchanging && client.slot(slot).answered == 0) {
          --in_flight;
          ++settled;
        } else if (exchanging &&
                   client.slot(slot).answered < static_cast<uint32_t>(options.requests)) {
          ++settled;
        }
        return;
      case ConnectionEvent::kAnswered:
        if (!exchanging) {
          --in_flight;
          ++settled;
        } else if (client.slot(slot).answered < static_cast<uint32_t>(options.requests)) {
          client.Send(slot);
        } else {
          ++settled;
        }
        return;
    }
  };
  const auto run_until_settled = [&] {
    const int64_t deadline = NowNs() + int64_t{options.phase_timeout_s} * 1'000'000'000;
    while (settled < total && NowNs() < deadline) {
      if (!exchanging) open_more();
      client.Poll(100, handler);
    }
  };
  run_until_settled();
  Say(fmt::format("all-open {}", total - client.totals().connect_failed));
  if (!WaitForContinue(kContinueTimeout)) return 3;

  exchanging = true;
  settled = 0;
  for (size_t slot = 0; slot < total; ++slot) {
    // One still waiting for its first answer (past the agent's limit) gets no second request:
    // this client never pipelines.
    const Connection& connection = client.slot(slot);
    if (connection.fd >= 0 && !connection.awaiting && options.requests > 1) {
      client.Send(slot);
    } else {
      ++settled;
    }
  }
  run_until_settled();
  Say("exchanged");
  if (!WaitForContinue(kContinueTimeout)) return 3;

  for (size_t slot = 0; slot < total; ++slot) {
    Connection& connection = client.slot(slot);
    if (connection.fd < 0) continue;
    if (connection.awaiting) ++client.totals().requests_lost;  // timed out
    client.Close(slot, !connection.awaiting);
  }
  Say(client.totals().ToJson().dump());
  return 0;
}

// Requests at a steady rate over `slots` connections, each closed after its
// `requests_per_connection` answers and replaced at once, so connections open and close
// all the time. A failed connect is tried again on the next tick. Prints
// "progress <seconds> <sent> <ok>" lines and, at the end, its totals.
int RunChurnClient(const ChurnClientOptions& options) {
  BlockContinueSignal();
  const size_t slots = static_cast<size_t>(options.slots);
  Client client(options.target, slots, options.seed);
  // Connected slots with no request outstanding, oldest first: taken in turn, so that every
  // connection carries its requests and none sits unused until the server's timeout for a
  // first request (nginx's client_header_timeout, 60 s) closes it.
  std::deque<size_t> idle;
  std::vector<int64_t> reopen_at(slots, 0);
  const auto queue_idle = [&](size_t slot) {
    if (!client.slot(slot).queued) idle.push_back(slot);
    client.slot(slot).queued = true;
  };
  // The next idle slot that is still a connected connection with nothing outstanding: an
  // entry may be stale, its connection ended (and maybe reopened) since it was queued.
  const auto take_idle = [&]() -> std::optional<size_t> {
    while (!idle.empty()) {
      const size_t slot = idle.front();
      idle.pop_front();
      Connection& connection = client.slot(slot);
      if (connection.queued && connection.fd >= 0 && !connection.connecting &&
          !connection.awaiting) {
        connection.queued = false;
        return slot;
      }
    }
    return std::nullopt;
  };
  const Client::Handler handler = [&](size_t slot, ConnectionEvent event) {
    switch (event) {
      case ConnectionEvent::kConnected:
        queue_idle(slot);
        return;
      case ConnectionEvent::kEnded:
        reopen_at[slot] = NowNs() + 10'000'000;  // a refusing target does not make it spin
        return;
      case ConnectionEvent::kAnswered:
        if (client.slot(slot).answered >= static_cast<uint32_t>(options.requests_per_connection)) {
          client.Close(slot, /*completed=*/true);
        } else {
          queue_idle(slot);
        }
        return;
    }
  };
  const int64_t start = NowNs();
  const int64_t end = start + int64_t{options.seconds} * 1'000'000'000;
  const double interval_ns = 1e9 / options.rate;
  uint64_t scheduled = 0;  // requests due so far: sent, or counted behind
  int64_t next_progress = start + int64_t{options.progress_seconds} * 1'000'000'000;
  int64_t next_signal_check = start;
  for (int64_t now = start; now < end; now = NowNs()) {
    if (now >= next_signal_check) {
      if (ContinueSignalled()) break;
      next_signal_check = now + 100'000'000;
    }
    for (size_t slot = 0; slot < slots; ++slot) {
      if (client.slot(slot).fd < 0 && now >= reopen_at[slot]) client.Open(slot);
    }
    const uint64_t due = static_cast<uint64_t>(static_cast<double>(now - start) / interval_ns) + 1;
    while (scheduled < due) {
      const std::optional<size_t> slot = take_idle();
      if (!slot) {
        // Behind by more than a second's worth: those are skipped, not queued forever.
        if (due - scheduled > static_cast<uint64_t>(options.rate)) {
          client.totals().requests_behind += due - scheduled - static_cast<uint64_t>(options.rate);
          scheduled = due - static_cast<uint64_t>(options.rate);
        }
        break;
      }
      client.Send(*slot);
      ++scheduled;
    }
    if (now >= next_progress) {
      Say(fmt::format("progress {} {} {}", (now - start) / 1'000'000'000,
                      client.totals().requests_sent, client.totals().responses_ok));
      next_progress += int64_t{options.progress_seconds} * 1'000'000'000;
    }
    const int64_t next_due = start + static_cast<int64_t>(static_cast<double>(due) * interval_ns);
    client.Poll(static_cast<int>(std::clamp<int64_t>((next_due - now) / 1'000'000, 0, 10)),
                handler);
  }
  // What is outstanding gets 5 s to be answered; the rest is lost.
  const int64_t drain_end = NowNs() + 5'000'000'000;
  const auto outstanding = [&] {
    for (size_t slot = 0; slot < slots; ++slot) {
      if (client.slot(slot).fd >= 0 && client.slot(slot).awaiting) return true;
    }
    return false;
  };
  const Client::Handler draining = [](size_t, ConnectionEvent) {};
  while (outstanding() && NowNs() < drain_end) client.Poll(10, draining);
  for (size_t slot = 0; slot < slots; ++slot) {
    Connection& connection = client.slot(slot);
    if (connection.fd < 0) continue;
    if (connection.awaiting) ++client.totals().requests_lost;
    // A connection that answered all it was asked has done its job, however many that was.
    client.Close(slot, !connection.awaiting && !connection.connecting);
  }
  Say(client.totals().ToJson().dump());
  return 0;
}

}  // namespace nodemesh::testing::endurance
