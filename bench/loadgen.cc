// nodemesh-loadgen: HTTP/1.1 keep-alive load for the proxy benchmark, one thread, epoll.
//
//   nodemesh-loadgen --target 10.77.0.12:8080 --connections 4 --duration 10s --rate 2000
//   nodemesh-loadgen --target 10.77.0.12:8080 --connections 8 --duration 10s --saturate
//
// --rate R is an open loop: request k of connection i is due at start + (i + k * C) / R, so
// the R requests a second are spread evenly over the C connections. A connection carries
// one request at a time (no pipelining); a request due while its connection is still
// waiting goes as soon as the answer arrives, and its latency is counted from when it was
// due, not from when it was sent. A slow answer therefore shows in the latency of the
// requests queued behind it instead of silently lowering the rate (no coordinated
// omission). --saturate is a closed loop: each connection sends its next request as soon
// as the previous answer is complete; latency is counted from the send.
//
// The first --warmup (1 s) is not counted. Prints one JSON line: requests (answers
// counted), errors (failed connects, resets, malformed or >= 400 answers, and due requests
// not answered within 5 s of the end), duration, rps and latency percentiles in
// microseconds. Exits 0 when the run completed, whatever its errors; 2 on bad arguments.
#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "common/metrics/histogram.h"
#include "llhttp.h"

