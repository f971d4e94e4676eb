// How /metrics presents the registry's series, within what the operator allows Prometheus
// to store: the latency bounds its histograms are exported on, and the labels it leaves out.
// Series that differ only in labels left out are exported as one, their values summed (for
// histograms, bucket by bucket). The registry keeps every series as it is either way: the
// aggregator's stream and the admin API are unchanged.
//
// Plain data, set once from the command line and read by the /metrics thread.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace nodemesh::metrics {

// Bucket bounds in seconds. "fine", the default: Linkerd's, plus sub-millisecond (28).
inline constexpr double kFineLatencyBoundsSeconds[] = {
    0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.1,
    0.2,    0.3,    0.4,    0.5,   1,     2,     3,     4,     5,    10,   20,   30,   40,   50};
// "coarse": the Prometheus clients' default buckets (11), for a store that cannot afford
// the fine ones; percentiles from them are interpolated within wider buckets.
inline constexpr double kCoarseLatencyBoundsSeconds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                         0.5,   1,    2.5,   5,    10};

// The bounds of a named set ("fine", "coarse"); nullopt for any other name.
std::optional<std::span<const double>> LatencyBoundsNamed(std::string_view name);

// Why `label` may not be left out of /metrics (what it would break), or an empty string if
// it may. Kept: direction (the counting rule), classification (success rates), and each
// end's namespace, owner kind and owner name (without one, two workloads share a series).
// dst_service_namespace goes only with dst_service, which takes it along.
std::string WhyLabelIsKept(std::string_view label);

struct ExportFormat {
  std::string latency_buckets = "fine";  // a name LatencyBoundsNamed knows
  // Labels left out; each one WhyLabelIsKept allows.
  std::vector<std::string> dropped_labels;

  std::span<const double> latency_bounds() const;
  bool Keeps(std::string_view label) const;
};

}  // namespace nodemesh::metrics
