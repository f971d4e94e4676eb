// End-to-end tier for the aggregator's replicas: two simulated nodes, a real agent on each
// streaming to two real aggregator processes, real traffic crossing the nodes, and every
// answer checked through meshctl against each replica.
#include <fmt/format.h>
#include <signal.h>

#include <catch2/catch.hpp>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <string>
#include <vector>

#include "test/lib/agent_process.h"
#include "test/lib/aggregator_process.h"
#include "test/lib/peers.h"
#include "test/lib/process.h"
#include "test/lib/test_node.h"
#include "test/lib/two_node_cluster.h"

namespace nodemesh::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

// node-a runs the caller (deployment "load"), node-b the server ("api"); both agents stream
// to both replicas. The second replica knows the first as its peer: restarted, it takes the
// seconds before its start from it.
struct Replicated : TwoNodeCluster {
  const Pod& load = node_a.AddPod({.namespace_name = "shop",
                                   .name = "load-5f7c9-abcde",
                                   .owner_name = "load",
                                   .service_account = "load",
                                   .meshed = true});
  const Pod& api = node_b.AddPod({.namespace_name = "shop",
                                  .name = "api-7d9f8-xyz12",
                                  .owner_name = "api",
                                  .service_account = "api",
                                  .meshed = true});
  AggregatorProcess first{{.binary = NODEMESH_AGGREGATOR_BINARY}};
  AggregatorProcess second{
      {.binary = NODEMESH_AGGREGATOR_BINARY, .extra_args = {"--peers", first.address()}}};
  std::unique_ptr<Process> server;

  Replicated() : TwoNodeCluster({.tier = "e2e"}) {
    server = std::make_unique<Process>(api.Run({kPython, SourcePath("test/e2e/metrics_peer.py"),
                                                "http-server", "--listen", Target(api, 8080)}));
    REQUIRE(server->WaitForOutput("listening", 10s));
    StartAgents(
        {.binary = NODEMESH_AGENT_BINARY,
         .extra_args = {"--aggregator", fmt::format("{},{}", first.address(), second.address())}});
    for (AggregatorProcess* replica : {&first, &second}) {
      REQUIRE(replica->WaitForNode("node-a"));
      REQUIRE(replica->WaitForNode("node-b"));
    }
    REQUIRE(agent_b->WaitForInboundPort(api, 8080));
  }
  ~Replicated() { StopAgents(); }  // before the replicas they stream to

  CommandResult Meshctl(const AggregatorProcess& replica,
                        std::vector<std::string> arguments) const {
    arguments.insert(arguments.begin(),
                     {NODEMESH_MESHCTL_BINARY, "--aggregator", replica.address()});
    return RunCommand(arguments, 60s);
  }

  // The api row's requests of `meshctl stat deploy` over `window` from `replica`, with the
  // window's length; null when there is no such row.
  json ApiRow(const AggregatorProcess& replica, const std::string& window,
              std::vector<std::string> more = {}) const {
    std::vector<std::string> arguments = {"stat", "deploy", "-n", "shop",
                                          "-t",   window,   "-o", "json"};
    arguments.insert(arguments.end(), more.begin(), more.end());
    const CommandResult result = Meshctl(replica, arguments);
    if (result.exit_code != 0) return nullptr;
    const size_t start = result.output.find('{');
    if (start == std::string::npos) return nullptr;
    const json stat =
        json::parse(result.output.substr(start, result.output.rfind('}') - start + 1));
    for (const json& row : stat["rows"]) {
      if (row["name"] == "api") {
        return {{"requests", row["requests"]}, {"window_seconds", stat["window_seconds"]}};
      }
    }
    return nullptr;
  }

  Process Load(const std::vector<std::string>& arguments) const {
    std::vector<std::string> argv = {kPython, SourcePath("test/e2e/metrics_peer.py")};
    argv.insert(argv.end(), arguments.begin(), arguments.end());
    return load.Run(argv);
  }
};

TEST_CASE(
    "two replicas answer the same, and one killed while traffic runs comes back with the "
    "same counts, none twice and none missing") {
  Replicated c;
  {
    Process done = c.Load({"http-client", "--target", Target(c.api, 8080), "--plan", "200x5"});
    REQUIRE(done.WaitForOutput("done", 30s));
  }
  for (AggregatorProcess* replica : {&c.first, &c.second}) {
    INFO(replica->address());
    CHECK(PollUntil([&] { return c.ApiRow(*replica, "5m")["requests"] == 5; }, 30s, 500ms));
  }

  // Tap through either replica: each subscribes on its own streams to the agents.
  int64_t tapped_requests = 0;
  for (AggregatorProcess* replica : {&c.first, &c.second}) {
    Process tap({NODEMESH_MESHCTL_BINARY, "--aggregator", replica->address(), "tap", "deploy/api",
                 "-n", "shop", "--max-events", "2"});
    const bool tapped = PollUntil(
        [&] {
          Process once =
              c.Load({"http-client", "--target", Target(c.api, 8080), "--plan", "201x1"});
          if (once.WaitForOutput("done", 10s)) ++tapped_requests;
          return !tap.IsRunning();
        },
        45s, 200ms);
    INFO(tap.output());
    REQUIRE(tapped);
    CHECK(std::regex_search(tap.output(),
                            std::regex(R"(^rsp id=\S+ .* :status=201 )", std::regex::multiline)));
  }

  // Traffic runs (200 requests of 20 ms, some four seconds and more) while the second
  // replica is killed and started again.
  Process traffic = c.Load(
      {"http-client", "--target", Target(c.api, 8080), "--delay-ms", "20", "--count", "200"});
  REQUIRE(traffic.WaitForOutput("response 200", 10s));
  REQUIRE(c.second.process().Signal(SIGKILL));
  REQUIRE(c.second.process().Wait(5s));
  c.second.Restart();  // on the same port, with its peer; returns once it listens
  REQUIRE(traffic.WaitForOutput("done", 60s));

  // The agents stream to it again, and it takes the seconds before its start from its peer.
  REQUIRE(c.second.WaitForNode("node-a", 45s));
  REQUIRE(c.second.WaitForNode("node-b", 45s));
  REQUIRE(c.second.process().WaitForOutput("backfill from the peer replica", 30s));

  // Exactly the same over a window reaching before the kill and after the restart, from the
  // server's side and from the caller's: every request of the test, once.
  const int64_t expected = 5 + tapped_requests + 200;
  json first_row;
  json second_row;
  const bool same = PollUntil(
      [&] {
        first_row = c.ApiRow(c.first, "10m");
        second_row = c.ApiRow(c.second, "10m");
        return !first_row.is_null() && !second_row.is_null() && first_row["requests"] == expected &&
               second_row["requests"] == expected;
      },
      30s, 500ms);
  INFO("first: " << first_row.dump() << "\nsecond: " << second_row.dump());
  INFO("second replica:\n" << c.second.output());
  REQUIRE(same);
  // Its window reaches back to the first's start, not to its own (the seconds are whole).
  CHECK(second_row["window_seconds"].get<int64_t>() >=
        first_row["window_seconds"].get<int64_t>() - 2);
  CHECK(c.ApiRow(c.first, "10m", {"--from", "deploy/load"})["requests"] == expected);
  CHECK(c.ApiRow(c.second, "10m", {"--from", "deploy/load"})["requests"] == expected);
}

}  // namespace
}  // namespace nodemesh::testing
