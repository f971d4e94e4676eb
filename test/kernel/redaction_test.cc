// Kernel tier for tap's redaction: the agent hides the headers and queries it is told to
// before a tap event leaves the node. A relay that records every byte between the agent and
// a real aggregator proves the hidden values never cross that wire, while meshctl tap shows
// the request with them redacted.
#include <fmt/format.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "test/kernel/kernel_cluster.h"
#include "test/lib/agent_process.h"
#include "test/lib/aggregator_process.h"
#include "test/lib/files.h"
#include "test/lib/peers.h"
#include "test/lib/process.h"
#include "test/lib/test_node.h"
#include "test/lib/tier.h"

namespace nodemesh::testing {
namespace {

using namespace std::chrono_literals;
using Json = nlohmann::json;

TEST_CASE("a redacted header or query never reaches the aggregator's wire") {
  KernelCluster cluster;  // web-1 on node-a calls voting-1 on node-b
  const Pod& client = cluster.client;
  const Pod& server = cluster.remote;
  Process http = server.Run({kPython, "-u", "-m", "http.server", "8000", "--bind", server.ip});
  REQUIRE(http.WaitForOutput("Serving HTTP", 10s));

  AggregatorProcess& aggregator = cluster.StartAggregator({.binary = NODEMESH_AGGREGATOR_BINARY});
  TempDir dir;
  const std::string record = dir.path() + "/agent-to-aggregator.bytes";
  const uint16_t recorder_port = FreeLoopbackPort();
  Process recorder({kPython, "-u", SourcePath("test/lib/wire_recorder.py"), "--listen",
                    std::to_string(recorder_port), "--connect", aggregator.address(), "--record",
                    record});
  REQUIRE(recorder.WaitForOutput("listening", 10s));
  AgentProcess agent(
      cluster.node_a,
      {.binary = NODEMESH_AGENT_BINARY,
       .extra_args = {"--aggregator", fmt::format("127.0.0.1:{}", recorder_port), "--tap-headers",
                      "content-type,User-Agent,authorization,x-session", "--tap-redact-headers",
                      "Authorization,x-session", "--tap-strip-query"}});
  INFO("agent:\n" << agent.output());
  // A tap started before the aggregator knows the node's pods is refused (NOT_FOUND).
  REQUIRE(aggregator.WaitForNode("node-a"));

  // The agent's effective settings say what it redacts.
  const Json config = agent.Get("/config")["tap"];
  CHECK(config["headers"] ==
        Json::array({"content-type", "user-agent", "authorization", "x-session"}));
  CHECK(config["redact_headers"] == Json::array({"authorization", "x-session"}));
  CHECK(config["strip_query"] == true);

  Process tap({NODEMESH_MESHCTL_BINARY, "--aggregator", aggregator.address(), "tap", "deploy/web",
               "-n", "emojivoto", "--max-events", "1", "-o", "json"});
  const std::string url = fmt::format("http://{}:8000/secret?token=wire-secret-3", server.ip);
  // The subscription reaches the agent a moment after tap starts: requests until it has one.
  const bool tapped = PollUntil(
      [&] {
        client.RunCommand({"curl", "-s", "-o", "/dev/null", "--max-time", "5", "-H",
                           "Authorization: Bearer wire-secret-1", "-H", "X-Session: wire-secret-2",
                           "-A", "wire-visible-4", url});
        return !tap.IsRunning();
      },
      30s, 200ms);
  INFO("tap:\n" << tap.output());
  REQUIRE(tapped);
  const size_t start = tap.output().find('{');
  REQUIRE(start != std::string::npos);
  const Json event = Json::parse(tap.output().substr(start), nullptr, false);
  REQUIRE_FALSE(event.is_discarded());
  CHECK(event["type"] == "req");
  const Json& request = event;  // meshctl tap -o json: the request's fields at the top
  CHECK(request["path"] == "/secret?[redacted]");
  CHECK(request["headers"]["authorization"] == "[redacted]");
  CHECK(request["headers"]["x-session"] == "[redacted]");
  CHECK(request["headers"]["user-agent"] == "wire-visible-4");

  // Everything the agent sent the aggregator: the request's visible header crossed, none of
  // what was redacted did.
  const std::string wire = ReadFile(record);
  CHECK(wire.find("wire-visible-4") != std::string::npos);
  for (const char* secret : {"wire-secret-1", "wire-secret-2", "wire-secret-3"}) {
    INFO(secret);
    CHECK(wire.find(secret) == std::string::npos);
  }
}

}  // namespace
}  // namespace nodemesh::testing
