#include "agent/inventory/kubernetes.h"

#include <sys/stat.h>

#include <algorithm>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "common/base/log.h"
#include "common/kube/object.h"
#include "common/kube/pods.h"

namespace nodemesh::agent {
namespace {

using kube::At;
using kube::StringAt;
using nlohmann::json;

// Pods not looked at again for this long have their cached location checked anyway.
constexpr auto kFullRecheck = std::chrono::seconds(10);

// Succeeded and Failed pods keep their API object until deleted, but nothing of them runs.
bool Terminated(const json& pod) {
  const std::string phase = StringAt(At(pod, "status"), "phase");
  return phase == "Succeeded" || phase == "Failed";
}

std::vector<IpAddress> PodIps(const json& pod) {
  std::vector<IpAddress> ips;
  const json& status = At(pod, "status");
  const json& pod_ips = At(status, "podIPs");
  if (pod_ips.is_array()) {
    for (const json& entry : pod_ips) {
      if (const auto ip = IpAddress::Parse(StringAt(entry, "ip"))) ips.push_back(*ip);
    }
  }
  if (ips.empty()) {
    if (const auto ip = IpAddress::Parse(StringAt(status, "podIP"))) ips.push_back(*ip);
  }
  return ips;
}

// spec.clusterIPs (or the older clusterIP); headless Services ("None") have none.
std::vector<IpAddress> ServiceIps(const json& service) {
  std::vector<IpAddress> ips;
  const json& spec = At(service, "spec");
  if (const json& cluster_ips = At(spec, "clusterIPs"); cluster_ips.is_array()) {
    for (const json& ip : cluster_ips) {
      if (!ip.is_string()) continue;
      if (const auto parsed = IpAddress::Parse(ip.get<std::string>())) ips.push_back(*parsed);
    }
  }
  if (ips.empty()) {
    if (const auto ip = IpAddress::Parse(StringAt(spec, "clusterIP"))) ips.push_back(*ip);
  }
  return ips;
}

// At least one container has an ID and runs: the pod's processes exist to be found.
bool ContainersRunning(const json& pod) {
  const json& statuses = At(At(pod, "status"), "containerStatuses");
  if (!statuses.is_array()) return false;
  for (const json& container : statuses) {
    if (!StringAt(container, "containerID").empty() && At(container, "state").contains("running")) {
      return true;
    }
  }
  return false;
}

// What the kubelet named the pod's cgroup after: its UID, or for a static pod (whose API
// object is a mirror with a UID of its own) the manifest's hash.
std::string CgroupIdOf(const json& pod) {
  const json& metadata = At(pod, "metadata");
  const std::string mirror = StringAt(At(metadata, "annotations"), "kubernetes.io/config.mirror");
  return mirror.empty() ? StringAt(metadata, "uid") : mirror;
}

uint64_t InodeOf(const std::string& path) {
  struct stat info {};
  return ::stat(path.c_str(), &info) == 0 ? info.st_ino : 0;
}

json ReflectorStatus(const kube::Reflector& reflector) {
  const kube::ReflectorStats& stats = reflector.stats();
  return {{"synced", reflector.synced()},  {"resource_version", reflector.resource_version()},
          {"lists", stats.lists.load()},   {"watches", stats.watches.load()},
          {"events", stats.events.load()}, {"bookmarks", stats.bookmarks.load()},
          {"gone", stats.gone.load()},     {"stalls", stats.stalls.load()},
          {"errors", stats.errors.load()}, {"last_error", reflector.last_error()}};
}

}  // namespace

KubernetesInventory::KubernetesInventory(KubernetesOptions options)
    : options_(std::move(options)), locator_(options_.paths) {}

KubernetesInventory::~KubernetesInventory() { Stop(); }

absl::Status KubernetesInventory::Start(std::function<void(const Inventory&)> on_change) {
  on_change_ = std::move(on_change);
  absl::StatusOr<kube::Config> config =
      options_.kubeconfig.empty() ? kube::InClusterConfig(options_.service_account_dir)
                                  : kube::LoadKubeconfig(options_.kubeconfig, options_.context);
  if (!config.ok()) return config.status();
  // A daemon: an exec plugin of its kubeconfig is never interactive, its stderr is logged.
  client_ = std::make_unique<kube::Client>(*std::move(config),
                                           kube::ExecEnvironment{.stdin_is_terminal = false});
  Log(LogLevel::kInfo, "kubernetes: API server {} ({}), pods of node {}", client_->config().server,
      client_->config().source, options_.node);

  // A Service event changes only the Services: the pods are not built again for it.
  const auto changed = [this](bool KubernetesInventory::*flag) {
    return [this, flag] {
      {
        std::lock_guard lock(mutex_);
        this->*flag = true;
      }
      wake_.notify_one();
    };
  };
  kube::ReflectorOptions pods;
  pods.path = "/api/v1/pods";
  pods.field_selector = "spec.nodeName=" + options_.node;
  pods.what = "pods on node " + options_.node;
  kube::ReflectorOptions namespaces;
  namespaces.path = "/api/v1/namespaces";
  namespaces.what = "namespaces";
  // Cluster-wide, as kube-proxy watches them on every node: any pod may dial any Service.
  kube::ReflectorOptions services;
  services.path = "/api/v1/services";
  services.what = "services";
  for (kube::ReflectorOptions* reflector : {&pods, &namespaces, &services}) {
    reflector->stall_timeout = options_.watch_stall_timeout;
  }
  pods_ = std::make_unique<kube::Reflector>(*client_, std::move(pods),
                                            changed(&KubernetesInventory::dirty_));
  namespaces_ = std::make_unique<kube::Reflector>(*client_, std::move(namespaces),
                                                  changed(&KubernetesInventory::dirty_));
  services_ = std::make_unique<kube::Reflector>(*client_, std::move(services), services_store_,
                                                changed(&KubernetesInventory::services_dirty_));
  for (kube::Reflector* reflector : {pods_.get(), namespaces_.get(), services_.get()}) {
    reflector->Start();
  }
  // The admin thread may ask for Status from now on, while the first lists are awaited.
  watching_.store(true, std::memory_order_release);
  const auto deadline = std::chrono::steady_clock::now() + options_.first_sync_timeout;
  bool synced = true;
  for (kube::Reflector* reflector : {pods_.get(), namespaces_.get(), services_.get()}) {
    synced = synced && reflector->WaitForSync(std::chrono::duration_cast<std::chrono::milliseconds>(
                           deadline - std::chrono::steady_clock::now()));
  }
  if (!synced) {
    Log(LogLevel::kWarning,
        "kubernetes: no answer from {} within {} s; starting with no pods, which follow as soon "
        "as it answers",
        client_->config().server,
        std::chrono::duration_cast<std::chrono::seconds>(options_.first_sync_timeout).count());
  }
  {
    std::lock_guard lock(mutex_);
    dirty_ = services_dirty_ = false;
  }
  last_ = Build();
  on_change_(last_);
  resolver_ = std::thread([this] { Resolve(); });
  return absl::OkStatus();
}

void KubernetesInventory::Stop() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  wake_.notify_one();
  if (resolver_.joinable()) resolver_.join();
  for (kube::Reflector* reflector : {pods_.get(), namespaces_.get(), services_.get()}) {
    if (reflector != nullptr) reflector->Stop();
  }
}

