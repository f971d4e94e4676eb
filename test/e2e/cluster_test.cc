// End-to-end tier for the cluster view: two simulated nodes, a real agent on each streaming
// to one real aggregator, real traffic crossing the nodes, and every answer checked through
// meshctl, the way a person (or a script, with -o json) would ask.
#include <fmt/format.h>
#include <signal.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "test/lib/agent_process.h"
#include "test/lib/aggregator_process.h"
#include "test/lib/peers.h"
#include "test/lib/process.h"
#include "test/lib/test_node.h"
#include "test/lib/tier.h"
#include "test/lib/two_node_cluster.h"

namespace nodemesh::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

// node-a runs the caller (deployment "load"), node-b the servers ("api" answers HTTP/1,
// "rpc" gRPC); every pod meshed; agents on both nodes report to one aggregator.
struct Cluster : TwoNodeCluster {
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
  const Pod& rpc = node_b.AddPod({.namespace_name = "shop",
                                  .name = "rpc-6b4c2-qwert",
                                  .owner_name = "rpc",
                                  .service_account = "rpc",
                                  .meshed = true});
  std::vector<std::unique_ptr<Process>> servers;
  std::string aggregator_address;  // kept when the aggregator restarts

  Cluster() : TwoNodeCluster({.tier = "e2e"}) {
    aggregator_address = StartAggregator({.binary = NODEMESH_AGGREGATOR_BINARY}).address();
    servers.push_back(
        std::make_unique<Process>(api.Run({kPython, SourcePath("test/e2e/metrics_peer.py"),
                                           "http-server", "--listen", Target(api, 8080)})));
    servers.push_back(
        std::make_unique<Process>(rpc.Run({kPython, SourcePath("test/e2e/metrics_peer.py"),
                                           "grpc-server", "--listen", Target(rpc, 9090)})));
    for (const auto& server : servers) REQUIRE(server->WaitForOutput("listening", 10s));
    StartAgents({.binary = NODEMESH_AGENT_BINARY});
    REQUIRE(agent_b->WaitForInboundPort(api, 8080));
    REQUIRE(agent_b->WaitForInboundPort(rpc, 9090));
  }

  CommandResult Meshctl(std::vector<std::string> arguments) const {
    arguments.insert(arguments.begin(),
                     {NODEMESH_MESHCTL_BINARY, "--aggregator", aggregator_address});
    return RunCommand(arguments, 60s);
  }

  json MeshctlJson(const std::vector<std::string>& arguments) const {
    const CommandResult result = Meshctl(arguments);
    INFO(result.output);
    REQUIRE(result.exit_code == 0);
    // Warnings (stale nodes) go to stderr, which RunCommand interleaves: take the JSON.
    const size_t start = result.output.find('{');
    REQUIRE(start != std::string::npos);
    return json::parse(result.output.substr(start, result.output.rfind('}') - start + 1));
  }

  // Rows of `meshctl stat` by name.
  std::map<std::string, json> Stat(std::vector<std::string> arguments) const {
    arguments.insert(arguments.begin(), "stat");
    arguments.insert(arguments.end(), {"-n", "shop", "-o", "json"});
    const json stat = MeshctlJson(arguments);  // named: a loop over a temporary's member dangles
    std::map<std::string, json> rows;
    for (const json& row : stat["rows"]) rows[row["name"]] = row;
    return rows;
  }

  void RunLoad(const std::vector<std::string>& arguments) const {
    std::vector<std::string> argv = {kPython, SourcePath("test/e2e/metrics_peer.py")};
    argv.insert(argv.end(), arguments.begin(), arguments.end());
    const CommandResult result = load.RunCommand(argv, 60s);
    INFO(result.output);
    REQUIRE(result.exit_code == 0);
  }
};

