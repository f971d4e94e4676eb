// Cost of recording metrics per request (issue 4): what a worker does for every HTTP/1
// request and response on top of parsing, with the call graph of a small cluster (the
// emojivoto demo and a REST shop: 10 client pods of 5 workloads calling 6 workloads on 38
// routes after templating, some of them failing), in ns per request. Read against two
// baselines measured on the same inputs in the same run: the loop alone (fetching each
// input, no metrics), and the one latency record that any histogram-based design pays.
// Also the once-a-second collection of a worker's shard. Run through bench/run.sh, which
// prints the figures against the baselines.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "agent/metrics/identity_table.h"
#include "agent/metrics/route.h"
#include "agent/metrics/shard.h"
#include "common/metrics/classification.h"
#include "common/metrics/histogram.h"

namespace nodemesh::metrics {
namespace {

// One observed request/response as the worker sees it: the parser's request head, the
// connection's traffic key, and how it ended.
struct Exchange {
  parsers::RequestStart request;
  TrafficKey traffic;
  uint16_t status = 200;
  int16_t grpc_status = -1;
  int64_t latency_ns = 0;
  int64_t first_byte_ns = 0;
};

struct Edge {
  std::string from;  // client workload
  std::string to;    // server workload
  bool grpc = false;
  std::vector<std::string> routes;  // method + path pattern; '#' is a number, '@' a UUID
};

std::string Expand(const std::string& pattern, std::mt19937& random) {
  std::string out;
  for (char c : pattern) {
    if (c == '#') {
      out += std::to_string(random() % 100000);
    } else if (c == '@') {
      char uuid[40];
      std::snprintf(uuid, sizeof uuid, "%08x-%04x-%04x-%04x-%012llx",
                    static_cast<unsigned>(random()), static_cast<unsigned>(random() & 0xffff),
                    static_cast<unsigned>(random() & 0xffff),
                    static_cast<unsigned>(random() & 0xffff),
                    static_cast<unsigned long long>(random()) << 16);
      out += uuid;
    } else {
      out += c;
    }
  }
  return out;
}

// The inputs: a fixed-seed sample of `count` exchanges over the call graph below, and the
// tables the agent would hold for it.
struct Workload {
  IdentityTable identities;
  RouteTable routes{100};
  std::vector<Exchange> exchanges;

