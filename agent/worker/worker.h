// A shared-nothing worker (Envoy's model): one thread, one epoll loop, its own listener in
// every enrolled pod (SO_REUSEPORT spreads connections across workers), its own buffers,
// deadlines, counters and metric shard. A connection is a relay (proxy/relay.h: the bytes)
// plus an observer (observer/observer.h: what they say), joined by the worker, and stays on
// the worker that accepted it; its upstream leg is dialled by the worker's UpstreamDialer
// (kernel/upstream_dialer.h). Other threads talk to a worker only through RunAndWait(); see
// agent.h for the whole thread map.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "agent/counter.h"
#include "agent/kernel/datapath.h"
#include "agent/kernel/system.h"
#include "agent/kernel/upstream_dialer.h"
#include "agent/observer/observer.h"
#include "agent/options.h"
#include "agent/pod_runtime.h"
#include "agent/proxy/buffer_pool.h"
#include "agent/proxy/pipe_pool.h"
#include "agent/proxy/relay.h"
#include "agent/proxy/relay_timeouts.h"

namespace nodemesh::agent {

// What happened to the connections of one worker. Its thread writes; anyone reads.
struct ProxyStats {
  Counter accepted[metrics::kDirectionCount];
  Counter closed;  // including those turned away before they could be proxied
  Counter origin_missing;
  Counter upstream_refused;
  Counter upstream_failed;
  Counter connect_timeouts;
  Counter idle_timeouts;
  Counter resets;
  Counter accept_errors;
  // Outbound connections to a pod of this node dialled straight to its application (one
  // hop), not through the agent's inbound listener in it; among accepted[kOutbound].
  Counter same_node_direct;
};

// A live connection, for the admin API. A same-node call dialled straight has two, with one
// id: the caller pod's outbound view and the server pod's inbound one.
struct ConnectionSummary {
  uint64_t id = 0;  // unique within its worker, from 1
  Direction direction;
  std::string pod;
  Endpoint client;
  Endpoint destination;
  std::string protocol;  // "detecting", "http1", ...
  std::string state;     // "connecting", "proxying"; a closed one's end: "closed", "reset", ...
  int64_t age_ns = 0;    // a closed one's: how long it lasted
  int64_t idle_ns = 0;   // a closed one's: how long ago it ended
  uint64_t bytes_to_upstream = 0;
  uint64_t bytes_to_client = 0;
  uint64_t requests = 0;
  bool same_node_direct = false;  // one hop between two pods of the node
};

class Worker {
 public:
  // `options`, `datapath`, `home` (the agent's own network namespace) and `captured` (where
  // a same-node call may be dialled straight) outlive the worker. Start runs in `home`: its
  // dialer's conntrack socket is opened there.
  Worker(int index, const AgentOptions& options, Datapath& datapath, const Netns& home,
         const AgentTables& tables, const CapturedEndpoints& captured);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  absl::Status Start();
  void Stop();
  // Runs `task` on the worker's thread and returns when it has run.
  void RunAndWait(std::function<void()> task);

  int index() const { return index_; }
  const ProxyStats& stats() const { return stats_; }
  const ObserverStats& observer_stats() const { return observers_.stats(); }
  // Where Service connections went (see kernel/upstream_dialer.h).
  const UpstreamDialer& upstream_dialer() const { return dialer_; }
  // Filled by the worker, drained by the aggregator client; thread-safe.
  TapOutbox& tap_outbox() { return observers_.tap_outbox(); }
  TapOutbox& local_tap_outbox() { return observers_.local_tap_outbox(); }

