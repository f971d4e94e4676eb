// Metric series as they leave a worker: keys of interned ids, counts accumulated since the
// previous collection, histograms as their non-empty buckets.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace nodemesh::metrics {

enum class Direction : uint8_t { kOutbound, kInbound };
// Arrays indexed by Direction are sized by this: kInbound stays the last enumerator.
inline constexpr size_t kDirectionCount = static_cast<size_t>(Direction::kInbound) + 1;

inline const char* DirectionName(Direction direction) {
  return direction == Direction::kOutbound ? "outbound" : "inbound";
}

// Who talks to whom, seen from which side.
struct TrafficKey {
  uint32_t source = 0;  // IdentityTable ids
  uint32_t destination = 0;
  Direction direction = Direction::kOutbound;
  // The Service the caller dialled (its cluster IP), when the node's NAT sent the connection
  // on to `destination`, one of its pods: an identity of owner kind "Service". 0 (External's
  // id, never a Service) when the connection was dialled to no Service. Outbound only: the
  // server's side sees no Service.
  uint32_t service = 0;

  bool operator==(const TrafficKey&) const = default;
  template <typename H>
  friend H AbslHashValue(H h, const TrafficKey& k) {
    return H::combine(std::move(h), k.source, k.destination, k.direction, k.service);
  }
};

struct RequestKey {
  TrafficKey traffic;
  uint32_t route = 0;  // RouteTable id

  bool operator==(const RequestKey&) const = default;
  template <typename H>
  friend H AbslHashValue(H h, const RequestKey& k) {
    return H::combine(std::move(h), k.traffic, k.route);
  }
};

struct ResponseKey {
  RequestKey request;
  uint16_t status = 0;       // HTTP status; 0 when the stream ended without a response
  int16_t grpc_status = -1;  // -1 when not gRPC or none was sent
  bool failure = false;

  bool operator==(const ResponseKey&) const = default;
  template <typename H>
  friend H AbslHashValue(H h, const ResponseKey& k) {
    return H::combine(std::move(h), k.request, k.status, k.grpc_status, k.failure);
  }
};

using SparseBuckets = std::vector<std::pair<uint16_t, uint64_t>>;

struct SparseHistogram {
  SparseBuckets buckets;
  int64_t sum_ns = 0;
};

struct RequestSample {
  RequestKey key;
  uint64_t requests = 0;
};

struct ResponseSample {
  ResponseKey key;
  uint64_t responses = 0;
  SparseHistogram latency;     // request start to response end
  SparseHistogram first_byte;  // request start to the first byte of the response
};

struct TcpSample {
  TrafficKey key;
  uint64_t opened = 0;
  uint64_t closed = 0;
  uint64_t closed_failed = 0;  // of closed: reset, refused or timed out
  int64_t open_now = 0;        // gauge, not a delta
  uint64_t read_bytes = 0;     // from the client
  uint64_t write_bytes = 0;    // to the client
  SparseHistogram duration;
};

// One worker's activity since its previous collection.
struct Delta {
  std::vector<RequestSample> requests;
  std::vector<ResponseSample> responses;
  std::vector<TcpSample> tcp;
};

}  // namespace nodemesh::metrics
