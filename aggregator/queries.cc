#include "aggregator/queries.h"

#include <fmt/format.h>

#include <algorithm>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <tuple>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/container/node_hash_map.h"
#include "common/metrics/histogram.h"
#include "common/wire/convert.h"

namespace nodemesh::aggregator {
namespace {

using wire::WorkloadOf;

struct PairId {
  IdentityId source = 0;
  IdentityId destination = 0;
  RouteId route = 0;                // 0 unless grouping by route
  IdentityId service = kNoService;  // the Service dialled; kNoService for a pair as reported

  bool operator==(const PairId&) const = default;
  template <typename H>
  friend H AbslHashValue(H h, const PairId& p) {
    return H::combine(std::move(h), p.source, p.destination, p.route, p.service);
  }
};

// Everything counted for one row, edge or route.
struct Totals {
  uint64_t responses = 0;
  uint64_t successes = 0;
  // Latencies as the source has them: exact from memory, the export's buckets from a store.
  std::unique_ptr<metrics::Histogram> latency;  // 8 KiB: only for groups with responses
  LatencyBuckets latency_buckets;
  absl::flat_hash_set<TrafficLabels> gauges_seen;
  int64_t open_connections = 0;
  uint64_t read_bytes = 0;
  uint64_t write_bytes = 0;
  std::set<std::string> source_accounts;
  std::set<std::string> destination_accounts;

  void AddResponse(const ResponseLabels& labels, const ResponseFigures& figures,
                   metrics::SparseBuckets* scratch) {
    responses += figures.responses;
    if (!labels.failure) successes += figures.responses;
    if (figures.latency_buckets != nullptr) latency_buckets.Merge(*figures.latency_buckets);
    if (figures.exact_latency == nullptr || figures.exact_latency->empty()) return;
    if (!latency) latency = std::make_unique<metrics::Histogram>();
    figures.exact_latency->AddTo(latency.get(), scratch);
  }
  // Scans run newest second first, so the first gauge of a series is its latest.
  void AddTcp(const TrafficLabels& labels, const TcpCounts& counts) {
    read_bytes += counts.read_bytes;
    write_bytes += counts.write_bytes;
    if (gauges_seen.insert(labels).second) open_connections += counts.open_now;
  }
  // Adds the totals of other series (their gauges are of other labels than ours).
  void Merge(const Totals& other) {
    responses += other.responses;
    successes += other.successes;
    if (other.latency) {
      if (!latency) latency = std::make_unique<metrics::Histogram>();
      latency->Merge(*other.latency);
    }
    latency_buckets.Merge(other.latency_buckets);
    gauges_seen.insert(other.gauges_seen.begin(), other.gauges_seen.end());
    open_connections += other.open_connections;
    read_bytes += other.read_bytes;
    write_bytes += other.write_bytes;
  }
};

double SuccessRate(const Totals& totals) {
  return totals.responses == 0 ? 0.0 : double(totals.successes) / double(totals.responses);
}

void FillLatencies(const Totals& totals, v1::Latencies* out) {
  if (totals.latency && !totals.latency->empty()) {
    out->set_p50_ns(totals.latency->Quantile(0.50));
    out->set_p95_ns(totals.latency->Quantile(0.95));
    out->set_p99_ns(totals.latency->Quantile(0.99));
  } else if (!totals.latency_buckets.empty()) {
    out->set_p50_ns(totals.latency_buckets.QuantileNs(0.50));
    out->set_p95_ns(totals.latency_buckets.QuantileNs(0.95));
    out->set_p99_ns(totals.latency_buckets.QuantileNs(0.99));
  }
}

std::string JoinAccounts(const std::set<std::string>& accounts) {
  std::string joined;
  for (const std::string& account : accounts) {
    if (account.empty()) continue;
    if (!joined.empty()) joined += ",";
    joined += account;
  }
  return joined;
}

// The series the counting rule admits, grouped by what `classify` makes of their two ends and
// the Service dialled, if any (nullopt: not part of the answer), and by route when asked. The rule:
// a pair's series from the query's own side count; the other side's count only for pairs the own
// side did not report in the window (an unmeshed peer). One scan: the other side's series are
// totalled apart and merged at the end for the pairs found unreported, so that a second
// arriving between two scans cannot make a pair count twice.
template <typename Key>
class Aggregation : public TrafficVisitor {
 public:
  // `service` is null for series dialled to no Service (inbound ones among them).
  using Classify = std::function<std::optional<Key>(const metrics::Identity& source,
                                                    const metrics::Identity& destination,
                                                    const metrics::Identity* service)>;
  using Groups = std::map<std::pair<Key, RouteId>, Totals>;

  Aggregation(TrafficSource& source, metrics::Direction side, Classify classify, bool by_route)
      : source_(source), side_(side), classify_(std::move(classify)), by_route_(by_route) {}

  absl::StatusOr<Groups> Run(const Window& window) {
    if (absl::Status scanned = source_.Scan(window, by_route_, *this); !scanned.ok()) {
      return scanned;
    }
    for (const auto& [pair, totals] : other_side_) {
      if (reported_.contains(PairId{pair.source, pair.destination})) continue;
      if (Totals* group = GroupOf(pair)) group->Merge(totals);
    }
    return std::move(groups_);
  }

  void Response(const ResponseLabels& labels, const ResponseFigures& figures) override {
    if (Totals* totals = TotalsOf(labels.traffic, by_route_ ? labels.route : 0)) {
      totals->AddResponse(labels, figures, &scratch_);
    }
  }
  void Tcp(const TrafficLabels& labels, const TcpCounts& counts) override {
    if (!by_route_) {
      if (Totals* totals = TotalsOf(labels, 0)) totals->AddTcp(labels, counts);
    } else if (labels.direction == side_) {
      // Routes total no TCP, but an own-side TCP series is still a report of the pair: without
      // it, routes would count the other side's responses where stat and edges do not.
      reported_.insert(PairId{labels.source, labels.destination});
    }
  }

