// What an agent may report: only its own node. An agent sees the connections of its own
// node's pods, so in each series of its deltas the end it intercepted (the source of an
// outbound series, the destination of an inbound one) is one of that node's pods; and it
// lists only that node's pods. A report naming another node's pods is refused whole: with
// node identities authenticated, this is what keeps one node from writing over another's.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "nodemesh/v1/nodemesh.pb.h"

namespace nodemesh::aggregator {

// PermissionDenied naming the first series whose intercepted end is a pod of another node.
absl::Status CheckDeltaOfNode(const std::string& node, const v1::MetricsDelta& delta);
// PermissionDenied naming the first pod of another node (a pod's node may be left empty:
// the reporting node's).
absl::Status CheckPodsOfNode(const std::string& node,
                             const google::protobuf::RepeatedPtrField<v1::Pod>& pods);

}  // namespace nodemesh::aggregator
