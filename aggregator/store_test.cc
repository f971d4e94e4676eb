#include "aggregator/store.h"

#include <catch2/catch.hpp>
#include <vector>

#include "aggregator/test_util.h"

namespace nodemesh::aggregator {
namespace {

using testing::DeltaBuilder;
using testing::kNow;
using testing::MakePod;

const v1::Identity& Web() {
  static const v1::Identity identity =
      MakePod("emojivoto", "web-1", "Deployment", "web", "node-a", true).identity();
  return identity;
}
const v1::Identity& Voting() {
  static const v1::Identity identity =
      MakePod("emojivoto", "voting-1", "Deployment", "voting", "node-b", true).identity();
  return identity;
}

// Everything a scan hands out, in order.
struct Recorder : StoreVisitor {
  struct Response {
    int64_t second;
    ResponseLabels labels;
    uint64_t responses;
    metrics::SparseBuckets latency;
  };
  struct Tcp {
    int64_t second;
    TrafficLabels labels;
    TcpCounts counts;
  };
  std::vector<Response> responses;
  std::vector<Tcp> tcp;

  void Response(int64_t second, const ResponseLabels& labels,
                const ResponseCounts& counts) override {
    responses.push_back({second, labels, counts.responses, counts.latency.Unpack()});
  }
  void Tcp(int64_t second, const TrafficLabels& labels, const TcpCounts& counts) override {
    tcp.push_back({second, labels, counts});
  }
  uint64_t total_responses() const {
    uint64_t total = 0;
    for (const auto& r : responses) total += r.responses;
    return total;
  }
};

TEST_CASE("A scan visits exactly the seconds asked for, newest first", "[unit]") {
  Store store;
  for (int64_t second = kNow - 15; second < kNow; ++second) {
    REQUIRE(store
                .Add(DeltaBuilder(second)
                         .Responses(Web(), Voting(), v1::INBOUND, "GET /vote", 10, 1'000'000)
                         .delta(),
                     kNow)
                .ok());
  }
  Recorder recorder;
  store.Scan(kNow - 10, kNow - 1, recorder);
  REQUIRE(recorder.responses.size() == 10);
  CHECK(recorder.total_responses() == 100);
  CHECK(recorder.responses.front().second == kNow - 1);
  CHECK(recorder.responses.back().second == kNow - 10);
  const metrics::Identity destination =
      *store.identity(recorder.responses[0].labels.traffic.destination);
  CHECK(destination.pod == "voting-1");
  CHECK(destination.node == "node-b");
  CHECK(*store.route(recorder.responses[0].labels.route) == "GET /vote");
  CHECK(recorder.responses[0].labels.traffic.direction == metrics::Direction::kInbound);
}

TEST_CASE("Deltas for the same second merge: counts and histograms add up", "[unit]") {
  Store store;
  REQUIRE(store
              .Add(DeltaBuilder(kNow - 1)
                       .Responses(Web(), Voting(), v1::OUTBOUND, "GET /vote", 3, 1'000'000)
                       .delta(),
                   kNow)
              .ok());
  REQUIRE(
      store
          .Add(DeltaBuilder(kNow - 1)
                   .Responses(Web(), Voting(), v1::OUTBOUND, "GET /vote", 2, 5'000'000)
                   .Responses(Web(), Voting(), v1::OUTBOUND, "GET /vote", 1, 1'000'000, 500, true)
                   .delta(),
               kNow)
          .ok());
  Recorder recorder;
  store.Scan(kNow - 1, kNow - 1, recorder);
  REQUIRE(recorder.responses.size() == 2);  // the 500 is its own series
  for (const auto& response : recorder.responses) {
    if (response.labels.failure) {
      CHECK(response.responses == 1);
      CHECK(response.labels.status_code == 500);
      continue;
    }
    CHECK(response.responses == 5);
    metrics::Histogram expected;
    for (int i = 0; i < 3; ++i) expected.Record(1'000'000);
    for (int i = 0; i < 2; ++i) expected.Record(5'000'000);
    CHECK(response.latency == expected.NonZero());
  }
}

TEST_CASE("Connection gauges: a delta's workers add up, a later delta replaces", "[unit]") {
  Store store;
  REQUIRE(store
              .Add(DeltaBuilder(kNow - 1)
                       .Tcp(Web(), Voting(), v1::INBOUND, 2, 100, 10)
                       .Tcp(Web(), Voting(), v1::INBOUND, 3, 50, 5)
                       .delta(),
                   kNow)
              .ok());
  Recorder first;
  store.Scan(kNow - 1, kNow - 1, first);
  REQUIRE(first.tcp.size() == 1);
  CHECK(first.tcp[0].counts.open_now == 5);
  CHECK(first.tcp[0].counts.read_bytes == 150);

  REQUIRE(store.Add(DeltaBuilder(kNow - 1).Tcp(Web(), Voting(), v1::INBOUND, 4, 1, 1).delta(), kNow)
              .ok());
  Recorder second;
  store.Scan(kNow - 1, kNow - 1, second);
  REQUIRE(second.tcp.size() == 1);
  CHECK(second.tcp[0].counts.open_now == 4);
  CHECK(second.tcp[0].counts.read_bytes == 151);
}

TEST_CASE("Deltas older than the retention are refused, future ones kept at now", "[unit]") {
  Store store(StoreOptions{.retention_seconds = 60});
  const absl::Status old = store.Add(
      DeltaBuilder(kNow - 60).Responses(Web(), Voting(), v1::INBOUND, "r", 1, 1).delta(), kNow);
  CHECK(old.code() == absl::StatusCode::kOutOfRange);
  CHECK(store.stats().dropped_too_old == 1);

  REQUIRE(
      store
          .Add(DeltaBuilder(kNow + 500).Responses(Web(), Voting(), v1::INBOUND, "r", 1, 1).delta(),
               kNow)
          .ok());
  CHECK(store.stats().future_deltas == 1);
  Recorder recorder;
  store.Scan(kNow - 59, kNow, recorder);
  REQUIRE(recorder.responses.size() == 1);
  CHECK(recorder.responses[0].second == kNow);
}

TEST_CASE("Malformed series are dropped, the rest of the delta kept", "[unit]") {
  Store store;
  DeltaBuilder builder(kNow - 1);
  builder.Responses(Web(), Voting(), v1::INBOUND, "r", 4, 1000);
  builder.mutable_delta()->add_responses()->mutable_traffic()->set_source(99);
  v1::TcpSeries& no_direction = *builder.mutable_delta()->add_tcp();
  no_direction.set_open_now(1);
  const absl::Status status = store.Add(builder.delta(), kNow);
  CHECK(status.code() == absl::StatusCode::kInvalidArgument);
  CHECK(store.stats().dropped_invalid == 2);
  Recorder recorder;
  store.Scan(kNow - 1, kNow - 1, recorder);
  CHECK(recorder.total_responses() == 4);
  CHECK(recorder.tcp.empty());
}

TEST_CASE("A second holds at most its series limit", "[unit]") {
  Store store(StoreOptions{.max_series_per_second = 2});
  const absl::Status status = store.Add(DeltaBuilder(kNow - 1)
                                            .Responses(Web(), Voting(), v1::INBOUND, "a", 1, 1)
                                            .Responses(Web(), Voting(), v1::INBOUND, "b", 1, 1)
                                            .Responses(Web(), Voting(), v1::INBOUND, "c", 1, 1)
                                            .delta(),
                                        kNow);
  CHECK(status.code() == absl::StatusCode::kResourceExhausted);
  CHECK(store.stats().dropped_over_limit == 1);
  Recorder recorder;
  store.Scan(kNow - 1, kNow - 1, recorder);
  CHECK(recorder.responses.size() == 2);
}

TEST_CASE("Old seconds age out, their identities and routes are forgotten later", "[unit]") {
  Store store(StoreOptions{.retention_seconds = 60});
  REQUIRE(store
              .Add(DeltaBuilder(kNow - 1)
                       .Responses(Web(), Voting(), v1::INBOUND, "GET /old", 1, 1)
                       .delta(),
                   kNow)
              .ok());
  CHECK(store.stats().identities == 2);
  CHECK(store.stats().routes == 1);

  // The ring slot of kNow - 1 comes round again a retention later: the new second replaces it.
  REQUIRE(store
              .Add(DeltaBuilder(kNow + 59)
                       .Responses(Voting(), Web(), v1::INBOUND, "GET /new", 2, 1)
                       .delta(),
                   kNow + 60)
              .ok());
  Recorder recorder;
  store.Scan(kNow - 1, kNow + 59, recorder);
  REQUIRE(recorder.responses.size() == 1);
  CHECK(recorder.responses[0].second == kNow + 59);

  store.Expire(kNow + 60 + 59);
  Recorder after_expiry;
  store.Scan(kNow, kNow + 119, after_expiry);
  CHECK(after_expiry.responses.empty());
  // Still remembered for a margin past the retention, so a scan in flight stays consistent.
  CHECK(store.stats().routes == 2);
  store.Expire(kNow + 60 + 59 + 60 + 120);
  CHECK(store.stats().routes == 0);
  CHECK(store.stats().identities == 0);
}

TEST_CASE("Over the memory budget, the oldest seconds go first", "[unit]") {
  Store store(StoreOptions{.max_memory_bytes = 1});
  for (int64_t second = kNow - 10; second < kNow; ++second) {
    REQUIRE(store
                .Add(DeltaBuilder(second)
                         .Responses(Web(), Voting(), v1::INBOUND, "GET /vote", 1, 1'000'000)
                         .Tcp(Web(), Voting(), v1::INBOUND, 1)
                         .delta(),
                     kNow)
                .ok());
  }
  const size_t before = store.stats().memory_bytes;
  CHECK(before > 10 * (sizeof(ResponseLabels) + sizeof(TrafficLabels)));
  store.Expire(kNow);
  CHECK(store.stats().evicted_for_memory == 9);
  CHECK(store.stats().memory_bytes < before / 5);
  Recorder recorder;
  store.Scan(kNow - 10, kNow - 1, recorder);
  REQUIRE(recorder.responses.size() == 1);  // the second agents may still be writing stays
  CHECK(recorder.responses[0].second == kNow - 1);
}

}  // namespace
}  // namespace nodemesh::aggregator
