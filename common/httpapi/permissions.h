// The permission each call of nodemesh.io/v1alpha1 needs, as the attributes of a Kubernetes
// SubjectAccessReview: RBAC decides who may read, tap and reach a node's agent. The first
// permission of a call is exactly what the API server's own authorization checked from the
// URL, so that a role works the same at both doors; the others are the namespaces only the
// call's parameters name (a tap's `to`, a stat's `from` and `to`, a view's other namespaces
// and `filter.around`), which every caller must also be allowed in.
//
//   call            verb   resource  subresource  namespace                         name
//   stats           get    stats                  the selector's; from's, to's      TYPE
//   edges           get    edges                  the selector's                    TYPE
//   routes          get    routes                 the selector's; from's            TYPE
//   inventory/pods  get    inventory              the request's ("" for all)        pods
//   taps            watch  taps                   the target's; to's
//   nodes/admin     get    nodes     admin        "" (cluster scope)                NODE
//   views           get    views                  the first namespace (or ""); the   KIND
//                                                 others; filter.around's
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/httpapi/paths.h"
#include "nlohmann/json.hpp"

namespace nodemesh::httpapi {

struct Permission {
  std::string verb{};            // "get", "watch"
  std::string resource{};        // "stats", "edges", "routes", "inventory", "taps", "nodes",
                                 // "views"
  std::string subresource{};     // "admin" for nodes/admin; else empty
  std::string namespace_name{};  // empty: cluster scope
  std::string name{};            // empty: any

  bool operator==(const Permission&) const = default;

  // A SubjectAccessReview's spec.resourceAttributes (group nodemesh.io, version v1alpha1).
  nlohmann::json ResourceAttributes() const;
  // "'watch taps' (API group nodemesh.io) in namespace b", "... at cluster scope".
  std::string Describe() const;
  // The ClusterRole the chart ships that grants it: nodemesh-read, nodemesh-tap or
  // nodemesh-node-admin.
  std::string_view ClusterRole() const;
};

// What `request` needs, one namespace each, the URL's own first; every one must be allowed.
std::vector<Permission> PermissionsFor(const ApiRequest& request);

// PERMISSION_DENIED for `user` lacking `permission`, in the API server's words (kubectl and
// meshctl read both alike): `taps.nodemesh.io is forbidden: User "alice" cannot watch
// resource "taps" in API group "nodemesh.io" in the namespace "b"`, then ": reason" if any.
absl::Status Forbidden(const Permission& permission, std::string_view user,
                       std::string_view reason = {});

}  // namespace nodemesh::httpapi
