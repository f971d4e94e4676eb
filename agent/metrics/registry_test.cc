#include "agent/metrics/registry.h"

#include <catch2/catch.hpp>

#include "agent/metrics/shard.h"

namespace nodemesh::metrics {
namespace {

struct RegistryFixture {
  IdentityTable identities;
  RouteTable routes{100};
  Registry registry{identities, routes};
  IdentityTable::Id web =
      identities.Intern({"emojivoto", "web-1", "Deployment", "web", "web", "n1"});
  IdentityTable::Id voting =
      identities.Intern({"emojivoto", "voting-1", "Deployment", "voting", "voting", "n1"});
};

TEST_CASE("registry: shard deltas become cumulative Prometheus series") {
  RegistryFixture f;
  const RouteTable::Id vote =
      f.routes.Intern("emojivoto/Deployment/voting", "/emojivoto.v1.VotingService/VoteDoughnut").id;
  const TrafficKey traffic{f.web, f.voting, Direction::kOutbound};
  Shard shard;
  TcpSeries* tcp = shard.OpenConnection(traffic);
  for (int i = 0; i < 3; ++i) {
    shard.CountRequest({traffic, vote});
    shard.CountResponse({{traffic, vote}, 200, 2, true}, 1'900'000, 1'000'000);
  }
  tcp->read_bytes += 300;
  tcp->write_bytes += 120;
  // A second worker's counts for the same series add up; the agent collects every worker
  // into one delta.
  Shard other;
  other.CountRequest({traffic, vote});
  other.CountResponse({{traffic, vote}, 200, 2, true}, 4'000'000, -1);
  Delta first;
  shard.Collect(&first);
  other.Collect(&first);
  f.registry.Add(first, 1);

  const std::string text = f.registry.PrometheusText();
  const std::string labels =
      "direction=\"outbound\",src_namespace=\"emojivoto\",src_pod=\"web-1\","
      "src_owner_kind=\"Deployment\",src_owner_name=\"web\",src_service_account=\"web\","
      "dst_namespace=\"emojivoto\",dst_pod=\"voting-1\",dst_owner_kind=\"Deployment\","
      "dst_owner_name=\"voting\",dst_service_account=\"voting\"";
  const std::string route = "route=\"/emojivoto.v1.VotingService/VoteDoughnut\"";
  CHECK_THAT(text, Catch::Contains("request_total{" + labels + "," + route + "} 4\n"));
  const std::string response =
      labels + "," + route + ",status_code=\"200\",grpc_status=\"2\",classification=\"failure\"";
  CHECK_THAT(text, Catch::Contains("response_total{" + response + "} 4\n"));
  CHECK_THAT(text,
             Catch::Contains("response_latency_seconds_bucket{" + response + ",le=\"0.002\"} 3\n"));
  CHECK_THAT(text,
             Catch::Contains("response_latency_seconds_bucket{" + response + ",le=\"+Inf\"} 4\n"));
  CHECK_THAT(text, Catch::Contains("response_latency_seconds_count{" + response + "} 4\n"));
  CHECK_THAT(text, Catch::Contains("response_first_byte_seconds_count{" + response + "} 3\n"));
  CHECK_THAT(text, Catch::Contains("tcp_open_total{" + labels + "} 1\n"));
  CHECK_THAT(text, Catch::Contains("tcp_open_connections{" + labels + "} 1\n"));
  CHECK_THAT(text, Catch::Contains("tcp_read_bytes_total{" + labels + "} 300\n"));
  CHECK_THAT(text, Catch::Contains("tcp_write_bytes_total{" + labels + "} 120\n"));

  // Closing moves the gauge back and counts the close; a collection with nothing new keeps
  // the totals.
  Shard::CloseConnection(tcp, 5'000'000, /*failed=*/true);
  Delta third;
  shard.Collect(&third);
  f.registry.Add(third, 3);
  const std::string after = f.registry.PrometheusText();
  CHECK_THAT(after, Catch::Contains("tcp_open_connections{" + labels + "} 0\n"));
  CHECK_THAT(after,
             Catch::Contains("tcp_close_total{" + labels + ",classification=\"failure\"} 1\n"));
  CHECK_THAT(after, Catch::Contains("request_total{" + labels + "," + route + "} 4\n"));
}

TEST_CASE("registry: outbound series dialled to a Service carry it as dst_service") {
  RegistryFixture f;
  const IdentityTable::Id service =
      f.identities.Intern({"emojivoto", "", "Service", "voting-svc", "", ""});
  const TrafficKey via_service{f.web, f.voting, Direction::kOutbound, service};
  const TrafficKey direct{f.web, f.voting, Direction::kOutbound};
  Shard shard;
  shard.OpenConnection(via_service);
  shard.OpenConnection(direct);
  shard.OpenConnection(direct);
  Delta delta;
  shard.Collect(&delta);
  f.registry.Add(delta, 1);

  const std::string text = f.registry.PrometheusText();
  const std::string labels =
      "direction=\"outbound\",src_namespace=\"emojivoto\",src_pod=\"web-1\","
      "src_owner_kind=\"Deployment\",src_owner_name=\"web\",src_service_account=\"web\","
      "dst_namespace=\"emojivoto\",dst_pod=\"voting-1\",dst_owner_kind=\"Deployment\","
      "dst_owner_name=\"voting\",dst_service_account=\"voting\"";
  CHECK_THAT(text, Catch::Contains("tcp_open_total{" + labels +
                                   ",dst_service_namespace=\"emojivoto\","
                                   "dst_service=\"voting-svc\"} 1\n"));
  CHECK_THAT(text, Catch::Contains("tcp_open_total{" + labels + "} 2\n"));

  // The Service's name stays while a series refers to it.
  absl::flat_hash_set<uint32_t> referenced;
  f.registry.AddReferencedIdentities(&referenced);
  CHECK(referenced.contains(service));
}

TEST_CASE("registry: label values are escaped") {
  RegistryFixture f;
  const auto odd = f.identities.Intern({"ns", "p\"q\\r\ns", "Pod", "x", "sa", "n1"});
  Shard shard;
  shard.OpenConnection({odd, IdentityTable::kExternal, Direction::kInbound});
  Delta delta;
  shard.Collect(&delta);
  f.registry.Add(delta, 1);
  CHECK_THAT(f.registry.PrometheusText(), Catch::Contains("src_pod=\"p\\\"q\\\\r\\ns\""));
  CHECK_THAT(f.registry.PrometheusText(), Catch::Contains("dst_owner_kind=\"External\""));
}

TEST_CASE("registry: series idle past the retention leave /metrics and free their names") {
  RegistryFixture f;
  const IdentityTable::Id emoji =
      f.identities.Intern({"emojivoto", "emoji-1", "Deployment", "emoji", "emoji", "n1"});
  Shard shard;
  shard.CountRequest({{f.web, f.voting, Direction::kOutbound}, 0});
  Delta old;
  shard.Collect(&old);
  f.registry.Add(old, 100);
  TcpSeries* open = shard.OpenConnection({f.web, emoji, Direction::kOutbound});
  Delta recent;
  shard.Collect(&recent);
  f.registry.Add(recent, 160);

  f.registry.ForgetIdle(150);
  const std::string text = f.registry.PrometheusText();
  CHECK_THAT(text, !Catch::Contains("dst_pod=\"voting-1\""));
  CHECK_THAT(text, Catch::Contains("dst_pod=\"emoji-1\""));
  absl::flat_hash_set<IdentityTable::Id> referenced;
  f.registry.AddReferencedIdentities(&referenced);
  CHECK(referenced == absl::flat_hash_set<IdentityTable::Id>{f.web, emoji});

  // An open connection keeps its series reported, so it never goes idle.
  for (int64_t second = 161; second < 400; ++second) {
    Delta delta;
    shard.Collect(&delta);
    f.registry.Add(delta, second);
  }
  f.registry.ForgetIdle(390);
  CHECK_THAT(f.registry.PrometheusText(), Catch::Contains("tcp_open_connections{"));
  Shard::CloseConnection(open, 1, false);
}

TEST_CASE("shard: idle series are evicted, open connections never") {
  Shard shard;
  const TrafficKey a{1, 2, Direction::kOutbound}, b{1, 3, Direction::kOutbound};
  shard.CountRequest({a, 0});
  TcpSeries* open = shard.OpenConnection(b);
  Delta delta;
  for (int i = 0; i < 5; ++i) shard.Collect(&delta, /*evict_after=*/2);
  delta = {};
  shard.CountRequest({a, 0});  // comes back as a fresh series
  open->read_bytes += 1;       // still valid: the open series was kept
  shard.Collect(&delta, 2);
  REQUIRE(delta.requests.size() == 1);
  CHECK(delta.requests[0].requests == 1);
  REQUIRE(delta.tcp.size() == 1);
  CHECK(delta.tcp[0].read_bytes == 1);
  CHECK(delta.tcp[0].open_now == 1);
}

}  // namespace
}  // namespace nodemesh::metrics