TEST_CASE("meshctl sees two nodes' traffic through one aggregator, exactly") {
  Cluster c;
  c.RunLoad({"http-client", "--target", Target(c.api, 8080), "--plan", "200x40,503x10"});
  c.RunLoad({"grpc-client", "--target", Target(c.rpc, 9090), "--plan", "Ok=8,Fail=2"});

  // Agents send a delta a second: wait until every response is in the window.
  std::map<std::string, json> rows;
  const bool counted = PollUntil(
      [&] {
        rows = c.Stat({"deploy"});
        return rows.count("api") && rows["api"]["requests"] == 50 && rows.count("rpc") &&
               rows["rpc"]["requests"] == 10;
      },
      30s, 500ms);
  INFO(json(rows).dump(1));
  REQUIRE(counted);

  SECTION("stat: success rates, meshed counts, latencies") {
    CHECK(rows["api"]["successes"] == 40);
    CHECK(rows["api"]["success_rate"].get<double>() == Approx(0.8));
    CHECK(rows["rpc"]["success_rate"].get<double>() == Approx(0.8));
    for (const char* name : {"api", "rpc", "load"}) {
      CAPTURE(name);
      CHECK(rows[name]["meshed"] == 1);
      CHECK(rows[name]["running"] == 1);
    }
    CHECK(rows["load"]["success_rate"].is_null());  // it calls, nobody calls it
    const json& latency = rows["api"]["latency_ms"];
    CHECK(latency["p50"].get<double>() > 0);
    CHECK(latency["p50"].get<double>() <= latency["p95"].get<double>());
    CHECK(latency["p95"].get<double>() <= latency["p99"].get<double>());
    // The table a person reads: aligned columns, the same numbers.
    const CommandResult table = c.Meshctl({"stat", "deploy", "-n", "shop"});
    INFO(table.output);
    CHECK(table.exit_code == 0);
    CHECK(std::regex_search(table.output,
                            std::regex(R"(NAME +MESHED +SUCCESS +RPS +LATENCY_P50 +LATENCY_P95 )"
                                       R"(+LATENCY_P99 +TCP_CONN)")));
    CHECK(std::regex_search(table.output, std::regex(R"(\napi +1/1 +80\.00% )")));
  }

  SECTION("stat --from: what the caller's side saw, by destination") {
    const auto from = c.Stat({"deploy", "--from", "deploy/load"});
    REQUIRE(from.count("api"));
    REQUIRE(from.count("rpc"));
    CHECK(from.at("api")["requests"] == 50);
    CHECK(from.at("rpc")["requests"] == 10);
    CHECK_FALSE(from.count("load"));
  }

  SECTION("stat --to: who calls a workload") {
    const auto to = c.Stat({"deploy", "--to", "deploy/rpc"});
    REQUIRE(to.count("load"));
    CHECK(to.at("load")["requests"] == 10);
  }

  SECTION("routes: per-route metrics with no profile") {
    const json routes = c.MeshctlJson({"routes", "deploy/rpc", "-n", "shop", "-o", "json"});
    std::map<std::string, json> by_route;
    for (const json& route : routes["routes"]) by_route[route["route"]] = route;
    INFO(routes.dump(1));
    REQUIRE(by_route.count("/nodemesh.test.Metrics/Ok"));
    CHECK(by_route["/nodemesh.test.Metrics/Ok"]["requests"] == 8);
    CHECK(by_route["/nodemesh.test.Metrics/Ok"]["success_rate"] == 1.0);
    CHECK(by_route["/nodemesh.test.Metrics/Fail"]["requests"] == 2);
    CHECK(by_route["/nodemesh.test.Metrics/Fail"]["success_rate"] == 0.0);
  }

  SECTION(
      "edges: who calls whom, with service accounts; filtered, and stat and edges over "
      "several namespaces, through one View") {
    const json edges = c.MeshctlJson({"edges", "deploy", "-n", "shop", "-o", "json"});
    INFO(edges.dump(1));
    std::set<std::string> pairs;
    for (const json& edge : edges["edges"]) {
      pairs.insert(edge["source"]["name"].get<std::string>() + "->" +
                   edge["destination"]["name"].get<std::string>());
    }
    CHECK(pairs == std::set<std::string>{"load->api", "load->rpc"});

    // Filtered, or over several namespaces: one View of the graph, printed as edges prints.
    const auto pairs_of = [&](std::vector<std::string> filters) {
      std::vector<std::string> arguments = {"edges", "deploy", "-n", "shop,default", "-o", "json"};
      arguments.insert(arguments.end(), filters.begin(), filters.end());
      const json view = c.MeshctlJson(arguments);
      INFO(view.dump(1));
      std::set<std::string> out;
      for (const json& edge : view["edges"]) {
        out.insert(edge["source"]["name"].get<std::string>() + "->" +
                   edge["destination"]["name"].get<std::string>());
      }
      return out;
    };
    CHECK(pairs_of({}) == pairs);
    CHECK(pairs_of({"--failing"}) == pairs);  // both at 80 %
    CHECK(pairs_of({"--around", "deploy/rpc"}) == std::set<std::string>{"load->rpc"});
    CHECK(pairs_of({"--hide-namespace", "shop"}).empty());
    const CommandResult hidden =
        c.Meshctl({"edges", "deploy", "-n", "shop", "--hide-namespace", "shop"});
    INFO(hidden.output);
    CHECK(hidden.exit_code == 0);
    CHECK(hidden.output.find("No edges of deploy in namespace shop under these filters found in "
                             "the last 1m.") != std::string::npos);

    // stat of several namespaces: the View's rows, the same as stat of each.
    const json several = c.MeshctlJson({"stat", "deploy", "-n", "shop,default", "-o", "json"});
    INFO(several.dump(1));
    std::map<std::string, json> by_name;
    for (const json& row : several["rows"]) {
      CHECK(row["namespace"] == "shop");
      by_name[row["name"]] = row;
    }
    REQUIRE(by_name.count("api"));
    CHECK(by_name["api"]["requests"] == 50);
    CHECK(by_name["rpc"]["requests"] == 10);
    CHECK(by_name.count("load"));
  }
}

