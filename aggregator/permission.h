// One permission on the aggregator's API nodemesh.io/v1alpha1, in the terms of Kubernetes'
// authorization (a SubjectAccessReview's resourceAttributes; RBAC rules grant them): what a
// call needs, whoever checks it (kube_authorizer.h asks the API server; authorization.h's
// certificate rules answer it from a certificate's subject).
#pragma once

#include <string>
#include <string_view>

namespace nodemesh::aggregator {

inline constexpr std::string_view kApiGroup = "nodemesh.io";
inline constexpr std::string_view kApiVersion = "v1alpha1";

// The resources whose permissions show request content rather than aggregates.
inline constexpr std::string_view kTapsResource = "taps";    // verb watch
inline constexpr std::string_view kNodesResource = "nodes";  // subresource admin, verb get
inline constexpr std::string_view kAdminSubresource = "admin";

struct Permission {
  std::string verb{};            // "get", "watch"
  std::string resource{};        // "stats", "edges", "routes", "inventory", "taps", "nodes"
  std::string subresource{};     // "admin" of "nodes"; else empty
  std::string name{};            // "deployment", "pods", a node; empty: any
  std::string namespace_name{};  // empty: cluster scope (every namespace)

  bool operator==(const Permission&) const = default;
};

}  // namespace nodemesh::aggregator
