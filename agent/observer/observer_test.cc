// A connection's observer without sockets or a worker: bytes in as a relay passes them,
// metric records, counters and tap events out.
#include "agent/observer/observer.h"

#include <catch2/catch.hpp>
#include <memory>
#include <string>
#include <vector>

#include "common/metrics/classification.h"
#include "test/lib/capture.h"
#include "test/lib/recording_sink.h"

namespace nodemesh::agent {
namespace {

Endpoint At(const char* ip, uint16_t port) { return Endpoint{*IpAddress::Parse(ip), port}; }

const Endpoint kWebAddress = At("10.77.0.11", 40000);
const Endpoint kVotingAddress = At("10.77.0.12", 8080);

ServiceDirectory::Map ServiceDirectoryOf(const IpAddress& cluster_ip,
                                         metrics::IdentityTable::Id service) {
  ServiceDirectory::Map map;
  map.Set(cluster_ip, service);
  return map;
}

// One worker's observation context, with web-1 as the enrolled pod and voting-1 as a peer
// the address directory names.
struct ObserverFixture {
  metrics::IdentityTable identities;
  metrics::RouteTable routes{100};
  PeerDirectory directory;
  ServiceDirectory services;
  TapSubscriptions tap;
  std::string node = "node-1";
  ObserverOptions options;
  AgentTables tables{identities, routes, directory, services, tap, node};
  std::unique_ptr<ObserverContext> context;
  metrics::IdentityTable::Id web =
      identities.Intern({"emojivoto", "web-1", "Deployment", "web", "web", "node-1"});
  metrics::IdentityTable::Id voting =
      identities.Intern({"emojivoto", "voting-1", "Deployment", "voting", "voting", "node-2"});
  std::shared_ptr<const PodView> pod;
  int64_t now = 1'000'000'000;

