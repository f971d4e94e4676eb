// meshctl inject / uninject on a Kubernetes cluster: labels and annotations through the API
// server, following the conventions of common/kube/pods.h, which the agents read. Nothing
// here touches a pod template: changing one would restart every pod of the workload,
// which is what nodemesh exists to avoid.
//
//   inject ns/X       label namespace X nodemesh.io/mesh=enabled
//   uninject ns/X     remove that label: the namespace is unmeshed again, as before inject
//                     (pods and workloads with their own setting keep it; a note says so)
//   inject deploy/W   namespace annotation nodemesh.io/mesh-workloads {"Deployment/W":
//                     "enabled"} (W's future pods), and label W's running pods
//                     nodemesh.io/mesh=enabled (the pods of now); sts and ds alike
//   uninject deploy/W the same with "disabled"
//   inject pod/P      label pod P (uninject: "disabled")
//
// A type without a name means every resource of it in the namespace, as in the local mode.
#pragma once

#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "cli/resource.h"
#include "cli/views/views.h"
#include "common/kube/client.h"
#include "common/kube/pods.h"
#include "nlohmann/json.hpp"

namespace nodemesh::cli {

// Where inject and uninject act.
enum class InjectMode { kLocal, kKubernetes };

struct InjectModeInputs {
  bool inventory_flag = false;             // --inventory given
  bool kubeconfig_flags = false;           // --kubeconfig or --context given
  bool inventory_environment = false;      // NODEMESH_INVENTORY set and not empty
  bool kubeconfig_environment = false;     // KUBECONFIG set and not empty
  bool default_kubeconfig_exists = false;  // $HOME/.kube/config
};

// The rule, in order: flags first (--inventory: local; --kubeconfig or --context:
// Kubernetes; both: a usage error), then the environment (NODEMESH_INVENTORY: local;
// KUBECONFIG: Kubernetes), then ~/.kube/config (Kubernetes), else the local default
// inventory.
absl::StatusOr<InjectMode> ChooseInjectMode(const InjectModeInputs& inputs);

// One object meshctl set (or found already set) a label or annotation entry on.
struct KubeChange {
  std::string type{};            // "namespace", "pod"
  std::string namespace_name{};  // empty for a namespace
  std::string name{};
  std::string key{};                   // the label or annotation
  std::string entry{};                 // for the workloads annotation: "Deployment/web"; else empty
  std::optional<std::string> value{};  // set to; nullopt: removed
  std::optional<std::string> previous{};  // what it was; nullopt: absent
  bool changed = false;

  bool operator==(const KubeChange&) const = default;
};

// A change and, when something must be sent, the merge patch that makes it.
struct KubeEdit {
  KubeChange change;
  nlohmann::json patch;  // null when nothing changes
};

// The mesh label set to "enabled" or "disabled" on a pod or namespace object, or removed
// (`value` nullopt).
KubeEdit PlanMeshLabel(const nlohmann::json& object, std::string_view type,
                       std::optional<std::string_view> value);

// The entries of `workloads` ("Deployment/web") set to `value` in the namespace's
// nodemesh.io/mesh-workloads annotation, other entries kept. The merge patch carries the
// namespace's resourceVersion, so that two runs editing the annotation at once cannot
// lose each other's entry (the second gets a conflict and starts again). One KubeChange
// per workload, all with the one patch; an annotation that is not a JSON object is an
// error saying how to fix it.
absl::StatusOr<std::vector<KubeEdit>> PlanWorkloadEntries(
    const nlohmann::json& namespace_object, const std::vector<kube::Workload>& workloads,
    std::string_view value);

// The label selector of a workload's spec.selector (matchLabels and matchExpressions) in
// the API's query syntax: "app=web,tier in (a,b)". Empty when the selector is empty.
absl::StatusOr<std::string> LabelSelectorOf(const nlohmann::json& workload);

// The pods of `items` (a pod list's "items") that belong to one of `workloads`, by
// kube::WorkloadOf: a selector can match the pods of other workloads (a ReplicaSet-owned
// pod of another Deployment with the same labels), ownership cannot.
std::vector<nlohmann::json> PodsOfWorkloads(const nlohmann::json& items,
                                            const std::vector<kube::Workload>& workloads);

// Advice for pods that, after the change, are still not as asked: grouped by workload,
// with the reason (kube::DecideMeshing) and, when meshctl can change it, the command.
// `namespace_object` is the namespace as it is now.
std::vector<std::string> MeshNotes(const std::vector<nlohmann::json>& pods,
                                   const nlohmann::json& namespace_object, bool meshed);

// One line per change, in the local mode's shape: "namespace emojivoto labelled
// nodemesh.io/mesh=enabled", "pod emojivoto/web-1 already labelled ... (no change)";
// kJson: {"changes": [...]}.
std::string RenderKubeChanges(const std::vector<KubeChange>& changes, OutputFormat format);

struct KubeInjectResult {
  std::vector<KubeChange> changes;  // namespace first, then pods by name
  std::vector<std::string> notes;   // for stderr
};

// Meshes (or unmeshes) what `ref` names in `namespace_name` through `client`. Errors say
// what was asked, what the API server answered, and what to do: the permission missing
// for a 403, the server and the kubeconfig when it cannot be reached.
absl::StatusOr<KubeInjectResult> SetMeshedInKubernetes(kube::Client& client, const ResourceRef& ref,
                                                       std::string_view namespace_name,
                                                       bool meshed);

}  // namespace nodemesh::cli
