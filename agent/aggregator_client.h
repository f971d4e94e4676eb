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
  };

  AggregatorClient(AggregatorDialer dialer, std::string node, TapSubscriptions& tap, Hooks hooks);
  ~AggregatorClient();

  void Start();
  void Stop();

  // Queues a delta. While disconnected the last few minutes' deltas are kept and sent on
  // reconnect (the aggregator files them under their own second).
  void SendMetrics(v1::MetricsDelta delta);
  void PodsChanged();
  bool connected() const;

 private:
  void Run();
  // One connected session; returns when the stream breaks or Stop() is called.
  void Session();
  bool WaitBeforeRetry(std::chrono::milliseconds delay);
  v1::AdminResponse AnswerAdmin(const v1::AdminRequest& request) const;

  const AggregatorDialer dialer_;
  const std::string node_;
  TapSubscriptions& tap_;
  const Hooks hooks_;

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  bool connected_ = false;
  bool in_outage_ = false;  // the last session failed
  bool pods_changed_ = false;
  std::deque<v1::MetricsDelta> pending_metrics_;
  std::deque<v1::AdminResponse> admin_answers_;  // this session's, waiting to be written
  grpc::ClientContext* context_ = nullptr;       // the live session's, to cancel it on Stop()
  std::thread thread_;
};

}  // namespace nodemesh::agent