  // On the worker thread (through RunAndWait).
  void AddListener(UniqueFd fd, std::shared_ptr<const PodRuntime> pod, Direction direction);
  // Takes what waits in the pod's listeners' queues, then closes them: connections already
  // accepted carry on.
  void RemoveListeners(uint32_t pod_id);
  size_t listener_count() const { return listeners_.size(); }
  std::vector<ConnectionSummary> ListConnections() const;
  // The summaries of the last connections that ended (kRecentlyClosed of them, two for a
  // same-node call dialled straight), the latest first: what `explain` shows of traffic
  // that came and went.
  std::vector<ConnectionSummary> RecentlyClosed() const;
  static constexpr size_t kRecentlyClosed = 32;
  // Hands over the metrics counted since the last call (see metrics::Shard::Collect).
  // An idle series leaves the shard after a minute, or sooner if the agent keeps idle series
  // for less (--metrics-retain-idle): their names can then be forgotten as early.
  void CollectMetrics(metrics::Delta* out) {
    observers_.shard().Collect(out, static_cast<int>(std::min<int64_t>(
                                        60, options_.observer.retain_idle_ns / 1'000'000'000)));
  }
  // The identity ids the worker's series refer to (its live connections' among them).
  void AddReferencedIdentities(absl::flat_hash_set<metrics::IdentityTable::Id>* ids) const {
    observers_.shard().AddReferencedIdentities(ids);
  }
  void ForgetIdentities(const std::vector<metrics::IdentityTable::Id>& ids) {
    observers_.ForgetIdentities(ids);
  }
  // The route ids its series, streams in flight and route cache refer to.
  void AddReferencedRoutes(absl::flat_hash_set<metrics::RouteTable::Id>* ids) {
    observers_.AddReferencedRoutes(ids);
  }

 private:
  struct Listener {
    UniqueFd fd;
    std::shared_ptr<const PodRuntime> pod;
    Direction direction;
    int64_t paused_until_ns = 0;  // not watched until then (out of descriptors); 0: watched
  };
  struct Connection;  // a relay, its observer, and where the worker keeps them

  // How many summaries `connection` has (two for a same-node call dialled straight), and
  // the one of `view`: 0 the accepting listener's pod's, 1 the server pod's.
  static int Views(const Connection& connection);
  static void Summarize(const Connection& connection, int view, ConnectionSummary* summary);
  // The pod of this node captured inbound on `destination`, for an outbound connection of
  // `client` to be dialled straight to, from `caller` (the client pod's address of the
  // destination's family); null when the connection takes two hops (the option is off, or
  // the destination is not such a pod's, or is the client's own address).
  std::shared_ptr<const PodRuntime> SameNodeServer(const PodRuntime& client,
                                                   const Endpoint& destination,
                                                   std::optional<IpAddress>* caller) const;
  void Run();
  void DrainTasks();
  // Accepts what is waiting, up to a bound; true if it stopped at the bound.
  bool Accept(Listener& listener, int64_t now_ns);
  // Out of descriptors: the listener is level-triggered and would wake the worker again at
  // once, so it is not watched for a while (its connections wait in its accept queue), and
  // the agent says so at most every so often.
  void PauseListener(Listener& listener, int error, int64_t now_ns);
  void ResumeListeners(int64_t now_ns);
  // Which events of a listener epoll reports: EPOLLIN, or none while it rests.
  void WatchListener(Listener& listener, uint32_t events);
  void StartConnection(Listener& listener, UniqueFd client, int64_t now_ns);
  // A buffer came back: the connections waiting for one go on, while there are buffers.
  void ServeBufferWaiters(int64_t now_ns);
  void Ended(Connection& connection, RelayEnd end);
  void Watch(int fd, void* target, uint32_t events);

  const int index_;
  const AgentOptions& options_;
  Datapath& datapath_;  // where outbound connections' original destinations are
  const CapturedEndpoints& captured_;
  UpstreamDialer dialer_;
  BufferPool buffers_;
  PipePool pipes_;
  RelayTimeouts timeouts_;
  ProxyStats stats_;
  ObserverContext observers_;
  UniqueFd epoll_;
  UniqueFd wake_;  // eventfd: tasks are queued
  // A descriptor held in reserve: a connection accepted with the last free descriptor still
  // gets its upstream socket (this one is let go for it) rather than a reset. The listeners
  // accept only while it is held.
  UniqueFd spare_;
  std::thread thread_;
  std::atomic<bool> stopping_{false};

  std::mutex tasks_mutex_;
  std::vector<std::function<void()>> tasks_;

  std::list<std::unique_ptr<Listener>> listeners_;
  // Removed listeners, freed after the event batch, which may still hold events for them.
  std::vector<std::unique_ptr<Listener>> retired_listeners_;
  absl::flat_hash_map<Connection*, std::unique_ptr<Connection>> connections_;
  std::vector<std::unique_ptr<Connection>> ended_;  // freed after the event batch
  struct Closed {
    ConnectionSummary summary;  // age_ns: how long it lasted; state: how it ended
    int64_t ended_ns = 0;       // monotonic
  };
  // A ring: slots are reused, so that their strings keep their capacity.
  std::vector<Closed> recently_closed_ = std::vector<Closed>(kRecentlyClosed);
  size_t closed_count_ = 0;  // ever; the next slot is closed_count_ % kRecentlyClosed
  std::list<Connection*> waiting_for_buffers_;
  uint64_t last_connection_id_ = 0;
  bool listeners_paused_ = false;
  int64_t accept_limit_logged_ns_ = 0;  // monotonic; 0: never
  uint64_t accept_limit_unlogged_ = 0;  // failures since that notice
};

}  // namespace nodemesh::agent
