// The pods an agent knows, as any inventory source gives them (the agent's local JSON file,
// the Kubernetes API), and the local JSON format, which meshctl edits too.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/base/bucketed_map.h"
#include "common/net/address.h"

namespace nodemesh {

struct PodInfo {
  std::string namespace_name;
  std::string name;
  std::string uid;         // metadata.uid in Kubernetes; empty in the local file
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
  // Why the source decided the pod is meshed or not ("namespace emojivoto is labelled
  // nodemesh.io/mesh=enabled"); empty when the decision was written down (the local file).
  std::string mesh_reason;
  // Why a meshed pod cannot be enrolled yet ("its containers have not started"), empty when
  // it can: cgroup and netns are then known. The source tells again when that changes.
  std::string pending;

  std::string key() const { return namespace_name + "/" + name; }
  bool operator==(const PodInfo&) const = default;
};

// A Kubernetes Service with a virtual IP: connections dialled to one of its cluster IPs are
// sent by the node's NAT (kube-proxy) to one of its pods.
struct ServiceInfo {
  std::string namespace_name;
  std::string name;
  std::vector<IpAddress> cluster_ips;  // spec.clusterIPs (IPv4 and IPv6)

  std::string key() const { return namespace_name + "/" + name; }
  bool operator==(const ServiceInfo&) const = default;
};

// The cluster's Services with a cluster IP, by key ("namespace/name"). A cluster may have
// tens of thousands: versions of the inventory share the Services neither changed, so a
// Service event costs the agent what it changed (see BucketedMap).
using ServiceMap = BucketedMap<std::string, ServiceInfo>;

struct Inventory {
  std::vector<PodInfo> pods;
  // From the Kubernetes API, or the local file's optional "services".
  ServiceMap services;
};

// Parses the local inventory format:
//   {"pods":[{"namespace":"emojivoto","name":"web-1","owner":{"kind":"Deployment","name":"web"},
//     "labels":{"app":"web"},"serviceAccount":"web","ips":["10.77.0.11"],
//     "cgroup":"/nodemesh/web-1","netns":"/var/run/netns/web-1","meshed":true,
//     "inboundPorts":[8080],"node":"node-1"}],
//    "services":[{"namespace":"emojivoto","name":"web-svc","clusterIPs":["10.96.0.10"]}]}
// ("services" optional). Errors name the entry and the field: `pod emojivoto/web-1: "ips"[0]:
// "10.77.0" is not an IP address`, `service emojivoto/web-svc: "clusterIPs" is missing`.
absl::StatusOr<Inventory> ParseInventory(std::string_view json);

}  // namespace nodemesh
