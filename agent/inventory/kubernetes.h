// The inventory from the Kubernetes API server: this node's pods (list then watch, with
// spec.nodeName as field selector), the cluster's namespaces (for their mesh labels and
// annotations) and Services (their cluster IPs name the Service a connection was dialled
// to), this node's pods located on the node by pod_locator.h.
//
// A pod of the node becomes a PodInfo named as the API names it (namespace, name, labels,
// service account, status.podIPs, the owning workload from its ownerReferences alone), meshed
// as kube/pods.h decides (pod label, namespace annotation of workloads, namespace label;
// never host-network pods nor nodemesh's own). A meshed pod is handed over with its cgroup
// and netns once its containers run; until then it carries the reason it waits (`pending`)
// and is looked at again every `recheck` until it can be enrolled. When the API server is
// unreachable the last view stays: the agent carries on with the pods it knows.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "agent/inventory/pod_locator.h"
#include "agent/inventory/source.h"
#include "common/kube/client.h"
#include "common/kube/reflector.h"

namespace nodemesh::agent {

struct KubernetesOptions {
  std::string node;
  // Empty: in-cluster (the service account's token and CA in service_account_dir).
  std::string kubeconfig;
  std::string context;
  std::string service_account_dir{kube::kServiceAccountDir};
  NodePaths paths;
  // How often pods waiting to be enrolled (containers starting) are looked at again.
  std::chrono::milliseconds recheck{std::chrono::seconds(1)};
  // A watch silent this long (not even a bookmark) is started again.
  std::chrono::milliseconds watch_stall_timeout{std::chrono::seconds(90)};
  // How long Start waits for the first lists before handing over an empty inventory (the
  // pods follow as soon as the API server answers).
  std::chrono::milliseconds first_sync_timeout{std::chrono::seconds(10)};
};

// The cluster's Services as the agent needs them (name and cluster IPs), kept per event of
// the Services watch: the Services' JSON is not kept, and each version of the map shares
// with the one before it every Service the event did not change, so an event costs what it
// changed however many Services the cluster has. Headless Services (no cluster IP) are left
// out. Changed on the reflector's thread; Snapshot on any.
class ServiceStore final : public kube::ReflectorStore {
 public:
  void Replace(kube::Objects objects) override;
  void Put(const std::string& key, const nlohmann::json& object) override;
  bool Remove(const std::string& key) override;
  ServiceMap Snapshot() const;

 private:
  mutable std::mutex mutex_;
  ServiceMap services_;
};

class KubernetesInventory final : public InventorySource {
 public:
  explicit KubernetesInventory(KubernetesOptions options);
  ~KubernetesInventory() override;

  // Fails only if no configuration can be loaded (not in a pod and no kubeconfig).
  absl::Status Start(std::function<void(const Inventory&)> on_change) override;
  void Stop() override;
  bool FirstVersionMustApply() const override { return false; }
  // The API server, the watches' resource versions, counts and last errors.
  nlohmann::json Status() const override;

 private:
  void Resolve();  // the resolver thread
  Inventory Build();

  const KubernetesOptions options_;
  std::unique_ptr<kube::Client> client_;
  ServiceStore services_store_;  // the Services reflector's, outliving it
  std::unique_ptr<kube::Reflector> pods_;
  std::unique_ptr<kube::Reflector> namespaces_;
  std::unique_ptr<kube::Reflector> services_;
  // Set once the client and reflectors above exist (Start), for Status on another thread.
  std::atomic<bool> watching_{false};
  PodLocator locator_;
  std::function<void(const Inventory&)> on_change_;
  Inventory last_;  // as last handed over; the resolver thread's

  // Where each pod was found, by UID: kept while its process lives, so that the netns path
  // handed over stays the same (a new path would re-enrol the pod).
  struct Located {
    PodLocation location;
    uint64_t netns_inode = 0;
  };
  absl::flat_hash_map<std::string, Located> located_;

  std::mutex mutex_;
  std::condition_variable wake_;
  bool dirty_ = true;            // the pods or the namespaces changed
  bool services_dirty_ = false;  // only the Services
  bool stop_ = false;
  std::thread resolver_;
};

}  // namespace nodemesh::agent
