// The node agent's control plane: keeps the pods of the inventory enrolled (enrolment.h) or
// released, live, runs the workers that proxy their connections, and gathers what they
// count for /metrics and the aggregator.
//
// Threads, and what each owns (docs/ARCHITECTURE.md draws the same map):
//   control   The thread that calls Run(). Once a second it collects every worker's metrics
//             into the registry and the aggregator client's queue, refreshes the ports each
//             pod is captured on and retries pods that failed to enrol; every few seconds it
//             forgets identities and routes nothing refers to any more.
//   inventory The source's own thread (inventory/local.h: the file watcher; kubernetes.h: a
//             resolver woken by one reflector thread per watched collection) calls Apply()
//             with every valid version of the inventory; the first one before Run goes on.
//   workers   One per CPU (worker/worker.h), each with its epoll loop, its listeners, its
//             connections (relay + observer), buffers, metric shard, tap outbox and upstream
//             dialer (kernel/upstream_dialer.h, with a conntrack socket opened in the agent's
//             netns). Nothing else touches those: other threads hand a worker a task with
//             RunAndWait() and wait for it to run there (add or remove listeners, collect
//             metrics, list connections, say which identities and routes they refer to,
//             forget identities).
//   aggregator The replicas' resolver thread (aggregator_replicas.h) and each replica's
//             client's session threads (aggregator_client.h) read this node's pods
//             through a hook (under mutex_), drain the workers' tap outboxes (each has its
//             own lock), publish tap subscriptions and hand over the cluster's pods.
//   http      The admin API and /metrics servers, one thread each: their handlers take
//             mutex_ or go through RunAndWait like the control thread.
// Shared state: mutex_ guards the inventory, the enrolments and every interning of an
// identity; the address and Service directories, pod views, tap subscriptions and captured
// endpoints are immutable snapshots swapped atomically and read without a lock by the
// workers; the identity and route tables and the registry have their own locks, taken per
// connection, per new route or per second, never per request (a route forgetting pass marks
// an epoch in the route table instead of holding its lock across RunAndWait).
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "agent/admin.h"
#include "agent/aggregator_replicas.h"
#include "agent/enrolment.h"
#include "agent/http_server.h"
#include "agent/inventory/source.h"
#include "agent/kernel/datapath.h"
#include "agent/kernel/system.h"
#include "agent/metrics/identity_table.h"
#include "agent/metrics/registry.h"
#include "agent/metrics/route.h"
#include "agent/observer/local_tap.h"
#include "agent/observer/tap.h"
#include "agent/options.h"
#include "agent/pod_runtime.h"
#include "agent/pod_view.h"
#include "agent/worker/worker.h"
#include "common/inventory/inventory.h"

namespace nodemesh::agent {

// Its admin API reads it as an AgentView (admin.h), which it implements privately: the
// handlers see what the view says and nothing else of the agent.
class Agent final : private AgentView {
 public:
  // Loads the kernel programs and starts the workers. Fails with a message that says what
  // to do: no BPF permission, no cgroup v2, a bad inventory entry (which pod, what).
  static absl::StatusOr<std::unique_ptr<Agent>> Create(const AgentOptions& requested);
  ~Agent();

  // Follows `inventory` and keeps pods enrolled until `stop` becomes readable (an eventfd or
  // signalfd). Fails if the first inventory cannot be applied.
  absl::Status Run(InventorySource& inventory, int stop_fd);

  // Applies an inventory: enrols, releases and updates pods. Thread-safe. Fails listing the
  // pods that could not be enrolled (they are tried again later).
  absl::Status Apply(const Inventory& inventory);

  // The admin API (AdminRoutes in admin.h; see README). Both Serve calls come before either
  // server starts.
  void ServeAdmin(HttpServer& server);
  // A GET of the admin API relayed by the aggregator (meshctl shell --node): `target` is the
  // path with its query. Answered as the admin socket answers it.
  http::HttpResponse AnswerRelayed(std::string_view target) const;
  // GET /metrics and the probes a kubelet asks (MetricsRoutes in admin.h): ready once the
  // kernel programs are attached and the first inventory is applied; healthy while the
  // control loop (which also waits on every worker each second) turns.
  void ServeMetrics(HttpServer& server);

  // Gathers every worker's metrics into the registry (Run does it once a second).
  void CollectMetrics();
  // Forgets the series idle past the retention, then the identities and routes nothing
  // refers to.
  void ForgetUnused();

