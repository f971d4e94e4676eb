// The agent's cumulative metrics: every worker's deltas merged, once a second, and served
// to Prometheus in its text format with the metric vocabulary of docs/ARCHITECTURE.md.
#pragma once

#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/container/node_hash_map.h"
#include "agent/metrics/export_format.h"
#include "agent/metrics/identity_table.h"
#include "agent/metrics/route.h"
#include "common/metrics/histogram.h"
#include "common/metrics/sample.h"

namespace nodemesh::metrics {

class Registry {
 public:
  Registry(const IdentityTable& identities, const RouteTable& routes, ExportFormat format = {})
      : identities_(identities), routes_(routes), format_(std::move(format)) {}

  // Merges the workers' delta of the second ending at `now_s`.
  void Add(const Delta& delta, int64_t now_s);
  // Drops the series nothing was added to since `oldest_s`: /metrics follows the traffic of
  // the last while (Prometheus sees the series go stale), not every pair there ever was.
  void ForgetIdle(int64_t oldest_s);
  // Adds the identity ids the kept series refer to.
  void AddReferencedIdentities(absl::flat_hash_set<uint32_t>* ids) const;
  // Adds the route ids the kept series refer to.
  void AddReferencedRoutes(absl::flat_hash_set<uint32_t>* ids) const;
  // A counter the agent keeps about itself (parse failures, kernel events), exported with
  // the rest: `labels` is the inside of the braces, e.g. `protocol="http2",reason="hpack"`.
  void SetInternal(const std::string& family, const std::string& help, const std::string& labels,
                   uint64_t value);

  // The Prometheus text exposition format (version 0.0.4), as the export format says.
  std::string PrometheusText() const;

  // Totals per (direction, source, destination, route) since the agent started, with
  // latency percentiles from the merged histograms: the node-level view of routes.
  struct RouteTotals {
    TrafficKey traffic;
    std::string route;
    uint64_t responses = 0;
    uint64_t failures = 0;
    int64_t p50_ns = 0, p95_ns = 0, p99_ns = 0;
  };
  std::vector<RouteTotals> Routes() const;

 private:
  struct RequestTotals {
    uint64_t requests = 0;
    int64_t updated_s = 0;
  };
  struct ResponseTotals {
    uint64_t responses = 0;
    int64_t updated_s = 0;
    Histogram latency;
    Histogram first_byte;
  };
  struct TcpTotals {
    uint64_t opened = 0;
    uint64_t closed = 0;
    uint64_t closed_failed = 0;
    int64_t open_now = 0;
    uint64_t read_bytes = 0;
    uint64_t write_bytes = 0;
    Histogram duration;
    int64_t updated_s = 0;
  };

  const IdentityTable& identities_;
  const RouteTable& routes_;
  const ExportFormat format_;
  mutable std::mutex mutex_;
  absl::flat_hash_map<RequestKey, RequestTotals> requests_;
  absl::node_hash_map<ResponseKey, ResponseTotals> responses_;
  absl::node_hash_map<TrafficKey, TcpTotals> tcp_;
  struct InternalCounter {
    std::string help;
    std::map<std::string, uint64_t> values;
  };
  std::map<std::string, InternalCounter> internal_;
};

// What the agent holds besides the registry's series: the identities of its pods, its
// address directories and its workers' series; the routes of its workers' series, streams
// in flight and caches (RouteCache::KeepOnly).
struct InUse {
  absl::flat_hash_set<IdentityTable::Id> identities;
  absl::flat_hash_set<RouteTable::Id> routes;
};

struct Forgotten {
  std::vector<IdentityTable::Id> identities;  // may be given out again from now on
  size_t routes = 0;
};

// Forgets what the agent no longer needs to name: the registry's series idle since
// `oldest_s`, then every identity and route neither a remaining series nor `in_use` refers
// to. The routes' references were gathered after routes.StartForgetting().
Forgotten ForgetUnused(IdentityTable& identities, RouteTable& routes, Registry& registry,
                       InUse in_use, int64_t oldest_s);

}  // namespace nodemesh::metrics
