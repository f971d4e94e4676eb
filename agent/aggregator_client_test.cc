// The agent's streams to the aggregator's replicas against in-process AgentServices that the
// test drives: which deltas each acknowledges, which taps it subscribes, and when it ends a
// stream.
#include "agent/aggregator_client.h"

#include <fmt/format.h>
#include <grpcpp/grpcpp.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "agent/aggregator_replicas.h"
#include "nodemesh/v1/nodemesh.grpc.pb.h"

namespace nodemesh::agent {
namespace {

using namespace std::chrono_literals;

// One stream as the aggregator saw it.
struct SeenStream {
  std::string instance;
  std::vector<uint64_t> sequences;
  std::string authorization;  // its `authorization` metadata, if any
  std::vector<uint64_t> tapped;  // the subscriptions of the tap events it was sent
};

class ScriptedAggregator final : public v1::AgentService::Service {
 public:
  grpc::Status Connect(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<v1::AggregatorMessage, v1::AgentMessage>* stream) override {
    v1::AgentMessage message;
    if (!stream->Read(&message) || !message.has_hello()) return grpc::Status::CANCELLED;
    size_t index = 0;
    {
      std::lock_guard lock(mutex_);
      const auto& metadata = context->client_metadata();
      const auto authorization = metadata.find("authorization");
      streams_.push_back(
          SeenStream{message.hello().instance(),
                     {},
                     authorization == metadata.end()
                         ? ""
                         : std::string(authorization->second.data(), authorization->second.size()),
                     {}});
      index = streams_.size() - 1;
      context_ = context;
    }
    changed_.notify_all();
    // The tap it subscribes, on its first stream only.
    if (index == 0 && subscription_ != 0) {
      v1::AggregatorMessage subscribe;
      subscribe.mutable_subscribe()->set_id(subscription_);
      stream->Write(subscribe);
    }
    while (stream->Read(&message)) {
      if (message.has_tap()) {
        std::lock_guard lock(mutex_);
        for (const v1::TapEvent& event : message.tap().events()) {
          streams_[index].tapped.push_back(event.subscription());
        }
        changed_.notify_all();
        continue;
      }
      if (!message.has_metrics()) continue;
      const uint64_t sequence = message.metrics().sequence();
      bool acknowledge = false;
      {
        std::lock_guard lock(mutex_);
        streams_[index].sequences.push_back(sequence);
        acknowledge = sequence <= acknowledge_through_;
      }
      changed_.notify_all();
      if (acknowledge) {
        v1::AggregatorMessage ack;
        ack.mutable_metrics_ack()->set_sequence(sequence);
        stream->Write(ack);
      }
    }
    std::lock_guard lock(mutex_);
    if (context_ == context) context_ = nullptr;
    return grpc::Status::OK;
  }

  explicit ScriptedAggregator(uint64_t subscription = 0) : subscription_(subscription) {}

  // Deltas numbered up to `sequence` are acknowledged as they arrive; later ones are not.
  void AcknowledgeThrough(uint64_t sequence) {
    std::lock_guard lock(mutex_);
    acknowledge_through_ = sequence;
  }
  // Ends the current stream, as a dying aggregator or a broken connection would.
  void EndStream() {
    std::lock_guard lock(mutex_);
    if (context_ != nullptr) context_->TryCancel();
  }
  // Waits until `count` streams have said hello.
  bool WaitForStreams(size_t count) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, 10s, [&] { return streams_.size() >= count; });
  }
  // Waits until stream `index` has seen `count` deltas; returns what it saw.
  SeenStream WaitFor(size_t index, size_t count) {
    std::unique_lock lock(mutex_);
    changed_.wait_for(lock, 10s, [&] {
      return streams_.size() > index && streams_[index].sequences.size() >= count;
    });
    return streams_.size() > index ? streams_[index] : SeenStream{};
  }
  // Waits until stream `index` has been sent `count` tap events; returns what it saw.
  SeenStream WaitForTap(size_t index, size_t count) {
    std::unique_lock lock(mutex_);
    changed_.wait_for(lock, 10s, [&] {
      return streams_.size() > index && streams_[index].tapped.size() >= count;
    });
    return streams_.size() > index ? streams_[index] : SeenStream{};
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<SeenStream> streams_;
  grpc::ServerContext* context_ = nullptr;
  uint64_t acknowledge_through_ = 0;
  const uint64_t subscription_;
};

// Serves `aggregator` on a free loopback port, put in `port`.
std::unique_ptr<grpc::Server> ServeScripted(ScriptedAggregator& aggregator, int* port) {
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), port);
  builder.RegisterService(&aggregator);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  REQUIRE(*port != 0);
  return server;
}

