// The agent's side of its stream to one aggregator replica (aggregator_replicas.h holds one
// per replica): one bidirectional gRPC stream held while the replica is known, re-dialled
// with backoff when it breaks. Up: hello (node and pods), metric deltas every second, pod
// lists when they change, tap events of this replica's subscriptions. Down: tap
// subscriptions and cancellations, applied to the workers' TapSubscriptions, and admin
// requests relayed for meshctl shell --node, answered on the way up.
// Threads: a thread of its own runs the sessions (one at a time), each with a reader thread;
// the public calls may come from any thread.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "agent/observer/tap.h"
#include "common/http/routes.h"
#include "common/tls/tls.h"
#include "nodemesh/v1/nodemesh.pb.h"

namespace grpc {
class ClientContext;
}

namespace nodemesh::agent {

class AggregatorClient {
 public:
  struct Hooks {
    // This node's pods as they are now.
    std::function<std::vector<v1::Pod>()> pods;
    // Moves the queued tap events of this client's subscriptions into the vector; returns
    // how many were dropped.
    std::function<uint64_t(std::vector<v1::TapEvent>*)> drain_tap;
    // Every pod of the cluster, as the aggregator knows them.
    std::function<void(const v1::PodList&)> cluster_pods;
    // Answers a relayed GET of the admin API (`target`: path and query).
    std::function<http::HttpResponse(std::string_view target)> admin;
    // The bearer token each new stream presents (`authorization` metadata), asked for anew
    // each time; none: no token. An error ends that attempt, retried with backoff.
    std::function<absl::StatusOr<std::string>()> token;
  };

  // `instance`: Hello.instance, this agent process among the node's agents, the same on
  // every replica's stream, since the deltas' numbers are the process's.
  AggregatorClient(AggregatorDialer dialer, std::string node, std::string instance,
                   TapSubscriptions& tap, Hooks hooks);
  ~AggregatorClient();

  void Start();
  void Stop();

  // Queues a delta, numbered by the caller (its sequence one past the previous one's). It is
  // kept until this replica acknowledges it: one sent on a stream that broke first goes
  // again on the next (the aggregator files each number once, and under its own second). At
  // most the last few minutes' deltas are kept. Every replica's client shares the delta.
  void SendMetrics(std::shared_ptr<const v1::MetricsDelta> delta);
  void PodsChanged();
  bool connected() const;
  // Deltas kept because no acknowledgement has covered them yet: written, or waiting to be.
  size_t unacknowledged_deltas() const;
  // Deltas given up, oldest first, because more were kept than the limit (an aggregator out
  // of reach for minutes): their seconds are missing from the aggregator's windows.
  uint64_t dropped_deltas() const;
  // Whether the tap subscription `id` came down this client's stream.
  bool subscribed(uint64_t id) const;
  const std::string& address() const { return dialer_.address(); }

 private:
  // One connected stream and its steps (aggregator_client.cc).
  class Session;

  void Run();
  // One session; returns when the stream breaks or Stop() is called.
  void RunSession();
  bool WaitBeforeRetry(std::chrono::milliseconds delay);
  v1::AdminResponse AnswerAdmin(const v1::AdminRequest& request) const;
  // Drops the oldest deltas past the limit; mutex_ held.
  void TrimDeltasLocked();

  const AggregatorDialer dialer_;
  const std::string node_;
  const std::string instance_;  // Hello.instance: this process, among the node's agents
  TapSubscriptions& tap_;
  const Hooks hooks_;

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  bool connected_ = false;
  bool in_outage_ = false;  // the last session failed
  bool pods_changed_ = false;
  using SharedDelta = std::shared_ptr<const v1::MetricsDelta>;
  std::deque<SharedDelta> pending_metrics_;  // not yet written, oldest first
  std::deque<SharedDelta> unacked_metrics_;  // written, not yet acknowledged
  // The tap subscriptions this stream brought; they end with it.
  absl::flat_hash_set<uint64_t> subscriptions_;
  uint64_t dropped_metrics_ = 0;
  std::deque<v1::AdminResponse> admin_answers_;  // this session's, waiting to be written
  grpc::ClientContext* context_ = nullptr;       // the live session's, to cancel it on Stop()
  std::thread thread_;
};

}  // namespace nodemesh::agent