  explicit Workload(size_t count) {
    const std::vector<Edge> edges = {
        {"vote-bot",
         "web",
         false,
         {"GET /api/list", "GET /api/vote?choice=:doughnut:", "GET /api/leaderboard",
          "GET /js/app.js", "GET /"}},
        {"web",
         "emoji",
         true,
         {"/emojivoto.v1.EmojiService/ListAll", "/emojivoto.v1.EmojiService/FindByShortcode"}},
        {"web",
         "voting",
         true,
         {"/emojivoto.v1.VotingService/VoteDoughnut", "/emojivoto.v1.VotingService/VotePoop",
          "/emojivoto.v1.VotingService/VoteJoy", "/emojivoto.v1.VotingService/VoteSunglasses",
          "/emojivoto.v1.VotingService/VoteRelieved", "/emojivoto.v1.VotingService/VoteHeart",
          "/emojivoto.v1.VotingService/VoteStuckOutTongue", "/emojivoto.v1.VotingService/Results"}},
        {"frontend",
         "users",
         false,
         {"GET /api/v1/users/#", "PUT /api/v1/users/#", "GET /api/v1/users/#/addresses",
          "GET /api/v1/users/#/orders?page=#", "POST /api/v1/users", "GET /api/v1/users/me",
          "GET /healthz"}},
        {"frontend",
         "orders",
         false,
         {"GET /api/v1/orders/@", "POST /api/v1/orders", "GET /api/v1/orders/@/items",
          "DELETE /api/v1/orders/@", "PATCH /api/v1/orders/@/status", "GET /api/v1/carts/@",
          "POST /api/v1/carts/@/items", "GET /healthz"}},
        {"orders",
         "payments",
         false,
         {"POST /v2/payments", "GET /v2/payments/@", "POST /v2/payments/@/capture",
          "POST /v2/refunds", "GET /v2/refunds/@", "GET /healthz"}},
        {"checkout",
         "orders",
         false,
         {"POST /api/v1/orders", "GET /api/v1/orders/@", "POST /api/v1/orders/@/confirm"}},
        {"checkout",
         "payments",
         false,
         {"POST /v2/payments", "GET /v2/payments/@/status", "GET /healthz"}},
    };
    // Two pods per client workload; servers are named by their first pod.
    const auto pod = [&](const std::string& workload, int replica) {
      return identities.Intern({"shop", workload + "-" + std::to_string(replica), "Deployment",
                                workload, workload, "node-1"});
    };
    std::mt19937 random(42);
    std::lognormal_distribution<double> latency_us(6.0, 1.0);  // median ~400 us, long tail
    for (size_t i = 0; i < count; ++i) {
      const Edge& edge = edges[random() % edges.size()];
      Exchange exchange;
      exchange.traffic = {pod(edge.from, static_cast<int>(random() % 2)), pod(edge.to, 1),
                          Direction::kOutbound};
      const std::string route = Expand(edge.routes[random() % edge.routes.size()], random);
      const size_t space = route.find(' ');
      exchange.request.grpc = edge.grpc;
      exchange.request.method = edge.grpc ? "POST" : route.substr(0, space);
      exchange.request.path = edge.grpc ? route : route.substr(space + 1);
      exchange.request.stream_id = static_cast<uint32_t>(i + 1);
      // Mostly successes; some not-found and server errors; one always-failing method.
      const uint32_t roll = random() % 100;
      if (edge.grpc) {
        exchange.grpc_status =
            exchange.request.path.ends_with("VoteDoughnut") ? 2 : (roll < 2 ? 14 : 0);
      } else {
        exchange.status = roll < 90 ? 200 : roll < 97 ? 404 : 503;
      }
      exchange.latency_ns = static_cast<int64_t>(latency_us(random) * 1000);
      exchange.first_byte_ns = exchange.latency_ns * 9 / 10;
      exchanges.push_back(std::move(exchange));
    }
  }
};

constexpr size_t kInputs = 4096;  // a power of two, cycled through

// Shared by the benchmarks, like the agent's tables are by its workers.
Workload& Inputs() {
  static Workload* workload = new Workload(kInputs);
  return *workload;
}

// Baseline: the loop and the inputs, without metrics.
void BM_InputLoop(benchmark::State& state) {
  Workload& w = Inputs();
  size_t i = 0;
  for (auto _ : state) {
    const Exchange& e = w.exchanges[i++ & (kInputs - 1)];
    benchmark::DoNotOptimize(e.request.path.data());
    benchmark::DoNotOptimize(e.latency_ns);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}

// Baseline: one latency record into a histogram, the floor of any histogram-based design.
void BM_HistogramRecord(benchmark::State& state) {
  Workload& w = Inputs();
  DeltaHistogram histogram;
  size_t i = 0;
  for (auto _ : state) {
    const Exchange& e = w.exchanges[i++ & (kInputs - 1)];
    histogram.Record(e.latency_ns);
  }
  benchmark::DoNotOptimize(histogram.count());
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}

// Part of the path: the templated route (with a reused buffer, as Worker::RouteOf does).
void BM_TemplateRoute(benchmark::State& state) {
  Workload& w = Inputs();
  std::string scratch;
  size_t i = 0;
  for (auto _ : state) {
    const Exchange& e = w.exchanges[i++ & (kInputs - 1)];
    TemplateRoute(e.request, &scratch);
    benchmark::DoNotOptimize(scratch.data());
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}

// Part of the path: the templated route and its id from the worker's cache.
void BM_RouteLookup(benchmark::State& state) {
  Workload& w = Inputs();
  RouteCache cache(w.routes, w.identities);
  std::string scratch;
  size_t i = 0;
  for (auto _ : state) {
    const Exchange& e = w.exchanges[i++ & (kInputs - 1)];
    TemplateRoute(e.request, &scratch);
    benchmark::DoNotOptimize(cache.Lookup(e.traffic.destination, scratch));
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}

// The whole per-request path of Connection::OnRequestStart and OnStreamEnd: route, request
// count, classification, response count with latency and time to first byte. The first
// pass over the inputs creates the series; the measured steady state allocates nothing.
void BM_RecordRequest(benchmark::State& state) {
  Workload& w = Inputs();
  RouteCache cache(w.routes, w.identities);
  Shard shard;
  std::string scratch;
  size_t i = 0;
  for (auto _ : state) {
    const Exchange& e = w.exchanges[i++ & (kInputs - 1)];
    TemplateRoute(e.request, &scratch);
    const RequestKey request{e.traffic, cache.Lookup(e.traffic.destination, scratch)};
    shard.CountRequest(request);
    shard.CountResponse(
        ResponseKeyOf(request, e.status, e.grpc_status, parsers::EndReason::kComplete),
        e.latency_ns, e.first_byte_ns);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}

// Shard::Collect with `range(0)` response series (and as many request series), each with
// activity since the last collection, as a worker's shard has when the control thread asks
// for its delta once a second. Runs on the worker thread, between connections' events.
void BM_Collect(benchmark::State& state) {
  const int series = static_cast<int>(state.range(0));
  Shard shard;
  Delta delta;
  const auto fill = [&] {
    for (int s = 0; s < series; ++s) {
      const RequestKey request{
          {static_cast<uint32_t>(s % 97), static_cast<uint32_t>(s / 97), Direction::kOutbound},
          static_cast<uint32_t>(s % 13)};
      shard.CountRequest(request);
      // A few latencies per series, spread over a few buckets.
      for (int64_t latency : {200'000, 450'000, 1'300'000}) {
        shard.CountResponse({request, 200, -1, false}, latency + s, latency / 2);
      }
    }
  };
  for (auto _ : state) {
    state.PauseTiming();
    delta = Delta();
    fill();
    state.ResumeTiming();
    shard.Collect(&delta);
  }
  if (delta.responses.size() != static_cast<size_t>(series)) {
    state.SkipWithError("collected the wrong number of series");
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * series);
}

BENCHMARK(BM_InputLoop);
BENCHMARK(BM_HistogramRecord);
BENCHMARK(BM_TemplateRoute);
BENCHMARK(BM_RouteLookup);
BENCHMARK(BM_RecordRequest);
BENCHMARK(BM_Collect)->Arg(10)->Arg(100)->Arg(1000)->Arg(10000)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace nodemesh::metrics

BENCHMARK_MAIN();
