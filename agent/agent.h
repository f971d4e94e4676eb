// The node agent's control plane: keeps the pods of the inventory enrolled (listeners in
// their netns on every worker, then the kernel maps) or released, live, and runs the
// workers that proxy their connections.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "agent/aggregator_client.h"
#include "agent/http_server.h"
#include "agent/kernel/datapath.h"
#include "agent/kernel/listening_ports.h"
#include "agent/metrics/registry.h"
#include "agent/metrics/route.h"
#include "agent/pod.h"
#include "agent/proxy/worker.h"
#include "common/inventory/inventory.h"
#include "common/metrics/identity.h"

namespace nodemesh::agent {

struct AgentOptions {
  std::string node;
  std::string inventory_path;
  std::string aggregator_address;  // empty: no aggregator
  // Where the outbound programs attach, under the cgroup v2 mount ("/" covers the node).
  std::string cgroup_root = "/";
  int workers = 2;
  uint16_t outbound_port = 15001;
  uint16_t inbound_port = 15006;
  uint32_t agent_mark = 0x6e6d0001;        // outbound upstream sockets
  uint32_t transparent_mark = 0x6e6d0002;  // inbound legs carrying the caller's address
  uint32_t transparent_table = 0x6e6d;     // pod routing table for their replies
  std::vector<uint16_t> excluded_ports;
  size_t max_routes_per_workload = 100;
  WorkerOptions worker;
};

class Agent {
 public:
  // Loads the kernel programs and starts the workers. Fails with a message that says what
  // to do: no BPF permission, no cgroup v2, a bad inventory entry (which pod, what).
  static absl::StatusOr<std::unique_ptr<Agent>> Create(const AgentOptions& options);
  ~Agent();

  // Watches the inventory and keeps pods enrolled until `stop` becomes readable (an
  // eventfd or signalfd). Fails if the first inventory cannot be applied.
  absl::Status Run(int stop_fd);

  // Applies an inventory: enrols, releases and updates pods. Thread-safe.
  absl::Status Apply(const Inventory& inventory);

  // The admin API (see README): GET /stats, /pods, /connections, /routes;
  // POST /log-level?level=.
  void ServeAdmin(HttpServer& server);
  // GET /metrics in the Prometheus text format.
  void ServeMetrics(HttpServer& server);

  // Gathers every worker's metrics into the registry (Run does it once a second).
  void CollectMetrics();

 private:
  struct EnrolledPod {
    std::shared_ptr<PodRuntime> runtime;
    uint64_t cgroup_id = 0;
    std::unique_ptr<NetnsLink> inbound_link;
    std::optional<ListeningPorts> listening;  // when the inbound ports are discovered
    absl::flat_hash_set<Endpoint> meshed;
  };

  explicit Agent(const AgentOptions& options)
      : options_(options),
        routes_(options.max_routes_per_workload),
        registry_(identities_, routes_) {}
  metrics::Identity IdentityOf(const PodInfo& pod) const;
  bool OnThisNode(const PodInfo& pod) const {
    return pod.node.empty() || pod.node == options_.node;
  }
  absl::Status Enrol(const PodInfo& info);
  void Release(const std::string& key);
  // One SO_REUSEPORT listener per worker on `address`, made inside `netns`.
  absl::StatusOr<std::vector<UniqueFd>> MakeListeners(const Netns& netns, const Endpoint& address);
  void GiveListeners(std::vector<UniqueFd> listeners, const std::shared_ptr<PodRuntime>& pod,
                     Direction direction);
  void RefreshMeshedPorts(EnrolledPod& pod);

  const AgentOptions options_;
  std::string cgroup_mount_;
  std::unique_ptr<Netns> home_;
  std::unique_ptr<Datapath> datapath_;
  metrics::IdentityTable identities_;
  metrics::RouteTable routes_;
  metrics::Registry registry_;
  PeerDirectory directory_;
  TapSubscriptions tap_;
  std::unique_ptr<AggregatorClient> aggregator_;
  std::vector<v1::Pod> PodsForAggregator();
  // Pods of other nodes, from the aggregator: they name peers the inventory does not list.
  void SetClusterPods(const v1::PodList& pods);
  void RebuildDirectory();                // under mutex_
  PeerDirectory::Map cluster_directory_;  // the cluster's pods by address, as last sent
  std::vector<std::unique_ptr<Worker>> workers_;
  uint32_t next_pod_id_ = 1;

  std::mutex mutex_;  // the fields below, held by Apply and the refresh loop
  absl::flat_hash_map<std::string, EnrolledPod> enrolled_;
  Inventory inventory_;
};

}  // namespace nodemesh::agent
