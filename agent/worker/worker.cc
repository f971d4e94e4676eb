#include "agent/worker/worker.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <future>

#include "agent/observer/observer_pair.h"
#include "common/base/log.h"

namespace nodemesh::agent {
namespace {

// epoll_event.data carries a pointer whose low bits say what it points to: a connection
// (and which of its sockets), a listener, or the wake-up eventfd.
enum Tag : uintptr_t { kClientTag = 0, kListenerTag = 1, kWakeTag = 2, kUpstreamTag = 3 };
constexpr uintptr_t kTagMask = 3;

// Events per epoll_wait, and how long it sleeps with nothing to do (timers are checked
// after every batch, so this bounds how late a timeout fires).
constexpr int kMaxEvents = 256;
constexpr int kMaxSleepMs = 250;
// Connections accepted from one listener per wakeup, so one busy listener cannot starve
// the others.
constexpr int kAcceptBatch = 64;
// A listener that could not accept for want of descriptors rests this long, and the agent
// says so at most this often per worker.
constexpr std::chrono::milliseconds kAcceptPause{100};
constexpr int64_t kAcceptLimitLogIntervalNs = 10'000'000'000;

// What epoll hands back for a listener.
void* ListenerTarget(const void* listener) {
  return reinterpret_cast<void*>(reinterpret_cast<uintptr_t>(listener) | kListenerTag);
}

int64_t MonotonicNs() {
  timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return int64_t{now.tv_sec} * 1'000'000'000 + now.tv_nsec;
}

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

// The application gets a reset, as from a server that refused it.
void TurnAway(int fd) {
  const linger hard{.l_onoff = 1, .l_linger = 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &hard, sizeof hard);
}

}  // namespace

// A relay and its observer, and the worker's bookkeeping of them: their deadlines, whether
// they wait for a buffer, and the passthrough entry an inbound leg leaves in the kernel.
// A call between two pods of the node dialled straight (one hop) has a second observer,
// the server pod's inbound view, beside the caller's outbound one.
struct Worker::Connection final : RelayHost {
  // The server pod's inbound view of a call dialled straight, and the pair both observers
  // hear the relay through.
  struct ServerView {
    ServerView(ObserverContext& context, std::shared_ptr<const PodView> pod, const Endpoint& caller,
               const Endpoint& destination, RelayObserver& outbound, int64_t now_ns)
        : observer(
              context, std::move(pod), Direction::kInbound, caller, destination,
              [caller] { return caller; }, now_ns),
          both(outbound, observer) {}
    ConnectionObserver observer;
    ObserverPair both;
  };

  // `server`: the pod a same-node call was dialled straight into; null otherwise.
  Connection(Worker& owner, const Listener& listener, UniqueFd client_fd, UpstreamLeg upstream,
             const Endpoint& client_address, const Endpoint& destination_address,
             const PodRuntime* server, int64_t now_ns)
      : worker(owner),
        direction(listener.direction),
        client(client_address),
        destination(destination_address),
        bound_as_caller(upstream.bound_as_caller),
        observer(
            owner.observers_, listener.pod->view(), listener.direction, client_address,
            destination_address, [this] { return SourceAddress(); }, now_ns),
        server_view(server ? std::make_unique<ServerView>(owner.observers_, server->view(),
                                                          *bound_as_caller, destination_address,
                                                          observer, now_ns)
                           : nullptr),
        relay(*this, server_view ? static_cast<RelayObserver&>(server_view->both) : observer,
              std::move(client_fd), std::move(upstream.socket), now_ns) {}

  // The client as the server sees it. Outbound, the application's own socket sits on the
  // pod's loopback (it was redirected there); the address the server sees is the upstream
  // socket's.
  Endpoint SourceAddress() const {
    if (direction == Direction::kInbound) return client;
    return Endpoint::Local(relay.fd(Side::kUpstream)).value_or(client);
  }

  std::unique_ptr<Buffer> AcquireBuffer() override {
    std::unique_ptr<Buffer> buffer = worker.buffers_.Acquire();
    if (!buffer && !waiting_for_buffer) {
      waiting_for_buffer = true;
      worker.waiting_for_buffers_.push_back(this);
    }
    return buffer;
  }
  void ReleaseBuffer(std::unique_ptr<Buffer> buffer) override {
    worker.buffers_.Release(std::move(buffer));
  }
  std::unique_ptr<Pipe> AcquirePipe() override { return worker.pipes_.Acquire(); }
  void ReleasePipe(std::unique_ptr<Pipe> pipe) override { worker.pipes_.Release(std::move(pipe)); }
  void OnEstablished(int64_t) override {
    worker.timeouts_.Active(timer, relay);
    // The NAT has chosen by now (at the SYN): the observer names the connection after it
    // before it counts anything.
    if (observer.dialled_service()) {
      observer.SetTranslatedDestination(
          worker.dialer_.TranslatedDestination(relay.fd(Side::kUpstream), destination));
    }
  }
  void OnActivity(int64_t) override { worker.timeouts_.Active(timer, relay); }
  void OnEnded(RelayEnd end, int64_t) override { worker.Ended(*this, end); }

