#include "agent/metrics/export_format.h"

#include <fmt/format.h>

#include <algorithm>

namespace nodemesh::metrics {
namespace {

// Every label of the traffic, request and response series, in exposition order.
constexpr std::string_view kSeriesLabels[] = {"direction",
                                              "src_namespace",
                                              "src_pod",
                                              "src_owner_kind",
                                              "src_owner_name",
                                              "src_service_account",
                                              "dst_namespace",
                                              "dst_pod",
                                              "dst_owner_kind",
                                              "dst_owner_name",
                                              "dst_service_account",
                                              "dst_service_namespace",
                                              "dst_service",
                                              "route",
                                              "status_code",
                                              "grpc_status",
                                              "classification"};

}  // namespace

std::optional<std::span<const double>> LatencyBoundsNamed(std::string_view name) {
  if (name == "fine") return kFineLatencyBoundsSeconds;
  if (name == "coarse") return kCoarseLatencyBoundsSeconds;
  return std::nullopt;
}

std::string WhyLabelIsKept(std::string_view label) {
  if (label == "direction") {
    return "direction is kept: a call between two meshed pods is counted at both ends, and "
           "queries count one side of it; summed, every such call would count twice";
  }
  if (label == "classification") {
    return "classification is kept: success rates are read from it";
  }
  for (const char* end : {"src_", "dst_"}) {
    for (const char* part : {"namespace", "owner_kind", "owner_name"}) {
      if (label == fmt::format("{}{}", end, part)) {
        return fmt::format(
            "{} is kept: it names the workload of a series, and without it two workloads would "
            "be summed into one series no query can tell apart",
            label);
      }
    }
  }
  if (label == "dst_service_namespace") {
    return "dst_service_namespace is kept while dst_service is: two Services of one name "
           "would share a series; drop dst_service, which takes it along";
  }
  if (std::find(std::begin(kSeriesLabels), std::end(kSeriesLabels), label) ==
      std::end(kSeriesLabels)) {
    return fmt::format(
        "no series has a label {}; those that may be dropped are src_pod, dst_pod, "
        "src_service_account, dst_service_account, dst_service, route, status_code and "
        "grpc_status",
        label);
  }
  return "";
}

std::span<const double> ExportFormat::latency_bounds() const {
  return LatencyBoundsNamed(latency_buckets).value_or(kFineLatencyBoundsSeconds);
}

bool ExportFormat::Keeps(std::string_view label) const {
  if (label == "dst_service_namespace") label = "dst_service";
  return std::find(dropped_labels.begin(), dropped_labels.end(), label) == dropped_labels.end();
}

}  // namespace nodemesh::metrics
