#include "cli/shell/shell.h"

#include <google/protobuf/util/json_util.h>

#include <catch2/catch.hpp>

#include "cli/golden.h"

namespace nodemesh::cli {
namespace {

using testing::CheckGolden;
using testing::ReadJsonTestdata;

// One request of a live tap, as the agent's GET /tap gives it (proto JSON field names).
const char* const kTapBatch = R"({"node": "node-1", "session": "s", "dropped": 2, "events": [
  {"subscription": "9223372036854775809", "request_id": "node-1:0-3:1",
   "source": {"namespace": "emojivoto", "pod": "web-1", "owner_kind": "Deployment",
              "owner_name": "web", "node": "node-1"},
   "destination": {"namespace": "emojivoto", "pod": "voting-1", "owner_kind": "Deployment",
                   "owner_name": "voting", "node": "node-1"},
   "source_address": "10.77.0.11:40312", "destination_address": "10.77.0.12:8080",
   "direction": "OUTBOUND", "unix_micros": "1700000000000000",
   "request": {"method": "POST", "scheme": "http", "authority": "voting-svc:8080",
               "path": "/emojivoto.v1.VotingService/VoteDoughnut", "grpc": true}}]})";

// The agent's answers from the fixtures, and the requests made.
class CannedAgent : public AdminClient {
 public:
  std::vector<std::string> requests;
  bool down = false;

 protected:
  absl::StatusOr<Reply> Request(std::string_view method, std::string_view path) override {
    requests.emplace_back(path);
    if (down) {
      return absl::UnavailableError(
          "no agent answers on /run/nodemesh/agent.sock: is nodemesh-agent running on this "
          "node? (--socket PATH)");
    }
    if (method == "POST") return Reply{200, "ok\n"};
    const auto fixture = [](const char* name) { return Reply{200, ReadJsonTestdata(name).dump()}; };
    if (path == "/pods") return fixture("shell_pods.json");
    if (path == "/connections") return fixture("shell_connections.json");
    if (path == "/kernel") return fixture("shell_kernel.json");
    if (path == "/routes") return fixture("shell_routes.json");
    if (path == "/version") return Reply{200, R"({"version": "0.1.0", "node": "node-1"})"};
    if (path.starts_with("/tap?")) return Reply{200, kTapBatch};
    return Reply{404, "no such endpoint"};
  }
};

struct Ran {
  Shell::Outcome outcome;
  std::string out, err;
};

Ran RunLine(CannedAgent& agent, std::string_view line, OutputFormat format = OutputFormat::kTable) {
  CancelSource cancel;
  Shell shell(agent, format, cancel);
  std::ostringstream out, err;
  Ran ran;
  ran.outcome = shell.Run(line, out, err);
  ran.out = out.str();
  ran.err = err.str();
  return ran;
}

