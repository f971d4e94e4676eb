// The API nodemesh.io/v1alpha1 over HTTPS as the API server's aggregation layer calls it: a
// real aggregator serving it, the test API server publishing its front proxy's CA and
// deciding SubjectAccessReviews by its RBAC, and curl as the front proxy (with the front
// proxy's client certificate) or as someone forging its headers (without one, or with a
// certificate of another CA).
#include "aggregator/http_api.h"

#include <catch2/catch.hpp>
#include <fstream>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "aggregator/http_api_test_util.h"
#include "aggregator/server.h"
#include "common/httpapi/json.h"
#include "test/lib/certificates.h"
#include "test/lib/files.h"
#include "test/lib/kube_apiserver.h"
#include "test/lib/process.h"

namespace nodemesh::aggregator {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

// The aggregator's rights (reviews, the front proxy's ConfigMap) and alice's: read and tap
// in namespace a, nothing in b.
json HttpApiRbac() {
  return json::parse(R"([
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
     "metadata": {"name": "aggregator:system:auth-delegator"},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                 "name": "system:auth-delegator"},
     "subjects": [{"kind": "ServiceAccount", "name": "aggregator", "namespace": "nodemesh"}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
     "metadata": {"name": "aggregator-auth-reader", "namespace": "kube-system"},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                 "name": "extension-apiserver-authentication-reader"},
     "subjects": [{"kind": "ServiceAccount", "name": "aggregator", "namespace": "nodemesh"}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
     "metadata": {"name": "nodemesh-read"},
     "rules": [{"apiGroups": ["nodemesh.io"], "resources": ["stats", "edges", "routes", "inventory"],
                "verbs": ["get"]}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
     "metadata": {"name": "nodemesh-tap"},
     "rules": [{"apiGroups": ["nodemesh.io"], "resources": ["taps"], "verbs": ["watch"]}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
     "metadata": {"name": "alice-nodemesh-read", "namespace": "a"},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                 "name": "nodemesh-read"},
     "subjects": [{"kind": "User", "name": "alice"}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
     "metadata": {"name": "alice-nodemesh-tap", "namespace": "a"},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                 "name": "nodemesh-tap"},
     "subjects": [{"kind": "User", "name": "alice"}]}
  ])");
}

struct Answer {
  std::string code;  // curl's %{http_code}: "000" when no answer came
  std::string body;
};

// An aggregator serving the HTTPS API for a test API server that has a front proxy.
struct HttpApiCluster {
  testing::TempDir dir;
  testing::KubeApiServer api{{.rbac_file = dir.Write("rbac.json", HttpApiRbac().dump())}};
  std::unique_ptr<AggregatorServer> aggregator;
  std::map<std::string, std::pair<std::string, std::string>> certificates;  // name: file, key

  HttpApiCluster() {
    // The front proxy's CA and certificates are the test API server's, which publishes them
    // in extension-apiserver-authentication as kube-apiserver does; a forger has a
    // certificate of the same name from another CA.
    testing::MakeCa(dir, "other-ca");
    testing::MakeClientCertificate(dir, "other-ca", "forger", "/CN=front-proxy-client");
    testing::MakeCa(dir, "serving-ca");
    testing::MakeServerCertificate(dir, "serving-ca", "aggregator");
    certificates["front-proxy"] = {api.front_proxy_client_cert(), api.front_proxy_client_key()};
    certificates["not-allowed"] = {api.not_allowed_client_cert(), api.not_allowed_client_key()};
    certificates["forger"] = {dir.path() + "/forger.crt", dir.path() + "/forger.key"};

    aggregator = std::make_unique<AggregatorServer>(HttpApiServerOptions(
        api, dir.path() + "/aggregator.crt", dir.path() + "/aggregator.key", "aggregator"));
    const absl::StatusOr<int> port = aggregator->Start();
    INFO(port.status().ToString());
    REQUIRE(port.ok());
    REQUIRE(testing::PollUntil([&] { return Get("/readyz", {}, "").code == "200"; }, 10s));
  }

  // GET `path` with `headers` ("Name: value"), presenting the client certificate `as`
  // (front-proxy, not-allowed, forger; "" for none). Waits at most `timeout` for the whole answer.
  Answer Get(const std::string& path, const std::vector<std::string>& headers,
             const std::string& as, std::chrono::seconds timeout = 10s) {
    const std::string body_file = dir.path() + "/body";
    std::vector<std::string> argv = {
        "curl", "-sS",          "--cacert",   dir.path() + "/serving-ca.crt", "-o", body_file,
        "-w",   "%{http_code}", "--max-time", std::to_string(timeout.count())};
    if (!as.empty()) {
      const auto& [certificate, key] = certificates.at(as);
      argv.insert(argv.end(), {"--cert", certificate, "--key", key});
    }
    for (const std::string& header : headers) argv.insert(argv.end(), {"-H", header});
    argv.push_back("https://" + aggregator->api_address() + path);
    const testing::CommandResult ran = testing::RunCommand(argv, timeout + 5s);
    std::ifstream body(body_file);
    return Answer{ran.output.substr(0, 3), std::string((std::istreambuf_iterator<char>(body)), {})};
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

  // A path that is no call names the calls.
  const Answer unknown = cluster.Get(api + "/namespaces/a/nothing", kAlice, "front-proxy");
  CHECK(unknown.code == "404");
}

}  // namespace
}  // namespace nodemesh::aggregator
