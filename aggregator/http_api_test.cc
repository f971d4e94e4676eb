// The API nodemesh.io/v1alpha1 over HTTPS as the API server's aggregation layer calls it: a
// real aggregator serving it, the test API server publishing its front proxy's CA and
// deciding SubjectAccessReviews by its RBAC, and curl as the front proxy (with the front
// proxy's client certificate) or as someone forging its headers (without one, or with a
// certificate of another CA). An agent with a certificate of the aggregator's client CA feeds
// its taps.
#include "aggregator/http_api.h"

#include <catch2/catch.hpp>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_split.h"
#include "aggregator/http_api_test_util.h"
#include "aggregator/server.h"
#include "aggregator/test_util.h"
#include "common/httpapi/json.h"
#include "test/lib/certificates.h"
#include "test/lib/files.h"
#include "test/lib/kube_apiserver.h"
#include "test/lib/peers.h"
#include "test/lib/process.h"

namespace nodemesh::aggregator {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

struct Answer {
  std::string code;  // curl's %{http_code}: "000" when no answer came
  std::string body;
};

// An aggregator serving the HTTPS API for a test API server that has a front proxy.
struct HttpApiCluster {
  nodemesh::testing::TempDir dir;
  // The aggregator's rights (reviews, the front proxy's ConfigMap) and alice's: read and tap
  // in namespace a, nothing in b.
  nodemesh::testing::KubeApiServer api{
      {.rbac_file = nodemesh::testing::SourcePath("test/fixtures/rbac/aggregated_api.json")}};
  std::unique_ptr<AggregatorServer> aggregator;
  std::string grpc_address;
  std::map<std::string, std::pair<std::string, std::string>> certificates;  // name: file, key

  HttpApiCluster() {
    // The front proxy's CA and certificates are the test API server's, which publishes them
    // in extension-apiserver-authentication as kube-apiserver does; a forger has a
    // certificate of the same name from another CA.
    nodemesh::testing::MakeCa(dir, "other-ca");
    nodemesh::testing::MakeClientCertificate(dir, "other-ca", "forger", "/CN=front-proxy-client");
    nodemesh::testing::MakeCa(dir, "serving-ca");
    nodemesh::testing::MakeServerCertificate(dir, "serving-ca", "aggregator");
    nodemesh::testing::MakeClientCertificate(dir, "serving-ca", "node-a",
                                             "/O=system:nodes/CN=system:node:node-a");
    certificates["front-proxy"] = {api.front_proxy_client_cert(), api.front_proxy_client_key()};
    certificates["not-allowed"] = {api.not_allowed_client_cert(), api.not_allowed_client_key()};
    certificates["forger"] = {dir.path() + "/forger.crt", dir.path() + "/forger.key"};

    ServerOptions options = HttpApiServerOptions(
        api, dir.path() + "/aggregator.crt", dir.path() + "/aggregator.key", "nodemesh-aggregator");
    options.tls.ca = dir.path() + "/serving-ca.crt";  // agents' certificates
    options.tap_pacing.heartbeat_interval = 300ms;
    aggregator = std::make_unique<AggregatorServer>(options);
    const absl::StatusOr<int> port = aggregator->Start();
    INFO(port.status().ToString());
    REQUIRE(port.ok());
    grpc_address = "127.0.0.1:" + std::to_string(*port);
    REQUIRE(
        nodemesh::testing::PollUntil([&] { return Get("/readyz", {}, "").code == "200"; }, 10s));
  }

  // GET `path` with `headers` ("Name: value"), presenting the client certificate `as`
  // (front-proxy, not-allowed, forger; "" for none). Waits at most `timeout` for the whole answer.
  Answer Get(const std::string& path, const std::vector<std::string>& headers,
             const std::string& as, std::chrono::seconds timeout = 10s) {
    const std::string body_file = dir.path() + "/body";
    std::vector<std::string> argv = {"-o",           body_file,    "-w",
                                     "%{http_code}", "--max-time", std::to_string(timeout.count())};
    const nodemesh::testing::CommandResult ran =
        nodemesh::testing::RunCommand(Curl(path, headers, as, argv), timeout + 5s);
    std::ifstream body(body_file);
    return Answer{ran.output.substr(0, 3), std::string((std::istreambuf_iterator<char>(body)), {})};
  }

