#include "agent/metrics/route.h"

#include <catch2/catch.hpp>

namespace nodemesh::metrics {
namespace {

std::string Route(std::string method, std::string path, bool grpc = false) {
  parsers::RequestStart request;
  request.method = std::move(method);
  request.path = std::move(path);
  request.grpc = grpc;
  std::string route = "stale contents";
  TemplateRoute(request, &route);
  return route;
}

TEST_CASE("routes: gRPC methods are kept exactly") {
  CHECK(Route("POST", "/emojivoto.v1.VotingService/VoteDoughnut", true) ==
        "/emojivoto.v1.VotingService/VoteDoughnut");
}

TEST_CASE("routes: HTTP paths lose their query and variable segments") {
  CHECK(Route("GET", "/api/list") == "GET /api/list");
  CHECK(Route("GET", "/api/vote?choice=:doughnut:") == "GET /api/vote");
  CHECK(Route("GET", "/users/12345/orders/7") == "GET /users/{id}/orders/{id}");
  CHECK(Route("DELETE", "/items/3f2504e0-4f89-11d3-9a0c-0305e82c3301") == "DELETE /items/{uuid}");
  CHECK(Route("GET", "/blobs/3F2504E04F8911D39A0C0305E82C3301/raw") == "GET /blobs/{uuid}/raw");
  CHECK(Route("GET", "/") == "GET /");
  CHECK(Route("GET", "/v2/") == "GET /v2/");
  CHECK(Route("GET", "/a12/b") == "GET /a12/b");
  CHECK(Route("GET", "http://web:8080/api/vote?x=1") == "GET /api/vote");
  CHECK(Route("OPTIONS", "*") == "OPTIONS *");
  CHECK(Route("CONNECT", "db:5432") == "CONNECT");
  CHECK(Route("GET", "/page#frag") == "GET /page");
}

TEST_CASE("routes: a workload keeps at most its cap, the rest share one overflow route") {
  IdentityTable identities;
  const auto web = identities.Intern({"emojivoto", "web-1", "Deployment", "web", "web", "n1"});
  const auto web2 = identities.Intern({"emojivoto", "web-2", "Deployment", "web", "web", "n1"});
  const auto voting = identities.Intern({"emojivoto", "voting-1", "Deployment", "voting", "v", "n1"});
  RouteTable table(3);
  RouteCache worker_a(table, identities), worker_b(table, identities);
  const auto r1 = worker_a.Lookup(web, "GET /a");
  CHECK(worker_a.Lookup(web, "GET /a") == r1);
  CHECK(worker_b.Lookup(web2, "GET /a") == r1);  // same workload, other pod, other worker
  worker_a.Lookup(web, "GET /b");
  worker_b.Lookup(web2, "GET /c");
  const auto overflow = worker_a.Lookup(web, "GET /d");
  CHECK(table.Get(overflow) == kOverflowRoute);
  CHECK(worker_b.Lookup(web2, "GET /e") == overflow);
  CHECK(table.Get(worker_a.Lookup(web, "GET /c")) == "GET /c");
  // Another workload has its own cap.
  CHECK(table.Get(worker_a.Lookup(voting, "GET /d")) == "GET /d");
  CHECK(table.overflowed() == 2);
}

// The agent's forgetting pass over one table and its workers' caches, as Agent::ForgetUnused
// runs it: `series` stands for what the shards and the registry still count under.
size_t ForgetRoutes(RouteTable& table, std::vector<RouteCache*> workers,
                    absl::flat_hash_set<RouteTable::Id> series = {}) {
  table.StartForgetting();
  for (RouteCache* worker : workers) worker->KeepOnly(&series);
  return table.Retain(series);
}

// Two workloads, a table with a cap of `cap` routes each, and one worker's cache.
struct Workloads {
  explicit Workloads(size_t cap = 100) : table(cap) {}
  IdentityTable identities;
  IdentityTable::Id web = identities.Intern({"emojivoto", "web-1", "Deployment", "web", "w", "n1"});
  IdentityTable::Id voting =
      identities.Intern({"emojivoto", "voting-1", "Deployment", "voting", "v", "n1"});
  RouteTable table;
  RouteCache worker{table, identities};
};

TEST_CASE("routes: forgotten once nothing refers to them, their ids then given out again") {
  Workloads w;
  RouteTable& table = w.table;
  RouteCache& worker = w.worker;
  const RouteTable::Id a = worker.Lookup(w.web, "GET /a");
  const RouteTable::Id b = worker.Lookup(w.voting, "GET /b");
  CHECK(table.size() == 2);
  // Still counted under b (a series of a shard or of the registry): only a goes, and the
  // worker's cache keeps nothing of it.
  CHECK(ForgetRoutes(table, {&worker}, {b}) == 1);
  CHECK(table.size() == 1);
  CHECK(table.Get(a) == kOverflowRoute);  // a forgotten id names no route any more
  CHECK(table.Get(b) == "GET /b");
  CHECK(worker.Lookup(w.voting, "GET /b") == b);
  const RouteTable::Id c = worker.Lookup(w.web, "GET /c");
  CHECK(c == a);  // given out again, for another route
  CHECK(table.Get(c) == "GET /c");
  CHECK(worker.Lookup(w.web, "GET /a") != a);  // a comes back under a new id
  CHECK(ForgetRoutes(table, {&worker}) == 3);
  CHECK(table.size() == 0);
}

TEST_CASE("routes: one handed out while the references are gathered is kept") {
  Workloads w;
  RouteTable& table = w.table;
  RouteCache& worker_a = w.worker;
  RouteCache worker_b(table, w.identities);
  const RouteTable::Id old = worker_b.Lookup(w.web, "GET /old");
  table.StartForgetting();
  absl::flat_hash_set<RouteTable::Id> in_use;
  worker_a.KeepOnly(&in_use);
  // Worker a has had its turn and has nothing: it now asks for a new route, and for one the
  // table holds for worker b, which has not had its turn yet.
  const RouteTable::Id fresh = worker_a.Lookup(w.web, "GET /new");
  CHECK(worker_a.Lookup(w.web, "GET /old") == old);
  worker_b.KeepOnly(&in_use);  // b counts nothing under it any more: its cache lets it go
  CHECK(in_use.empty());
  CHECK(table.Retain(in_use) == 0);
  CHECK(table.Get(fresh) == "GET /new");
  CHECK(table.Get(old) == "GET /old");
  // Nobody uses them in the pass after: both go.
  CHECK(ForgetRoutes(table, {&worker_a, &worker_b}) == 2);
}

TEST_CASE("routes: a stream in flight keeps its route until it ends or its connection goes") {
  Workloads w(100);
  RouteTable& table = w.table;
  RouteCache& worker = w.worker;
  const RouteTable::Id watch = worker.Lookup(w.web, "GET /watch");
  const RouteTable::Id stream = worker.Lookup(w.web, "/pkg.Service/Stream");
  {
    StreamRoutes connection(worker);
    connection.Start(1, watch);
    connection.Start(3, stream);
    CHECK(ForgetRoutes(table, {&worker}) == 0);
    CHECK(connection.End(1) == watch);
    CHECK(connection.End(1) == std::nullopt);  // ended already
    CHECK(ForgetRoutes(table, {&worker}) == 1);
    CHECK(table.Get(stream) == "/pkg.Service/Stream");
    // A stream id used again before its end was reported holds the new route only.
    connection.Start(3, worker.Lookup(w.web, "GET /other"));
    CHECK(ForgetRoutes(table, {&worker}) == 1);
  }  // the connection goes with stream 3 in flight
  CHECK(ForgetRoutes(table, {&worker}) == 1);
  CHECK(table.size() == 0);
}

TEST_CASE("routes: the cap bounds the routes a workload has at once") {
  Workloads w(2);
  const RouteTable::Id a = w.worker.Lookup(w.web, "GET /a");
  const RouteTable::Id b = w.worker.Lookup(w.web, "GET /b");
  const RouteTable::Id overflow = w.worker.Lookup(w.web, "GET /c");
  CHECK(w.table.Get(overflow) == kOverflowRoute);
  CHECK(w.worker.Lookup(w.web, "GET /c") == overflow);
  // a is forgotten (b and the overflow route are still counted under): /c fits now, and
  // the worker asks again for what its cache had sent to overflow.
  CHECK(ForgetRoutes(w.table, {&w.worker}, {b, overflow}) == 1);
  const RouteTable::Id c = w.worker.Lookup(w.web, "GET /c");
  CHECK(w.table.Get(c) == "GET /c");
  CHECK(c == a);  // a's id, given out again
  CHECK(w.table.Get(w.worker.Lookup(w.web, "GET /d")) == kOverflowRoute);
  CHECK(w.table.overflowed() == 2);
}

}  // namespace
}  // namespace nodemesh::metrics
