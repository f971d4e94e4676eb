#include "agent/metrics/shard.h"

namespace nodemesh::metrics {
namespace {

template <typename Count>
SparseHistogram Take(BasicHistogram<Count>& histogram) {
  SparseHistogram out{histogram.NonZero(), histogram.sum_ns()};
  histogram.Clear();
  return out;
}

// Erases entries idle for `evict_after` collections; `busy` says whether an entry had
// activity this time (and resets it).
template <typename Map, typename Busy>
void Age(Map& map, int evict_after, Busy busy) {
  for (auto it = map.begin(); it != map.end();) {
    auto& series = it->second;
    series.idle_collections = busy(series) ? 0 : series.idle_collections + 1;
    if (series.idle_collections > evict_after) {
      map.erase(it++);
    } else {
      ++it;
    }
  }
}

}  // namespace

void Shard::AddReferencedIdentities(absl::flat_hash_set<uint32_t>* ids) const {
  for (const auto& [key, series] : requests_) AddIdentitiesOf(key.traffic, ids);
  for (const auto& [key, series] : responses_) AddIdentitiesOf(key.request.traffic, ids);
  for (const auto& [key, series] : tcp_) AddIdentitiesOf(key, ids);
}

void Shard::AddReferencedRoutes(absl::flat_hash_set<uint32_t>* ids) const {
  for (const auto& [key, series] : requests_) ids->insert(key.route);
  for (const auto& [key, series] : responses_) ids->insert(key.request.route);
}

void Shard::Collect(Delta* out, int evict_after) {
  for (auto& [key, series] : requests_) {
    if (series.requests == 0) continue;
    out->requests.push_back({key, series.requests});
  }
  Age(requests_, evict_after, [](RequestSeries& s) { return std::exchange(s.requests, 0) != 0; });

  for (auto& [key, series] : responses_) {
    if (series.responses == 0) continue;
    out->responses.push_back(
        {key, series.responses, Take(series.latency), Take(series.first_byte)});
  }
  Age(responses_, evict_after,
      [](ResponseSeries& s) { return std::exchange(s.responses, 0) != 0; });

  for (auto& [key, series] : tcp_) {
    const bool active = series.opened || series.closed || series.read_bytes || series.write_bytes;
    if (!active && series.open_now == 0) continue;
    out->tcp.push_back({key, series.opened, series.closed, series.closed_failed, series.open_now,
                        series.read_bytes, series.write_bytes, Take(series.duration)});
  }
  Age(tcp_, evict_after, [](TcpSeries& s) {
    const bool busy = s.opened || s.closed || s.read_bytes || s.write_bytes || s.open_now != 0;
    s.opened = s.closed = s.closed_failed = s.read_bytes = s.write_bytes = 0;
    return busy;
  });
}

}  // namespace nodemesh::metrics
