#include "aggregator/reports.h"

#include <fmt/format.h>

namespace nodemesh::aggregator {
namespace {

// The pod an agent of `node` may have intercepted: one of its own, or no pod (an address
// outside the inventory, which names no node).
bool MayIntercept(const std::string& node, const v1::Identity& identity) {
  return identity.pod().empty() || identity.node().empty() || identity.node() == node;
}

absl::Status CheckKey(const std::string& node, const v1::MetricsDelta& delta,
                      const v1::TrafficKey& key) {
  const uint32_t intercepted = key.direction() == v1::INBOUND ? key.destination() : key.source();
  if (intercepted >= static_cast<uint32_t>(delta.identities_size())) return absl::OkStatus();
  const v1::Identity& identity = delta.identities(static_cast<int>(intercepted));
  if (MayIntercept(node, identity)) return absl::OkStatus();
  return absl::PermissionDeniedError(
      fmt::format("the agent of node {} reported traffic it intercepted at {}/{}, a pod of node {}",
                  node, identity.namespace_(), identity.pod(), identity.node()));
}

}  // namespace

absl::Status CheckDeltaOfNode(const std::string& node, const v1::MetricsDelta& delta) {
  // Out-of-range indexes are the store's to count as invalid series.
  for (const v1::RequestSeries& series : delta.requests()) {
    if (absl::Status status = CheckKey(node, delta, series.traffic()); !status.ok()) return status;
  }
  for (const v1::ResponseSeries& series : delta.responses()) {
    if (absl::Status status = CheckKey(node, delta, series.traffic()); !status.ok()) return status;
  }
  for (const v1::TcpSeries& series : delta.tcp()) {
    if (absl::Status status = CheckKey(node, delta, series.traffic()); !status.ok()) return status;
  }
  return absl::OkStatus();
}

absl::Status CheckPodsOfNode(const std::string& node,
                             const google::protobuf::RepeatedPtrField<v1::Pod>& pods) {
  for (const v1::Pod& pod : pods) {
    const v1::Identity& identity = pod.identity();
    if (identity.node().empty() || identity.node() == node) continue;
    return absl::PermissionDeniedError(
        fmt::format("the agent of node {} listed {}/{}, a pod of node {}", node,
                    identity.namespace_(), identity.pod(), identity.node()));
  }
  return absl::OkStatus();
}

}  // namespace nodemesh::aggregator
