// Building blocks for the aggregator's tests: pods, metric deltas as an agent would send them
// (identity and route tables, series referring to them by index), the resources requests name,
// and lookups in the answers. Shared by the query tests and the server's.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/metrics/histogram.h"
#include "nodemesh/v1/nodemesh.pb.h"

namespace nodemesh::aggregator::testing {

// The second the store and query tests take as now.
constexpr int64_t kNow = 1'700'000'000;

inline v1::Pod MakePod(const std::string& namespace_name, const std::string& name,
                       const std::string& owner_kind, const std::string& owner_name,
                       const std::string& node, bool enrolled,
                       const std::string& service_account = "") {
  v1::Pod pod;
  v1::Identity& identity = *pod.mutable_identity();
  identity.set_namespace_(namespace_name);
  identity.set_pod(name);
  identity.set_owner_kind(owner_kind);
  identity.set_owner_name(owner_name);
  identity.set_service_account(service_account.empty() ? owner_name : service_account);
  identity.set_node(node);
  pod.set_meshed(enrolled);
  pod.set_enrolled(enrolled);
  return pod;
}

// A Service, as agents send the one a connection was dialled to.
inline v1::Identity ServiceIdentity(const std::string& namespace_name, const std::string& name) {
  v1::Identity identity;
  identity.set_namespace_(namespace_name);
  identity.set_owner_kind("Service");
  identity.set_owner_name(name);
  return identity;
}

inline v1::Identity External() {
  v1::Identity identity;
  identity.set_owner_kind("External");
  identity.set_owner_name("external");
  return identity;
}

// The emojivoto cast: web and emoji on node-a with an unmeshed vote-bot; voting on node-b.
struct Cast {
  v1::Pod web_a = MakePod("emojivoto", "web-a", "Deployment", "web", "node-a", true);
  v1::Pod web_b = MakePod("emojivoto", "web-b", "Deployment", "web", "node-b", true);
  v1::Pod emoji = MakePod("emojivoto", "emoji-1", "Deployment", "emoji", "node-a", true);
  v1::Pod vote_bot = MakePod("emojivoto", "vote-bot-1", "Deployment", "vote-bot", "node-a", false);
  v1::Pod voting = MakePod("emojivoto", "voting-1", "Deployment", "voting", "node-b", true);
};

// A resource as a client's request names it; in the cast's namespace unless told otherwise.
inline v1::Resource Resource(const std::string& type, const std::string& name,
                             const std::string& namespace_name = "emojivoto") {
  v1::Resource resource;
  resource.set_type(type);
  resource.set_namespace_(namespace_name);
  resource.set_name(name);
  return resource;
}

// nullptr when the answer has no such row or edge.
inline const v1::StatRow* FindRow(const v1::StatSummaryResponse& response,
                                  const std::string& name) {
  for (const v1::StatRow& row : response.rows()) {
    if (row.resource().name() == name) return &row;
  }
  return nullptr;
}
inline const v1::Edge* FindEdge(const v1::EdgesResponse& response, const std::string& source,
                                const std::string& destination) {
  for (const v1::Edge& edge : response.edges()) {
    if (edge.source().name() == source && edge.destination().name() == destination) return &edge;
  }
  return nullptr;
}

class DeltaBuilder {
 public:
  explicit DeltaBuilder(int64_t unix_seconds) { delta_.set_unix_seconds(unix_seconds); }

  // The series added from here on were dialled to `service` (until Direct()).
  DeltaBuilder& Via(const v1::Identity& service) {
    service_ = service;
    return *this;
  }
  DeltaBuilder& Direct() {
    service_.reset();
    return *this;
  }

  // `count` responses, each with latency `latency_ns` unless `latencies_ns` gives them all.
  DeltaBuilder& Responses(const v1::Identity& source, const v1::Identity& destination,
                          v1::Direction direction, const std::string& route, uint64_t count,
                          int64_t latency_ns, uint32_t status = 200, bool failure = false,
                          int32_t grpc_status = -1) {
    std::vector<int64_t> latencies(count, latency_ns);
    return ResponsesWithLatencies(source, destination, direction, route, latencies, status, failure,
                                  grpc_status);
  }

  DeltaBuilder& ResponsesWithLatencies(const v1::Identity& source, const v1::Identity& destination,
                                       v1::Direction direction, const std::string& route,
                                       const std::vector<int64_t>& latencies_ns,
                                       uint32_t status = 200, bool failure = false,
                                       int32_t grpc_status = -1) {
    v1::ResponseSeries& series = *delta_.add_responses();
    Traffic(source, destination, direction, series.mutable_traffic());
    series.set_route(Route(route));
    series.set_status_code(status);
    series.set_grpc_status(grpc_status);
    series.set_failure(failure);
    series.set_responses(latencies_ns.size());
    metrics::Histogram histogram;
    for (int64_t latency : latencies_ns) histogram.Record(latency);
    for (const auto& [bucket, count] : histogram.NonZero()) {
      series.mutable_latency()->add_buckets(bucket);
      series.mutable_latency()->add_counts(count);
    }
    series.mutable_latency()->set_sum_ns(histogram.sum_ns());
    return *this;
  }

  DeltaBuilder& Tcp(const v1::Identity& source, const v1::Identity& destination,
                    v1::Direction direction, int64_t open_now, uint64_t read_bytes = 0,
                    uint64_t write_bytes = 0) {
    v1::TcpSeries& series = *delta_.add_tcp();
    Traffic(source, destination, direction, series.mutable_traffic());
    series.set_open_now(open_now);
    series.set_read_bytes(read_bytes);
    series.set_write_bytes(write_bytes);
    return *this;
  }

  const v1::MetricsDelta& delta() const { return delta_; }
  v1::MetricsDelta* mutable_delta() { return &delta_; }

 private:
  uint32_t Identity(const v1::Identity& identity) {
    auto [it, inserted] =
        identities_.try_emplace(identity.SerializeAsString(), delta_.identities_size());
    if (inserted) *delta_.add_identities() = identity;
    return it->second;
  }
  uint32_t Route(const std::string& route) {
    auto [it, inserted] = routes_.try_emplace(route, delta_.routes_size());
    if (inserted) delta_.add_routes(route);
    return it->second;
  }
  void Traffic(const v1::Identity& source, const v1::Identity& destination, v1::Direction direction,
               v1::TrafficKey* key) {
    key->set_source(Identity(source));
    key->set_destination(Identity(destination));
    key->set_direction(direction);
    if (service_) key->set_service(Identity(*service_));
  }

  v1::MetricsDelta delta_;
  std::optional<v1::Identity> service_;
  std::map<std::string, uint32_t> identities_;
  std::map<std::string, uint32_t> routes_;
};

}  // namespace nodemesh::aggregator::testing
