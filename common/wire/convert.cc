#include "common/wire/convert.h"

#include <algorithm>

#include "absl/container/flat_hash_map.h"
#include "common/metrics/histogram.h"

namespace nodemesh::wire {

v1::Identity ToProto(const metrics::Identity& identity) {
  v1::Identity out;
  out.set_namespace_(identity.namespace_name);
  out.set_pod(identity.pod);
  out.set_owner_kind(identity.owner_kind);
  out.set_owner_name(identity.owner_name);
  out.set_service_account(identity.service_account);
  out.set_node(identity.node);
  return out;
}

metrics::Identity FromProto(const v1::Identity& identity) {
  return metrics::Identity{identity.namespace_(),      identity.pod(),
                           identity.owner_kind(),      identity.owner_name(),
                           identity.service_account(), identity.node()};
}

v1::Direction ToProto(metrics::Direction direction) {
  return direction == metrics::Direction::kOutbound ? v1::OUTBOUND : v1::INBOUND;
}

std::optional<metrics::Direction> FromProto(v1::Direction direction) {
  switch (direction) {
    case v1::OUTBOUND:
      return metrics::Direction::kOutbound;
    case v1::INBOUND:
      return metrics::Direction::kInbound;
    default:
      return std::nullopt;
  }
}

v1::TapEnd::Reason ToProto(parsers::EndReason reason) {
  switch (reason) {
    case parsers::EndReason::kComplete:
      return v1::TapEnd::COMPLETE;
    case parsers::EndReason::kReset:
      return v1::TapEnd::RESET;
    case parsers::EndReason::kRefused:
      return v1::TapEnd::REFUSED;
    case parsers::EndReason::kAborted:
      return v1::TapEnd::ABORTED;
  }
  return v1::TapEnd::REASON_UNSPECIFIED;
}

v1::Histogram ToProto(const metrics::SparseHistogram& histogram) {
  v1::Histogram out;
  for (const auto& [bucket, count] : histogram.buckets) {
    out.add_buckets(bucket);
    out.add_counts(count);
  }
  out.set_sum_ns(histogram.sum_ns);
  return out;
}

metrics::SparseBuckets FromProto(const v1::Histogram& histogram) {
  metrics::SparseBuckets buckets;
  const int n = std::min(histogram.buckets_size(), histogram.counts_size());
  buckets.reserve(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    const uint32_t bucket = histogram.buckets(i);
    if (bucket >= static_cast<uint32_t>(metrics::Histogram::kBuckets)) continue;
    buckets.emplace_back(static_cast<uint16_t>(bucket), histogram.counts(i));
  }
  return buckets;
}

v1::MetricsDelta ToProto(const metrics::Delta& delta,
                         absl::FunctionRef<metrics::Identity(uint32_t)> identity,
                         absl::FunctionRef<std::string(uint32_t)> route, int64_t unix_seconds) {
  v1::MetricsDelta out;
  out.set_unix_seconds(unix_seconds);
  absl::flat_hash_map<uint32_t, uint32_t> identity_index, route_index;
  const auto identity_of = [&](uint32_t id) {
    auto [it, inserted] = identity_index.try_emplace(id, out.identities_size());
    if (inserted) *out.add_identities() = ToProto(identity(id));
    return it->second;
  };
  const auto route_of = [&](uint32_t id) {
    auto [it, inserted] = route_index.try_emplace(id, out.routes_size());
    if (inserted) out.add_routes(route(id));
    return it->second;
  };
  const auto traffic = [&](const metrics::TrafficKey& key, v1::TrafficKey* to) {
    to->set_source(identity_of(key.source));
    to->set_destination(identity_of(key.destination));
    to->set_direction(ToProto(key.direction));
    // 0 is External's id, never a Service: no Service dialled, nothing sent.
    if (key.service != 0) to->set_service(identity_of(key.service));
  };
  for (const metrics::RequestSample& sample : delta.requests) {
    v1::RequestSeries& series = *out.add_requests();
    traffic(sample.key.traffic, series.mutable_traffic());
    series.set_route(route_of(sample.key.route));
    series.set_requests(sample.requests);
  }
  for (const metrics::ResponseSample& sample : delta.responses) {
    v1::ResponseSeries& series = *out.add_responses();
    traffic(sample.key.request.traffic, series.mutable_traffic());
    series.set_route(route_of(sample.key.request.route));
    series.set_status_code(sample.key.status);
    series.set_grpc_status(sample.key.grpc_status);
    series.set_failure(sample.key.failure);
    series.set_responses(sample.responses);
    *series.mutable_latency() = ToProto(sample.latency);
    *series.mutable_first_byte() = ToProto(sample.first_byte);
  }
  for (const metrics::TcpSample& sample : delta.tcp) {
    v1::TcpSeries& series = *out.add_tcp();
    traffic(sample.key, series.mutable_traffic());
    series.set_opened(sample.opened);
    series.set_closed(sample.closed);
    series.set_closed_failed(sample.closed_failed);
    series.set_open_now(sample.open_now);
    series.set_read_bytes(sample.read_bytes);
    series.set_write_bytes(sample.write_bytes);
    *series.mutable_duration() = ToProto(sample.duration);
  }
  return out;
}

Workload WorkloadOf(const v1::Identity& identity) {
  return Workload{identity.namespace_(), identity.pod(), identity.owner_kind(),
                  identity.owner_name()};
}

Workload WorkloadOf(const metrics::Identity& identity) {
  return Workload{identity.namespace_name, identity.pod, identity.owner_kind, identity.owner_name};
}

std::string_view PodStateName(v1::PodState state) {
  switch (state) {
    case v1::UNMESHED:
      return "unmeshed";
    case v1::ENROLLED:
      return "enrolled";
    case v1::PENDING:
      return "pending";
    case v1::FAILED:
      return "failed";
    default:
      return "unknown";
  }
}

}  // namespace nodemesh::wire
