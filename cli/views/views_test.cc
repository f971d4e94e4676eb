// Every output format against golden files in cli/testdata (UPDATE_GOLDEN=1 rewrites them).
#include "cli/views/views.h"

#include <catch2/catch.hpp>

#include "cli/golden.h"

namespace nodemesh::cli {
namespace {

using testing::CheckGolden;
using testing::kNow;
using testing::ReadTextProto;

TEST_CASE("stat: table", "[views][stat]") {
  const auto response = ReadTextProto<v1::StatSummaryResponse>("stat_deployments.textproto");
  CheckGolden("stat_table.golden", RenderStat(response, OutputFormat::kTable, false));
}

TEST_CASE("stat: wide", "[views][stat]") {
  const auto response = ReadTextProto<v1::StatSummaryResponse>("stat_deployments.textproto");
  CheckGolden("stat_wide.golden", RenderStat(response, OutputFormat::kWide, false));
}

TEST_CASE("stat: json", "[views][stat]") {
  const auto response = ReadTextProto<v1::StatSummaryResponse>("stat_deployments.textproto");
  CheckGolden("stat_json.golden", RenderStat(response, OutputFormat::kJson, false));
}

TEST_CASE("stat: every namespace adds NAMESPACE first", "[views][stat]") {
  const auto response = ReadTextProto<v1::StatSummaryResponse>("stat_all_namespaces.textproto");
  CheckGolden("stat_all_namespaces.golden", RenderStat(response, OutputFormat::kTable, true));
  CheckGolden("stat_all_namespaces_wide.golden", RenderStat(response, OutputFormat::kWide, true));
}

TEST_CASE("stat: services, with no pods to count", "[views][stat]") {
  const auto response = ReadTextProto<v1::StatSummaryResponse>("stat_services.textproto");
  CheckGolden("stat_services.golden", RenderStat(response, OutputFormat::kTable, false));
  CheckGolden("stat_services_json.golden", RenderStat(response, OutputFormat::kJson, false));
}

TEST_CASE("stat: stale nodes are warned about, one line each", "[views][stat]") {
  const auto response = ReadTextProto<v1::StatSummaryResponse>("stat_all_namespaces.textproto");
  CheckGolden("stale_warnings.golden", RenderStaleWarnings(response.stale_nodes(), kNow));
}

TEST_CASE("stat: nothing found is an empty table or an empty document", "[views][stat]") {
  v1::StatSummaryResponse empty;
  empty.set_window_seconds(60);
  CHECK(RenderStat(empty, OutputFormat::kTable, false) ==
        "NAME   MESHED   SUCCESS   RPS   LATENCY_P50   LATENCY_P95   LATENCY_P99   TCP_CONN\n");
  CHECK(RenderStat(empty, OutputFormat::kJson, false) ==
        "{\n  \"window_seconds\": 60,\n  \"rows\": [],\n  \"stale_nodes\": []\n}\n");
}

std::string RenderAll(const v1::TapEvents& events, OutputFormat format) {
  std::string text;
  for (const v1::TapEvent& event : events.events()) text += RenderTapEvent(event, format);
  return text;
}

TEST_CASE("tap: req, rsp and end lines", "[views][tap]") {
  const auto events = ReadTextProto<v1::TapEvents>("tap_events.textproto");
  CheckGolden("tap.golden", RenderAll(events, OutputFormat::kTable));
}

TEST_CASE("tap: wide adds addresses and workloads", "[views][tap]") {
  const auto events = ReadTextProto<v1::TapEvents>("tap_events.textproto");
  CheckGolden("tap_wide.golden", RenderAll(events, OutputFormat::kWide));
}

TEST_CASE("tap: json, one object per line", "[views][tap]") {
  const auto events = ReadTextProto<v1::TapEvents>("tap_events.textproto");
  CheckGolden("tap_json.golden", RenderAll(events, OutputFormat::kJson));
}

TEST_CASE("tap: calls dialled to a Service name it next to the pod reached", "[views][tap]") {
  const auto events = ReadTextProto<v1::TapEvents>("tap_service_events.textproto");
  CheckGolden("tap_service.golden", RenderAll(events, OutputFormat::kTable));
  CheckGolden("tap_service_wide.golden", RenderAll(events, OutputFormat::kWide));
  CheckGolden("tap_service_json.golden", RenderAll(events, OutputFormat::kJson));
}

TEST_CASE("tap: every gRPC status by name", "[views][tap]") {
  const auto events = ReadTextProto<v1::TapEvents>("tap_events.textproto");
  v1::TapEvent end = events.events(2);
  REQUIRE(end.has_end());
  std::string text;
  for (int32_t status = 0; status <= 17; ++status) {
    end.mutable_end()->set_grpc_status(status);
    text += RenderTapEvent(end, OutputFormat::kTable);
  }
  CheckGolden("tap_grpc_statuses.golden", text);
}

TEST_CASE("tap: drops go to stderr with what to do", "[views][tap]") {
  v1::TapDrops drops;
  drops.set_agent_dropped(2);
  drops.set_stream_dropped(10);
  CHECK(RenderTapDrops(drops) ==
        "tap: 12 events dropped (agents 2, stream 10): raise --max-rps or narrow the match\n");
  drops.set_stream_dropped(0);
  drops.set_agent_dropped(1);
  CHECK(RenderTapDrops(drops) ==
        "tap: 1 event dropped (agents 1, stream 0): raise --max-rps or narrow the match\n");
}

TEST_CASE("top: busiest first", "[views][top]") {
  const auto response = ReadTextProto<v1::TopRoutesResponse>("routes.textproto");
  CheckGolden("top.golden", RenderTop(response, "", false));
}

TEST_CASE("top: a terminal frame clears the screen and has a title", "[views][top]") {
  const auto response = ReadTextProto<v1::TopRoutesResponse>("routes.textproto");
  CheckGolden(
      "top_tty.golden",
      RenderTop(
          response,
          "Busiest routes in namespace emojivoto over the last 10s (every 2s; Ctrl-C to quit)",
          true));
}

TEST_CASE("routes: table, wide and json", "[views][routes]") {
  const auto response = ReadTextProto<v1::TopRoutesResponse>("routes.textproto");
  CheckGolden("routes_table.golden", RenderRoutes(response, OutputFormat::kTable));
  CheckGolden("routes_wide.golden", RenderRoutes(response, OutputFormat::kWide));
  CheckGolden("routes_json.golden", RenderRoutes(response, OutputFormat::kJson));
}

TEST_CASE("edges: table and json", "[views][edges]") {
  const auto response = ReadTextProto<v1::EdgesResponse>("edges.textproto");
  CheckGolden("edges_table.golden", RenderEdges(response, OutputFormat::kTable));
  CheckGolden("edges_json.golden", RenderEdges(response, OutputFormat::kJson));
}

TEST_CASE("check: all well", "[views][check]") {
  const auto pods = ReadTextProto<v1::ListPodsResponse>("pods_healthy.textproto");
  const CheckReport report = RenderCheck("127.0.0.1:8085", pods, kNow);
  CHECK(report.problems == 0);
  CheckGolden("check_healthy.golden", report.text);
}

TEST_CASE("check: each problem on one line with what to do", "[views][check]") {
  const auto pods = ReadTextProto<v1::ListPodsResponse>("pods_problems.textproto");
  const CheckReport report = RenderCheck("127.0.0.1:8085", pods, kNow);
  CHECK(report.problems == 4);
  CheckGolden("check_problems.golden", report.text);
}

TEST_CASE("check: no agent at all", "[views][check]") {
  const CheckReport report = RenderCheck("127.0.0.1:8085", v1::ListPodsResponse(), kNow);
  CHECK(report.problems == 1);
  CHECK(report.text ==
        "√ aggregator reachable at 127.0.0.1:8085\n"
        "× no node agent has connected: start nodemesh-agent --aggregator 127.0.0.1:8085 on "
        "every node\n"
        "√ 0 pods running, 0 meshed, 0 enrolled\n");
}

TEST_CASE("output formats", "[views]") {
  CHECK(*ParseOutputFormat("wide", "stat", {OutputFormat::kTable, OutputFormat::kWide}) ==
        OutputFormat::kWide);
  const auto bad = ParseOutputFormat("yaml", "edges", {OutputFormat::kTable, OutputFormat::kJson});
  REQUIRE_FALSE(bad.ok());
  CHECK(std::string(bad.status().message()) ==
        "unknown output format 'yaml' for edges: use -o table or -o json");
}

}  // namespace
}  // namespace nodemesh::cli
