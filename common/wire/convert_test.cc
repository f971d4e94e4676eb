// The metric model in wire form: round trips, and a delta's identities and routes sent once.
#include "common/wire/convert.h"

#include <catch2/catch.hpp>
#include <string>

#include "common/metrics/histogram.h"

namespace nodemesh::wire {
namespace {

TEST_CASE("identities and directions survive the wire", "[unit]") {
  const metrics::Identity web{"emojivoto", "web-1", "Deployment", "web", "web-sa", "node-1"};
  CHECK(FromProto(ToProto(web)) == web);
  CHECK(FromProto(ToProto(metrics::ExternalIdentity())) == metrics::ExternalIdentity());
  CHECK(FromProto(ToProto(metrics::Direction::kOutbound)) == metrics::Direction::kOutbound);
  CHECK(FromProto(ToProto(metrics::Direction::kInbound)) == metrics::Direction::kInbound);
  CHECK_FALSE(FromProto(v1::DIRECTION_UNSPECIFIED).has_value());
}

TEST_CASE("every way a stream ends has its tap reason", "[unit]") {
  CHECK(ToProto(parsers::EndReason::kComplete) == v1::TapEnd::COMPLETE);
  CHECK(ToProto(parsers::EndReason::kReset) == v1::TapEnd::RESET);
  CHECK(ToProto(parsers::EndReason::kRefused) == v1::TapEnd::REFUSED);
  CHECK(ToProto(parsers::EndReason::kAborted) == v1::TapEnd::ABORTED);
}

TEST_CASE("histograms keep their buckets: buckets outside the layout are dropped", "[unit]") {
  const metrics::SparseHistogram histogram{{{3, 7}, {700, 1}}, 12345};
  v1::Histogram proto = ToProto(histogram);
  CHECK(proto.sum_ns() == 12345);
  CHECK(FromProto(proto) == histogram.buckets);
  proto.add_buckets(metrics::Histogram::kBuckets);
  proto.add_counts(9);
  CHECK(FromProto(proto) == histogram.buckets);
}

TEST_CASE("a delta names each identity and route once, and series refer to them", "[unit]") {
  const metrics::Identity names[] = {metrics::ExternalIdentity(),
                                     {"emojivoto", "web-1", "Deployment", "web", "web", "n1"},
                                     {"emojivoto", "voting-1", "Deployment", "voting", "v", "n2"}};
  const std::string routes[] = {"GET /", "/emojivoto.v1.VotingService/VoteDoughnut"};
  const metrics::TrafficKey web_to_voting{1, 2, metrics::Direction::kOutbound};
  metrics::Delta delta;
  delta.requests.push_back({{web_to_voting, 1}, 10});
  delta.responses.push_back({metrics::ResponseKey{{web_to_voting, 1}, 200, 2, true}, 10, {}, {}});
  delta.tcp.push_back({web_to_voting, 1, 0, 0, 1, 100, 200, {}});
  delta.tcp.push_back(
      {metrics::TrafficKey{0, 1, metrics::Direction::kInbound}, 1, 1, 0, 0, 5, 6, {}});

  const v1::MetricsDelta proto = ToProto(
      delta, [&](uint32_t id) { return names[id]; }, [&](uint32_t id) { return routes[id]; },
      1'700'000'000);
  CHECK(proto.unix_seconds() == 1'700'000'000);
  REQUIRE(proto.identities_size() == 3);  // web, voting, external: once each
  REQUIRE(proto.routes_size() == 1);
  CHECK(proto.routes(0) == routes[1]);
  const auto identity_at = [&](uint32_t index) { return FromProto(proto.identities(index)); };
  CHECK(identity_at(proto.requests(0).traffic().source()) == names[1]);
  CHECK(identity_at(proto.requests(0).traffic().destination()) == names[2]);
  CHECK(proto.responses(0).grpc_status() == 2);
  CHECK(proto.responses(0).failure());
  CHECK(proto.tcp(0).write_bytes() == 200);
  CHECK(identity_at(proto.tcp(1).traffic().source()) == metrics::ExternalIdentity());
  CHECK(proto.tcp(1).traffic().direction() == v1::INBOUND);
}

TEST_CASE("the Service a connection was dialled to travels with its key, once", "[unit]") {
  const metrics::Identity names[] = {metrics::ExternalIdentity(),
                                     {"emojivoto", "web-1", "Deployment", "web", "web", "n1"},
                                     {"emojivoto", "voting-1", "Deployment", "voting", "v", "n2"},
                                     {"emojivoto", "", "Service", "voting-svc", "", ""}};
  const std::string routes[] = {"GET /"};
  metrics::Delta delta;
  // Reached a pod through the Service; the Service's NAT unknown (External); no Service.
  delta.tcp.push_back({{1, 2, metrics::Direction::kOutbound, 3}, 1, 0, 0, 1, 0, 0, {}});
  delta.tcp.push_back({{1, 0, metrics::Direction::kOutbound, 3}, 1, 0, 0, 1, 0, 0, {}});
  delta.requests.push_back({{{1, 2, metrics::Direction::kOutbound, 3}, 0}, 4});
  delta.tcp.push_back({{1, 2, metrics::Direction::kOutbound}, 1, 0, 0, 1, 0, 0, {}});

  const v1::MetricsDelta proto = ToProto(
      delta, [&](uint32_t id) { return names[id]; }, [&](uint32_t id) { return routes[id]; }, 1);
  REQUIRE(proto.identities_size() == 4);
  const auto identity_at = [&](uint32_t index) { return FromProto(proto.identities(index)); };
  REQUIRE(proto.tcp(0).traffic().has_service());
  CHECK(identity_at(proto.tcp(0).traffic().service()) == names[3]);
  CHECK(identity_at(proto.tcp(0).traffic().destination()) == names[2]);
  REQUIRE(proto.tcp(1).traffic().has_service());
  CHECK(proto.tcp(1).traffic().service() == proto.tcp(0).traffic().service());
  CHECK(identity_at(proto.tcp(1).traffic().destination()) == metrics::ExternalIdentity());
  REQUIRE(proto.requests(0).traffic().has_service());
  CHECK(identity_at(proto.requests(0).traffic().service()) == names[3]);
  // No Service: the field is absent, as from an agent that predates it.
  CHECK_FALSE(proto.tcp(2).traffic().has_service());

  // An old reader skips the unknown field; a new reader of old bytes sees no Service.
  v1::TrafficKey old_key;
  old_key.set_source(1);
  old_key.set_destination(2);
  old_key.set_direction(v1::OUTBOUND);
  v1::TrafficKey parsed;
  REQUIRE(parsed.ParseFromString(old_key.SerializeAsString()));
  CHECK_FALSE(parsed.has_service());
}

}  // namespace
}  // namespace nodemesh::wire
