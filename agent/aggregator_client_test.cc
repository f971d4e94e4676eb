// The agent's stream to the aggregator against an in-process AgentService that the test
// drives: which deltas it acknowledges, and when it ends a stream.
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

#include "nodemesh/v1/nodemesh.grpc.pb.h"

namespace nodemesh::agent {
namespace {

using namespace std::chrono_literals;

// One stream as the aggregator saw it.
struct SeenStream {
  std::string instance;
  std::vector<uint64_t> sequences;
  std::string authorization;  // its `authorization` metadata, if any
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
      streams_.push_back(SeenStream{
          message.hello().instance(),
          {},
          authorization == metadata.end()
              ? ""
              : std::string(authorization->second.data(), authorization->second.size())});
      index = streams_.size() - 1;
      context_ = context;
    }
    changed_.notify_all();
    while (stream->Read(&message)) {
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

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<SeenStream> streams_;
  grpc::ServerContext* context_ = nullptr;
  uint64_t acknowledge_through_ = 0;
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

// An agent's client of the aggregator at `address`, for node-a, with no pods and no taps, and
// the token hook given.
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
  return std::make_unique<AggregatorClient>(*std::move(dialer), "node-a", tap, std::move(hooks));
}

TEST_CASE("a delta is kept until acknowledged and sent again in order on the next stream",
          "[aggregator_client]") {
  ScriptedAggregator aggregator;
  int port = 0;
  const std::unique_ptr<grpc::Server> server = ServeScripted(aggregator, &port);

  TapSubscriptions tap;
  const std::unique_ptr<AggregatorClient> owned = ClientOf(fmt::format("127.0.0.1:{}", port), tap);
  AggregatorClient& client = *owned;
  client.Start();

  // Three deltas; the aggregator files them but acknowledges only the first two before the
  // stream breaks.
  aggregator.AcknowledgeThrough(2);
  REQUIRE(Eventually([&] { return client.connected(); }));
  for (int i = 0; i < 3; ++i) client.SendMetrics(v1::MetricsDelta());
  const SeenStream first = aggregator.WaitFor(0, 3);
  CHECK(first.sequences == std::vector<uint64_t>{1, 2, 3});
  CHECK(first.instance.size() == 16);
  REQUIRE(Eventually([&] { return client.unacknowledged_deltas() == 1; }));
  aggregator.EndStream();

  // The next stream brings the third again, before anything newer.
  aggregator.AcknowledgeThrough(UINT64_MAX);
  const SeenStream resent = aggregator.WaitFor(1, 1);
  CHECK(resent.sequences == std::vector<uint64_t>{3});
  CHECK(resent.instance == first.instance);  // the same agent: its numbers go on
  client.SendMetrics(v1::MetricsDelta());
  CHECK(aggregator.WaitFor(1, 2).sequences == std::vector<uint64_t>{3, 4});
  CHECK(Eventually([&] { return client.unacknowledged_deltas() == 0; }));

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
  for (int i = 0; i < 300; ++i) client.SendMetrics(v1::MetricsDelta());
  CHECK(client.unacknowledged_deltas() == 300);
  CHECK(client.dropped_deltas() == 0);
  for (int i = 0; i < 7; ++i) client.SendMetrics(v1::MetricsDelta());
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
  client.SendMetrics(v1::MetricsDelta());
  CHECK(aggregator.WaitFor(0, 1).sequences == std::vector<uint64_t>{1});
  aggregator.EndStream();
  REQUIRE(aggregator.WaitForStreams(2));
  CHECK(aggregator.WaitFor(1, 0).authorization == "Bearer rotated");

  client.Stop();
  server->Shutdown();
}

}  // namespace
}  // namespace nodemesh::agent