void KubernetesInventory::Resolve() {
  auto last_build = std::chrono::steady_clock::now();
  for (;;) {
    bool dirty, services_dirty;
    {
      std::unique_lock lock(mutex_);
      wake_.wait_for(lock, options_.recheck, [this] { return stop_ || dirty_ || services_dirty_; });
      if (stop_) return;
      dirty = std::exchange(dirty_, false);
      services_dirty = std::exchange(services_dirty_, false);
    }
    // With nothing new from the API, only pods waiting to be enrolled need a new look, and
    // now and then the cached locations (a pod's process may have been replaced).
    const auto now = std::chrono::steady_clock::now();
    const bool waiting = std::any_of(last_.pods.begin(), last_.pods.end(),
                                     [](const PodInfo& pod) { return !pod.pending.empty(); });
    Inventory inventory;
    if (dirty || waiting || now - last_build >= kFullRecheck) {
      last_build = now;
      inventory = Build();
    } else if (services_dirty) {
      inventory.pods = last_.pods;
      inventory.services = services_store_.Snapshot();
    } else {
      continue;
    }
    if (inventory.pods == last_.pods && inventory.services == last_.services) continue;
    last_ = std::move(inventory);
    on_change_(last_);
  }
}

Inventory KubernetesInventory::Build() {
  const std::shared_ptr<const kube::Reflector::Objects> pods = pods_->Snapshot();
  const std::shared_ptr<const kube::Reflector::Objects> namespaces = namespaces_->Snapshot();
  locator_.Rescan();
  Inventory inventory;
  absl::flat_hash_set<std::string> present;
  for (const auto& [key, pod] : *pods) {
    if (Terminated(pod)) continue;
    const json& metadata = At(pod, "metadata");
    const json& spec = At(pod, "spec");
    PodInfo& info = inventory.pods.emplace_back();
    info.namespace_name = StringAt(metadata, "namespace");
    info.name = StringAt(metadata, "name");
    info.uid = StringAt(metadata, "uid");
    if (const json& labels = At(metadata, "labels"); labels.is_object()) {
      for (const auto& [label, value] : labels.items()) {
        if (value.is_string()) info.labels[label] = value.get<std::string>();
      }
    }
    const kube::Workload workload = kube::WorkloadOf(pod);
    info.owner_kind = workload.kind;
    info.owner_name = workload.name;
    info.service_account = StringAt(spec, "serviceAccountName");
    if (info.service_account.empty()) info.service_account = "default";
    info.node = StringAt(spec, "nodeName");
    info.ips = PodIps(pod);
    const auto ns = namespaces->find(info.namespace_name);
    const kube::MeshDecision decision =
        kube::DecideMeshing(pod, ns == namespaces->end() ? nullptr : &ns->second);
    info.meshed = decision.meshed;
    info.mesh_reason = decision.because;
    if (!info.meshed) continue;
    present.insert(info.uid);
    if (info.ips.empty()) {
      info.pending = "it has no IP address yet";
    } else if (!ContainersRunning(pod)) {
      info.pending = "its containers have not started yet";
    } else {
      // A location found before stays while its process does: the same netns path keeps
      // the pod enrolled as it is.
      auto cached = located_.find(info.uid);
      if (cached != located_.end() &&
          InodeOf(cached->second.location.netns) != cached->second.netns_inode) {
        located_.erase(cached);
        cached = located_.end();
      }
      if (cached == located_.end()) {
        absl::StatusOr<PodLocation> location = locator_.Locate(CgroupIdOf(pod), info.ips);
        if (location.ok()) {
          const uint64_t inode = InodeOf(location->netns);
          cached = located_.emplace(info.uid, Located{*std::move(location), inode}).first;
        } else {
          info.pending = std::string(location.status().message());
        }
      }
      if (cached != located_.end()) {
        info.cgroup = cached->second.location.cgroup;
        info.netns = cached->second.location.netns;
      }
    }
  }
  absl::erase_if(located_, [&](const auto& entry) { return !present.contains(entry.first); });
  inventory.services = services_store_.Snapshot();
  return inventory;
}

