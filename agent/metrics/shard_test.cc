// A worker's shard: exact counts through a collection, and the promise of shard.h that the
// per-request path (route, request count, classification, response with latency), with the
// HTTP/1 parser in front of it, does not allocate once its series exist, which this binary
// checks by counting every operator new.
#include "agent/metrics/shard.h"

#include <atomic>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <new>

#include "absl/container/flat_hash_map.h"
#include "agent/metrics/route.h"
#include "common/metrics/classification.h"
#include "parsers/http1/parser.h"

// The sanitizer runtime brings its own allocation functions, which these cannot
// replace cleanly: there the allocation checks are left out, the counts kept.
#if defined(__SANITIZE_ADDRESS__)
#define NODEMESH_COUNT_ALLOCATIONS 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define NODEMESH_COUNT_ALLOCATIONS 0
#endif
#endif
#ifndef NODEMESH_COUNT_ALLOCATIONS
#define NODEMESH_COUNT_ALLOCATIONS 1
#endif

#if NODEMESH_COUNT_ALLOCATIONS
namespace {
std::atomic<uint64_t> allocations{0};
}  // namespace

// Replacements of the global allocation functions: every allocation of this test binary
// is counted. The plain forms suffice: the code under test allocates nothing over-aligned.
// GCC sees malloc's memory reach free through inlined new/delete and takes it for a
// mismatch; with the replacements below it is the matching pair.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void* operator new(std::size_t size) {
  allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t size) { return ::operator new(size); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
#endif  // NODEMESH_COUNT_ALLOCATIONS

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

// What Connection does for one request and its end, minus the parser.
void Record(const Exchange& e, RouteCache& cache, Shard& shard, std::string* scratch,
            int64_t latency_ns) {
  TemplateRoute(e.request, scratch);
  const RequestKey request{e.traffic, cache.Lookup(e.traffic.destination, *scratch)};
  shard.CountRequest(request);
  shard.CountResponse(ResponseKeyOf(request, e.status, e.grpc_status, e.end), latency_ns,
                      latency_ns / 2);
}

struct Fixture {
  IdentityTable identities;
  RouteTable routes{100};
  RouteCache cache{routes, identities};
  Shard shard;
  std::string scratch;
  std::vector<Exchange> exchanges;

  Fixture() {
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
  Fixture f;
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
  Fixture f;
  f.RecordAll(1'000'000);  // creates the routes, the cache entries and the series
  Delta delta;
  f.shard.Collect(&delta);  // a collection in between must not make the next second allocate
  f.RecordAll(1'000'000);

  const uint64_t before = allocations.load();
  for (int i = 0; i < 1000; ++i) f.RecordAll(1'000 + i * 997'000);
  const uint64_t during = allocations.load() - before;
  CHECK(during == 0);

  // The counter works: a route not seen before allocates (its name, its cache entry).
  const uint64_t probe = allocations.load();
  Record({Request("GET", "/a/path/never/seen/before/by/this/worker"), f.exchanges[0].traffic},
         f.cache, f.shard, &f.scratch, 1000);
  CHECK(allocations.load() > probe);
}

// What a connection does with the HTTP/1 parser's events (agent/connection.cc), without
// the sockets: route and request count at the start, response count and latency at the end.
class RecordingSink final : public parsers::EventSink {
 public:
  RecordingSink(Fixture& f, TrafficKey traffic) : f_(f), traffic_(traffic) {}
  void OnRequestStart(const parsers::RequestStart& request) override {
    TemplateRoute(request, &f_.scratch);
    const RequestKey key{traffic_, f_.cache.Lookup(traffic_.destination, f_.scratch)};
    routes_[request.stream_id] = key.route;
    f_.shard.CountRequest(key);
  }
  void OnResponseStart(const parsers::ResponseStart&) override {}
  void OnStreamEnd(const parsers::StreamEnd& end) override {
    const auto it = routes_.find(end.stream_id);
    if (it == routes_.end()) return;
    f_.shard.CountResponse(
        ResponseKeyOf({traffic_, it->second}, end.status, end.grpc_status.value_or(-1), end.reason),
        end.at - end.request_at, end.response_at - end.request_at);
    routes_.erase(it);
    ++ends;
  }
  uint64_t ends = 0;

 private:
  Fixture& f_;
  const TrafficKey traffic_;
  absl::flat_hash_map<uint32_t, RouteTable::Id> routes_;
};

TEST_CASE("shard: HTTP/1 parsing and recording together allocate nothing per request once warm") {
  Fixture f;
  RecordingSink sink(f, f.exchanges[3].traffic);
  parsers::ParserConfig config;  // captures content-type and user-agent
  parsers::http1::Parser parser(config, sink);
  // Long paths, a numeric segment, captured headers longer than any small-string buffer.
  const std::string request =
      "GET /api/users/123456/orders?expand=items HTTP/1.1\r\nHost: web.emojivoto.svc:8080\r\n"
      "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36\r\n"
      "Content-Type: application/json; charset=utf-8\r\n\r\n";
  const std::string response =
      "HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\n"
      "Content-Length: 2\r\n\r\n{}";
  int64_t now = 1'000'000;
  // No assertion inside the measured loop: only the code under test may run there.
  bool parsing = true;
  const auto exchange = [&] {
    parsing &=
        parser.Feed(parsers::Peer::kClient, request, now += 1000) == parsers::ParserState::kParsing;
    parsing &= parser.Feed(parsers::Peer::kServer, response, now += 250'000) ==
               parsers::ParserState::kParsing;
  };
  for (int i = 0; i < 10; ++i) exchange();
  Delta delta;
  f.shard.Collect(&delta);

  const uint64_t before = allocations.load();
  for (int i = 0; i < 1000; ++i) exchange();
  const uint64_t during = allocations.load() - before;
  CHECK(parsing);
  CHECK(during == 0);
  CHECK(sink.ends == 1010);
}

#endif  // NODEMESH_COUNT_ALLOCATIONS

}  // namespace
}  // namespace nodemesh::metrics
