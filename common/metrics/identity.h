// Who is on each end of a connection, as metrics and tap name them.
#pragma once

#include <string>
#include <utility>

namespace nodemesh::metrics {

struct Identity {
  std::string namespace_name;
  std::string pod;
  std::string owner_kind;  // "Deployment", ...; "External" for addresses outside the inventory
  std::string owner_name;
  std::string service_account;
  std::string node;

  bool operator==(const Identity&) const = default;
  template <typename H>
  friend H AbslHashValue(H h, const Identity& id) {
    return H::combine(std::move(h), id.namespace_name, id.pod, id.owner_kind, id.owner_name,
                      id.service_account, id.node);
  }
};

// Every peer outside the inventory is one identity, not one series per address.
inline Identity ExternalIdentity() { return Identity{"", "", "External", "external", "", ""}; }

// A Kubernetes Service, as the destination_service of traffic dialled to its cluster IP: no
// pod, owner kind "Service" (common/resource's kServiceOwnerKind).
inline Identity ServiceIdentity(std::string namespace_name, std::string name) {
  return Identity{std::move(namespace_name), "", "Service", std::move(name), "", ""};
}

}  // namespace nodemesh::metrics
