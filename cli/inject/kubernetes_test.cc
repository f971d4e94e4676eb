// meshctl inject / uninject on Kubernetes, the pure parts: where the command acts, which
// objects get which label or annotation, which pods belong to a workload, the advice, and
// the output (golden files in cli/testdata).
#include <fmt/format.h>

#include <catch2/catch.hpp>
#include <map>
#include <sstream>

#include "cli/golden.h"
#include "cli/inject/mode.h"
#include "cli/inject/plan.h"
#include "cli/meshctl.h"
#include "cli/run_in_process.h"
#include "cli/views/inject.h"
#include "test/lib/files.h"

namespace nodemesh::cli {
namespace {

using nlohmann::json;
using testing::CheckGolden;
using testing::Result;
using testing::Run;

// A pod of a Deployment: owned by ReplicaSet <deployment>-<hash>, with the hash label.
json DeploymentPod(std::string_view name, std::string_view deployment, std::string_view hash,
                   json labels = json::object()) {
  labels["pod-template-hash"] = hash;
  return {{"metadata",
           {{"name", name},
            {"namespace", "emojivoto"},
            {"labels", labels},
            {"ownerReferences",
             {{{"kind", "ReplicaSet"},
               {"name", fmt::format("{}-{}", deployment, hash)},
               {"controller", true}}}}}}};
}

json Namespace(json labels = json::object(), json annotations = json::object()) {
  return {{"metadata",
           {{"name", "emojivoto"},
            {"resourceVersion", "812"},
            {"labels", labels},
            {"annotations", annotations}}}};
}

TEST_CASE("mode: flags, then the environment, then ~/.kube/config, else local", "[inject][kube]") {
  using Inputs = InjectModeInputs;
  CHECK(*ChooseInjectMode(Inputs{}) == InjectMode::kLocal);
  CHECK(*ChooseInjectMode(Inputs{.default_kubeconfig_exists = true}) == InjectMode::kKubernetes);
  CHECK(*ChooseInjectMode(Inputs{.kubeconfig_environment = true}) == InjectMode::kKubernetes);
  // NODEMESH_INVENTORY means the local cluster even with a kubeconfig around.
  CHECK(*ChooseInjectMode(Inputs{.inventory_environment = true,
                                 .kubeconfig_environment = true,
                                 .default_kubeconfig_exists = true}) == InjectMode::kLocal);
  // Flags beat the environment, both ways.
  CHECK(*ChooseInjectMode(Inputs{.inventory_flag = true, .kubeconfig_environment = true}) ==
        InjectMode::kLocal);
  CHECK(*ChooseInjectMode(Inputs{.kubeconfig_flags = true, .inventory_environment = true}) ==
        InjectMode::kKubernetes);
  const absl::StatusOr<InjectMode> both =
      ChooseInjectMode(Inputs{.inventory_flag = true, .kubeconfig_flags = true});
  REQUIRE_FALSE(both.ok());
  CHECK(both.status().code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("the mesh label: set, already set, removed, already absent", "[inject][kube]") {
  const json pod = DeploymentPod("web-5f7c-abcde", "web", "5f7c");
  const KubeEdit set = PlanMeshLabel(pod, "pod", "enabled");
  CHECK(set.change == KubeChange{.type = "pod",
                                 .namespace_name = "emojivoto",
                                 .name = "web-5f7c-abcde",
                                 .key = "nodemesh.io/mesh",
                                 .value = "enabled",
                                 .changed = true});
  CHECK(set.patch == json::parse(R"({"metadata":{"labels":{"nodemesh.io/mesh":"enabled"}}})"));

  const json labelled =
      DeploymentPod("web-5f7c-abcde", "web", "5f7c", {{"nodemesh.io/mesh", "enabled"}});
  const KubeEdit already = PlanMeshLabel(labelled, "pod", "enabled");
  CHECK_FALSE(already.change.changed);
  CHECK(already.change.previous == "enabled");
  CHECK(already.patch.is_null());
  const KubeEdit disabled = PlanMeshLabel(labelled, "pod", "disabled");
  CHECK(disabled.change.changed);
  CHECK(disabled.patch["metadata"]["labels"]["nodemesh.io/mesh"] == "disabled");

  // A namespace is removed from the mesh by removing its label: null in a merge patch.
  const KubeEdit removed =
      PlanMeshLabel(Namespace({{"nodemesh.io/mesh", "enabled"}}), "namespace", std::nullopt);
  CHECK(removed.change.namespace_name.empty());
  CHECK(removed.change.name == "emojivoto");
  CHECK(removed.change.changed);
  CHECK(removed.patch == json::parse(R"({"metadata":{"labels":{"nodemesh.io/mesh":null}}})"));
  const KubeEdit absent = PlanMeshLabel(Namespace(), "namespace", std::nullopt);
  CHECK_FALSE(absent.change.changed);
  CHECK(absent.patch.is_null());
}

TEST_CASE("the workloads annotation: entries added, others kept, guarded by resourceVersion",
          "[inject][kube]") {
  const json ns = Namespace({}, {{"nodemesh.io/mesh-workloads", R"({"StatefulSet/db":"disabled"})"},
                                 {"owner", "team-a"}});
  const absl::StatusOr<std::vector<KubeEdit>> edits =
      PlanWorkloadEntries(ns, {{"Deployment", "web"}, {"StatefulSet", "db"}}, "enabled");
  REQUIRE(edits.ok());
  REQUIRE(edits->size() == 2);
  CHECK((*edits)[0].change == KubeChange{.type = "namespace",
                                         .name = "emojivoto",
                                         .key = "nodemesh.io/mesh-workloads",
                                         .entry = "Deployment/web",
                                         .value = "enabled",
                                         .changed = true});
  CHECK((*edits)[1].change.previous == "disabled");
  CHECK((*edits)[1].change.changed);
  // One patch: the whole annotation (a merge patch replaces a string whole), and the
  // resourceVersion it was computed from; other annotations are left alone.
  const json expected = json::parse(R"({"metadata":{"annotations":{"nodemesh.io/mesh-workloads":
      "{\"Deployment/web\":\"enabled\",\"StatefulSet/db\":\"enabled\"}"},"resourceVersion":"812"}})");
  CHECK((*edits)[0].patch == expected);
  CHECK((*edits)[1].patch == expected);

