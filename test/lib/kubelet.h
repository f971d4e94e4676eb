// A kubelet for a simulated node (test_node.h) talking to a test API server
// (kube_apiserver.h): pods are made in the order and shape a real node makes them. The Pod
// object is created first (scheduled to the node, no status), then its cgroup under the
// kubelet's layout (systemd or cgroupfs driver, by QoS class), network namespace and
// container process, and last its status is reported: phase Running, status.podIPs,
// containerStatuses with a containerd://<64 hex> ID and a running state.
//
//   KubeApiServer api;
//   Kubelet kubelet(api, node, CgroupDriver::kSystemd);
//   kubelet.CreateNamespace("emojivoto", {{"nodemesh.io/mesh", "enabled"}});
//   const KubePod& web = kubelet.StartPod({.namespace_name = "emojivoto", .name = "web-5d8c-x2k",
//                                          .workload_name = "web"}, {"python3", ...});
#pragma once

#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "test/lib/kube_apiserver.h"
#include "test/lib/process.h"
#include "test/lib/test_node.h"

namespace nodemesh::testing {

enum class CgroupDriver { kSystemd, kCgroupfs };
enum class QosClass { kGuaranteed, kBurstable, kBestEffort };

struct KubePodSpec {
  std::string namespace_name = "default";
  std::string name{};
  // The controller: "Deployment" (owned through a ReplicaSet <name>-<pod-template-hash>),
  // "StatefulSet", "DaemonSet", "CronJob" (through a Job <name>-<minutes>) or "" (none).
  std::string workload_kind = "Deployment";
  std::string workload_name{};
  std::map<std::string, std::string> labels{};
  std::string service_account = "default";
  QosClass qos = QosClass::kBestEffort;
  bool host_network = false;  // runs in the node's own network namespace, with its IP
  bool ipv6 = false;          // dual-stack: status.podIPs lists an IPv6 address too
  // A static pod: the kubelet runs it from a manifest, names its cgroup after the manifest's
  // hash, and the API holds a mirror pod owned by the Node, with the hash in an annotation.
  bool static_pod = false;
};

struct KubePod {
  KubePodSpec spec;
  std::string uid;
  std::string cgroup_id;     // what its cgroup is named after: the uid, or a static pod's hash
  std::string container_id;  // 64 hex digits
  const Pod* pod = nullptr;  // the simulated pod (null for host-network pods)
  std::string cgroup_dir;    // the pod-level cgroup
  std::unique_ptr<Process> process;
  std::string path() const {  // its API path
    return "/api/v1/namespaces/" + spec.namespace_name + "/pods/" + spec.name;
  }
};

class Kubelet {
 public:
  Kubelet(KubeApiServer& api, TestNode& node, CgroupDriver driver);
  ~Kubelet();  // stops the pods' processes; the node removes the rest
  Kubelet(const Kubelet&) = delete;
  Kubelet& operator=(const Kubelet&) = delete;

  void CreateNamespace(const std::string& name,
                       const std::map<std::string, std::string>& labels = {});
  // The Service object of a Service of the (routed) network, with its cluster IP, as the
  // API holds it once allocated.
  void PublishService(const Service& service);

  // Creates the Pod object and, unless `start` is false, runs it (RunPod). `command` runs in
  // the pod's container (a long-lived server, or "sleep 3600").
  KubePod& StartPod(KubePodSpec spec, std::vector<std::string> command, bool start = true);
  // What the kubelet does once the pod is scheduled: cgroup, netns, process, status.
  void RunPod(KubePod& pod, std::vector<std::string> command);
  // The pod's containers end and its object is deleted from the API.
  void DeletePod(KubePod& pod);

  // The pod-level cgroup the kubelet makes for `uid` with this driver and QoS class, relative
  // to the node's cgroup.
  static std::string PodCgroup(CgroupDriver driver, QosClass qos, const std::string& uid);
  // The container's sub-cgroup under it, as containerd names it with this driver.
  static std::string ContainerCgroup(CgroupDriver driver, const std::string& container_id);

 private:
  KubeApiServer& api_;
  TestNode& node_;
  const CgroupDriver driver_;
  std::vector<std::unique_ptr<KubePod>> pods_;
};

}  // namespace nodemesh::testing
