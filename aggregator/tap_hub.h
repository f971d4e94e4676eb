// Tap fan-out: a client's tap (a target resource, optionally `to` another, and request
// filters) becomes subscriptions on the agents of the nodes its pods run on; the events
// those agents send back go to the client through a bounded queue. Targets are resolved
// again whenever pods or agents change, so a pod that appears later, or an agent that
// (re)connects later, gets the subscription too, and an agent no longer involved gets a
// cancel.
//
// How a tap maps onto subscriptions (each agent sees only requests its own pods make or
// serve, and reports every subscription a request matches):
// - without `to`: on each node hosting target pods, one subscription for requests from
//   those pods (source_pods) and one for requests to them (destination_pods). A request
//   from one local target pod to another matches both; the copy of the second is dropped.
// - with `to`: on each node hosting target pods, requests from them to the `to` pods.
//   Target pods that are not enrolled make no outbound requests the mesh sees, so every node
//   hosting `to` pods also watches for requests from those pods arriving there.
// - with `to` a Service (type service): on each node hosting target pods, requests from them
//   dialled to that Service (destination_services). Only the caller's agent knows which
//   Service was dialled, so the requests of target pods that are not enrolled are not
//   tapped: the server's side cannot tell them from requests to the pods themselves.
// - without `to`, the requests of target pods that are not enrolled are not tapped: only
//   their peers' agents see them, and which peers is not known in advance.
// - max_rps (default 100) is the whole tap's: split evenly between the connected agents
//   involved, and between the two subscriptions of a node where there are two.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "aggregator/cluster.h"
#include "common/resource/resource.h"
#include "nodemesh/v1/nodemesh.pb.h"

namespace nodemesh::aggregator {

// The stream down to one agent, as the hub uses it.
class AgentLink {
 public:
  virtual ~AgentLink() = default;
  // Queues a message for the agent; never blocks.
  virtual void Send(v1::AggregatorMessage message) = 0;
};

// One client's tap: the events for it, queued until the client's stream takes them.
class TapSession {
 public:
  TapSession(uint64_t id, size_t capacity) : id_(id), capacity_(capacity) {}

  uint64_t id() const { return id_; }
  // Waits until events are queued, the session is closed or `timeout` passes, then moves the
  // queued events into `out`. False once the session is closed and nothing is left.
  bool Wait(std::chrono::milliseconds timeout, std::vector<v1::TapEvent>* out);
  // What was lost since the previous call: events agents could not send (every session with
  // a subscription on an agent hears of that agent's drops) and events this queue had no
  // room for.
  v1::TapDrops TakeDrops();
  bool closed() const;

  // For the hub.
  void Push(v1::TapEvent event);
  void AddAgentDrops(uint64_t count);
  void Close();

 private:
  const uint64_t id_;
  const size_t capacity_;
  mutable std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<v1::TapEvent> events_;
  uint64_t agent_dropped_ = 0;
  uint64_t stream_dropped_ = 0;
  bool closed_ = false;
};

struct TapHubOptions {
  size_t queue_capacity = 1024;  // events per client
  // Taps open at once, across clients: each holds a stream, a thread and a queue.
  size_t max_taps = 64;
  // Taps one caller may hold open (aggregator/authorization.h, CallerKey): so that one
  // client cannot take them all.
  size_t max_taps_per_caller = 16;
  double default_max_rps = 100;  // for a tap that asks for 0
};

class TapHub {
 public:
  // Where the cluster's pods come from (Cluster::Pods): read afresh under the hub's lock at
  // every change, so that concurrent changes cannot leave a tap resolved against old pods.
  using PodSource = std::function<std::vector<PodEntry>()>;
  explicit TapHub(PodSource pods, TapHubOptions options = {})
      : pods_source_(std::move(pods)), options_(options) {}

  // `node`'s agent is connected through `link`, replacing any previous link; it gets the
  // subscriptions of every tap involving its pods.
  void AttachAgent(const std::string& node, std::shared_ptr<AgentLink> link);
  // The agent's stream ended (ignored when `link` was already replaced).
  void DetachAgent(const std::string& node, const AgentLink* link);
  // The cluster's pods changed: taps are resolved again.
  void PodsChanged();
  // Events (and the agent's drop count) from `node`'s agent.
  void Deliver(const std::string& node, const v1::TapEvents& events);

  // Starts a tap for `caller`. INVALID_ARGUMENT for a bad spec, NOT_FOUND when the target
  // (or `to`, unless a Service) has no pods, UNAVAILABLE when no agent of the nodes they run on is
  // connected, RESOURCE_EXHAUSTED past the taps the hub or one caller may hold.
  absl::StatusOr<std::shared_ptr<TapSession>> Open(const v1::TapRequestSpec& spec,
                                                   const std::string& caller);
  // Ends a tap: its agents get cancels.
  void Close(const std::shared_ptr<TapSession>& session);
  // Closes every tap (their Wait returns false); later Opens are UNAVAILABLE.
  void Shutdown();

  size_t sessions() const;
  // The nodes whose agents are attached now.
  std::vector<std::string> agents() const;

 private:
  struct Tap {
    std::shared_ptr<TapSession> session;
    std::string caller;
    v1::TapRequestSpec spec;
    Selector target;
    std::optional<Selector> to;
    std::string to_service;       // "namespace/name" of the Service `to` names; empty: none
    uint64_t from_target_id = 0;  // requests from the target's pods
    uint64_t to_target_id = 0;    // requests to them; 0 with `to`
    // Per node, the pods its from_target subscription lists: a request the node reports for
    // to_target_id from one of these was reported for from_target_id as well.
    std::map<std::string, std::set<std::string>> from_target_sources;
  };
  using Subscriptions = std::map<uint64_t, v1::TapSubscription>;

  static uint64_t FirstSubscriptionId();
  // Sends each connected agent what it should have and not yet has, and cancels the rest.
  void ReconcileLocked();
  void PlanLocked(Tap& tap, std::map<std::string, Subscriptions>* desired);

  const PodSource pods_source_;
  const TapHubOptions options_;
  mutable std::mutex mutex_;
  // Subscription ids start at random below 2^62, so that the replicas of one aggregator,
  // each subscribing on the same agents, never give two taps one id (nor a local tap's).
  uint64_t next_id_ = FirstSubscriptionId();
  bool shut_down_ = false;
  std::map<uint64_t, Tap> taps_;                      // by session id
  absl::flat_hash_map<uint64_t, uint64_t> owner_of_;  // subscription id -> session id
  std::map<std::string, std::shared_ptr<AgentLink>> links_;
  std::map<std::string, std::map<uint64_t, std::string>> sent_;  // node -> id -> serialized
  std::vector<PodEntry> pods_;                                   // as of the last reconcile
};

}  // namespace nodemesh::aggregator