bool Eventually(const std::function<bool()>& condition) {
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (!condition()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(10ms);
  }
  return true;
}

// A client of the one aggregator replica at `address`, for node-a, with no pods and no
// taps, and the token hook given.
std::unique_ptr<AggregatorClient> ClientOf(
    const std::string& address, TapSubscriptions& tap,
    std::function<absl::StatusOr<std::string>()> token = {}) {
  absl::StatusOr<AggregatorDialer> dialer =
      AggregatorDialer::Make(address, TlsFiles{}, "--aggregator-");
  REQUIRE(dialer.ok());
  AggregatorClient::Hooks hooks;
  hooks.pods = [] { return std::vector<v1::Pod>{}; };
  hooks.drain_tap = [](std::vector<v1::TapEvent>*) { return uint64_t{0}; };
  hooks.token = std::move(token);
  return std::make_unique<AggregatorClient>(*std::move(dialer), "node-a", "0123456789abcdef", tap,
                                            std::move(hooks));
}

std::shared_ptr<const v1::MetricsDelta> Numbered(uint64_t sequence) {
  auto delta = std::make_shared<v1::MetricsDelta>();
  delta->set_sequence(sequence);
  return delta;
}

// The agent's streams to the replicas at `addresses`, for node-a, with no pods, and the tap
// events `drain_tap` hands out.
std::unique_ptr<AggregatorReplicas> ReplicasOf(
    const std::string& addresses, TapSubscriptions& tap,
    std::function<uint64_t(std::vector<v1::TapEvent>*)> drain_tap = [](std::vector<v1::TapEvent>*) {
      return uint64_t{0};
    }) {
  AggregatorClient::Hooks hooks;
  hooks.pods = [] { return std::vector<v1::Pod>{}; };
  hooks.drain_tap = std::move(drain_tap);
  absl::StatusOr<std::unique_ptr<AggregatorReplicas>> replicas =
      AggregatorReplicas::Make(addresses, TlsFiles{}, "node-a", tap, std::move(hooks));
  REQUIRE(replicas.ok());
  return *std::move(replicas);
}

TEST_CASE("a delta is kept until acknowledged and sent again in order on the next stream",
          "[aggregator_client]") {
  ScriptedAggregator aggregator;
  int port = 0;
  const std::unique_ptr<grpc::Server> server = ServeScripted(aggregator, &port);

  TapSubscriptions tap;
  const std::unique_ptr<AggregatorReplicas> owned =
      ReplicasOf(fmt::format("127.0.0.1:{}", port), tap);
  AggregatorReplicas& client = *owned;
  client.Start();

  // Three deltas; the aggregator files them but acknowledges only the first two before the
  // stream breaks.
  aggregator.AcknowledgeThrough(2);
  REQUIRE(Eventually([&] { return client.status().connected == 1; }));
  for (int i = 0; i < 3; ++i) client.SendMetrics(v1::MetricsDelta());
  const SeenStream first = aggregator.WaitFor(0, 3);
  CHECK(first.sequences == std::vector<uint64_t>{1, 2, 3});
  CHECK(first.instance.size() == 16);
  REQUIRE(Eventually([&] { return client.status().unacknowledged_deltas == 1; }));
  aggregator.EndStream();

  // The next stream brings the third again, before anything newer.
  aggregator.AcknowledgeThrough(UINT64_MAX);
  const SeenStream resent = aggregator.WaitFor(1, 1);
  CHECK(resent.sequences == std::vector<uint64_t>{3});
  CHECK(resent.instance == first.instance);  // the same agent: its numbers go on
  client.SendMetrics(v1::MetricsDelta());
  CHECK(aggregator.WaitFor(1, 2).sequences == std::vector<uint64_t>{3, 4});
  CHECK(Eventually([&] { return client.status().unacknowledged_deltas == 0; }));

  // Nothing acknowledged is sent again.
  aggregator.AcknowledgeThrough(0);
  aggregator.EndStream();
  REQUIRE(aggregator.WaitForStreams(3));
  client.SendMetrics(v1::MetricsDelta());
  CHECK(aggregator.WaitFor(2, 1).sequences == std::vector<uint64_t>{5});

  // An aggregator that acknowledges nothing on a stream (one older than acknowledgements)
  // is not sent its deltas again: it filed what it read, and would count it twice.
  aggregator.EndStream();
  REQUIRE(aggregator.WaitForStreams(4));
  client.SendMetrics(v1::MetricsDelta());
  CHECK(aggregator.WaitFor(3, 1).sequences == std::vector<uint64_t>{6});

  client.Stop();
  server->Shutdown();
}