  const json done =
      Namespace({}, {{"nodemesh.io/mesh-workloads", R"({"Deployment/web":"enabled"})"}});
  const absl::StatusOr<std::vector<KubeEdit>> unchanged =
      PlanWorkloadEntries(done, {{"Deployment", "web"}}, "enabled");
  REQUIRE(unchanged.ok());
  CHECK_FALSE((*unchanged)[0].change.changed);
  CHECK((*unchanged)[0].patch.is_null());

  const json broken = Namespace({}, {{"nodemesh.io/mesh-workloads", "web"}});
  const absl::StatusOr<std::vector<KubeEdit>> refused =
      PlanWorkloadEntries(broken, {{"Deployment", "web"}}, "enabled");
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.status().message() ==
        "namespace emojivoto has an annotation nodemesh.io/mesh-workloads that is not a JSON "
        "object ('web'): fix it, or remove it with 'kubectl annotate namespace emojivoto "
        "nodemesh.io/mesh-workloads-' and run meshctl again");
}

TEST_CASE("a workload's label selector in query syntax", "[inject][kube]") {
  const json deployment = json::parse(R"({"kind":"Deployment","metadata":{"name":"web"},
    "spec":{"selector":{"matchLabels":{"app":"web","tier":"front"},
      "matchExpressions":[{"key":"track","operator":"In","values":["stable","canary"]},
                          {"key":"env","operator":"NotIn","values":["dev"]},
                          {"key":"team","operator":"Exists"},
                          {"key":"legacy","operator":"DoesNotExist"}]}}})");
  CHECK(*LabelSelectorOf(deployment) ==
        "app=web,tier=front,track in (stable,canary),env notin (dev),team,!legacy");
  CHECK(*LabelSelectorOf(json::parse(R"({"spec":{}})")) == "");
  const absl::StatusOr<std::string> odd = LabelSelectorOf(json::parse(
      R"({"kind":"Deployment","metadata":{"name":"web"},
          "spec":{"selector":{"matchExpressions":[{"key":"a","operator":"Near"}]}}})"));
  REQUIRE_FALSE(odd.ok());
  CHECK(odd.status().message() ==
        "Deployment web has a selector with the operator 'Near', which meshctl does not know");
}

