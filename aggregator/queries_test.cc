// The answers of stat, edges, routes and ListPods, computed from a store filled by hand and a
// list of pods, as the server would hand them over: no server, no channel, no clock but `now`.
#include "aggregator/queries.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "aggregator/test_util.h"
#include "common/metrics/histogram.h"

namespace nodemesh::aggregator {
namespace {

using testing::Cast;
using testing::DeltaBuilder;
using testing::External;
using testing::FindEdge;
using testing::FindRow;
using testing::kNow;
using testing::MakePod;
using testing::Resource;

v1::StatSummaryRequest StatRequest(const v1::Resource& selector, int64_t window_seconds = 10) {
  v1::StatSummaryRequest request;
  *request.mutable_selector() = selector;
  request.set_window_seconds(window_seconds);
  return request;
}
v1::EdgesRequest EdgesRequestFor(const v1::Resource& selector, int64_t window_seconds = 10) {
  v1::EdgesRequest request;
  *request.mutable_selector() = selector;
  request.set_window_seconds(window_seconds);
  return request;
}
v1::TopRoutesRequest RoutesRequest(const v1::Resource& selector, int64_t window_seconds = 10) {
  v1::TopRoutesRequest request;
  *request.mutable_selector() = selector;
  request.set_window_seconds(window_seconds);
  return request;
}

// What the server hands a query, filled by hand: the store (deltas added as of `now`), the
// cluster's pods with their reporting nodes, and the stale nodes.
struct Fixture {
  void Add(const v1::MetricsDelta& delta) {
    const absl::Status status = store.Add(delta, now);
    INFO(status.ToString());
    REQUIRE(status.ok());
  }
  void AddPods(const std::string& node, const std::vector<v1::Pod>& node_pods) {
    for (const v1::Pod& pod : node_pods) pods.push_back(PodEntry{pod, node});
  }
  QueryContext Context() const { return QueryContext{store, stale_nodes, now, history_start}; }

  v1::StatSummaryResponse Stat(const v1::StatSummaryRequest& request) const {
    absl::StatusOr<v1::StatSummaryResponse> response = StatSummary(Context(), pods, request);
    INFO(response.status().ToString());
    REQUIRE(response.ok());
    return *std::move(response);
  }
  v1::StatSummaryResponse Stat(const v1::Resource& selector, int64_t window_seconds = 10) const {
    return Stat(StatRequest(selector, window_seconds));
  }
  v1::EdgesResponse EdgesOf(const v1::Resource& selector, int64_t window_seconds = 10) const {
    absl::StatusOr<v1::EdgesResponse> response =
        Edges(Context(), EdgesRequestFor(selector, window_seconds));
    INFO(response.status().ToString());
    REQUIRE(response.ok());
    return *std::move(response);
  }
  v1::TopRoutesResponse Routes(const v1::TopRoutesRequest& request) const {
    absl::StatusOr<v1::TopRoutesResponse> response = TopRoutes(Context(), request);
    INFO(response.status().ToString());
    REQUIRE(response.ok());
    return *std::move(response);
  }

