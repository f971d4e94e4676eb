// Where the queries (queries.h) read their figures from: the series of a window, per direction,
// pair of identities, Service dialled, and route when asked. Two sources: the aggregator's own
// memory (MemorySource, over the Store: exact per-second figures for its retention, an hour),
// and a Prometheus-compatible store the agents' /metrics feed (prometheus_source.h: longer
// windows, latencies as the export's buckets). The queries group, classify and count what a
// source hands out the same way whichever it is, so their rows, columns and JSON are the same.
//
// Threads: a source answers the one query that made it; the Store it reads locks for itself.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "aggregator/packed_histogram.h"
#include "aggregator/store.h"
#include "common/metrics/identity.h"
#include "nodemesh/v1/nodemesh.pb.h"

namespace nodemesh::aggregator {

// The whole seconds [first_second, last_second], `seconds` of them (0: none).
struct Window {
  int64_t first_second = 0;
  int64_t last_second = 0;
  int64_t seconds = 0;
};

// A latency histogram as the agents export it: cumulative counts ("le" buckets) by upper
// bound in seconds, the last bound +Inf. Counts are of the window, so they may be fractional
// only where a store computed them so.
class LatencyBuckets {
 public:
  // Adds `count` observations at or below `upper_bound_seconds` (cumulative, as exported).
  void Add(double upper_bound_seconds, double count) { cumulative_[upper_bound_seconds] += count; }
  void Merge(const LatencyBuckets& other);
  bool empty() const { return cumulative_.empty(); }
  // The q-quantile in nanoseconds as Prometheus's histogram_quantile computes it: linear
  // within the bucket the rank falls in (from 0 for the first), the highest finite bound when
  // it falls in +Inf's. 0 without observations or without a +Inf bucket.
  int64_t QuantileNs(double q) const;

 private:
  std::map<double, double> cumulative_;
};

// One response series' figures over the window.
struct ResponseFigures {
  uint64_t responses = 0;
  // The latencies: exact ones from memory, or the export's buckets from a store; null when
  // the source has none for the series.
  const PackedHistogram* exact_latency = nullptr;
  const LatencyBuckets* latency_buckets = nullptr;
};

// What a source's scan hands out. Routes are 0 unless the scan was asked for them.
class TrafficVisitor {
 public:
  virtual ~TrafficVisitor() = default;
  virtual void Response(const ResponseLabels& labels, const ResponseFigures& figures) = 0;
  // A series' latest figures first: its first open_now is the window's last.
  virtual void Tcp(const TrafficLabels& labels, const TcpCounts& counts) = 0;
};

class TrafficSource {
 public:
  virtual ~TrafficSource() = default;
  virtual v1::AnswerSource kind() const = 0;
  // Visits the series of `window`, with their routes when `by_route`. An error (the store's
  // unreachable, slow or refusing) says what to do; the visitor may then have seen part.
  virtual absl::Status Scan(const Window& window, bool by_route, TrafficVisitor& visitor) = 0;
  // The identity or route an id of this source's scans stands for; nullopt for one unknown.
  virtual std::optional<metrics::Identity> identity(IdentityId id) const = 0;
  virtual std::optional<std::string> route(RouteId id) const = 0;
};

// The aggregator's memory: the Store's seconds, exact latencies.
class MemorySource final : public TrafficSource {
 public:
  explicit MemorySource(const Store& store) : store_(store) {}
  v1::AnswerSource kind() const override { return v1::ANSWER_SOURCE_MEMORY; }
  absl::Status Scan(const Window& window, bool by_route, TrafficVisitor& visitor) override;
  std::optional<metrics::Identity> identity(IdentityId id) const override {
    return store_.identity(id);
  }
  std::optional<std::string> route(RouteId id) const override { return store_.route(id); }

 private:
  const Store& store_;
};

}  // namespace nodemesh::aggregator
