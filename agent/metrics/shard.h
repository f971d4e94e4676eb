// A worker's metrics: written by that worker only, with no lock, and after warm-up with no
// allocation (a series, once created, is reused). Collect() runs on the worker too (the
// control thread asks for it once a second): it hands over the counts and zeroes them.
#pragma once

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/container/node_hash_map.h"
#include "agent/metrics/identity_table.h"
#include "common/metrics/histogram.h"
#include "common/metrics/sample.h"

namespace nodemesh::metrics {

// The TCP series of a connection: held by the connection so that byte counts need no lookup.
struct TcpSeries {
  uint64_t opened = 0;
  uint64_t closed = 0;
  uint64_t closed_failed = 0;
  int64_t open_now = 0;
  uint64_t read_bytes = 0;
  uint64_t write_bytes = 0;
  DeltaHistogram duration;
  int idle_collections = 0;
};

class Shard {
 public:
  void CountRequest(const RequestKey& key) {
    RequestSeries& series = requests_[key];
    ++series.requests;
  }
  // `first_byte_ns` < 0 when no response byte arrived.
  void CountResponse(const ResponseKey& key, int64_t latency_ns, int64_t first_byte_ns) {
    ResponseSeries& series = responses_[key];
    ++series.responses;
    series.latency.Record(latency_ns);
    if (first_byte_ns >= 0) series.first_byte.Record(first_byte_ns);
  }
  // The series stays valid while the connection is open (open series are never evicted).
  TcpSeries* OpenConnection(const TrafficKey& key) {
    TcpSeries& series = tcp_[key];
    ++series.opened;
    ++series.open_now;
    return &series;
  }
  static void CloseConnection(TcpSeries* series, int64_t duration_ns, bool failed) {
    ++series->closed;
    if (failed) ++series->closed_failed;
    --series->open_now;
    series->duration.Record(duration_ns);
  }

  // Adds the identity ids of every series kept, those of open connections among them.
  void AddReferencedIdentities(absl::flat_hash_set<uint32_t>* ids) const;
  // Adds the route ids of every request and response series kept.
  void AddReferencedRoutes(absl::flat_hash_set<uint32_t>* ids) const;

  // Moves everything counted since the last call into `out` and zeroes it. Series idle for
  // `evict_after` collections (and with no open connection) are dropped.
  void Collect(Delta* out, int evict_after = 60);

 private:
  struct RequestSeries {
    uint64_t requests = 0;
    int idle_collections = 0;
  };
  struct ResponseSeries {
    uint64_t responses = 0;
    DeltaHistogram latency;
    DeltaHistogram first_byte;
    int idle_collections = 0;
  };
  absl::flat_hash_map<RequestKey, RequestSeries> requests_;
  // node_hash_map: ResponseSeries are large, and TcpSeries pointers must stay stable.
  absl::node_hash_map<ResponseKey, ResponseSeries> responses_;
  absl::node_hash_map<TrafficKey, TcpSeries> tcp_;
};

}  // namespace nodemesh::metrics
