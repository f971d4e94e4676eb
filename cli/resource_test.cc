#include "cli/resource.h"

#include <catch2/catch.hpp>

#include "common/base/format.h"

namespace nodemesh::cli {
namespace {

std::string ErrorOf(const absl::Status& status) { return std::string(status.message()); }

TEST_CASE("resource types in every spelling Linkerd and kubectl accept", "[resource]") {
  for (const char* text : {"pod", "pods", "po", "POD"}) {
    CHECK(ParseResourceType(text) == ResourceType::kPod);
  }
  for (const char* text : {"deployment", "deployments", "deploy"}) {
    CHECK(ParseResourceType(text) == ResourceType::kDeployment);
  }
  for (const char* text : {"statefulset", "statefulsets", "sts"}) {
    CHECK(ParseResourceType(text) == ResourceType::kStatefulSet);
  }
  for (const char* text : {"daemonset", "daemonsets", "ds"}) {
    CHECK(ParseResourceType(text) == ResourceType::kDaemonSet);
  }
  for (const char* text : {"namespace", "namespaces", "ns"}) {
    CHECK(ParseResourceType(text) == ResourceType::kNamespace);
  }
  CHECK_FALSE(ParseResourceType("service"));
  CHECK_FALSE(ParseResourceType(""));
}

TEST_CASE("TYPE, TYPE/NAME and TYPE NAME", "[resource]") {
  CHECK(*ParseResourceRef("deploy/web") == ResourceRef{ResourceType::kDeployment, "web"});
  CHECK(*ParseResourceRef("ns") == ResourceRef{ResourceType::kNamespace, ""});
  CHECK(*ParseResourceWords({"sts", "emoji"}, "stat") ==
        ResourceRef{ResourceType::kStatefulSet, "emoji"});
  CHECK(*ParseResourceWords({"po/web-1"}, "stat") == ResourceRef{ResourceType::kPod, "web-1"});
}

TEST_CASE("resource errors say what to write instead", "[resource]") {
  CHECK(ErrorOf(ParseResourceRef("svc/web").status()) ==
        "unknown resource type 'svc': use pod (po), deployment (deploy), statefulset (sts), "
        "daemonset (ds), namespace (ns)");
  CHECK(ErrorOf(ParseResourceRef("deploy/").status()) ==
        "'deploy/' names no resource: write TYPE/NAME, e.g. deploy/web");
  CHECK(ErrorOf(ParseResourceRef("emojivoto/deploy/web").status()) ==
        "'emojivoto/deploy/web' is not TYPE/NAME: write e.g. deploy/web and give the namespace "
        "with -n");
  CHECK(ErrorOf(ParseResourceWords({}, "tap").status()) ==
        "tap needs a resource, e.g. deploy, deploy/web or ns/emojivoto: see 'meshctl tap --help'");
  CHECK(ErrorOf(ParseResourceWords({"deploy/web", "emoji"}, "stat").status()) ==
        "stat takes one resource, not 'deploy/web emoji': write TYPE/NAME, e.g. deploy/web");
  CHECK(ErrorOf(ParseResourceWords({"deploy", "web", "emoji"}, "stat").status()) ==
        "stat takes one resource, not 'deploy web emoji': write TYPE/NAME, e.g. deploy/web");
}

TEST_CASE("the API's resources", "[resource]") {
  const v1::Resource web = ToApiResource({ResourceType::kDeployment, "web"}, "emojivoto");
  CHECK(web.type() == "deployment");
  CHECK(web.namespace_() == "emojivoto");
  CHECK(web.name() == "web");
  // A namespace is in itself, whatever -n says.
  const v1::Resource ns = ToApiResource({ResourceType::kNamespace, "emojivoto"}, "default");
  CHECK(ns.namespace_() == "emojivoto");
  CHECK(ns.name() == "emojivoto");
  CHECK(ToApiResource({ResourceType::kPod, ""}, "").namespace_().empty());

  CHECK(ResourceLabel(web) == "deploy/web");
  CHECK(ResourceLabel(ns) == "ns/emojivoto");
  v1::Resource external;
  external.set_type("external");
  external.set_name("external");
  CHECK(ResourceLabel(external) == "external");
  v1::Resource unknown;
  unknown.set_type("replicaset");
  unknown.set_name("web-7d9f");
  CHECK(ResourceLabel(unknown) == "replicaset/web-7d9f");
  CHECK(Label({ResourceType::kDaemonSet, ""}) == "ds");
}

TEST_CASE("the workload of a pod", "[resource]") {
  v1::Identity identity;
  identity.set_namespace_("emojivoto");
  identity.set_pod("web-7d9f");
  identity.set_owner_kind("Deployment");
  identity.set_owner_name("web");
  CHECK(WorkloadLabel(identity) == "deploy/web");
  identity.set_owner_kind("DaemonSet");
  CHECK(WorkloadLabel(identity) == "ds/web");
  identity.set_owner_kind("Pod");
  CHECK(WorkloadLabel(identity) == "pod/web-7d9f");
  identity.set_owner_kind("Job");
  CHECK(WorkloadLabel(identity) == "job/web");
  identity.set_owner_kind("External");
  CHECK(WorkloadLabel(identity).empty());
}

TEST_CASE("windows from 10 s to 31 d", "[resource]") {
  CHECK(*ParseWindow("10s") == 10);
  CHECK(*ParseWindow("1m") == 60);
  CHECK(*ParseWindow("90s") == 90);
  CHECK(*ParseWindow("1m30s") == 90);
  CHECK(*ParseWindow("1h") == 3600);
  CHECK(*ParseWindow("60m") == 3600);
  CHECK(*ParseWindow("24h") == 86400);
  CHECK(*ParseWindow("7d") == 7 * 86400);
  CHECK(*ParseWindow("31d") == 31 * 86400);
  for (const char* bad :
       {"", "9s", "32d", "745h", "10", "s", "1w", "-10s", "10 s", "1.5m", "m1", "99999999999s"}) {
    INFO(bad);
    const absl::StatusOr<int64_t> window = ParseWindow(bad);
    REQUIRE_FALSE(window.ok());
    CHECK(ErrorOf(window.status()) ==
          fmt::format("bad time window '{}': {}", bad,
                      "use 10s to 31d, written like 10s, 90s, 1m30s, 1h, 24h or 7d (past 1h the "
                      "aggregator asks its Prometheus-compatible store)"));
  }
}

}  // namespace
}  // namespace nodemesh::cli
