#include "cli/shell/views.h"

#include <catch2/catch.hpp>

#include "cli/golden.h"
#include "cli/shell/shell.h"

namespace nodemesh::cli {
namespace {

using testing::CheckGolden;
using testing::ReadTestdata;

nlohmann::json Fixture(const std::string& name) {
  return nlohmann::json::parse(ReadTestdata(name));
}

TEST_CASE("shell views: each command's table", "[shell]") {
  CheckGolden("shell_pods.golden", RenderShellPods(Fixture("shell_pods.json")));
  CheckGolden("shell_conns.golden",
              RenderShellConnections(Fixture("shell_connections.json")["connections"]));
  CheckGolden("shell_stats.golden", RenderShellStats(Fixture("shell_stats.json")));
  CheckGolden("shell_routes.golden", RenderShellRoutes(Fixture("shell_routes.json")["routes"]));
  CheckGolden("shell_kernel.golden", RenderShellKernel(Fixture("shell_kernel.json")));
  CheckGolden("shell_kernel_map.golden", RenderShellKernelMap(Fixture("shell_kernel_map.json")));
  CheckGolden("shell_config.golden", RenderShellConfig(Fixture("shell_config.json")));
  CheckGolden("shell_version.golden",
              RenderShellVersion("0.1.0", {{"version", "0.1.0"},
                                           {"node", "node-1"},
                                           {"kernel_release", "6.1.0-18-amd64"}}));
}

TEST_CASE("shell views: nothing to show says so", "[shell]") {
  CHECK(RenderShellPods({{"pods", nlohmann::json::array()}}) ==
        "no pods in this node's inventory\n");
  CHECK(RenderShellConnections(nlohmann::json::array()) == "no live connections\n");
  CHECK(RenderShellKernelMap({{"map", "passthrough"},
                              {"type", "lru_hash"},
                              {"count", 0},
                              {"capacity", 262144},
                              {"entries", nlohmann::json::array()}}) ==
        "map passthrough (lru_hash): 0 of 262144 entries\n");
}

TEST_CASE("shell views: ages", "[shell]") {
  CHECK(FormatAge(0) == "0ms");
  CHECK(FormatAge(999) == "999ms");
  CHECK(FormatAge(1000) == "1s");
  CHECK(FormatAge(95000) == "1m35s");
}

// The agent's answers from the fixtures, and the requests made.
class CannedAgent : public AdminClient {
 public:
  CannedAgent() : AdminClient("/run/nodemesh/agent.sock") {}
  absl::StatusOr<nlohmann::json> Get(std::string_view path) override {
    requests.emplace_back(path);
    if (down) {
      return absl::UnavailableError(
          "no agent answers on /run/nodemesh/agent.sock: is nodemesh-agent running on this "
          "node? (--socket PATH)");
    }
    if (path == "/pods") return Fixture("shell_pods.json");
    if (path == "/connections") return Fixture("shell_connections.json");
    if (path == "/kernel") return Fixture("shell_kernel.json");
    if (path == "/routes") return Fixture("shell_routes.json");
    if (path == "/version") return nlohmann::json{{"version", "0.1.0"}, {"node", "node-1"}};
    return absl::NotFoundError("the agent answered 404");
  }
  absl::StatusOr<std::string> Post(std::string_view path) override {
    requests.emplace_back(path);
    return std::string("ok\n");
  }
  std::vector<std::string> requests;
  bool down = false;
};

struct Ran {
  Shell::Outcome outcome;
  std::string out, err;
};

Ran RunLine(CannedAgent& agent, std::string_view line, OutputFormat format = OutputFormat::kTable) {
  Shell shell(agent, format);
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
          "error: unknown command 'podz': the commands are pods, conns, explain, routes, stats, "
          "kernel, config, log-level, version, help, exit (help COMMAND says more)\n");
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
  Shell shell(agent, OutputFormat::kTable);
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
