// The aggregator's memory of traffic: one slot per unix second for the retention (an hour),
// in a ring. Every agent's MetricsDelta for a second merges into that second's slot, keyed by
// resolved labels (direction, source and destination identity, the Service dialled, route,
// and for responses the status, gRPC status and failure classification). Identities and
// routes are interned, and latency histograms kept packed; queries scan a range of seconds
// and merge histograms themselves. Thread-safe: each slot has its own lock, so agents
// writing the current second and queries reading the past rarely meet.
//
// Beside the seconds, rollups of each minute and of each 10 s (a ring each): the same series
// summed over their seconds, merged as each delta is, so that a scan of an hour reads sixty
// minute rollups rather than 3,600 seconds, a minute's window about a dozen slots rather
// than sixty, and a scan's cost grows with the series rather than with the seconds. Exact: a
// rollup holds the very sums (counts, bytes, histogram buckets) of its seconds, and for a
// TCP gauge the value of the newest second that reported it, which is what a scan of the
// seconds, newest first, would give. A rollup is used only while it sums every second of its
// span: once one of them is dropped (aged out, evicted for memory), it is emptied and scans
// read the remaining seconds. Locks: a second's slot, then its rollups'.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "aggregator/packed_histogram.h"
#include "common/base/interner.h"
#include "common/metrics/identity.h"
#include "common/metrics/sample.h"
#include "nodemesh/v1/nodemesh.pb.h"

namespace nodemesh::aggregator {

struct StoreOptions {
  int retention_seconds = 3600;
  // Memory for the stored seconds, approximately (a series takes about 100 bytes a second).
  // Past it, the oldest seconds go first, so windows reach back less than the retention
  // rather than new data being refused.
  size_t max_memory_bytes = size_t{2} << 30;
  // Series (response plus TCP) one second may hold, all agents together; more are dropped
  // and counted, so that one runaway second cannot take the whole budget.
  size_t max_series_per_second = 50'000;
  size_t max_identities = 1'000'000;
  size_t max_routes = 1'000'000;
  // A delta stamped further ahead of the aggregator's clock than this (a node's clock
  // running fast) is stored at the aggregator's present second rather than lost.
  int max_future_seconds = 10;
};

using IdentityId = uint32_t;
using RouteId = uint32_t;

// Who talks to whom, seen from which side, and the Service dialled: the agents' key, with
// the store's own ids (External is 0 there too, so a `service` of 0 is none).
using TrafficLabels = metrics::TrafficKey;
inline constexpr IdentityId kNoService = 0;

struct ResponseLabels {
  TrafficLabels traffic;
  RouteId route = 0;
  uint16_t status_code = 0;  // 0: ended without a response
  int16_t grpc_status = -1;  // -1: none
  bool failure = false;

  bool operator==(const ResponseLabels&) const = default;
  template <typename H>
  friend H AbslHashValue(H h, const ResponseLabels& k) {
    return H::combine(std::move(h), k.traffic, k.route, k.status_code, k.grpc_status, k.failure);
  }
};

struct ResponseCounts {
  uint64_t responses = 0;
  PackedHistogram latency;
};

// What the queries read of a TCP series: bytes, and the gauge of open connections.
struct TcpCounts {
  uint64_t read_bytes = 0;
  uint64_t write_bytes = 0;
  // A gauge: the connections open at the end of the second.
  int64_t open_now = 0;
};

// What a scan hands out, one series of one second, or of one whole rolled-up span, at a time
// (the span's first second then), newest first. Called with that slot locked: visitors must not
// call back into the store's scan.
class StoreVisitor {
 public:
  virtual ~StoreVisitor() = default;
  virtual void Response(int64_t second, const ResponseLabels& labels,
                        const ResponseCounts& counts) = 0;
  virtual void Tcp(int64_t second, const TrafficLabels& labels, const TcpCounts& counts) = 0;
};

class Store {
 public:
  explicit Store(StoreOptions options = {});
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // Merges one agent's delta into the slot of its second; `now_seconds` is the aggregator's
  // clock. Whatever is valid is merged even when the result is an error, which says what
  // was left out: OUT_OF_RANGE for a second older than the retention, INVALID_ARGUMENT for
  // series referring to identities or routes the delta does not carry, RESOURCE_EXHAUSTED
  // when the second's series limit was reached.
  absl::Status Add(const v1::MetricsDelta& delta, int64_t now_seconds);

