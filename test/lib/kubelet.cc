#include "test/lib/kubelet.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <random>
#include <stdexcept>

namespace nodemesh::testing {
namespace {

std::string RandomHex(size_t digits) {
  static std::mt19937_64 random{std::random_device{}()};
  std::string text;
  while (text.size() < digits) text += fmt::format("{:016x}", random());
  return text.substr(0, digits);
}

// A UID for objects this fixture makes up (owners), in the API's form.
std::string RandomUid() {
  const std::string hex = RandomHex(32);
  return fmt::format("{}-{}-{}-{}-{}", hex.substr(0, 8), hex.substr(8, 4), hex.substr(12, 4),
                     hex.substr(16, 4), hex.substr(20));
}

std::string_view QosName(QosClass qos) {
  switch (qos) {
    case QosClass::kGuaranteed:
      return "";
    case QosClass::kBurstable:
      return "burstable";
    case QosClass::kBestEffort:
      return "besteffort";
  }
  return "";
}

nlohmann::json OwnerReference(std::string_view api_version, std::string_view kind,
                              std::string_view name) {
  return {{"apiVersion", api_version}, {"kind", kind},       {"name", name},
          {"uid", RandomUid()},        {"controller", true}, {"blockOwnerDeletion", true}};
}

}  // namespace

Kubelet::Kubelet(KubeApiServer& api, TestNode& node, CgroupDriver driver)
    : api_(api), node_(node), driver_(driver) {}

Kubelet::~Kubelet() {
  for (auto& pod : pods_) pod->process.reset();
}

std::string Kubelet::PodCgroup(CgroupDriver driver, QosClass qos, const std::string& uid) {
  const std::string_view qos_name = QosName(qos);
  if (driver == CgroupDriver::kCgroupfs) {
    return qos_name.empty() ? fmt::format("kubepods/pod{}", uid)
                            : fmt::format("kubepods/{}/pod{}", qos_name, uid);
  }
  std::string escaped = uid;
  std::replace(escaped.begin(), escaped.end(), '-', '_');
  if (qos_name.empty()) return fmt::format("kubepods.slice/kubepods-pod{}.slice", escaped);
  return fmt::format("kubepods.slice/kubepods-{0}.slice/kubepods-{0}-pod{1}.slice", qos_name,
                     escaped);
}

std::string Kubelet::ContainerCgroup(CgroupDriver driver, const std::string& container_id) {
  return driver == CgroupDriver::kSystemd ? fmt::format("cri-containerd-{}.scope", container_id)
                                          : container_id;
}

void Kubelet::CreateNamespace(const std::string& name,
                              const std::map<std::string, std::string>& labels) {
  nlohmann::json object = {
      {"apiVersion", "v1"}, {"kind", "Namespace"}, {"metadata", {{"name", name}}}};
  if (!labels.empty()) object["metadata"]["labels"] = labels;
  api_.Create("/api/v1/namespaces", object);
}

void Kubelet::PublishService(const Service& service) {
  api_.Create(
      fmt::format("/api/v1/namespaces/{}/services", service.namespace_name),
      {{"apiVersion", "v1"},
       {"kind", "Service"},
       {"metadata", {{"name", service.name}, {"namespace", service.namespace_name}}},
       {"spec",
        {{"type", "ClusterIP"},
         {"clusterIP", service.cluster_ip},
         {"clusterIPs", {service.cluster_ip}},
         {"ipFamilies", {"IPv4"}},
         {"ports",
          {{{"port", service.port}, {"targetPort", service.port}, {"protocol", "TCP"}}}}}}});
}

KubePod& Kubelet::StartPod(KubePodSpec spec, std::vector<std::string> command, bool start) {
  nlohmann::json labels = spec.labels;
  if (labels.is_null()) labels = nlohmann::json::object();
  nlohmann::json metadata = {{"name", spec.name}, {"namespace", spec.namespace_name}};
  const std::string manifest_hash = RandomHex(32);
  if (spec.static_pod) {
    metadata["annotations"] = {{"kubernetes.io/config.mirror", manifest_hash},
                               {"kubernetes.io/config.source", "file"}};
    metadata["ownerReferences"] = {{{"apiVersion", "v1"},
                                    {"kind", "Node"},
                                    {"name", node_.name()},
                                    {"uid", RandomUid()},
                                    {"controller", true}}};
  } else if (spec.workload_kind == "Deployment") {
    const std::string hash = RandomHex(10);
    labels["pod-template-hash"] = hash;
    // json::array: a braced list of one json value is an array for one compiler and a copy for
    // another.
    metadata["ownerReferences"] = nlohmann::json::array(
        {OwnerReference("apps/v1", "ReplicaSet", spec.workload_name + "-" + hash)});
  } else if (spec.workload_kind == "CronJob") {
    metadata["ownerReferences"] = nlohmann::json::array(
        {OwnerReference("batch/v1", "Job", spec.workload_name + "-29001234")});
  } else if (!spec.workload_kind.empty()) {
    metadata["ownerReferences"] =
        nlohmann::json::array({OwnerReference("apps/v1", spec.workload_kind, spec.workload_name)});
  }
  metadata["labels"] = labels;
  nlohmann::json pod_spec = {
      {"nodeName", node_.name()},
      {"serviceAccountName", spec.service_account},
      {"containers", {{{"name", "app"}, {"image", "registry.example/app:1"}}}}};
  if (spec.host_network) pod_spec["hostNetwork"] = true;
  const nlohmann::json created =
      api_.Create(fmt::format("/api/v1/namespaces/{}/pods", spec.namespace_name),
                  {{"apiVersion", "v1"},
                   {"kind", "Pod"},
                   {"metadata", metadata},
                   {"spec", pod_spec},
                   {"status", {{"phase", "Pending"}}}});
  auto pod = std::make_unique<KubePod>();
  pod->spec = std::move(spec);
  pod->uid = created.at("metadata").at("uid").get<std::string>();
  pod->cgroup_id = pod->spec.static_pod ? manifest_hash : pod->uid;
  pods_.push_back(std::move(pod));
  KubePod& added = *pods_.back();
  if (start) RunPod(added, std::move(command));
  return added;
}

void Kubelet::RunPod(KubePod& pod, std::vector<std::string> command) {
  pod.container_id = RandomHex(64);
  const std::string pod_cgroup = PodCgroup(driver_, pod.spec.qos, pod.cgroup_id);
  const std::string container_cgroup = ContainerCgroup(driver_, pod.container_id);
  std::vector<std::string> ips;
  if (pod.spec.host_network) {
    pod.cgroup_dir = node_.cgroup_dir() + "/" + pod_cgroup;
    const std::string container_dir = pod.cgroup_dir + "/" + container_cgroup;
    std::filesystem::create_directories(container_dir);
    pod.process = std::make_unique<Process>(std::move(command),
                                            Process::Options{.cgroup_dir = container_dir});
    ips.push_back(node_.network().gateway());
  } else {
    PodSpec spec;
    spec.namespace_name = pod.spec.namespace_name;
    spec.name = pod.spec.name;
    spec.owner_kind = pod.spec.workload_kind.empty() ? "Pod" : pod.spec.workload_kind;
    spec.owner_name = pod.spec.workload_kind.empty() ? pod.spec.name : pod.spec.workload_name;
    spec.labels = pod.spec.labels;
    spec.service_account = pod.spec.service_account;
    spec.meshed = false;  // the API decides, not a local inventory
    spec.ipv6 = pod.spec.ipv6;
    spec.cgroup_subpath = pod_cgroup;
    spec.container_cgroup = container_cgroup;
    pod.pod = &node_.AddPod(std::move(spec));
    pod.cgroup_dir = pod.pod->cgroup_dir;
    pod.process = std::make_unique<Process>(pod.pod->Run(std::move(command)));
    ips.push_back(pod.pod->ip);
    if (!pod.pod->ip6.empty()) ips.push_back(pod.pod->ip6);
  }
  nlohmann::json pod_ips = nlohmann::json::array();
  for (const std::string& ip : ips) pod_ips.push_back({{"ip", ip}});
  api_.MergePatch(pod.path() + "/status",
                  {{"status",
                    {{"phase", "Running"},
                     {"hostIP", node_.network().gateway()},
                     {"podIP", ips.front()},
                     {"podIPs", pod_ips},
                     {"containerStatuses",
                      {{{"name", "app"},
                        {"containerID", "containerd://" + pod.container_id},
                        {"ready", true},
                        {"started", true},
                        {"state", {{"running", {{"startedAt", "2026-12-01T00:00:00Z"}}}}}}}}}}});
}

void Kubelet::DeletePod(KubePod& pod) {
  pod.process.reset();
  api_.Delete(pod.path());
}

}  // namespace nodemesh::testing
