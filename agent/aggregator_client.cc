#include "agent/aggregator_client.h"

#include <fmt/format.h>
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <random>

#include "absl/container/flat_hash_map.h"
#include "common/base/log.h"
#include "common/base/version.h"
#include "nodemesh/v1/nodemesh.grpc.pb.h"

namespace nodemesh::agent {
namespace {

constexpr size_t kMaxPendingDeltas = 300;  // five minutes of seconds
constexpr auto kTapFlushInterval = std::chrono::milliseconds(100);
// A relayed admin answer reaches meshctl in one gRPC message, which a client takes up to
// 4 MiB by default: larger answers are refused with what to do instead.
constexpr size_t kMaxRelayedBody = 3 << 20;
constexpr auto kMinBackoff = std::chrono::milliseconds(500);
constexpr auto kMaxBackoff = std::chrono::seconds(30);

std::string RandomInstance() {
  std::random_device random;
  return fmt::format("{:08x}{:08x}", random(), random());
}

}  // namespace

AggregatorClient::AggregatorClient(AggregatorDialer dialer, std::string node, TapSubscriptions& tap,
                                   Hooks hooks)
    : dialer_(std::move(dialer)),
      node_(std::move(node)),
      instance_(RandomInstance()),
      tap_(tap),
      hooks_(std::move(hooks)) {}

AggregatorClient::~AggregatorClient() { Stop(); }

void AggregatorClient::Start() {
  thread_ = std::thread([this] { Run(); });
}

void AggregatorClient::Stop() {
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return;
    stopping_ = true;
    if (context_ != nullptr) context_->TryCancel();
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void AggregatorClient::SendMetrics(v1::MetricsDelta delta) {
  {
    std::lock_guard lock(mutex_);
    delta.set_sequence(next_sequence_++);
    pending_metrics_.push_back(std::move(delta));
    TrimDeltasLocked();
  }
  wake_.notify_all();
}

void AggregatorClient::TrimDeltasLocked() {
  while (unacked_metrics_.size() + pending_metrics_.size() > kMaxPendingDeltas) {
    (unacked_metrics_.empty() ? pending_metrics_ : unacked_metrics_).pop_front();
    if (dropped_metrics_++ == 0) {
      Log(LogLevel::kWarning,
          "the aggregator has not acknowledged {} s of metrics: the oldest are given up from now "
          "on (/stats counts them)",
          kMaxPendingDeltas);
    }
  }
}

void AggregatorClient::PodsChanged() {
  {
    std::lock_guard lock(mutex_);
    pods_changed_ = true;
  }
  wake_.notify_all();
}

uint64_t AggregatorClient::dropped_deltas() const {
  std::lock_guard lock(mutex_);
  return dropped_metrics_;
}

bool AggregatorClient::connected() const {
  std::lock_guard lock(mutex_);
  return connected_;
}

size_t AggregatorClient::unacknowledged_deltas() const {
  std::lock_guard lock(mutex_);
  return pending_metrics_.size() + unacked_metrics_.size();
}

bool AggregatorClient::WaitBeforeRetry(std::chrono::milliseconds delay) {
  std::unique_lock lock(mutex_);
  return !wake_.wait_for(lock, delay, [&] { return stopping_; });
}

void AggregatorClient::Run() {
  std::mt19937 rng(std::random_device{}());
  std::chrono::milliseconds backoff = kMinBackoff;
  for (;;) {
    const auto started = std::chrono::steady_clock::now();
    Session();
    {
      std::lock_guard lock(mutex_);
      if (stopping_) return;
    }
    // A session that lasted a while was healthy: start the backoff over.
    if (std::chrono::steady_clock::now() - started > std::chrono::seconds(10))
      backoff = kMinBackoff;
    const auto jittered = std::chrono::milliseconds(
        std::uniform_int_distribution<int64_t>(backoff.count() / 2, backoff.count())(rng));
    if (!WaitBeforeRetry(jittered)) return;
    backoff = std::min<std::chrono::milliseconds>(backoff * 2, kMaxBackoff);
  }
}

void AggregatorClient::Session() {
  auto channel = dialer_.Dial(grpc::ChannelArguments());
  auto stub = v1::AgentService::NewStub(channel);
  grpc::ClientContext context;
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return;
    context_ = &context;
  }
  std::unique_ptr<grpc::ClientReaderWriter<v1::AgentMessage, v1::AggregatorMessage>> stream =
      stub->Connect(&context);

  v1::AgentMessage hello;
  hello.mutable_hello()->set_node(node_);
  hello.mutable_hello()->set_version(std::string(kVersion));
  hello.mutable_hello()->set_instance(instance_);
  for (v1::Pod& pod : hooks_.pods()) *hello.mutable_hello()->add_pods() = std::move(pod);
  bool healthy = stream->Write(hello);
  if (healthy) {
    std::lock_guard lock(mutex_);
    connected_ = true;
    in_outage_ = false;
    pods_changed_ = false;
    Log(LogLevel::kInfo, "connected to the aggregator at {}", dialer_.address());
  }

  // Subscriptions come down on their own thread; they belong to this session.
  std::atomic<bool> read_ended{false};  // the aggregator ended the stream, with its status
  // An aggregator older than acknowledgements never sends one: what it was sent must not go
  // again (it would count it twice), as before acknowledgements.
  std::atomic<bool> acknowledged{false};
  std::thread reader([&] {
    v1::AggregatorMessage message;
    while (stream->Read(&message)) {
      if (message.has_subscribe()) {
        tap_.Add(TapFilter::FromProto(message.subscribe()));
        Log(LogLevel::kInfo, "tap {} started", message.subscribe().id());
      } else if (message.has_cancel()) {
        tap_.Remove(message.cancel().id());
        Log(LogLevel::kInfo, "tap {} stopped", message.cancel().id());
      } else if (message.has_metrics_ack()) {
        acknowledged = true;
        std::lock_guard lock(mutex_);
        while (!unacked_metrics_.empty() &&
               unacked_metrics_.front().sequence() <= message.metrics_ack().sequence()) {
          unacked_metrics_.pop_front();
        }
      } else if (message.has_cluster_pods() && hooks_.cluster_pods) {
        hooks_.cluster_pods(message.cluster_pods());
      } else if (message.has_admin_request() && hooks_.admin) {
        v1::AdminResponse answer = AnswerAdmin(message.admin_request());
        std::lock_guard lock(mutex_);
        admin_answers_.push_back(std::move(answer));
        wake_.notify_all();
      }
    }
    read_ended = true;
    std::lock_guard lock(mutex_);
    connected_ = false;
    wake_.notify_all();
  });

  while (healthy) {
    std::deque<v1::AdminResponse> answers;
    std::deque<v1::MetricsDelta> metrics;
    bool send_pods = false;
    {
      std::unique_lock lock(mutex_);
      wake_.wait_for(lock, kTapFlushInterval, [&] {
        return stopping_ || !connected_ || !pending_metrics_.empty() || pods_changed_ ||
               !admin_answers_.empty();
      });
      if (stopping_ || !connected_) break;
      metrics.swap(pending_metrics_);
      answers.swap(admin_answers_);
      send_pods = std::exchange(pods_changed_, false);
    }
    for (v1::AdminResponse& answer : answers) {
      if (!healthy) break;
      v1::AgentMessage message;
      *message.mutable_admin_response() = std::move(answer);
      healthy = stream->Write(message);
    }
    if (send_pods) {
      v1::AgentMessage message;
      for (v1::Pod& pod : hooks_.pods()) *message.mutable_pods()->add_pods() = std::move(pod);
      healthy = stream->Write(message);
    }
    while (healthy && !metrics.empty()) {
      v1::AgentMessage message;
      {
        // Kept until acknowledged, from before the write: its acknowledgement can arrive
        // before Write returns, and a write that succeeded may still never be read.
        std::lock_guard lock(mutex_);
        unacked_metrics_.push_back(std::move(metrics.front()));
        *message.mutable_metrics() = unacked_metrics_.back();
        TrimDeltasLocked();
      }
      metrics.pop_front();
      healthy = stream->Write(message);
    }
    if (!healthy) {
      // Unsent deltas go back to the front of the queue for the next session.
      std::lock_guard lock(mutex_);
      for (auto it = metrics.rbegin(); it != metrics.rend(); ++it) {
        pending_metrics_.push_front(std::move(*it));
      }
      TrimDeltasLocked();
      break;
    }
    std::vector<v1::TapEvent> events;
    uint64_t dropped = hooks_.drain_tap(&events);
    // In batches, so that one message stays small whatever the tap rate.
    constexpr size_t kBatch = 512;
    for (size_t first = 0; healthy && (first < events.size() || dropped != 0); first += kBatch) {
      v1::AgentMessage message;
      v1::TapEvents& batch = *message.mutable_tap();
      for (size_t i = first; i < std::min(events.size(), first + kBatch); ++i) {
        *batch.add_events() = std::move(events[i]);
      }
      batch.set_dropped(std::exchange(dropped, 0));
      healthy = stream->Write(message);
    }
  }

  // A stream the aggregator ended carries its reason (a refusal says why); cancelling it
  // would put CANCELLED in its place. Any other is cancelled, for the reader to stop.
  if (!read_ended) context.TryCancel();
  reader.join();
  const grpc::Status status = stream->Finish();
  {
    std::lock_guard lock(mutex_);
    context_ = nullptr;
    // Said once per outage, not at every retry.
    const bool outage_starts = connected_ || !in_outage_;
    Log(outage_starts ? LogLevel::kWarning : LogLevel::kDebug,
        "aggregator stream to {} ended: {}; retrying with backoff", dialer_.address(),
        status.ok() ? "closed" : status.error_message());
    in_outage_ = true;
    connected_ = false;
  }
  // Subscriptions end with the stream; the aggregator sends them again on reconnect.
  tap_.ClearRemote();
  std::lock_guard lock(mutex_);
  admin_answers_.clear();  // their callers were told the stream ended
  // Deltas this stream never saw acknowledged go first on the next, in their order.
  if (acknowledged) {
    for (auto it = unacked_metrics_.rbegin(); it != unacked_metrics_.rend(); ++it) {
      pending_metrics_.push_front(std::move(*it));
    }
  }
  unacked_metrics_.clear();
}

v1::AdminResponse AggregatorClient::AnswerAdmin(const v1::AdminRequest& request) const {
  HttpResponse response = hooks_.admin(request.target());
  v1::AdminResponse answer;
  answer.set_id(request.id());
  if (response.body.size() > kMaxRelayedBody) {
    answer.set_status(413);
    answer.set_content_type("text/plain; charset=utf-8");
    answer.set_body(fmt::format(
        "the answer to {} is {} bytes, more than the relay carries ({}): narrow it (e.g. "
        "`kernel map NAME --limit N`), or run meshctl shell on the node",
        request.target(), response.body.size(), kMaxRelayedBody));
    return answer;
  }
  answer.set_status(static_cast<uint32_t>(response.status));
  answer.set_content_type(std::move(response.content_type));
  answer.set_body(std::move(response.body));
  return answer;
}

}  // namespace nodemesh::agent
