#include "common/kube/pods.h"

#include <algorithm>
#include <cctype>

#include "common/base/format.h"

namespace nodemesh::kube {
namespace {

using nlohmann::json;

const json* Find(const json& object, std::string_view key) {
  if (!object.is_object()) return nullptr;
  const auto it = object.find(key);
  return it == object.end() ? nullptr : &*it;
}

std::string StringAt(const json& object, std::string_view key) {
  const json* value = Find(object, key);
  return value != nullptr && value->is_string() ? value->get<std::string>() : std::string();
}

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
  const json* metadata = Find(object, "metadata");
  const json* labels = metadata != nullptr ? Find(*metadata, "labels") : nullptr;
  const json* value = labels != nullptr ? Find(*labels, key) : nullptr;
  if (value == nullptr || !value->is_string()) return std::nullopt;
  return value->get<std::string>();
}

Workload WorkloadOf(const json& pod) {
  const json* metadata = Find(pod, "metadata");
  const std::string pod_name = metadata != nullptr ? StringAt(*metadata, "name") : "";
  const json* owners = metadata != nullptr ? Find(*metadata, "ownerReferences") : nullptr;
  if (owners == nullptr || !owners->is_array()) return {"Pod", pod_name};
  for (const json& owner : *owners) {
    const json* controller = Find(owner, "controller");
    if (controller == nullptr || !controller->is_boolean() || !controller->get<bool>()) continue;
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

MeshDecision DecideMeshing(const json& pod, const json* namespace_object) {
  const json* spec = Find(pod, "spec");
  const json* host_network = spec != nullptr ? Find(*spec, "hostNetwork") : nullptr;
  if (host_network != nullptr && host_network->is_boolean() && host_network->get<bool>()) {
    return {false, "it uses the host's network namespace (hostNetwork): never meshed"};
  }
  if (LabelOf(pod, kPartOfLabel) == kPartOfNodemesh) {
    return {false, fmt::format("it is part of nodemesh ({}={}): never meshed", kPartOfLabel,
                               kPartOfNodemesh)};
  }
  const std::optional<std::string> pod_label = LabelOf(pod, kMeshLabel);
  if (const std::optional<bool> meshed = MeshValue(pod_label)) {
    return {*meshed, fmt::format("the pod is labelled {}={}", kMeshLabel, *pod_label)};
  }
  const json* metadata = Find(pod, "metadata");
  const std::string namespace_name = metadata != nullptr ? StringAt(*metadata, "namespace") : "";
  if (namespace_object == nullptr) {
    return {false, fmt::format("namespace {} is not known yet", namespace_name)};
  }
  const json* ns_metadata = Find(*namespace_object, "metadata");
  const json* annotations = ns_metadata != nullptr ? Find(*ns_metadata, "annotations") : nullptr;
  const std::string workloads_text =
      annotations != nullptr ? StringAt(*annotations, kMeshWorkloadsAnnotation) : "";
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
