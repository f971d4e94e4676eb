#include "agent/proxy/worker.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>

#include <cerrno>
#include <cstring>
#include <future>

#include "common/base/log.h"

namespace nodemesh::agent {
namespace {

// epoll_event.data carries a pointer whose low bits say what it points to: a connection
// (and which of its sockets), a listener, or the wake-up eventfd.
enum Tag : uintptr_t { kClientTag = 0, kListenerTag = 1, kWakeTag = 2, kUpstreamTag = 3 };
constexpr uintptr_t kTagMask = 3;

int64_t MonotonicNs() {
  timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return int64_t{now.tv_sec} * 1'000'000'000 + now.tv_nsec;
}

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

}  // namespace

Worker::Worker(int index, const WorkerOptions& options, Datapath& datapath, MetricsContext metrics)
    : index_(index),
      options_(options),
      datapath_(datapath),
      buffers_(options.buffer_size, options.max_buffers),
      metrics_(metrics),
      route_cache_(metrics.routes, metrics.identities) {}

metrics::RouteTable::Id Worker::RouteOf(const parsers::RequestStart& request,
                                        metrics::IdentityTable::Id destination) {
  metrics::TemplateRoute(request, &route_scratch_);
  return route_cache_.Lookup(destination, route_scratch_);
}

Worker::~Worker() { Stop(); }

absl::Status Worker::Start() {
  epoll_.Reset(epoll_create1(EPOLL_CLOEXEC));
  if (!epoll_.valid()) return ErrnoStatus("epoll_create1", errno);
  wake_.Reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake_.valid()) return ErrnoStatus("eventfd", errno);
  Watch(wake_.get(), reinterpret_cast<void*>(kWakeTag), EPOLLIN);
  thread_ = std::thread([this] { Run(); });
  return absl::OkStatus();
}

void Worker::Stop() {
  if (!thread_.joinable()) return;
  stopping_ = true;
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t written = ::write(wake_.get(), &one, sizeof one);
  thread_.join();
}

void Worker::RunAndWait(std::function<void()> task) {
  std::promise<void> done;
  {
    std::lock_guard lock(tasks_mutex_);
    tasks_.push_back([&] {
      task();
      done.set_value();
    });
  }
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t written = ::write(wake_.get(), &one, sizeof one);
  done.get_future().wait();
}

void Worker::DrainTasks() {
  uint64_t count;
  [[maybe_unused]] ssize_t n = ::read(wake_.get(), &count, sizeof count);
  std::vector<std::function<void()>> tasks;
  {
    std::lock_guard lock(tasks_mutex_);
    tasks.swap(tasks_);
  }
  for (auto& task : tasks) task();
}

void Worker::Watch(int fd, void* target, uint32_t events) {
  epoll_event event{};
  event.events = events;
  event.data.ptr = target;
  if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &event) != 0) {
    Log(LogLevel::kError, "worker {}: epoll_ctl: {}", index_, std::strerror(errno));
  }
}

void Worker::AddListener(UniqueFd fd, std::shared_ptr<const PodRuntime> pod, Direction direction) {
  auto listener = std::make_unique<Listener>(Listener{std::move(fd), std::move(pod), direction});
  Watch(listener->fd.get(),
        reinterpret_cast<void*>(reinterpret_cast<uintptr_t>(listener.get()) | kListenerTag),
        EPOLLIN);
  listeners_.push_back(std::move(listener));
}

void Worker::RemoveListeners(uint32_t pod_id) {
  // Accepted connections live on. Connections still in a listener's accept queue were
  // redirected before the release and would be reset by its close, so they are accepted
  // first; no more arrive, as the pod's cgroup and sk_lookup link are gone by now. The
  // listener itself is freed only after the current event batch, which may still hold an
  // event for it (freeing it here was a use-after-free in Run).
  const int64_t now = MonotonicNs();
  for (auto it = listeners_.begin(); it != listeners_.end();) {
    if ((*it)->pod->id() != pod_id) {
      ++it;
      continue;
    }
    while (Accept(**it, now)) {
    }
    retired_listeners_.push_back(std::move(*it));
    it = listeners_.erase(it);
  }
}

void Worker::Run() {
  constexpr int kMaxEvents = 256;
  epoll_event events[kMaxEvents];
  while (!stopping_) {
    const int n = epoll_wait(epoll_.get(), events, kMaxEvents, 250);
    const int64_t now = MonotonicNs();
    for (int i = 0; i < n; ++i) {
      const auto data = reinterpret_cast<uintptr_t>(events[i].data.ptr);
      switch (data & kTagMask) {
        case kWakeTag:
          DrainTasks();
          break;
        case kListenerTag:
          Accept(*reinterpret_cast<Listener*>(data & ~kTagMask), now);
          break;
        case kClientTag:
        case kUpstreamTag: {
          auto* connection = reinterpret_cast<Connection*>(data & ~kTagMask);
          connection->OnEvents((data & kTagMask) == kUpstreamTag ? Connection::Socket::kUpstream
                                                                 : Connection::Socket::kClient,
                               events[i].events, now);
          break;
        }
      }
    }
    ReturnBuffers(now);
    ExpireTimers(now);
    closed_.clear();
    retired_listeners_.clear();  // closing the fd takes it out of epoll
  }
  listeners_.clear();
  connections_.clear();
}

