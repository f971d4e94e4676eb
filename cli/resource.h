// What the commands point at: resource types as Linkerd and kubectl spell them
// ("deploy/web", "po", "namespaces"), and time windows ("10s" .. "1h").
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/resource/resource.h"
#include "common/wire/convert.h"
#include "nodemesh/v1/nodemesh.pb.h"

namespace nodemesh::cli {

// The types and the spellings accepted for them (ParseResourceType, ResourceTypeName,
// OwnerKindOf) are common/resource's, so that meshctl and the API agree on every alias.

// The short form used in output: "pod", "deploy", "sts", "ds", "ns".
std::string_view ShortName(ResourceType type);
// "pods", "deployments", ...
std::string_view PluralName(ResourceType type);

// A type and, optionally, one name of it. No name: every resource of the type.
struct ResourceRef {
  ResourceType type = ResourceType::kPod;
  std::string name;

  bool operator==(const ResourceRef&) const = default;
};

// "deploy/web", or "deploy" for every deployment.
std::string Label(const ResourceRef& ref);

// "deploy/web" or "deploy".
absl::StatusOr<ResourceRef> ParseResourceRef(std::string_view text);
// A command's positional words: "deploy/web", "deploy web" or "deploy".
absl::StatusOr<ResourceRef> ParseResourceWords(const std::vector<std::string>& words,
                                               std::string_view command);

// The API's form of `ref` in `namespace_name` (empty: every namespace). A namespace is its
// own namespace.
v1::Resource ToApiResource(const ResourceRef& ref, std::string_view namespace_name);

// "deploy/web" for a resource from the API; types the CLI does not know print as sent.
std::string ResourceLabel(const v1::Resource& resource);
// "deploy/web" for the workload that owns a pod; empty for an address outside the inventory.
std::string WorkloadLabel(const v1::Identity& identity);
// A peer outside the inventory.
bool IsExternal(const v1::Identity& identity);

// "10s", "90s", "1m30s", "5m", "1h": seconds from 10 s to 1 h.
absl::StatusOr<int64_t> ParseWindow(std::string_view text);

}  // namespace nodemesh::cli