  ObserverFixture() {
    options.parser_config.captured_headers = {"content-type", "authorization"};
    context = std::make_unique<ObserverContext>(tables, options, 0, 1);
    directory.Replace({{kWebAddress.ip, web}, {kVotingAddress.ip, voting}});
    PodInfo info;
    info.namespace_name = "emojivoto";
    info.name = "web-1";
    pod = std::make_shared<const PodView>(PodView{info, web});
  }
  // web-1 calling voting-1 (or `destination`), as an outbound relay sees it.
  std::unique_ptr<ConnectionObserver> Outbound(const Endpoint& destination = kVotingAddress) {
    auto observer = std::make_unique<ConnectionObserver>(
        *context, pod, Direction::kOutbound, At("127.0.0.1", 51000), destination,
        [] { return kWebAddress; }, now);
    observer->OnConnected(now);
    return observer;
  }
  metrics::Delta Collect() {
    metrics::Delta delta;
    context->shard().Collect(&delta);
    return delta;
  }
  uint64_t Protocol(parsers::Protocol protocol) const {
    return context->stats().protocols[static_cast<size_t>(protocol)].value();
  }
};

constexpr std::string_view kVoteRequest =
    "POST /api/vote?choice=doughnut HTTP/1.1\r\nHost: web:8080\r\nAuthorization: Bearer s3cret\r\n"
    "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
constexpr std::string_view kFailure =
    "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\r\nbusy";

TEST_CASE("observer: an HTTP/1 exchange is counted between the pod and the peer it named",
          "[unit]") {
  ObserverFixture f;
  std::unique_ptr<ConnectionObserver> observer = f.Outbound();
  CHECK(observer->protocol_name() == "detecting");
  observer->OnBytes(Side::kClient, kVoteRequest, f.now + 1'000);
  observer->OnBytes(Side::kUpstream, kFailure, f.now + 3'000'000);
  observer->OnHalfClose(Side::kClient, f.now + 4'000'000);
  observer->OnClosed(RelayEnd::kClosed, f.now + 5'000'000);
  CHECK(observer->protocol_name() == "http1");
  CHECK(observer->requests() == 1);

  const metrics::Delta delta = f.Collect();
  const metrics::TrafficKey traffic{f.web, f.voting, Direction::kOutbound};
  REQUIRE(delta.requests.size() == 1);
  CHECK(delta.requests[0].key.traffic == traffic);
  CHECK(f.routes.Get(delta.requests[0].key.route) == "POST /api/vote");
  REQUIRE(delta.responses.size() == 1);
  CHECK(delta.responses[0].key.status == 503);
  CHECK(delta.responses[0].key.failure);
  REQUIRE(delta.tcp.size() == 1);
  CHECK(delta.tcp[0].key == traffic);
  CHECK(delta.tcp[0].opened == 1);
  CHECK(delta.tcp[0].closed == 1);
  CHECK(delta.tcp[0].closed_failed == 0);
  CHECK(delta.tcp[0].read_bytes == kVoteRequest.size());
  CHECK(delta.tcp[0].write_bytes == kFailure.size());
  CHECK(f.Protocol(parsers::Protocol::kHttp1) == 1);
  CHECK(f.context->stats().requests.value() == 1);
  CHECK(f.context->stats().bytes_to_upstream.value() == kVoteRequest.size());
}

TEST_CASE("observer: inbound, the caller is named from its address", "[unit]") {
  ObserverFixture f;
  ConnectionObserver observer(
      *f.context, f.pod, Direction::kInbound, kVotingAddress, At("10.77.0.11", 8080),
      [] { return kVotingAddress; }, f.now);
  observer.OnClosed(RelayEnd::kReset, f.now + 1);
  const metrics::Delta delta = f.Collect();
  REQUIRE(delta.tcp.size() == 1);
  CHECK(delta.tcp[0].key == metrics::TrafficKey{f.voting, f.web, Direction::kInbound});
  CHECK(delta.tcp[0].closed_failed == 1);  // a reset is a failed connection
}

TEST_CASE("observer: a parse failure makes the rest opaque, counted with its reason", "[unit]") {
  ObserverFixture f;
  std::unique_ptr<ConnectionObserver> observer = f.Outbound();
  observer->OnBytes(Side::kClient, "GET / HTTP/1.1\r\nHost: a\r\n\r\n", f.now);
  observer->OnBytes(Side::kUpstream, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", f.now);
  observer->OnBytes(Side::kUpstream, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", f.now);
  // Whatever comes after is counted as bytes only.
  observer->OnBytes(Side::kClient, "GET /more HTTP/1.1\r\nHost: a\r\n\r\n", f.now);
  const ObserverStats& stats = f.context->stats();
  CHECK(stats.parse_failures.value() == 1);
  const auto http1 = static_cast<size_t>(parsers::Protocol::kHttp1);
  const auto unexpected = static_cast<size_t>(parsers::ParseError::kUnexpectedResponse);
  CHECK(stats.parse_errors[http1][unexpected].value() == 1);
  CHECK(observer->requests() == 1);
  observer->OnClosed(RelayEnd::kClosed, f.now);
}

TEST_CASE("observer: a gRPC connection whose server speaks first is parsed as HTTP/2", "[unit]") {
  // The recorded server sends its SETTINGS before the client's preface.
  const std::vector<testing::Segment> segments =
      testing::ReadCapture(testing::FixturePath("parsers/grpc-unary.capture"));
  REQUIRE(segments.front().from == parsers::Peer::kServer);
  testing::RecordingSink expected;
  const parsers::ParserConfig config;
  std::unique_ptr<parsers::ConnectionParser> parser =
      parsers::MakeParser(parsers::Protocol::kHttp2, config, expected);
  testing::Replay(segments, *parser);

  ObserverFixture f;
  std::unique_ptr<ConnectionObserver> observer = f.Outbound();
  int64_t at = f.now;
  for (const testing::Segment& segment : segments) {
    const Side from = segment.from == parsers::Peer::kClient ? Side::kClient : Side::kUpstream;
    if (segment.eof) {
      observer->OnHalfClose(from, ++at);
    } else {
      observer->OnBytes(from, segment.bytes, ++at);
    }
  }
  observer->OnClosed(RelayEnd::kClosed, ++at);
  CHECK(observer->protocol_name() == "http2");
  CHECK(f.context->stats().parse_failures.value() == 0);
  CHECK(observer->requests() == expected.requests().size());
  uint64_t responses = 0, failures = 0;
  for (const metrics::ResponseSample& sample : f.Collect().responses) {
    responses += sample.responses;
    if (sample.key.failure) failures += sample.responses;
    CHECK(f.routes.Get(sample.key.request.route).starts_with("/nodemesh.test.Echo/"));
  }
  CHECK(responses == expected.ends().size());
  uint64_t expected_failures = 0;
  for (const parsers::StreamEnd& end : expected.ends()) {
    expected_failures += metrics::IsFailure(end.status, end.grpc_status.value_or(-1), end.reason);
  }
  CHECK(failures == expected_failures);
  CHECK(failures > 0);
}

TEST_CASE("observer: without an HTTP/2 preface, a server that speaks first means opaque",
          "[unit]") {
  ObserverFixture f;
  std::unique_ptr<ConnectionObserver> observer = f.Outbound();
  observer->OnBytes(Side::kUpstream, "220 mail.example ESMTP ready\r\n", f.now);
  observer->OnBytes(Side::kClient, "GET / HTTP/1.1\r\nHost: a\r\n\r\n", f.now);
  CHECK(observer->protocol_name() == "opaque");
  CHECK(observer->requests() == 0);
  // A server that says more than a preface's worth before the client decides is opaque too.
  std::unique_ptr<ConnectionObserver> chatty = f.Outbound();
  chatty->OnBytes(Side::kUpstream, std::string(5000, 'x'), f.now);
  CHECK(chatty->protocol_name() == "opaque");
  CHECK(f.Protocol(parsers::Protocol::kOpaque) == 2);
  observer->OnClosed(RelayEnd::kClosed, f.now);
  chatty->OnClosed(RelayEnd::kClosed, f.now);
}

TEST_CASE("observer: a side that ends before the protocol is known makes it opaque", "[unit]") {
  ObserverFixture f;
  std::unique_ptr<ConnectionObserver> observer = f.Outbound();
  observer->OnBytes(Side::kClient, "GE", f.now);
  CHECK(observer->protocol_name() == "detecting");
  observer->OnHalfClose(Side::kClient, f.now);
  CHECK(observer->protocol_name() == "opaque");
  CHECK(f.Protocol(parsers::Protocol::kOpaque) == 1);
  observer->OnClosed(RelayEnd::kClosed, f.now);
}

TEST_CASE("observer: with L7 off every connection is opaque from its first byte", "[unit]") {
  ObserverFixture f;
  f.options.l7 = false;
  std::unique_ptr<ConnectionObserver> observer = f.Outbound();
  CHECK(observer->protocol_name() == "opaque");
  observer->OnBytes(Side::kClient, kVoteRequest, f.now);
  observer->OnBytes(Side::kUpstream, kFailure, f.now);
  observer->OnClosed(RelayEnd::kClosed, f.now);
  const metrics::Delta delta = f.Collect();
  CHECK(delta.requests.empty());
  REQUIRE(delta.tcp.size() == 1);
  CHECK(delta.tcp[0].read_bytes == kVoteRequest.size());
}

TEST_CASE("observer: bytes it no longer reads are counted as the bytes it read", "[unit]") {
  ObserverFixture f;
  SECTION("L7 off: from the first byte") {
    f.options.l7 = false;
    std::unique_ptr<ConnectionObserver> observer = f.Outbound();
    CHECK_FALSE(observer->Watching(Side::kClient));
    CHECK_FALSE(observer->Watching(Side::kUpstream));
    observer->OnBytesUnseen(Side::kClient, 1000, f.now);
    observer->OnBytesUnseen(Side::kUpstream, 70000, f.now);
    observer->OnClosed(RelayEnd::kClosed, f.now);
  }
  SECTION("TLS: once its ClientHello is seen") {
    std::unique_ptr<ConnectionObserver> observer = f.Outbound();
    CHECK(observer->Watching(Side::kClient));
    CHECK(observer->Watching(Side::kUpstream));
    // A handshake record holding an empty ClientHello: enough to tell TLS.
    const std::string_view hello("\x16\x03\x01\x00\x04\x01\x00\x00\x00", 9);
    observer->OnBytes(Side::kClient, hello, f.now);
    CHECK(observer->protocol_name() == "tls");
    CHECK_FALSE(observer->Watching(Side::kClient));
    CHECK_FALSE(observer->Watching(Side::kUpstream));
    observer->OnBytesUnseen(Side::kClient, 1000 - hello.size(), f.now);
    observer->OnBytesUnseen(Side::kUpstream, 70000, f.now);
    observer->OnClosed(RelayEnd::kClosed, f.now);
  }
  SECTION("a parser that stopped: what follows its failure") {
    std::unique_ptr<ConnectionObserver> observer = f.Outbound();
    const std::string_view response = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    observer->OnBytes(Side::kClient, kVoteRequest, f.now);
    observer->OnBytes(Side::kUpstream, response, f.now);
    CHECK(observer->Watching(Side::kClient));
    observer->OnBytes(Side::kUpstream, response, f.now);  // a response to no request
    CHECK(f.context->stats().parse_failures.value() == 1);
    CHECK_FALSE(observer->Watching(Side::kClient));
    CHECK_FALSE(observer->Watching(Side::kUpstream));
    observer->OnBytesUnseen(Side::kClient, 1000 - kVoteRequest.size(), f.now);
    observer->OnBytesUnseen(Side::kUpstream, 70000 - 2 * response.size(), f.now);
    observer->OnClosed(RelayEnd::kClosed, f.now);
  }
  const metrics::Delta delta = f.Collect();
  REQUIRE(delta.tcp.size() == 1);
  CHECK(delta.tcp[0].read_bytes == 1000);
  CHECK(delta.tcp[0].write_bytes == 70000);
  CHECK(f.context->stats().bytes_to_upstream.value() == 1000);
  CHECK(f.context->stats().bytes_to_client.value() == 70000);
}

TEST_CASE("observer: a tapped request gives request, response and end events, credentials hidden",
          "[unit]") {
  ObserverFixture f;
  TapFilter filter;
  filter.id = 7;
  filter.destinations = {"emojivoto/voting-1"};
  f.tap.Add(filter);
  TapFilter elsewhere;
  elsewhere.id = 8;
  elsewhere.destinations = {"emojivoto/emoji-1"};
  f.tap.Add(elsewhere);

  std::unique_ptr<ConnectionObserver> observer = f.Outbound();
  observer->OnBytes(Side::kClient, kVoteRequest, f.now);
  observer->OnBytes(Side::kUpstream, kFailure, f.now + 2'000'000);
  std::vector<v1::TapEvent> events;
  CHECK(f.context->tap_outbox().Drain(&events) == 0);
  REQUIRE(events.size() == 3);
  for (const v1::TapEvent& event : events) {
    CHECK(event.subscription() == 7);
    CHECK(event.request_id() == "node-1:0-1:1");
    CHECK(event.source().pod() == "web-1");
    CHECK(event.destination().pod() == "voting-1");
    CHECK(event.source_address() == "10.77.0.11:40000");
    CHECK(event.destination_address() == "10.77.0.12:8080");
    CHECK(event.direction() == v1::OUTBOUND);
  }
  REQUIRE(events[0].has_request());
  CHECK(events[0].request().method() == "POST");
  CHECK(events[0].request().path() == "/api/vote?choice=doughnut");
  CHECK(events[0].request().headers().at("authorization") == "[redacted]");
  CHECK(events[0].request().headers().at("content-type") == "application/json");
  REQUIRE(events[1].has_response());
  CHECK(events[1].response().status() == 503);
  CHECK(events[1].response().latency_ns() == 2'000'000);
  REQUIRE(events[2].has_end());
  CHECK(events[2].end().reason() == v1::TapEnd::COMPLETE);
  CHECK(events[2].end().response_bytes() == 4);
  observer->OnClosed(RelayEnd::kClosed, f.now);
}

TEST_CASE("observer: a connection dialled to a Service is named by the pod its NAT chose",
          "[unit]") {
  ObserverFixture f;
  const Endpoint cluster_ip = At("10.96.0.20", 80);
  const metrics::IdentityTable::Id service =
      f.identities.Intern({"emojivoto", "", "Service", "voting-svc", "", ""});
  f.services.Replace(ServiceDirectoryOf(cluster_ip.ip, service));
  TapFilter filter;
  filter.id = 7;
  filter.destinations = {"emojivoto/voting-1"};
  f.tap.Add(filter);

  // Until it connects, it is counted nowhere: not under the cluster IP (External).
  ConnectionObserver observer(
      *f.context, f.pod, Direction::kOutbound, At("127.0.0.1", 51000), cluster_ip,
      [] { return kWebAddress; }, f.now);
  CHECK(observer.dialled_service());
  CHECK(f.Collect().tcp.empty());
  observer.SetTranslatedDestination(kVotingAddress);
  observer.OnConnected(f.now);
  observer.OnBytes(Side::kClient, kVoteRequest, f.now);
  observer.OnBytes(Side::kUpstream, kFailure, f.now + 2'000'000);
  observer.OnClosed(RelayEnd::kClosed, f.now + 3'000'000);

  const metrics::TrafficKey traffic{f.web, f.voting, Direction::kOutbound, service};
  const metrics::Delta delta = f.Collect();
  REQUIRE(delta.tcp.size() == 1);
  CHECK(delta.tcp[0].key == traffic);
  CHECK(delta.tcp[0].opened == 1);
  CHECK(delta.tcp[0].closed == 1);
  REQUIRE(delta.requests.size() == 1);
  CHECK(delta.requests[0].key.traffic == traffic);
  REQUIRE(delta.responses.size() == 1);
  CHECK(delta.responses[0].key.request.traffic == traffic);

  // Tap sees the pod reached, the Service dialled, and the address dialled.
  std::vector<v1::TapEvent> events;
  f.context->tap_outbox().Drain(&events);
  REQUIRE(events.size() == 3);
  CHECK(events[0].destination().pod() == "voting-1");
  CHECK(events[0].destination_service().owner_kind() == "Service");
  CHECK(events[0].destination_service().owner_name() == "voting-svc");
  CHECK(events[0].destination_address() == "10.96.0.20:80");
}

TEST_CASE("observer: a Service connection whose NAT is unknown stays the cluster IP's", "[unit]") {
  ObserverFixture f;
  const Endpoint cluster_ip = At("10.96.0.20", 80);
  const metrics::IdentityTable::Id service =
      f.identities.Intern({"emojivoto", "", "Service", "voting-svc", "", ""});
  f.services.Replace(ServiceDirectoryOf(cluster_ip.ip, service));
  const metrics::TrafficKey unknown{f.web, metrics::IdentityTable::kExternal, Direction::kOutbound,
                                    service};

  ConnectionObserver observer(
      *f.context, f.pod, Direction::kOutbound, At("127.0.0.1", 51000), cluster_ip,
      [] { return kWebAddress; }, f.now);
  observer.SetTranslatedDestination(std::nullopt);
  observer.OnConnected(f.now);
  observer.OnClosed(RelayEnd::kClosed, f.now + 1);
  // Refused before any pod was reached: counted, failed, under the cluster IP.
  ConnectionObserver refused(
      *f.context, f.pod, Direction::kOutbound, At("127.0.0.1", 51002), cluster_ip,
      [] { return kWebAddress; }, f.now);
  refused.OnClosed(RelayEnd::kRefused, f.now + 1);

  const metrics::Delta delta = f.Collect();
  REQUIRE(delta.tcp.size() == 1);
  CHECK(delta.tcp[0].key == unknown);
  CHECK(delta.tcp[0].opened == 2);
  CHECK(delta.tcp[0].closed_failed == 1);

  // Inbound connections name no Service, whatever address they came to.
  ConnectionObserver inbound(
      *f.context, f.pod, Direction::kInbound, kVotingAddress, cluster_ip,
      [] { return kVotingAddress; }, f.now);
  CHECK_FALSE(inbound.dialled_service());
  inbound.OnClosed(RelayEnd::kClosed, f.now + 1);
}

}  // namespace
}  // namespace nodemesh::agent
