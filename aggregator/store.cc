#include "aggregator/store.h"

#include <fmt/format.h>

#include <algorithm>
#include <limits>
#include <optional>
#include <utility>
#include <vector>

#include "common/wire/convert.h"

namespace nodemesh::aggregator {
namespace {

constexpr int64_t kEmptySlot = std::numeric_limits<int64_t>::min();

// Identities and routes stay interned for this long past the retention, so that a query
// scanning the oldest retained second never meets an id that was just reused.
constexpr int64_t kForgetMarginSeconds = 120;

// A delta's series under the store's labels, with the delta's own repeats of a key combined
// (an agent may send one key once per worker), so that the slot's lock is held only for the
// merge.
struct DeltaSeries {
  absl::flat_hash_map<ResponseLabels, ResponseCounts> responses;
  absl::flat_hash_map<TrafficLabels, TcpCounts> tcp;
  uint64_t invalid = 0;  // series left out: see ResolveTraffic and ResolveResponse
};

// A series' traffic labels in the store's ids; false when they refer past the delta's tables
// (or to identities that did not fit), or name no direction.
bool ResolveTraffic(const v1::TrafficKey& key, const std::vector<IdentityId>& identity_ids,
                    TrafficLabels* labels) {
  if (key.source() >= identity_ids.size() || key.destination() >= identity_ids.size()) {
    return false;
  }
  const std::optional<metrics::Direction> direction = wire::FromProto(key.direction());
  if (!direction) return false;
  labels->source = identity_ids[key.source()];
  labels->destination = identity_ids[key.destination()];
  labels->direction = *direction;
  labels->service = 0;
  if (key.has_service()) {
    if (key.service() >= identity_ids.size()) return false;
    labels->service = identity_ids[key.service()];
  }
  return true;
}

// A response series' labels; false as ResolveTraffic, or when its route is past the delta's
// table or a status does not fit the store's labels.
bool ResolveResponse(const v1::ResponseSeries& series, const std::vector<IdentityId>& identity_ids,
                     const std::vector<RouteId>& route_ids, ResponseLabels* labels) {
  if (!ResolveTraffic(series.traffic(), identity_ids, &labels->traffic) ||
      series.route() >= route_ids.size() ||
      series.status_code() > std::numeric_limits<uint16_t>::max() || series.grpc_status() < -1 ||
      series.grpc_status() > std::numeric_limits<int16_t>::max()) {
    return false;
  }
  labels->route = route_ids[series.route()];
  labels->status_code = static_cast<uint16_t>(series.status_code());
  labels->grpc_status = static_cast<int16_t>(series.grpc_status());
  labels->failure = series.failure();
  return true;
}

// The delta's series in the store's ids (its tables interned as `identity_ids`, `route_ids`).
DeltaSeries Resolve(const v1::MetricsDelta& delta, const std::vector<IdentityId>& identity_ids,
                    const std::vector<RouteId>& route_ids) {
  DeltaSeries resolved;
  for (const v1::ResponseSeries& series : delta.responses()) {
    ResponseLabels labels;
    if (!ResolveResponse(series, identity_ids, route_ids, &labels)) {
      ++resolved.invalid;
      continue;
    }
    ResponseCounts& counts = resolved.responses[labels];
    counts.responses += series.responses();
    counts.latency.Merge(PackedHistogram::Pack(wire::FromProto(series.latency())));
  }
  for (const v1::TcpSeries& series : delta.tcp()) {
    TrafficLabels labels;
    if (!ResolveTraffic(series.traffic(), identity_ids, &labels)) {
      ++resolved.invalid;
      continue;
    }
    TcpCounts& counts = resolved.tcp[labels];
    counts.read_bytes += series.read_bytes();
    counts.write_bytes += series.write_bytes();
    counts.open_now += series.open_now();  // one agent's workers: their gauges add up
  }
  return resolved;
}

// What Add says of a delta merged (but for a second the ring had moved past): OK, or what was
// left out.
absl::Status AddOutcome(const StoreOptions& options, int64_t second, bool tables_fit,
                        uint64_t invalid, uint64_t over_limit) {
  if (!tables_fit) {
    return absl::ResourceExhaustedError(
        fmt::format("the aggregator holds its maximum of {} identities or {} routes; {} series "
                    "of second {} dropped",
                    options.max_identities, options.max_routes, invalid, second));
  }
  if (invalid != 0) {
    return absl::InvalidArgumentError(
        fmt::format("{} series of second {} refer to identities or routes the delta does not "
                    "carry, or have no direction; dropped",
                    invalid, second));
  }
  if (over_limit != 0) {
    return absl::ResourceExhaustedError(
        fmt::format("second {} holds its maximum of {} series; {} dropped", second,
                    options.max_series_per_second, over_limit));
  }
  return absl::OkStatus();
}

}  // namespace

// One second's series, or a span's summed (a rollup). The span of a rollup starts at `second`;
// its TCP gauges are each the one of the newest second that reported it.
struct Store::Slot {
  mutable std::mutex mutex;
  int64_t second = kEmptySlot;
  absl::flat_hash_map<ResponseLabels, ResponseCounts> responses;
  absl::flat_hash_map<TrafficLabels, TcpCounts> tcp;
  // Rollups only: the second each TCP gauge was reported for.
  absl::flat_hash_map<TrafficLabels, int64_t> gauge_seconds;
  // Rollups only: a second of the span was dropped (aged out, evicted, or its ring slot
  // reused) while it held series, so the rollup no longer sums its seconds: it is emptied,
  // takes no more deltas, and scans read the span's remaining seconds instead.
  bool broken = false;
  size_t histogram_bytes = 0;  // packed histograms' heap memory
  size_t bytes = 0;            // as last accounted in memory_bytes_