TEST_CASE("meshctl tap streams requests of a workload across nodes, gRPC statuses named") {
  Cluster c;
  // Tap first, then make traffic: the tap must see it live.
  Process tap({NODEMESH_MESHCTL_BINARY, "--aggregator", c.aggregator_address, "tap", "deploy/load",
               "-n", "shop", "--to", "deploy/rpc", "--max-events", "6"});
  // The subscription reaches the agents asynchronously; keep calling until the tap ends.
  const bool done = PollUntil(
      [&] {
        c.RunLoad({"grpc-client", "--target", Target(c.rpc, 9090), "--plan", "Fail=1"});
        return !tap.IsRunning();
      },
      45s, 200ms);
  INFO(tap.output());
  REQUIRE(done);
  const std::string out = tap.output();
  CHECK(std::regex_search(out, std::regex(R"(^req id=\S+ proxy=(out|in) src=shop/load-5f7c9-abcde )"
                                          R"(dst=shop/rpc-6b4c2-qwert :method=POST .*)"
                                          R"(:path=/nodemesh\.test\.Metrics/Fail)",
                                          std::regex::multiline)));
  CHECK(std::regex_search(out, std::regex(R"(^rsp id=\S+ .* :status=200 latency=\d+\.\d{3}ms)",
                                          std::regex::multiline)));
  CHECK(std::regex_search(
      out, std::regex(R"(^end id=\S+ .* grpc-status=Unknown duration=)", std::regex::multiline)));
}

TEST_CASE("a node whose agent is gone is reported stale, its data kept") {
  Cluster c;
  c.RunLoad({"http-client", "--target", Target(c.api, 8080), "--plan", "200x5"});
  REQUIRE(PollUntil([&] { return c.Stat({"deploy"})["api"]["requests"] == 5; }, 30s, 500ms));
  c.agent_b->Kill();
  // The aggregator notices the stream is gone; meshctl says so and keeps the numbers.
  json stat;
  const bool stale = PollUntil(
      [&] {
        stat = c.MeshctlJson({"stat", "deploy", "-n", "shop", "-o", "json"});
        for (const json& node : stat["stale_nodes"]) {
          if (node["node"] == "node-b") return true;
        }
        return false;
      },
      30s, 500ms);
  INFO(stat.dump(1));
  CHECK(stale);
  std::map<std::string, json> rows;
  for (const json& row : stat["rows"]) rows[row["name"]] = row;
  CHECK(rows["api"]["requests"] == 5);
  const CommandResult table = c.Meshctl({"stat", "deploy", "-n", "shop"});
  CHECK_THAT(table.output, Catch::Contains("node-b"));
  const CommandResult check = c.Meshctl({"check"});
  CHECK(check.exit_code != 0);
  CHECK_THAT(check.output, Catch::Contains("node-b"));
}

