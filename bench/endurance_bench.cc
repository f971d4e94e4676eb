// Endurance of the agent on one simulated node: what it costs and whether it stays whole
// when it runs long, holds many connections, and sees pods come and go. Three parts:
//
//   concurrency  N keep-alive HTTP/1.1 connections (default 10,000) open at once from a
//                meshed client pod through the agent to nginx in an unmeshed server pod,
//                each carrying a few requests whose answers are checked byte for byte; the
//                agent's resident memory before, with all of them open, and after they
//                closed, so the memory a connection costs; twice, so that what a first
//                round leaves behind is told apart from what every round adds.
//   soak         a steady request rate with connections opened and closed all the time
//                (default 10 minutes), the agent's and the aggregator's memory and the
//                agent's descriptors sampled every 5 s; then the requests sent against the
//                requests the agent counted, and the growth after a warm-up.
//   churn        a pod enrolled and released (default 1,000 times) by rewriting the
//                inventory, as `meshctl inject` does on a local cluster, while it dials out
//                and is dialled; every connection must complete, proxied or direct; then
//                the agent's listeners, its kernel map entries, programs and links, the
//                pod's cgroup attachments, identities and descriptors against before.
//
// The traffic is made by this same binary run inside the pods (the client subcommands):
// a process must be in the pod's cgroup for its connects to be redirected, and cgroup
// membership belongs to a whole process. One thread and epoll carry every connection.
//
// Needs root (netns, cgroups, eBPF). Run through `bash bench/run.sh endurance`; never a
// test. Exits 1 when a check fails (a request lost or answered wrong, sent != counted, an
// entry, a listener or a descriptor left behind), 2 on bad usage. Everything it creates is
// removed by the fixture's destructors, also on failure.
#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "test/lib/agent_process.h"
#include "test/lib/files.h"
#include "test/lib/peers.h"
#include "test/lib/process.h"
#include "test/lib/test_node.h"

namespace nodemesh::testing {
namespace {

using namespace std::chrono_literals;
using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr uint16_t kServerPort = 8080;

int64_t NowNs() {
  timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return int64_t{now.tv_sec} * 1'000'000'000 + now.tv_nsec;
}

// ======================= the client, run inside a pod =======================

// What a client saw, printed as one JSON line when it ends.
struct ClientTotals {
  uint64_t connections_opened = 0;     // connect() started
  uint64_t connections_completed = 0;  // every request answered right, then closed by us
  uint64_t connect_failed = 0;
  uint64_t connections_broken = 0;   // ended by the peer or an error before we closed them
  uint64_t requests_sent = 0;        // written whole
  uint64_t responses_ok = 0;         // 200 with exactly the body expected
  uint64_t responses_corrupted = 0;  // another status, a malformed answer or another body
  uint64_t requests_lost = 0;        // sent, and the connection ended before the answer
  uint64_t requests_behind = 0;      // due at the rate but no connection was free
  // What the first few broken connections and wrong answers looked like, as evidence.
  std::vector<std::string> incidents{};

  Json ToJson() const {
    return {{"incidents", incidents},
            {"connections_opened", connections_opened},
            {"connections_completed", connections_completed},
            {"connect_failed", connect_failed},
            {"connections_broken", connections_broken},
            {"requests_sent", requests_sent},
            {"responses_ok", responses_ok},
            {"responses_corrupted", responses_corrupted},
            {"requests_lost", requests_lost},
            {"requests_behind", requests_behind}};
  }
  static ClientTotals FromJson(const Json& json) {
    ClientTotals totals;
    totals.connections_opened = json.at("connections_opened");
    totals.connections_completed = json.at("connections_completed");
    totals.connect_failed = json.at("connect_failed");
    totals.connections_broken = json.at("connections_broken");
    totals.requests_sent = json.at("requests_sent");
    totals.responses_ok = json.at("responses_ok");
    totals.responses_corrupted = json.at("responses_corrupted");
    totals.requests_lost = json.at("requests_lost");
    totals.requests_behind = json.at("requests_behind");
    totals.incidents = json.value("incidents", std::vector<std::string>());
    return totals;
  }
};

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

struct ConcurrentClientOptions {
  std::string target;
  int connections = 10000;
  int requests = 4;              // per connection, the first while opening
  int connects_in_flight = 256;  // a burst beyond the listeners' backlogs only costs retries
  int phase_timeout_s = 600;
  uint64_t seed = 1;
};

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

struct ChurnClientOptions {
  std::string target;
  double rate = 500;                 // requests per second, open loop
  int requests_per_connection = 10;  // then it is closed and another opened
  int slots = 16;                    // connections open at a time
  int seconds = 600;                 // or until SIGUSR1
  int progress_seconds = 5;
  uint64_t seed = 1;
};

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

// ======================= the benchmark =======================

struct Settings {
  std::vector<std::string> parts;  // empty: all
  int workers = 2;
  // concurrency
  int connections = 10000;
  int requests_per_connection = 4;
  int concurrency_rounds = 2;
  // Run every connection asked for even when the agent's descriptors cannot hold them, to
  // see what it does at its limit (the checks then fail).
  bool beyond_file_limit = false;
  // soak
  int soak_seconds = 600;
  int warmup_seconds = 60;
  int sample_seconds = 5;
  double soak_rate = 500;
  int soak_requests_per_connection = 10;
  int soak_slots = 16;
  // churn
  int churn_cycles = 1000;
  double churn_rate = 200;
  int churn_requests_per_connection = 5;
  int churn_slots = 8;
};

bool Wanted(const Settings& settings, std::string_view part) {
  return settings.parts.empty() ||
         std::find(settings.parts.begin(), settings.parts.end(), part) != settings.parts.end();
}

// The failed checks of the whole run; the exit status is 1 when there are any.
std::vector<std::string> failures;

void Check(bool ok, const std::string& what) {
  if (!ok) {
    failures.push_back(what);
    fmt::print("CHECK FAILED: {}\n", what);
    std::fflush(stdout);
  }
}

// A free port on loopback for the aggregator, released before it binds it: another process
// could take it in between, which a benchmark may accept.
uint16_t FreeLoopbackPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    throw std::runtime_error(fmt::format("no free loopback port: {}", std::strerror(errno)));
  }
  ::close(fd);
  return ntohs(address.sin_port);
}

std::string SelfBinary() { return std::filesystem::read_symlink("/proc/self/exe").string(); }

