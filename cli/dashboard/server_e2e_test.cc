// meshctl dashboard as a user runs it: its own process, serving on loopback, in front of a
// real nodemesh-aggregator fed by a fake agent; the page's requests made with curl, the
// printed token traded for the session cookie first, as a browser does.
#include <fmt/format.h>
#include <signal.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "nodemesh/v1/nodemesh.pb.h"
#include "test/lib/aggregator_process.h"
#include "test/lib/dashboard_process.h"
#include "test/lib/fake_agent.h"
#include "test/lib/files.h"
#include "test/lib/process.h"

namespace nodemesh::testing {
namespace {

using namespace std::chrono_literals;

v1::Pod EmojivotoPod(const std::string& name, const std::string& deployment) {
  return MeshedPod("emojivoto", name, deployment, "node-a");
}

// The body and the status of a request curl made.
std::pair<std::string, int> BodyAndStatus(const CommandResult& result) {
  INFO(result.output);
  return DashboardProcess::BodyAndStatus(result);
}

TEST_CASE("meshctl dashboard relays a graph view and a tap from a real aggregator",
          "[dashboard][e2e]") {
  AggregatorProcess aggregator({.binary = NODEMESH_AGGREGATOR_BINARY});
  FakeAgent agent(aggregator.address(), "node-a",
                  {EmojivotoPod("web-1", "web"), EmojivotoPod("voting-1", "voting")});
  REQUIRE(aggregator.WaitForNode("node-a"));
  DashboardProcess dashboard(
      {.binary = NODEMESH_MESHCTL_BINARY,
       .args = {"--aggregator", aggregator.address(), "#/graph?ns=emojivoto"},
       .env = {{"DISPLAY", ""}, {"WAYLAND_DISPLAY", ""}, {"KUBECONFIG", ""}}});
  CHECK(dashboard.fragment() == "#/graph?ns=emojivoto");
  INFO(dashboard.process().output());

  // Without the cookie the API is closed; the page itself is not.
  auto [refused, refused_status] = BodyAndStatus(dashboard.Curl("/api/v1alpha1/views/namespaces"));
  CHECK(refused_status == 401);
  CHECK(nlohmann::json::parse(refused)["code"] == "UNAUTHENTICATED");
  auto [page, page_status] = BodyAndStatus(dashboard.Curl("/", {"--compressed"}));
  CHECK(page_status == 200);
  CHECK(page.find("/app.js") != std::string::npos);

  // An asset the browser has is not sent again.
  const CommandResult head = dashboard.Curl("/app.js", {"-o", "/dev/null", "-D", "-"});
  std::smatch etag;
  REQUIRE(std::regex_search(head.output, etag,
                            std::regex(R"re(etag: ("[0-9a-f]{64}"))re", std::regex::icase)));
  auto [unchanged, unchanged_status] =
      BodyAndStatus(dashboard.Curl("/app.js", {"-H", "If-None-Match: " + etag[1].str()}));
  CHECK(unchanged_status == 304);
  CHECK(unchanged.empty());

  // The printed address sets the cookie and sends the browser to /.
  auto [traded, traded_status] = BodyAndStatus(dashboard.Curl("/?token=" + dashboard.token()));
  CHECK(traded_status == 303);

  auto [graph, graph_status] =
      BodyAndStatus(dashboard.Curl("/api/v1alpha1/namespaces/emojivoto/views/graph?type=deployment"
                                   "&windowSeconds=60"));
  INFO(graph);
  REQUIRE(graph_status == 200);
  const nlohmann::json view = nlohmann::json::parse(graph);
  // The fake agent's two deployments, as nodes of the graph (no calls between them yet).
  CHECK(view["size"]["nodes"] == 2);
  std::set<std::string> nodes;
  for (const nlohmann::json& row : view["stats"]["rows"]) nodes.insert(row["resource"]["name"]);
  CHECK(nodes == std::set<std::string>{"voting", "web"});

  // A tap: curl keeps reading the stream until it is stopped.
  Process tap({"curl", "-sS", "-N", "-b", dashboard.cookie_jar(),
               dashboard.origin() +
                   "/api/v1alpha1/namespaces/emojivoto/taps?watch=true&target.type=deployment"
                   "&target.name=voting"});
  REQUIRE(PollUntil([&] { return !agent.subscribed().empty(); }, 15s));
  const uint64_t subscription = *agent.subscribed().begin();
  v1::AgentMessage events;
  v1::TapEvent& event = *events.mutable_tap()->add_events();
  event.set_subscription(subscription);
  event.set_request_id("node-a:1:1");
  *event.mutable_source() = EmojivotoPod("web-1", "web").identity();
  *event.mutable_destination() = EmojivotoPod("voting-1", "voting").identity();
  event.mutable_request()->set_method("POST");
  event.mutable_request()->set_path("/emojivoto.v1.VotingService/VotePizza");
  agent.Send(events);
  INFO(tap.output());
  REQUIRE(tap.WaitForOutput("VotePizza", 15s));
  const std::string output = tap.output();
  const size_t end = output.find('\n', output.find("VotePizza"));
  const size_t start = output.rfind('\n', output.find("VotePizza"));
  const nlohmann::json message = nlohmann::json::parse(
      output.substr(start == std::string::npos ? 0 : start + 1, end - (start + 1)));
  CHECK(message["event"]["requestId"] == "node-a:1:1");
  CHECK(message["event"]["request"]["method"] == "POST");

  // The browser leaving ends the aggregator's tap: its subscription is cancelled.
  tap.Kill();
  CHECK(PollUntil([&] { return agent.cancelled().count(subscription) == 1; }, 15s));

  // Ctrl-C: meshctl stops serving and exits 0.
  dashboard.process().Signal(SIGINT);
  const std::optional<ExitStatus> ended = dashboard.process().Wait(15s);
  REQUIRE(ended.has_value());
  CHECK(ended->ok());
}

// The children of process `pid` (every thread's), from /proc.
std::string ChildrenOf(pid_t pid) {
  std::string children;
  for (const auto& task : std::filesystem::directory_iterator(fmt::format("/proc/{}/task", pid))) {
    children += ReadFile(task.path().string() + "/children");
  }
  return children;
}

TEST_CASE("meshctl dashboard opens the address with xdg-open when there is a display, and reaps it",
          "[dashboard][e2e]") {
  AggregatorProcess aggregator({.binary = NODEMESH_AGGREGATOR_BINARY});
  const TempDir bin;
  // An xdg-open that notes what it was asked to open.
  WriteFile(bin.path() + "/xdg-open", fmt::format("#!/bin/sh\necho \"$1\" > {}/opened.tmp && "
                                                  "mv {}/opened.tmp {}/opened\n",
                                                  bin.path(), bin.path(), bin.path()));
  std::filesystem::permissions(bin.path() + "/xdg-open", std::filesystem::perms::owner_all);
  DashboardProcess dashboard({.binary = NODEMESH_MESHCTL_BINARY,
                              .args = {"--aggregator", aggregator.address()},
                              .no_browser = false,
                              .env = {{"DISPLAY", ":0"},
                                      {"WAYLAND_DISPLAY", ""},
                                      {"KUBECONFIG", ""},
                                      {"PATH", bin.path() + ":" + std::getenv("PATH")}}});
  INFO(dashboard.process().output());
  const std::string opened = bin.path() + "/opened";
  REQUIRE(PollUntil([&] { return std::filesystem::exists(opened); }, 15s));
  CHECK(ReadFile(opened) == dashboard.origin() + "/?token=" + dashboard.token() + "\n");
  // Ended and reaped: no child left, not even a zombie.
  CHECK(PollUntil([&] { return ChildrenOf(dashboard.process().pid()).empty(); }, 15s));
}

TEST_CASE("meshctl dashboard with an aggregator that does not answer fails at once",
          "[dashboard][e2e]") {
  const CommandResult result = RunCommand(
      {NODEMESH_MESHCTL_BINARY, "dashboard", "--aggregator", "127.0.0.1:1", "--no-browser"}, 30s,
      {.env = {{"KUBECONFIG", ""}}});
  INFO(result.output);
  CHECK(result.exit_code == 1);
  CHECK(result.output.starts_with("meshctl: cannot reach the aggregator at 127.0.0.1:1"));
  CHECK(result.output.find("Dashboard:") == std::string::npos);
}

}  // namespace
}  // namespace nodemesh::testing
