// The agent's cumulative metrics: every worker's deltas merged, once a second, and served
// to Prometheus in its text format with the vocabulary of DESIGN.md section 5.
#pragma once

#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/node_hash_map.h"
#include "agent/metrics/identity_table.h"
#include "agent/metrics/route.h"
#include "common/metrics/histogram.h"
#include "common/metrics/sample.h"

namespace nodemesh::metrics {

// Latency bucket bounds exported to Prometheus, in seconds: Linkerd's, plus sub-millisecond.
inline constexpr double kLatencyBoundsSeconds[] = {
    0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.1,
    0.2,    0.3,    0.4,    0.5,   1,     2,     3,     4,     5,    10,   20,   30,   40,   50};

class Registry {
 public:
  Registry(const IdentityTable& identities, const RouteTable& routes)
      : identities_(identities), routes_(routes) {}

  void Add(const Delta& delta);
  // A counter the agent keeps about itself (parse failures, kernel events), exported with
  // the rest: `labels` is the inside of the braces, e.g. `protocol="http2",reason="hpack"`.
  void SetInternal(const std::string& family, const std::string& help, const std::string& labels,
                   uint64_t value);

  // The Prometheus text exposition format (version 0.0.4).
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
  };
  struct ResponseTotals {
    uint64_t responses = 0;
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
  };

  const IdentityTable& identities_;
  const RouteTable& routes_;
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

}  // namespace nodemesh::metrics
