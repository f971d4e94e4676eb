// The API nodemesh.io/v1alpha1 as users reach it: through the test API server's aggregation
// layer, which runs as kube-aggregator does (the APIService checked for availability, each
// request authenticated by the user's bearer token and authorized by the API server's RBAC,
// then proxied to the aggregator as the front proxy with the user in X-Remote-* headers),
// to a real aggregator serving --api-listen and fed by an agent of node-a over gRPC.
#include <fmt/format.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <iterator>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "aggregator/http_api_test_util.h"
#include "aggregator/server.h"
#include "aggregator/test_util.h"
#include "common/httpapi/json.h"
#include "common/httpapi/paths.h"
#include "nodemesh/v1/nodemesh.grpc.pb.h"
#include "test/lib/certificates.h"
#include "test/lib/files.h"
#include "test/lib/kube_apiserver.h"
#include "test/lib/peers.h"
#include "test/lib/process.h"

namespace nodemesh::aggregator {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using nodemesh::testing::KubeApiServer;

// The test API server, and an aggregator serving the API for it with a certificate that
// names nodemesh-aggregator.nodemesh.svc, registered as its APIService.
struct AggregatedCluster {
  nodemesh::testing::TempDir dir;
  // The aggregator's rights (reviews, the front proxy's ConfigMap), the roles nodemesh-read
  // and nodemesh-tap, and alice's RoleBindings to both in namespace a.
  KubeApiServer api{
      {.rbac_file = nodemesh::testing::SourcePath("test/fixtures/rbac/aggregated_api.json")}};
  std::unique_ptr<AggregatorServer> aggregator;
  std::string grpc_address;

  AggregatedCluster() {
    nodemesh::testing::MakeCa(dir, "serving-ca");
    nodemesh::testing::MakeServerCertificate(dir, "serving-ca", "aggregator",
                                             {"nodemesh-aggregator.nodemesh.svc"});
    nodemesh::testing::MakeClientCertificate(dir, "serving-ca", "node-a",
                                             "/CN=system:node:node-a/O=system:nodes");
    ServerOptions options = HttpApiServerOptions(
        api, dir.path() + "/aggregator.crt", dir.path() + "/aggregator.key", "nodemesh-aggregator");
    // Agents are known by their certificates of this CA.
    options.tls.ca = dir.path() + "/serving-ca.crt";
    aggregator = std::make_unique<AggregatorServer>(options);
    const absl::StatusOr<int> port = aggregator->Start();
    INFO(port.status().ToString());
    REQUIRE(port.ok());
    grpc_address = fmt::format("127.0.0.1:{}", *port);
  }

  // Registers the aggregator as the APIService; true once the API server finds it Available
  // (it answers once it has read the front proxy's ConfigMap: until then the API server's
  // availability check fails, and is made again each second).
  bool Register() {
    api.RegisterExtension(
        {.address = aggregator->api_address(),
         .ca_bundle_pem = nodemesh::testing::ReadFile(dir.path() + "/serving-ca.crt")});
    return nodemesh::testing::PollUntil(
        [&] { return api.ExtensionStatus().at("available") == true; }, 10s, 100ms);
  }

