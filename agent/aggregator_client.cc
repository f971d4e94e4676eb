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

}  // namespace

AggregatorClient::AggregatorClient(AggregatorDialer dialer, std::string node, std::string instance,
                                   TapSubscriptions& tap, Hooks hooks)
    : dialer_(std::move(dialer)),
      node_(std::move(node)),
      instance_(std::move(instance)),
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

void AggregatorClient::SendMetrics(std::shared_ptr<const v1::MetricsDelta> delta) {
  {
    std::lock_guard lock(mutex_);
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
          "the aggregator at {} has not acknowledged {} s of metrics: the oldest are given up "
          "from now on (/stats counts them)",
          dialer_.address(), kMaxPendingDeltas);
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

bool AggregatorClient::subscribed(uint64_t id) const {
  std::lock_guard lock(mutex_);
  return subscriptions_.contains(id);
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
    RunSession();
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

// One connected session, in steps: the stream opened, the hello said, then what comes down
// read on a thread of its own (Read) while the session thread writes what goes up
// (WriteUntilBroken), and last the session ended (End), keeping for the next one what this
// one could not deliver.
class AggregatorClient::Session {
 public:
  explicit Session(AggregatorClient& client) : client_(client) {}

  void Run() {
    if (!Open()) return;
    const bool healthy = SayHello();
    // Subscriptions, acknowledgements and relayed requests come down on their own thread;
    // they belong to this session.
    std::thread reader([this] { Read(); });
    if (healthy) WriteUntilBroken();
    // A stream the aggregator ended carries its reason (a refusal says why); cancelling it
    // would put CANCELLED in its place. Any other is cancelled, for the reader to stop.
    if (!read_ended_) context_.TryCancel();
    reader.join();
    End(stream_->Finish());
  }

 private:
  using Stream = grpc::ClientReaderWriter<v1::AgentMessage, v1::AggregatorMessage>;

  // What the session thread writes next, taken from the client's queues at once.
  struct Outgoing {
    std::deque<v1::AdminResponse> answers;
    std::deque<SharedDelta> deltas;
    bool pods = false;
  };

  // Dials the aggregator and opens the stream, with the token if there is one; false if the
  // client is stopping or the token cannot be had.
  bool Open() {
    if (client_.hooks_.token) {
      const absl::StatusOr<std::string> token = client_.hooks_.token();
      if (!token.ok()) {
        Log(LogLevel::kWarning, "not connecting to the aggregator at {}: {}; retrying with backoff",
            client_.dialer_.address(), token.status().message());
        return false;
      }
      context_.AddMetadata("authorization", fmt::format("Bearer {}", *token));
    }
    stub_ = v1::AgentService::NewStub(client_.dialer_.Dial(grpc::ChannelArguments()));
    {
      std::lock_guard lock(client_.mutex_);
      if (client_.stopping_) return false;
      client_.context_ = &context_;  // Stop() cancels the stream from here on
    }
    stream_ = stub_->Connect(&context_);
    return true;
  }

  // The node, this process and its pods; the session is connected once they are written.
  bool SayHello() {
    v1::AgentMessage hello;
    hello.mutable_hello()->set_node(client_.node_);
    hello.mutable_hello()->set_version(std::string(kVersion));
    hello.mutable_hello()->set_instance(client_.instance_);
    for (v1::Pod& pod : client_.hooks_.pods()) *hello.mutable_hello()->add_pods() = std::move(pod);
    if (!stream_->Write(hello)) return false;
    std::lock_guard lock(client_.mutex_);
    client_.connected_ = true;
    client_.in_outage_ = false;
    client_.pods_changed_ = false;
    Log(LogLevel::kInfo, "connected to the aggregator at {}", client_.dialer_.address());
    return true;
  }

  // The reader thread: every message down until the stream ends.
  void Read() {
    v1::AggregatorMessage message;
    while (stream_->Read(&message)) Apply(message);
    read_ended_ = true;
    std::lock_guard lock(client_.mutex_);
    client_.connected_ = false;
    client_.wake_.notify_all();
  }

  void Apply(const v1::AggregatorMessage& message) {
    if (message.has_subscribe()) {
      {
        std::lock_guard lock(client_.mutex_);
        client_.subscriptions_.insert(message.subscribe().id());
      }
      client_.tap_.Add(TapFilter::FromProto(message.subscribe()));
      Log(LogLevel::kInfo, "tap {} started", message.subscribe().id());
    } else if (message.has_cancel()) {
      client_.tap_.Remove(message.cancel().id());
      std::lock_guard lock(client_.mutex_);
      client_.subscriptions_.erase(message.cancel().id());
      Log(LogLevel::kInfo, "tap {} stopped", message.cancel().id());
    } else if (message.has_metrics_ack()) {
      acknowledged_ = true;
      std::lock_guard lock(client_.mutex_);
      std::deque<SharedDelta>& unacked = client_.unacked_metrics_;
      while (!unacked.empty() && unacked.front()->sequence() <= message.metrics_ack().sequence()) {
        unacked.pop_front();
      }
    } else if (message.has_cluster_pods() && client_.hooks_.cluster_pods) {
      client_.hooks_.cluster_pods(message.cluster_pods());
    } else if (message.has_admin_request() && client_.hooks_.admin) {
      v1::AdminResponse answer = client_.AnswerAdmin(message.admin_request());
      std::lock_guard lock(client_.mutex_);
      client_.admin_answers_.push_back(std::move(answer));
      client_.wake_.notify_all();
    }
  }

  // The session thread: relayed answers, pods, deltas and tap events, in that order, each
  // time there is something to write (tap events at least every kTapFlushInterval), until a
  // write fails, the reader saw the stream end, or the client stops.
  void WriteUntilBroken() {
    for (;;) {
      Outgoing outgoing;
      if (!TakeOutgoing(&outgoing)) return;
      const bool healthy = WriteAdminAnswers(std::move(outgoing.answers)) &&
                           (!outgoing.pods || WritePods()) && WriteDeltas(&outgoing.deltas);
      if (!healthy) {
        // Unsent deltas go back to the front of the queue for the next session.
        std::lock_guard lock(client_.mutex_);
        for (auto it = outgoing.deltas.rbegin(); it != outgoing.deltas.rend(); ++it) {
          client_.pending_metrics_.push_front(std::move(*it));
        }
        client_.TrimDeltasLocked();
        return;
      }
      if (!WriteTapEvents()) return;
    }
  }

  // Waits for something to write; false once the session is over.
  bool TakeOutgoing(Outgoing* outgoing) {
    std::unique_lock lock(client_.mutex_);
    client_.wake_.wait_for(lock, kTapFlushInterval, [&] {
      return client_.stopping_ || !client_.connected_ || !client_.pending_metrics_.empty() ||
             client_.pods_changed_ || !client_.admin_answers_.empty();
    });
    if (client_.stopping_ || !client_.connected_) return false;
    outgoing->deltas.swap(client_.pending_metrics_);
    outgoing->answers.swap(client_.admin_answers_);
    outgoing->pods = std::exchange(client_.pods_changed_, false);
    return true;
  }

  bool WriteAdminAnswers(std::deque<v1::AdminResponse> answers) {
    for (v1::AdminResponse& answer : answers) {
      v1::AgentMessage message;
      *message.mutable_admin_response() = std::move(answer);
      if (!stream_->Write(message)) return false;
    }
    return true;
  }

  bool WritePods() {
    v1::AgentMessage message;
    for (v1::Pod& pod : client_.hooks_.pods()) *message.mutable_pods()->add_pods() = std::move(pod);
    return stream_->Write(message);
  }

  // Writes the deltas, oldest first, taking each from `deltas` as it goes.
  bool WriteDeltas(std::deque<SharedDelta>* deltas) {
    while (!deltas->empty()) {
      v1::AgentMessage message;
      *message.mutable_metrics() = *deltas->front();
      {
        // Kept until acknowledged, from before the write: its acknowledgement can arrive
        // before Write returns, and a write that succeeded may still never be read.
        std::lock_guard lock(client_.mutex_);
        client_.unacked_metrics_.push_back(std::move(deltas->front()));
        client_.TrimDeltasLocked();
      }
      deltas->pop_front();
      if (!stream_->Write(message)) return false;
    }
    return true;
  }

  // The workers' queued tap events, in batches, so that one message stays small whatever the
  // tap rate; with how many were dropped, if any were.
  bool WriteTapEvents() {
    std::vector<v1::TapEvent> events;
    uint64_t dropped = client_.hooks_.drain_tap(&events);
    constexpr size_t kBatch = 512;
    for (size_t first = 0; first < events.size() || dropped != 0; first += kBatch) {
      v1::AgentMessage message;
      v1::TapEvents& batch = *message.mutable_tap();
      for (size_t i = first; i < std::min(events.size(), first + kBatch); ++i) {
        *batch.add_events() = std::move(events[i]);
      }
      batch.set_dropped(std::exchange(dropped, 0));
      if (!stream_->Write(message)) return false;
    }
    return true;
  }

  // The stream has ended with `status`: said once per outage; what belonged to the stream
  // (remote taps, relayed answers) goes, and deltas it never saw acknowledged wait for the
  // next.
  void End(const grpc::Status& status) {
    {
      std::lock_guard lock(client_.mutex_);
      client_.context_ = nullptr;
      // Said once per outage, not at every retry.
      const bool outage_starts = client_.connected_ || !client_.in_outage_;
      Log(outage_starts ? LogLevel::kWarning : LogLevel::kDebug,
          "aggregator stream to {} ended: {}; retrying with backoff", client_.dialer_.address(),
          status.ok() ? "closed" : status.error_message());
      client_.in_outage_ = true;
      client_.connected_ = false;
    }
    // This stream's subscriptions end with it (another replica's stay); the aggregator sends
    // them again on reconnect.
    absl::flat_hash_set<uint64_t> ended;
    {
      std::lock_guard lock(client_.mutex_);
      ended.swap(client_.subscriptions_);
    }
    for (const uint64_t id : ended) client_.tap_.Remove(id);
    std::lock_guard lock(client_.mutex_);
    client_.admin_answers_.clear();  // their callers were told the stream ended
    // Deltas this stream never saw acknowledged go first on the next, in their order. An
    // aggregator older than acknowledgements never sends one: what it was sent must not go
    // again (it would count it twice), as before acknowledgements.
    if (acknowledged_) {
      for (auto it = client_.unacked_metrics_.rbegin(); it != client_.unacked_metrics_.rend();
           ++it) {
        client_.pending_metrics_.push_front(std::move(*it));
      }
    }
    client_.unacked_metrics_.clear();
  }

  AggregatorClient& client_;
  std::unique_ptr<v1::AgentService::Stub> stub_;
  grpc::ClientContext context_;
  std::unique_ptr<Stream> stream_;
  std::atomic<bool> read_ended_{false};    // the aggregator ended the stream, with its status
  std::atomic<bool> acknowledged_{false};  // it acknowledged a delta on this stream
};

void AggregatorClient::RunSession() { Session(*this).Run(); }

v1::AdminResponse AggregatorClient::AnswerAdmin(const v1::AdminRequest& request) const {
  http::HttpResponse response = hooks_.admin(request.target());
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