void ServiceStore::Replace(kube::Objects objects) {
  // Applied as the events it stands for, so that the Services the list did not change stay
  // shared with the version before it.
  std::vector<std::string> gone;
  {
    std::lock_guard lock(mutex_);
    services_.ForEach([&](const std::string& key, const ServiceInfo&) {
      if (!objects.contains(key)) gone.push_back(key);
    });
  }
  for (const std::string& key : gone) Remove(key);
  for (const auto& [key, object] : objects) Put(key, object);
}

void ServiceStore::Put(const std::string& key, const json& object) {
  ServiceInfo info{StringAt(At(object, "metadata"), "namespace"),
                   StringAt(At(object, "metadata"), "name"), ServiceIps(object)};
  std::lock_guard lock(mutex_);
  if (info.cluster_ips.empty()) {
    services_.Erase(key);  // headless (or made so): no address names it
    return;
  }
  // A Service's other fields change more often than its addresses: nothing to copy then.
  if (const ServiceInfo* held = services_.Find(key); held != nullptr && *held == info) return;
  services_.Set(key, std::move(info));
}

bool ServiceStore::Remove(const std::string& key) {
  std::lock_guard lock(mutex_);
  return services_.Erase(key);
}

ServiceMap ServiceStore::Snapshot() const {
  std::lock_guard lock(mutex_);
  return services_;
}

json KubernetesInventory::Status() const {
  if (!watching_.load(std::memory_order_acquire)) return json::object();
  const kube::ClientStats& stats = client_->stats();
  return {{"server", client_->config().server},
          {"config", client_->config().source},
          {"requests", stats.requests.load()},
          {"failures", stats.failures.load()},
          {"token_reloads", stats.token_reloads.load()},
          {"exec_runs", stats.exec_runs.load()},
          {"pods", ReflectorStatus(*pods_)},
          {"namespaces", ReflectorStatus(*namespaces_)},
          {"services", ReflectorStatus(*services_)}};
}

}  // namespace nodemesh::agent