  Cast cast;
  Store store;
  std::vector<PodEntry> pods;
  std::vector<v1::NodeStatus> stale_nodes;
  int64_t now = kNow;
  int64_t history_start = 0;  // QueryContext::history_start_second
};

// The row or edge, failing the test when the answer has none.
const v1::StatRow& Row(const v1::StatSummaryResponse& response, const std::string& name) {
  const v1::StatRow* row = FindRow(response, name);
  INFO("no row " << name);
  REQUIRE(row != nullptr);
  return *row;
}
const v1::Edge& EdgeOf(const v1::EdgesResponse& response, const std::string& source,
                       const std::string& destination) {
  const v1::Edge* edge = FindEdge(response, source, destination);
  INFO("no edge " << source << " -> " << destination);
  REQUIRE(edge != nullptr);
  return *edge;
}

// Within the histogram's stated error of the exact value.
bool WithinBucketError(int64_t measured, int64_t exact) {
  return std::abs(double(measured - exact)) <= double(exact) / 64.0;
}

// Traffic seen from both ends where both are meshed, at kNow - 1:
//   web-a -> voting-1  outbound at node-a, inbound at node-b (VoteDoughnut fails)
//   web-a -> emoji-1   outbound and inbound at node-a
//   vote-bot -> web-a  inbound only: vote-bot is not meshed
//   external -> web-a  inbound only
// Each end times the requests its own way, so a latency tells whose view was counted.
struct Scenario : Fixture {
  Scenario() {
    AddPods("node-a", {cast.web_a, cast.vote_bot, cast.emoji});
    AddPods("node-b", {cast.voting});
    const v1::Identity& web = cast.web_a.identity();
    const v1::Identity& voting = cast.voting.identity();
    const v1::Identity& emoji = cast.emoji.identity();
    const v1::Identity& bot = cast.vote_bot.identity();
    Add(DeltaBuilder(kNow - 1)
            .Responses(web, voting, v1::OUTBOUND, kDoughnut, 10, 5'000'000, 200, true, 2)
            .Responses(web, voting, v1::OUTBOUND, kPizza, 30, 2'000'000, 200, false, 0)
            .Responses(web, emoji, v1::OUTBOUND, kListAll, 20, 1'000'000, 200, false, 0)
            .Responses(web, emoji, v1::INBOUND, kListAll, 20, 900'000, 200, false, 0)
            .Responses(bot, web, v1::INBOUND, "GET /api/vote", 40, 8'000'000)
            .Responses(External(), web, v1::INBOUND, "GET /", 5, 3'000'000)
            .Tcp(web, voting, v1::OUTBOUND, 2, 500, 600)
            .Tcp(bot, web, v1::INBOUND, 1, 6000, 12000)
            .delta());
    Add(DeltaBuilder(kNow - 1)
            .Responses(web, voting, v1::INBOUND, kDoughnut, 10, 4'000'000, 200, true, 2)
            .Responses(web, voting, v1::INBOUND, kPizza, 30, 1'500'000, 200, false, 0)
            .Tcp(web, voting, v1::INBOUND, 2, 500, 600)
            .delta());
  }
  static constexpr const char* kDoughnut = "/emojivoto.v1.VotingService/VoteDoughnut";
  static constexpr const char* kPizza = "/emojivoto.v1.VotingService/VotePizza";
  static constexpr const char* kListAll = "/emojivoto.v1.EmojiService/ListAll";
};

TEST_CASE(
    "A window reaching back before the aggregator started holds only what it can know "
    "and its rates are over those seconds",
    "[unit]") {
  // Started during second kNow - 20.
  CHECK(WindowEndingAt(kNow, 60, kNow - 20).first_second == kNow - 20);
  CHECK(WindowEndingAt(kNow, 60, kNow - 20).seconds == 20);
  CHECK(WindowEndingAt(kNow, 10, kNow - 20).seconds == 10);
  CHECK(WindowEndingAt(kNow, 10, kNow).seconds == 0);  // no whole second yet

  Fixture fixture;
  const Cast& cast = fixture.cast;
  fixture.AddPods("node-a", {cast.web_a, cast.vote_bot});
  // An agent sends again what the aggregator before this one never acknowledged: seconds
  // from before this one started are filed, but no window reaches them.
  for (int64_t second = kNow - 30; second < kNow; ++second) {
    fixture.Add(DeltaBuilder(second)
                    .Responses(cast.vote_bot.identity(), cast.web_a.identity(), v1::INBOUND,
                               "GET /api/vote", 4, 1'000'000)
                    .delta());
  }
  fixture.history_start = kNow - 20;
  const v1::StatSummaryResponse minute = fixture.Stat(Resource("deploy", "web"), 60);
  CHECK(minute.window_seconds() == 20);
  REQUIRE(minute.rows_size() == 1);
  CHECK(minute.rows(0).requests() == 80);
  CHECK(minute.rows(0).rps() == Approx(4.0));  // not 80 / 60
  const v1::EdgesResponse edges = fixture.EdgesOf(Resource("deploy", "web"), 60);
  CHECK(edges.window_seconds() == 20);
  CHECK(fixture.Stat(Resource("deploy", "web"), 10).window_seconds() == 10);

  fixture.history_start = kNow;
  const v1::StatSummaryResponse none = fixture.Stat(Resource("deploy", "web"), 60);
  CHECK(none.window_seconds() == 0);
  REQUIRE(none.rows_size() == 1);
  CHECK(none.rows(0).requests() == 0);
  CHECK(none.rows(0).rps() == 0.0);
}

TEST_CASE("A window is the W complete seconds before now, and rates divide by W", "[unit]") {
  const Window window = WindowEndingAt(kNow, 10);
  CHECK(window.first_second == kNow - 10);
  CHECK(window.last_second == kNow - 1);
  CHECK(window.seconds == 10);

  Fixture fixture;
  const Cast& cast = fixture.cast;
  fixture.AddPods("node-a", {cast.web_a, cast.vote_bot});
  for (int64_t second = kNow - 15; second <= kNow; ++second) {
    fixture.Add(DeltaBuilder(second)
                    .Responses(cast.vote_bot.identity(), cast.web_a.identity(), v1::INBOUND,
                               "GET /api/vote", 10, 1'000'000)
                    .Tcp(cast.vote_bot.identity(), cast.web_a.identity(), v1::INBOUND, 1, 100, 50)
                    .delta());
  }
  // The current second (kNow) is still being written: it is not in.
  const v1::StatSummaryResponse ten = fixture.Stat(Resource("deploy", "web"), 10);
  CHECK(ten.window_seconds() == 10);
  REQUIRE(ten.rows_size() == 1);
  CHECK(ten.rows(0).resource().type() == "deployment");
  CHECK(ten.rows(0).requests() == 100);
  CHECK(ten.rows(0).rps() == Approx(10.0));
  CHECK(ten.rows(0).read_bytes_per_second() == Approx(100.0));
  CHECK(ten.rows(0).write_bytes_per_second() == Approx(50.0));
  CHECK(ten.rows(0).success_rate() == 1.0);
  CHECK(ten.rows(0).has_traffic());
  CHECK(fixture.Stat(Resource("deploy", "web"), 15).rows(0).requests() == 150);

  // Unset is Linkerd's default minute; the rate is over the minute, not over the 15 seconds
  // that hold data.
  const v1::StatSummaryResponse minute = fixture.Stat(Resource("deploy", "web"), 0);
  CHECK(minute.window_seconds() == 60);
  CHECK(minute.rows(0).requests() == 150);
  CHECK(minute.rows(0).rps() == Approx(2.5));

  fixture.now = kNow + 5;  // [kNow - 5, kNow + 4]: six seconds hold data
  CHECK(fixture.Stat(Resource("deploy", "web"), 10).rows(0).requests() == 60);

  fixture.now = kNow + 3599;  // an hour covers [kNow - 1, kNow + 3598]: the oldest retained
  CHECK(fixture.Stat(Resource("deploy", "web"), 3600).rows(0).requests() == 20);
}

TEST_CASE("Windows outside 10 to 3600 seconds are INVALID_ARGUMENT, for every query", "[unit]") {
  CHECK(ValidateWindow(0).value_or(-1) == kDefaultWindowSeconds);
  CHECK(ValidateWindow(10).value_or(-1) == 10);
  CHECK(ValidateWindow(3600).value_or(-1) == 3600);
  for (const int64_t bad : {int64_t{9}, int64_t{3601}, int64_t{-60}}) {
    CAPTURE(bad);
    const absl::StatusOr<int64_t> window = ValidateWindow(bad);
    CHECK(window.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(window.status().message()), Catch::Contains("10 to 3600"));
  }

  Fixture fixture;
  const v1::Resource selector = Resource("deploy", "");
  CHECK(StatSummary(fixture.Context(), fixture.pods, StatRequest(selector, 5)).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(Edges(fixture.Context(), EdgesRequestFor(selector, 3601)).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(TopRoutes(fixture.Context(), RoutesRequest(selector, 9)).status().code() ==
        absl::StatusCode::kInvalidArgument);
}

TEST_CASE("Stat without from/to counts what each resource serves, from its inbound side",
          "[unit]") {
  Scenario scenario;
  const v1::StatSummaryResponse response = scenario.Stat(Resource("deploy", ""));
  const v1::StatRow& web = Row(response, "web");
  CHECK(web.requests() == 45);
  CHECK(web.success_rate() == 1.0);
  CHECK(web.tcp_open_connections() == 1);
  CHECK(web.read_bytes_per_second() == Approx(600.0));
  CHECK(web.write_bytes_per_second() == Approx(1200.0));
  const v1::StatRow& voting = Row(response, "voting");
  CHECK(voting.requests() == 40);  // once, though both ends reported it
  CHECK(voting.successes() == 30);
  CHECK(voting.success_rate() == Approx(0.75));
  CHECK(voting.rps() == Approx(4.0));
  CHECK(WithinBucketError(voting.latency().p50_ns(), 1'500'000));  // the server's view
  CHECK(WithinBucketError(voting.latency().p99_ns(), 4'000'000));
  CHECK(voting.tcp_open_connections() == 2);
  CHECK(Row(response, "emoji").requests() == 20);
  CHECK_FALSE(Row(response, "vote-bot").has_traffic());
}

TEST_CASE("Stat --from and --to take the callers' view, inbound only for unmeshed callers",
          "[unit]") {
  Scenario scenario;

  v1::StatSummaryRequest from_web = StatRequest(Resource("deploy", ""));
  *from_web.mutable_from() = Resource("deploy", "web");
  const v1::StatSummaryResponse called = scenario.Stat(from_web);
  REQUIRE(called.rows_size() == 2);
  const v1::StatRow& voting = Row(called, "voting");
  CHECK(voting.requests() == 40);
  CHECK(voting.success_rate() == Approx(0.75));
  CHECK(WithinBucketError(voting.latency().p50_ns(), 2'000'000));  // the caller's view
  CHECK(WithinBucketError(voting.latency().p99_ns(), 5'000'000));
  CHECK(voting.tcp_open_connections() == 2);
  CHECK(Row(called, "emoji").requests() == 20);

  v1::StatSummaryRequest to_voting = StatRequest(Resource("deploy", ""));
  *to_voting.mutable_to() = Resource("deploy", "voting");
  const v1::StatSummaryResponse callers = scenario.Stat(to_voting);
  REQUIRE(callers.rows_size() == 1);
  CHECK(callers.rows(0).resource().name() == "web");
  CHECK(callers.rows(0).requests() == 40);

  // vote-bot is not meshed: its calls are known only from web's inbound side.
  v1::StatSummaryRequest to_web = StatRequest(Resource("deploy", ""));
  *to_web.mutable_to() = Resource("deploy", "web");
  const v1::StatSummaryResponse web_callers = scenario.Stat(to_web);
  REQUIRE(web_callers.rows_size() == 1);  // external callers are no deployment
  CHECK(web_callers.rows(0).resource().name() == "vote-bot");
  CHECK(web_callers.rows(0).requests() == 40);
  CHECK(web_callers.rows(0).meshed_pods() == 0);
  CHECK(web_callers.rows(0).running_pods() == 1);

  // A named selector answers about that resource even without traffic.
  v1::StatSummaryRequest emoji_from_bot = StatRequest(Resource("deploy", "emoji"));
  *emoji_from_bot.mutable_from() = Resource("deploy", "vote-bot");
  const v1::StatSummaryResponse none = scenario.Stat(emoji_from_bot);
  REQUIRE(none.rows_size() == 1);
  CHECK_FALSE(none.rows(0).has_traffic());

  // Pods work the same way.
  v1::StatSummaryRequest pods_from_web = StatRequest(Resource("po", ""));
  *pods_from_web.mutable_from() = Resource("po", "web-a");
  const v1::StatSummaryResponse pods = scenario.Stat(pods_from_web);
  REQUIRE(pods.rows_size() == 2);
  CHECK(Row(pods, "voting-1").requests() == 40);
}

TEST_CASE("Unmeshed servers are seen only outbound: the other side counts pair by pair", "[unit]") {
  Fixture fixture;
  const Cast& cast = fixture.cast;
  // A rollout half way: voting-2 is not enrolled yet, nor is legacy at all.
  const v1::Pod voting_2 =
      MakePod("emojivoto", "voting-2", "Deployment", "voting", "node-b", false);
  const v1::Pod legacy = MakePod("emojivoto", "legacy-1", "Deployment", "legacy", "node-b", false);
  fixture.AddPods("node-a", {cast.web_a});
  fixture.AddPods("node-b", {cast.voting, voting_2, legacy});
  const v1::Identity& web = cast.web_a.identity();
  fixture.Add(DeltaBuilder(kNow - 1)
                  .Responses(web, cast.voting.identity(), v1::OUTBOUND, "POST /vote", 10, 2'000'000)
                  .Responses(web, voting_2.identity(), v1::OUTBOUND, "POST /vote", 6, 2'000'000)
                  .Responses(web, legacy.identity(), v1::OUTBOUND, "GET /legacy", 4, 3'000'000)
                  .delta());
  fixture.Add(DeltaBuilder(kNow - 1)
                  .Responses(web, cast.voting.identity(), v1::INBOUND, "POST /vote", 10, 1'000'000)
                  .delta());

  // voting-1's inbound view, and web's outbound one for the pair nobody saw arrive.
  const v1::StatSummaryResponse deployments = fixture.Stat(Resource("deploy", ""));
  CHECK(Row(deployments, "voting").requests() == 16);
  CHECK(Row(deployments, "legacy").requests() == 4);
  CHECK_FALSE(Row(deployments, "web").has_traffic());
  const v1::StatSummaryResponse pods = fixture.Stat(Resource("po", ""));
  CHECK(Row(pods, "voting-1").requests() == 10);
  CHECK(WithinBucketError(Row(pods, "voting-1").latency().p50_ns(), 1'000'000));
  CHECK(Row(pods, "voting-2").requests() == 6);
  CHECK(WithinBucketError(Row(pods, "voting-2").latency().p50_ns(), 2'000'000));
  CHECK(Row(pods, "legacy-1").requests() == 4);

  const v1::TopRoutesResponse routes = fixture.Routes(RoutesRequest(Resource("deploy", "")));
  REQUIRE(routes.routes_size() == 2);
  CHECK(routes.routes(0).route() == "POST /vote");
  CHECK(routes.routes(0).requests() == 16);
  CHECK(routes.routes(1).route() == "GET /legacy");
  CHECK(routes.routes(1).destination().name() == "legacy");

  // The rule looks at the whole window, not second by second: once voting-2's side has
  // reported the pair in the window, web's reports of it no longer count, whatever second.
  fixture.Add(DeltaBuilder(kNow - 20)
                  .Responses(web, voting_2.identity(), v1::INBOUND, "POST /vote", 3, 1'000'000)
                  .delta());
  CHECK(Row(fixture.Stat(Resource("deploy", "voting"), 10), "voting").requests() == 16);
  CHECK(Row(fixture.Stat(Resource("deploy", "voting"), 30), "voting").requests() == 13);
}

// Traffic dialled to Services, at kNow - 1: web dials voting-svc (its NAT chose voting-1, or
// the agent could not tell: External) and emoji-svc; it also calls voting-1 by its pod
// address. voting's agent sees web's calls inbound, with no Service. vote-bot calls emoji-1
// directly.
struct ServiceScenario : Fixture {
  ServiceScenario() {
    AddPods("node-a", {cast.web_a, cast.emoji, cast.vote_bot});
    AddPods("node-b", {cast.voting});
    const v1::Identity voting_svc = testing::ServiceIdentity("emojivoto", "voting-svc");
    const v1::Identity emoji_svc = testing::ServiceIdentity("emojivoto", "emoji-svc");
    const v1::Identity& web = cast.web_a.identity();
    Add(DeltaBuilder(kNow - 1)
            .Via(voting_svc)
            .Responses(web, cast.voting.identity(), v1::OUTBOUND, "POST /vote", 8, 2'000'000)
            .Tcp(web, cast.voting.identity(), v1::OUTBOUND, 2, 100, 200)
            .Responses(web, External(), v1::OUTBOUND, "POST /vote", 2, 2'000'000, 503, true)
            .Via(emoji_svc)
            .Responses(web, cast.emoji.identity(), v1::OUTBOUND, "GET /list", 5, 1'000'000)
            .Direct()
            .Responses(web, cast.voting.identity(), v1::OUTBOUND, "POST /vote", 3, 2'000'000)
            .Responses(cast.vote_bot.identity(), cast.emoji.identity(), v1::OUTBOUND, "GET /", 7,
                       1'000'000)
            .delta());
    Add(DeltaBuilder(kNow - 1)
            .Responses(web, cast.voting.identity(), v1::INBOUND, "POST /vote", 11, 1'000'000)
            .delta());
  }
};

TEST_CASE("Stat svc: per Service, what its callers dialled to it: --to svc/NAME its callers",
          "[unit]") {
  ServiceScenario fixture;
  const v1::StatSummaryResponse services = fixture.Stat(Resource("svc", ""));
  REQUIRE(services.rows_size() == 2);
  const v1::StatRow& voting = Row(services, "voting-svc");
  CHECK(voting.resource().type() == "service");
  CHECK(voting.requests() == 10);  // the pod reached, and where the NAT was not seen
  CHECK(voting.successes() == 8);
  CHECK(voting.tcp_open_connections() == 2);
  CHECK(voting.meshed_pods() == 0);
  CHECK(voting.running_pods() == 0);
  CHECK(Row(services, "emoji-svc").requests() == 5);
  // Named: that Service only, and a row even without traffic.
  CHECK(fixture.Stat(Resource("service", "emoji-svc")).rows_size() == 1);
  const v1::StatSummaryResponse idle = fixture.Stat(Resource("svc", "other-svc"));
  REQUIRE(idle.rows_size() == 1);
  CHECK_FALSE(idle.rows(0).has_traffic());
  CHECK(fixture.Stat(Resource("svc", "", "elsewhere")).rows_size() == 0);

  // Per caller: --from narrows the Services to one caller's.
  v1::StatSummaryRequest from_bot = StatRequest(Resource("svc", ""));
  *from_bot.mutable_from() = Resource("deploy", "vote-bot");
  CHECK(fixture.Stat(from_bot).rows_size() == 0);

  // The callers of a Service, from their side.
  v1::StatSummaryRequest to_voting_svc = StatRequest(Resource("deploy", ""));
  *to_voting_svc.mutable_to() = Resource("svc", "voting-svc");
  const v1::StatSummaryResponse callers = fixture.Stat(to_voting_svc);
  REQUIRE(callers.rows_size() == 1);
  CHECK(callers.rows(0).resource().name() == "web");
  CHECK(callers.rows(0).requests() == 10);

  // Deployments are counted as before: voting's own (inbound) view, which knows no Service,
  // and not the caller's on top of it.
  const v1::StatSummaryResponse deployments = fixture.Stat(Resource("deploy", ""));
  CHECK(Row(deployments, "voting").requests() == 11);
  CHECK(Row(deployments, "emoji").requests() == 12);  // emoji is not meshed here: outbound
  // And --to a deployment counts the calls reached through its Service too.
  v1::StatSummaryRequest to_voting = StatRequest(Resource("deploy", ""));
  *to_voting.mutable_to() = Resource("deploy", "voting");
  CHECK(Row(fixture.Stat(to_voting), "web").requests() == 11);

  // A Service calls nothing.
  v1::StatSummaryRequest from_svc = StatRequest(Resource("deploy", ""));
  *from_svc.mutable_from() = Resource("svc", "voting-svc");
  CHECK(StatSummary(fixture.Context(), fixture.pods, from_svc).status().code() ==
        absl::StatusCode::kInvalidArgument);
  v1::StatSummaryRequest svc_to = StatRequest(Resource("svc", ""));
  *svc_to.mutable_to() = Resource("deploy", "web");
  CHECK(StatSummary(fixture.Context(), fixture.pods, svc_to).status().code() ==
        absl::StatusCode::kInvalidArgument);
}

TEST_CASE("Edges svc: Services between their callers and the resources behind them", "[unit]") {
  ServiceScenario fixture;
  const v1::EdgesResponse edges = fixture.EdgesOf(Resource("svc", ""));
  INFO(edges.DebugString());
  REQUIRE(edges.edges_size() == 5);
  const v1::Edge& called = EdgeOf(edges, "web", "voting-svc");
  CHECK(called.source().type() == "deployment");
  CHECK(called.destination().type() == "service");
  CHECK(called.requests() == 10);  // as stat svc counts it: the caller's side only
  CHECK(called.success_rate() == Approx(0.8));
  CHECK(called.tcp_open_connections() == 2);
  CHECK(called.source_service_account() == "web");
  CHECK(called.destination_service_account().empty());  // a Service has none
  const v1::Edge& served = EdgeOf(edges, "voting-svc", "voting");
  CHECK(served.source().type() == "service");
  CHECK(served.destination().type() == "deployment");
  CHECK(served.requests() == 8);
  CHECK(served.source_service_account().empty());
  CHECK(served.destination_service_account() == "voting");
  // Where the agent could not tell which pod its NAT chose.
  CHECK(EdgeOf(edges, "voting-svc", "external").success_rate() == 0);
  CHECK(EdgeOf(edges, "web", "emoji-svc").requests() == 5);
  CHECK(EdgeOf(edges, "emoji-svc", "emoji").requests() == 5);
  // Nothing dialled directly: web -> voting-1 by its address, vote-bot -> emoji-1.
  CHECK(FindEdge(edges, "web", "voting") == nullptr);
  CHECK(FindEdge(edges, "vote-bot", "emoji") == nullptr);

  const v1::EdgesResponse one = fixture.EdgesOf(Resource("service", "emoji-svc"));
  CHECK(one.edges_size() == 2);
  CHECK(fixture.EdgesOf(Resource("svc", "", "elsewhere")).edges_size() == 0);
  // Deployments' edges stay what they were: the pods reached, Service or not.
  CHECK(EdgeOf(fixture.EdgesOf(Resource("deploy", "")), "web", "voting").requests() == 11);
}

TEST_CASE("Routes of a Service: what its callers dialled to it, from their side", "[unit]") {
  ServiceScenario fixture;
  const v1::TopRoutesResponse voting = fixture.Routes(RoutesRequest(Resource("svc", "voting-svc")));
  REQUIRE(voting.routes_size() == 1);
  CHECK(voting.routes(0).route() == "POST /vote");
  CHECK(voting.routes(0).destination().type() == "service");
  CHECK(voting.routes(0).destination().name() == "voting-svc");
  CHECK(voting.routes(0).requests() == 10);
  CHECK(voting.routes(0).success_rate() == Approx(0.8));
  const v1::TopRoutesResponse all = fixture.Routes(RoutesRequest(Resource("svc", "")));
  REQUIRE(all.routes_size() == 2);
  CHECK(all.routes(0).destination().name() == "voting-svc");  // busiest first
  CHECK(all.routes(1).route() == "GET /list");
  v1::TopRoutesRequest from_bot = RoutesRequest(Resource("svc", ""));
  *from_bot.mutable_from() = Resource("deploy", "vote-bot");
  CHECK(fixture.Routes(from_bot).routes_size() == 0);
  v1::TopRoutesRequest from_web = RoutesRequest(Resource("svc", "emoji-svc"));
  *from_web.mutable_from() = Resource("deploy", "web");
  CHECK(fixture.Routes(from_web).routes_size() == 1);
}

TEST_CASE("The store keeps the Service of a series apart, and old agents' series have none",
          "[unit]") {
  Store store;
  const v1::Identity web =
      MakePod("emojivoto", "web-a", "Deployment", "web", "node-a", true).identity();
  const v1::Identity voting =
      MakePod("emojivoto", "voting-1", "Deployment", "voting", "node-b", true).identity();
  REQUIRE(store
              .Add(DeltaBuilder(kNow - 1)
                       .Via(testing::ServiceIdentity("emojivoto", "voting-svc"))
                       .Tcp(web, voting, v1::OUTBOUND, 1)
                       .Direct()
                       .Tcp(web, voting, v1::OUTBOUND, 1)
                       .delta(),
                   kNow)
              .ok());
  struct Services : StoreVisitor {
    void Response(int64_t, const ResponseLabels&, const ResponseCounts&) override {}
    void Tcp(int64_t, const TrafficLabels& labels, const TcpCounts&) override {
      names.push_back(labels.service == kNoService ? ""
                                                   : store->identity(labels.service)->owner_name);
    }
    const Store* store = nullptr;
    std::vector<std::string> names;
  } services;
  services.store = &store;
  store.Scan(kNow - 1, kNow - 1, services);
  std::sort(services.names.begin(), services.names.end());
  CHECK(services.names == std::vector<std::string>{"", "voting-svc"});
  CHECK(store.identity(kNoService) == metrics::ExternalIdentity());

  // A Service index past the delta's identities is refused like any other.
  v1::MetricsDelta bad = DeltaBuilder(kNow - 1).Tcp(web, voting, v1::OUTBOUND, 1).delta();
  bad.mutable_tcp(0)->mutable_traffic()->set_service(99);
  CHECK(store.Add(bad, kNow).code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("A pair its named side reported only over TCP is reported, for routes as for stat",
          "[unit]") {
  Fixture fixture;
  const Cast& cast = fixture.cast;
  fixture.AddPods("node-b", {cast.voting});
  const v1::Identity& web = cast.web_a.identity();
  // voting's agent saw the connection but no responses on it; web's saw 10 responses.
  fixture.Add(DeltaBuilder(kNow - 1)
                  .Responses(web, cast.voting.identity(), v1::OUTBOUND, "POST /vote", 10, 1'000'000)
                  .Tcp(web, cast.voting.identity(), v1::INBOUND, 1, 100, 100)
                  .delta());
  const v1::StatSummaryResponse stat = fixture.Stat(Resource("deploy", "voting"));
  REQUIRE(stat.rows_size() == 1);
  CHECK(stat.rows(0).requests() == 0);
  CHECK(fixture.Routes(RoutesRequest(Resource("deploy", "voting"))).routes_size() == 0);
}

TEST_CASE("Open connections are each series' latest gauge: TCP alone makes traffic", "[unit]") {
  Fixture fixture;
  const Cast& cast = fixture.cast;
  fixture.AddPods("node-b", {cast.voting});
  const v1::Identity& voting = cast.voting.identity();
  fixture.Add(
      DeltaBuilder(kNow - 5).Tcp(cast.web_a.identity(), voting, v1::INBOUND, 5, 100, 10).delta());
  fixture.Add(
      DeltaBuilder(kNow - 3).Tcp(cast.web_b.identity(), voting, v1::INBOUND, 1, 100, 10).delta());
  fixture.Add(
      DeltaBuilder(kNow - 1).Tcp(cast.web_a.identity(), voting, v1::INBOUND, 2, 100, 10).delta());

  const v1::StatSummaryResponse response = fixture.Stat(Resource("deploy", "voting"));
  REQUIRE(response.rows_size() == 1);
  const v1::StatRow& row = response.rows(0);
  CHECK(row.has_traffic());
  CHECK(row.requests() == 0);
  CHECK(row.success_rate() == 0.0);                    // no responses: 0, not NaN
  CHECK(row.tcp_open_connections() == 3);              // web-a's 2 of kNow - 1, and web-b's 1
  CHECK(row.read_bytes_per_second() == Approx(30.0));  // bytes add up
  CHECK(row.write_bytes_per_second() == Approx(3.0));

  // Edges take the callers' side, which reported nothing: the servers' gauges count.
  const v1::EdgesResponse edges = fixture.EdgesOf(Resource("deploy", "voting"));
  REQUIRE(edges.edges_size() == 1);
  CHECK(edges.edges(0).tcp_open_connections() == 3);
}

TEST_CASE("Stat groups by each resource type: pod, deployment, statefulset, daemonset, namespace",
          "[unit]") {
  Fixture fixture;
  const Cast& cast = fixture.cast;
  const v1::Pod db = MakePod("emojivoto", "db-0", "StatefulSet", "db", "node-b", true);
  const v1::Pod migrate = MakePod("emojivoto", "migrate-x", "Job", "migrate", "node-a", true);
  const v1::Pod prometheus =
      MakePod("monitoring", "prometheus-0", "StatefulSet", "prometheus", "node-a", true);
  const v1::Pod exporter_a =
      MakePod("monitoring", "exporter-a", "DaemonSet", "node-exporter", "node-a", true);
  const v1::Pod exporter_b =
      MakePod("monitoring", "exporter-b", "DaemonSet", "node-exporter", "node-b", false);
  fixture.AddPods("node-a", {cast.web_a, migrate, prometheus, exporter_a});
  fixture.AddPods("node-b", {cast.web_b, db, exporter_b});
  fixture.Add(
      DeltaBuilder(kNow - 1)
          .Responses(cast.web_a.identity(), db.identity(), v1::INBOUND, "query", 10, 1'000'000)
          .Responses(cast.web_b.identity(), db.identity(), v1::INBOUND, "query", 20, 1'000'000)
          .Responses(migrate.identity(), db.identity(), v1::INBOUND, "query", 1, 1'000'000)
          .Responses(prometheus.identity(), exporter_a.identity(), v1::INBOUND, "GET /metrics", 5,
                     1'000'000)
          .Responses(prometheus.identity(), exporter_b.identity(), v1::OUTBOUND, "GET /metrics", 5,
                     1'000'000)
          .delta());

  const v1::StatSummaryResponse statefulsets = fixture.Stat(Resource("sts", ""));
  REQUIRE(statefulsets.rows_size() == 1);  // prometheus is in another namespace
  CHECK(statefulsets.rows(0).resource().type() == "statefulset");
  CHECK(statefulsets.rows(0).resource().name() == "db");
  CHECK(statefulsets.rows(0).requests() == 31);
  CHECK(statefulsets.rows(0).running_pods() == 1);
  const v1::StatSummaryResponse all_statefulsets = fixture.Stat(Resource("sts", "", ""));
  CHECK(all_statefulsets.rows_size() == 2);
  CHECK_FALSE(Row(all_statefulsets, "prometheus").has_traffic());

  const v1::StatSummaryResponse daemonsets = fixture.Stat(Resource("ds", "", "monitoring"));
  REQUIRE(daemonsets.rows_size() == 1);
  CHECK(daemonsets.rows(0).resource().type() == "daemonset");
  CHECK(daemonsets.rows(0).requests() == 10);
  CHECK(daemonsets.rows(0).meshed_pods() == 1);
  CHECK(daemonsets.rows(0).running_pods() == 2);
  CHECK(fixture.Stat(Resource("ds", "")).rows_size() == 0);

  const v1::StatSummaryResponse namespaces = fixture.Stat(Resource("ns", "", ""));
  REQUIRE(namespaces.rows_size() == 2);
  const v1::StatRow& emojivoto = Row(namespaces, "emojivoto");
  CHECK(emojivoto.resource().type() == "namespace");
  CHECK(emojivoto.resource().namespace_() == "emojivoto");
  CHECK(emojivoto.requests() == 31);
  CHECK(emojivoto.running_pods() == 4);
  CHECK(Row(namespaces, "monitoring").requests() == 10);
  CHECK(fixture.Stat(Resource("ns", "monitoring", "")).rows_size() == 1);

  const v1::StatSummaryResponse monitoring_pods = fixture.Stat(Resource("po", "", "monitoring"));
  CHECK(monitoring_pods.rows_size() == 3);
  CHECK(Row(monitoring_pods, "exporter-b").requests() == 5);
  CHECK(Row(monitoring_pods, "exporter-b").resource().type() == "pod");

  // A Job's pod belongs to no deployment: it is no row of its own.
  const v1::StatSummaryResponse deployments = fixture.Stat(Resource("deploy", ""));
  REQUIRE(deployments.rows_size() == 1);
  CHECK(deployments.rows(0).resource().name() == "web");
  CHECK(deployments.rows(0).running_pods() == 2);

  // --from picks the callers by their resource, of whatever type.
  v1::StatSummaryRequest from_web = StatRequest(Resource("sts", ""));
  *from_web.mutable_from() = Resource("deploy", "web");
  CHECK(Row(fixture.Stat(from_web), "db").requests() == 30);
}

TEST_CASE("MESHED counts enrolled pods out of running ones: resources without traffic are rows",
          "[unit]") {
  Fixture fixture;
  const Cast& cast = fixture.cast;
  v1::Pod web_b_unenrolled = cast.web_b;
  web_b_unenrolled.set_enrolled(false);
  web_b_unenrolled.set_meshed(false);
  fixture.AddPods("node-a", {cast.web_a, cast.vote_bot, cast.emoji});
  fixture.AddPods("node-b", {web_b_unenrolled, cast.voting});

  const v1::StatSummaryResponse deployments = fixture.Stat(Resource("deployment", ""), 60);
  REQUIRE(deployments.rows_size() == 4);  // resources with pods, traffic or not
  const v1::StatRow& web = Row(deployments, "web");
  CHECK(web.meshed_pods() == 1);
  CHECK(web.running_pods() == 2);
  CHECK_FALSE(web.has_traffic());
  CHECK(Row(deployments, "vote-bot").meshed_pods() == 0);
  CHECK(Row(deployments, "vote-bot").running_pods() == 1);
  CHECK(Row(deployments, "voting").meshed_pods() == 1);

  CHECK(fixture.Stat(Resource("pods", ""), 60).rows_size() == 5);
  const v1::StatSummaryResponse namespaces = fixture.Stat(Resource("ns", "", "default"), 60);
  REQUIRE(namespaces.rows_size() == 1);  // a client's default namespace does not narrow it
  CHECK(namespaces.rows(0).resource().name() == "emojivoto");
  CHECK(namespaces.rows(0).meshed_pods() == 3);
  CHECK(namespaces.rows(0).running_pods() == 5);
  CHECK(fixture.Stat(Resource("deploy", "", "other"), 60).rows_size() == 0);
  CHECK(fixture.Stat(Resource("deploy", "", ""), 60).rows_size() == 4);  // all namespaces
}

TEST_CASE("Percentiles come from histograms merged across agents and seconds, never averaged",
          "[unit]") {
  Fixture fixture;
  const Cast& cast = fixture.cast;
  fixture.AddPods("node-a", {cast.web_a, cast.vote_bot});
  fixture.AddPods("node-b", {cast.web_b});

  // node-a's web pod answers in about 1 ms, node-b's in about 100 ms.
  std::vector<int64_t> fast, slow, all;
  for (int i = 0; i < 900; ++i) fast.push_back(900'000 + i * 222);
  for (int i = 0; i < 100; ++i) slow.push_back(90'000'000 + i * 200'000);
  all = fast;
  all.insert(all.end(), slow.begin(), slow.end());
  std::sort(all.begin(), all.end());

  // node-a's fall in two seconds: the query merges across seconds as well as agents.
  const std::vector<int64_t> fast_first(fast.begin(), fast.begin() + 400),
      fast_rest(fast.begin() + 400, fast.end());
  fixture.Add(DeltaBuilder(kNow - 2)
                  .ResponsesWithLatencies(cast.vote_bot.identity(), cast.web_a.identity(),
                                          v1::INBOUND, "GET /api/vote", fast_first)
                  .delta());
  fixture.Add(DeltaBuilder(kNow - 1)
                  .ResponsesWithLatencies(cast.vote_bot.identity(), cast.web_a.identity(),
                                          v1::INBOUND, "GET /api/vote", fast_rest)
                  .delta());
  fixture.Add(DeltaBuilder(kNow - 1)
                  .ResponsesWithLatencies(External(), cast.web_b.identity(), v1::INBOUND,
                                          "GET /api/vote", slow)
                  .delta());

  metrics::Histogram reference;
  for (int64_t value : all) reference.Record(value);
  const v1::StatSummaryResponse response = fixture.Stat(Resource("deploy", "web"));
  REQUIRE(response.rows_size() == 1);
  const v1::StatRow& web = response.rows(0);
  CHECK(web.requests() == 1000);
  CHECK(web.latency().p50_ns() == reference.Quantile(0.50));
  CHECK(web.latency().p95_ns() == reference.Quantile(0.95));
  CHECK(web.latency().p99_ns() == reference.Quantile(0.99));
  // Nearest rank over the exact values.
  const auto exact = [&](double q) { return all[static_cast<size_t>(std::ceil(q * 1000)) - 1]; };
  CHECK(WithinBucketError(web.latency().p50_ns(), exact(0.50)));
  CHECK(WithinBucketError(web.latency().p95_ns(), exact(0.95)));
  CHECK(WithinBucketError(web.latency().p99_ns(), exact(0.99)));
  CHECK(web.latency().p50_ns() < 1'200'000);   // node-a's
  CHECK(web.latency().p99_ns() > 90'000'000);  // node-b's

  // Per pod, each agent's own.
  const v1::StatSummaryResponse pods = fixture.Stat(Resource("po", ""));
  const v1::StatRow& web_b = Row(pods, "web-b");
  CHECK(web_b.requests() == 100);
  CHECK(WithinBucketError(web_b.latency().p50_ns(), slow[49]));
}

TEST_CASE("Edges: pairs with either end in the selector, from the callers' side", "[unit]") {
  Scenario scenario;
  const v1::EdgesResponse all = scenario.EdgesOf(Resource("deploy", ""));
  CHECK(all.edges_size() == 4);
  const v1::Edge& web_voting = EdgeOf(all, "web", "voting");
  CHECK(web_voting.source().type() == "deployment");
  CHECK(web_voting.destination().type() == "deployment");
  CHECK(web_voting.requests() == 40);  // once, though both ends reported it
  CHECK(web_voting.success_rate() == Approx(0.75));
  CHECK(web_voting.rps() == Approx(4.0));
  CHECK(WithinBucketError(web_voting.latency().p50_ns(), 2'000'000));  // the caller's view
  CHECK(web_voting.tcp_open_connections() == 2);
  CHECK(web_voting.source_service_account() == "web");
  CHECK(web_voting.destination_service_account() == "voting");
  CHECK(EdgeOf(all, "web", "emoji").requests() == 20);
  // vote-bot is not meshed: its calls are known only from web's inbound side.
  const v1::Edge& bot_web = EdgeOf(all, "vote-bot", "web");
  CHECK(bot_web.requests() == 40);
  CHECK(bot_web.tcp_open_connections() == 1);

  // voting is only called; web calls and is called.
  const v1::EdgesResponse voting = scenario.EdgesOf(Resource("deploy", "voting"));
  REQUIRE(voting.edges_size() == 1);
  CHECK(voting.edges(0).source().name() == "web");
  CHECK(scenario.EdgesOf(Resource("deploy", "web")).edges_size() == 4);

  const v1::EdgesResponse pods = scenario.EdgesOf(Resource("po", "voting-1"));
  REQUIRE(pods.edges_size() == 1);
  CHECK(pods.edges(0).source().name() == "web-a");
  CHECK(pods.edges(0).source().type() == "pod");

  // A caller that is no resource of the type, a Job's pod, is an end as its pod.
  const v1::Pod migrate = MakePod("emojivoto", "migrate-x", "Job", "migrate", "node-a", true);
  scenario.Add(DeltaBuilder(kNow - 2)
                   .Responses(migrate.identity(), scenario.cast.emoji.identity(), v1::OUTBOUND,
                              Scenario::kListAll, 2, 1'000'000)
                   .delta());
  const v1::EdgesResponse emoji = scenario.EdgesOf(Resource("deploy", "emoji"));
  CHECK(emoji.edges_size() == 2);
  const v1::Edge& job = EdgeOf(emoji, "migrate-x", "emoji");
  CHECK(job.source().type() == "pod");
  CHECK(job.source().namespace_() == "emojivoto");
  CHECK(job.destination().type() == "deployment");
  CHECK(job.requests() == 2);
}

TEST_CASE("Peers outside the inventory are one external end, and no resource of any type",
          "[unit]") {
  Fixture fixture;
  const Cast& cast = fixture.cast;
  fixture.AddPods("node-a", {cast.web_a});
  const v1::Identity& web = cast.web_a.identity();
  fixture.Add(DeltaBuilder(kNow - 1)
                  .Responses(External(), web, v1::INBOUND, "GET /", 5, 1'000'000)
                  .Responses(web, External(), v1::OUTBOUND, "GET /rates", 3, 1'000'000)
                  .delta());

  const v1::EdgesResponse edges = fixture.EdgesOf(Resource("deploy", "web"));
  REQUIRE(edges.edges_size() == 2);
  const v1::Edge& in = EdgeOf(edges, "external", "web");
  CHECK(in.source().type() == "external");
  CHECK(in.source().namespace_().empty());
  CHECK(in.destination().type() == "deployment");
  CHECK(in.requests() == 5);
  const v1::Edge& out = EdgeOf(edges, "web", "external");
  CHECK(out.destination().type() == "external");
  CHECK(out.requests() == 3);
  CHECK(fixture.EdgesOf(Resource("po", "web-a")).edges_size() == 2);

  // Stat has rows of resources only: web serves the external caller; the outside API it
  // calls is no row, and the external caller is no deployment calling web.
  const v1::StatSummaryResponse deployments = fixture.Stat(Resource("deploy", ""));
  REQUIRE(deployments.rows_size() == 1);
  CHECK(deployments.rows(0).requests() == 5);
  CHECK(fixture.Stat(Resource("po", "")).rows_size() == 1);
  CHECK(fixture.Stat(Resource("ns", "", "")).rows_size() == 1);
  v1::StatSummaryRequest to_web = StatRequest(Resource("deploy", ""));
  *to_web.mutable_to() = Resource("deploy", "web");
  CHECK(fixture.Stat(to_web).rows_size() == 0);
}

TEST_CASE("Top routes: per route, busiest first, inbound unless --from, without profiles",
          "[unit]") {
  Scenario scenario;
  v1::TopRoutesRequest request = RoutesRequest(Resource("deploy", "voting"));
  const v1::TopRoutesResponse routes = scenario.Routes(request);
  REQUIRE(routes.routes_size() == 2);
  CHECK(routes.routes(0).route() == Scenario::kPizza);
  CHECK(routes.routes(0).requests() == 30);
  CHECK(routes.routes(0).success_rate() == 1.0);
  CHECK(routes.routes(0).rps() == Approx(3.0));
  CHECK(routes.routes(0).destination().name() == "voting");
  CHECK(routes.routes(0).destination().type() == "deployment");
  CHECK(routes.routes(1).route() == Scenario::kDoughnut);
  CHECK(routes.routes(1).requests() == 10);
  CHECK(routes.routes(1).success_rate() == 0.0);
  CHECK(WithinBucketError(routes.routes(1).latency().p50_ns(), 4'000'000));  // inbound

  request.set_limit(1);
  const v1::TopRoutesResponse top = scenario.Routes(request);
  REQUIRE(top.routes_size() == 1);
  CHECK(top.routes(0).route() == Scenario::kPizza);
  request.set_limit(0);

  *request.mutable_from() = Resource("deploy", "web");
  const v1::TopRoutesResponse from_web = scenario.Routes(request);
  REQUIRE(from_web.routes_size() == 2);
  CHECK(WithinBucketError(from_web.routes(1).latency().p50_ns(), 5'000'000));  // outbound
  *request.mutable_from() = Resource("deploy", "vote-bot");
  CHECK(scenario.Routes(request).routes_size() == 0);

  const v1::TopRoutesResponse web = scenario.Routes(RoutesRequest(Resource("deploy", "web")));
  REQUIRE(web.routes_size() == 2);
  CHECK(web.routes(0).route() == "GET /api/vote");
  CHECK(web.routes(1).route() == "GET /");

  // Every deployment's routes in one list.
  const v1::TopRoutesResponse everything = scenario.Routes(RoutesRequest(Resource("deploy", "")));
  std::vector<std::string> order;
  for (const v1::RouteRow& row : everything.routes()) order.push_back(row.route());
  CHECK(order == std::vector<std::string>{"GET /api/vote", Scenario::kPizza, Scenario::kListAll,
                                          Scenario::kDoughnut, "GET /"});
}

TEST_CASE("Top routes as busy as each other go by route, then by destination", "[unit]") {
  Fixture fixture;
  const Cast& cast = fixture.cast;
  const v1::Identity& web = cast.web_a.identity();
  fixture.Add(DeltaBuilder(kNow - 1)
                  .Responses(web, cast.voting.identity(), v1::INBOUND, "b", 5, 1'000'000)
                  .Responses(web, cast.voting.identity(), v1::INBOUND, "a", 5, 1'000'000)
                  .Responses(web, cast.emoji.identity(), v1::INBOUND, "a", 5, 1'000'000)
                  .Responses(web, cast.emoji.identity(), v1::INBOUND, "c", 9, 1'000'000)
                  .delta());
  const v1::TopRoutesResponse routes = fixture.Routes(RoutesRequest(Resource("deploy", "")));
  std::vector<std::string> order;
  for (const v1::RouteRow& row : routes.routes()) {
    order.push_back(row.route() + " " + row.destination().name());
  }
  CHECK(order == std::vector<std::string>{"c emoji", "a emoji", "a voting", "b voting"});
}

TEST_CASE("ListPods lists the namespace's pods, or all, with their nodes, and every node",
          "[unit]") {
  const Cast cast;
  const v1::Pod nodeless = MakePod("emojivoto", "web-c", "Deployment", "web", "", true);
  const v1::Pod db = MakePod("other", "db-0", "StatefulSet", "db", "node-b", true);
  const std::vector<PodEntry> pods = {{cast.web_a, "node-a"}, {nodeless, "node-c"}, {db, "node-b"}};
  std::vector<v1::NodeStatus> nodes(3);
  nodes[0].set_node("node-a");
  nodes[1].set_node("node-b");
  nodes[2].set_node("node-c");
  const auto names = [](const v1::ListPodsResponse& response) {
    std::vector<std::string> out;
    for (const v1::Pod& pod : response.pods()) {
      out.push_back(pod.identity().pod() + "@" + pod.identity().node());
    }
    return out;
  };

  v1::ListPodsRequest request;
  const v1::ListPodsResponse all = ListPods(pods, nodes, request);
  // A pod whose record names no node runs on its reporter's.
  CHECK(names(all) == std::vector<std::string>{"web-a@node-a", "web-c@node-c", "db-0@node-b"});
  CHECK(all.nodes_size() == 3);

  request.set_namespace_("emojivoto");
  const v1::ListPodsResponse emojivoto = ListPods(pods, nodes, request);
  CHECK(names(emojivoto) == std::vector<std::string>{"web-a@node-a", "web-c@node-c"});
  CHECK(emojivoto.nodes_size() == 3);  // nodes are in no namespace

  request.set_namespace_("nope");
  const v1::ListPodsResponse none = ListPods(pods, nodes, request);
  CHECK(none.pods_size() == 0);
  CHECK(none.nodes_size() == 3);
}

TEST_CASE("Selectors take any spelling of a type: bad ones are INVALID_ARGUMENT naming the field",
          "[unit]") {
  const absl::StatusOr<Selector> deployments = ToSelector(Resource("Deployments", "web"), "to");
  REQUIRE(deployments.ok());
  CHECK(deployments->type == ResourceType::kDeployment);
  CHECK(deployments->namespace_name == "emojivoto");
  CHECK(deployments->name == "web");

  const auto error = [](const v1::Resource& resource, std::string_view field) {
    const absl::StatusOr<Selector> selector = ToSelector(resource, field);
    CHECK(selector.status().code() == absl::StatusCode::kInvalidArgument);
    return std::string(selector.status().message());
  };
  CHECK_THAT(error(Resource("service", "web"), "selector"),
             Catch::Contains("selector type 'service'") && Catch::Contains("deployment (deploy)"));
  CHECK_THAT(error(Resource("", "web"), "from"), Catch::Contains("from type is missing"));
  CHECK_THAT(error(Resource("deploy", "emojivoto/web"), "to"),
             Catch::Contains("to name 'emojivoto/web' contains '/'"));

  CHECK_FALSE(IsSet(v1::Resource()));
  CHECK(IsSet(Resource("", "", "emojivoto")));
  CHECK(IsSet(Resource("deploy", "", "")));

  const v1::Resource ns = ToProto(ResourceType::kNamespace, ResourceKey{"emojivoto", "emojivoto"});
  CHECK(ns.type() == "namespace");
  CHECK(ns.namespace_() == "emojivoto");
  CHECK(ns.name() == "emojivoto");

  // Each query checks its request's resources so, and stat the two it cannot combine.
  Fixture fixture;
  const auto stat_error = [&](const v1::StatSummaryRequest& request) {
    const absl::StatusOr<v1::StatSummaryResponse> response =
        StatSummary(fixture.Context(), fixture.pods, request);
    CHECK(response.status().code() == absl::StatusCode::kInvalidArgument);
    return std::string(response.status().message());
  };
  CHECK_THAT(stat_error(StatRequest(Resource("replicaset", "web"))),
             Catch::Contains("selector type 'replicaset'"));
  v1::StatSummaryRequest request = StatRequest(Resource("deploy", ""));
  *request.mutable_from() = Resource("deploy", "web");
  *request.mutable_to() = Resource("deploy", "voting");
  CHECK_THAT(stat_error(request), Catch::Contains("cannot be combined"));
  request.clear_to();
  *request.mutable_from() = Resource("", "web");
  CHECK_THAT(stat_error(request), Catch::Contains("from type"));
  request.clear_from();
  *request.mutable_to() = Resource("sts", "emojivoto/db");
  CHECK_THAT(stat_error(request), Catch::Contains("to name"));

  const absl::StatusOr<v1::EdgesResponse> edges =
      Edges(fixture.Context(), EdgesRequestFor(v1::Resource()));
  CHECK(edges.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(edges.status().message()), Catch::Contains("selector type is missing"));
  v1::TopRoutesRequest routes = RoutesRequest(Resource("deploy", "voting"));
  *routes.mutable_from() = Resource("svc", "web");
  const absl::StatusOr<v1::TopRoutesResponse> routes_response =
      TopRoutes(fixture.Context(), routes);
  CHECK(routes_response.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(routes_response.status().message()), Catch::Contains("from type 'svc'"));
}

TEST_CASE("Every answer names the stale nodes it is given", "[unit]") {
  Fixture fixture;
  v1::NodeStatus gone;
  gone.set_node("node-b");
  gone.set_connected(false);
  gone.set_last_report_unix_seconds(kNow - 30);
  gone.set_stale(true);
  fixture.stale_nodes = {gone};
  const auto only_gone = [](const google::protobuf::RepeatedPtrField<v1::NodeStatus>& stale) {
    return stale.size() == 1 && stale[0].node() == "node-b" && !stale[0].connected() &&
           stale[0].last_report_unix_seconds() == kNow - 30;
  };
  CHECK(only_gone(fixture.Stat(Resource("deploy", "")).stale_nodes()));
  CHECK(only_gone(fixture.EdgesOf(Resource("deploy", "")).stale_nodes()));
  CHECK(only_gone(fixture.Routes(RoutesRequest(Resource("deploy", ""))).stale_nodes()));
}

// A view request of the cast's namespace (or those given), 10 s.
v1::ViewRequest ViewOf(v1::ViewRequest::Kind kind,
                       std::vector<std::string> namespaces = {"emojivoto"}) {
  v1::ViewRequest request;
  request.set_kind(kind);
  for (std::string& name : namespaces) request.add_namespaces(std::move(name));
  request.set_window_seconds(10);
  return request;
}

v1::ViewResponse ViewFor(const Fixture& fixture, const v1::ViewRequest& request) {
  absl::StatusOr<v1::ViewResponse> response = View(fixture.Context(), fixture.pods, request);
  INFO(response.status().ToString());
  REQUIRE(response.ok());
  return *std::move(response);
}

// Rows and edges by name, serialized, so that a view's parts compare with the calls' answers
// whatever their order.
std::map<std::string, std::string> RowsByName(const v1::StatSummaryResponse& response) {
  std::map<std::string, std::string> rows;
  for (const v1::StatRow& row : response.rows()) {
    rows[row.resource().namespace_() + "/" + row.resource().name()] = row.SerializeAsString();
  }
  return rows;
}
std::map<std::string, std::string> EdgesByName(const v1::EdgesResponse& response) {
  std::map<std::string, std::string> edges;
  for (const v1::Edge& edge : response.edges()) {
    edges[edge.source().name() + ">" + edge.destination().name()] = edge.SerializeAsString();
  }
  return edges;
}
std::vector<std::string> EdgeNames(const v1::ViewResponse& response) {
  std::vector<std::string> names;
  for (const auto& [name, edge] : EdgesByName(response.edges())) names.push_back(name);
  return names;
}
std::vector<std::string> NodeNames(const v1::ViewResponse& response) {
  std::vector<std::string> names;
  for (const auto& [name, row] : RowsByName(response.stats())) names.push_back(name);
  return names;
}

TEST_CASE("A view is the composition of stat, edges, routes and pods over one instant", "[unit]") {
  Scenario scenario;
  v1::NodeStatus gone;
  gone.set_node("node-b");
  gone.set_stale(true);
  scenario.stale_nodes = {gone};

  const v1::ViewResponse namespaces = ViewFor(scenario, ViewOf(v1::ViewRequest::NAMESPACES, {}));
  CHECK(RowsByName(namespaces.stats()) == RowsByName(scenario.Stat(Resource("ns", "", ""))));
  CHECK(namespaces.window_seconds() == 10);
  CHECK(namespaces.unix_seconds() == kNow);
  REQUIRE(namespaces.stale_nodes_size() == 1);  // said once, not in the parts
  CHECK(namespaces.stats().stale_nodes_size() == 0);

  const v1::ViewResponse workloads = ViewFor(scenario, ViewOf(v1::ViewRequest::WORKLOADS));
  CHECK(RowsByName(workloads.stats()) == RowsByName(scenario.Stat(Resource("deploy", ""))));
  CHECK(workloads.stats().rows_size() == 4);
  v1::ViewRequest pods_request = ViewOf(v1::ViewRequest::WORKLOADS);
  pods_request.set_type("po");
  CHECK(RowsByName(ViewFor(scenario, pods_request).stats()) ==
        RowsByName(scenario.Stat(Resource("po", ""))));

  const v1::ViewResponse graph = ViewFor(scenario, ViewOf(v1::ViewRequest::GRAPH));
  CHECK(EdgesByName(graph.edges()) == EdgesByName(scenario.EdgesOf(Resource("deploy", ""))));
  // A node per deployment of the namespace, with its stat row, and the external caller.
  std::map<std::string, std::string> rows = RowsByName(scenario.Stat(Resource("deploy", "")));
  v1::StatRow external;
  *external.mutable_resource() = Resource("external", "external", "");
  rows["/external"] = external.SerializeAsString();
  CHECK(RowsByName(graph.stats()) == rows);
  CHECK(graph.size().nodes() == 5);
  CHECK(graph.size().edges() == 4);
  CHECK(graph.size().shown_nodes() == 5);
  CHECK(graph.size().shown_edges() == 4);
  CHECK_FALSE(graph.size().withheld());
  CHECK(graph.size().failing_edges() == 1);  // web -> voting, 75 %
  CHECK(graph.size().nodes_by_namespace().at("emojivoto") == 4);
  CHECK(graph.size().nodes_by_namespace_size() == 1);  // the external peer is in none

  v1::ViewRequest web_request = ViewOf(v1::ViewRequest::WORKLOAD);
  *web_request.mutable_resource() = Resource("deploy", "web", "");
  const v1::ViewResponse web = ViewFor(scenario, web_request);
  CHECK(RowsByName(web.stats()) == RowsByName(scenario.Stat(Resource("deploy", "web"))));
  CHECK(EdgesByName(web.edges()) == EdgesByName(scenario.EdgesOf(Resource("deploy", "web"))));
  v1::TopRoutesResponse routes = scenario.Routes(RoutesRequest(Resource("deploy", "web")));
  routes.clear_stale_nodes();
  CHECK(web.routes().SerializeAsString() == routes.SerializeAsString());
  REQUIRE(web.pods().pods_size() == 1);
  CHECK(web.pods().pods(0).identity().pod() == "web-a");
  CHECK(web.edges().stale_nodes_size() == 0);
  CHECK(web.stale_nodes_size() == 1);
}

TEST_CASE("Graph filters keep edges and their ends: failing, around, hidden namespaces, external",
          "[unit]") {
  Scenario scenario;
  v1::ViewRequest request = ViewOf(v1::ViewRequest::GRAPH);

  request.mutable_filter()->set_only_failing(true);
  v1::ViewResponse failing = ViewFor(scenario, request);
  CHECK(EdgeNames(failing) == std::vector<std::string>{"web>voting"});
  CHECK(NodeNames(failing) == std::vector<std::string>{"emojivoto/voting", "emojivoto/web"});
  CHECK(failing.size().nodes() == 5);  // the sizes before the filter stay
  CHECK(failing.size().shown_nodes() == 2);
  CHECK(failing.size().shown_edges() == 1);
  // A lower bar: 75 % is not failing below 70 %.
  request.mutable_filter()->set_failing_below(0.7);
  CHECK(ViewFor(scenario, request).edges().edges_size() == 0);
  request.mutable_filter()->set_failing_below(1.5);
  CHECK(View(scenario.Context(), scenario.pods, request).status().code() ==
        absl::StatusCode::kInvalidArgument);

  request.clear_filter();
  *request.mutable_filter()->mutable_around() = Resource("", "voting", "");
  const v1::ViewResponse around_voting = ViewFor(scenario, request);
  CHECK(EdgeNames(around_voting) == std::vector<std::string>{"web>voting"});
  CHECK(NodeNames(around_voting).size() == 2);
  *request.mutable_filter()->mutable_around() = Resource("deploy", "web");
  CHECK(ViewFor(scenario, request).edges().edges_size() == 4);
  *request.mutable_filter()->mutable_around() = Resource("deploy", "");
  CHECK(View(scenario.Context(), scenario.pods, request).status().code() ==
        absl::StatusCode::kInvalidArgument);

  request.clear_filter();
  request.mutable_filter()->set_hide_external(true);
  const v1::ViewResponse internal = ViewFor(scenario, request);
  CHECK(EdgeNames(internal) == std::vector<std::string>{"vote-bot>web", "web>emoji", "web>voting"});
  CHECK(NodeNames(internal).size() == 4);

  request.clear_filter();
  request.mutable_filter()->add_hide_namespaces("emojivoto");
  const v1::ViewResponse hidden = ViewFor(scenario, request);
  CHECK(hidden.edges().edges_size() == 0);
  CHECK(hidden.stats().rows_size() == 0);
  CHECK(hidden.size().nodes() == 5);
}

TEST_CASE("A graph past its thresholds is withheld with its size under each filter", "[unit]") {
  Scenario scenario;
  v1::ViewRequest request = ViewOf(v1::ViewRequest::GRAPH);
  request.mutable_filter()->set_max_nodes(4);
  const v1::ViewResponse withheld = ViewFor(scenario, request);
  CHECK(withheld.size().withheld());
  CHECK(withheld.stats().rows_size() == 0);
  CHECK(withheld.edges().edges_size() == 0);
  CHECK(withheld.size().shown_nodes() == 0);
  CHECK(withheld.size().shown_edges() == 0);
  // What the caller needs to choose a filter is there.
  CHECK(withheld.size().nodes() == 5);
  CHECK(withheld.size().edges() == 4);
  CHECK(withheld.size().failing_edges() == 1);
  CHECK(withheld.size().nodes_by_namespace().at("emojivoto") == 4);

  // Under the threshold once filtered.
  request.mutable_filter()->set_only_failing(true);
  CHECK_FALSE(ViewFor(scenario, request).size().withheld());
  request.mutable_filter()->set_only_failing(false);
  request.mutable_filter()->set_max_edges(3);
  request.mutable_filter()->set_max_nodes(0);  // the default, 300
  CHECK(ViewFor(scenario, request).size().withheld());
  request.mutable_filter()->set_draw_anyway(true);
  const v1::ViewResponse drawn = ViewFor(scenario, request);
  CHECK_FALSE(drawn.size().withheld());
  CHECK(drawn.edges().edges_size() == 4);
}

TEST_CASE("A view of several namespaces has each edge once and far ends with their rows",
          "[unit]") {
  Scenario scenario;
  const v1::Pod reader = MakePod("books", "reader-1", "Deployment", "reader", "node-a", true);
  scenario.AddPods("node-a", {reader});
  scenario.Add(DeltaBuilder(kNow - 1)
                   .Responses(reader.identity(), scenario.cast.web_a.identity(), v1::OUTBOUND,
                              "GET /api/list", 8, 1'000'000)
                   .delta());

  // From emojivoto alone, reader is a far end with the row books' stat gives it.
  const v1::ViewResponse one = ViewFor(scenario, ViewOf(v1::ViewRequest::GRAPH));
  REQUIRE(RowsByName(one.stats()).contains("books/reader"));
  CHECK(RowsByName(one.stats()).at("books/reader") ==
        RowsByName(scenario.Stat(Resource("deploy", "reader", "books"))).at("books/reader"));
  CHECK(one.size().nodes_by_namespace().at("books") == 1);

  const v1::ViewResponse both =
      ViewFor(scenario, ViewOf(v1::ViewRequest::GRAPH, {"emojivoto", "books", "emojivoto"}));
  CHECK(both.edges().edges_size() == 5);  // reader -> web once, though both namespaces have it
  CHECK(both.size().edges() == 5);
  CHECK(both.size().nodes() == 6);

  const v1::ViewResponse workloads =
      ViewFor(scenario, ViewOf(v1::ViewRequest::WORKLOADS, {"emojivoto", "books"}));
  CHECK(workloads.stats().rows_size() == 5);

  v1::ViewRequest hide_books = ViewOf(v1::ViewRequest::GRAPH, {"emojivoto", "books"});
  hide_books.mutable_filter()->add_hide_namespaces("books");
  CHECK(ViewFor(scenario, hide_books).edges().edges_size() == 4);

  // Fifty namespaces at most.
  std::vector<std::string> many;
  for (int i = 0; i < 50; ++i) many.push_back("ns-" + std::to_string(i));
  CHECK(ViewFor(scenario, ViewOf(v1::ViewRequest::GRAPH, many)).size().nodes() == 0);
  many.push_back("emojivoto");
  const absl::Status too_many =
      View(scenario.Context(), scenario.pods, ViewOf(v1::ViewRequest::GRAPH, many)).status();
  CHECK(too_many.code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(too_many.message()), Catch::Contains("at most 50"));
}

TEST_CASE("Views asked wrongly are INVALID_ARGUMENT saying what to give", "[unit]") {
  Fixture fixture;
  const auto error = [&](const v1::ViewRequest& request) {
    const absl::Status status = View(fixture.Context(), fixture.pods, request).status();
    CHECK(status.code() == absl::StatusCode::kInvalidArgument);
    return std::string(status.message());
  };
  CHECK_THAT(error(ViewOf(v1::ViewRequest::KIND_UNSPECIFIED)), Catch::Contains("kind"));
  CHECK_THAT(error(ViewOf(v1::ViewRequest::NAMESPACES)), Catch::Contains("no namespaces"));
  CHECK_THAT(error(ViewOf(v1::ViewRequest::GRAPH, {})), Catch::Contains("at least one"));
  CHECK_THAT(error(ViewOf(v1::ViewRequest::WORKLOADS, {""})), Catch::Contains("empty name"));
  CHECK_THAT(error(ViewOf(v1::ViewRequest::WORKLOAD)), Catch::Contains("resource type"));
  v1::ViewRequest bad_type = ViewOf(v1::ViewRequest::GRAPH);
  bad_type.set_type("widget");
  CHECK_THAT(error(bad_type), Catch::Contains("widget"));
  v1::ViewRequest bad_window = ViewOf(v1::ViewRequest::WORKLOADS);
  bad_window.set_window_seconds(5);
  CHECK_THAT(error(bad_window), Catch::Contains("window_seconds"));
  v1::ViewRequest elsewhere = ViewOf(v1::ViewRequest::WORKLOAD);
  *elsewhere.mutable_resource() = Resource("deploy", "web", "books");
  CHECK_THAT(error(elsewhere), Catch::Contains("differs"));
}

TEST_CASE("Views of Services: their rows, and a graph with them between callers and backends",
          "[unit]") {
  ServiceScenario fixture;
  v1::ViewRequest workloads = ViewOf(v1::ViewRequest::WORKLOADS);
  workloads.set_type("svc");
  CHECK(RowsByName(ViewFor(fixture, workloads).stats()) ==
        RowsByName(fixture.Stat(Resource("svc", ""))));

  v1::ViewRequest graph_request = ViewOf(v1::ViewRequest::GRAPH);
  graph_request.set_type("service");
  const v1::ViewResponse graph = ViewFor(fixture, graph_request);
  CHECK(EdgesByName(graph.edges()) == EdgesByName(fixture.EdgesOf(Resource("svc", ""))));
  // The Services with their rows; callers and backends with their own resources' rows.
  std::map<std::string, std::string> rows = RowsByName(fixture.Stat(Resource("svc", "")));
  const std::map<std::string, std::string> deployments =
      RowsByName(fixture.Stat(Resource("deploy", "")));
  for (const char* name : {"emojivoto/web", "emojivoto/voting", "emojivoto/emoji"}) {
    rows[name] = deployments.at(name);
  }
  v1::StatRow external;
  *external.mutable_resource() = Resource("external", "external", "");
  rows["/external"] = external.SerializeAsString();
  CHECK(RowsByName(graph.stats()) == rows);
  CHECK(graph.size().nodes() == 6);
  CHECK(graph.size().edges() == 5);
  CHECK(graph.size().failing_edges() == 2);  // web -> voting-svc (80 %), voting-svc -> external

  v1::ViewRequest around = graph_request;
  *around.mutable_filter()->mutable_around() = Resource("", "voting-svc", "");
  CHECK(EdgeNames(ViewFor(fixture, around)) ==
        std::vector<std::string>{"voting-svc>external", "voting-svc>voting", "web>voting-svc"});
  around.mutable_filter()->set_hide_external(true);
  CHECK(EdgeNames(ViewFor(fixture, around)) ==
        std::vector<std::string>{"voting-svc>voting", "web>voting-svc"});

  v1::ViewRequest one = ViewOf(v1::ViewRequest::WORKLOAD);
  *one.mutable_resource() = Resource("svc", "voting-svc", "");
  const v1::ViewResponse voting = ViewFor(fixture, one);
  CHECK(RowsByName(voting.stats()) == RowsByName(fixture.Stat(Resource("svc", "voting-svc"))));
  CHECK(EdgesByName(voting.edges()) == EdgesByName(fixture.EdgesOf(Resource("svc", "voting-svc"))));
  REQUIRE(voting.routes().routes_size() == 1);
  CHECK(voting.routes().routes(0).requests() == 10);
  CHECK(voting.pods().pods_size() == 0);  // a Service owns no pod
}

}  // namespace
}  // namespace nodemesh::aggregator
