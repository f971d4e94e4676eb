// What meshctl inject and uninject change, worked out before anything is written, as pure
// functions: on the local cluster, the pods a resource names in an inventory (local.h
// writes them); on Kubernetes, the labels and annotation entries to set and the merge
// patches that set them, the pods a workload owns, and the advice about pods that stay as
// they were (kubernetes.h sends them). What is printed of the changes: cli/views/inject.h.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "cli/resource.h"
#include "common/inventory/inventory.h"
#include "common/kube/pods.h"
#include "nlohmann/json.hpp"

namespace nodemesh::cli {

// The local cluster: one pod whose `meshed` meshctl set (or found already set) in the
// inventories.
struct MeshChange {
  std::string pod;  // "emojivoto/web-1"
  bool changed = false;

  bool operator==(const MeshChange&) const = default;
};

// The local cluster: whether `ref` in `namespace_name` names `pod`: a namespace reference names its
// own namespace's pods, a type without a name every pod of that type.
bool NamesPod(const ResourceRef& ref, std::string_view namespace_name, const PodInfo& pod);

// Kubernetes: one object meshctl set (or found already set) a label or annotation entry on.
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

// An object's metadata.KEY ("name", "namespace", "continue"); empty when absent.
std::string MetadataString(const nlohmann::json& object, std::string_view key);
// Objects in the order their changes are made and listed: by metadata.name.
bool ByName(const nlohmann::json& a, const nlohmann::json& b);

}  // namespace nodemesh::cli
