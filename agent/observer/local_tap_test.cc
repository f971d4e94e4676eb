// Local taps (the admin API's): sessions opened by their first poll, events routed to the
// session whose subscription they carry, bounded queues, and sessions ended when nobody
// polls them.
#include "agent/observer/local_tap.h"

#include <google/protobuf/util/json_util.h>

#include <catch2/catch.hpp>
#include <limits>

namespace nodemesh::agent {
namespace {

using namespace std::chrono_literals;

struct LocalTapFixture {
  TapSubscriptions subscriptions;
  std::vector<v1::TapEvent> outbox;  // what the workers tapped, waiting
  uint64_t outbox_dropped = 0;
  LocalTaps taps{subscriptions,
                 [this](std::vector<v1::TapEvent>* out) {
                   for (v1::TapEvent& event : outbox) out->push_back(std::move(event));
                   outbox.clear();
                   return std::exchange(outbox_dropped, 0);
                 },
                 LocalTapOptions{.max_sessions = 2, .max_queued_events = 3, .idle_timeout = 10s}};
  LocalTaps::Clock::time_point now{};

  // The subscription id the workers see for the session's filter.
  uint64_t SubscriptionOf(const std::string& path_prefix) const {
    for (const TapFilter& filter : *subscriptions.Current()) {
      if (filter.path_prefix == path_prefix) return filter.id;
    }
    return 0;
  }
  void Tapped(uint64_t subscription, const std::string& request_id) {
    v1::TapEvent event;
    event.set_subscription(subscription);
    event.set_request_id(request_id);
    outbox.push_back(event);
  }
};

TapFilter PathFilter(const std::string& prefix) {
  TapFilter filter;
  filter.path_prefix = prefix;
  filter.either = {"shop/web-1"};
  filter.max_rps = 100;
  return filter;
}

TEST_CASE("local taps: each session gets its own events and only those", "[tap]") {
  LocalTapFixture f;
  REQUIRE(f.taps.Poll("a", PathFilter("/a"), f.now).ok());
  REQUIRE(f.taps.Poll("b", PathFilter("/b"), f.now).ok());
  const uint64_t a = f.SubscriptionOf("/a");
  const uint64_t b = f.SubscriptionOf("/b");
  CHECK(IsLocalTap(a));
  CHECK(IsLocalTap(b));
  CHECK(a != b);
  f.Tapped(a, "1");
  f.Tapped(b, "2");
  f.Tapped(a, "3");
  f.Tapped(kLocalTapBit | 999, "of a session that ended");
  absl::StatusOr<LocalTaps::Batch> batch = f.taps.Poll("a", PathFilter("/a"), f.now);
  REQUIRE(batch.ok());
  REQUIRE(batch->events.size() == 2);
  CHECK(batch->events[0].request_id() == "1");
  CHECK(batch->events[1].request_id() == "3");
  batch = f.taps.Poll("b", PathFilter("/b"), f.now);
  REQUIRE(batch.ok());
  REQUIRE(batch->events.size() == 1);
  CHECK(batch->events[0].request_id() == "2");
  CHECK(f.taps.Poll("a", PathFilter("/a"), f.now)->events.empty());
}

TEST_CASE("local taps: bounded sessions and queues, one filter per session", "[tap]") {
  LocalTapFixture f;
  REQUIRE(f.taps.Poll("a", PathFilter("/a"), f.now).ok());
  REQUIRE(f.taps.Poll("b", PathFilter("/b"), f.now).ok());
  const absl::StatusOr<LocalTaps::Batch> third = f.taps.Poll("c", PathFilter("/c"), f.now);
  CHECK(absl::IsResourceExhausted(third.status()));
  CHECK(third.status().message() ==
        "2 taps are open on this agent already; end one (each ends 10 s after its last poll)");
  CHECK(absl::IsFailedPrecondition(f.taps.Poll("a", PathFilter("/other"), f.now).status()));

  const uint64_t a = f.SubscriptionOf("/a");
  for (int i = 0; i < 5; ++i) f.Tapped(a, std::to_string(i));
  f.outbox_dropped = 4;  // the workers' own queues overflowed too: every session hears it
  absl::StatusOr<LocalTaps::Batch> batch = f.taps.Poll("a", PathFilter("/a"), f.now);
  REQUIRE(batch.ok());
  CHECK(batch->events.size() == 3);
  CHECK(batch->dropped == 2 + 4);
  CHECK(f.taps.Poll("b", PathFilter("/b"), f.now)->dropped == 4);
}

TEST_CASE("local taps: a session nobody polls ends and its subscription goes", "[tap]") {
  LocalTapFixture f;
  REQUIRE(f.taps.Poll("a", PathFilter("/a"), f.now).ok());
  REQUIRE(f.taps.Poll("b", PathFilter("/b"), f.now).ok());
  // The aggregator's subscriptions are not the local taps' to end.
  TapFilter remote;
  remote.id = 7;
  f.subscriptions.Add(remote);
  f.taps.Expire(f.now + 5s);
  CHECK(f.taps.sessions() == 2);
  REQUIRE(f.taps.Poll("b", PathFilter("/b"), f.now + 5s).ok());
  f.taps.Expire(f.now + 12s);
  CHECK(f.taps.sessions() == 1);
  CHECK(f.SubscriptionOf("/a") == 0);
  CHECK(f.SubscriptionOf("/b") != 0);
  f.subscriptions.Remove(7);  // the aggregator's stream ended
  REQUIRE(f.subscriptions.Current()->size() == 1);
  CHECK(IsLocalTap(f.subscriptions.Current()->front().id));
  f.taps.Expire(f.now + 20s);
  CHECK(f.taps.sessions() == 0);
  CHECK(f.subscriptions.Current()->empty());
  CHECK_FALSE(f.subscriptions.active());
}

TEST_CASE("tap filter: either end may be the pod", "[tap]") {
  TapFilter filter;
  filter.either = {"shop/web-1"};
  metrics::Identity web, db;
  web.namespace_name = db.namespace_name = "shop";
  web.pod = "web-1";
  db.pod = "db-1";
  const metrics::Identity external{};
  parsers::RequestStart request;
  CHECK(filter.Matches(web, db, nullptr, request, "/"));
  CHECK(filter.Matches(db, web, nullptr, request, "/"));
  CHECK(filter.Matches(external, web, nullptr, request, "/"));
  CHECK_FALSE(filter.Matches(db, external, nullptr, request, "/"));
}

TEST_CASE("tap filter: a Service matches only requests dialled to it", "[tap]") {
  v1::TapSubscription subscription;
  subscription.mutable_match()->add_destination_services("shop/web-svc");
  const TapFilter filter = TapFilter::FromProto(subscription);
  metrics::Identity web;
  web.namespace_name = "shop";
  web.pod = "web-1";
  const metrics::Identity dialled = metrics::ServiceIdentity("shop", "web-svc");
  const metrics::Identity other = metrics::ServiceIdentity("shop", "db-svc");
  const metrics::Identity elsewhere = metrics::ServiceIdentity("books", "web-svc");
  parsers::RequestStart request;
  CHECK(filter.Matches(web, web, &dialled, request, "/"));
  CHECK_FALSE(filter.Matches(web, web, nullptr, request, "/"));  // dialled to the pod itself
  CHECK_FALSE(filter.Matches(web, web, &other, request, "/"));
  CHECK_FALSE(filter.Matches(web, web, &elsewhere, request, "/"));
  // No Service asked for: any request, dialled to a Service or not.
  CHECK(TapFilter{}.Matches(web, web, &dialled, request, "/"));
  CHECK(TapFilter{}.Matches(web, web, nullptr, request, "/"));
}

TEST_CASE("tap redaction: named headers and queries are hidden before an event is made", "[tap]") {
  TapRedaction redaction;
  CHECK(TapHeaderValue(redaction, {"authorization", "Bearer s3cret"}) == "[redacted]");
  CHECK(TapHeaderValue(redaction, {"user-agent", "curl/7.88"}) == "curl/7.88");
  std::string storage;
  CHECK(TapPath(redaction, "/login?token=s3cret", &storage) == "/login?token=s3cret");
  redaction.headers = {"x-session"};
  redaction.strip_query = true;
  CHECK(TapHeaderValue(redaction, {"x-session", "abc"}) == "[redacted]");
  CHECK(TapHeaderValue(redaction, {"authorization", "Bearer s3cret"}) == "Bearer s3cret");
  CHECK(TapPath(redaction, "/login?token=s3cret", &storage) == "/login?[redacted]");
  CHECK(TapPath(redaction, "/login", &storage) == "/login");
  // A filter's path prefix sees the path as tap shows it: it cannot probe the query.
  TapFilter filter;
  filter.path_prefix = "/login?token=s";
  parsers::RequestStart request;
  request.path = "/login?token=s3cret";
  const metrics::Identity anyone;
  CHECK(filter.Matches(anyone, anyone, nullptr, request, request.path));
  CHECK_FALSE(
      filter.Matches(anyone, anyone, nullptr, request, TapPath(redaction, request.path, &storage)));
}

TEST_CASE("local taps: events in JSON read as protobuf's own JSON printer writes them") {
  v1::TapEvent request;
  request.set_subscription(kLocalTapBit | 7);  // above 2^63: a string
  request.set_request_id("node-1:0-3:1");
  request.mutable_source()->set_namespace_("emojivoto");
  request.mutable_source()->set_pod("vote-bot-1");
  request.mutable_destination()->set_owner_kind("External");
  request.mutable_destination_service()->set_owner_name("web-svc");
  request.set_source_address("10.77.0.11:40312");
  request.set_direction(v1::OUTBOUND);
  request.set_unix_micros(1'765'000'000'000'000);
  v1::TapRequest& head = *request.mutable_request();
  head.set_method("GET");
  head.set_path("/api/vote?choice=\"\\\u00e9\n");  // escapes, and UTF-8
  (*head.mutable_headers())["user-agent"] = "curl/8";
  (*head.mutable_headers())["content-type"] = "";
  v1::TapEvent response;
  response.set_request_id("node-1:0-3:1");
  response.mutable_response()->set_status(503);
  response.mutable_response()->set_latency_ns(-1);
  v1::TapEvent end;
  end.mutable_end()->set_reason(v1::TapEnd::ABORTED);
  end.mutable_end()->set_grpc_status(-1);
  end.mutable_end()->set_response_bytes(std::numeric_limits<uint64_t>::max());
  end.mutable_end()->set_duration_ns(std::numeric_limits<int64_t>::min());
  v1::TapEvent empty_kinds;
  empty_kinds.mutable_end();  // a oneof member set to its defaults is still there
  const std::vector<v1::TapEvent> events = {request, response, end, empty_kinds, v1::TapEvent()};

  const nlohmann::json ours = TapEventsJson(events);
  REQUIRE(ours.size() == events.size());
  google::protobuf::util::JsonPrintOptions print;
  print.preserve_proto_field_names = true;
  for (size_t i = 0; i < events.size(); ++i) {
    std::string text;
    REQUIRE(google::protobuf::util::MessageToJsonString(events[i], &text, print).ok());
    CAPTURE(i, text);
    CHECK(ours[i] == nlohmann::json::parse(text));
  }
}

}  // namespace
}  // namespace nodemesh::agent
