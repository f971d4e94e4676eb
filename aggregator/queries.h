// The client API's answers, computed from the store and the cluster's pods: StatSummary,
// Edges, TopRoutes, ListPods and the View composed of them. Pure functions of their inputs
// (no locks of their own), so they are tested without a server.
//
// Counting rule shared by all of them. A request between two meshed pods is reported twice:
// OUTBOUND by the caller's agent and INBOUND by the server's. Each query names the side that
// answers it (the destination's for stat and routes, the caller's for --from/--to and edges),
// and counts a pair of identities from the other side only when the named side reported
// nothing for that pair in the window: callers that are not meshed (or external) are seen
// only inbound, servers that are not meshed only outbound, and nothing is counted twice.
//
// Windows: a window of W seconds at time `now` covers the W complete seconds before the
// current one, [now - W, now - 1]; rates divide by W.
//
// Sources (traffic_source.h): windows the memory holds (its retention, an hour) are answered
// from it, longer ones from the Prometheus-compatible store when one is configured; a request
// may name either. The same code groups, classifies and counts what either hands out, and the
// answer names the source that gave it.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "aggregator/cluster.h"
#include "aggregator/prometheus_source.h"
#include "aggregator/store.h"
#include "aggregator/traffic_source.h"
#include "common/resource/resource.h"
#include "nodemesh/v1/nodemesh.pb.h"

namespace nodemesh::aggregator {

// What every query reads: the store, and the nodes as of one instant.
struct QueryContext {
  const Store& store;
  std::vector<v1::NodeStatus> stale_nodes;
  int64_t now_seconds = 0;
  // The first second this aggregator holds whole: the one it started in. Agents keep every
  // delta until it is acknowledged, so the seconds since the previous aggregator (if any)
  // died reach this one whole; those it acknowledged died with it. So a window reaching
  // further back is cut here, and its rates are over the seconds it holds rather than
  // diluted by seconds it cannot know.
  int64_t history_start_second = 0;
  // The store that answers longer windows; null without one (--prometheus).
  const PrometheusClient* prometheus = nullptr;
};

// The `seconds` whole seconds before `now_seconds`, but none before `history_start_second`
// (`seconds` then says how many are left, possibly 0).
Window WindowEndingAt(int64_t now_seconds, int64_t seconds, int64_t history_start_second = 0);
// Per second over the window: 0 for a window of no seconds.
double PerSecond(uint64_t count, const Window& window);

// 0 gives the default; anything else outside 10..3600 (10 s to 31 days with a store) is
// INVALID_ARGUMENT.
absl::StatusOr<int64_t> ValidateWindow(int64_t window_seconds, bool store_configured = false);

// A request's resource as a selector. `field` names it in errors ("selector", "from").
absl::StatusOr<Selector> ToSelector(const v1::Resource& resource, std::string_view field);
// A Service (type "service", see common/resource) as a selector of its namespace and name.
absl::StatusOr<Selector> ServiceSelector(const v1::Resource& resource, std::string_view field);
// Whether an optional resource field (from, to) was given at all.
bool IsSet(const v1::Resource& resource);
v1::Resource ToProto(ResourceType type, const ResourceKey& key);

// Rows for the selector's resources. Without from/to: every resource of the selector that
// has pods or inbound traffic, from the INBOUND view. With `from`: the selector's resources
// that `from` called, from the OUTBOUND view. With `to`: the selector's resources that called
// `to` (a resource, or a Service they dialled), from the OUTBOUND view. A selector of type
// "service": a row per Service with the traffic its callers dialled to it (all of them, or
// `from`'s), from the OUTBOUND view, the only one that knows the Service; no `to`.
// `pods`: the cluster's pods, for the MESHED column and rows of resources without traffic.
absl::StatusOr<v1::StatSummaryResponse> StatSummary(const QueryContext& context,
                                                    const std::vector<PodEntry>& pods,
                                                    const v1::StatSummaryRequest& request);

// Who calls whom, per pair of resources of the selector's type, for pairs with either end in
// the selector. A caller or callee that is no resource of the type appears as its pod
// (type "pod"), or as type "external", name "external" for peers outside the inventory.
// A selector of type "service": the Services it matches as nodes between their callers and
// the resources behind them (caller -> Service, Service -> the owner of the pod the node's
// NAT chose; each caller and backend as its owner, deployment, statefulset or daemonset,
// else its pod), from the OUTBOUND view, the only one that knows the Service.
absl::StatusOr<v1::EdgesResponse> Edges(const QueryContext& context,
                                        const v1::EdgesRequest& request);

// Per route and destination resource, busiest first. A selector of type "service": the
// routes of the requests dialled to the Services it matches, from the OUTBOUND view.
absl::StatusOr<v1::TopRoutesResponse> TopRoutes(const QueryContext& context,
                                                const v1::TopRoutesRequest& request);

// The known pods (in `namespace_name`, or all when empty) and every node's status.
v1::ListPodsResponse ListPods(const std::vector<PodEntry>& pods,
                              const std::vector<v1::NodeStatus>& nodes,
                              const v1::ListPodsRequest& request);

// A whole view (see ViewRequest), composed of the queries above over the one context, so
// that its parts agree with each other and with the same calls made apart.
//   NAMESPACES: StatSummary of every namespace.
//   WORKLOADS: StatSummary of `type` in each namespace, the rows together (with type
//     service, the Services their callers dialled).
//   GRAPH: Edges of `type` in each namespace (an edge between two of them once), and a node
//     per resource of the namespaces' StatSummary and per end of an edge; the filter keeps
//     edges (and the nodes at their ends) and hides namespaces and external peers. Past its
//     thresholds after the filter the graph is withheld: only GraphSize is answered, with the
//     size under each filter, so that the caller chooses one. With type service, the Services
//     of the namespaces between their callers and backends (see Edges), whose rows are their
//     own resources' StatSummary rows.
//   WORKLOAD: StatSummary, Edges and TopRoutes of the resource, and its pods (a Service: no
//     pods).
// The parts carry no stale nodes: the view names them once.
absl::StatusOr<v1::ViewResponse> View(const QueryContext& context,
                                      const std::vector<PodEntry>& pods,
                                      const v1::ViewRequest& request);

}  // namespace nodemesh::aggregator
