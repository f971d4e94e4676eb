// A shared-nothing worker (Envoy's model): one thread, one epoll loop, its own listener in
// every enrolled pod (SO_REUSEPORT spreads connections across workers), its own buffers and
// counters. A connection stays on the worker that accepted it. The control thread talks to
// a worker only through RunAndWait().
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "agent/kernel/datapath.h"
#include "agent/kernel/system.h"
#include "agent/metrics/route.h"
#include "agent/metrics/shard.h"
#include "agent/observer/tap.h"
#include "agent/pod.h"
#include "agent/proxy/buffer_pool.h"
#include "agent/proxy/connection.h"
#include "parsers/parser.h"

namespace nodemesh::agent {

struct WorkerOptions {
  size_t buffer_size = 64 * 1024;
  size_t max_buffers = 4096;  // per worker: 256 MiB at most in flight with 64 KiB buffers
  int64_t connect_timeout_ns = 10'000'000'000;
  int64_t idle_timeout_ns = 3600'000'000'000;
  uint32_t agent_mark = 0;
  uint32_t transparent_mark = 0;
  int worker_count = 1;  // of the agent: tap rates are shared among them
  parsers::ParserConfig parser_config;
  // false: every connection is proxied as opaque TCP, with no protocol detection or parsing
  // (and so no request metrics): the proxy's own cost, for comparison.
  bool l7 = true;
};

// Counters a worker alone writes and anyone may read.
struct WorkerStats {
  std::atomic<uint64_t> accepted[2] = {};  // by Direction
  std::atomic<uint64_t> closed = {};
  std::atomic<uint64_t> origin_missing = {};
  std::atomic<uint64_t> upstream_refused = {};
  std::atomic<uint64_t> upstream_failed = {};
  std::atomic<uint64_t> connect_timeouts = {};
  std::atomic<uint64_t> idle_timeouts = {};
  std::atomic<uint64_t> resets = {};
  std::atomic<uint64_t> bytes_to_upstream = {};
  std::atomic<uint64_t> bytes_to_client = {};
  std::atomic<uint64_t> protocols[4] = {};  // by parsers::Protocol
  std::atomic<uint64_t> parse_failures = {};
  // By parsers::Protocol and parsers::ParseError.
  std::atomic<uint64_t> parse_errors[4][8] = {};
  std::atomic<uint64_t> protocol_switches = {};
  std::atomic<uint64_t> requests = {};
  std::atomic<uint64_t> stream_ends = {};
  std::atomic<uint64_t> accept_errors = {};

  void Add(std::atomic<uint64_t>& counter, uint64_t n = 1) {
    counter.store(counter.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
};

// What workers share for naming traffic: interned identities and routes, and the
// address-to-identity directory. All owned by the agent.
struct MetricsContext {
  metrics::IdentityTable& identities;
  metrics::RouteTable& routes;
  const PeerDirectory& directory;
  const TapSubscriptions& tap;
  std::string node;
};

// A live connection, for the admin API.
struct ConnectionSummary {
  Direction direction;
  std::string pod;
  Endpoint client;
  Endpoint destination;
  std::string protocol;  // "detecting", "http1", ...
  std::string state;     // "connecting", "proxying"
  int64_t age_ns = 0;
  uint64_t bytes_to_upstream = 0;
  uint64_t bytes_to_client = 0;
};

class Worker {
 public:
  Worker(int index, const WorkerOptions& options, Datapath& datapath, MetricsContext metrics);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  absl::Status Start();
  void Stop();
  // Runs `task` on the worker's thread and returns when it has run.
  void RunAndWait(std::function<void()> task);

  // On the worker thread.
  void AddListener(UniqueFd fd, std::shared_ptr<const PodRuntime> pod, Direction direction);
  void RemoveListeners(uint32_t pod_id);
  size_t connection_count() const { return connections_.size(); }
  std::vector<ConnectionSummary> ListConnections() const;
  // Hands over the metrics counted since the last call (see metrics::Shard::Collect).
  void CollectMetrics(metrics::Delta* out) { shard_.Collect(out); }

  // For connections, on the worker thread.
  Datapath& datapath() { return datapath_; }
  const MetricsContext& metrics() const { return metrics_; }
  metrics::Shard& shard() { return shard_; }
  const TapSubscriptions& tap_subscriptions() const { return metrics_.tap; }
  TapRateLimiter& tap_limiter() { return tap_limiter_; }
  TapOutbox& tap_outbox() { return tap_outbox_; }
  const std::string& node() const { return metrics_.node; }
  uint64_t NextConnectionSequence() { return ++connection_sequence_; }
  // The route id of `request` to `destination`; no allocation once the route is known.
  metrics::RouteTable::Id RouteOf(const parsers::RequestStart& request,
                                  metrics::IdentityTable::Id destination);
  const WorkerOptions& options() const { return options_; }
  BufferPool& buffers() { return buffers_; }
  WorkerStats& stats() { return stats_; }
  void WaitForBuffer(Connection* connection);
  void Touch(Connection* connection, int64_t now_ns);
  void ConnectionEstablished(Connection* connection, int64_t now_ns);
  void ConnectionClosed(Connection* connection);

  const WorkerStats& stats() const { return stats_; }
  int index() const { return index_; }

 private:
  struct Listener {
    UniqueFd fd;
    std::shared_ptr<const PodRuntime> pod;
    Direction direction;
  };

  void Run();
  void DrainTasks();
  // Accepts what is waiting, up to a bound; true if it stopped at the bound.
  bool Accept(Listener& listener, int64_t now_ns);
  void StartConnection(Listener& listener, UniqueFd client, int64_t now_ns);
  // A non-blocking socket in the pod's netns with a connect to `destination` in flight;
  // inbound, bound to the caller's address so that the application sees the caller.
  UniqueFd ConnectUpstream(const PodRuntime& pod, Direction direction, const Endpoint& caller,
                           const Endpoint& destination, std::optional<Endpoint>* bound_as_caller,
                           int* error);
  UniqueFd MakeUpstreamSocket(const PodRuntime& pod, int family);
  void ExpireTimers(int64_t now_ns);
  void ReturnBuffers(int64_t now_ns);
  void Watch(int fd, void* target, uint32_t events);

  const int index_;
  const WorkerOptions options_;
  Datapath& datapath_;
  BufferPool buffers_;
  WorkerStats stats_;
  MetricsContext metrics_;
  metrics::Shard shard_;
  metrics::RouteCache route_cache_;
  std::string route_scratch_;
  TapRateLimiter tap_limiter_;
  TapOutbox tap_outbox_;
  uint64_t connection_sequence_ = 0;
  UniqueFd epoll_;
  UniqueFd wake_;  // eventfd: tasks are queued
  std::thread thread_;
  std::atomic<bool> stopping_{false};

  std::mutex tasks_mutex_;
  std::vector<std::function<void()>> tasks_;

  std::list<std::unique_ptr<Listener>> listeners_;
  // Removed listeners, freed after the event batch, which may still hold events for them.
  std::vector<std::unique_ptr<Listener>> retired_listeners_;
  absl::flat_hash_map<Connection*, std::unique_ptr<Connection>> connections_;
  std::vector<std::unique_ptr<Connection>> closed_;  // freed after the event batch
  // Timeout lists, oldest first: connects in flight, and established connections by last
  // activity. Every entry in a list has the same timeout, so order is deadline order.
  std::list<Connection*> connecting_;
  std::list<Connection*> established_;
  std::list<Connection*> waiting_for_buffers_;
};

}  // namespace nodemesh::agent
