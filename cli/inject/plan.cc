#include "cli/inject/plan.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <utility>

#include "common/base/format.h"
#include "common/kube/object.h"

namespace nodemesh::cli {
namespace {

using kube::At;
using kube::StringAt;
using nlohmann::json;

// "deploy/web" for the workloads meshctl can name, else "Job/nightly-28433" (kind/name).
std::string WorkloadLabelOf(const kube::Workload& workload) {
  for (const ResourceType type :
       {ResourceType::kDeployment, ResourceType::kStatefulSet, ResourceType::kDaemonSet}) {
    if (workload.kind == OwnerKindOf(type)) {
      return fmt::format("{}/{}", ShortName(type), workload.name);
    }
  }
  if (workload.kind == "Pod") return fmt::format("pod/{}", workload.name);
  return workload.Ref();
}

bool MeshctlCanName(const kube::Workload& workload) {
  return workload.kind == "Pod" || workload.kind == OwnerKindOf(ResourceType::kDeployment) ||
         workload.kind == OwnerKindOf(ResourceType::kStatefulSet) ||
         workload.kind == OwnerKindOf(ResourceType::kDaemonSet);
}

// Pods nodemesh never meshes, whatever their labels say.
bool NeverMeshed(const json& pod) { return kube::NeverMeshedBecause(pod).has_value(); }

}  // namespace

bool NamesPod(const ResourceRef& ref, std::string_view namespace_name, const PodInfo& pod) {
  if (ref.type == ResourceType::kNamespace) {
    return pod.namespace_name == (ref.name.empty() ? namespace_name : ref.name);
  }
  if (pod.namespace_name != namespace_name) return false;
  if (ref.type == ResourceType::kPod) return ref.name.empty() || pod.name == ref.name;
  return pod.owner_kind == OwnerKindOf(ref.type) &&
         (ref.name.empty() || pod.owner_name == ref.name);
}

KubeEdit PlanMeshLabel(const json& object, std::string_view type,
                       std::optional<std::string_view> value) {
  KubeEdit edit;
  KubeChange& change = edit.change;
  change.type = std::string(type);
  change.name = MetadataString(object, "name");
  if (type != "namespace") change.namespace_name = MetadataString(object, "namespace");
  change.key = std::string(kube::kMeshLabel);
  if (value) change.value = std::string(*value);
  change.previous = kube::LabelOf(object, kube::kMeshLabel);
  change.changed = change.previous != change.value;
  if (change.changed) {
    json label_value = change.value ? json(*change.value) : json(nullptr);
    edit.patch = {{"metadata", {{"labels", {{change.key, std::move(label_value)}}}}}};
  }
  return edit;
}

absl::StatusOr<std::vector<KubeEdit>> PlanWorkloadEntries(
    const json& namespace_object, const std::vector<kube::Workload>& workloads,
    std::string_view value) {
  const std::string namespace_name = MetadataString(namespace_object, "name");
  const std::string text =
      StringAt(At(At(namespace_object, "metadata"), "annotations"), kube::kMeshWorkloadsAnnotation);
  json entries = json::object();
  if (!text.empty()) {
    entries = json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (!entries.is_object()) {
      return absl::FailedPreconditionError(fmt::format(
          "namespace {} has an annotation {} that is not a JSON object ('{}'): fix it, or remove "
          "it with 'kubectl annotate namespace {} {}-' and run meshctl again",
          namespace_name, kube::kMeshWorkloadsAnnotation, text, namespace_name,
          kube::kMeshWorkloadsAnnotation));
    }
  }
  std::vector<KubeEdit> edits;
  bool changed = false;
  for (const kube::Workload& workload : workloads) {
    KubeEdit edit;
    KubeChange& change = edit.change;
    change.type = "namespace";
    change.name = namespace_name;
    change.key = std::string(kube::kMeshWorkloadsAnnotation);
    change.entry = workload.Ref();
    change.value = std::string(value);
    if (const json& previous = At(entries, change.entry); !previous.is_null()) {
      change.previous = previous.is_string() ? previous.get<std::string>() : previous.dump();
    }
    change.changed = change.previous != change.value;
    if (change.changed) {
      entries[change.entry] = std::string(value);
      changed = true;
    }
    edits.push_back(std::move(edit));
  }
  if (changed) {
    json patch_metadata = {{"annotations", {{kube::kMeshWorkloadsAnnotation, entries.dump()}}}};
    if (const std::string version = MetadataString(namespace_object, "resourceVersion");
        !version.empty()) {
      patch_metadata["resourceVersion"] = version;
    }
    const json patch = {{"metadata", std::move(patch_metadata)}};
    for (KubeEdit& edit : edits) edit.patch = patch;
  }
  return edits;
}

absl::StatusOr<std::string> LabelSelectorOf(const json& workload) {
  const json& selector = At(At(workload, "spec"), "selector");
  std::vector<std::string> terms;
  if (selector.is_null()) return std::string();
  if (const json& labels = At(selector, "matchLabels"); labels.is_object()) {
    for (const auto& [key, value] : labels.items()) {
      if (value.is_string()) terms.push_back(fmt::format("{}={}", key, value.get<std::string>()));
    }
  }
  if (const json& expressions = At(selector, "matchExpressions"); expressions.is_array()) {
    for (const json& expression : expressions) {
      const std::string key = StringAt(expression, "key");
      const std::string op = StringAt(expression, "operator");
      std::vector<std::string> values;
      if (const json& list = At(expression, "values"); list.is_array()) {
        for (const json& value : list) {
          if (value.is_string()) values.push_back(value.get<std::string>());
        }
      }
      if (op == "In") {
        terms.push_back(fmt::format("{} in ({})", key, fmt::join(values, ",")));
      } else if (op == "NotIn") {
        terms.push_back(fmt::format("{} notin ({})", key, fmt::join(values, ",")));
      } else if (op == "Exists") {
        terms.push_back(key);
      } else if (op == "DoesNotExist") {
        terms.push_back("!" + key);
      } else {
        return absl::FailedPreconditionError(
            fmt::format("{} {} has a selector with the operator '{}', which meshctl does not know",
                        StringAt(workload, "kind"), MetadataString(workload, "name"), op));
      }
    }
  }
  return fmt::format("{}", fmt::join(terms, ","));
}

std::vector<json> PodsOfWorkloads(const json& items, const std::vector<kube::Workload>& workloads) {
  std::vector<json> pods;
  if (!items.is_array()) return pods;
  for (const json& pod : items) {
    if (std::find(workloads.begin(), workloads.end(), kube::WorkloadOf(pod)) != workloads.end()) {
      pods.push_back(pod);
    }
  }
  std::sort(pods.begin(), pods.end(), ByName);
  return pods;
}

std::vector<std::string> MeshNotes(const std::vector<json>& pods, const json& namespace_object,
                                   bool meshed) {
  struct Group {
    std::string namespace_name;
    kube::Workload workload;
    bool fixable = false;
    int pods = 0;
  };
  // By workload and reason, so that a reason reads once however many pods share it.
  std::map<std::pair<std::string, std::string>, Group> groups;
  for (const json& pod : pods) {
    const kube::MeshDecision decision = kube::DecideMeshing(pod, &namespace_object);
    if (decision.meshed == meshed) continue;
    const kube::Workload workload = kube::WorkloadOf(pod);
    Group& group = groups[{workload.Ref(), decision.because}];
    group.namespace_name = MetadataString(pod, "namespace");
    group.workload = workload;
    group.fixable = !NeverMeshed(pod) && MeshctlCanName(workload);
    ++group.pods;
  }
  std::vector<std::string> notes;
  for (const auto& [key, group] : groups) {
    std::string note =
        fmt::format("{}: {} pod{} stay{} {}: {}", WorkloadLabelOf(group.workload), group.pods,
                    group.pods == 1 ? "" : "s", group.pods == 1 ? "s" : "",
                    meshed ? "unmeshed" : "meshed", key.second);
    if (group.fixable) {
      note += fmt::format(" ('meshctl {} {} -n {}' changes that)", meshed ? "inject" : "uninject",
                          WorkloadLabelOf(group.workload), group.namespace_name);
    }
    notes.push_back(std::move(note));
  }
  return notes;
}

std::string MetadataString(const json& object, std::string_view key) {
  return StringAt(At(object, "metadata"), key);
}

bool ByName(const json& a, const json& b) {
  return MetadataString(a, "name") < MetadataString(b, "name");
}

}  // namespace nodemesh::cli