 private:
  explicit Agent(const AgentOptions& options);
  metrics::Identity IdentityOf(const PodInfo& pod) const;
  bool OnThisNode(const PodInfo& pod) const {
    return pod.node.empty() || pod.node == options_.node;
  }
  // Meshed, on this node, and not waiting for anything outside the agent.
  bool Enrollable(const PodInfo& pod) const {
    return pod.meshed && OnThisNode(pod) && pod.pending.empty();
  }
  struct PodStatus {
    v1::PodState state;
    std::string reason;
  };
  PodStatus StatusOf(const PodInfo& pod) const;  // under mutex_
  // Enrols the pods of inventory_ that should be and are not; under mutex_. Returns the
  // failures, one line per pod.
  std::vector<std::string> EnrolWanted();
  std::vector<v1::Pod> PodsForAggregator();
  // Pods of other nodes, from the aggregator: they name peers the inventory does not list.
  void SetClusterPods(const v1::PodList& pods);
  void RebuildPeerDirectory();  // under mutex_
  // Under mutex_: the Services of inventory_ that changed since the last call, into services_.
  void UpdateServiceDirectory();
  // Under mutex_, after the kernel's map changed or before it will: the workers' snapshot of
  // the enrolled pods' captured endpoints, but those of the pods `leaving`.
  void RebuildCapturedEndpoints(const std::vector<std::string>& leaving = {});
  // Moves every worker's queued tap events of one outbox (the aggregator's or the local
  // taps') into `out`; returns how many they dropped.
  uint64_t DrainTapOutboxes(TapOutbox& (Worker::*outbox)(), std::vector<v1::TapEvent>* out);
  static void LogNewlyPending(const Inventory& before, const Inventory& after);

  // AgentView (admin.h): what the admin API reads, each thread-safe.
  const AgentOptions& options() const override { return options_; }
  const std::string& cgroup_mount() const override { return cgroup_mount_; }
  const std::string& admin_address() const override { return admin_address_; }
  const std::string& metrics_address() const override { return metrics_address_; }
  bool ready() const override { return ready_.load(std::memory_order_acquire); }
  int64_t SecondsSinceHeartbeat() const override;
  std::optional<nlohmann::json> InventoryStatus() const override;
  std::optional<AggregatorLinkStatus> aggregator() const override;
  const Datapath& datapath() const override { return *datapath_; }
  std::vector<PodReport> Pods() const override;
  std::vector<PodProgram> PodPrograms() const override;
  absl::flat_hash_map<uint32_t, std::string> PodNamesById() const override;
  std::vector<WorkerCounters> Counters() const override;
  uint64_t ListenerCount() const override;
  std::vector<WorkerConnections> Connections() const override;
  size_t identity_count() const override { return identities_.size(); }
  size_t route_count() const override { return routes_.size(); }
  metrics::Identity LookupIdentity(metrics::IdentityTable::Id id) const override {
    return identities_.Get(id);
  }
  std::vector<metrics::Registry::RouteTotals> Routes() const override {
    return registry_.Routes();
  }
  std::string PrometheusText() const override { return registry_.PrometheusText(); }
  absl::StatusOr<LocalTaps::Batch> PollTap(const std::string& session,
                                           TapFilter filter) const override;

  const AgentOptions options_;
  std::string cgroup_mount_;
  std::unique_ptr<Netns> home_;
  std::unique_ptr<Datapath> datapath_;
  metrics::IdentityTable identities_;
  metrics::RouteTable routes_;
  metrics::Registry registry_;
  PeerDirectory directory_;
  ServiceDirectory services_;
  TapSubscriptions tap_;
  CapturedEndpoints captured_endpoints_;  // where a same-node call may be dialled straight
  std::vector<std::unique_ptr<Worker>> workers_;
  // The admin API's taps (meshctl shell's `tap`); made once the workers are.
  std::unique_ptr<LocalTaps> local_taps_;
  http::HttpRoutes admin_routes_;                      // made by Create, before anything may ask
  std::string admin_address_, metrics_address_;  // set by ServeAdmin and ServeMetrics
  // Made before anything can call it (Apply tells it of pod changes); started by Run.
  std::unique_ptr<AggregatorReplicas> aggregator_;
  // The source Run follows, for /stats; null outside Run.
  std::atomic<InventorySource*> source_{nullptr};
  std::atomic<bool> ready_{false};     // the first inventory applied, Run not ended
  std::atomic<int64_t> heartbeat_{0};  // the control loop's last turn (steady seconds)

  mutable std::mutex mutex_;  // the fields below, and interning (see the thread map above)
  Inventory inventory_;
  PeerDirectory::Map cluster_directory_;  // the cluster's pods by address, as last sent
  // The Services as services_ last published them, and its cluster IPs' map, which the next
  // version changes in place of building it again.
  ServiceMap applied_services_;
  ServiceDirectory::Map service_ips_;
  absl::flat_hash_map<std::string, std::unique_ptr<PodEnrolment>> enrolled_;
  // Pods that should be enrolled and are not, with the reason, until a retry succeeds.
  absl::flat_hash_map<std::string, std::string> not_enrolled_;
  uint32_t next_pod_id_ = 1;
};

}  // namespace nodemesh::agent
