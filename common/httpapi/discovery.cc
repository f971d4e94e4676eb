#include "common/httpapi/discovery.h"

#include "nlohmann/json.hpp"

namespace nodemesh::httpapi {
namespace {

nlohmann::json Resource(std::string_view name, std::string_view singular, bool namespaced,
                        std::string_view kind, std::string_view verb) {
  return {{"name", name},
          {"singularName", singular},
          {"namespaced", namespaced},
          {"kind", kind},
          {"verbs", {verb}}};
}

std::string GroupVersion() { return std::string(kGroup) + "/" + std::string(kVersion); }

}  // namespace

std::string ResourceListJson() {
  const nlohmann::json list = {
      {"kind", "APIResourceList"},
      {"apiVersion", "v1"},
      {"groupVersion", GroupVersion()},
      {"resources",
       {Resource("stats", "stat", true, "StatSummary", "get"),
        Resource("edges", "edge", true, "Edges", "get"),
        Resource("routes", "route", true, "TopRoutes", "get"),
        Resource("inventory", "inventory", true, "Inventory", "get"),
        Resource("taps", "tap", true, "Tap", "watch"),
        Resource("views", "view", true, "View", "get"),
        // A subresource without its parent: Kubernetes' discovery makes the parent itself.
        Resource("nodes/admin", "", false, "NodeAdmin", "get")}}};
  return list.dump() + "\n";
}

std::string GroupJson() {
  const nlohmann::json version = {{"groupVersion", GroupVersion()}, {"version", kVersion}};
  const nlohmann::json group = {{"kind", "APIGroup"},
                                {"apiVersion", "v1"},
                                {"name", kGroup},
                                {"versions", {version}},
                                {"preferredVersion", version}};
  return group.dump() + "\n";
}

ErrorAnswer ApisAnswer() {
  const nlohmann::json status = {
      {"kind", "Status"},
      {"apiVersion", "v1"},
      {"metadata", nlohmann::json::object()},
      {"status", "Failure"},
      {"message", "this server offers no aggregated discovery: ask /apis/nodemesh.io/v1alpha1"},
      {"reason", "NotAcceptable"},
      {"code", 406}};
  return {406, status.dump() + "\n", false};
}

}  // namespace nodemesh::httpapi
