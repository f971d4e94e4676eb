#include "aggregator/store.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <map>
#include <optional>
#include <random>
#include <tuple>
#include <utility>
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
  // kNow - 11 .. kNow - 2 holds no whole 10 s span (kNow - 20 starts a minute): no rollup.
  Recorder recorder;
  store.Scan(kNow - 11, kNow - 2, recorder);
  REQUIRE(recorder.responses.size() == 10);
  CHECK(recorder.total_responses() == 100);
  CHECK(recorder.responses.front().second == kNow - 2);
  CHECK(recorder.responses.back().second == kNow - 11);
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
  CHECK(*store.route(recorder.responses[0].labels.route) == "GET /new");

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

// What a query makes of a scan: per series, the sums and the first gauge met (the newest),
// and how many series-seconds (or series-minutes) it was handed.
struct Totals : StoreVisitor {
  struct Series {
    uint64_t responses = 0;
    std::map<uint16_t, uint64_t> latency;
  };
  struct Connections {
    uint64_t read_bytes = 0;
    uint64_t write_bytes = 0;
    std::optional<int64_t> open_now;
  };
  std::map<std::tuple<uint32_t, uint32_t, uint32_t, uint16_t, bool>, Series> responses;
  std::map<std::pair<uint32_t, uint32_t>, Connections> tcp;
  size_t visits = 0;

  void Response(int64_t, const ResponseLabels& labels, const ResponseCounts& counts) override {
    ++visits;
    Series& series = responses[{labels.traffic.source, labels.traffic.destination, labels.route,
                                labels.status_code, labels.failure}];
    series.responses += counts.responses;
    for (const auto& [bucket, count] : counts.latency.Unpack()) series.latency[bucket] += count;
  }
  void Tcp(int64_t, const TrafficLabels& labels, const TcpCounts& counts) override {
    ++visits;
    Connections& connections = tcp[{labels.source, labels.destination}];
    connections.read_bytes += counts.read_bytes;
    connections.write_bytes += counts.write_bytes;
    if (!connections.open_now) connections.open_now = counts.open_now;
  }
  bool operator==(const Totals& other) const {
    if (responses.size() != other.responses.size() || tcp.size() != other.tcp.size()) {
      return false;
    }
    for (const auto& [key, series] : responses) {
      const auto found = other.responses.find(key);
      if (found == other.responses.end() || found->second.responses != series.responses ||
          found->second.latency != series.latency) {
        return false;
      }
    }
    for (const auto& [key, connections] : tcp) {
      const auto found = other.tcp.find(key);
      if (found == other.tcp.end() || found->second.read_bytes != connections.read_bytes ||
          found->second.write_bytes != connections.write_bytes ||
          found->second.open_now != connections.open_now) {
        return false;
      }
    }
    return true;
  }
};

// The range scanned one second at a time, newest first: a scan of one second never reads a
// rollup, so this is what the seconds alone say.
Totals SecondBySecond(const Store& store, int64_t first, int64_t last) {
  Totals totals;
  for (int64_t second = last; second >= first; --second) store.Scan(second, second, totals);
  return totals;
}

// kNow - 20 starts a minute.
constexpr int64_t kMinute = kNow - 20;

TEST_CASE("Whole minutes and 10 s are read from rollups that sum their seconds exactly", "[unit]") {
  Store store;
  // Five minutes and a half of seconds, one to three deltas each (several workers, a timer
  // that ran twice), in shuffled order as agents catching up would send them: responses on
  // two routes and a failure status with spread latencies, and connection gauges that move.
  std::mt19937 random(7);
  std::vector<v1::MetricsDelta> deltas;
  for (int64_t second = kMinute - 300; second < kMinute + 30; ++second) {
    const int repeats = 1 + static_cast<int>(random() % 3);
    for (int i = 0; i < repeats; ++i) {
      DeltaBuilder builder(second);
      std::vector<int64_t> latencies;
      for (uint32_t n = random() % 20; n > 0; --n)
        latencies.push_back(1000 + random() % 50'000'000);
      builder.ResponsesWithLatencies(Web(), Voting(), v1::OUTBOUND, second % 2 ? "a" : "b",
                                     latencies);
      if (random() % 4 == 0) builder.Responses(Web(), Voting(), v1::OUTBOUND, "a", 1, 9, 503, true);
      builder.Tcp(Web(), Voting(), v1::OUTBOUND, static_cast<int64_t>(random() % 100),
                  random() % 1000, random() % 1000);
      deltas.push_back(builder.delta());
    }
  }
  std::shuffle(deltas.begin(), deltas.end(), random);
  for (const v1::MetricsDelta& delta : deltas) REQUIRE(store.Add(delta, kMinute + 31).ok());

  for (const auto& [first, last] : std::vector<std::pair<int64_t, int64_t>>{
           {kMinute - 300, kMinute + 29},  // five whole minutes, then seconds
           {kMinute - 299, kMinute - 1},   // a minute's seconds at the old end
           {kMinute - 241, kMinute - 61},  // partial minutes at both ends
           {kMinute - 120, kMinute - 61},  // one whole minute
           {kMinute - 100, kMinute - 90},  // a whole 10 s and a second
           {kMinute - 97, kMinute - 93},   // within 10 s
       }) {
    INFO("seconds " << first - kMinute << " .. " << last - kMinute << " from the minute");
    Totals scanned;
    store.Scan(first, last, scanned);
    const Totals expected = SecondBySecond(store, first, last);
    CHECK(scanned == expected);
    CHECK(scanned.visits <= expected.visits);
  }
  Totals hour;
  store.Scan(kMinute - 300, kMinute - 1, hour);
  const Totals seconds = SecondBySecond(store, kMinute - 300, kMinute - 1);
  // Three series a minute (two routes and the failure) and the connections: five rollups.
  CHECK(hour.visits < seconds.visits / 30);
}

