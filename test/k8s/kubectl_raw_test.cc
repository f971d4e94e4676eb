// k8s tier: the real kubectl reads nodemesh.io/v1alpha1 with `kubectl get --raw` through the
// test API server's aggregation layer, from the real nodemesh-aggregator registered as its
// APIService: kubectl prints the aggregator's JSON, and what RBAC does not grant is refused
// in kubectl's words for the API server's answer (or the aggregator's).
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "test/k8s/k8s_tools.h"
#include "test/lib/aggregator_process.h"
#include "test/lib/certificates.h"
#include "test/lib/kube_apiserver.h"

namespace nodemesh::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

TEST_CASE("kubectl get --raw reads the aggregator's API through the API server", "[k8s]") {
  RequireTools();
  TempDir dir;
  // The aggregator's rights, and alice's: read and tap in namespace a.
  KubeApiServer api({.rbac_file = SourcePath("test/fixtures/rbac/aggregated_api.json")});
  MakeCa(dir, "serving-ca");
  MakeServerCertificate(dir, "serving-ca", "aggregator", {"nodemesh-aggregator.nodemesh.svc"});
  const std::string aggregator_kubeconfig = dir.path() + "/aggregator.kubeconfig";
  api.WriteKubeconfig(aggregator_kubeconfig, api.IssueToken("nodemesh", "nodemesh-aggregator"));
  AggregatorProcess aggregator(
      {.binary = NODEMESH_AGGREGATOR_BINARY,
       .extra_args = {"--tls-cert", dir.path() + "/aggregator.crt", "--tls-key",
                      dir.path() + "/aggregator.key", "--api-listen", "127.0.0.1:0", "--kubeconfig",
                      aggregator_kubeconfig}});
  INFO(aggregator.output());
  // Available once it has read the front proxy's ConfigMap and answers the API server's
  // check, which is made again each second until then.
  api.RegisterExtension({.address = aggregator.api_address(),
                         .ca_bundle_pem = ReadFile(dir.path() + "/serving-ca.crt")});
  REQUIRE(PollUntil([&] { return api.ExtensionStatus().at("available") == true; }, 15s, 100ms));

  const std::string alice = api.IssueUserToken("alice");
  const std::string kubeconfig = dir.path() + "/alice.kubeconfig";
  api.WriteKubeconfig(kubeconfig, alice);
  const auto kubectl_get_raw = [&](const std::string& path) {
    // Its own HOME: no cache or configuration of the machine's.
    return RunCommand({kKubectl, "--kubeconfig", kubeconfig, "get", "--raw", path}, 30s,
                      {.env = {{"HOME", dir.path()}}});
  };
  const std::string group_version = "/apis/nodemesh.io/v1alpha1";

  const CommandResult resources = kubectl_get_raw(group_version);
  INFO(resources.output);
  REQUIRE(resources.exit_code == 0);
  CHECK(json::parse(resources.output).at("kind") == "APIResourceList");

  // What kubectl prints is the aggregator's answer, as the API itself gives it (the window
  // aside: it grows with the aggregator's age).
  const std::string stats = group_version + "/namespaces/a/stats/deployment";
  const CommandResult printed = kubectl_get_raw(stats);
  INFO(printed.output);
  REQUIRE(printed.exit_code == 0);
  json from_kubectl = json::parse(printed.output);
  json from_api = api.Call("GET", stats, alice).json();
  CHECK(from_kubectl.contains("rows"));
  from_kubectl.erase("windowSeconds");
  from_api.erase("windowSeconds");
  CHECK(from_kubectl == from_api);

  // Namespace b is refused by the API server; a's traffic from b by the aggregator.
  const CommandResult in_b = kubectl_get_raw(group_version + "/namespaces/b/stats/deployment");
  CHECK(in_b.exit_code != 0);
  CHECK(in_b.output.find("Error from server (Forbidden): stats.nodemesh.io \"deployment\" is "
                         "forbidden: User \"alice\" cannot get resource \"stats\" in API group "
                         "\"nodemesh.io\" in the namespace \"b\"") != std::string::npos);
  const CommandResult from_b = kubectl_get_raw(stats + "?from.type=deployment&from.namespace=b");
  CHECK(from_b.exit_code != 0);
  CHECK(from_b.output.find("Error from server (Forbidden)") != std::string::npos);

  // A tap is a watch the API server lets through; the aggregator knows no pods of web yet.
  const CommandResult tap = kubectl_get_raw(
      group_version + "/namespaces/a/taps?watch=true&target.type=deployment&target.name=web");
  CHECK(tap.exit_code != 0);
  CHECK(tap.output.find("Error from server (NotFound): no pods of deployment/web in namespace a "
                        "are known to the aggregator") != std::string::npos);
}

}  // namespace
}  // namespace nodemesh::testing