namespace {

int64_t Now() {
  timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return int64_t{now.tv_sec} * 1'000'000'000 + now.tv_nsec;
}

// Requests due before the end get this long to be answered before they count as errors.
constexpr int64_t kDrainNs = 5'000'000'000;
// A failed connect is retried after this long, so that a refusing target does not spin.
constexpr int64_t kReconnectDelayNs = 10'000'000;

struct Options {
  sockaddr_in target{};
  std::string target_text;
  std::string path = "/";
  int connections = 4;
  int64_t duration_ns = 10'000'000'000;
  int64_t warmup_ns = 1'000'000'000;
  double rate = 0;  // requests/s; 0 with --saturate
};

class LoadGenerator {
 public:
  explicit LoadGenerator(const Options& options) : options_(options) {
    request_ = fmt::format(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: nodemesh-loadgen\r\nAccept: */*\r\n\r\n",
        options.path, options.target_text);
    llhttp_settings_init(&settings_);
    settings_.on_message_complete = [](llhttp_t* parser) {
      auto* connection = static_cast<Connection*>(parser->data);
      // An interim 1xx answer is not the answer.
      if (parser->status_code >= 200) {
        connection->answered = true;
        connection->status = parser->status_code;
        // Only valid here: llhttp resets the message's flags once this returns.
        connection->keep_alive = llhttp_should_keep_alive(parser);
      }
      return 0;
    };
    connections_.resize(static_cast<size_t>(options.connections));
  }

  // Runs the whole load (warm-up, measured window, drain) and prints the JSON line.
  bool Run() {
    epoll_ = epoll_create1(EPOLL_CLOEXEC);
    if (epoll_ < 0) {
      fmt::print(stderr, "nodemesh-loadgen: epoll_create1: {}\n", std::strerror(errno));
      return false;
    }
    start_ = Now();
    window_start_ = start_ + options_.warmup_ns;
    window_end_ = window_start_ + options_.duration_ns;
    if (open_loop()) interval_ns_ = 1e9 * options_.connections / options_.rate;
    for (size_t i = 0; i < connections_.size(); ++i) {
      Connection& connection = connections_[i];
      connection.index = i;
      if (open_loop()) {
        connection.first_due = start_ + static_cast<double>(i) * 1e9 / options_.rate;
        connection.next_due = static_cast<int64_t>(connection.first_due);
      }
      Connect(connection, start_);
    }

    std::vector<epoll_event> events(connections_.size() + 1);
    for (;;) {
      const int64_t now = Now();
      if (Finished(now)) break;
      int64_t wake_at = open_loop() ? window_end_ + kDrainNs : window_end_;
      for (Connection& connection : connections_) {
        wake_at = std::min(wake_at, Service(connection, now));
      }
      const int64_t wait_ns = std::max<int64_t>(0, wake_at - Now());
      const timespec timeout{.tv_sec = wait_ns / 1'000'000'000, .tv_nsec = wait_ns % 1'000'000'000};
      const int n =
          epoll_pwait2(epoll_, events.data(), static_cast<int>(events.size()), &timeout, nullptr);
      if (n < 0 && errno != EINTR) {
        fmt::print(stderr, "nodemesh-loadgen: epoll_pwait2: {}\n", std::strerror(errno));
        return false;
      }
      for (int i = 0; i < n; ++i) {
        OnEvents(connections_[events[static_cast<size_t>(i)].data.u64], events[i].events);
      }
    }
    CountUnanswered();
    for (Connection& connection : connections_) Close(connection);
    close(epoll_);
    Report();
    return true;
  }

 private:
  enum class State : uint8_t { kClosed, kConnecting, kIdle, kBusy };

  struct Connection {
    size_t index = 0;
    int fd = -1;
    State state = State::kClosed;
    llhttp_t parser;
    int64_t retry_at = 0;  // kClosed: when to connect again
    size_t written = 0;    // kBusy: bytes of the request sent so far
    int64_t due = 0;       // kBusy: when the request in flight was due (or sent, closed loop)
    double first_due = 0;  // open loop: when its first request is due
    uint64_t sent = 0;     // open loop: requests sent so far
    int64_t next_due = 0;  // open loop: when the next request is due
    bool answered = false;
    bool keep_alive = false;  // of the answer
    int status = 0;
  };

  bool open_loop() const { return options_.rate > 0; }
  // Computed from the start each time, so that rounding does not drift the rate.
  int64_t DueTime(const Connection& connection, uint64_t k) const {
    return static_cast<int64_t>(connection.first_due + static_cast<double>(k) * interval_ns_);
  }
  bool Counted(int64_t due) const { return due >= window_start_ && due < window_end_; }

  bool Finished(int64_t now) const {
    if (!open_loop()) return now >= window_end_;
    if (now >= window_end_ + kDrainNs) return true;
    // Every request due in the window has been answered (or failed).
    return now >= window_end_ &&
           std::all_of(connections_.begin(), connections_.end(), [&](const Connection& c) {
             return c.next_due >= window_end_ && c.state != State::kBusy;
           });
  }

  // Sends what is due on `connection` and reconnects it if it is time; returns when it next
  // needs attention without an event.
  int64_t Service(Connection& connection, int64_t now) {
    constexpr int64_t kNever = INT64_MAX;
    if (connection.state == State::kClosed) {
      if (now >= window_end_ && !open_loop()) return kNever;
      if (open_loop() && connection.next_due >= window_end_) return kNever;
      if (now < connection.retry_at) return connection.retry_at;
      Connect(connection, now);
      return kNever;
    }
    if (connection.state != State::kIdle) return kNever;
    if (!open_loop()) {
      if (now < window_end_) Send(connection, now);
      return kNever;
    }
    if (connection.next_due >= window_end_) return kNever;
    if (connection.next_due > now) return connection.next_due;
    const int64_t due = connection.next_due;
    connection.next_due = DueTime(connection, ++connection.sent);
    Send(connection, due);
    return kNever;
  }

  void Connect(Connection& connection, int64_t now) {
    connection.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (connection.fd < 0) {
      Fail(connection, now, "socket", errno);
      return;
    }
    const int one = 1;
    setsockopt(connection.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    llhttp_init(&connection.parser, HTTP_RESPONSE, &settings_);
    connection.parser.data = &connection;
    connection.answered = false;
    epoll_event event{};
    event.events = EPOLLIN | EPOLLOUT;
    event.data.u64 = connection.index;
    epoll_ctl(epoll_, EPOLL_CTL_ADD, connection.fd, &event);
    if (connect(connection.fd, reinterpret_cast<const sockaddr*>(&options_.target),
                sizeof options_.target) != 0 &&
        errno != EINPROGRESS) {
      Fail(connection, now, "connect", errno);
      return;
    }
    connection.state = State::kConnecting;
  }

  // Level-triggered: EPOLLOUT is watched only while a connect or a partial send waits.
  void WatchOutput(Connection& connection, bool output) {
    epoll_event event{};
    event.events = EPOLLIN | (output ? EPOLLOUT : 0u);
    event.data.u64 = connection.index;
    epoll_ctl(epoll_, EPOLL_CTL_MOD, connection.fd, &event);
  }

  void Send(Connection& connection, int64_t due) {
    connection.state = State::kBusy;
    connection.due = due;
    connection.written = 0;
    connection.answered = false;
    Write(connection);
  }

  void Write(Connection& connection) {
    while (connection.written < request_.size()) {
      const ssize_t n = send(connection.fd, request_.data() + connection.written,
                             request_.size() - connection.written, MSG_NOSIGNAL);
      if (n > 0) {
        connection.written += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) {
        WatchOutput(connection, true);
        return;
      }
      Fail(connection, Now(), "send", errno);
      return;
    }
  }

  void OnEvents(Connection& connection, uint32_t events) {
    if (connection.state == State::kConnecting) {
      int error = 0;
      socklen_t length = sizeof error;
      getsockopt(connection.fd, SOL_SOCKET, SO_ERROR, &error, &length);
      if (error != 0 || (events & (EPOLLERR | EPOLLHUP))) {
        Fail(connection, Now(), "connect", error);
        return;
      }
      if (!(events & EPOLLOUT)) return;
      connection.state = State::kIdle;
      WatchOutput(connection, false);
      return;
    }
    if (connection.state == State::kBusy && connection.written < request_.size() &&
        (events & EPOLLOUT)) {
      Write(connection);
      if (connection.state != State::kBusy) return;
      if (connection.written == request_.size()) WatchOutput(connection, false);
    }
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) Read(connection);
  }

  void Read(Connection& connection) {
    char buffer[16384];
    const ssize_t n = recv(connection.fd, buffer, sizeof buffer, 0);
    const int64_t now = Now();
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) return;
      Fail(connection, now, "recv", errno);
      return;
    }
    if (n == 0) {
      // The server may end an idle keep-alive connection; mid-answer it is an error unless
      // the answer was delimited by the end of the connection.
      if (connection.state == State::kBusy) {
        if (llhttp_finish(&connection.parser) == HPE_OK && connection.answered) {
          Answered(connection, now);
        } else {
          Fail(connection, now, "connection closed before the answer");
          return;
        }
      }
      Close(connection);
      connection.retry_at = now;
      return;
    }
    if (connection.state != State::kBusy) {
      Fail(connection, now, "bytes without a request");
      return;
    }
    const llhttp_errno_t error = llhttp_execute(&connection.parser, buffer, static_cast<size_t>(n));
    if (error != HPE_OK) {
      Fail(connection, now, llhttp_errno_name(error));
      return;
    }
    if (connection.answered) {
      const bool keep_alive = connection.keep_alive;
      Answered(connection, now);
      if (!keep_alive) {
        Close(connection);
        connection.retry_at = now;
      }
    }
  }

  void Answered(Connection& connection, int64_t now) {
    connection.state = State::kIdle;
    connection.answered = false;
    if (connection.status >= 400) ++errors_;
    // Open loop: counted by when it was due; closed loop: by when it completed.
    const bool counted =
        open_loop() ? Counted(connection.due) : now >= window_start_ && now < window_end_;
    if (!counted) return;
    ++requests_;
    const int64_t latency = now - connection.due;
    latencies_.Record(latency);
    max_ns_ = std::max(max_ns_, latency);
  }

  // `error` is an errno value, or 0 when `what` says it all.
  void Fail(Connection& connection, int64_t now, const char* what, int error = 0) {
    ++errors_;
    if (first_error_.empty()) {
      first_error_ = error != 0 ? fmt::format("{}: {}", what, std::strerror(error)) : what;
    }
    Close(connection);
    connection.retry_at = now + kReconnectDelayNs;
  }

  void Close(Connection& connection) {
    if (connection.fd >= 0) close(connection.fd);  // also leaves the epoll set
    connection.fd = -1;
    connection.state = State::kClosed;
  }

  // Open loop, at the end of the drain: requests due in the window and never answered.
  void CountUnanswered() {
    if (!open_loop()) return;
    for (Connection& connection : connections_) {
      if (connection.state == State::kBusy && Counted(connection.due)) ++unanswered_;
      for (uint64_t k = connection.sent; DueTime(connection, k) < window_end_; ++k) {
        if (Counted(DueTime(connection, k))) ++unanswered_;
      }
    }
    errors_ += unanswered_;
  }

  void Report() const {
    const double seconds = static_cast<double>(options_.duration_ns) / 1e9;
    const auto us = [&](double q) { return static_cast<double>(latencies_.Quantile(q)) / 1000.0; };
    fmt::print(
        "{{\"mode\":\"{}\",\"target\":\"{}\",\"connections\":{},\"rate\":{},\"requests\":{},"
        "\"errors\":{},\"unanswered\":{},\"duration\":{:.3f},\"rps\":{:.1f},\"p50\":{:.1f},"
        "\"p90\":{:.1f},\"p99\":{:.1f},\"p999\":{:.1f},\"max\":{:.1f},\"first_error\":\"{}\"}}\n",
        open_loop() ? "rate" : "saturate", options_.target_text, options_.connections,
        options_.rate, requests_, errors_, unanswered_, seconds,
        static_cast<double>(requests_) / seconds, us(0.5), us(0.9), us(0.99), us(0.999),
        static_cast<double>(max_ns_) / 1000.0, first_error_);
  }

  const Options options_;
  std::string request_;
  llhttp_settings_t settings_;
  std::vector<Connection> connections_;
  int epoll_ = -1;
  int64_t start_ = 0;
  int64_t window_start_ = 0;
  int64_t window_end_ = 0;
  double interval_ns_ = 0;  // open loop: between two requests of one connection
  nodemesh::metrics::Histogram latencies_;
  int64_t max_ns_ = 0;
  uint64_t requests_ = 0;
  uint64_t errors_ = 0;
  uint64_t unanswered_ = 0;
  std::string first_error_;
};

// CLI11 check for durations such as "500ms" or "10s".
std::string CheckDuration(const std::string& text) {
  absl::Duration duration;
  if (!absl::ParseDuration(text, &duration) || duration < absl::ZeroDuration()) {
    return "expected a duration such as 500ms or 10s, not '" + text + "'";
  }
  return {};
}

int64_t Nanoseconds(const std::string& text) {
  absl::Duration duration;
  absl::ParseDuration(text, &duration);
  return absl::ToInt64Nanoseconds(duration);
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  std::string duration = "10s", warmup = "1s";
  bool saturate = false;
  CLI::App app{"HTTP/1.1 keep-alive load generator: open loop at a fixed rate, or saturation",
               "nodemesh-loadgen"};
  app.option_defaults()->always_capture_default();
  app.add_option("--target", options.target_text, "IPv4:PORT of the server")->required();
  app.add_option("--path", options.path, "Request path");
  app.add_option("--connections", options.connections, "Keep-alive connections")
      ->check(CLI::Range(1, 10000));
  app.add_option("--duration", duration, "Measured time, after the warm-up")->check(CheckDuration);
  app.add_option("--warmup", warmup, "Load before the measured time, not counted")
      ->check(CheckDuration);
  auto* rate = app.add_option("--rate", options.rate, "Requests per second, open loop")
                   ->check(CLI::PositiveNumber);
  auto* closed = app.add_flag("--saturate", saturate,
                              "Closed loop: each connection sends again as soon as answered");
  rate->excludes(closed);
  CLI11_PARSE(app, argc, argv);
  if (!saturate && options.rate <= 0) {
    fmt::print(stderr, "nodemesh-loadgen: give --rate R or --saturate\n");
    return 2;
  }
  options.duration_ns = Nanoseconds(duration);
  options.warmup_ns = Nanoseconds(warmup);
  if (options.duration_ns <= 0) {
    fmt::print(stderr, "nodemesh-loadgen: --duration must be positive\n");
    return 2;
  }
  const size_t colon = options.target_text.rfind(':');
  options.target.sin_family = AF_INET;
  int port = 0;
  if (colon == std::string::npos ||
      inet_pton(AF_INET, options.target_text.substr(0, colon).c_str(), &options.target.sin_addr) !=
          1 ||
      (port = std::atoi(options.target_text.c_str() + colon + 1)) <= 0 || port > 65535) {
    fmt::print(stderr, "nodemesh-loadgen: --target must be IPv4:PORT, not '{}'\n",
               options.target_text);
    return 2;
  }
  options.target.sin_port = htons(static_cast<uint16_t>(port));
  // Wake-ups are what the open loop's timing rests on: without this the kernel may defer
  // them by the default 50 us of timer slack, which would show up as latency.
  prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
  LoadGenerator generator(options);
  return generator.Run() ? 0 : 1;
}
