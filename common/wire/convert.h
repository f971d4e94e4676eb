// The metric model (common/metrics) in the API's wire form (proto/, nodemesh.v1), and back:
// one conversion for the agent that sends and the aggregator that receives.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/functional/function_ref.h"
#include "common/metrics/identity.h"
#include "common/metrics/sample.h"
#include "common/resource/resource.h"
#include "nodemesh/v1/nodemesh.pb.h"
#include "parsers/end_reason.h"

namespace nodemesh::wire {

v1::Identity ToProto(const metrics::Identity& identity);
metrics::Identity FromProto(const v1::Identity& identity);

v1::Direction ToProto(metrics::Direction direction);
// nullopt for a direction the API leaves unset.
std::optional<metrics::Direction> FromProto(v1::Direction direction);

v1::TapEnd::Reason ToProto(parsers::EndReason reason);

v1::Histogram ToProto(const metrics::SparseHistogram& histogram);
// The buckets of the wire form; buckets outside the histogram layout are dropped.
metrics::SparseBuckets FromProto(const v1::Histogram& histogram);

// One worker delta in wire form. Its keys hold interned ids: `identity` and `route` say what
// they stand for. Each identity and route is sent once per delta, series refer to them by
// index.
v1::MetricsDelta ToProto(const metrics::Delta& delta,
                         absl::FunctionRef<metrics::Identity(uint32_t)> identity,
                         absl::FunctionRef<std::string(uint32_t)> route, int64_t unix_seconds);

// The workload an identity belongs to, for resource membership (common/resource). Views
// into `identity`, which must outlive the result.
Workload WorkloadOf(const v1::Identity& identity);
Workload WorkloadOf(const metrics::Identity& identity);

// "unmeshed", "enrolled", "pending", "failed": the word the admin API and meshctl use.
std::string_view PodStateName(v1::PodState state);

}  // namespace nodemesh::wire