bool Worker::Accept(Listener& listener, int64_t now_ns) {
  // Bounded per wakeup, so one busy listener cannot starve the others.
  for (int i = 0; i < 64; ++i) {
    UniqueFd client(accept4(listener.fd.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!client.valid()) {
      if (errno == EINTR || errno == ECONNABORTED) continue;  // others may still wait
      if (errno != EAGAIN) {
        stats_.Add(stats_.accept_errors);
        Log(LogLevel::kWarning, "worker {}: accept in {}: {}", index_,
            listener.pod->view()->info.key(), std::strerror(errno));
      }
      return false;
    }
    StartConnection(listener, std::move(client), now_ns);
  }
  return true;
}

void Worker::StartConnection(Listener& listener, UniqueFd client, int64_t now_ns) {
  stats_.Add(stats_.accepted[static_cast<int>(listener.direction)]);
  // A connection turned away here never becomes a Connection, so it is counted closed
  // here too: "active" (accepted - closed) must not grow with every one of them.
  const auto turn_away = [this] { stats_.Add(stats_.closed); };
  const PodRuntime& pod = *listener.pod;
  const std::optional<Endpoint> app = Endpoint::Peer(client.get());
  const std::optional<Endpoint> local = Endpoint::Local(client.get());
  if (!app || !local) return turn_away();  // already gone

  // Outbound: the original destination is in the map the kernel side filled. Inbound: the
  // SYN was steered without rewriting, so the destination is the accepted socket's address.
  Endpoint destination = *local;
  if (listener.direction == Direction::kOutbound) {
    uint64_t cookie = 0;
    socklen_t length = sizeof cookie;
    getsockopt(client.get(), SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &length);
    const std::optional<OriginalDestination> original =
        datapath_.TakeOriginalDestination(cookie, *app, *local);
    if (!original) {
      // Never guess where the application meant to go.
      stats_.Add(stats_.origin_missing);
      Log(LogLevel::kWarning, "outbound {} from {}: original destination not found; closing",
          pod.view()->info.key(), app->ToString());
      const linger hard{.l_onoff = 1, .l_linger = 0};
      setsockopt(client.get(), SOL_SOCKET, SO_LINGER, &hard, sizeof hard);
      return turn_away();
    }
    destination = original->endpoint;
  }

  int error = 0;
  std::optional<Endpoint> bound_as_caller;
  UniqueFd upstream =
      ConnectUpstream(pod, listener.direction, *app, destination, &bound_as_caller, &error);
  if (!upstream.valid()) {
    // Refused at once (e.g. nothing listens on a local address): mirror it.
    stats_.Add(error == ECONNREFUSED ? stats_.upstream_refused : stats_.upstream_failed);
    const linger hard{.l_onoff = 1, .l_linger = 0};
    setsockopt(client.get(), SOL_SOCKET, SO_LINGER, &hard, sizeof hard);
    return turn_away();
  }
  const int one = 1;
  setsockopt(client.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

  auto connection =
      std::make_unique<Connection>(*this, listener.pod, listener.direction, std::move(client),
                                   std::move(upstream), destination, bound_as_caller, now_ns);
  Connection* raw = connection.get();
  connections_.emplace(raw, std::move(connection));
  connecting_.push_back(raw);
  raw->timer_position = std::prev(connecting_.end());
  constexpr uint32_t kEvents = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  Watch(raw->client_fd(), reinterpret_cast<void*>(reinterpret_cast<uintptr_t>(raw) | kClientTag),
        kEvents);
  Watch(raw->upstream_fd(),
        reinterpret_cast<void*>(reinterpret_cast<uintptr_t>(raw) | kUpstreamTag), kEvents);
}

UniqueFd Worker::MakeUpstreamSocket(const PodRuntime& pod, int family) {
  // Made inside the pod's netns: outbound, the server sees the pod's own address and the
  // pod's routing applies; inbound, the application is reached locally.
  static thread_local absl::StatusOr<Netns> home = Netns::Current();
  if (!home.ok()) {
    errno = EBADF;
    return UniqueFd();
  }
  ScopedNetns in_pod(pod.netns(), *home);
  if (!in_pod.status().ok()) {
    Log(LogLevel::kError, "{}", in_pod.status().message());
    errno = EBADF;
    return UniqueFd();
  }
  return UniqueFd(socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
}

UniqueFd Worker::ConnectUpstream(const PodRuntime& pod, Direction direction, const Endpoint& caller,
                                 const Endpoint& destination,
                                 std::optional<Endpoint>* bound_as_caller, int* error) {
  const int one = 1;
  UniqueFd upstream;
  // Inbound, the socket takes the caller's address with a port of its own; should the
  // kernel pick the caller's very port, the application's SYN would match the accepted
  // connection's 4-tuple from the other side, so that socket is dropped for another.
  for (int attempt = 0; attempt < 3; ++attempt) {
    upstream = MakeUpstreamSocket(pod, destination.family());
    if (!upstream.valid()) break;
    if (direction == Direction::kOutbound) {
      setsockopt(upstream.get(), SOL_SOCKET, SO_MARK, &options_.agent_mark,
                 sizeof options_.agent_mark);
      break;
    }
    setsockopt(upstream.get(), SOL_SOCKET, SO_MARK, &options_.transparent_mark,
               sizeof options_.transparent_mark);
    if (caller.ip.is_v4()) {
      setsockopt(upstream.get(), SOL_IP, IP_TRANSPARENT, &one, sizeof one);
    } else {
      setsockopt(upstream.get(), SOL_IPV6, IPV6_TRANSPARENT, &one, sizeof one);
    }
    sockaddr_storage address;
    const socklen_t length = Endpoint{caller.ip, 0}.ToSockaddr(&address);
    if (bind(upstream.get(), reinterpret_cast<sockaddr*>(&address), length) != 0) {
      upstream.Reset();
      break;
    }
    *bound_as_caller = Endpoint::Local(upstream.get());
    if (*bound_as_caller && (*bound_as_caller)->port != caller.port) break;
    bound_as_caller->reset();
    upstream.Reset();
  }
  if (!upstream.valid()) {
    *error = errno;
    return upstream;
  }
  if (*bound_as_caller) {
    if (absl::Status status = datapath_.AllowPassthrough(**bound_as_caller, destination);
        !status.ok()) {
      Log(LogLevel::kWarning, "inbound {}: {}", destination.ToString(), status.message());
      *error = ENOSPC;
      return UniqueFd();
    }
  }
  setsockopt(upstream.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  sockaddr_storage address;
  const socklen_t address_length = destination.ToSockaddr(&address);
  if (connect(upstream.get(), reinterpret_cast<sockaddr*>(&address), address_length) != 0 &&
      errno != EINPROGRESS) {
    *error = errno;
    if (*bound_as_caller) datapath_.ForgetPassthrough(**bound_as_caller, destination);
    upstream.Reset();
  }
  return upstream;
}

std::vector<ConnectionSummary> Worker::ListConnections() const {
  std::vector<ConnectionSummary> out;
  const int64_t now = MonotonicNs();
  for (const auto& [raw, connection] : connections_) out.push_back(connection->Summary(now));
  return out;
}

void Worker::ConnectionEstablished(Connection* connection, int64_t) {
  connecting_.erase(connection->timer_position);
  connection->connecting = false;
  established_.push_back(connection);
  connection->timer_position = std::prev(established_.end());
}

void Worker::Touch(Connection* connection, int64_t) {
  established_.splice(established_.end(), established_, connection->timer_position);
}

void Worker::WaitForBuffer(Connection* connection) {
  if (connection->waiting_for_buffer) return;
  connection->waiting_for_buffer = true;
  waiting_for_buffers_.push_back(connection);
}

void Worker::ConnectionClosed(Connection* connection) {
  stats_.Add(stats_.closed);
  (connection->connecting ? connecting_ : established_).erase(connection->timer_position);
  if (connection->waiting_for_buffer) waiting_for_buffers_.remove(connection);
  auto node = connections_.extract(connection);
  closed_.push_back(std::move(node.mapped()));
}

void Worker::ReturnBuffers(int64_t now_ns) {
  while (!waiting_for_buffers_.empty() && buffers_.in_use() < options_.max_buffers) {
    Connection* connection = waiting_for_buffers_.front();
    waiting_for_buffers_.pop_front();
    connection->waiting_for_buffer = false;
    connection->OnBufferAvailable(now_ns);
  }
}

void Worker::ExpireTimers(int64_t now_ns) {
  while (!connecting_.empty() &&
         now_ns - connecting_.front()->started_ns() > options_.connect_timeout_ns) {
    connecting_.front()->ConnectTimedOut(now_ns);
  }
  while (!established_.empty() &&
         now_ns - established_.front()->last_activity_ns() > options_.idle_timeout_ns) {
    established_.front()->IdleTimedOut(now_ns);
  }
}

}  // namespace nodemesh::agent
