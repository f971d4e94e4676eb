#include "common/resource/resource.h"

#include <catch2/catch.hpp>
#include <string>

namespace nodemesh {
namespace {

TEST_CASE("Resource types accept names, plurals and kubectl's short names", "[unit]") {
  CHECK(ParseResourceType("po") == ResourceType::kPod);
  CHECK(ParseResourceType("pods") == ResourceType::kPod);
  CHECK(ParseResourceType("deploy") == ResourceType::kDeployment);
  CHECK(ParseResourceType("Deployment") == ResourceType::kDeployment);
  CHECK(ParseResourceType("sts") == ResourceType::kStatefulSet);
  CHECK(ParseResourceType("ds") == ResourceType::kDaemonSet);
  CHECK(ParseResourceType("ns") == ResourceType::kNamespace);
  CHECK(ParseResourceType("namespaces") == ResourceType::kNamespace);
  CHECK_FALSE(ParseResourceType("service"));
  CHECK_FALSE(ParseResourceType(""));
  for (ResourceType type :
       {ResourceType::kPod, ResourceType::kDeployment, ResourceType::kStatefulSet,
        ResourceType::kDaemonSet, ResourceType::kNamespace}) {
    CHECK(ParseResourceType(ResourceTypeName(type)) == type);
  }
}

TEST_CASE("An identity belongs to the resource its owner names", "[unit]") {
  const Workload web_pod{"emojivoto", "web-5d8f", "Deployment", "web"};
  CHECK(ResourceOf(web_pod, ResourceType::kDeployment) == ResourceKey{"emojivoto", "web"});
  CHECK(ResourceOf(web_pod, ResourceType::kPod) == ResourceKey{"emojivoto", "web-5d8f"});
  CHECK(ResourceOf(web_pod, ResourceType::kNamespace) == ResourceKey{"emojivoto", "emojivoto"});
  CHECK_FALSE(ResourceOf(web_pod, ResourceType::kStatefulSet));

  const Workload external{"", "", "External", "external"};
  CHECK(IsExternal(external));
  for (ResourceType type :
       {ResourceType::kPod, ResourceType::kDeployment, ResourceType::kNamespace}) {
    CHECK_FALSE(ResourceOf(external, type));
  }
}

TEST_CASE("A Service is a type apart: no pod belongs to one, its identity names it", "[unit]") {
  CHECK(IsServiceType("svc"));
  CHECK(IsServiceType("Services"));
  CHECK(IsServiceType(kServiceTypeName));
  CHECK_FALSE(IsServiceType("deploy"));
  CHECK_FALSE(ParseResourceType("svc"));

  const Workload web_svc{"emojivoto", "", kServiceOwnerKind, "web-svc"};
  CHECK(ServiceOf(web_svc) == ResourceKey{"emojivoto", "web-svc"});
  CHECK_FALSE(ServiceOf(Workload{"emojivoto", "web-5d8f", "Deployment", "web"}));
  CHECK_FALSE(ServiceOf(Workload{"", "", "External", "external"}));
  // Not a pod: no workload type claims it.
  for (ResourceType type : {ResourceType::kPod, ResourceType::kDeployment}) {
    CHECK_FALSE(ResourceOf(web_svc, type));
  }
}

TEST_CASE("Selectors match by namespace and name, namespaces by name only", "[unit]") {
  const Selector all_deployments{ResourceType::kDeployment, "", ""};
  const Selector in_emojivoto{ResourceType::kDeployment, "emojivoto", ""};
  const Selector web{ResourceType::kDeployment, "emojivoto", "web"};
  const ResourceKey web_key{"emojivoto", "web"}, other{"default", "web"};
  CHECK(all_deployments.Matches(other));
  CHECK(in_emojivoto.Matches(web_key));
  CHECK_FALSE(in_emojivoto.Matches(other));
  CHECK(web.Matches(web_key));
  CHECK_FALSE(web.Matches(ResourceKey{"emojivoto", "voting"}));

  // A client's default namespace must not narrow `stat ns` to one namespace.
  const Selector namespaces{ResourceType::kNamespace, "default", ""};
  CHECK(namespaces.Matches(ResourceKey{"emojivoto", "emojivoto"}));
  const Selector one_namespace{ResourceType::kNamespace, "default", "emojivoto"};
  CHECK(one_namespace.Matches(ResourceKey{"emojivoto", "emojivoto"}));
  CHECK_FALSE(one_namespace.Matches(ResourceKey{"default", "default"}));

  CHECK(web.Describe() == "deployment/web in namespace emojivoto");
  CHECK(all_deployments.Describe() == "deployments in all namespaces");
}

}  // namespace
}  // namespace nodemesh