// A value in KiB of /proc/<pid>/status ("VmRSS", "VmHWM"); 0 if it cannot be read.
uint64_t StatusKiB(pid_t pid, std::string_view key) {
  std::ifstream status(fmt::format("/proc/{}/status", pid));
  for (std::string line; std::getline(status, line);) {
    if (line.starts_with(key) && line.size() > key.size() && line[key.size()] == ':') {
      std::istringstream fields(line.substr(key.size() + 1));
      uint64_t kib = 0;
      fields >> kib;
      return kib;
    }
  }
  return 0;
}

size_t DescriptorCount(pid_t pid) {
  std::error_code error;
  size_t count = 0;
  for (auto it = std::filesystem::directory_iterator(fmt::format("/proc/{}/fd", pid), error);
       !error && it != std::filesystem::directory_iterator(); it.increment(error)) {
    ++count;
  }
  return count;
}

// "Max open files" of /proc/<pid>/limits: soft and hard.
std::string FileLimit(pid_t pid) {
  std::ifstream limits(fmt::format("/proc/{}/limits", pid));
  for (std::string line; std::getline(limits, line);) {
    if (line.starts_with("Max open files")) {
      std::istringstream fields(line.substr(14));
      std::string soft, hard;
      fields >> soft >> hard;
      return soft + " (hard " + hard + ")";
    }
  }
  return "?";
}

double MiB(uint64_t kib) { return static_cast<double>(kib) / 1024.0; }

// Every child (nginx, the clients, the agent) inherits this process's limit, and the agent
// raises its soft limit to the hard one: so the hard limit set here is the agent's. A
// proxied connection takes two of the agent's descriptors and one of the client's.
// Raising the hard limit takes CAP_SYS_RESOURCE; without it the soft limit goes up to the
// hard one and the connections are fitted to it (RunConcurrency).
void RaiseFileLimit(uint64_t wanted) {
  rlimit limit{};
  getrlimit(RLIMIT_NOFILE, &limit);
  const uint64_t ceiling = std::stoull(ReadFile("/proc/sys/fs/nr_open"));
  const uint64_t target = std::min<uint64_t>(std::max<uint64_t>(wanted, limit.rlim_max), ceiling);
  rlimit raised{.rlim_cur = target, .rlim_max = target};
  if (setrlimit(RLIMIT_NOFILE, &raised) == 0) return;
  fmt::print("cannot raise the hard open files limit from {} to {} ({}): kept\n", limit.rlim_max,
             target, std::strerror(errno));
  limit.rlim_cur = limit.rlim_max;
  setrlimit(RLIMIT_NOFILE, &limit);
}

// The soft open files limit of a process, from /proc/<pid>/limits; 0 if unreadable.
uint64_t SoftFileLimit(pid_t pid) {
  std::ifstream limits(fmt::format("/proc/{}/limits", pid));
  for (std::string line; std::getline(limits, line);) {
    if (line.starts_with("Max open files")) return std::strtoull(line.c_str() + 14, nullptr, 10);
  }
  return 0;
}

// nginx answering every request with its own path (so each answer can be checked against
// its request), keeping connections as long as any part runs.
Process StartNginx(const Pod& server, const Pod& prober, const std::string& dir) {
  const std::string root = fmt::format("{}/nginx-{}", dir, server.name);
  const std::string conf = fmt::format(R"(
master_process on;
worker_processes 1;
worker_rlimit_nofile 200000;
user root;
error_log {0}/error.log warn;
pid {0}/nginx.pid;
events {{ worker_connections 100000; multi_accept on; }}
http {{
  access_log off;
  default_type text/plain;
  {3}
  keepalive_requests 100000000;
  keepalive_timeout 3600s;
  server {{
    listen {1}:{2} backlog=8192;
    location / {{ return 200 "$request_uri"; }}
  }}
}}
)",
                                       root, server.ip, kServerPort, NginxTempPaths(root));
  return testing::StartNginx(server, prober, root, conf,
                             fmt::format("http://{}:{}/probe", server.ip, kServerPort));
}

std::unique_ptr<AgentProcess> StartAgent(TestNode& node, const Settings& settings,
                                         std::vector<std::string> extra_args = {}) {
  return std::make_unique<AgentProcess>(node,
                                        AgentProcessOptions{.binary = NODEMESH_AGENT_BINARY,
                                                            .log_level = "warning",
                                                            .workers = settings.workers,
                                                            .extra_args = std::move(extra_args)});
}

// The totals a client printed last, as a JSON line.
std::optional<ClientTotals> TotalsOf(const Process& client) {
  std::istringstream lines(client.output());
  std::optional<ClientTotals> totals;
  for (std::string line; std::getline(lines, line);) {
    if (!line.starts_with("{")) continue;
    const Json json = Json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!json.is_discarded()) totals = ClientTotals::FromJson(json);
  }
  return totals;
}

// Waits for a client to end by itself and returns its totals; throws with its output if
// it does not.
ClientTotals FinishClient(Process& client, std::chrono::milliseconds timeout) {
  const std::optional<ExitStatus> status = client.Wait(timeout);
  std::optional<ClientTotals> totals = TotalsOf(client);
  if (!status || !status->ok() || !totals) {
    throw std::runtime_error(fmt::format("client {} ({}):\n{}", client.command(),
                                         status ? status->ToString() : "still running",
                                         client.output()));
  }
  return *totals;
}

void WaitForLine(Process& client, std::string_view line, std::chrono::seconds timeout) {
  if (!PollUntil(
          [&] { return client.output().find(line) != std::string::npos || !client.IsRunning(); },
          timeout, 100ms) ||
      client.output().find(line) == std::string::npos) {
    const std::string why =
        client.IsRunning()
            ? fmt::format("did not say '{}' within {} s", line, timeout.count())
            : fmt::format("ended ({}) before saying '{}'", client.Wait(0ms)->ToString(), line);
    throw std::runtime_error(fmt::format("client {}:\n{}", why, client.output()));
  }
}

