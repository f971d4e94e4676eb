#include "cli/resource.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cctype>

#include "absl/strings/ascii.h"

namespace nodemesh::cli {
namespace {

// How output names each type: Linkerd's short forms for workloads, "pod" and "ns" as
// kubectl users read them.
struct TypeLabel {
  ResourceType type;
  std::string_view label;
  std::string_view plural;
};

constexpr std::array<TypeLabel, 5> kLabels = {{
    {ResourceType::kPod, "pod", "pods"},
    {ResourceType::kDeployment, "deploy", "deployments"},
    {ResourceType::kStatefulSet, "sts", "statefulsets"},
    {ResourceType::kDaemonSet, "ds", "daemonsets"},
    {ResourceType::kNamespace, "ns", "namespaces"},
}};

const TypeLabel& LabelOf(ResourceType type) {
  return *std::find_if(kLabels.begin(), kLabels.end(),
                       [type](const TypeLabel& label) { return label.type == type; });
}

absl::Status UnknownType(std::string_view text) {
  return absl::InvalidArgumentError(
      fmt::format("unknown resource type '{}': use {}", text, ResourceTypesHelp()));
}

}  // namespace

std::string_view ShortName(ResourceType type) { return LabelOf(type).label; }
std::string_view PluralName(ResourceType type) { return LabelOf(type).plural; }

std::string Label(const ResourceRef& ref) {
  if (ref.name.empty()) return std::string(ShortName(ref.type));
  return fmt::format("{}/{}", ShortName(ref.type), ref.name);
}

absl::StatusOr<ResourceRef> ParseResourceRef(std::string_view text) {
  const size_t slash = text.find('/');
  const std::string_view type_text = text.substr(0, slash);
  if (slash != std::string_view::npos && text.find('/', slash + 1) != std::string_view::npos) {
    return absl::InvalidArgumentError(fmt::format(
        "'{}' is not TYPE/NAME: write e.g. deploy/web and give the namespace with -n", text));
  }
  const std::optional<ResourceType> type = ParseResourceType(type_text);
  if (!type) return UnknownType(type_text);
  ResourceRef ref{*type, ""};
  if (slash != std::string_view::npos) {
    ref.name = std::string(text.substr(slash + 1));
    if (ref.name.empty()) {
      return absl::InvalidArgumentError(
          fmt::format("'{}' names no resource: write TYPE/NAME, e.g. deploy/web", text));
    }
  }
  return ref;
}

absl::StatusOr<ResourceRef> ParseResourceWords(const std::vector<std::string>& words,
                                               std::string_view command) {
  if (words.empty()) {
    return absl::InvalidArgumentError(fmt::format(
        "{} needs a resource, e.g. deploy, deploy/web or ns/emojivoto: see 'meshctl {} --help'",
        command, command));
  }
  if (words.size() > 2) {
    return absl::InvalidArgumentError(
        fmt::format("{} takes one resource, not '{}': write TYPE/NAME, e.g. deploy/web", command,
                    fmt::join(words, " ")));
  }
  absl::StatusOr<ResourceRef> ref = ParseResourceRef(words[0]);
  if (!ref.ok() || words.size() == 1) return ref;
  if (!ref->name.empty()) {
    return absl::InvalidArgumentError(
        fmt::format("{} takes one resource, not '{} {}': write TYPE/NAME, e.g. deploy/web", command,
                    words[0], words[1]));
  }
  ref->name = words[1];
  return ref;
}

v1::Resource ToApiResource(const ResourceRef& ref, std::string_view namespace_name) {
  v1::Resource resource;
  resource.set_type(std::string(ResourceTypeName(ref.type)));
  resource.set_name(ref.name);
  resource.set_namespace_(ref.type == ResourceType::kNamespace ? ref.name
                                                               : std::string(namespace_name));
  return resource;
}

std::string ResourceLabel(const v1::Resource& resource) {
  // The aggregator's one resource for every address outside the inventory.
  if (resource.type() == "external") return "external";
  const std::optional<ResourceType> type = ParseResourceType(resource.type());
  const std::string type_label = type ? std::string(ShortName(*type)) : resource.type();
  if (type_label.empty()) return resource.name();
  return fmt::format("{}/{}", type_label, resource.name());
}

bool IsExternal(const v1::Identity& identity) {
  return nodemesh::IsExternal(wire::WorkloadOf(identity));
}

std::string WorkloadLabel(const v1::Identity& identity) {
  if (IsExternal(identity)) return "";
  for (const TypeLabel& label : kLabels) {
    if (!OwnerKindOf(label.type).empty() && identity.owner_kind() == OwnerKindOf(label.type)) {
      return fmt::format("{}/{}", label.label, identity.owner_name());
    }
  }
  if (identity.owner_kind().empty() || identity.owner_kind() == "Pod") {
    return fmt::format("pod/{}", identity.pod());
  }
  return fmt::format("{}/{}", absl::AsciiStrToLower(identity.owner_kind()), identity.owner_name());
}

absl::StatusOr<int64_t> ParseWindow(std::string_view text) {
  const auto bad = [&] {
    return absl::InvalidArgumentError(fmt::format(
        "bad time window '{}': use 10s to 31d, written like 10s, 90s, 1m30s, 1h, 24h or 7d (past "
        "1h the aggregator asks its Prometheus-compatible store)",
        text));
  };
  int64_t seconds = 0;
  size_t i = 0;
  if (text.empty()) return bad();
  while (i < text.size()) {
    int64_t number = 0;
    const size_t digits_start = i;
    while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i])) &&
           i - digits_start < 6) {
      number = number * 10 + (text[i++] - '0');
    }
    if (i == digits_start || i == text.size()) return bad();
    switch (text[i++]) {
      case 'd':
        seconds += number * 86400;
        break;
      case 'h':
        seconds += number * 3600;
        break;
      case 'm':
        seconds += number * 60;
        break;
      case 's':
        seconds += number;
        break;
      default:
        return bad();
    }
  }
  if (seconds < kMinWindowSeconds || seconds > kMaxStoreWindowSeconds) return bad();
  return seconds;
}

}  // namespace nodemesh::cli
