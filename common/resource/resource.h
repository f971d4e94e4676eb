// Kubernetes resources as stat, edges, routes and tap name them: the types users type (with
// kubectl's short names), which resource of a type a pod or traffic identity belongs to, and
// the windows queries cover. Shared by the aggregator and meshctl (no gRPC, no protobuf), so
// that both accept the same spellings and give the same errors.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/statusor.h"

namespace nodemesh {

enum class ResourceType { kPod, kDeployment, kStatefulSet, kDaemonSet, kNamespace };

// "pod", "deployment", "statefulset", "daemonset", "namespace": the canonical spelling, used
// in the API and in output.
std::string_view ResourceTypeName(ResourceType type);

// Accepts the canonical names, their plurals and kubectl's short names (po, deploy, sts, ds,
// ns), in any case. nullopt for anything else.
std::optional<ResourceType> ParseResourceType(std::string_view text);

// The accepted types for error messages:
// "pod (po), deployment (deploy), statefulset (sts), daemonset (ds), namespace (ns)".
std::string_view ResourceTypesHelp();

// INVALID_ARGUMENT naming `what` (e.g. "selector type") and listing the accepted types.
absl::Status UnknownResourceTypeError(std::string_view what, std::string_view text);

// The owner kind that pods of a resource of this type carry ("Deployment"); empty for pod and
// namespace, which are not owners.
std::string_view OwnerKindOf(ResourceType type);

// One end of a connection or a pod, as far as resource membership goes. Peers outside the
// inventory have owner_kind "External" (and no pod).
struct Workload {
  std::string_view namespace_name;
  std::string_view pod;
  std::string_view owner_kind;
  std::string_view owner_name;
};

bool IsExternal(const Workload& workload);

// A resource of a known type: {namespace, name}. For namespaces both are the namespace.
struct ResourceKey {
  std::string namespace_name;
  std::string name;

  bool operator==(const ResourceKey&) const = default;
  auto operator<=>(const ResourceKey&) const = default;
  template <typename H>
  friend H AbslHashValue(H h, const ResourceKey& key) {
    return H::combine(std::move(h), key.namespace_name, key.name);
  }
};

// The resource of type `type` that `workload` belongs to; nullopt for external peers and for
// pods whose owner is of another kind (a Job's pods are no deployment's).
std::optional<ResourceKey> ResourceOf(const Workload& workload, ResourceType type);

// Which resources of one type a request is about. Empty namespace: all namespaces; empty
// name: all resources of the type. For namespaces only `name` counts (empty: all
// namespaces), so that a client's default namespace does not narrow `stat ns`.
struct Selector {
  ResourceType type = ResourceType::kPod;
  std::string namespace_name;
  std::string name;

  bool Matches(const ResourceKey& key) const;
  // Whether `workload` belongs to a resource this selector matches.
  bool Contains(const Workload& workload) const;
  // "deployment/web in namespace emojivoto", "deployments in all namespaces": for messages.
  std::string Describe() const;
};

// Kubernetes Services. A Service is no workload (no pod is owned by one) and never either
// end of a connection: an agent names it as where an outbound connection was dialled (its
// cluster IP), next to the pod the node's NAT chose. So it is a type apart from ResourceType,
// accepted where the callers' side answers: as the selector of stat, edges, routes and top,
// and as stat's and tap's `to`.
inline constexpr std::string_view kServiceTypeName = "service";
// The owner kind of the identity that stands for a Service (its pod empty).
inline constexpr std::string_view kServiceOwnerKind = "Service";
// "service", "services", "svc", in any case.
bool IsServiceType(std::string_view text);
// The Service `workload` stands for; nullopt for anything but a Service's identity.
std::optional<ResourceKey> ServiceOf(const Workload& workload);

// The time windows stat, edges and routes accept, in seconds.
inline constexpr int64_t kMinWindowSeconds = 10;
inline constexpr int64_t kMaxWindowSeconds = 3600;
// With a Prometheus-compatible store behind the aggregator, windows up to a month (the store
// answers what it still keeps).
inline constexpr int64_t kMaxStoreWindowSeconds = 31 * 86400;
// What a request that leaves the window unset gets, as Linkerd's default.
inline constexpr int64_t kDefaultWindowSeconds = 60;

}  // namespace nodemesh
