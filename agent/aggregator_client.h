// The agent's side of its stream to the aggregator: one bidirectional gRPC stream held
// for the agent's lifetime, re-dialled with backoff when it breaks. Up: hello (node and
// pods), metric deltas every second, pod lists when they change, tap events. Down: tap
// subscriptions and cancellations, applied to the workers' TapSubscriptions, and admin
// requests relayed for meshctl shell --node, answered on the way up.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "agent/http_server.h"
#include "agent/observer/tap.h"
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
    // Moves the workers' queued tap events into the vector; returns how many were dropped.
    std::function<uint64_t(std::vector<v1::TapEvent>*)> drain_tap;
    // Every pod of the cluster, as the aggregator knows them.
    std::function<void(const v1::PodList&)> cluster_pods;
    // Answers a relayed GET of the admin API (`target`: path and query).
    std::function<HttpResponse(std::string_view target)> admin;
    // The bearer token each new stream presents (`authorization` metadata), asked for anew
    // each time; none: no token. An error ends that attempt, retried with backoff.
    std::function<absl::StatusOr<std::string>()> token;
  };

  AggregatorClient(AggregatorDialer dialer, std::string node, TapSubscriptions& tap, Hooks hooks);
  ~AggregatorClient();

  void Start();
  void Stop();

  // Numbers and queues a delta. It is kept until the aggregator acknowledges it: one sent
  // on a stream that broke first goes again on the next (the aggregator files each number
  // once, and under its own second). At most the last few minutes' deltas are kept.
  void SendMetrics(v1::MetricsDelta delta);
  void PodsChanged();
  bool connected() const;
  // Deltas kept because no acknowledgement has covered them yet: written, or waiting to be.
  size_t unacknowledged_deltas() const;
  // Deltas given up, oldest first, because more were kept than the limit (an aggregator out
  // of reach for minutes): their seconds are missing from the aggregator's windows.
  uint64_t dropped_deltas() const;

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
  uint64_t next_sequence_ = 1;
  std::deque<v1::MetricsDelta> pending_metrics_;  // not yet written, oldest first
  std::deque<v1::MetricsDelta> unacked_metrics_;  // written, not yet acknowledged
  uint64_t dropped_metrics_ = 0;
  std::deque<v1::AdminResponse> admin_answers_;  // this session's, waiting to be written
  grpc::ClientContext* context_ = nullptr;       // the live session's, to cancel it on Stop()
  std::thread thread_;
};

}  // namespace nodemesh::agent
