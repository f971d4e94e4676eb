// A worker's shard: exact counts through a collection, and the promise of shard.h that the
// per-request path (route, request count, classification, response with latency) does not
// allocate once its series exist, which agent_alloc_test checks by counting every operator new.
// (agent/observer/observer_alloc_test.cc checks the same with the parser and the observer
// in front of it.)
#include "agent/metrics/shard.h"

#include <catch2/catch.hpp>

#include "agent/metrics/route.h"
#include "common/metrics/classification.h"
#include "test/lib/allocation_counter.h"

namespace nodemesh::metrics {
namespace {

struct Exchange {
  parsers::RequestStart request;
  TrafficKey traffic;
  int status = 200;
  int grpc_status = -1;
  parsers::EndReason end = parsers::EndReason::kComplete;
};

parsers::RequestStart Request(std::string method, std::string path, bool grpc = false) {
  parsers::RequestStart request;
  request.method = std::move(method);
  request.path = std::move(path);
  request.grpc = grpc;
  return request;
}

// What an observer does for one request and its end, minus the parser.
void Record(const Exchange& e, RouteCache& cache, Shard& shard, std::string* scratch,
            int64_t latency_ns) {
  TemplateRoute(e.request, scratch);
  const RequestKey request{e.traffic, cache.Lookup(e.traffic.destination, *scratch)};
  shard.CountRequest(request);
  shard.CountResponse(ResponseKeyOf(request, e.status, e.grpc_status, e.end), latency_ns,
                      latency_ns / 2);
}

struct ShardFixture {
  IdentityTable identities;
  RouteTable routes{100};
  RouteCache cache{routes, identities};
  Shard shard;
  std::string scratch;
  std::vector<Exchange> exchanges;

  ShardFixture() {
    const auto web = identities.Intern({"emojivoto", "web-1", "Deployment", "web", "web", "n1"});
    const auto voting =
        identities.Intern({"emojivoto", "voting-1", "Deployment", "voting", "voting", "n2"});
    const TrafficKey out{web, voting, Direction::kOutbound};
    const TrafficKey in{web, voting, Direction::kInbound};
    const TrafficKey external{web, IdentityTable::kExternal, Direction::kOutbound};
    // Paths longer than any small-string buffer, numeric and UUID segments, gRPC.
    exchanges = {
        {Request("POST", "/emojivoto.v1.VotingService/VoteDoughnut", true), out, 200, 2},
        {Request("POST", "/emojivoto.v1.VotingService/VoteDoughnut", true), in, 200, 2},
        {Request("POST", "/emojivoto.v1.VotingService/VoteJoy", true), out, 200, 0},
        {Request("GET", "/api/users/123456/orders/3f2504e0-4f89-11d3-9a0c-0305e82c3301"), external,
         200},
        {Request("GET", "/api/users/987/orders/0f2504e0-4f89-11d3-9a0c-0305e82c3301?x=1"), external,
         503},
        {Request("GET", "/api/list"), out, 200, -1, parsers::EndReason::kReset},
    };
  }
  void RecordAll(int64_t latency_ns) {
    for (const Exchange& e : exchanges) Record(e, cache, shard, &scratch, latency_ns);
  }
};

TEST_CASE("shard: a collection hands over exact counts and zeroes them") {
  ShardFixture f;
  for (int i = 0; i < 10; ++i) f.RecordAll(1'000'000);
  Delta delta;
  f.shard.Collect(&delta);
  // The two /api/users requests share one templated route, so one series with 20.
  uint64_t requests = 0;
  for (const RequestSample& s : delta.requests) requests += s.requests;
  CHECK(requests == 60);
  CHECK(delta.requests.size() == 5);
  uint64_t failures = 0, responses = 0;
  for (const ResponseSample& s : delta.responses) {
    responses += s.responses;
    if (s.key.failure) failures += s.responses;
  }
  CHECK(responses == 60);
  CHECK(failures == 40);  // Unknown twice, 503, reset; VoteJoy and the 200 users path are not

  Delta again;
  f.shard.Collect(&again);
  CHECK(again.requests.empty());
  CHECK(again.responses.empty());
}

#if NODEMESH_COUNT_ALLOCATIONS
TEST_CASE("shard: the per-request path allocates nothing once its series exist") {
  ShardFixture f;
  f.RecordAll(1'000'000);  // creates the routes, the cache entries and the series
  Delta delta;
  f.shard.Collect(&delta);  // a collection in between must not make the next second allocate
  f.RecordAll(1'000'000);

  const uint64_t before = testing::allocations.load();
  for (int i = 0; i < 1000; ++i) f.RecordAll(1'000 + i * 997'000);
  const uint64_t during = testing::allocations.load() - before;
  CHECK(during == 0);

  // The counter works: a route not seen before allocates (its name, its cache entry).
  const uint64_t probe = testing::allocations.load();
  Record({Request("GET", "/a/path/never/seen/before/by/this/worker"), f.exchanges[0].traffic},
         f.cache, f.shard, &f.scratch, 1000);
  CHECK(testing::allocations.load() > probe);
}

#endif  // NODEMESH_COUNT_ALLOCATIONS

}  // namespace
}  // namespace nodemesh::metrics