 private:
  // Own side: the series' group, and the pair noted as reported. Other side: its totals
  // held apart until the scan has shown whether the own side reported the pair.
  // A pair is reported whichever Service its caller dialled: the server's side sees none.
  Totals* TotalsOf(const TrafficLabels& labels, RouteId route) {
    const PairId pair{labels.source, labels.destination, route, labels.service};
    if (labels.direction != side_) return &other_side_[pair];
    reported_.insert(PairId{labels.source, labels.destination});
    return GroupOf(pair);
  }

  const metrics::Identity* IdentityOf(IdentityId id) {
    auto [it, inserted] = identities_.try_emplace(id);
    if (inserted) it->second = source_.identity(id);
    return it->second ? &*it->second : nullptr;
  }

  Totals* GroupOf(const PairId& pair) {
    if (const auto cached = groups_of_.find(pair); cached != groups_of_.end()) {
      return cached->second;
    }
    Totals* totals = nullptr;
    const metrics::Identity* source = IdentityOf(pair.source);
    const metrics::Identity* destination = IdentityOf(pair.destination);
    const metrics::Identity* service =
        pair.service == kNoService ? nullptr : IdentityOf(pair.service);
    const bool service_known = pair.service == kNoService || service != nullptr;
    if (source != nullptr && destination != nullptr && service_known) {
      if (std::optional<Key> key = classify_(*source, *destination, service)) {
        totals = &groups_[{std::move(*key), pair.route}];
        totals->source_accounts.insert(source->service_account);
        totals->destination_accounts.insert(destination->service_account);
      }
    }
    groups_of_.emplace(pair, totals);
    return totals;
  }

  TrafficSource& source_;
  const metrics::Direction side_;
  const Classify classify_;
  const bool by_route_;
  absl::flat_hash_set<PairId> reported_;  // route 0, no Service
  absl::node_hash_map<PairId, Totals> other_side_;
  absl::node_hash_map<IdentityId, std::optional<metrics::Identity>> identities_;
  absl::flat_hash_map<PairId, Totals*> groups_of_;
  Groups groups_;
  metrics::SparseBuckets scratch_;
};

// Pods and meshed pods per resource of the selector.
struct PodCounts {
  uint32_t running = 0;
  uint32_t meshed = 0;
};

std::map<ResourceKey, PodCounts> CountPods(const std::vector<PodEntry>& pods,
                                           const Selector& selector) {
  std::map<ResourceKey, PodCounts> counts;
  for (const PodEntry& entry : pods) {
    const std::optional<ResourceKey> key =
        ResourceOf(WorkloadOf(entry.pod.identity()), selector.type);
    if (!key || !selector.Matches(*key)) continue;
    PodCounts& count = counts[*key];
    ++count.running;
    if (entry.pod.enrolled() || entry.pod.meshed()) ++count.meshed;
  }
  return counts;
}

template <typename Response>
void AddStaleNodes(const QueryContext& context, Response* response) {
  for (const v1::NodeStatus& node : context.stale_nodes) *response->add_stale_nodes() = node;
}

// One end of an edge: a resource of the asked type, else the pod, else "external".
struct EdgeEnd {
  std::string type;
  ResourceKey key;

