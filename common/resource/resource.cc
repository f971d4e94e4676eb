#include "common/resource/resource.h"

#include <fmt/format.h>

#include <array>
#include <cctype>

namespace nodemesh {
namespace {

struct TypeSpelling {
  ResourceType type;
  std::string_view name;
  std::string_view plural;
  std::string_view short_name;
  std::string_view owner_kind;
};

constexpr std::array<TypeSpelling, 5> kTypes = {{
    {ResourceType::kPod, "pod", "pods", "po", ""},
    {ResourceType::kDeployment, "deployment", "deployments", "deploy", "Deployment"},
    {ResourceType::kStatefulSet, "statefulset", "statefulsets", "sts", "StatefulSet"},
    {ResourceType::kDaemonSet, "daemonset", "daemonsets", "ds", "DaemonSet"},
    {ResourceType::kNamespace, "namespace", "namespaces", "ns", ""},
}};

bool EqualsIgnoringCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

const TypeSpelling& SpellingOf(ResourceType type) {
  for (const TypeSpelling& spelling : kTypes) {
    if (spelling.type == type) return spelling;
  }
  return kTypes[0];
}

}  // namespace

std::string_view ResourceTypeName(ResourceType type) { return SpellingOf(type).name; }

std::optional<ResourceType> ParseResourceType(std::string_view text) {
  for (const TypeSpelling& spelling : kTypes) {
    if (EqualsIgnoringCase(text, spelling.name) || EqualsIgnoringCase(text, spelling.plural) ||
        EqualsIgnoringCase(text, spelling.short_name)) {
      return spelling.type;
    }
  }
  return std::nullopt;
}

std::string_view ResourceTypesHelp() {
  return "pod (po), deployment (deploy), statefulset (sts), daemonset (ds), namespace (ns)";
}

absl::Status UnknownResourceTypeError(std::string_view what, std::string_view text) {
  if (text.empty()) {
    return absl::InvalidArgumentError(
        fmt::format("{} is missing: give one of {}", what, ResourceTypesHelp()));
  }
  return absl::InvalidArgumentError(
      fmt::format("{} '{}' is not a resource type nodemesh knows: "
                  "use one of {}",
                  what, text, ResourceTypesHelp()));
}

std::string_view OwnerKindOf(ResourceType type) { return SpellingOf(type).owner_kind; }

bool IsExternal(const Workload& workload) {
  return workload.pod.empty() || workload.owner_kind == "External";
}

std::optional<ResourceKey> ResourceOf(const Workload& workload, ResourceType type) {
  if (IsExternal(workload)) return std::nullopt;
  switch (type) {
    case ResourceType::kPod:
      return ResourceKey{std::string(workload.namespace_name), std::string(workload.pod)};
    case ResourceType::kNamespace:
      return ResourceKey{std::string(workload.namespace_name),
                         std::string(workload.namespace_name)};
    case ResourceType::kDeployment:
    case ResourceType::kStatefulSet:
    case ResourceType::kDaemonSet:
      if (workload.owner_name.empty() ||
          !EqualsIgnoringCase(workload.owner_kind, OwnerKindOf(type)))
        return std::nullopt;
      return ResourceKey{std::string(workload.namespace_name), std::string(workload.owner_name)};
  }
  return std::nullopt;
}

bool IsServiceType(std::string_view text) {
  return EqualsIgnoringCase(text, kServiceTypeName) || EqualsIgnoringCase(text, "services") ||
         EqualsIgnoringCase(text, "svc");
}

std::optional<ResourceKey> ServiceOf(const Workload& workload) {
  if (workload.owner_kind != kServiceOwnerKind || workload.owner_name.empty()) return std::nullopt;
  return ResourceKey{std::string(workload.namespace_name), std::string(workload.owner_name)};
}

bool Selector::Matches(const ResourceKey& key) const {
  if (type == ResourceType::kNamespace) return name.empty() || key.name == name;
  return (namespace_name.empty() || key.namespace_name == namespace_name) &&
         (name.empty() || key.name == name);
}

bool Selector::Contains(const Workload& workload) const {
  const std::optional<ResourceKey> key = ResourceOf(workload, type);
  return key && Matches(*key);
}

std::string Selector::Describe() const {
  const std::string_view type_name = ResourceTypeName(type);
  if (type == ResourceType::kNamespace) {
    return name.empty() ? "all namespaces" : fmt::format("namespace/{}", name);
  }
  const std::string where = namespace_name.empty() ? std::string("in all namespaces")
                                                   : fmt::format("in namespace {}", namespace_name);
  if (name.empty()) return fmt::format("{} {}", SpellingOf(type).plural, where);
  return fmt::format("{}/{} {}", type_name, name, where);
}

}  // namespace nodemesh