TEST_CASE("a workload's pods are those it owns, not all its selector matches", "[inject][kube]") {
  // web-canary's pods carry app=web too; its ReplicaSet is web-canary-<hash>.
  const json items = json::array({
      DeploymentPod("web-5f7c-b", "web", "5f7c", {{"app", "web"}}),
      DeploymentPod("web-canary-77aa-x", "web-canary", "77aa", {{"app", "web"}}),
      DeploymentPod("web-5f7c-a", "web", "5f7c", {{"app", "web"}}),
      json::parse(R"({"metadata":{"name":"web-debug","namespace":"emojivoto",
                      "labels":{"app":"web"}}})"),
  });
  const std::vector<json> web = PodsOfWorkloads(items, {{"Deployment", "web"}});
  REQUIRE(web.size() == 2);
  CHECK(web[0]["metadata"]["name"] == "web-5f7c-a");  // by name
  CHECK(web[1]["metadata"]["name"] == "web-5f7c-b");
  CHECK(PodsOfWorkloads(items, {{"Deployment", "web"}, {"Deployment", "web-canary"}}).size() == 3);
  CHECK(PodsOfWorkloads(items, {{"StatefulSet", "web"}}).empty());
}

TEST_CASE("notes: pods that stay as they were, why, and what changes that", "[inject][kube]") {
  // After uninject ns: web's pods keep their own label; a host-network pod is never meshed
  // anyway; voting follows the namespace.
  const json ns = Namespace();
  json host = DeploymentPod("proxy-1", "proxy", "9a9a");
  host["spec"]["hostNetwork"] = true;
  const std::vector<json> pods = {
      DeploymentPod("web-5f7c-a", "web", "5f7c", {{"nodemesh.io/mesh", "enabled"}}),
      DeploymentPod("web-5f7c-b", "web", "5f7c", {{"nodemesh.io/mesh", "enabled"}}),
      DeploymentPod("voting-1234-a", "voting", "1234"),
  };
  CHECK(MeshNotes(pods, ns, false) ==
        std::vector<std::string>{"deploy/web: 2 pods stay meshed: the pod is labelled "
                                 "nodemesh.io/mesh=enabled ('meshctl uninject deploy/web -n "
                                 "emojivoto' changes that)"});

  const json meshed_ns =
      Namespace({{"nodemesh.io/mesh", "enabled"}},
                {{"nodemesh.io/mesh-workloads", R"({"Deployment/voting":"disabled"})"}});
  CHECK(MeshNotes({pods[2], host}, meshed_ns, true) ==
        std::vector<std::string>{
            "deploy/proxy: 1 pod stays unmeshed: it uses the host's network namespace "
            "(hostNetwork): never meshed",
            "deploy/voting: 1 pod stays unmeshed: namespace emojivoto annotates "
            "Deployment/voting as disabled (nodemesh.io/mesh-workloads) ('meshctl inject "
            "deploy/voting -n emojivoto' changes that)"});
}