  auto operator<=>(const EdgeEnd&) const = default;
};

EdgeEnd EdgeEndOf(const metrics::Identity& identity, ResourceType type) {
  const Workload workload = WorkloadOf(identity);
  if (IsExternal(workload)) return EdgeEnd{"external", ResourceKey{"", "external"}};
  if (std::optional<ResourceKey> key = ResourceOf(workload, type)) {
    return EdgeEnd{std::string(ResourceTypeName(type)), std::move(*key)};
  }
  return EdgeEnd{std::string(ResourceTypeName(ResourceType::kPod)),
                 *ResourceOf(workload, ResourceType::kPod)};
}

// A pod's end as its owner names it (deployment, statefulset or daemonset), else the pod, else
// "external": the ends around a Service, whatever their types.
EdgeEnd OwnerEndOf(const metrics::Identity& identity) {
  const Workload workload = WorkloadOf(identity);
  for (const ResourceType type :
       {ResourceType::kDeployment, ResourceType::kStatefulSet, ResourceType::kDaemonSet}) {
    if (ResourceOf(workload, type)) return EdgeEndOf(identity, type);
  }
  return EdgeEndOf(identity, ResourceType::kPod);
}

// The Service a series was dialled to, when it is one `selector` (a ServiceSelector) matches.
std::optional<ResourceKey> ServiceIn(const Selector& selector, const metrics::Identity* service) {
  if (service == nullptr) return std::nullopt;
  std::optional<ResourceKey> key = ServiceOf(WorkloadOf(*service));
  return key && selector.Matches(*key) ? key : std::nullopt;
}

v1::Resource ToProto(const EdgeEnd& end) {
  v1::Resource resource;
  resource.set_type(end.type);
  resource.set_namespace_(end.key.namespace_name);
  resource.set_name(end.key.name);
  return resource;
}

}  // namespace

Window WindowEndingAt(int64_t now_seconds, int64_t seconds, int64_t history_start_second) {
  const int64_t first = std::max(now_seconds - seconds, history_start_second);
  return Window{first, now_seconds - 1, std::max<int64_t>(0, now_seconds - first)};
}

double PerSecond(uint64_t count, const Window& window) {
  return window.seconds == 0 ? 0.0 : double(count) / double(window.seconds);
}

absl::StatusOr<int64_t> ValidateWindow(int64_t window_seconds, bool store_configured) {
  if (window_seconds == 0) return kDefaultWindowSeconds;
  if (store_configured) {
    if (window_seconds < kMinWindowSeconds || window_seconds > kMaxStoreWindowSeconds) {
      return absl::InvalidArgumentError(fmt::format(
          "window_seconds {} is out of range: ask for {} seconds to {} days (e.g. 10s, 1h, 7d)",
          window_seconds, kMinWindowSeconds, kMaxStoreWindowSeconds / 86400));
    }
    return window_seconds;
  }
  if (window_seconds < kMinWindowSeconds || window_seconds > kMaxWindowSeconds) {
    return absl::InvalidArgumentError(
        fmt::format("window_seconds {} is out of range: the aggregator keeps one hour of "
                    "per-second data, so ask for {} to {} seconds (e.g. 10s, 1m, 1h); for "
                    "longer windows, point it at a Prometheus-compatible store (--prometheus)",
                    window_seconds, kMinWindowSeconds, kMaxWindowSeconds));
  }
  return window_seconds;
}

bool IsSet(const v1::Resource& resource) {
  return !resource.type().empty() || !resource.namespace_().empty() || !resource.name().empty();
}

absl::StatusOr<Selector> ToSelector(const v1::Resource& resource, std::string_view field) {
  const std::optional<ResourceType> type = ParseResourceType(resource.type());
  if (!type) return UnknownResourceTypeError(fmt::format("{} type", field), resource.type());
  if (resource.name().find('/') != std::string::npos) {
    return absl::InvalidArgumentError(
        fmt::format("{} name '{}' contains '/': give the type and the name in their own fields",
                    field, resource.name()));
  }
  return Selector{*type, resource.namespace_(), resource.name()};
}

absl::StatusOr<Selector> ServiceSelector(const v1::Resource& resource, std::string_view field) {
  if (resource.name().find('/') != std::string::npos) {
    return absl::InvalidArgumentError(
        fmt::format("{} name '{}' contains '/': give the type and the name in their own fields",
                    field, resource.name()));
  }
  // The type is unused: Matches compares namespace and name.
  return Selector{ResourceType::kPod, resource.namespace_(), resource.name()};
}

v1::Resource ToProto(ResourceType type, const ResourceKey& key) {
  v1::Resource resource;
  resource.set_type(std::string(ResourceTypeName(type)));
  resource.set_namespace_(key.namespace_name);
  resource.set_name(key.name);
  return resource;
}

namespace {

// The source that answers a window of `window_seconds` (validated), and the window as it
// covers it: memory's is cut at its history's start, a store's is whole.
struct Answering {
  std::unique_ptr<TrafficSource> source;
  Window window;
};

absl::StatusOr<Answering> SourceFor(const QueryContext& context, int64_t window_seconds,
                                    v1::AnswerSource asked) {
  const bool fits_memory = window_seconds <= context.store.retention_seconds();
  if (asked == v1::ANSWER_SOURCE_PROMETHEUS ||
      (asked == v1::ANSWER_SOURCE_UNSPECIFIED && !fits_memory)) {
    if (context.prometheus == nullptr) {
      return absl::FailedPreconditionError(
          "no Prometheus-compatible store to answer from: start the aggregator with "
          "--prometheus URL, or ask for a window of at most an hour from its memory");
    }
    return Answering{std::make_unique<PrometheusSource>(*context.prometheus),
                     WindowEndingAt(context.now_seconds, window_seconds)};
  }
  if (!fits_memory) {
    return absl::InvalidArgumentError(fmt::format(
        "the aggregator's memory holds {} seconds, not {}: ask the store for longer windows "
        "(or leave the source unset)",
        context.store.retention_seconds(), window_seconds));
  }
  return Answering{std::make_unique<MemorySource>(context.store),
                   WindowEndingAt(context.now_seconds, window_seconds,
                                  context.history_start_second)};
}

// A StatSummaryRequest, checked: the rows asked for, the window, and what the traffic is
// narrowed to.
struct StatQuery {
  Selector selector;
  int64_t window_seconds = 0;
  // Services (common/resource) are no ResourceType: as the selector, a row per Service with
  // what its callers dialled to it; as `to`, the callers of one. Both from the callers' side,
  // the only one that knows the Service.
  bool by_service = false;
  std::optional<Selector> from;
  std::optional<Selector> to;
  bool to_service = false;
};

absl::StatusOr<StatQuery> ParseStatQuery(const v1::StatSummaryRequest& request,
                                         bool store_configured) {
  StatQuery query;
  query.by_service = IsServiceType(request.selector().type());
  absl::StatusOr<Selector> selector = query.by_service
                                          ? ServiceSelector(request.selector(), "selector")
                                          : ToSelector(request.selector(), "selector");
  if (!selector.ok()) return selector.status();
  query.selector = *std::move(selector);
  const absl::StatusOr<int64_t> window_seconds =
      ValidateWindow(request.window_seconds(), store_configured);
  if (!window_seconds.ok()) return window_seconds.status();
  query.window_seconds = *window_seconds;
  const bool has_from = IsSet(request.from()), has_to = IsSet(request.to());
  if (has_from && has_to) {
    return absl::InvalidArgumentError(
        "from and to cannot be combined: ask for the traffic from one resource, or to one");
  }
  query.to_service = has_to && IsServiceType(request.to().type());
  if (has_from) {
    if (IsServiceType(request.from().type())) {
      return absl::InvalidArgumentError(
          "from cannot be a service: a Service is dialled, it calls nothing; ask for the "
          "traffic to it (to service/NAME), or stat the services");
    }
    absl::StatusOr<Selector> from = ToSelector(request.from(), "from");
    if (!from.ok()) return from.status();
    query.from = *std::move(from);
  }
  if (has_to) {
    if (query.by_service) {
      return absl::InvalidArgumentError(
          "services with to: a Service calls nothing; ask for the services `from` a resource "
          "called");
    }
    absl::StatusOr<Selector> to =
        query.to_service ? ServiceSelector(request.to(), "to") : ToSelector(request.to(), "to");
    if (!to.ok()) return to.status();
    query.to = *std::move(to);
  }
  return query;
}

// The side whose reports a stat query counts (the counting rule, docs/ARCHITECTURE.md 2.5),
// and the row a series of it counts in.
struct StatGrouping {
  metrics::Direction side = metrics::Direction::kInbound;
  Aggregation<ResourceKey>::Classify classify;
};

// `query` must outlive the grouping's use.
StatGrouping GroupingOf(const StatQuery& query) {
  using Key = ResourceKey;
  const ResourceType type = query.selector.type;
  if (query.by_service) {
    return {metrics::Direction::kOutbound,
            [&query](const metrics::Identity& source, const metrics::Identity&,
                     const metrics::Identity* service) -> std::optional<Key> {
              if (query.from && !query.from->Contains(WorkloadOf(source))) return std::nullopt;
              return ServiceIn(query.selector, service);
            }};
  }
  if (query.from) {
    return {metrics::Direction::kOutbound,
            [&query, type](const metrics::Identity& source, const metrics::Identity& destination,
                           const metrics::Identity*) -> std::optional<Key> {
              if (!query.from->Contains(WorkloadOf(source))) return std::nullopt;
              std::optional<Key> key = ResourceOf(WorkloadOf(destination), type);
              return key && query.selector.Matches(*key) ? key : std::nullopt;
            }};
  }
  if (query.to) {
    return {metrics::Direction::kOutbound,
            [&query, type](const metrics::Identity& source, const metrics::Identity& destination,
                           const metrics::Identity* service) -> std::optional<Key> {
              if (query.to_service ? !ServiceIn(*query.to, service)
                                   : !query.to->Contains(WorkloadOf(destination))) {
                return std::nullopt;
              }
              std::optional<Key> key = ResourceOf(WorkloadOf(source), type);
              return key && query.selector.Matches(*key) ? key : std::nullopt;
            }};
  }
  return {metrics::Direction::kInbound,
          [&query, type](const metrics::Identity&, const metrics::Identity& destination,
                         const metrics::Identity*) -> std::optional<Key> {
            std::optional<Key> key = ResourceOf(WorkloadOf(destination), type);
            return key && query.selector.Matches(*key) ? key : std::nullopt;
          }};
}

// The rows of the answer: every resource with traffic; without from/to also every resource
// with pods, and a named resource always, so that asking about one gives an answer about it.
std::set<ResourceKey> StatRows(const StatQuery& query,
                               const Aggregation<ResourceKey>::Groups& groups,
                               const std::map<ResourceKey, PodCounts>& pods) {
  std::set<ResourceKey> rows;
  for (const auto& [key, totals] : groups) rows.insert(key.first);
  for (const auto& [key, counts] : pods) {
    if ((!query.from && !query.to) || !query.selector.name.empty()) rows.insert(key);
  }
  if (query.by_service && !query.selector.name.empty()) {
    rows.insert(ResourceKey{query.selector.namespace_name, query.selector.name});
  }
  return rows;
}

// A row's traffic: its requests, latencies and TCP figures over the window.
void FillTraffic(const Totals& totals, const Window& window, v1::StatRow* row) {
  row->set_has_traffic(true);  // a group exists only for a series it counted
  row->set_requests(totals.responses);
  row->set_successes(totals.successes);
  row->set_success_rate(SuccessRate(totals));
  row->set_rps(PerSecond(totals.responses, window));
  FillLatencies(totals, row->mutable_latency());
  row->set_tcp_open_connections(totals.open_connections);
  row->set_read_bytes_per_second(PerSecond(totals.read_bytes, window));
  row->set_write_bytes_per_second(PerSecond(totals.write_bytes, window));
}

}  // namespace

absl::StatusOr<v1::StatSummaryResponse> StatSummary(const QueryContext& context,
                                                    const std::vector<PodEntry>& cluster_pods,
                                                    const v1::StatSummaryRequest& request) {
  const absl::StatusOr<StatQuery> query =
      ParseStatQuery(request, context.prometheus != nullptr);
  if (!query.ok()) return query.status();
  absl::StatusOr<Answering> answering =
      SourceFor(context, query->window_seconds, request.source());
  if (!answering.ok()) return answering.status();
  const Window& window = answering->window;
  StatGrouping grouping = GroupingOf(*query);
  const absl::StatusOr<Aggregation<ResourceKey>::Groups> groups =
      Aggregation<ResourceKey>(*answering->source, grouping.side, std::move(grouping.classify),
                               false)
          .Run(window);
  if (!groups.ok()) return groups.status();
  // No pod belongs to a Service by owner: service rows count none.
  const std::map<ResourceKey, PodCounts> pods = query->by_service
                                                    ? std::map<ResourceKey, PodCounts>()
                                                    : CountPods(cluster_pods, query->selector);

  v1::StatSummaryResponse response;
  response.set_window_seconds(window.seconds);
  for (const ResourceKey& key : StatRows(*query, *groups, pods)) {
    v1::StatRow& row = *response.add_rows();
    *row.mutable_resource() = ToProto(query->selector.type, key);
    if (query->by_service) row.mutable_resource()->set_type(std::string(kServiceTypeName));
    if (const auto found = pods.find(key); found != pods.end()) {
      row.set_meshed_pods(found->second.meshed);
      row.set_running_pods(found->second.running);
    }
    if (const auto group = groups->find({key, 0}); group != groups->end()) {
      FillTraffic(group->second, window, &row);
    }
  }
  AddStaleNodes(context, &response);
  response.set_source(answering->source->kind());
  return response;
}

namespace {

void AddEdge(const EdgeEnd& from, const EdgeEnd& to, const Totals& totals, const Window& window,
             v1::EdgesResponse* response) {
  v1::Edge& edge = *response->add_edges();
  *edge.mutable_source() = ToProto(from);
  *edge.mutable_destination() = ToProto(to);
  edge.set_requests(totals.responses);
  edge.set_success_rate(SuccessRate(totals));
  edge.set_rps(PerSecond(totals.responses, window));
  FillLatencies(totals, edge.mutable_latency());
  edge.set_tcp_open_connections(totals.open_connections);
  edge.set_source_service_account(JoinAccounts(totals.source_accounts));
  edge.set_destination_service_account(JoinAccounts(totals.destination_accounts));
}

// Edges around the Services `selector` matches, from the OUTBOUND view (the only one that
// knows the Service): caller -> Service, and Service -> the resource whose pod the node's NAT
// chose, each end named by its owner (OwnerEndOf). A Service has no service account.
absl::Status ServiceEdges(TrafficSource& traffic, const Selector& selector, const Window& window,
                          v1::EdgesResponse* response) {
  using Key = std::tuple<EdgeEnd, EdgeEnd, EdgeEnd>;  // caller, Service, backend
  Aggregation<Key>::Classify classify =
      [&](const metrics::Identity& source, const metrics::Identity& destination,
          const metrics::Identity* service) -> std::optional<Key> {
    std::optional<ResourceKey> key = ServiceIn(selector, service);
    if (!key) return std::nullopt;
    return Key{OwnerEndOf(source), EdgeEnd{std::string(kServiceTypeName), std::move(*key)},
               OwnerEndOf(destination)};
  };
  const absl::StatusOr<Aggregation<Key>::Groups> groups =
      Aggregation<Key>(traffic, metrics::Direction::kOutbound, std::move(classify), false)
          .Run(window);
  if (!groups.ok()) return groups.status();
  std::map<std::pair<EdgeEnd, EdgeEnd>, Totals> edges;
  for (const auto& [key, totals] : *groups) {
    const auto& [caller, service, backend] = key.first;
    Totals& called = edges[{caller, service}];
    called.Merge(totals);
    called.source_accounts.insert(totals.source_accounts.begin(), totals.source_accounts.end());
    Totals& served = edges[{service, backend}];
    served.Merge(totals);
    served.destination_accounts.insert(totals.destination_accounts.begin(),
                                       totals.destination_accounts.end());
  }
  for (const auto& [ends, totals] : edges) {
    AddEdge(ends.first, ends.second, totals, window, response);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<v1::EdgesResponse> Edges(const QueryContext& context,
                                        const v1::EdgesRequest& request) {
  const bool services = IsServiceType(request.selector().type());
  const absl::StatusOr<Selector> selector = services
                                                ? ServiceSelector(request.selector(), "selector")
                                                : ToSelector(request.selector(), "selector");
  if (!selector.ok()) return selector.status();
  const absl::StatusOr<int64_t> window_seconds =
      ValidateWindow(request.window_seconds(), context.prometheus != nullptr);
  if (!window_seconds.ok()) return window_seconds.status();
  absl::StatusOr<Answering> answering = SourceFor(context, *window_seconds, request.source());
  if (!answering.ok()) return answering.status();
  const Window& window = answering->window;
  v1::EdgesResponse response;
  response.set_window_seconds(window.seconds);
  AddStaleNodes(context, &response);
  response.set_source(answering->source->kind());
  if (services) {
    if (absl::Status status = ServiceEdges(*answering->source, *selector, window, &response);
        !status.ok()) {
      return status;
    }
    return response;
  }

  const ResourceType type = selector->type;
  using Key = std::pair<EdgeEnd, EdgeEnd>;
  const auto in_selector = [&](const EdgeEnd& end) {
    return end.type == ResourceTypeName(type) && selector->Matches(end.key);
  };
  Aggregation<Key>::Classify classify = [&](const metrics::Identity& source,
                                            const metrics::Identity& destination,
                                            const metrics::Identity*) -> std::optional<Key> {
    EdgeEnd from = EdgeEndOf(source, type), to = EdgeEndOf(destination, type);
    if (!in_selector(from) && !in_selector(to)) return std::nullopt;
    return Key{std::move(from), std::move(to)};
  };
  const absl::StatusOr<Aggregation<Key>::Groups> groups =
      Aggregation<Key>(*answering->source, metrics::Direction::kOutbound, std::move(classify),
                       false)
          .Run(window);
  if (!groups.ok()) return groups.status();
  for (const auto& [key, totals] : *groups) {
    AddEdge(key.first.first, key.first.second, totals, window, &response);
  }
  return response;
}

absl::StatusOr<v1::TopRoutesResponse> TopRoutes(const QueryContext& context,
                                                const v1::TopRoutesRequest& request) {
  const bool services = IsServiceType(request.selector().type());
  const absl::StatusOr<Selector> selector = services
                                                ? ServiceSelector(request.selector(), "selector")
                                                : ToSelector(request.selector(), "selector");
  if (!selector.ok()) return selector.status();
  const absl::StatusOr<int64_t> window_seconds =
      ValidateWindow(request.window_seconds(), context.prometheus != nullptr);
  if (!window_seconds.ok()) return window_seconds.status();
  std::optional<Selector> from;
  if (IsSet(request.from())) {
    absl::StatusOr<Selector> parsed = ToSelector(request.from(), "from");
    if (!parsed.ok()) return parsed.status();
    from = *std::move(parsed);
  }

  const ResourceType type = selector->type;
  using Key = ResourceKey;
  // Routes of a Service: what its callers dialled to it, from their side, the only one that
  // knows the Service.
  Aggregation<Key>::Classify classify =
      [&](const metrics::Identity& source, const metrics::Identity& destination,
          const metrics::Identity* service) -> std::optional<Key> {
    if (from && !from->Contains(WorkloadOf(source))) return std::nullopt;
    if (services) return ServiceIn(*selector, service);
    std::optional<Key> key = ResourceOf(WorkloadOf(destination), type);
    return key && selector->Matches(*key) ? key : std::nullopt;
  };
  absl::StatusOr<Answering> answering = SourceFor(context, *window_seconds, request.source());
  if (!answering.ok()) return answering.status();
  const Window& window = answering->window;
  const metrics::Direction side =
      from || services ? metrics::Direction::kOutbound : metrics::Direction::kInbound;
  const absl::StatusOr<Aggregation<Key>::Groups> groups =
      Aggregation<Key>(*answering->source, side, std::move(classify), true).Run(window);
  if (!groups.ok()) return groups.status();

  struct Route {
    std::string name;
    const ResourceKey* destination;
    const Totals* totals;
  };
  std::vector<Route> routes;
  routes.reserve(groups->size());
  for (const auto& [key, totals] : *groups) {
    if (totals.responses == 0) continue;
    routes.push_back(
        Route{answering->source->route(key.second).value_or("[unknown]"), &key.first, &totals});
  }
  std::sort(routes.begin(), routes.end(), [](const Route& a, const Route& b) {
    return std::tie(b.totals->responses, a.name, *a.destination) <
           std::tie(a.totals->responses, b.name, *b.destination);
  });
  if (request.limit() != 0 && routes.size() > request.limit()) routes.resize(request.limit());

  v1::TopRoutesResponse response;
  response.set_window_seconds(window.seconds);
  for (const Route& route : routes) {
    v1::RouteRow& row = *response.add_routes();
    row.set_route(route.name);
    *row.mutable_destination() = ToProto(type, *route.destination);
    if (services) row.mutable_destination()->set_type(std::string(kServiceTypeName));
    row.set_requests(route.totals->responses);
    row.set_success_rate(SuccessRate(*route.totals));
    row.set_rps(PerSecond(route.totals->responses, window));
    FillLatencies(*route.totals, row.mutable_latency());
  }
  AddStaleNodes(context, &response);
  response.set_source(answering->source->kind());
  return response;
}

v1::ListPodsResponse ListPods(const std::vector<PodEntry>& pods,
                              const std::vector<v1::NodeStatus>& nodes,
                              const v1::ListPodsRequest& request) {
  v1::ListPodsResponse response;
  for (const PodEntry& entry : pods) {
    if (!request.namespace_().empty() && entry.pod.identity().namespace_() != request.namespace_())
      continue;
    v1::Pod& pod = *response.add_pods();
    pod = entry.pod;
    // A pod whose record names no node runs on the node of the agent that reports it.
    if (pod.identity().node().empty()) pod.mutable_identity()->set_node(entry.node);
  }
  for (const v1::NodeStatus& node : nodes) *response.add_nodes() = node;
  return response;
}

namespace {

constexpr int kMaxViewNamespaces = 50;
constexpr double kDefaultFailingBelow = 0.95;
constexpr uint32_t kDefaultMaxNodes = 300;
constexpr uint32_t kDefaultMaxEdges = 1500;
// What draw_anyway still withholds: more than any page lays out in a few seconds.
constexpr uint32_t kDrawAnywayMaxNodes = 5000;
constexpr uint32_t kDrawAnywayMaxEdges = 25000;
constexpr std::string_view kDefaultViewType = "deployment";

// A resource as one string, "type/namespace/name", to key nodes and edges by.
std::string NodeKey(const v1::Resource& resource) {
  return fmt::format("{}/{}/{}", resource.type(), resource.namespace_(), resource.name());
}

v1::Resource NamespacedSelector(std::string_view type, const std::string& namespace_name) {
  v1::Resource selector;
  selector.set_type(type.empty() ? std::string(kDefaultViewType) : std::string(type));
  selector.set_namespace_(namespace_name);
  return selector;
}

// The view's namespaces, each once, in the order given; INVALID_ARGUMENT for none, an empty
// one or more than kMaxViewNamespaces.
absl::StatusOr<std::vector<std::string>> ViewNamespaces(const v1::ViewRequest& request) {
  if (request.namespaces().empty()) {
    return absl::InvalidArgumentError(
        "namespaces is empty: this view is of chosen namespaces, name at least one");
  }
  if (request.namespaces_size() > kMaxViewNamespaces) {
    return absl::InvalidArgumentError(
        fmt::format("{} namespaces asked for: a view shows at most {}; choose fewer",
                    request.namespaces_size(), kMaxViewNamespaces));
  }
  std::vector<std::string> namespaces;
  for (const std::string& name : request.namespaces()) {
    if (name.empty()) return absl::InvalidArgumentError("namespaces has an empty name");
    if (std::find(namespaces.begin(), namespaces.end(), name) == namespaces.end()) {
      namespaces.push_back(name);
    }
  }
  return namespaces;
}

v1::StatSummaryRequest ViewStatRequest(const v1::Resource& selector, int64_t window_seconds) {
  v1::StatSummaryRequest request;
  *request.mutable_selector() = selector;
  request.set_window_seconds(window_seconds);
  return request;
}

// The rows of StatSummary over several namespaces, with the window it covered.
absl::StatusOr<v1::StatSummaryResponse> StatsOf(const QueryContext& context,
                                                const std::vector<PodEntry>& pods,
                                                const std::vector<std::string>& namespaces,
                                                std::string_view type, int64_t window_seconds) {
  v1::StatSummaryResponse stats;
  for (const std::string& namespace_name : namespaces) {
    absl::StatusOr<v1::StatSummaryResponse> part = StatSummary(
        context, pods, ViewStatRequest(NamespacedSelector(type, namespace_name), window_seconds));
    if (!part.ok()) return part.status();
    stats.set_window_seconds(part->window_seconds());
    for (v1::StatRow& row : *part->mutable_rows()) *stats.add_rows() = std::move(row);
  }
  return stats;
}

// A graph's edges and nodes before the filter, keyed so that each is there once.
struct Graph {
  std::map<std::pair<std::string, std::string>, v1::Edge> edges;
  std::map<std::string, v1::StatRow> nodes;  // rows with only the resource for far ends
  int64_t window_seconds = 0;
};

absl::StatusOr<Graph> GraphOf(const QueryContext& context, const std::vector<PodEntry>& pods,
                              const std::vector<std::string>& namespaces, std::string_view type,
                              int64_t window_seconds) {
  Graph graph;
  absl::StatusOr<v1::StatSummaryResponse> stats =
      StatsOf(context, pods, namespaces, type, window_seconds);
  if (!stats.ok()) return stats.status();
  graph.window_seconds = stats->window_seconds();
  for (v1::StatRow& row : *stats->mutable_rows()) {
    graph.nodes.emplace(NodeKey(row.resource()), std::move(row));
  }
  // Far ends of the view's type in other namespaces get their rows as their namespace's
  // StatSummary gives them; pods and external peers are rows of their resource only. In a
  // graph of Services every caller and backend is such an end, of its owner's type.
  const bool services = type == kServiceTypeName;
  std::map<std::string, std::set<std::string>> far_namespaces;  // by type
  for (const std::string& namespace_name : namespaces) {
    v1::EdgesRequest request;
    *request.mutable_selector() = NamespacedSelector(type, namespace_name);
    request.set_window_seconds(window_seconds);
    absl::StatusOr<v1::EdgesResponse> part = Edges(context, request);
    if (!part.ok()) return part.status();
    for (v1::Edge& edge : *part->mutable_edges()) {
      for (const v1::Resource* end : {&edge.source(), &edge.destination()}) {
        v1::StatRow row;
        *row.mutable_resource() = *end;
        const bool far =
            end->type() == type || (services && end->type() != "pod" && end->type() != "external");
        if (graph.nodes.emplace(NodeKey(*end), std::move(row)).second && far) {
          far_namespaces[end->type()].insert(end->namespace_());
        }
      }
      std::pair<std::string, std::string> key{NodeKey(edge.source()), NodeKey(edge.destination())};
      graph.edges.emplace(std::move(key), std::move(edge));
    }
  }
  for (const auto& [far_type, names] : far_namespaces) {
    absl::StatusOr<v1::StatSummaryResponse> far =
        StatsOf(context, pods, {names.begin(), names.end()}, far_type, window_seconds);
    if (!far.ok()) return far.status();
    for (v1::StatRow& row : *far->mutable_rows()) {
      if (auto node = graph.nodes.find(NodeKey(row.resource())); node != graph.nodes.end()) {
        node->second = std::move(row);
      }
    }
  }
  return graph;
}

// A graph's filter, checked, with its defaults.
struct GraphSelection {
  double failing_below = kDefaultFailingBelow;
  std::optional<std::string> around;  // NodeKey
  std::set<std::string> hidden_namespaces;
  uint32_t max_nodes = kDefaultMaxNodes;
  uint32_t max_edges = kDefaultMaxEdges;
  bool only_failing = false;
  bool hide_external = false;

  bool Failing(const v1::Edge& edge) const {
    return edge.requests() > 0 && edge.success_rate() < failing_below;
  }
  bool Hidden(const v1::Resource& node) const {
    return (hide_external && node.type() == "external") ||
           hidden_namespaces.contains(node.namespace_());
  }
  // Whether the filter keeps edges only: then nodes are the ends of the kept edges, else also
  // the resources of the chosen namespaces that are not hidden.
  bool ByEdges() const { return only_failing || around.has_value(); }
  bool Keeps(const v1::Edge& edge) const {
    if (Hidden(edge.source()) || Hidden(edge.destination())) return false;
    if (only_failing && !Failing(edge)) return false;
    return !around || NodeKey(edge.source()) == *around || NodeKey(edge.destination()) == *around;
  }
};

absl::StatusOr<GraphSelection> ParseGraphFilter(const v1::GraphFilter& filter,
                                                std::string_view type,
                                                const std::string& first_namespace) {
  GraphSelection selection;
  if (filter.failing_below() < 0 || filter.failing_below() > 1) {
    return absl::InvalidArgumentError(
        fmt::format("filter.failing_below {} is no success rate: give one from 0 to 1 (e.g. "
                    "0.95), or 0 for the default",
                    filter.failing_below()));
  }
  if (filter.failing_below() > 0) selection.failing_below = filter.failing_below();
  if (IsSet(filter.around())) {
    v1::Resource around = filter.around();
    if (around.type().empty()) around.set_type(std::string(type));
    if (around.namespace_().empty()) around.set_namespace_(first_namespace);
    const bool service = IsServiceType(around.type());
    const absl::StatusOr<Selector> selector =
        service ? ServiceSelector(around, "filter.around") : ToSelector(around, "filter.around");
    if (!selector.ok()) return selector.status();
    if (selector->name.empty()) {
      return absl::InvalidArgumentError(
          "filter.around has no name: name the resource whose neighbours to show");
    }
    v1::Resource node =
        aggregator::ToProto(selector->type, ResourceKey{selector->namespace_name, selector->name});
    if (service) node.set_type(std::string(kServiceTypeName));
    selection.around = NodeKey(node);
  }
  selection.hidden_namespaces = {filter.hide_namespaces().begin(), filter.hide_namespaces().end()};
  selection.only_failing = filter.only_failing();
  selection.hide_external = filter.hide_external();
  if (filter.draw_anyway()) {
    selection.max_nodes = kDrawAnywayMaxNodes;
    selection.max_edges = kDrawAnywayMaxEdges;
  } else {
    if (filter.max_nodes() != 0)
      selection.max_nodes = std::min(filter.max_nodes(), kDrawAnywayMaxNodes);
    if (filter.max_edges() != 0)
      selection.max_edges = std::min(filter.max_edges(), kDrawAnywayMaxEdges);
  }
  return selection;
}

absl::Status GraphView(const QueryContext& context, const std::vector<PodEntry>& pods,
                       const v1::ViewRequest& request, v1::ViewResponse* response) {
  const absl::StatusOr<std::vector<std::string>> namespaces = ViewNamespaces(request);
  if (!namespaces.ok()) return namespaces.status();
  const std::string_view requested_type =
      request.type().empty() ? kDefaultViewType : request.type();
  std::string type(kServiceTypeName);
  if (!IsServiceType(requested_type)) {
    const std::optional<ResourceType> parsed_type = ParseResourceType(requested_type);
    if (!parsed_type) return UnknownResourceTypeError("type", requested_type);
    type = ResourceTypeName(*parsed_type);
  }
  const absl::StatusOr<GraphSelection> selection =
      ParseGraphFilter(request.filter(), type, namespaces->front());
  if (!selection.ok()) return selection.status();
  absl::StatusOr<Graph> graph = GraphOf(context, pods, *namespaces, type, request.window_seconds());
  if (!graph.ok()) return graph.status();
  response->set_window_seconds(graph->window_seconds);

  v1::GraphSize& size = *response->mutable_size();
  size.set_nodes(graph->nodes.size());
  size.set_edges(graph->edges.size());
  for (const auto& [key, row] : graph->nodes) {
    if (!row.resource().namespace_().empty()) {
      ++(*size.mutable_nodes_by_namespace())[row.resource().namespace_()];
    }
  }
  std::set<std::string> shown_nodes;
  std::vector<const v1::Edge*> shown_edges;
  for (const auto& [key, edge] : graph->edges) {
    if (selection->Failing(edge)) size.set_failing_edges(size.failing_edges() + 1);
    if (!selection->Keeps(edge)) continue;
    shown_edges.push_back(&edge);
    shown_nodes.insert({key.first, key.second});
  }
  if (selection->around && graph->nodes.contains(*selection->around)) {
    shown_nodes.insert(*selection->around);
  }
  if (!selection->ByEdges()) {
    for (const auto& [key, row] : graph->nodes) {
      const bool chosen = row.resource().type() == type &&
                          std::find(namespaces->begin(), namespaces->end(),
                                    row.resource().namespace_()) != namespaces->end();
      if (chosen && !selection->Hidden(row.resource())) shown_nodes.insert(key);
    }
  }
  if (shown_nodes.size() > selection->max_nodes || shown_edges.size() > selection->max_edges) {
    size.set_withheld(true);
    return absl::OkStatus();
  }
  size.set_shown_nodes(shown_nodes.size());
  size.set_shown_edges(shown_edges.size());
  v1::StatSummaryResponse& stats = *response->mutable_stats();
  stats.set_window_seconds(graph->window_seconds);
  for (const std::string& key : shown_nodes) *stats.add_rows() = graph->nodes.at(key);
  v1::EdgesResponse& edges = *response->mutable_edges();
  edges.set_window_seconds(graph->window_seconds);
  for (const v1::Edge* edge : shown_edges) *edges.add_edges() = *edge;
  return absl::OkStatus();
}

absl::Status WorkloadView(const QueryContext& context, const std::vector<PodEntry>& pods,
                          const v1::ViewRequest& request, v1::ViewResponse* response) {
  v1::Resource resource = request.resource();
  if (request.namespaces_size() > 1) {
    return absl::InvalidArgumentError(
        "a workload view is of one resource in one namespace: give at most one namespace");
  }
  if (request.namespaces_size() == 1) {
    if (!resource.namespace_().empty() && resource.namespace_() != request.namespaces(0)) {
      return absl::InvalidArgumentError(
          fmt::format("resource.namespace {} differs from the view's namespace {}: give one",
                      resource.namespace_(), request.namespaces(0)));
    }
    resource.set_namespace_(request.namespaces(0));
  }
  // A Service has no pods of its own: its view has its row, edges and routes.
  const bool service = IsServiceType(resource.type());
  const absl::StatusOr<Selector> selector =
      service ? ServiceSelector(resource, "resource") : ToSelector(resource, "resource");
  if (!selector.ok()) return selector.status();
  if (selector->name.empty() || selector->namespace_name.empty()) {
    return absl::InvalidArgumentError(
        "a workload view needs resource.name and a namespace: name the workload to show");
  }
  const int64_t window_seconds = request.window_seconds();
  absl::StatusOr<v1::StatSummaryResponse> stats =
      StatSummary(context, pods, ViewStatRequest(resource, window_seconds));
  if (!stats.ok()) return stats.status();
  v1::EdgesRequest edges_request;
  *edges_request.mutable_selector() = resource;
  edges_request.set_window_seconds(window_seconds);
  absl::StatusOr<v1::EdgesResponse> edges = Edges(context, edges_request);
  if (!edges.ok()) return edges.status();
  v1::TopRoutesRequest routes_request;
  *routes_request.mutable_selector() = resource;
  routes_request.set_window_seconds(window_seconds);
  absl::StatusOr<v1::TopRoutesResponse> routes = TopRoutes(context, routes_request);
  if (!routes.ok()) return routes.status();

  stats->clear_stale_nodes();
  edges->clear_stale_nodes();
  routes->clear_stale_nodes();
  response->set_window_seconds(stats->window_seconds());
  *response->mutable_stats() = *std::move(stats);
  *response->mutable_edges() = *std::move(edges);
  *response->mutable_routes() = *std::move(routes);
  if (service) return absl::OkStatus();
  v1::ListPodsRequest pods_request;
  pods_request.set_namespace_(selector->namespace_name);
  v1::ListPodsResponse namespace_pods = ListPods(pods, {}, pods_request);
  for (v1::Pod& pod : *namespace_pods.mutable_pods()) {
    if (selector->Contains(WorkloadOf(pod.identity()))) {
      *response->mutable_pods()->add_pods() = std::move(pod);
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<v1::ViewResponse> View(const QueryContext& context,
                                      const std::vector<PodEntry>& pods,
                                      const v1::ViewRequest& request) {
  const absl::StatusOr<int64_t> window_seconds =
      ValidateWindow(request.window_seconds(), context.prometheus != nullptr);
  if (!window_seconds.ok()) return window_seconds.status();
  v1::ViewResponse response;
  response.set_unix_seconds(context.now_seconds);
  switch (request.kind()) {
    case v1::ViewRequest::NAMESPACES: {
      if (!request.namespaces().empty()) {
        return absl::InvalidArgumentError(
            "the namespaces view is of every namespace: give no namespaces");
      }
      absl::StatusOr<v1::StatSummaryResponse> stats =
          StatsOf(context, pods, {""}, ResourceTypeName(ResourceType::kNamespace),
                  request.window_seconds());
      if (!stats.ok()) return stats.status();
      response.set_window_seconds(stats->window_seconds());
      *response.mutable_stats() = *std::move(stats);
      break;
    }
    case v1::ViewRequest::WORKLOADS: {
      const absl::StatusOr<std::vector<std::string>> namespaces = ViewNamespaces(request);
      if (!namespaces.ok()) return namespaces.status();
      absl::StatusOr<v1::StatSummaryResponse> stats =
          StatsOf(context, pods, *namespaces, request.type(), request.window_seconds());
      if (!stats.ok()) return stats.status();
      response.set_window_seconds(stats->window_seconds());
      *response.mutable_stats() = *std::move(stats);
      break;
    }
    case v1::ViewRequest::GRAPH:
      if (absl::Status status = GraphView(context, pods, request, &response); !status.ok()) {
        return status;
      }
      break;
    case v1::ViewRequest::WORKLOAD:
      if (absl::Status status = WorkloadView(context, pods, request, &response); !status.ok()) {
        return status;
      }
      break;
    default:
      return absl::InvalidArgumentError(
          "kind is missing: ask for the namespaces, workloads, graph or workload view");
  }
  AddStaleNodes(context, &response);
  return response;
}

}  // namespace nodemesh::aggregator