  // Visits the series of the seconds [first_second, last_second], newest second first, each
  // whole minute or 10 s of the range with a whole rollup at once. Seconds outside the
  // retention are skipped.
  void Scan(int64_t first_second, int64_t last_second, StoreVisitor& visitor) const;

  // One whole second as a delta of its merged series (identities and routes as tables of
  // its own, latency buckets without their sum, which the store does not keep), for a
  // replica that missed it (Backfill, backfill.h); Add merges it back. nullopt for a
  // second the store does not hold.
  std::optional<v1::MetricsDelta> ExportSecond(int64_t second) const;

  // nullopt only for an id that no retained second refers to.
  std::optional<metrics::Identity> identity(IdentityId id) const { return identities_.Get(id); }
  std::optional<std::string> route(RouteId id) const { return routes_.Get(id); }

  // Frees the slots older than the retention, and the oldest ones while over the memory
  // budget, and forgets identities and routes that no retained second refers to. Called once
  // a second.
  void Expire(int64_t now_seconds);

  int retention_seconds() const { return options_.retention_seconds; }

  struct Stats {
    uint64_t deltas = 0;
    uint64_t series = 0;
    uint64_t dropped_too_old = 0;     // series
    uint64_t dropped_invalid = 0;     // series
    uint64_t dropped_over_limit = 0;  // series
    uint64_t future_deltas = 0;       // deltas stored at the present second instead of their own
    uint64_t evicted_for_memory = 0;  // seconds dropped before their time
    size_t memory_bytes = 0;
    size_t identities = 0;  // besides External, which the store always holds (id 0)
    size_t routes = 0;
  };
  Stats stats() const;

 private:
  struct Slot;
  Slot& SlotOf(int64_t second) const;
  // The spans rolled up, longest first (a scan tries them in this order).
  static constexpr std::array<int64_t, 2> kRollupSpans = {60, 10};
  // A span's ring, the first second of the span `second` falls in, and its rollup's slot.
  size_t RollupSlots(size_t level) const;
  static int64_t SpanStart(size_t level, int64_t second);
  Slot& RollupOf(size_t level, int64_t second) const;
  // With `slot`'s lock held: its second dropped, the slot then holding `new_second` (or none),
  // and its spans' rollups broken if the second held series.
  void Drop(Slot& slot, int64_t new_second);
  // Hands out `slot`'s series when it holds `second` (and is no broken rollup); false if not.
  static bool Visit(const Slot& slot, int64_t second, StoreVisitor& visitor);
  // The second a delta is stored in: its own, or the present one for a delta further ahead
  // than max_future_seconds (counted); OUT_OF_RANGE for one older than the retention.
  absl::StatusOr<int64_t> SecondOf(const v1::MetricsDelta& delta, int64_t now_seconds);
  // Brings memory_bytes_ up to date with `slot`'s size; called with its lock held.
  void Account(Slot& slot);

  const StoreOptions options_;
  std::unique_ptr<Slot[]> slots_;
  std::array<std::unique_ptr<Slot[]>, kRollupSpans.size()> rollups_;
  Interner<metrics::Identity> identities_;
  Interner<std::string> routes_;

  std::atomic<uint64_t> deltas_{0};
  std::atomic<uint64_t> series_{0};
  std::atomic<uint64_t> dropped_too_old_{0};
  std::atomic<uint64_t> dropped_invalid_{0};
  std::atomic<uint64_t> dropped_over_limit_{0};
  std::atomic<uint64_t> future_deltas_{0};
  std::atomic<uint64_t> evicted_for_memory_{0};
  std::atomic<size_t> memory_bytes_{0};
};

}  // namespace nodemesh::aggregator