  Worker& worker;
  uint64_t id = 0;  // set once the worker keeps it
  const Direction direction;
  const Endpoint client;
  const Endpoint destination;
  // Inbound, and a same-node call dialled straight: the upstream socket's transparent source
  // address (the caller's), whose passthrough entry goes when the connection does.
  const std::optional<Endpoint> bound_as_caller;
  RelayTimeouts::Entry timer;
  bool waiting_for_buffer = false;
  ConnectionObserver observer;                    // the view of the pod whose listener accepted it
  const std::unique_ptr<ServerView> server_view;  // null unless dialled straight
  Relay relay;
};

Worker::Worker(int index, const AgentOptions& options, Datapath& datapath, const Netns& home,
               const AgentTables& tables, const CapturedEndpoints& captured)
    : index_(index),
      options_(options),
      datapath_(datapath),
      captured_(captured),
      dialer_(options.marks, datapath, home),
      buffers_(options.proxy.buffer_size, options.proxy.max_buffers),
      pipes_(options.proxy.max_pipes),
      timeouts_(options.proxy.connect_timeout_ns, options.proxy.idle_timeout_ns,
                options.proxy.quiet_after_ns),
      observers_(tables, options.observer, index, options.workers) {}

Worker::~Worker() { Stop(); }

absl::Status Worker::Start() {
  epoll_.Reset(epoll_create1(EPOLL_CLOEXEC));
  if (!epoll_.valid()) return ErrnoStatus("epoll_create1", errno);
  wake_.Reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake_.valid()) return ErrnoStatus("eventfd", errno);
  Watch(wake_.get(), reinterpret_cast<void*>(kWakeTag), EPOLLIN);
  spare_.Reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (!spare_.valid()) return ErrnoStatus("opening /dev/null", errno);
  if (absl::Status conntrack = dialer_.OpenConntrack(); !conntrack.ok() && index_ == 0) {
    Log(LogLevel::kWarning,
        "{}: connections to Services will be named by their cluster IP, not the pod reached",
        conntrack.message());
  }
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
  Watch(listener->fd.get(), ListenerTarget(listener.get()), EPOLLIN);
  listeners_.push_back(std::move(listener));
}

void Worker::RemoveListeners(uint32_t pod_id) {
  // Connections still in a listener's accept queue were redirected before the release and
  // would be reset by its close, so they are accepted first; no more arrive, as the pod's
  // cgroup and sk_lookup link are gone by now. The listener itself is freed only after the
  // current event batch, which may still hold an event for it.
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
  epoll_event events[kMaxEvents];
  while (!stopping_) {
    const int n =
        epoll_wait(epoll_.get(), events, kMaxEvents,
                   listeners_paused_ ? static_cast<int>(kAcceptPause.count()) : kMaxSleepMs);
    const int64_t now = MonotonicNs();
    ResumeListeners(now);
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
          connection->relay.OnEvents(
              (data & kTagMask) == kUpstreamTag ? Side::kUpstream : Side::kClient, events[i].events,
              now);
          break;
        }
      }
    }
    ServeBufferWaiters(now);
    timeouts_.Expire(now);
    ended_.clear();
    retired_listeners_.clear();  // closing the fd takes it out of epoll
  }
  listeners_.clear();
  connections_.clear();
}

bool Worker::Accept(Listener& listener, int64_t now_ns) {
  for (int i = 0; i < kAcceptBatch; ++i) {
    if (!spare_.valid()) {
      spare_.Reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
      if (!spare_.valid()) {
        stats_.accept_errors.Add();
        PauseListener(listener, errno, now_ns);
        return false;
      }
    }
    UniqueFd client(accept4(listener.fd.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!client.valid()) {
      if (errno == EINTR || errno == ECONNABORTED) continue;  // others may still wait
      if (errno == EAGAIN) return false;
      stats_.accept_errors.Add();
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        PauseListener(listener, errno, now_ns);
      } else {
        Log(LogLevel::kWarning, "worker {}: accept in {}: {}", index_,
            listener.pod->view()->info.key(), std::strerror(errno));
      }
      return false;
    }
    StartConnection(listener, std::move(client), now_ns);
  }
  return true;
}