  // The command line of curl asking for `path` as Get does, with `options` of its own.
  std::vector<std::string> Curl(const std::string& path, const std::vector<std::string>& headers,
                                const std::string& as, std::vector<std::string> options) {
    std::vector<std::string> argv = {"curl", "-sS", "--cacert", dir.path() + "/serving-ca.crt"};
    argv.insert(argv.end(), options.begin(), options.end());
    if (!as.empty()) {
      const auto& [certificate, key] = certificates.at(as);
      argv.insert(argv.end(), {"--cert", certificate, "--key", key});
    }
    for (const std::string& header : headers) argv.insert(argv.end(), {"-H", header});
    argv.push_back("https://" + aggregator->api_address() + path);
    return argv;
  }

  // An agent of node-a with `pods`, connected with its node certificate.
  std::unique_ptr<nodemesh::testing::FakeAgent> ConnectAgent(std::vector<v1::Pod> pods) {
    auto agent = CertifiedAgent(grpc_address, dir, std::move(pods));
    REQUIRE(
        nodemesh::testing::PollUntil([&] { return !aggregator->tap_hub().agents().empty(); }, 10s));
    return agent;
  }
};

const std::vector<std::string> kAlice = {"X-Remote-User: alice", "X-Remote-Group: dev"};
constexpr std::string_view kApi = "/apis/nodemesh.io/v1alpha1";

TEST_CASE("the HTTPS API believes only the front proxy, and RBAC decides every call") {
  HttpApiCluster cluster;
  const std::string api(kApi);

  // Discovery: /apis says no aggregated discovery; the group version lists its resources.
  CHECK(cluster.Get("/apis", kAlice, "front-proxy").code == "406");
  const Answer resources = cluster.Get(api, kAlice, "front-proxy");
  CHECK(resources.code == "200");
  CHECK(json::parse(resources.body)["kind"] == "APIResourceList");

  // The headers of anyone but the front proxy are never read.
  const Answer no_certificate = cluster.Get(api + "/namespaces/a/stats/deployment", kAlice, "");
  CHECK(no_certificate.code == "401");
  CHECK(json::parse(no_certificate.body)["reason"] == "Unauthorized");
  CHECK(cluster.Get(api + "/namespaces/a/stats/deployment", kAlice, "forger").code == "401");
  // Nor those of a certificate of the front proxy's CA with a name it does not allow.
  CHECK(cluster.Get(api + "/namespaces/a/stats/deployment", kAlice, "not-allowed").code == "401");

  // alice reads namespace a: the gRPC API's answer in protobuf's JSON mapping.
  const Answer stat =
      cluster.Get(api + "/namespaces/a/stats/deployment?windowSeconds=60", kAlice, "front-proxy");
  INFO(stat.body);
  CHECK(stat.code == "200");
  v1::StatSummaryResponse response;
  CHECK(httpapi::ParseMessageJson(stat.body, &response).ok());

  // Not namespace b, nor a's traffic from b: the 403 is the API server's own words.
  const Answer in_b = cluster.Get(api + "/namespaces/b/stats/deployment", kAlice, "front-proxy");
  CHECK(in_b.code == "403");
  CHECK(json::parse(in_b.body)["message"] ==
        "stats.nodemesh.io \"deployment\" is forbidden: User \"alice\" cannot get resource "
        "\"stats\" in API group \"nodemesh.io\" in the namespace \"b\"");
  CHECK(cluster
            .Get(api + "/namespaces/a/stats/deployment?from.type=deployment&from.namespace=b",
                 kAlice, "front-proxy")
            .code == "403");
  // Nobody else either.
  CHECK(
      cluster.Get(api + "/namespaces/a/stats/deployment", {"X-Remote-User: mallory"}, "front-proxy")
          .code == "403");

  // A tap in a is let through to the hub, which answers that a has no such pods; one that
  // reaches into b is refused before that.
  const Answer tap = cluster.Get(api +
                                     "/namespaces/a/taps?watch=true&target.type=deployment&"
                                     "target.name=web",
                                 kAlice, "front-proxy");
  CHECK(tap.code == "404");
  CHECK(json::parse(tap.body)["message"] ==
        "no pods of deployment/web in namespace a are known to the aggregator: check the name "
        "and the namespace (the pods' agents report them once connected)");
  const Answer tap_to_b = cluster.Get(
      api + "/namespaces/a/taps?watch=true&target.type=deployment&to.type=namespace&to.name=b",
      kAlice, "front-proxy");
  CHECK(tap_to_b.code == "403");
  CHECK(json::parse(tap_to_b.body)["details"]["kind"] == "taps");

  // A view of a, and of a with b: each namespace it reads is reviewed, the path's by the API
  // server, the others by the aggregator, and a refusal names the one not allowed.
  const Answer graph = cluster.Get(api +
                                       "/namespaces/a/views/graph?windowSeconds=60&"
                                       "filter.onlyFailing=true",
                                   kAlice, "front-proxy");
  INFO(graph.body);
  CHECK(graph.code == "200");
  v1::ViewResponse view;
  CHECK(httpapi::ParseMessageJson(graph.body, &view).ok());
  CHECK(view.unix_seconds() > 0);
  CHECK(view.has_size());
  const Answer with_b =
      cluster.Get(api + "/namespaces/a/views/graph?namespaces=b", kAlice, "front-proxy");
  CHECK(with_b.code == "403");
  CHECK(json::parse(with_b.body)["message"] ==
        "views.nodemesh.io \"graph\" is forbidden: User \"alice\" cannot get resource "
        "\"views\" in API group \"nodemesh.io\" in the namespace \"b\"");
  CHECK(cluster
            .Get(api + "/namespaces/a/views/graph?filter.around.namespace=b&"
                       "filter.around.name=web",
                 kAlice, "front-proxy")
            .code == "403");
  // The namespaces view is of every namespace: cluster scope, which alice may not read.
  CHECK(cluster.Get(api + "/views/namespaces", kAlice, "front-proxy").code == "403");
  // A view asked wrongly is the aggregator's 400.
  const Answer no_name =
      cluster.Get(api + "/namespaces/a/views/workload?resource.type=deploy", kAlice, "front-proxy");
  CHECK(no_name.code == "400");

  // A path that is no call names the calls.
  const Answer unknown = cluster.Get(api + "/namespaces/a/nothing", kAlice, "front-proxy");
  CHECK(unknown.code == "404");
}

TEST_CASE("a tap through the HTTPS API is one message per line, with heartbeats while quiet") {
  HttpApiCluster cluster;
  const v1::Pod web =
      aggregator::testing::MakePod("a", "web-1", "Deployment", "web", "node-a", true);
  const v1::Pod voting =
      aggregator::testing::MakePod("a", "voting-1", "Deployment", "voting", "node-a", true);
  auto agent = cluster.ConnectAgent({web, voting});

  nodemesh::testing::Process tap(
      cluster.Curl(std::string(kApi) + "/namespaces/a/taps?watch=true&target.type=deployment&"
                                       "target.name=web&maxEvents=2",
                   kAlice, "front-proxy", {"-N", "--max-time", "30"}));
  // The agent is asked for the pods' requests both ways; until one comes, the stream says
  // only that it is alive.
  const std::vector<v1::AggregatorMessage> subscribed = agent->WaitForMessages(2);
  REQUIRE(subscribed.size() == 2);
  REQUIRE(subscribed[0].has_subscribe());
  REQUIRE(tap.WaitForOutput("{}\n", 10s));

  v1::TapEvent event;
  event.set_subscription(subscribed[0].subscribe().id());
  *event.mutable_source() = web.identity();
  *event.mutable_destination() = voting.identity();
  event.mutable_request()->set_method("GET");
  for (const std::string id : {"node-a:1:1", "node-a:1:2", "node-a:1:3"}) {
    event.set_request_id(id);
    agent->SendTap({event});
  }
  // Two events, then the answer ends.
  const std::optional<nodemesh::testing::ExitStatus> ended = tap.Wait(10s);
  INFO(tap.output());
  REQUIRE(ended.has_value());
  CHECK(ended->ok());
  std::vector<std::string> ids;
  int heartbeats = 0;
  for (const absl::string_view line : absl::StrSplit(tap.output(), '\n', absl::SkipEmpty())) {
    v1::TapStreamMessage message;
    REQUIRE(httpapi::ParseMessageJson(std::string_view(line.data(), line.size()), &message).ok());
    if (message.has_event()) {
      ids.push_back(message.event().request_id());
    } else {
      CHECK(message.ByteSizeLong() == 0);
      ++heartbeats;
    }
  }
  CHECK(ids == std::vector<std::string>{"node-a:1:1", "node-a:1:2"});
  CHECK(heartbeats >= 1);
}

}  // namespace
}  // namespace nodemesh::aggregator