TEST_CASE(
    "an aggregator killed and restarted: agents reconnect, its window starts with it, "
    "nothing is counted twice and rates are over the seconds it holds") {
  Cluster c;
  c.RunLoad({"http-client", "--target", Target(c.api, 8080), "--plan", "200x5"});
  REQUIRE(PollUntil([&] { return c.Stat({"deploy"})["api"]["requests"] == 5; }, 30s, 500ms));

  // SIGKILL: the five go with its memory. While it is down, the agents keep the deltas it
  // never acknowledged and hand them over when they are connected again; those seconds are
  // from before the new one started, so no window of it counts them.
  REQUIRE(c.aggregator().process().Signal(SIGKILL));
  REQUIRE(c.aggregator().process().Wait(5s));
  c.RunLoad({"http-client", "--target", Target(c.api, 8080), "--plan", "200x7"});
  CHECK(c.Meshctl({"stat", "deploy", "-n", "shop"}).exit_code == 1);
  std::this_thread::sleep_for(1100ms);  // the outage's last second is over
  c.aggregator().Restart();             // on the same port; returns once it listens

  // Both agents come back (their backoff is at most 30 s, reset by a connection that held).
  REQUIRE(PollUntil(
      [&] {
        return c.aggregator().Connections("node-a") > 0 && c.aggregator().Connections("node-b") > 0;
      },
      45s, 500ms));
  c.RunLoad({"http-client", "--target", Target(c.api, 8080), "--plan", "200x3"});

  // Exactly the three, from both ends: the server's agent (api's row) and the caller's
  // (--from), however many times either agent's stream carried them.
  std::map<std::string, json> rows;
  const bool counted = PollUntil(
      [&] {
        rows = c.Stat({"deploy"});
        return rows.count("api") && rows["api"]["requests"] == 3 &&
               c.Stat({"deploy", "--from", "deploy/load"})["api"]["requests"] == 3;
      },
      30s, 500ms);
  INFO(json(rows).dump(1));
  INFO("aggregator:\n" << c.aggregator().output());
  CHECK(counted);

  // The minute asked for holds only the seconds since it started, and says so; the rate is
  // the three over those seconds, not over the minute.
  const json stat = c.MeshctlJson({"stat", "deploy", "-n", "shop", "-t", "1m", "-o", "json"});
  INFO(stat.dump(1));
  const int64_t held = stat["window_seconds"];
  CHECK(held > 0);
  CHECK(held < 60);
  for (const json& row : stat["rows"]) {
    if (row["name"] != "api") continue;
    CHECK(row["requests"] == 3);
    CHECK(row["rps"].get<double>() == Approx(3.0 / double(held)).epsilon(0.2));
  }
  const CommandResult table = c.Meshctl({"stat", "deploy", "-n", "shop", "-t", "1m"});
  CHECK_THAT(table.output, Catch::Contains("note: this window holds only the last"));

  // Nothing arrives twice: more seconds of deltas leave the counts where they are.
  std::this_thread::sleep_for(3s);
  CHECK(c.Stat({"deploy"})["api"]["requests"] == 3);
  CHECK(c.Stat({"deploy", "--from", "deploy/load"})["api"]["requests"] == 3);
}

TEST_CASE(
    "a second aggregator on the cluster's address exits naming the first, which keeps "
    "every node") {
  Cluster c;
  // As one left over from an interrupted run would be started again, on the same address.
  const CommandResult second =
      RunCommand({NODEMESH_AGGREGATOR_BINARY, "--listen", c.aggregator_address}, 30s);
  INFO(second.output);
  CHECK(second.exit_code != 0);
  CHECK_THAT(second.output,
             Catch::Contains(fmt::format("cannot listen on {}: the address is in use by "
                                         "nodemesh-aggregator (pid {}): stop it, or give --listen "
                                         "another HOST:PORT",
                                         c.aggregator_address, c.aggregator().process().pid())));
  // Every new connection reaches the first, which still has both nodes: none was split off.
  for (int i = 0; i < 5; ++i) {
    const CommandResult check = c.Meshctl({"check"});
    INFO(check.output);
    CHECK(check.exit_code == 0);
    CHECK_THAT(check.output, Catch::Contains("node node-a is connected and reporting") &&
                                 Catch::Contains("node node-b is connected and reporting"));
  }
  CHECK(c.aggregator().Connections("node-a") == 1);
  CHECK(c.aggregator().Connections("node-b") == 1);
}

TEST_CASE("meshctl says what to do when the aggregator is unreachable") {
  RequireRoot("e2e");
  const CommandResult result =
      RunCommand({NODEMESH_MESHCTL_BINARY, "--aggregator",
                  fmt::format("127.0.0.1:{}", FreeLoopbackPort()), "stat", "deploy", "-n", "shop"},
                 30s);
  CHECK(result.exit_code != 0);
  CHECK_THAT(result.output, Catch::Contains("cannot reach the aggregator"));
}

}  // namespace
}  // namespace nodemesh::testing