void Worker::PauseListener(Listener& listener, int error, int64_t now_ns) {
  WatchListener(listener, 0);  // no events: it stays registered, unwatched
  listener.paused_until_ns =
      now_ns + std::chrono::duration_cast<std::chrono::nanoseconds>(kAcceptPause).count();
  listeners_paused_ = true;

  ++accept_limit_unlogged_;
  if (accept_limit_logged_ns_ != 0 &&
      now_ns - accept_limit_logged_ns_ < kAcceptLimitLogIntervalNs) {
    return;
  }
  rlimit limit{};
  getrlimit(RLIMIT_NOFILE, &limit);
  Log(LogLevel::kWarning,
      "worker {}: cannot accept connections ({}; {} times since the last notice): they wait in "
      "their pods' accept queues until descriptors are free. The agent may hold {} descriptors, "
      "two per proxied connection: raise its limit (LimitNOFILE, or the container runtime's "
      "nofile ulimit)",
      index_, std::strerror(error), accept_limit_unlogged_, limit.rlim_cur);
  accept_limit_logged_ns_ = now_ns;
  accept_limit_unlogged_ = 0;
}

void Worker::WatchListener(Listener& listener, uint32_t events) {
  epoll_event event{};
  event.events = events;
  event.data.ptr = ListenerTarget(&listener);
  epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, listener.fd.get(), &event);
}

void Worker::ResumeListeners(int64_t now_ns) {
  if (!listeners_paused_) return;
  listeners_paused_ = false;
  for (const std::unique_ptr<Listener>& listener : listeners_) {
    if (listener->paused_until_ns == 0) continue;
    if (now_ns < listener->paused_until_ns) {
      listeners_paused_ = true;
      continue;
    }
    listener->paused_until_ns = 0;
    WatchListener(*listener, EPOLLIN);  // level-triggered: what waited wakes it at once
  }
}

void Worker::StartConnection(Listener& listener, UniqueFd client, int64_t now_ns) {
  stats_.accepted[static_cast<size_t>(listener.direction)].Add();
  // A connection turned away here never becomes a Connection, so it is counted closed
  // here too: "active" (accepted - closed) must not grow with every one of them.
  const auto turn_away = [this] { stats_.closed.Add(); };
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
      stats_.origin_missing.Add();
      Log(LogLevel::kWarning, "outbound {} from {}: original destination not found; closing",
          pod.view()->info.key(), app->ToString());
      TurnAway(client.get());
      return turn_away();
    }
    destination = original->endpoint;
  }

  // Inbound, the application sees the caller: the leg is bound to its address. A call to a
  // pod of this node captured inbound goes straight to the server application, bound to the
  // client pod's address, as the inbound listener would have dialled it.
  std::optional<IpAddress> caller;
  std::shared_ptr<const PodRuntime> server;
  if (listener.direction == Direction::kOutbound) {
    server = SameNodeServer(pod, destination, &caller);
  }
  const auto dial = [&] {
    if (server) return dialer_.DialInbound(server->netns(), Endpoint{*caller, 0}, destination);
    return listener.direction == Direction::kOutbound
               ? dialer_.DialOutbound(pod.netns(), destination)
               : dialer_.DialInbound(pod.netns(), *app, destination);
  };
  UpstreamLeg upstream = dial();
  if (!upstream.socket.valid() && (upstream.error == EMFILE || upstream.error == ENFILE) &&
      spare_.valid()) {
    spare_.Reset();  // what it is kept for: the client's socket took the last free one
    upstream = dial();
  }
  if (!upstream.socket.valid()) {
    // Refused at once (e.g. nothing listens on a local address): mirror it.
    (upstream.error == ECONNREFUSED ? stats_.upstream_refused : stats_.upstream_failed).Add();
    TurnAway(client.get());
    return turn_away();
  }
  if (server) stats_.same_node_direct.Add();
  const int one = 1;
  setsockopt(client.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

  auto owned = std::make_unique<Connection>(*this, listener, std::move(client), std::move(upstream),
                                            *app, destination, server.get(), now_ns);
  Connection* connection = owned.get();
  connection->id = ++last_connection_id_;
  connections_.emplace(connection, std::move(owned));
  timeouts_.Connecting(connection->timer, connection->relay);
  constexpr uint32_t kEvents = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  const auto tagged = [connection](Tag tag) {
    return reinterpret_cast<void*>(reinterpret_cast<uintptr_t>(connection) | tag);
  };
  Watch(connection->relay.fd(Side::kClient), tagged(kClientTag), kEvents);
  Watch(connection->relay.fd(Side::kUpstream), tagged(kUpstreamTag), kEvents);
}