  // A stream through the API server read by curl, whose output the test reads as it comes.
  std::unique_ptr<nodemesh::testing::Process> Stream(const std::string& path,
                                                     const std::string& token) {
    return std::make_unique<nodemesh::testing::Process>(
        std::vector<std::string>{"curl", "-sS", "-N", "--cacert", api.ca_file(), "-H",
                                 "Authorization: Bearer " + token, api.url() + path});
  }
};

v1::TapEvent TapEventFor(uint64_t subscription, const std::string& request_id,
                         const v1::Pod& source, const v1::Pod& destination) {
  v1::TapEvent event;
  event.set_subscription(subscription);
  event.set_request_id(request_id);
  *event.mutable_source() = source.identity();
  *event.mutable_destination() = destination.identity();
  event.mutable_request()->set_method("GET");
  event.mutable_request()->set_path("/menu");
  return event;
}

TEST_CASE("users reach the API through the API server's aggregation layer, with its RBAC",
          "[unit]") {
  AggregatedCluster cluster;
  KubeApiServer& api = cluster.api;
  REQUIRE(cluster.Register());
  // The API server asked as kube-aggregator does: available, then the legacy discovery
  // after /apis said 406.
  const json status = api.ExtensionStatus();
  INFO(status.dump(2));
  CHECK(status.at("reason") == "Passed");
  CHECK(status.at("discovery") == "legacy");
  CHECK(api.Get("/apis/apiregistration.k8s.io/v1/apiservices/v1alpha1.nodemesh.io")
            .at("status")
            .at("conditions")[0]
            .at("status") == "True");

  // node-a's agent reports web calling api, both in namespace a.
  const v1::Pod web = testing::MakePod("a", "web-1", "Deployment", "web", "node-a", true);
  const v1::Pod backend = testing::MakePod("a", "api-1", "Deployment", "api", "node-a", true);
  const auto agent = CertifiedAgent(cluster.grpc_address, cluster.dir, {web, backend});
  REQUIRE(nodemesh::testing::PollUntil(
      [&] {
        const std::vector<std::string> agents = cluster.aggregator->tap_hub().agents();
        return std::find(agents.begin(), agents.end(), "node-a") != agents.end();
      },
      10s));
  const int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  v1::AgentMessage report;
  *report.mutable_metrics() =
      testing::DeltaBuilder(now)
          .Responses(web.identity(), backend.identity(), v1::OUTBOUND, "/menu", 5, 2'000'000)
          .delta();
  agent->Send(report);
  REQUIRE(nodemesh::testing::PollUntil(
      [&] { return cluster.aggregator->store().stats().deltas > 0; }, 10s));

  const std::string alice = api.IssueUserToken("alice", {"dev"});
  const std::string api_path(httpapi::kApiPath);

  // alice reads namespace a: the aggregator's answer, through the API server: the requests
  // api served, once the second of the report is in the window.
  KubeApiServer::Response stat;
  v1::StatSummaryResponse rows;
  const auto api_requests = [&] {
    stat = api.Call("GET", api_path + "/namespaces/a/stats/deployment?windowSeconds=60", alice);
    rows.Clear();
    const v1::StatRow* row = stat.status == 200 && httpapi::ParseMessageJson(stat.body, &rows).ok()
                                 ? testing::FindRow(rows, "api")
                                 : nullptr;
    return row == nullptr ? 0 : row->requests();
  };
  const bool counted =
      nodemesh::testing::PollUntil([&] { return api_requests() == 5; }, 10s, 100ms);
  INFO(stat.body);
  CHECK(counted);

  // Namespace b: refused by the API server itself, which never asks the aggregator.
  const KubeApiServer::Response in_b =
      api.Call("GET", api_path + "/namespaces/b/stats/deployment", alice);
  CHECK(in_b.status == 403);
  CHECK(in_b.json().at("message") ==
        "stats.nodemesh.io \"deployment\" is forbidden: User \"alice\" cannot get resource "
        "\"stats\" in API group \"nodemesh.io\" in the namespace \"b\"");
  // a's traffic from b: the API server lets it through (a is alice's), and the aggregator's
  // SubjectAccessReview for b refuses it.
  const std::string from_b =
      api_path + "/namespaces/a/stats/deployment?from.type=deployment&from.namespace=b";
  const KubeApiServer::Response refused = api.Call("GET", from_b, alice);
  CHECK(refused.status == 403);
  CHECK(refused.json().at("details").at("kind") == "stats");
  const std::vector<KubeApiServer::Request> requests = api.Requests();
  CHECK(std::any_of(requests.begin(), requests.end(), [&](const KubeApiServer::Request& r) {
    return r.path == from_b && r.status == 403 && r.rule == "ClusterRole/nodemesh-read#0";
  }));
  CHECK(std::any_of(requests.begin(), requests.end(), [](const KubeApiServer::Request& r) {
    return r.review.is_object() && r.review.value("user", "") == "alice" &&
           r.review.value("allowed", true) == false &&
           r.review.value("resourceAttributes", json::object()).value("namespace", "") == "b";
  }));

  // A tap of web streams through the proxy: each event arrives while the stream is open,
  // and it ends after maxEvents.
  const std::string tap_path =
      api_path + "/namespaces/a/taps?watch=true&target.type=deployment&target.name=web";
  std::unique_ptr<nodemesh::testing::Process> tap =
      cluster.Stream(tap_path + "&maxEvents=2", alice);
  REQUIRE(nodemesh::testing::PollUntil([&] { return !agent->subscribed().empty(); }, 10s));
  const uint64_t subscription = *agent->subscribed().begin();
  v1::AgentMessage events;
  *events.mutable_tap()->add_events() = TapEventFor(subscription, "node-a:1:1", web, backend);
  agent->Send(events);
  CHECK(tap->WaitForOutput("\"requestId\":\"node-a:1:1\"", 10s));
  CHECK(tap->IsRunning());
  events.mutable_tap()->clear_events();
  *events.mutable_tap()->add_events() = TapEventFor(subscription, "node-a:2:1", web, backend);
  agent->Send(events);
  const std::optional<nodemesh::testing::ExitStatus> ended = tap->Wait(10s);
  REQUIRE(ended);
  CHECK(ended->ok());
  const std::string lines = tap->output();
  INFO(lines);
  CHECK(lines.find("\"requestId\":\"node-a:2:1\"") != std::string::npos);
  size_t events_seen = 0;
  for (size_t at = 0; (at = lines.find("\"requestId\"", at)) != std::string::npos; ++at) {
    ++events_seen;
  }
  CHECK(events_seen == 2);

  // A client that goes ends its tap through the proxy: the agent is told to stop.
  const std::set<uint64_t> before = agent->subscribed();
  tap = cluster.Stream(tap_path, alice);
  REQUIRE(nodemesh::testing::PollUntil([&] { return agent->subscribed().size() > before.size(); },
                                       10s));
  std::vector<uint64_t> opened;
  std::ranges::set_difference(agent->subscribed(), before, std::back_inserter(opened));
  tap.reset();
  CHECK(nodemesh::testing::PollUntil([&] { return agent->cancelled().contains(opened.front()); },
                                     10s));
}

}  // namespace
}  // namespace nodemesh::aggregator
