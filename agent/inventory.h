// The pods of this node, from one of two sources behind one interface: a local JSON file
// (laptops, tests, the demo) or, later, the Kubernetes API.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "agent/address.h"

namespace nodemesh::agent {

struct PodInfo {
  std::string namespace_name;
  std::string name;
  std::string owner_kind;  // "Deployment", "StatefulSet", "DaemonSet", "Pod", ...
  std::string owner_name;
  std::map<std::string, std::string> labels;
  std::string service_account;
  std::vector<IpAddress> ips;
  std::string cgroup;  // path under the cgroup v2 mount
  std::string netns;   // path of the network namespace, e.g. /var/run/netns/web-1
  // The node the pod runs on. An agent enrols only its own node's pods (or pods with no
  // node); the others name the far end of connections.
  std::string node;
  bool meshed = false;
  // Ports captured inbound; when absent, every port the pod listens on.
  std::optional<std::vector<uint16_t>> inbound_ports;

  std::string key() const { return namespace_name + "/" + name; }
  bool operator==(const PodInfo&) const = default;
};

struct Inventory {
  std::vector<PodInfo> pods;
};

// Parses the local inventory format:
//   {"pods":[{"namespace":"emojivoto","name":"web-1","owner":{"kind":"Deployment","name":"web"},
//     "labels":{"app":"web"},"serviceAccount":"web","ips":["10.77.0.11"],
//     "cgroup":"/nodemesh/web-1","netns":"/var/run/netns/web-1","meshed":true,
//     "inboundPorts":[8080],"node":"node-1"}]}
// Errors name the pod and the field: `pod emojivoto/web-1: "ips"[0]: "10.77.0" is not an IP
// address`.
absl::StatusOr<Inventory> ParseInventory(std::string_view json);

class InventorySource {
 public:
  virtual ~InventorySource() = default;
  // Starts watching; `on_change` gets every valid version of the inventory, the first one
  // before Start returns. Returns the error if the first version is invalid.
  virtual absl::Status Start(std::function<void(const Inventory&)> on_change) = 0;
  virtual void Stop() = 0;
};

}  // namespace nodemesh::agent