std::shared_ptr<const PodRuntime> Worker::SameNodeServer(const PodRuntime& client,
                                                         const Endpoint& destination,
                                                         std::optional<IpAddress>* caller) const {
  if (!options_.proxy.same_node_direct) return nullptr;
  std::shared_ptr<const PodRuntime> server = captured_.Lookup(destination);
  if (!server) return nullptr;
  // The address the client pod's own upstream socket would have had: its address of the
  // destination's family. sk_lookup lets a caller of the pod's very address through (a pod
  // calling itself), and so does this.
  for (const IpAddress& ip : client.view()->info.ips) {
    if (ip.is_v4() != destination.ip.is_v4()) continue;
    if (ip == destination.ip) return nullptr;
    *caller = ip;
    return server;
  }
  return nullptr;
}

int Worker::Views(const Connection& connection) { return connection.server_view ? 2 : 1; }

void Worker::Summarize(const Connection& connection, int view, ConnectionSummary* summary) {
  const Relay& relay = connection.relay;
  const bool server_side = view == 1;
  const ConnectionObserver& observer =
      server_side ? connection.server_view->observer : connection.observer;
  summary->id = connection.id;
  summary->direction = server_side ? Direction::kInbound : connection.direction;
  summary->pod = observer.pod_key();
  summary->client = server_side ? *connection.bound_as_caller : connection.client;
  summary->destination = connection.destination;
  summary->protocol = observer.protocol_name();
  summary->same_node_direct = connection.server_view != nullptr;
  summary->bytes_to_upstream = relay.bytes_from(Side::kClient);
  summary->bytes_to_client = relay.bytes_from(Side::kUpstream);
  summary->requests = observer.requests();
}

std::vector<ConnectionSummary> Worker::ListConnections() const {
  std::vector<ConnectionSummary> out;
  const int64_t now = MonotonicNs();
  for (const auto& [raw, connection] : connections_) {
    const Relay& relay = connection->relay;
    for (int view = 0; view < Views(*connection); ++view) {
      ConnectionSummary& summary = out.emplace_back();
      Summarize(*connection, view, &summary);
      summary.state = relay.state() == Relay::State::kConnecting ? "connecting" : "proxying";
      summary.age_ns = now - relay.started_ns();
      summary.idle_ns = now - relay.last_activity_ns();
    }
  }
  return out;
}

std::vector<ConnectionSummary> Worker::RecentlyClosed() const {
  std::vector<ConnectionSummary> out;
  const int64_t now = MonotonicNs();
  const size_t kept = std::min(closed_count_, kRecentlyClosed);
  for (size_t i = 1; i <= kept; ++i) {
    const Closed& closed = recently_closed_[(closed_count_ - i) % kRecentlyClosed];
    out.push_back(closed.summary);
    out.back().idle_ns = now - closed.ended_ns;
  }
  return out;
}

void Worker::Ended(Connection& connection, RelayEnd end) {
  stats_.closed.Add();
  switch (end) {
    case RelayEnd::kClosed:
      break;
    case RelayEnd::kIdleTimeout:
      stats_.idle_timeouts.Add();
      break;
    case RelayEnd::kReset:
      stats_.resets.Add();
      break;
    case RelayEnd::kRefused:
      stats_.upstream_refused.Add();
      break;
    case RelayEnd::kConnectFailed:
      stats_.upstream_failed.Add();
      break;
    case RelayEnd::kConnectTimeout:
      stats_.connect_timeouts.Add();
      break;
  }
  if (connection.bound_as_caller) {
    dialer_.ForgetPassthrough(*connection.bound_as_caller, connection.destination);
  }
  const int64_t ended_ns = MonotonicNs();
  for (int view = 0; view < Views(connection); ++view) {
    Closed& closed = recently_closed_[closed_count_++ % kRecentlyClosed];
    Summarize(connection, view, &closed.summary);
    closed.ended_ns = ended_ns;
    closed.summary.state = RelayEndName(end);
    closed.summary.age_ns = ended_ns - connection.relay.started_ns();
  }
  timeouts_.Remove(connection.timer);
  if (connection.waiting_for_buffer) waiting_for_buffers_.remove(&connection);
  auto node = connections_.extract(&connection);
  ended_.push_back(std::move(node.mapped()));
}

void Worker::ServeBufferWaiters(int64_t now_ns) {
  while (!waiting_for_buffers_.empty() && buffers_.in_use() < options_.proxy.max_buffers) {
    Connection* connection = waiting_for_buffers_.front();
    waiting_for_buffers_.pop_front();
    connection->waiting_for_buffer = false;
    connection->relay.OnBufferAvailable(now_ns);
  }
}

}  // namespace nodemesh::agent