TEST_CASE("A rollup that lost a second is not read, even after late deltas", "[unit]") {
  Store store(StoreOptions{.retention_seconds = 120});
  for (int64_t second = kMinute; second < kMinute + 60; ++second) {
    REQUIRE(store
                .Add(DeltaBuilder(second)
                         .Responses(Web(), Voting(), v1::INBOUND, "r", 10, 1'000'000)
                         .delta(),
                     kMinute + 60)
                .ok());
  }
  Totals whole;
  store.Scan(kMinute, kMinute + 59, whole);
  CHECK(whole.visits == 1);
  CHECK(whole.responses.begin()->second.responses == 600);

  // The ring slot of the minute's first second is taken by a second a retention later, and a
  // delta for another of its seconds comes late: the minute is read from its seconds.
  REQUIRE(store
              .Add(DeltaBuilder(kMinute + 120)
                       .Responses(Web(), Voting(), v1::INBOUND, "r", 1, 1'000'000)
                       .delta(),
                   kMinute + 121)
              .ok());
  REQUIRE(store
              .Add(DeltaBuilder(kMinute + 30)
                       .Responses(Web(), Voting(), v1::INBOUND, "r", 5, 1'000'000)
                       .delta(),
                   kMinute + 121)
              .ok());
  // The first 10 s from their nine remaining seconds, the other five 10 s from their rollups.
  Totals after;
  store.Scan(kMinute, kMinute + 59, after);
  CHECK(after == SecondBySecond(store, kMinute, kMinute + 59));
  CHECK(after.visits == 9 + 5);
  CHECK(after.responses.begin()->second.responses == 595);
}

TEST_CASE("Series a second left out over its limit are left out of its minute too", "[unit]") {
  Store store(StoreOptions{.max_series_per_second = 1});
  for (int64_t second = kMinute; second < kMinute + 60; ++second) {
    store
        .Add(DeltaBuilder(second)
                 .Responses(Web(), Voting(), v1::INBOUND, second % 2 ? "a" : "b", 1, 1)
                 .Responses(Web(), Voting(), v1::INBOUND, "c", 1, 1)
                 .Tcp(Web(), Voting(), v1::INBOUND, 1)
                 .delta(),
             kMinute + 60)
        .IgnoreError();
  }
  Totals scanned;
  store.Scan(kMinute, kMinute + 59, scanned);
  CHECK(scanned == SecondBySecond(store, kMinute, kMinute + 59));
  CHECK(scanned.tcp.empty());
  CHECK(store.stats().dropped_over_limit == 120);
}

TEST_CASE("Seconds aged out or evicted take their minute's rollup with them", "[unit]") {
  Store store(StoreOptions{.retention_seconds = 120, .max_memory_bytes = 1});
  for (int64_t second = kMinute; second < kMinute + 60; ++second) {
    REQUIRE(store
                .Add(DeltaBuilder(second)
                         .Responses(Web(), Voting(), v1::INBOUND, "r", 1, 1'000'000)
                         .delta(),
                     kMinute + 60)
                .ok());
  }
  // Over budget: every second of the minute goes but the newest, which agents may still
  // write, and the rollup with them.
  store.Expire(kMinute + 60);
  CHECK(store.stats().evicted_for_memory == 59);
  Totals scanned;
  store.Scan(kMinute, kMinute + 59, scanned);
  CHECK(scanned == SecondBySecond(store, kMinute, kMinute + 59));
  CHECK(scanned.responses.begin()->second.responses == 1);

  store.Expire(kMinute + 180);  // and all of it once it has aged out
  CHECK(store.stats().memory_bytes == 0);
}

}  // namespace
}  // namespace nodemesh::aggregator
