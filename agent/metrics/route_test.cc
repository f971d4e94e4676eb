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

}  // namespace
}  // namespace nodemesh::metrics
