// What nodemesh reads off Kubernetes Pod and Namespace objects, the same way in the agent
// (which meshes pods) and in meshctl (which labels them): the owning workload, and whether
// a pod is meant to be meshed.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "nlohmann/json.hpp"

namespace nodemesh::kube {

// Set to "enabled" or "disabled" on a namespace (all its pods) or on a pod (overriding its
// namespace and its workload).
inline constexpr std::string_view kMeshLabel = "nodemesh.io/mesh";
// On a namespace: the workloads meshed or not regardless of the namespace's label, as a JSON
// object {"Deployment/web":"enabled","StatefulSet/db":"disabled"}. `meshctl inject deploy/web`
// writes it so that the workload's future pods follow without touching its pod template
// (which would restart every pod).
inline constexpr std::string_view kMeshWorkloadsAnnotation = "nodemesh.io/mesh-workloads";
// Pods labelled with this (nodemesh's own agent and aggregator) are never meshed.
inline constexpr std::string_view kPartOfLabel = "app.kubernetes.io/part-of";
inline constexpr std::string_view kPartOfNodemesh = "nodemesh";

struct Workload {
  std::string kind;  // Deployment, StatefulSet, DaemonSet, CronJob, Job, ReplicaSet, Pod, ...
  std::string name;
  std::string Ref() const { return kind + "/" + name; }  // "Deployment/web"
  bool operator==(const Workload&) const = default;
};

// The workload a pod belongs to, from its controller ownerReference alone (no API call):
// a ReplicaSet named <deployment>-<the pod's pod-template-hash label> is that Deployment;
// a Job named <cronjob>-<digits> is that CronJob; StatefulSet, DaemonSet and others as they
// are; no controller (or a static pod's mirror, owned by its Node): the pod itself.
Workload WorkloadOf(const nlohmann::json& pod);

// Why a pod is or is not meshed, for `meshctl check` and the agent's /pods.
struct MeshDecision {
  bool meshed = false;
  std::string because;  // "namespace emojivoto is labelled nodemesh.io/mesh=enabled"
};

// Why nodemesh never meshes this pod, whatever its labels say (it uses the host's network
// namespace, or it is part of nodemesh), or nullopt.
std::optional<std::string> NeverMeshedBecause(const nlohmann::json& pod);

// The pod's label wins, then the namespace's workloads annotation, then the namespace's
// label; host-network pods and nodemesh's own pods are never meshed. `namespace_object` may
// be null (not seen yet: not meshed by it).
MeshDecision DecideMeshing(const nlohmann::json& pod, const nlohmann::json* namespace_object);

// A label's value, or nullopt; safe on objects missing metadata or labels.
std::optional<std::string> LabelOf(const nlohmann::json& object, std::string_view key);

}  // namespace nodemesh::kube
