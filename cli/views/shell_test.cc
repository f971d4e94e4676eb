// The shell's views against golden files in cli/testdata, from the agent's answers in
// testdata/shell_*.json (UPDATE_GOLDEN=1 rewrites them).
#include "cli/views/shell.h"

#include <catch2/catch.hpp>

#include "cli/golden.h"

namespace nodemesh::cli {
namespace {

using testing::CheckGolden;
using testing::ReadJsonTestdata;

TEST_CASE("shell views: each command's table", "[shell]") {
  CheckGolden("shell_pods.golden", RenderShellPods(ReadJsonTestdata("shell_pods.json")));
  CheckGolden("shell_conns.golden",
              RenderShellConnections(ReadJsonTestdata("shell_connections.json")["connections"]));
  CheckGolden("shell_stats.golden", RenderShellStats(ReadJsonTestdata("shell_stats.json")));
  CheckGolden("shell_routes.golden",
              RenderShellRoutes(ReadJsonTestdata("shell_routes.json")["routes"]));
  CheckGolden("shell_kernel.golden", RenderShellKernel(ReadJsonTestdata("shell_kernel.json")));
  CheckGolden("shell_kernel_map.golden",
              RenderShellKernelMap(ReadJsonTestdata("shell_kernel_map.json")));
  CheckGolden("shell_config.golden", RenderShellConfig(ReadJsonTestdata("shell_config.json")));
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

}  // namespace
}  // namespace nodemesh::cli