// CPU time of a process, all its threads, user and system.
double ProcessCpuSeconds(pid_t pid) {
  const std::string stat = ReadFile(fmt::format("/proc/{}/stat", pid));
  // utime and stime are the 12th and 13th fields after the parenthesised command name.
  std::istringstream fields(stat.substr(stat.rfind(')') + 2));
  std::string field;
  uint64_t utime = 0, stime = 0;
  for (int i = 0; i < 11; ++i) fields >> field;
  fields >> utime >> stime;
  return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

int64_t CountLinesWith(const std::string& text, std::string_view needle) {
  std::istringstream lines(text);
  int64_t count = 0;
  for (std::string line; std::getline(lines, line);) {
    if (line.find(needle) != std::string::npos) ++count;
  }
  return count;
}

uint64_t ProxyStat(const AgentProcess& agent, const char* name) {
  return agent.Get("/stats")["proxy"].at(name).get<uint64_t>();
}

// Waits until the agent holds no proxied connection (bounded), then a little more, so
// that what the workers free on their next turns is freed.
void WaitUntilIdle(const AgentProcess& agent) {
  PollUntil([&] { return ProxyStat(agent, "active") == 0; }, 60s, 100ms);
  std::this_thread::sleep_for(3s);
}

// Responses the agent's registry holds over all routes (updated once a second).
uint64_t RegistryResponses(const AgentProcess& agent) {
  uint64_t responses = 0;
  const Json routes = agent.Get("/routes");  // named: a loop over a temporary's member dangles
  for (const Json& route : routes["routes"]) {
    responses += route["responses"].get<uint64_t>();
  }
  return responses;
}

// ---------------- part 1: concurrency ----------------

struct Memory {
  uint64_t rss_kib = 0;
  uint64_t hwm_kib = 0;
  size_t fds = 0;
};

Memory MemoryOf(pid_t pid) {
  return {StatusKiB(pid, "VmRSS"), StatusKiB(pid, "VmHWM"), DescriptorCount(pid)};
}

struct ConcurrencyRound {
  ClientTotals client;
  uint64_t counted_requests = 0;
  uint64_t active_at_peak = 0;
  Memory before, all_open, peak, after;
};

void RunConcurrency(const Settings& settings) {
  fmt::print(
      "\n== concurrency: {} connections at once, {} requests each, client pod -> agent -> "
      "server pod; {} round(s) on one agent ==\n",
      settings.connections, settings.requests_per_connection, settings.concurrency_rounds);
  PodNetwork network;
  TestNode node(network, "endurance");
  const Pod& client = node.AddPod(
      {.namespace_name = "bench", .name = "client-1", .owner_name = "client", .meshed = true});
  const Pod& server = node.AddPod(
      {.namespace_name = "bench", .name = "server-1", .owner_name = "server", .meshed = false});
  TempDir scratch;
  Process nginx = StartNginx(server, client, scratch.path());
  std::unique_ptr<AgentProcess> agent = StartAgent(node, settings);
  const pid_t agent_pid = agent->process().pid();
  fmt::print("agent pid {}: open files limit {}, {} workers\n", agent_pid, FileLimit(agent_pid),
             settings.workers);
  // Two of the agent's descriptors per connection, on top of what it holds idle (and a
  // margin for the admin API and what a worker opens meanwhile): more connections than that
  // would test the limit, not the agent.
  WaitUntilIdle(*agent);
  constexpr uint64_t kDescriptorMargin = 64;
  const uint64_t agent_limit = SoftFileLimit(agent_pid);
  const uint64_t idle_fds = DescriptorCount(agent_pid);
  const uint64_t fitting = agent_limit > idle_fds + kDescriptorMargin
                               ? (agent_limit - idle_fds - kDescriptorMargin) / 2
                               : 0;
  uint64_t n = static_cast<uint64_t>(settings.connections);
  if (n > fitting && !settings.beyond_file_limit) {
    fmt::print(
        "NOTE: {} connections need {} of the agent's descriptors; its limit is {} and it holds "
        "{} idle: running {} connections, the most that fit\n",
        n, 2 * n + idle_fds, agent_limit, idle_fds, fitting);
    n = fitting;
  }
  std::fflush(stdout);

  std::vector<ConcurrencyRound> rounds;
  for (int round = 1; round <= settings.concurrency_rounds; ++round) {
    ConcurrencyRound r;
    WaitUntilIdle(*agent);
    r.before = MemoryOf(agent_pid);
    const uint64_t requests_before = ProxyStat(*agent, "requests");
    const auto started = Clock::now();
    Process load = client.Run({SelfBinary(), "client-concurrent", "--target",
                               Target(server, kServerPort), "--connections", std::to_string(n),
                               "--requests", std::to_string(settings.requests_per_connection),
                               "--seed", std::to_string(round),
                               // Past the limit some connections are never answered.
                               "--phase-timeout", settings.beyond_file_limit ? "20" : "600"});
    const double agent_cpu_before = ProcessCpuSeconds(agent_pid);
    WaitForLine(load, "all-open", 900s);
    r.all_open = MemoryOf(agent_pid);
    const double open_seconds = std::chrono::duration<double>(Clock::now() - started).count();
    if (settings.beyond_file_limit) {
      // The admin API needs a descriptor of its own to answer: it may not.
      const std::optional<Json> stats = agent->TryGet("/stats");
      const std::string log = agent->output();
      fmt::print(
          "opening took the agent {:.1f} s of CPU in {:.1f} s; {} descriptors; /stats {}; its "
          "log: {} lines naming a failed accept, {:.1f} MiB\n",
          ProcessCpuSeconds(agent_pid) - agent_cpu_before, open_seconds, r.all_open.fds,
          stats ? fmt::format("accept_errors {}", (*stats)["proxy"]["accept_errors"].dump())
                : std::string("did not answer"),
          CountLinesWith(log, ": cannot accept connections") + CountLinesWith(log, ": accept in "),
          static_cast<double>(log.size()) / (1 << 20));
      std::fflush(stdout);
    }
    load.Signal(SIGUSR1);
    WaitForLine(load, "exchanged", 900s);
    r.peak = MemoryOf(agent_pid);
    r.active_at_peak = ProxyStat(*agent, "active");
    load.Signal(SIGUSR1);
    r.client = FinishClient(load, 120s);
    WaitUntilIdle(*agent);
    r.after = MemoryOf(agent_pid);
    r.counted_requests = ProxyStat(*agent, "requests") - requests_before;
    fmt::print("round {}: {} connections open in {:.1f} s; {} requests answered\n", round,
               r.client.connections_opened, open_seconds, r.client.responses_ok);
    std::fflush(stdout);
    rounds.push_back(r);
  }

  fmt::print("\n{:>5} {:>11} {:>11} {:>9} {:>9} {:>10} {:>8} {:>9} {:>11} {:>9}\n", "round",
             "connections", "completed", "requests", "answered", "corrupted", "lost", "counted",
             "open at", "broken");
  fmt::print("{:>5} {:>11} {:>11} {:>9} {:>9} {:>10} {:>8} {:>9} {:>11} {:>9}\n", "", "", "",
             "sent", "right", "", "", "by agent", "peak", "");
  for (size_t i = 0; i < rounds.size(); ++i) {
    const ConcurrencyRound& r = rounds[i];
    fmt::print("{:>5} {:>11} {:>11} {:>9} {:>9} {:>10} {:>8} {:>9} {:>11} {:>9}\n", i + 1,
               r.client.connections_opened, r.client.connections_completed, r.client.requests_sent,
               r.client.responses_ok, r.client.responses_corrupted, r.client.requests_lost,
               r.counted_requests, r.active_at_peak,
               r.client.connections_broken + r.client.connect_failed);
  }
  fmt::print("\n{:>5} {:>10} {:>10} {:>10} {:>10} {:>10} {:>12} {:>9} {:>9} {:>9}\n", "round",
             "RSS before", "all open", "after reqs", "after", "peak (HWM)", "per conn.", "fds",
             "fds", "fds");
  fmt::print("{:>5} {:>10} {:>10} {:>10} {:>10} {:>10} {:>12} {:>9} {:>9} {:>9}\n", "", "MiB",
             "MiB", "MiB", "MiB", "MiB", "KiB", "before", "open", "after");
  for (size_t i = 0; i < rounds.size(); ++i) {
    const ConcurrencyRound& r = rounds[i];
    const uint64_t peak = std::max(r.all_open.rss_kib, r.peak.rss_kib);
    fmt::print(
        "{:>5} {:>10.1f} {:>10.1f} {:>10.1f} {:>10.1f} {:>10.1f} {:>12.2f} {:>9} {:>9} {:>9}\n",
        i + 1, MiB(r.before.rss_kib), MiB(r.all_open.rss_kib), MiB(r.peak.rss_kib),
        MiB(r.after.rss_kib), MiB(r.peak.hwm_kib),
        static_cast<double>(peak - std::min(peak, r.before.rss_kib)) / static_cast<double>(n),
        r.before.fds, r.peak.fds, r.after.fds);
  }
  fmt::print(
      "\nper conn. = (RSS with all open, after their requests - RSS before) / connections. "
      "'after' is once the agent holds no connection again.\n");

  for (size_t i = 0; i < rounds.size(); ++i) {
    const ConcurrencyRound& r = rounds[i];
    const std::string round = fmt::format("concurrency round {}", i + 1);
    const uint64_t expected = n * static_cast<uint64_t>(settings.requests_per_connection);
    Check(r.client.connections_completed == n,
          fmt::format("{}: {} of {} connections completed", round, r.client.connections_completed,
                      n));
    Check(r.client.responses_ok == expected && r.client.responses_corrupted == 0 &&
              r.client.requests_lost == 0,
          fmt::format("{}: {} of {} requests answered right, {} corrupted, {} lost", round,
                      r.client.responses_ok, expected, r.client.responses_corrupted,
                      r.client.requests_lost));
    Check(r.active_at_peak >= n,
          fmt::format("{}: the agent held {} connections at the peak, not {}", round,
                      r.active_at_peak, n));
    Check(r.counted_requests == r.client.requests_sent,
          fmt::format("{}: {} requests sent, {} counted by the agent", round,
                      r.client.requests_sent, r.counted_requests));
    Check(r.after.fds == rounds[0].before.fds,
          fmt::format("{}: the agent holds {} descriptors after, {} before the first round", round,
                      r.after.fds, rounds[0].before.fds));
  }
  const std::optional<ExitStatus> status = agent->Stop();
  Check(status && status->ok(), "concurrency: the agent did not stop cleanly");
}

// ---------------- part 2: soak ----------------

struct Sample {
  int seconds = 0;
  Memory agent;
  uint64_t aggregator_rss_kib = 0;
  uint64_t active = 0;
  uint64_t counted = 0;
  uint64_t sent = 0;
};

// The last "progress <seconds> <sent> <ok>" line of a churn client: requests sent so far.
uint64_t SentSoFar(const Process& client) {
  const std::string output = client.output();
  const size_t at = output.rfind("progress ");
  if (at == std::string::npos) return 0;
  std::istringstream fields(output.substr(at + 9));
  uint64_t seconds = 0, sent = 0;
  fields >> seconds >> sent;
  return sent;
}

void RunSoak(const Settings& settings) {
  fmt::print(
      "\n== soak: {} s at {:.0f} requests/s, {} requests per connection over {} connections "
      "at a time ({:.0f} connections opened and closed a second); warm-up {} s ==\n",
      settings.soak_seconds, settings.soak_rate, settings.soak_requests_per_connection,
      settings.soak_slots, settings.soak_rate / settings.soak_requests_per_connection,
      settings.warmup_seconds);
  PodNetwork network;
  TestNode node(network, "endurance");
  const Pod& client = node.AddPod(
      {.namespace_name = "bench", .name = "client-1", .owner_name = "client", .meshed = true});
  const Pod& server = node.AddPod(
      {.namespace_name = "bench", .name = "server-1", .owner_name = "server", .meshed = false});
  TempDir scratch;
  Process nginx = StartNginx(server, client, scratch.path());
  // The agent streams its deltas to an aggregator, as in a cluster: its memory is
  // sampled too.
  const std::string aggregator_address = fmt::format("127.0.0.1:{}", FreeLoopbackPort());
  Process aggregator({NODEMESH_AGGREGATOR_BINARY, "--listen", aggregator_address});
  if (!aggregator.WaitForOutput("serving agents and clients", 10s)) {
    throw std::runtime_error("the aggregator did not start:\n" + aggregator.output());
  }
  std::unique_ptr<AgentProcess> agent =
      StartAgent(node, settings, {"--aggregator", aggregator_address});
  const pid_t agent_pid = agent->process().pid();
  WaitUntilIdle(*agent);
  const Memory idle_before = MemoryOf(agent_pid);
  const uint64_t requests_before = ProxyStat(*agent, "requests");
  const uint64_t responses_before = RegistryResponses(*agent);
  const uint64_t accepted_before = ProxyStat(*agent, "accepted_outbound");

  Process load = client.Run(
      {SelfBinary(), "client-churn", "--target", Target(server, kServerPort), "--rate",
       fmt::format("{}", settings.soak_rate), "--requests-per-connection",
       std::to_string(settings.soak_requests_per_connection), "--slots",
       std::to_string(settings.soak_slots), "--seconds", std::to_string(settings.soak_seconds),
       "--progress-seconds", std::to_string(settings.sample_seconds)});
  const auto start = Clock::now();
  fmt::print("{:>6} {:>10} {:>9} {:>7} {:>7} {:>10} {:>10} {:>10}\n", "t s", "agent RSS",
             "agent HWM", "agent", "agent", "sent", "counted", "aggregator");
  fmt::print("{:>6} {:>10} {:>9} {:>7} {:>7} {:>10} {:>10} {:>10}\n", "", "MiB", "MiB", "fds",
             "conns", "", "by agent", "RSS MiB");
  std::fflush(stdout);
  std::vector<Sample> samples;
  const auto sample_at = [&](int seconds) {
    Sample s{.seconds = seconds,
             .agent = MemoryOf(agent_pid),
             .aggregator_rss_kib = StatusKiB(aggregator.pid(), "VmRSS"),
             .active = ProxyStat(*agent, "active"),
             .counted = ProxyStat(*agent, "requests") - requests_before,
             .sent = SentSoFar(load)};
    fmt::print("{:>6} {:>10.1f} {:>9.1f} {:>7} {:>7} {:>10} {:>10} {:>10.1f}\n", s.seconds,
               MiB(s.agent.rss_kib), MiB(s.agent.hwm_kib), s.agent.fds, s.active, s.sent, s.counted,
               MiB(s.aggregator_rss_kib));
    std::fflush(stdout);
    samples.push_back(s);
  };
  sample_at(0);
  for (int tick = 1; load.IsRunning(); ++tick) {
    const auto due = start + std::chrono::seconds(tick * settings.sample_seconds);
    while (Clock::now() < due && load.IsRunning()) std::this_thread::sleep_for(100ms);
    if (!load.IsRunning()) break;
    sample_at(tick * settings.sample_seconds);
    if (Clock::now() - start > std::chrono::seconds(settings.soak_seconds + 60)) {
      throw std::runtime_error("the soak client did not end:\n" + load.output());
    }
  }
  const ClientTotals totals = FinishClient(load, 30s);
  WaitUntilIdle(*agent);
  // The registry takes a worker's counts once a second.
  uint64_t responses_counted = 0;
  PollUntil(
      [&] {
        responses_counted = RegistryResponses(*agent) - responses_before;
        return responses_counted >= totals.responses_ok;
      },
      10s, 200ms);
  const uint64_t requests_counted = ProxyStat(*agent, "requests") - requests_before;
  const uint64_t proxied = ProxyStat(*agent, "accepted_outbound") - accepted_before;
  const Memory idle_after = MemoryOf(agent_pid);
  const uint64_t aggregator_after = StatusKiB(aggregator.pid(), "VmRSS");

  const Sample* warm = &samples.back();
  for (const Sample& s : samples) {
    if (s.seconds >= settings.warmup_seconds) {
      warm = &s;
      break;
    }
  }
  const Sample& last = samples.back();
  const double growth_hours = static_cast<double>(last.seconds - warm->seconds) / 3600.0;
  const auto growth = [&](uint64_t from, uint64_t to) {
    const double kib = static_cast<double>(to) - static_cast<double>(from);
    return growth_hours > 0
               ? fmt::format("{:+.0f} KiB ({:+.1f} MiB/h)", kib, kib / 1024.0 / growth_hours)
               : fmt::format("{:+.0f} KiB", kib);
  };
  fmt::print("\n{:<44} {:>14}\n", "traffic", "");
  fmt::print("{:<44} {:>14}\n", "requests sent (written whole)", totals.requests_sent);
  fmt::print("{:<44} {:>14}\n", "answered right", totals.responses_ok);
  fmt::print("{:<44} {:>14}\n", "answered wrong (status, body)", totals.responses_corrupted);
  fmt::print("{:<44} {:>14}\n", "lost (connection ended before the answer)", totals.requests_lost);
  fmt::print("{:<44} {:>14}\n", "skipped (due, no free connection)", totals.requests_behind);
  fmt::print("{:<44} {:>14}\n", "requests counted by the agent (/stats)", requests_counted);
  fmt::print("{:<44} {:>14}\n", "responses counted by the agent (/routes)", responses_counted);
  fmt::print("{:<44} {:>14}\n", "sent = counted",
             requests_counted == totals.requests_sent && responses_counted == totals.responses_ok
                 ? "yes"
                 : "NO");
  fmt::print("{:<44} {:>14}\n", "connections opened", totals.connections_opened);
  fmt::print("{:<44} {:>14}\n", "connections completed", totals.connections_completed);
  fmt::print("{:<44} {:>14}\n", "connections failed or broken",
             totals.connect_failed + totals.connections_broken);
  fmt::print("{:<44} {:>14}\n", "connections accepted by the agent", proxied);
  fmt::print("\n{:<34} {:>10} {:>10} {:>10} {:>10} {:>28}\n", "memory and descriptors",
             "idle before", fmt::format("t={} s", warm->seconds),
             fmt::format("t={} s", last.seconds), "idle after", "growth after warm-up");
  fmt::print("{:<34} {:>10.1f} {:>10.1f} {:>10.1f} {:>10.1f} {:>28}\n", "agent RSS MiB",
             MiB(idle_before.rss_kib), MiB(warm->agent.rss_kib), MiB(last.agent.rss_kib),
             MiB(idle_after.rss_kib), growth(warm->agent.rss_kib, last.agent.rss_kib));
  fmt::print("{:<34} {:>10} {:>10} {:>10} {:>10} {:>28}\n", "agent fds", idle_before.fds,
             warm->agent.fds, last.agent.fds, idle_after.fds,
             fmt::format("{:+}", static_cast<int64_t>(last.agent.fds) -
                                     static_cast<int64_t>(warm->agent.fds)));
  fmt::print("{:<34} {:>10.1f} {:>10.1f} {:>10.1f} {:>10.1f} {:>28}\n", "aggregator RSS MiB",
             MiB(samples.front().aggregator_rss_kib), MiB(warm->aggregator_rss_kib),
             MiB(last.aggregator_rss_kib), MiB(aggregator_after),
             growth(warm->aggregator_rss_kib, last.aggregator_rss_kib));
  fmt::print("(agent peak RSS over the soak, VmHWM: {:.1f} MiB)\n", MiB(idle_after.hwm_kib));
  for (const std::string& incident : totals.incidents) fmt::print("  client: {}\n", incident);
  if (totals.connections_broken + totals.responses_corrupted > 0) {
    fmt::print("agent /stats after: {}\n", agent->Get("/stats")["proxy"].dump());
  }

  Check(totals.responses_corrupted == 0 && totals.requests_lost == 0 &&
            totals.connect_failed == 0 && totals.connections_broken == 0,
        fmt::format("soak: {} corrupted, {} lost, {} connects failed, {} connections broken",
                    totals.responses_corrupted, totals.requests_lost, totals.connect_failed,
                    totals.connections_broken));
  Check(requests_counted == totals.requests_sent,
        fmt::format("soak: {} requests sent, {} counted by the agent", totals.requests_sent,
                    requests_counted));
  Check(responses_counted == totals.responses_ok,
        fmt::format("soak: {} answers received, {} responses in the agent's /routes",
                    totals.responses_ok, responses_counted));
  Check(idle_after.fds == idle_before.fds,
        fmt::format("soak: the agent holds {} descriptors idle after, {} before", idle_after.fds,
                    idle_before.fds));
  const std::optional<ExitStatus> status = agent->Stop();
  Check(status && status->ok(), "soak: the agent did not stop cleanly");
}

// ---------------- part 3: pod churn ----------------

// What enrolment makes, counted: each must be back where it was once the pod is released.
using Inventory = std::map<std::string, int64_t>;

// The network namespace's inode of a pod, as bpftool names a netns link's target.
uint64_t NetnsInode(const Pod& pod) {
  struct stat st {};
  if (::stat(pod.netns_path.c_str(), &st) != 0) return 0;
  return st.st_ino;
}

Inventory TakeInventory(const AgentProcess& agent, const Pod& pod, pid_t agent_pid) {
  Inventory counts;
  const Json stats = agent.Get("/stats");
  counts["agent listeners (/stats)"] = stats["proxy"]["listeners"].get<int64_t>();
  counts["identities (/stats)"] = stats["proxy"]["identities"].get<int64_t>();
  counts["agent connections (/stats)"] = stats["proxy"]["active"].get<int64_t>();
  const Json kernel = agent.Get("/kernel");
  for (const Json& map : kernel["maps"]) {
    if (map["name"] == "counters" || map["name"] == "excluded_ports") continue;  // fixed size
    counts[fmt::format("map {} entries", map["name"].get<std::string>())] =
        map["entries"].get<int64_t>();
  }
  counts["programs attached (/kernel)"] = static_cast<int64_t>(kernel["programs"].size());
  // The pod's view of the kernel, from outside the agent.
  const CommandResult listening = pod.RunCommand({"ss", "-Hltn"});
  counts["listeners in the pod's netns (ss)"] =
      CountLinesWith(listening.output, ":15001 ") + CountLinesWith(listening.output, ":15006 ");
  const CommandResult cgroup = RunCommand({"bpftool", "-j", "cgroup", "show", pod.cgroup_dir});
  const Json attached = Json::parse(cgroup.output, nullptr, false);
  // bpftool prints nothing at all, not an empty list, for a cgroup with nothing attached.
  const auto programs = [](const CommandResult& listed, const Json& json) -> int64_t {
    if (json.is_array()) return static_cast<int64_t>(json.size());
    return listed.exit_code == 0 && listed.output.find_first_not_of(" \n") == std::string::npos
               ? 0
               : -1;
  };
  counts["programs on the pod's cgroup (bpftool)"] = programs(cgroup, attached);
  const CommandResult effective =
      RunCommand({"bpftool", "-j", "cgroup", "show", pod.cgroup_dir, "effective"});
  const Json inherited = Json::parse(effective.output, nullptr, false);
  counts["programs effective on it (bpftool)"] = programs(effective, inherited);
  const CommandResult links = RunCommand({"bpftool", "-j", "link", "show"});
  const Json link_list = Json::parse(links.output, nullptr, false);
  int64_t netns_links = 0;
  const uint64_t inode = NetnsInode(pod);
  if (link_list.is_array()) {
    for (const Json& link : link_list) {
      if (link.value("type", "") == "netns" && link.value("netns_ino", uint64_t{0}) == inode) {
        ++netns_links;
      }
    }
  }
  counts["links on the pod's netns (bpftool)"] = netns_links;
  counts["agent fds"] = static_cast<int64_t>(DescriptorCount(agent_pid));
  return counts;
}

void RunChurn(const Settings& settings) {
  fmt::print(
      "\n== churn: {} enrol/release cycles of a pod dialling out at {:.0f} requests/s and "
      "dialled at {:.0f} requests/s ({} requests per connection) ==\n",
      settings.churn_cycles, settings.churn_rate, settings.churn_rate,
      settings.churn_requests_per_connection);
  PodNetwork network;
  TestNode node(network, "endurance");
  const Pod& churned = node.AddPod(
      {.namespace_name = "bench", .name = "churn-1", .owner_name = "churn", .meshed = false});
  const Pod& server = node.AddPod(
      {.namespace_name = "bench", .name = "server-1", .owner_name = "server", .meshed = false});
  const Pod& caller = node.AddPod(
      {.namespace_name = "bench", .name = "caller-1", .owner_name = "caller", .meshed = false});
  TempDir scratch;
  Process server_nginx = StartNginx(server, churned, scratch.path());
  Process churned_nginx = StartNginx(churned, caller, scratch.path());
  std::unique_ptr<AgentProcess> agent = StartAgent(node, settings);
  const pid_t agent_pid = agent->process().pid();
  WaitUntilIdle(*agent);
  const Inventory before = TakeInventory(*agent, churned, agent_pid);
  const uint64_t rss_before = StatusKiB(agent_pid, "VmRSS");
  // What one enrolment holds, to show that the counts below can see it.
  node.SetMeshed(churned, true);
  if (!agent->WaitUntilEnrolled(churned) || !agent->WaitForInboundPort(churned, kServerPort)) {
    throw std::runtime_error("the churned pod was not enrolled:\n" + agent->output());
  }
  const Inventory enrolled = TakeInventory(*agent, churned, agent_pid);
  node.SetMeshed(churned, false);
  if (!agent->WaitUntilEnrolled(churned, false)) {
    throw std::runtime_error("the churned pod was not released:\n" + agent->output());
  }

  const auto churn_client = [&](const Pod& from, const Pod& to, uint64_t seed) {
    return from.Run({SelfBinary(), "client-churn", "--target", Target(to, kServerPort), "--rate",
                     fmt::format("{}", settings.churn_rate), "--requests-per-connection",
                     std::to_string(settings.churn_requests_per_connection), "--slots",
                     std::to_string(settings.churn_slots), "--seconds", "86400", "--seed",
                     std::to_string(seed)});
  };
  Process outbound = churn_client(churned, server, 1);
  Process inbound = churn_client(caller, churned, 2);
  const Json stats_before = agent->Get("/stats");
  const auto start = Clock::now();
  int cycles = 0, cycles_with_proxied = 0;
  fmt::print("{:>6} {:>7} {:>10} {:>7} {:>10} {:>10} {:>10} {:>10}\n", "cycle", "t s", "agent RSS",
             "agent", "listeners", "identities", "proxied", "proxied");
  fmt::print("{:>6} {:>7} {:>10} {:>7} {:>10} {:>10} {:>10} {:>10}\n", "", "", "MiB", "fds", "", "",
             "outbound", "inbound");
  std::fflush(stdout);
  for (; cycles < settings.churn_cycles; ++cycles) {
    node.SetMeshed(churned, true);
    if (!agent->WaitUntilEnrolled(churned, true, 30s)) {
      Check(false, fmt::format("churn: cycle {}: the pod was not enrolled", cycles + 1));
      break;
    }
    // Released with live proxied connections: wait until the agent took a new one.
    const uint64_t accepted = ProxyStat(*agent, "accepted_outbound");
    if (PollUntil([&] { return ProxyStat(*agent, "accepted_outbound") > accepted; }, 2s, 5ms)) {
      ++cycles_with_proxied;
    }
    node.SetMeshed(churned, false);
    if (!agent->WaitUntilEnrolled(churned, false, 30s)) {
      Check(false, fmt::format("churn: cycle {}: the pod was not released", cycles + 1));
      break;
    }
    if ((cycles + 1) % 50 == 0 || cycles + 1 == settings.churn_cycles) {
      const Json stats = agent->Get("/stats");
      fmt::print("{:>6} {:>7.0f} {:>10.1f} {:>7} {:>10} {:>10} {:>10} {:>10}\n", cycles + 1,
                 std::chrono::duration<double>(Clock::now() - start).count(),
                 MiB(StatusKiB(agent_pid, "VmRSS")), DescriptorCount(agent_pid),
                 stats["proxy"]["listeners"].get<uint64_t>(),
                 stats["proxy"]["identities"].get<uint64_t>(),
                 stats["proxy"]["accepted_outbound"].get<uint64_t>() -
                     stats_before["proxy"]["accepted_outbound"].get<uint64_t>(),
                 stats["proxy"]["accepted_inbound"].get<uint64_t>() -
                     stats_before["proxy"]["accepted_inbound"].get<uint64_t>());
      std::fflush(stdout);
    }
  }
  outbound.Signal(SIGUSR1);
  inbound.Signal(SIGUSR1);
  const ClientTotals out_totals = FinishClient(outbound, 30s);
  const ClientTotals in_totals = FinishClient(inbound, 30s);
  WaitUntilIdle(*agent);
  const Json stats_after = agent->Get("/stats");
  const Inventory after = TakeInventory(*agent, churned, agent_pid);
  const uint64_t rss_after = StatusKiB(agent_pid, "VmRSS");
  const auto delta = [&](const char* group, const char* name) {
    return stats_after[group][name].get<uint64_t>() - stats_before[group][name].get<uint64_t>();
  };
  const uint64_t proxied_out = delta("proxy", "accepted_outbound");
  const uint64_t proxied_in = delta("proxy", "accepted_inbound");

  fmt::print("\n{} cycles in {:.0f} s; {} of them released with a new proxied connection live\n",
             cycles, std::chrono::duration<double>(Clock::now() - start).count(),
             cycles_with_proxied);
  fmt::print("\n{:<22} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}\n", "connections",
             "opened", "completed", "failed", "broken", "requests", "answered", "wrong", "lost");
  fmt::print("{:<22} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}\n", "", "", "",
             "connect", "", "sent", "right", "", "");
  for (const auto& [name, t] :
       {std::pair<const char*, const ClientTotals&>{"out of the churned pod", out_totals},
        std::pair<const char*, const ClientTotals&>{"into the churned pod", in_totals}}) {
    fmt::print("{:<22} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}\n", name,
               t.connections_opened, t.connections_completed, t.connect_failed,
               t.connections_broken, t.requests_sent, t.responses_ok, t.responses_corrupted,
               t.requests_lost);
  }
  fmt::print(
      "proxied by the agent: {} outbound, {} inbound; the rest went direct (fail-open, or "
      "while released): {} outbound, {} inbound\n",
      proxied_out, proxied_in,
      out_totals.connections_opened - std::min(out_totals.connections_opened, proxied_out),
      in_totals.connections_opened - std::min(in_totals.connections_opened, proxied_in));
  for (const ClientTotals* t : {&out_totals, &in_totals}) {
    for (const std::string& incident : t->incidents) fmt::print("  client: {}\n", incident);
  }
  fmt::print("origin_missing {}, kernel origin_save_failed {}, inbound_no_listener {}\n",
             delta("proxy", "origin_missing"), delta("kernel", "origin_save_failed"),
             delta("kernel", "inbound_no_listener"));

  fmt::print("\n{:<42} {:>10} {:>10} {:>10} {:>6}\n", "held by the agent and the kernel",
             "released", "enrolled", "after", "leak");
  fmt::print("{:<42} {:>10} {:>10} {:>10} {:>6}\n", "", "(before)", "(once)", "cycles", "");
  for (const auto& [name, value] : before) {
    const int64_t now = after.count(name) ? after.at(name) : -1;
    const bool leak = now != value;
    fmt::print("{:<42} {:>10} {:>10} {:>10} {:>6}\n", name, value,
               enrolled.count(name) ? enrolled.at(name) : -1, now, leak ? "LEAK" : "no");
    Check(!leak, fmt::format("churn: {}: {} before, {} after {} cycles", name, value, now, cycles));
  }
  fmt::print("{:<42} {:>10.1f} {:>10} {:>10.1f}\n", "agent RSS MiB", MiB(rss_before), "",
             MiB(rss_after));

  Check(cycles == settings.churn_cycles,
        fmt::format("churn: {} of {} cycles ran", cycles, settings.churn_cycles));
  for (const auto& [name, t] :
       {std::pair<const char*, const ClientTotals&>{"out of the churned pod", out_totals},
        std::pair<const char*, const ClientTotals&>{"into the churned pod", in_totals}}) {
    Check(t.connect_failed == 0 && t.connections_broken == 0 && t.responses_corrupted == 0 &&
              t.requests_lost == 0,
          fmt::format("churn: {}: {} connects failed, {} broken, {} answers wrong, {} lost", name,
                      t.connect_failed, t.connections_broken, t.responses_corrupted,
                      t.requests_lost));
  }
  const std::optional<ExitStatus> status = agent->Stop();
  Check(status && status->ok(), "churn: the agent did not stop cleanly");
}

int Run(const Settings& settings) {
  if (::geteuid() != 0) {
    fmt::print(stderr, "endurance_bench needs root (netns, cgroups, eBPF): run it with sudo\n");
    return 2;
  }
  for (const std::string& part : settings.parts) {
    if (part != "concurrency" && part != "soak" && part != "churn") {
      fmt::print(stderr, "endurance_bench: no part '{}': concurrency, soak or churn\n", part);
      return 2;
    }
  }
  // The client's descriptor, the agent's two, and room for the rest.
  RaiseFileLimit(4 * static_cast<uint64_t>(settings.connections) + 65536);
  rlimit limit{};
  getrlimit(RLIMIT_NOFILE, &limit);
  fmt::print("open files limit of the benchmark and its children: {}; {} CPUs\n", limit.rlim_max,
             std::thread::hardware_concurrency());
  std::fflush(stdout);
  if (Wanted(settings, "concurrency")) RunConcurrency(settings);
  if (Wanted(settings, "soak")) RunSoak(settings);
  if (Wanted(settings, "churn")) RunChurn(settings);
  if (!failures.empty()) {
    fmt::print("\n{} check(s) failed:\n", failures.size());
    for (const std::string& failure : failures) fmt::print("  {}\n", failure);
    return 1;
  }
  fmt::print("\nall checks passed\n");
  return 0;
}

}  // namespace
}  // namespace nodemesh::testing

