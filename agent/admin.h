// The agent's admin API (JSON on a root-only Unix socket, documented in the README) and its
// /metrics endpoints, as routes: one handler per endpoint (admin.cc), each reading the running
// agent through AgentView at the moment of the request, never its members. The same admin
// routes answer the socket and the GETs the aggregator relays (meshctl shell --node).
//
// Threads: the handlers run on the admin server's thread, the metrics server's thread and the
// aggregator client's reader thread (relayed requests), at once; so every AgentView method is
// thread-safe, taking the agent's lock or going through a worker's RunAndWait itself.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "agent/counter.h"
#include "agent/kernel/conntrack.h"
#include "agent/kernel/datapath.h"
#include "agent/metrics/registry.h"
#include "agent/observer/local_tap.h"
#include "agent/observer/observer.h"
#include "agent/options.h"
#include "agent/worker/worker.h"
#include "common/http/routes.h"
#include "common/inventory/inventory.h"
#include "nlohmann/json.hpp"
#include "nodemesh/v1/nodemesh.pb.h"

namespace nodemesh::agent {

// A pod of this node as /pods shows it: its inventory entry, its state and why, and what the
// agent holds of it once enrolled.
struct PodReport {
  PodInfo info;
  v1::PodState state = v1::PodState();
  std::string state_reason;
  std::optional<std::string> enrolment_error;  // the last failure, until a retry enrols it
  struct Enrolment {
    uint32_t pod_id = 0;  // as the kernel maps know it
    uint64_t cgroup_id = 0;
    std::vector<std::string> captured_ports;  // "ip:port", sorted
  };
  std::optional<Enrolment> enrolment;  // set while enrolled
};

// An enrolled pod's sk_lookup program, as /kernel lists it.
struct PodProgram {
  std::string pod;    // namespace/name
  std::string netns;  // the inventory's path of its network namespace
  AttachedProgram program;
};

// One worker's counters, read while it runs (each has one writer: the worker).
struct WorkerCounters {
  const ProxyStats& proxy;
  const ObserverStats& observer;
  const ConntrackStats* conntrack;  // null without a conntrack socket
  const Counter& service_lookups_unavailable;
};

// One worker's connections, taken on its thread: the live ones and the last that ended.
struct WorkerConnections {
  int worker = 0;
  std::vector<ConnectionSummary> live;
  std::vector<ConnectionSummary> recently_closed;  // the latest first
};

// The agent's links to the aggregator's replicas, for /stats.
struct AggregatorLinkStatus {
  bool connected = false;  // to any replica
  size_t replicas = 0;     // streamed to, as --aggregator resolves now
  size_t connected_replicas = 0;
  size_t unacknowledged_deltas = 0;
  uint64_t dropped_deltas = 0;
};

// What the endpoints read of the running agent; the Agent implements it.
class AgentView {
 public:
  virtual ~AgentView() = default;

  // Its settings as it runs (the workers counted), and where it serves.
  virtual const AgentOptions& options() const = 0;
  virtual const std::string& cgroup_mount() const = 0;
  virtual const std::string& admin_address() const = 0;
  virtual const std::string& metrics_address() const = 0;
  // Whether it is ready (the first inventory applied) and how long since its control loop
  // last turned (0 before it starts).
  virtual bool ready() const = 0;
  virtual int64_t SecondsSinceHeartbeat() const = 0;
  // The inventory source's own status (InventorySource::Status); nullopt while none runs.
  virtual std::optional<nlohmann::json> InventoryStatus() const = 0;
  virtual std::optional<AggregatorLinkStatus> aggregator() const = 0;

  // The kernel programs, their maps and counters.
  virtual const Datapath& datapath() const = 0;
  // This node's pods, in the inventory's order; and of the enrolled ones, their sk_lookup
  // programs and their names by the id the kernel maps know them by.
  virtual std::vector<PodReport> Pods() const = 0;
  virtual std::vector<PodProgram> PodPrograms() const = 0;
  virtual absl::flat_hash_map<uint32_t, std::string> PodNamesById() const = 0;

  // The workers' counters, and what they hold now (asked on each worker's thread).
  virtual std::vector<WorkerCounters> Counters() const = 0;
  virtual uint64_t ListenerCount() const = 0;
  virtual std::vector<WorkerConnections> Connections() const = 0;

  // Names and figures: identities and routes interned (and not forgotten), the routes'
  // totals since the start, the registry as Prometheus reads it.
  virtual size_t identity_count() const = 0;
  virtual size_t route_count() const = 0;
  virtual metrics::Identity LookupIdentity(metrics::IdentityTable::Id id) const = 0;
  virtual std::vector<metrics::Registry::RouteTotals> Routes() const = 0;
  virtual std::string PrometheusText() const = 0;

  // The events of the local tap session `session` since its last poll (LocalTaps::Poll):
  // the only read that moves anything, the session's own queue.
  virtual absl::StatusOr<LocalTaps::Batch> PollTap(const std::string& session,
                                                   TapFilter filter) const = 0;
};

// GET /version, /config, /pods, /connections, /routes, /stats, /kernel, /kernel/maps/NAME,
// /tap; POST /log-level?level=. `agent` outlives the routes.
http::HttpRoutes AdminRoutes(const AgentView& agent);
// GET /metrics in the Prometheus text format, and the probes a kubelet asks: /readyz, 200
// once the agent is ready; /healthz, 200 unless the control loop has not turned for
// kStallSeconds.
http::HttpRoutes MetricsRoutes(const AgentView& agent);
inline constexpr int64_t kStallSeconds = 30;

}  // namespace nodemesh::agent
