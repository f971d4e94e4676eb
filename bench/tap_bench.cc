// The cost of tapping, per request, on a worker's thread: an HTTP/1 exchange observed (parsed,
// counted) with no tap, with a tap active that the request does not match, and with a tap that
// takes every request (a request, a response and an end event each, queued for the consumer),
// read against each other in the same run; and what a local tap's consumer (the admin API's
// GET /tap) spends turning those events into JSON, against protobuf's own JSON printer (which
// the admin API used before) on the same events. Run through bench/run.sh.
#include <benchmark/benchmark.h>
#include <google/protobuf/util/json_util.h>

#include <memory>
#include <string>
#include <vector>

#include "agent/observer/local_tap.h"
#include "agent/observer/observer.h"
#include "test/lib/observer_context.h"

namespace nodemesh::agent {
namespace {

const std::string kRequest =
    "GET /api/vote?choice=:doughnut: HTTP/1.1\r\nHost: web-svc.emojivoto:8080\r\n"
    "User-Agent: Go-http-client/1.1\r\nContent-Type: application/json\r\n\r\n";
const std::string kResponse =
    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";

// A worker's observer on one connection, and the tap subscriptions the benchmark sets.
struct Fixture : testing::ObserverContextFixture {
  Fixture() : observer(Connect()) {}
  ~Fixture() { observer->OnClosed(RelayEnd::kClosed, now); }

  void Exchange() {
    observer->OnBytes(Side::kClient, kRequest, now += 1000);
    observer->OnBytes(Side::kUpstream, kResponse, now += 250'000);
  }
  // A tap of every request (no rate limit), and the events of `exchanges` exchanges.
  std::vector<v1::TapEvent> Tapped(int exchanges) {
    TapFilter filter;
    filter.id = kLocalTapBit | 1;
    tap.Add(filter);
    for (int i = 0; i < exchanges; ++i) Exchange();
    std::vector<v1::TapEvent> events;
    context.local_tap_outbox().Drain(&events);
    return events;
  }

  std::unique_ptr<ConnectionObserver> observer;
  int64_t now = 1'000'000'000;
};

enum TapCase : int64_t { kNoTap, kTapNotMatching, kTapEveryRequest };

void BM_Exchange(benchmark::State& state) {
  Fixture fixture;
  if (state.range(0) != kNoTap) {
    TapFilter filter;
    filter.id = kLocalTapBit | 1;
    if (state.range(0) == kTapNotMatching) filter.method = "POST";
    fixture.tap.Add(filter);  // no rate limit: every matching request is tapped
  }
  std::vector<v1::TapEvent> events;
  for (int i = 0; i < 10; ++i) fixture.Exchange();
  for (auto _ : state) {
    fixture.Exchange();
    // The consumer takes the events away, as the local taps do five times a second.
    if (fixture.context.local_tap_outbox().Drain(&events); events.size() >= 1000) {
      state.PauseTiming();
      events.clear();
      state.ResumeTiming();
    }
  }
  state.SetLabel(state.range(0) == kNoTap            ? "no tap"
                 : state.range(0) == kTapNotMatching ? "a tap the request does not match"
                                                     : "a tap of every request (3 events)");
}
BENCHMARK(BM_Exchange)->Arg(kNoTap)->Arg(kTapNotMatching)->Arg(kTapEveryRequest);

// What GET /tap spends per polled event on their JSON, as the admin API writes it, in polls of
// 60 events (a tap of 100 requests a second polled five times a second: three events each).
void BM_TapEventJson(benchmark::State& state) {
  Fixture fixture;
  const std::vector<v1::TapEvent> events = fixture.Tapped(20);
  for (auto _ : state) benchmark::DoNotOptimize(TapEventsJson(events));
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(events.size()));
}
BENCHMARK(BM_TapEventJson);

// The baseline: each event through protobuf's JSON printer, read back into the answer's JSON.
void BM_TapEventJsonByProtobufPrinter(benchmark::State& state) {
  Fixture fixture;
  const std::vector<v1::TapEvent> events = fixture.Tapped(20);
  google::protobuf::util::JsonPrintOptions print;
  print.preserve_proto_field_names = true;
  for (auto _ : state) {
    nlohmann::json json = nlohmann::json::array();
    for (const v1::TapEvent& event : events) {
      std::string text;
      if (google::protobuf::util::MessageToJsonString(event, &text, print).ok()) {
        json.push_back(nlohmann::json::parse(text));
      }
    }
    benchmark::DoNotOptimize(json);
  }
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(events.size()));
}
BENCHMARK(BM_TapEventJsonByProtobufPrinter);

}  // namespace
}  // namespace nodemesh::agent

BENCHMARK_MAIN();