TEST_CASE("shell: commands, filters, JSON and failures", "[shell]") {
  CannedAgent agent;
  SECTION("conns of one pod, by name alone, and of one protocol") {
    Ran ran = RunLine(agent, "conns web-1 --proto http2 -o json");
    REQUIRE(ran.outcome.code == 0);
    const nlohmann::json json = nlohmann::json::parse(ran.out);
    REQUIRE(json["connections"].size() == 1);
    CHECK(json["connections"][0]["id"] == "0-3");
  }
  SECTION("routes of one pod, made or served") {
    CHECK(nlohmann::json::parse(RunLine(agent, "routes voting-1 -o json").out)["routes"].size() ==
          1);
    CHECK(nlohmann::json::parse(RunLine(agent, "routes web-1 -o json").out)["routes"].size() == 2);
    CHECK(nlohmann::json::parse(RunLine(agent, "routes curl -o json").out)["routes"].empty());
  }
  SECTION("conns of one connection id") {
    Ran ran = RunLine(agent, "conns 1-7");
    CHECK(ran.outcome.code == 0);
    CHECK(ran.out.find("1-7") != std::string::npos);
    CHECK(ran.out.find("0-3") == std::string::npos);
  }
  SECTION("conns of an unknown pod") {
    Ran ran = RunLine(agent, "conns nosuch");
    CHECK(ran.outcome.code == 1);
    CHECK(ran.err ==
          "error: conns: no pod and no live connection 'nosuch' on node node-1: see `pods` and "
          "`conns`\n");
  }
  SECTION("an unknown command lists the commands") {
    Ran ran = RunLine(agent, "podz");
    CHECK(ran.outcome.code == 2);
    CHECK(ran.err ==
          "error: unknown command 'podz': the commands are pods, conns, explain, tap, routes, "
          "stats, kernel, config, log-level, version, help, exit (help COMMAND says more)\n");
  }
  SECTION("a flag the command does not take") {
    Ran ran = RunLine(agent, "pods --proto http1");
    CHECK(ran.outcome.code == 2);
    CHECK(ran.err == "error: pods: --proto is not one of its flags (usage: pods)\n");
  }
  SECTION("log-level posts the level") {
    Ran ran = RunLine(agent, "log-level debug");
    CHECK(ran.outcome.code == 0);
    CHECK(ran.out == "log level set to debug\n");
    CHECK(agent.requests == std::vector<std::string>{"/log-level?level=debug"});
    CHECK(RunLine(agent, "log-level loud").outcome.code == 2);
  }
  SECTION("kernel map with a limit") {
    RunLine(agent, "kernel map enrolled_cgroups --limit 5");
    CHECK(agent.requests == std::vector<std::string>{"/kernel/maps/enrolled_cgroups?limit=5"});
    CHECK(RunLine(agent, "kernel map").outcome.code == 2);
    CHECK(RunLine(agent, "kernel map x --limit ten").outcome.code == 2);
  }
  SECTION("the agent down: what is wrong and what to do") {
    agent.down = true;
    Ran ran = RunLine(agent, "pods");
    CHECK(ran.outcome.code == 1);
    CHECK(ran.err ==
          "error: pods: no agent answers on /run/nodemesh/agent.sock: is nodemesh-agent running "
          "on this node? (--socket PATH)\n");
  }
  SECTION("tap of one pod: its filter goes to the agent and its lines are meshctl tap's") {
    Ran ran = RunLine(agent, "tap web-1 --method POST --path /emojivoto.v1 --max-events 1");
    REQUIRE(ran.outcome.code == 0);
    REQUIRE(agent.requests.size() == 2);
    CHECK(agent.requests[0] == "/pods");
    CHECK(agent.requests[1].starts_with("/tap?session=shell-"));
    CHECK(agent.requests[1].ends_with("&pod=emojivoto/web-1&method=POST&path=/emojivoto.v1"));
    v1::TapEvent event;
    REQUIRE(google::protobuf::util::JsonStringToMessage(
                nlohmann::json::parse(kTapBatch)["events"][0].dump(), &event)
                .ok());
    CHECK(ran.out == RenderTapEvent(event, OutputFormat::kTable));
    CHECK(ran.out.find("/emojivoto.v1.VotingService/VoteDoughnut") != std::string::npos);
    CHECK(ran.err ==
          "tap: 2 events dropped (agents 2, stream 0): raise --max-rps or narrow the match\n");
    CHECK(RunLine(agent, "tap web-1 --path api").outcome.code == 2);
    CHECK(RunLine(agent, "tap web-1 --max-rps 0").outcome.code == 2);
    CHECK(RunLine(agent, "tap nosuch").err ==
          "error: tap: no pod 'nosuch' on node node-1: see `pods`\n");
  }
  SECTION("help and exit") {
    CheckGolden("shell_help.golden", RunLine(agent, "help").out);
    CHECK(RunLine(agent, "help conns").out.find("conns [POD|ID] [--proto P]") != std::string::npos);
    CHECK(RunLine(agent, "exit").outcome.exit);
    const nlohmann::json help =
        nlohmann::json::parse(RunLine(agent, "help", OutputFormat::kJson).out);
    CHECK(help["commands"].size() == ShellCommandNames().size());
  }
}

TEST_CASE("shell: completion of commands, pods, connection ids, maps", "[shell]") {
  CannedAgent agent;
  CancelSource cancel;
  Shell shell(agent, OutputFormat::kTable, cancel);
  CHECK(shell.Complete({}, "co") == std::vector<std::string>{"config", "conns"});
  CHECK(shell.Complete({"help"}, "ex") == std::vector<std::string>{"exit", "explain"});
  CHECK(shell.Complete({"explain"}, "emojivoto/v") ==
        std::vector<std::string>{"emojivoto/voting-1"});
  CHECK(shell.Complete({"conns"}, "") ==
        std::vector<std::string>{"0-3", "1-7", "curl", "default/curl", "emojivoto/voting-1",
                                 "emojivoto/web-1", "voting-1", "web-1"});
  CHECK(shell.Complete({"conns"}, "emojivoto/w") == std::vector<std::string>{"emojivoto/web-1"});
  CHECK(shell.Complete({"conns"}, "--p") == std::vector<std::string>{"--proto"});
  CHECK(shell.Complete({"kernel", "map"}, "en") == std::vector<std::string>{"enrolled_cgroups"});
  CHECK(shell.Complete({"log-level"}, "d") == std::vector<std::string>{"debug"});
}

}  // namespace
}  // namespace nodemesh::cli