int main(int argc, char** argv) {
  using nodemesh::testing::ChurnClientOptions;
  using nodemesh::testing::ConcurrentClientOptions;
  nodemesh::testing::Settings settings;
  CLI::App app{"Endurance of the nodemesh agent: many connections, a long soak, pod churn",
               "endurance_bench"};
  app.option_defaults()->always_capture_default();
  app.add_option("--only", settings.parts, "Parts to run: concurrency, soak, churn; default all")
      ->delimiter(',');
  app.add_option("--workers", settings.workers, "The agent's worker threads")
      ->check(CLI::Range(1, 16));
  app.add_option("--connections", settings.connections, "Concurrency: connections open at once")
      ->check(CLI::Range(1, 200000));
  app.add_option("--requests-per-connection", settings.requests_per_connection,
                 "Concurrency: requests on each connection")
      ->check(CLI::Range(1, 1000));
  app.add_option("--concurrency-rounds", settings.concurrency_rounds,
                 "Concurrency: rounds on the same agent")
      ->check(CLI::Range(1, 10));
  app.add_flag("--beyond-file-limit", settings.beyond_file_limit,
               "Concurrency: open every connection asked for even past the agent's descriptor "
               "limit, to see what it does there (its checks then fail)");
  app.add_option("--soak-seconds", settings.soak_seconds, "Soak: duration")
      ->check(CLI::Range(10, 86400));
  app.add_option("--warmup-seconds", settings.warmup_seconds,
                 "Soak: memory growth is measured from this sample on")
      ->check(CLI::Range(0, 86400));
  app.add_option("--sample-seconds", settings.sample_seconds, "Soak: sampling interval")
      ->check(CLI::Range(1, 600));
  app.add_option("--soak-rate", settings.soak_rate, "Soak: requests per second")
      ->check(CLI::Range(1.0, 100000.0));
  app.add_option("--soak-requests-per-connection", settings.soak_requests_per_connection,
                 "Soak: requests before a connection is closed and replaced")
      ->check(CLI::Range(1, 100000));
  app.add_option("--soak-slots", settings.soak_slots, "Soak: connections open at a time")
      ->check(CLI::Range(1, 10000));
  app.add_option("--churn-cycles", settings.churn_cycles, "Churn: enrol/release cycles")
      ->check(CLI::Range(1, 100000));
  app.add_option("--churn-rate", settings.churn_rate,
                 "Churn: requests per second each way, out of and into the churned pod")
      ->check(CLI::Range(1.0, 10000.0));
  app.add_option("--churn-slots", settings.churn_slots,
                 "Churn: connections open at a time each way")
      ->check(CLI::Range(1, 10000));
  app.add_option("--churn-requests-per-connection", settings.churn_requests_per_connection,
                 "Churn: requests before a connection is closed and replaced")
      ->check(CLI::Range(1, 100000));

  // The load itself, run by the benchmark inside a pod.
  ConcurrentClientOptions concurrent;
  CLI::App* concurrent_app =
      app.add_subcommand("client-concurrent", "(internal) many connections at once, in a pod");
  concurrent_app->add_option("--target", concurrent.target, "ip:port")->required();
  concurrent_app->add_option("--connections", concurrent.connections);
  concurrent_app->add_option("--requests", concurrent.requests);
  concurrent_app->add_option("--seed", concurrent.seed);
  concurrent_app->add_option("--phase-timeout", concurrent.phase_timeout_s)
      ->check(CLI::Range(1, 3600));
  ChurnClientOptions churn;
  CLI::App* churn_app = app.add_subcommand(
      "client-churn", "(internal) a steady rate with connection churn, in a pod");
  churn_app->add_option("--target", churn.target, "ip:port")->required();
  churn_app->add_option("--rate", churn.rate)->check(CLI::PositiveNumber);
  churn_app->add_option("--requests-per-connection", churn.requests_per_connection)
      ->check(CLI::Range(1, 100000));
  churn_app->add_option("--slots", churn.slots)->check(CLI::Range(1, 100000));
  churn_app->add_option("--seconds", churn.seconds)->check(CLI::Range(1, 86400));
  churn_app->add_option("--progress-seconds", churn.progress_seconds)->check(CLI::Range(1, 600));
  churn_app->add_option("--seed", churn.seed);
  CLI11_PARSE(app, argc, argv);
  try {
    if (*concurrent_app) return nodemesh::testing::RunConcurrentClient(concurrent);
    if (*churn_app) return nodemesh::testing::RunChurnClient(churn);
    return nodemesh::testing::Run(settings);
  } catch (const std::exception& error) {
    fmt::print(stderr, "endurance_bench: {}\n", error.what());
    return 1;
  }
}
