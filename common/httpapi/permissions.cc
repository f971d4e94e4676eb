#include "common/httpapi/permissions.h"

#include <algorithm>

#include "common/base/format.h"

namespace nodemesh::httpapi {
namespace {

// Whether `peer` was given at all (an unset peer has no namespace to check).
bool Given(const v1::Resource& peer) {
  return !peer.type().empty() || !peer.name().empty() || !peer.namespace_().empty();
}

// `first`, then `first` in the namespace of each peer given, each namespace once.
std::vector<Permission> EachNamespace(const Permission& first,
                                      const std::vector<const v1::Resource*>& peers) {
  std::vector<Permission> permissions = {first};
  for (const v1::Resource* peer : peers) {
    if (!Given(*peer)) continue;
    const bool seen = std::any_of(
        permissions.begin(), permissions.end(),
        [&](const Permission& earlier) { return earlier.namespace_name == peer->namespace_(); });
    if (seen) continue;
    permissions.push_back(first);
    permissions.back().namespace_name = peer->namespace_();
  }
  return permissions;
}

}  // namespace

nlohmann::json Permission::ResourceAttributes() const {
  nlohmann::json attributes = {
      {"group", kGroup}, {"version", kVersion}, {"resource", resource}, {"verb", verb}};
  // Left out when empty, as Kubernetes writes them: no namespace is cluster scope, no name any.
  if (!subresource.empty()) attributes["subresource"] = subresource;
  if (!namespace_name.empty()) attributes["namespace"] = namespace_name;
  if (!name.empty()) attributes["name"] = name;
  return attributes;
}

std::string Permission::Describe() const {
  const std::string what = subresource.empty() ? resource : resource + "/" + subresource;
  return fmt::format(
      "'{} {}' (API group {}) {}", verb, what, kGroup,
      namespace_name.empty() ? "at cluster scope" : "in namespace " + namespace_name);
}

std::string_view Permission::ClusterRole() const {
  if (resource == "taps") return "nodemesh-tap";
  if (resource == "nodes") return "nodemesh-node-admin";
  return "nodemesh-read";
}

std::vector<Permission> PermissionsFor(const ApiRequest& request) {
  if (const auto* stat = std::get_if<v1::StatSummaryRequest>(&request)) {
    const Permission first{"get", "stats", "", stat->selector().namespace_(),
                           stat->selector().type()};
    return EachNamespace(first, {&stat->from(), &stat->to()});
  }
  if (const auto* edges = std::get_if<v1::EdgesRequest>(&request)) {
    return {{"get", "edges", "", edges->selector().namespace_(), edges->selector().type()}};
  }
  if (const auto* routes = std::get_if<v1::TopRoutesRequest>(&request)) {
    const Permission first{"get", "routes", "", routes->selector().namespace_(),
                           routes->selector().type()};
    return EachNamespace(first, {&routes->from()});
  }
  if (const auto* pods = std::get_if<v1::ListPodsRequest>(&request)) {
    return {{"get", "inventory", "", pods->namespace_(), "pods"}};
  }
  if (const auto* tap = std::get_if<v1::TapRequestSpec>(&request)) {
    const Permission first{"watch", "taps", "", tap->target().namespace_(), ""};
    return EachNamespace(first, {&tap->to()});
  }
  if (const auto* view = std::get_if<v1::ViewRequest>(&request)) {
    // Its path's namespace is the first; the others are where the view reads too.
    std::vector<v1::Resource> others;
    for (int i = 1; i < view->namespaces_size(); ++i) {
      others.emplace_back().set_namespace_(view->namespaces(i));
    }
    others.push_back(view->filter().around());
    std::vector<const v1::Resource*> peers;
    for (const v1::Resource& other : others) peers.push_back(&other);
    const Permission first{"get", "views", "",
                           view->namespaces().empty() ? "" : view->namespaces(0),
                           ViewKindName(view->kind())};
    return EachNamespace(first, peers);
  }
  const auto& admin = std::get<v1::NodeAdminRequest>(request);
  return {{"get", "nodes", "admin", "", admin.node()}};
}

absl::Status Forbidden(const Permission& permission, std::string_view user,
                       std::string_view reason) {
  const std::string what = permission.subresource.empty()
                               ? permission.resource
                               : permission.resource + "/" + permission.subresource;
  const std::string object =
      permission.name.empty()
          ? fmt::format("{}.{}", permission.resource, kGroup)
          : fmt::format("{}.{} \"{}\"", permission.resource, kGroup, permission.name);
  const std::string scope = permission.namespace_name.empty()
                                ? std::string("at the cluster scope")
                                : fmt::format("in the namespace \"{}\"", permission.namespace_name);
  std::string message =
      fmt::format("{} is forbidden: User \"{}\" cannot {} resource \"{}\" in API group \"{}\" {}",
                  object, user, permission.verb, what, kGroup, scope);
  if (!reason.empty()) message += fmt::format(": {}", reason);
  return absl::PermissionDeniedError(message);
}

}  // namespace nodemesh::httpapi