  void Reset(int64_t new_second) {
    second = new_second;
    broken = false;
    // Swapping with empty maps gives their memory back; clear() would keep it.
    absl::flat_hash_map<ResponseLabels, ResponseCounts>().swap(responses);
    absl::flat_hash_map<TrafficLabels, TcpCounts>().swap(tcp);
    absl::flat_hash_map<TrafficLabels, int64_t>().swap(gauge_seconds);
    histogram_bytes = 0;
  }
  size_t series() const { return responses.size() + tcp.size(); }
  // The maps' tables (an entry and a control byte per unit of capacity) and the histograms.
  size_t MemoryBytes() const {
    return responses.capacity() * (sizeof(decltype(responses)::value_type) + 1) +
           tcp.capacity() * (sizeof(decltype(tcp)::value_type) + 1) +
           gauge_seconds.capacity() * (sizeof(decltype(gauge_seconds)::value_type) + 1) +
           histogram_bytes;
  }

  // With the lock held: a delta's series of `delta_second` merged in, the slot taken over
  // from an older second. nullopt when the ring has moved past `delta_second`; else the
  // number of new series left out because the second held `max_series`, which are erased
  // from `delta` (what stays is what the second took).
  std::optional<uint64_t> Merge(int64_t delta_second, DeltaSeries& delta, size_t max_series) {
    if (second != delta_second) {
      if (second > delta_second) return std::nullopt;
      Reset(delta_second);
    }
    // Responses first: past the limit, TCP series are the first left out.
    const uint64_t responses_left_out = MergeResponses(delta.responses, max_series);
    return responses_left_out + MergeTcp(delta.tcp, max_series);
  }

  // With the lock held, into the rollup of the span starting at `start`: the series of
  // `delta_second`, one of its seconds, as its own slot took them. A rollup taken over from an
  // older span starts whole; a broken one, or one the ring has moved past, is left alone.
  void Roll(int64_t start, int64_t delta_second, DeltaSeries& delta) {
    if (second != start) {
      if (second > start) return;
      Reset(start);
    }
    if (broken) return;
    MergeResponses(delta.responses, std::numeric_limits<size_t>::max());
    for (const auto& [labels, counts] : delta.tcp) {
      auto [gauge_second, first] = gauge_seconds.try_emplace(labels, delta_second);
      TcpCounts& into = tcp[labels];
      into.read_bytes += counts.read_bytes;
      into.write_bytes += counts.write_bytes;
      // A later delta of the newest second replaces its gauge, as in the second's own slot.
      if (first || delta_second >= gauge_second->second) {
        into.open_now = counts.open_now;
        gauge_second->second = delta_second;
      }
    }
  }