TEST_CASE(
    "deltas past five minutes' worth with no aggregator are given up oldest first and "
    "counted",
    "[aggregator_client]") {
  // Nothing listens at this address: every delta stays kept.
  TapSubscriptions tap;
  const std::unique_ptr<AggregatorClient> owned = ClientOf("127.0.0.1:1", tap);
  AggregatorClient& client = *owned;
  uint64_t sequence = 0;
  for (int i = 0; i < 300; ++i) client.SendMetrics(Numbered(++sequence));
  CHECK(client.unacknowledged_deltas() == 300);
  CHECK(client.dropped_deltas() == 0);
  for (int i = 0; i < 7; ++i) client.SendMetrics(Numbered(++sequence));
  CHECK(client.unacknowledged_deltas() == 300);
  CHECK(client.dropped_deltas() == 7);
}

TEST_CASE("each new stream presents the token as it is then, and none is opened without one",
          "[aggregator_client]") {
  ScriptedAggregator aggregator;
  int port = 0;
  const std::unique_ptr<grpc::Server> server = ServeScripted(aggregator, &port);

  // The kubelet's file, as the hook reads it: missing at first, then rotated.
  std::mutex token_mutex;
  std::string token;
  int asked = 0;
  TapSubscriptions tap;
  const std::unique_ptr<AggregatorClient> owned =
      ClientOf(fmt::format("127.0.0.1:{}", port), tap, [&]() -> absl::StatusOr<std::string> {
        std::lock_guard lock(token_mutex);
        ++asked;
        if (token.empty()) return absl::UnavailableError("no token yet");
        return token;
      });
  AggregatorClient& client = *owned;
  client.Start();
  REQUIRE(Eventually([&] {
    std::lock_guard lock(token_mutex);
    return asked >= 2;  // asked, and asked again after a backoff
  }));
  CHECK_FALSE(client.connected());
  {
    std::lock_guard lock(token_mutex);
    token = "first";
  }
  REQUIRE(aggregator.WaitForStreams(1));
  CHECK(aggregator.WaitFor(0, 0).authorization == "Bearer first");
  REQUIRE(Eventually([&] { return client.connected(); }));

  // Rotated: the open stream is not touched; the next one presents the new token.
  {
    std::lock_guard lock(token_mutex);
    token = "rotated";
  }
  client.SendMetrics(Numbered(1));
  CHECK(aggregator.WaitFor(0, 1).sequences == std::vector<uint64_t>{1});
  aggregator.EndStream();
  REQUIRE(aggregator.WaitForStreams(2));
  CHECK(aggregator.WaitFor(1, 0).authorization == "Bearer rotated");

  client.Stop();
  server->Shutdown();
}

