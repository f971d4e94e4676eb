#include "common/kube/pods.h"

#include <algorithm>
#include <cctype>

#include "common/base/format.h"
#include "common/kube/object.h"

namespace nodemesh::kube {
namespace {

using nlohmann::json;

bool AllDigits(std::string_view text) {
  return !text.empty() &&
         std::all_of(text.begin(), text.end(), [](unsigned char c) { return std::isdigit(c); });
}

// The mesh label's meaning: true, false, or no opinion (absent or another value).
std::optional<bool> MeshValue(const std::optional<std::string>& value) {
  if (value == "enabled") return true;
  if (value == "disabled") return false;
  return std::nullopt;
}

}  // namespace

std::optional<std::string> LabelOf(const json& object, std::string_view key) {
  const json& value = At(At(At(object, "metadata"), "labels"), key);
  if (!value.is_string()) return std::nullopt;
  return value.get<std::string>();
}

Workload WorkloadOf(const json& pod) {
  const json& metadata = At(pod, "metadata");
  const std::string pod_name = StringAt(metadata, "name");
  const json& owners = At(metadata, "ownerReferences");
  if (!owners.is_array()) return {"Pod", pod_name};
  for (const json& owner : owners) {
    const json& controller = At(owner, "controller");
    if (!controller.is_boolean() || !controller.get<bool>()) continue;
    const std::string kind = StringAt(owner, "kind");
    const std::string name = StringAt(owner, "name");
    if (kind.empty() || name.empty()) break;
    if (kind == "Node") break;  // a static pod's mirror: the pod is its own workload
    if (kind == "ReplicaSet") {
      // A Deployment's ReplicaSet is named <deployment>-<pod-template-hash>.
      const std::optional<std::string> hash = LabelOf(pod, "pod-template-hash");
      if (hash && !hash->empty() && name.size() > hash->size() + 1 && name.ends_with("-" + *hash)) {
        return {"Deployment", name.substr(0, name.size() - hash->size() - 1)};
      }
    } else if (kind == "Job") {
      // A CronJob's Job is named <cronjob>-<scheduled time in minutes>.
      const size_t dash = name.rfind('-');
      if (dash != std::string::npos && dash > 0 && AllDigits(name.substr(dash + 1))) {
        return {"CronJob", name.substr(0, dash)};
      }
    }
    return {kind, name};
  }
  return {"Pod", pod_name};
}

std::optional<std::string> NeverMeshedBecause(const json& pod) {
  const json& host_network = At(At(pod, "spec"), "hostNetwork");
  if (host_network.is_boolean() && host_network.get<bool>()) {
    return "it uses the host's network namespace (hostNetwork): never meshed";
  }
  if (LabelOf(pod, kPartOfLabel) == kPartOfNodemesh) {
    return fmt::format("it is part of nodemesh ({}={}): never meshed", kPartOfLabel,
                       kPartOfNodemesh);
  }
  return std::nullopt;
}

MeshDecision DecideMeshing(const json& pod, const json* namespace_object) {
  if (std::optional<std::string> never = NeverMeshedBecause(pod)) return {false, *std::move(never)};
  const std::optional<std::string> pod_label = LabelOf(pod, kMeshLabel);
  if (const std::optional<bool> meshed = MeshValue(pod_label)) {
    return {*meshed, fmt::format("the pod is labelled {}={}", kMeshLabel, *pod_label)};
  }
  const std::string namespace_name = StringAt(At(pod, "metadata"), "namespace");
  if (namespace_object == nullptr) {
    return {false, fmt::format("namespace {} is not known yet", namespace_name)};
  }
  const std::string workloads_text =
      StringAt(At(At(*namespace_object, "metadata"), "annotations"), kMeshWorkloadsAnnotation);
  if (!workloads_text.empty()) {
    const json workloads = json::parse(workloads_text, nullptr, /*allow_exceptions=*/false);
    const Workload workload = WorkloadOf(pod);
    if (workloads.is_object()) {
      const std::string value = StringAt(workloads, workload.Ref());
      if (const std::optional<bool> meshed = MeshValue(value)) {
        return {*meshed, fmt::format("namespace {} annotates {} as {} ({})", namespace_name,
                                     workload.Ref(), value, kMeshWorkloadsAnnotation)};
      }
    }
  }
  const std::optional<std::string> ns_label = LabelOf(*namespace_object, kMeshLabel);
  if (const std::optional<bool> meshed = MeshValue(ns_label)) {
    return {*meshed,
            fmt::format("namespace {} is labelled {}={}", namespace_name, kMeshLabel, *ns_label)};
  }
  return {false, fmt::format("neither the pod nor namespace {} is labelled {}=enabled",
                             namespace_name, kMeshLabel)};
}

}  // namespace nodemesh::kube
