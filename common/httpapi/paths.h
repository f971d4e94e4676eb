// The nodemesh.io/v1alpha1 API's calls as the Kubernetes API server's aggregation layer
// forwards them: a GET of a path under /apis/nodemesh.io/v1alpha1 with a query, read into the
// request message of the same call of the gRPC API (proto/nodemesh/v1/nodemesh.proto), and
// written back from one. Pure functions; the aggregator parses, meshctl writes.
//
//   GET [/namespaces/NS]/stats/TYPE        StatSummaryRequest  selector.namespace, .type
//   GET [/namespaces/NS]/edges/TYPE        EdgesRequest        selector.namespace, .type
//   GET [/namespaces/NS]/routes/TYPE       TopRoutesRequest    selector.namespace, .type
//   GET [/namespaces/NS]/inventory/pods    ListPodsRequest     namespace
//   GET [/namespaces/NS]/taps?watch=true   TapRequestSpec      target.namespace
//   GET /nodes/NODE/admin/PATH[?QUERY]     NodeAdminRequest    node, target "/PATH[?QUERY]"
//   GET [/namespaces/NS]/views/KIND        ViewRequest         namespaces[0], kind
//
// A view's KIND is its Kind in lower case (namespaces, workloads, graph, workload); its path's
// namespace is the first of `namespaces`, the others are parameters (namespaces=b), and
// filter.around is placed as a `from` is. The namespaces view is of every namespace, so it has
// no /namespaces/NS.
//
// No /namespaces/NS prefix: every namespace. Every other field of the message is a query
// parameter named by its field path, in the JSON or the proto spelling (windowSeconds or
// window_seconds, from.type, maxEvents); a repeated field by repeating it. A `from` or `to`
// given without a namespace is in the path's namespace, and a resource of type namespace is
// in the namespace it names, so that what a call reads is always where its path says.
#pragma once

#include <string>
#include <string_view>
#include <variant>

#include "absl/status/statusor.h"
#include "nodemesh/v1/nodemesh.pb.h"

namespace nodemesh::httpapi {

inline constexpr std::string_view kGroup = "nodemesh.io";
inline constexpr std::string_view kVersion = "v1alpha1";
inline constexpr std::string_view kApiPath = "/apis/nodemesh.io/v1alpha1";

// One call of the API: which one is the alternative held.
using ApiRequest = std::variant<v1::StatSummaryRequest, v1::EdgesRequest, v1::TopRoutesRequest,
                                v1::ListPodsRequest, v1::TapRequestSpec, v1::NodeAdminRequest,
                                v1::ViewRequest>;

// A view's KIND as its path says it: "graph" for GRAPH; empty for KIND_UNSPECIFIED.
std::string ViewKindName(v1::ViewRequest::Kind kind);

// `path` as sent (percent-encoded, starting with kApiPath) and `raw_query` as sent (without
// the '?'). NOT_FOUND for a path that is no call, listing the calls' paths; INVALID_ARGUMENT
// naming a parameter that is unknown (listing the call's), malformed, given twice with two
// values, or at odds with the path.
absl::StatusOr<ApiRequest> ParseApiRequest(std::string_view path, std::string_view raw_query);

// The path and query, under kApiPath, that ParseApiRequest reads as `request`: fields at their
// zero value are left out.
std::string ApiRequestTarget(const ApiRequest& request);

}  // namespace nodemesh::httpapi