  uint64_t MergeResponses(absl::flat_hash_map<ResponseLabels, ResponseCounts>& delta,
                          size_t max_series) {
    uint64_t over_limit = 0;
    for (auto it = delta.begin(); it != delta.end();) {
      const auto& [labels, counts] = *it;
      auto found = responses.find(labels);
      if (found == responses.end()) {
        if (series() >= max_series) {
          ++over_limit;
          delta.erase(it++);
          continue;
        }
        histogram_bytes += counts.latency.memory_bytes();
        responses.emplace(labels, counts);
        ++it;
        continue;
      }
      ResponseCounts& into = found->second;
      into.responses += counts.responses;
      histogram_bytes -= into.latency.memory_bytes();
      into.latency.Merge(counts.latency);
      histogram_bytes += into.latency.memory_bytes();
      ++it;
    }
    return over_limit;
  }

  uint64_t MergeTcp(absl::flat_hash_map<TrafficLabels, TcpCounts>& delta, size_t max_series) {
    uint64_t over_limit = 0;
    for (auto it = delta.begin(); it != delta.end();) {
      const auto& [labels, counts] = *it;
      auto found = tcp.find(labels);
      if (found == tcp.end()) {
        if (series() >= max_series) {
          ++over_limit;
          delta.erase(it++);
          continue;
        }
        tcp.emplace(labels, counts);
        ++it;
        continue;
      }
      TcpCounts& into = found->second;
      into.read_bytes += counts.read_bytes;
      into.write_bytes += counts.write_bytes;
      // Identities carry the reporting node, so one key has one reporter: a second delta
      // for the same second (the agent's timer ran twice in it) holds the newer gauge.
      into.open_now = counts.open_now;
      ++it;
    }
    return over_limit;
  }
};

Store::Store(StoreOptions options)
    : options_(options), slots_(new Slot[static_cast<size_t>(options.retention_seconds)]) {
  for (size_t level = 0; level < kRollupSpans.size(); ++level) {
    rollups_[level].reset(new Slot[RollupSlots(level)]);
  }
  // External holds id 0 for good, as in the agents' tables, so that a Service id of 0 means
  // "no Service" (External is never one).
  identities_.Intern(metrics::ExternalIdentity(), std::numeric_limits<int64_t>::max());
}

Store::~Store() = default;

Store::Slot& Store::SlotOf(int64_t second) const {
  const int64_t size = options_.retention_seconds;
  return slots_[static_cast<size_t>(((second % size) + size) % size)];
}

size_t Store::RollupSlots(size_t level) const {
  // Three spans more than the retention: a rollup is never taken over while a delta for one
  // of its seconds may still come (up to max_future_seconds ahead).
  return static_cast<size_t>(options_.retention_seconds / kRollupSpans[level] + 3);
}

int64_t Store::SpanStart(size_t level, int64_t second) {
  const int64_t span = kRollupSpans[level];
  return second - ((second % span) + span) % span;
}

Store::Slot& Store::RollupOf(size_t level, int64_t second) const {
  const auto size = static_cast<int64_t>(RollupSlots(level));
  const int64_t index = SpanStart(level, second) / kRollupSpans[level];
  return rollups_[level][static_cast<size_t>(((index % size) + size) % size)];
}

void Store::Drop(Slot& slot, int64_t new_second) {
  const int64_t dropped = slot.second;
  const bool held_series = slot.series() != 0;
  slot.Reset(new_second);
  Account(slot);
  if (dropped == kEmptySlot || !held_series) return;
  for (size_t level = 0; level < kRollupSpans.size(); ++level) {
    Slot& rollup = RollupOf(level, dropped);
    std::lock_guard lock(rollup.mutex);
    if (rollup.second != SpanStart(level, dropped) || rollup.broken) continue;
    rollup.Reset(rollup.second);
    rollup.broken = true;
    Account(rollup);
  }
}

absl::Status Store::Add(const v1::MetricsDelta& delta, int64_t now_seconds) {
  deltas_.fetch_add(1, std::memory_order_relaxed);
  const size_t total_series =
      static_cast<size_t>(delta.responses_size()) + static_cast<size_t>(delta.tcp_size());
  const absl::StatusOr<int64_t> second = SecondOf(delta, now_seconds);
  if (!second.ok()) {
    dropped_too_old_.fetch_add(total_series, std::memory_order_relaxed);
    return second.status();
  }

  std::vector<IdentityId> identity_ids;
  std::vector<RouteId> route_ids;
  const bool identities_fit = identities_.InternAll(
      delta.identities(), [](const v1::Identity& identity) { return wire::FromProto(identity); },
      *second, options_.max_identities, &identity_ids);
  const bool routes_fit = routes_.InternAll(
      delta.routes(), [](const std::string& route) { return route; }, *second, options_.max_routes,
      &route_ids);
  DeltaSeries series = Resolve(delta, identity_ids, route_ids);

  std::optional<uint64_t> over_limit;
  {
    Slot& slot = SlotOf(*second);
    std::lock_guard lock(slot.mutex);
    // A slot taken over from an older second drops that second (and breaks its rollup).
    if (slot.second != kEmptySlot && slot.second < *second) Drop(slot, *second);
    over_limit = slot.Merge(*second, series, options_.max_series_per_second);
    if (over_limit) {
      Account(slot);
      // Under the second's lock, so that the rollups and their second never disagree for
      // longer than this.
      for (size_t level = 0; level < kRollupSpans.size(); ++level) {
        Slot& rollup = RollupOf(level, *second);
        std::lock_guard rollup_lock(rollup.mutex);
        rollup.Roll(SpanStart(level, *second), *second, series);
        Account(rollup);
      }
    }
  }
  if (!over_limit) {
    dropped_too_old_.fetch_add(total_series, std::memory_order_relaxed);
    return absl::OutOfRangeError(
        fmt::format("a delta for {} arrived after its slot was reused; dropped", *second));
  }
  series_.fetch_add(total_series - series.invalid - *over_limit, std::memory_order_relaxed);
  dropped_invalid_.fetch_add(series.invalid, std::memory_order_relaxed);
  dropped_over_limit_.fetch_add(*over_limit, std::memory_order_relaxed);
  return AddOutcome(options_, *second, identities_fit && routes_fit, series.invalid, *over_limit);
}

absl::StatusOr<int64_t> Store::SecondOf(const v1::MetricsDelta& delta, int64_t now_seconds) {
  const int64_t second = delta.unix_seconds();
  if (second <= now_seconds - options_.retention_seconds) {
    return absl::OutOfRangeError(
        fmt::format("a delta for {} is older than the retention of {} s (now {}); dropped", second,
                    options_.retention_seconds, now_seconds));
  }
  if (second > now_seconds + options_.max_future_seconds) {
    future_deltas_.fetch_add(1, std::memory_order_relaxed);
    return now_seconds;
  }
  return second;
}

void Store::Scan(int64_t first_second, int64_t last_second, StoreVisitor& visitor) const {
  const int64_t oldest = std::max(first_second, last_second - options_.retention_seconds + 1);
  for (int64_t second = last_second; second >= oldest;) {
    // The longest whole span in the range that ends here is read from its rollup, when it has
    // a whole one.
    bool rolled = false;
    for (size_t level = 0; level < kRollupSpans.size() && !rolled; ++level) {
      const int64_t start = SpanStart(level, second);
      if (second == start + kRollupSpans[level] - 1 && start >= oldest &&
          Visit(RollupOf(level, start), start, visitor)) {
        second = start - 1;
        rolled = true;
      }
    }
    if (rolled) continue;
    Visit(SlotOf(second), second, visitor);
    --second;
  }
}

bool Store::Visit(const Slot& slot, int64_t second, StoreVisitor& visitor) {
  std::lock_guard lock(slot.mutex);
  if (slot.second != second || slot.broken) return false;
  for (const auto& [labels, counts] : slot.responses) visitor.Response(second, labels, counts);
  for (const auto& [labels, counts] : slot.tcp) visitor.Tcp(second, labels, counts);
  return true;
}

std::optional<v1::MetricsDelta> Store::ExportSecond(int64_t second) const {
  v1::MetricsDelta delta;
  delta.set_unix_seconds(second);
  // The delta's own tables: index by the store's id, filled as the series name them.
  absl::flat_hash_map<IdentityId, uint32_t> identity_index;
  absl::flat_hash_map<RouteId, uint32_t> route_index;
  const auto identity = [&](IdentityId id) {
    const auto [it, added] = identity_index.try_emplace(id, delta.identities_size());
    if (added) {
      *delta.add_identities() = wire::ToProto(identities_.Get(id).value_or(metrics::Identity{}));
    }
    return it->second;
  };
  const auto traffic = [&](const TrafficLabels& labels, v1::TrafficKey* key) {
    key->set_source(identity(labels.source));
    key->set_destination(identity(labels.destination));
    key->set_direction(wire::ToProto(labels.direction));
    if (labels.service != kNoService) key->set_service(identity(labels.service));
  };
  const Slot& slot = SlotOf(second);
  std::lock_guard lock(slot.mutex);
  if (slot.second != second) return std::nullopt;
  for (const auto& [labels, counts] : slot.responses) {
    v1::ResponseSeries& series = *delta.add_responses();
    traffic(labels.traffic, series.mutable_traffic());
    const auto [route, added] = route_index.try_emplace(labels.route, delta.routes_size());
    if (added) delta.add_routes(routes_.Get(labels.route).value_or(""));
    series.set_route(route->second);
    series.set_status_code(labels.status_code);
    series.set_grpc_status(labels.grpc_status);
    series.set_failure(labels.failure);
    series.set_responses(counts.responses);
    *series.mutable_latency() =
        wire::ToProto(metrics::SparseHistogram{.buckets = counts.latency.Unpack()});
  }
  for (const auto& [labels, counts] : slot.tcp) {
    v1::TcpSeries& series = *delta.add_tcp();
    traffic(labels, series.mutable_traffic());
    series.set_read_bytes(counts.read_bytes);
    series.set_write_bytes(counts.write_bytes);
    series.set_open_now(counts.open_now);
  }
  return delta;
}

void Store::Account(Slot& slot) {
  const size_t bytes = slot.MemoryBytes();
  if (bytes >= slot.bytes) {
    memory_bytes_.fetch_add(bytes - slot.bytes, std::memory_order_relaxed);
  } else {
    memory_bytes_.fetch_sub(slot.bytes - bytes, std::memory_order_relaxed);
  }
  slot.bytes = bytes;
}

void Store::Expire(int64_t now_seconds) {
  const int64_t oldest_kept = now_seconds - options_.retention_seconds + 1;
  for (int i = 0; i < options_.retention_seconds; ++i) {
    Slot& slot = slots_[static_cast<size_t>(i)];
    std::lock_guard lock(slot.mutex);
    if (slot.second != kEmptySlot && slot.second < oldest_kept) Drop(slot, kEmptySlot);
  }
  // Over budget: the oldest seconds go first, but never the newest two, which agents are
  // still writing.
  for (int64_t second = oldest_kept;
       second < now_seconds - 1 &&
       memory_bytes_.load(std::memory_order_relaxed) > options_.max_memory_bytes;
       ++second) {
    Slot& slot = SlotOf(second);
    std::lock_guard lock(slot.mutex);
    if (slot.second != second) continue;
    Drop(slot, kEmptySlot);
    evicted_for_memory_.fetch_add(1, std::memory_order_relaxed);
  }
  identities_.ForgetUnusedBefore(oldest_kept - kForgetMarginSeconds);
  routes_.ForgetUnusedBefore(oldest_kept - kForgetMarginSeconds);
}

Store::Stats Store::stats() const {
  Stats stats;
  stats.deltas = deltas_.load(std::memory_order_relaxed);
  stats.series = series_.load(std::memory_order_relaxed);
  stats.dropped_too_old = dropped_too_old_.load(std::memory_order_relaxed);
  stats.dropped_invalid = dropped_invalid_.load(std::memory_order_relaxed);
  stats.dropped_over_limit = dropped_over_limit_.load(std::memory_order_relaxed);
  stats.future_deltas = future_deltas_.load(std::memory_order_relaxed);
  stats.evicted_for_memory = evicted_for_memory_.load(std::memory_order_relaxed);
  stats.memory_bytes = memory_bytes_.load(std::memory_order_relaxed);
  stats.identities = identities_.size() - 1;  // External, held for good, aside
  stats.routes = routes_.size();
  return stats;
}

}  // namespace nodemesh::aggregator