TEST_CASE("every replica is sent every delta, each acknowledging on its own",
          "[aggregator_client]") {
  ScriptedAggregator first;
  ScriptedAggregator second;
  int first_port = 0;
  int second_port = 0;
  const std::unique_ptr<grpc::Server> first_server = ServeScripted(first, &first_port);
  const std::unique_ptr<grpc::Server> second_server = ServeScripted(second, &second_port);
  first.AcknowledgeThrough(UINT64_MAX);
  second.AcknowledgeThrough(1);  // the second replica falls behind after the first delta

  TapSubscriptions tap;
  const std::unique_ptr<AggregatorReplicas> owned =
      ReplicasOf(fmt::format("127.0.0.1:{}, 127.0.0.1:{}", first_port, second_port), tap);
  AggregatorReplicas& replicas = *owned;
  replicas.Start();
  REQUIRE(Eventually([&] { return replicas.status().connected == 2; }));
  CHECK(replicas.status().replicas == 2);
  for (int i = 0; i < 3; ++i) replicas.SendMetrics(v1::MetricsDelta());
  const SeenStream to_first = first.WaitFor(0, 3);
  CHECK(to_first.sequences == std::vector<uint64_t>{1, 2, 3});
  CHECK(second.WaitFor(0, 3).sequences == std::vector<uint64_t>{1, 2, 3});
  CHECK(second.WaitFor(0, 0).instance == to_first.instance);  // one process, one numbering
  // What one replica has not acknowledged is kept for it alone.
  REQUIRE(Eventually([&] { return replicas.status().unacknowledged_deltas == 2; }));

  // The second replica's stream breaks: it is sent what it missed; the first goes on.
  second.AcknowledgeThrough(UINT64_MAX);
  second.EndStream();
  REQUIRE(second.WaitForStreams(2));
  replicas.SendMetrics(v1::MetricsDelta());
  CHECK(second.WaitFor(1, 3).sequences == std::vector<uint64_t>{2, 3, 4});
  CHECK(first.WaitFor(0, 4).sequences == std::vector<uint64_t>{1, 2, 3, 4});
  CHECK(Eventually([&] { return replicas.status().unacknowledged_deltas == 0; }));
  replicas.Stop();
}

TEST_CASE("a replica is sent the events of its own taps, and its stream ending ends only those",
          "[aggregator_client]") {
  ScriptedAggregator first(11);
  ScriptedAggregator second(22);
  int first_port = 0;
  int second_port = 0;
  const std::unique_ptr<grpc::Server> first_server = ServeScripted(first, &first_port);
  const std::unique_ptr<grpc::Server> second_server = ServeScripted(second, &second_port);

  // The workers' outboxes, as the hook drains them: an event for each subscription.
  std::mutex outbox_mutex;
  std::vector<v1::TapEvent> outbox;
  const auto queue_events = [&] {
    std::lock_guard lock(outbox_mutex);
    for (const uint64_t subscription : {11, 22})
      outbox.emplace_back().set_subscription(subscription);
  };
  TapSubscriptions tap;
  const std::unique_ptr<AggregatorReplicas> owned =
      ReplicasOf(fmt::format("127.0.0.1:{},127.0.0.1:{}", first_port, second_port), tap,
                 [&](std::vector<v1::TapEvent>* out) {
                   std::lock_guard lock(outbox_mutex);
                   for (v1::TapEvent& event : outbox) out->push_back(std::move(event));
                   outbox.clear();
                   return uint64_t{0};
                 });
  AggregatorReplicas& replicas = *owned;
  replicas.Start();
  REQUIRE(Eventually([&] { return tap.Current()->size() == 2; }));
  queue_events();
  CHECK(first.WaitForTap(0, 1).tapped == std::vector<uint64_t>{11});
  CHECK(second.WaitForTap(0, 1).tapped == std::vector<uint64_t>{22});

  // The first replica's stream ends (its next one subscribes nothing): the second's tap stays.
  first.EndStream();
  REQUIRE(Eventually([&] { return tap.Current()->size() == 1; }));
  CHECK(tap.Current()->front().id == 22);
  queue_events();
  CHECK(second.WaitForTap(0, 2).tapped == std::vector<uint64_t>{22, 22});
  replicas.Stop();
}

TEST_CASE("an aggregator address that is no list of HOST:PORT is refused, saying so",
          "[aggregator_client]") {
  TapSubscriptions tap;
  absl::StatusOr<std::unique_ptr<AggregatorReplicas>> replicas =
      AggregatorReplicas::Make("127.0.0.1:1,agg", TlsFiles{}, "node-a", tap, {});
  REQUIRE_FALSE(replicas.ok());
  CHECK(replicas.status().message() ==
        "--aggregator: 'agg' is not HOST:PORT: give HOST:PORT, or several separated by commas");
  replicas = AggregatorReplicas::Make("127.0.0.1:1,10.0.0.1:1", TlsFiles{}, "node-a", tap, {});
  REQUIRE_FALSE(replicas.ok());
  CHECK(absl::StartsWith(replicas.status().message(),
                         "the aggregator at 10.0.0.1:1 is not on loopback"));
}

}  // namespace
}  // namespace nodemesh::agent
