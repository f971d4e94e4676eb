// Two replicas of the aggregator over real in-process gRPC, fed by the same fake agent as
// agents feed every replica: the one started later files the agent's seconds from its start
// on, takes the seconds before it from its peer, and then holds exactly what the peer holds.
// The clock is the test's; the backfill's own waits are shortened.
#include "aggregator/backfill.h"

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <map>
#include <memory>
#include <thread>
#include <tuple>

#include "aggregator/server.h"
#include "aggregator/test_util.h"
#include "test/lib/fake_agent.h"
#include "test/lib/process.h"

namespace nodemesh::aggregator {
namespace {

using namespace std::chrono_literals;
using nodemesh::testing::FakeAgent;
using testing::Cast;
using testing::DeltaBuilder;
using testing::kNow;

// Both replicas' clock: the test moves it.
struct ReplicaClock {
  std::atomic<int64_t> seconds{kNow};
  Clock clock() {
    return [this] { return std::chrono::system_clock::time_point(std::chrono::seconds(seconds)); };
  }
};

// Polls `condition` for up to 10 s.
bool Within(const std::function<bool()>& condition) {
  return nodemesh::testing::PollUntil(condition, 10s, 5ms);
}

// A replica serving on a free loopback port, started at the clock's second.
struct Replica {
  Replica(ReplicaClock& clock, std::string peers) {
    ServerOptions options;
    options.listen_address = "127.0.0.1:0";
    options.clock = clock.clock();
    options.housekeeping_interval = 0ms;
    options.backfill.peers = std::move(peers);
    options.backfill.grace = 50ms;
    options.backfill.patience = 500ms;
    options.backfill.give_up_after = 500ms;
    options.backfill.retry_interval = 50ms;
    server = std::make_unique<AggregatorServer>(std::move(options));
    const absl::StatusOr<int> port = server->Start();
    REQUIRE(port.ok());
    address = "127.0.0.1:" + std::to_string(*port);
  }
  std::unique_ptr<AggregatorServer> server;
  std::string address;
};

// Every response series of the store, by second and by what its labels name, with its count
// and latency buckets: two stores that hold the same compare equal.
using Held = std::map<std::tuple<int64_t, std::string, std::string, std::string, uint16_t>,
                      std::pair<uint64_t, metrics::SparseBuckets>>;

Held HeldBy(const Store& store, int64_t first_second, int64_t last_second) {
  class Collect final : public StoreVisitor {
   public:
    Collect(const Store& store, Held& held) : store_(store), held_(held) {}
    void Response(int64_t second, const ResponseLabels& labels,
                  const ResponseCounts& counts) override {
      auto& [responses, buckets] =
          held_[{second, store_.identity(labels.traffic.source)->pod,
                 store_.identity(labels.traffic.destination)->pod,
                 store_.route(labels.route).value_or(""), labels.status_code}];
      responses += counts.responses;
      buckets = counts.latency.Unpack();
    }
    void Tcp(int64_t, const TrafficLabels&, const TcpCounts&) override {}

   private:
    const Store& store_;
    Held& held_;
  };
  Held held;
  Collect collect(store, held);
  // One second at a time: a scan of a longer range hands out whole rollups, not their seconds.
  for (int64_t second = first_second; second <= last_second; ++second) {
    store.Scan(second, second, collect);
  }
  return held;
}

// The agent's delta for `second`, numbered `sequence`: `second % 7 + 1` calls web -> voting.
v1::AgentMessage DeltaOf(int64_t second, uint64_t sequence) {
  const Cast cast;
  DeltaBuilder builder(second);
  builder.Responses(cast.web_a.identity(), cast.voting.identity(), v1::INBOUND, "GET /vote",
                    static_cast<uint64_t>(second % 7 + 1), (second % 5 + 1) * 1'000'000);
  v1::AgentMessage message;
  *message.mutable_metrics() = builder.delta();
  message.mutable_metrics()->set_sequence(sequence);
  return message;
}

TEST_CASE("a replica started later takes the seconds before its start from its peer, once",
          "[backfill]") {
  ReplicaClock clock;
  clock.seconds = kNow - 3600;
  Replica first(clock, "");
  clock.seconds = kNow;
  const Cast cast;
  FakeAgent to_first(first.address, "node-b", {cast.voting}, "agent-1");
  // The agent's last 100 seconds, numbered 1..100, reached the first replica.
  for (int64_t i = 1; i <= 100; ++i) to_first.Send(DeltaOf(kNow - 101 + i, i));
  REQUIRE(Within([&] { return first.server->store().stats().deltas == 100; }));

  // The second starts now: the agent sends it the deltas it kept (91..100, before its start:
  // acknowledged, not filed) and the next ones, which both replicas get.
  Replica second(clock, first.address);
  CHECK(second.server->history_start_second() == kNow);
  FakeAgent to_second(second.address, "node-b", {cast.voting}, "agent-1");
  for (int64_t i = 91; i <= 110; ++i) to_second.Send(DeltaOf(kNow - 101 + i, i));
  for (int64_t i = 101; i <= 110; ++i) to_first.Send(DeltaOf(kNow - 101 + i, i));
  clock.seconds = kNow + 20;

  REQUIRE(Within([&] { return !second.server->catching_up(); }));
  // Back to the peer's start, as far as the retention reaches from its own.
  CHECK(first.server->history_start_second() == kNow - 3600);
  CHECK(second.server->history_start_second() == kNow - 3599);
  REQUIRE(Within([&] { return first.server->store().stats().deltas == 110; }));
  const Held by_first = HeldBy(first.server->store(), kNow - 200, kNow + 19);
  CHECK(by_first.size() == 110);
  REQUIRE(
      Within([&] { return HeldBy(second.server->store(), kNow - 200, kNow + 19) == by_first; }));
  // The seconds the agent sent both before the second's start are counted once.
  const auto once = by_first.find({kNow - 5, "web-a", "voting-1", "GET /vote", 200});
  REQUIRE(once != by_first.end());
  CHECK(once->second.first == static_cast<uint64_t>((kNow - 5) % 7 + 1));
}

TEST_CASE("a replica whose peers do not answer keeps its windows from its start", "[backfill]") {
  ReplicaClock clock;
  Replica alone(clock, "127.0.0.1:1");
  REQUIRE(Within([&] { return !alone.server->catching_up(); }));
  CHECK(alone.server->history_start_second() == kNow);
}

TEST_CASE("a replica answers while catching up, saying so, and refuses a range that is none",
          "[backfill]") {
  ReplicaClock clock;
  Replica replica(clock, "127.0.0.1:1");
  auto stub = v1::AgentService::NewStub(
      grpc::CreateChannel(replica.address, grpc::InsecureChannelCredentials()));
  v1::BackfillRequest request;
  request.set_first_second(kNow - 10);
  request.set_last_second(kNow - 1);
  v1::BackfillReply reply;
  {
    grpc::ClientContext context;
    auto reader = stub->Backfill(&context, request);
    REQUIRE(reader->Read(&reply));
    CHECK(reply.catching_up());
    CHECK(reply.history_start_second() == kNow);
    CHECK_FALSE(reader->Read(&reply));  // it holds nothing before its start
    CHECK(reader->Finish().ok());
  }
  request.set_first_second(kNow);
  request.set_last_second(kNow - 1);
  grpc::ClientContext context;
  auto reader = stub->Backfill(&context, request);
  CHECK_FALSE(reader->Read(&reply));
  const grpc::Status status = reader->Finish();
  CHECK(status.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  CHECK(status.error_message() == "first_second 1700000000 is after last_second 1699999999");
}

}  // namespace
}  // namespace nodemesh::aggregator