std::vector<KubeChange> SampleChanges() {
  return {
      {.type = "namespace",
       .name = "emojivoto",
       .key = "nodemesh.io/mesh",
       .value = "enabled",
       .changed = true},
      {.type = "namespace",
       .name = "emojivoto",
       .key = "nodemesh.io/mesh",
       .value = "enabled",
       .previous = "enabled"},
      {.type = "namespace",
       .name = "emojivoto",
       .key = "nodemesh.io/mesh",
       .previous = "enabled",
       .changed = true},
      {.type = "namespace", .name = "emojivoto", .key = "nodemesh.io/mesh"},
      {.type = "namespace",
       .name = "emojivoto",
       .key = "nodemesh.io/mesh-workloads",
       .entry = "Deployment/web",
       .value = "enabled",
       .changed = true},
      {.type = "namespace",
       .name = "emojivoto",
       .key = "nodemesh.io/mesh-workloads",
       .entry = "StatefulSet/db",
       .value = "disabled",
       .previous = "disabled"},
      {.type = "pod",
       .namespace_name = "emojivoto",
       .name = "web-5f7c-abcde",
       .key = "nodemesh.io/mesh",
       .value = "enabled",
       .changed = true},
      {.type = "pod",
       .namespace_name = "emojivoto",
       .name = "web-5f7c-fghij",
       .key = "nodemesh.io/mesh",
       .value = "enabled",
       .previous = "enabled"},
      {.type = "pod",
       .namespace_name = "emojivoto",
       .name = "voting-1234-a",
       .key = "nodemesh.io/mesh",
       .value = "disabled",
       .previous = "enabled",
       .changed = true},
  };
}

TEST_CASE("output: one line per object, and json", "[inject][kube][views]") {
  CheckGolden("kube_inject.golden", RenderKubeChanges(SampleChanges(), OutputFormat::kTable));
  CheckGolden("kube_inject_json.golden", RenderKubeChanges(SampleChanges(), OutputFormat::kJson));
  CHECK(RenderKubeChanges({}, OutputFormat::kJson) == "{\n  \"changes\": []\n}\n");
}

TEST_CASE("the command line: which cluster, flags that do not go together", "[inject][kube]") {
  nodemesh::testing::TempDir dir;
  const std::string inventory = dir.Write(
      "node-1.json",
      R"({"pods":[{"namespace":"default","name":"debug","ips":["10.77.0.30"],"cgroup":"/debug",)"
      R"("netns":"/run/netns/debug","meshed":false}]})");
  const std::string kubeconfig = dir.path() + "/kubeconfig";

  const Result both =
      Run({"inject", "pod/debug", "--inventory", inventory, "--kubeconfig", kubeconfig});
  CHECK(both.code == 2);
  CHECK(both.err ==
        "meshctl: --inventory (a local cluster) and --kubeconfig/--context (a Kubernetes "
        "cluster) do not go together: give one or the other\n");

  // NODEMESH_INVENTORY wins over a kubeconfig in the environment and under HOME; -n is
  // "default" there; -o json.
  std::filesystem::create_directories(dir.path() + "/.kube");
  dir.Write(".kube/config", "not read\n");
  const Result local =
      Run({"inject", "pod/debug", "-o", "json"},
          {{"NODEMESH_INVENTORY", inventory}, {"KUBECONFIG", kubeconfig}, {"HOME", dir.path()}});
  CHECK(local.code == 0);
  CHECK(local.err.empty());
  CHECK(local.out ==
        "{\n  \"changes\": [\n    {\n      \"type\": \"pod\",\n      \"namespace\": "
        "\"default\",\n      \"name\": \"debug\",\n      \"meshed\": true,\n      "
        "\"changed\": true\n    }\n  ]\n}\n");

  // --kubeconfig means Kubernetes, NODEMESH_INVENTORY or not: a missing file is said so.
  const Result missing = Run({"uninject", "ns/emojivoto", "--kubeconfig", kubeconfig},
                             {{"NODEMESH_INVENTORY", inventory}});
  CHECK(missing.code == 1);
  CHECK(missing.err.find(fmt::format("meshctl: cannot read kubeconfig {} (No such file or "
                                     "directory)",
                                     kubeconfig)) == 0);

  const Result format = Run({"inject", "ns/emojivoto", "-o", "wide", "--inventory", inventory});
  CHECK(format.code == 2);
  CHECK(format.err ==
        "meshctl: unknown output format 'wide' for inject: use -o table or -o json\n");

  const Result help = Run({"inject", "--help"});
  CHECK(help.code == 0);
  CHECK(help.out.find("else ~/.kube/config exists: Kubernetes; else local") != std::string::npos);
  CHECK(help.out.find("--kubeconfig") != std::string::npos);
}

}  // namespace
}  // namespace nodemesh::cli
