#include "aggregator/traffic_source.h"

#include <algorithm>
#include <cmath>
#include <iterator>

namespace nodemesh::aggregator {
namespace {

// Hands the Store's per-second series on as the window's series. Routes always come along:
// the visitor drops them when it did not ask.
class SecondsToSeries final : public StoreVisitor {
 public:
  explicit SecondsToSeries(TrafficVisitor& visitor) : visitor_(visitor) {}
  void Response(int64_t, const ResponseLabels& labels, const ResponseCounts& counts) override {
    visitor_.Response(
        labels, ResponseFigures{.responses = counts.responses, .exact_latency = &counts.latency});
  }
  void Tcp(int64_t, const TrafficLabels& labels, const TcpCounts& counts) override {
    visitor_.Tcp(labels, counts);
  }

 private:
  TrafficVisitor& visitor_;
};

}  // namespace

void LatencyBuckets::Merge(const LatencyBuckets& other) {
  for (const auto& [bound, count] : other.cumulative_) cumulative_[bound] += count;
}

int64_t LatencyBuckets::QuantileNs(double q) const {
  if (cumulative_.size() < 2 || !std::isinf(std::prev(cumulative_.end())->first)) return 0;
  const double observations = std::prev(cumulative_.end())->second;
  if (observations <= 0) return 0;
  const double rank = q * observations;
  // Counts computed apart per bucket may dip below a lower bucket's: as histogram_quantile,
  // read them as never falling.
  double below = 0, lower_bound = 0;
  for (auto it = cumulative_.begin(); it != cumulative_.end(); ++it) {
    const double count = std::max(it->second, below);
    if (count >= rank) {
      if (std::isinf(it->first)) return static_cast<int64_t>(lower_bound * 1e9);
      const double in_bucket = count - below;
      const double fraction = in_bucket <= 0 ? 1.0 : (rank - below) / in_bucket;
      return static_cast<int64_t>((lower_bound + (it->first - lower_bound) * fraction) * 1e9);
    }
    below = count;
    lower_bound = it->first;
  }
  return static_cast<int64_t>(lower_bound * 1e9);
}

absl::Status MemorySource::Scan(const Window& window, bool, TrafficVisitor& visitor) {
  SecondsToSeries adapter(visitor);
  store_.Scan(window.first_second, window.last_second, adapter);
  return absl::OkStatus();
}

}  // namespace nodemesh::aggregator
