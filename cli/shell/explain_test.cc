#include "cli/shell/explain.h"

#include <catch2/catch.hpp>

#include "cli/golden.h"
#include "cli/views/shell.h"

namespace nodemesh::cli {
namespace {

using testing::CheckGolden;
using testing::ReadTestdata;

ExplainInputs Inputs() {
  const auto fixture = [](const std::string& name) {
    return nlohmann::json::parse(ReadTestdata(name));
  };
  return {.pods = fixture("shell_pods.json"),
          .kernel = fixture("shell_kernel.json"),
          .enrolled_cgroups = fixture("shell_enrolled_cgroups.json"),
          .config = fixture("shell_config.json"),
          .connections = fixture("shell_connections.json")};
}

// The index of the first failing step, or -1.
int FirstFailure(const nlohmann::json& explanation) {
  return explanation["first_failure"].is_null() ? -1 : explanation["first_failure"].get<int>();
}

std::string FailingCheck(const nlohmann::json& explanation) {
  const int first = FirstFailure(explanation);
  return first < 0 ? "" : explanation["steps"][first]["check"].get<std::string>();
}

TEST_CASE("explain: an enrolled pod passes every step", "[shell]") {
  absl::StatusOr<nlohmann::json> explained = Explain("emojivoto/web-1", Inputs());
  REQUIRE(explained.ok());
  CHECK(FirstFailure(*explained) == -1);
  CHECK((*explained)["connections"].size() == 2);
  CHECK((*explained)["recently_closed"].size() == 1);
  CHECK((*explained)["counters_of"] == "emojivoto/web-1");
  CHECK((*explained)["counters"]["redirected"] == 57);
  CheckGolden("shell_explain_enrolled.golden", RenderShellExplain(*explained));
  // By name alone, and by the pod's address and a port it is captured on.
  CHECK(FirstFailure(*Explain("web-1", Inputs())) == -1);
  CHECK(FirstFailure(*Explain("10.77.0.11:8080", Inputs())) == -1);
}

TEST_CASE("explain: the first failing step, and what to do", "[shell]") {
  CHECK(FailingCheck(*Explain("default/curl", Inputs())) == "meshed");
  const nlohmann::json failed = *Explain("emojivoto/voting-1", Inputs());
  CHECK(FailingCheck(failed) == "enrolled by the agent");
  CheckGolden("shell_explain_failed.golden", RenderShellExplain(failed));
  CHECK(FailingCheck(*Explain("10.77.0.11:9090", Inputs())) == "10.77.0.11:9090 captured inbound");
  const nlohmann::json excluded = *Explain("10.96.0.10:2379", Inputs());
  CHECK(FailingCheck(excluded) == "port 2379 not excluded");
  CheckGolden("shell_explain_excluded.golden", RenderShellExplain(excluded));
  CHECK(FailingCheck(*Explain("127.0.0.1:8080", Inputs())) == "not loopback");
  CHECK(FirstFailure(*Explain("10.96.0.10:80", Inputs())) == -1);
  // An address names the connections to and from it, not those of a longer address.
  const nlohmann::json curl = *Explain("10.77.0.2", Inputs());
  CHECK(curl["recently_closed"].empty());
  CHECK((*Explain("10.77.0.20", Inputs()))["recently_closed"].size() == 1);
  CHECK(curl["counters_of"] == "node");
  CHECK(Explain("nosuch", Inputs()).status().message() ==
        "nosuch is no pod of node node-1 and no address (IP or IP:PORT): see `pods`");
}

TEST_CASE("explain: a pod whose traffic went around the agent says so", "[shell]") {
  ExplainInputs inputs = Inputs();
  inputs.pods["pods"][0]["kernel_counters"]["origin_save_failed"] = 3;
  const nlohmann::json explained = *Explain("emojivoto/web-1", inputs);
  CHECK(FailingCheck(explained) == "none of its traffic went around the agent (fail-open)");
  const nlohmann::json& step = explained["steps"][FirstFailure(explained)];
  CHECK(step["detail"] == "57 connects redirected, 3 went direct; 12 SYNs steered, 0 passed on");
  CHECK(step["fix"].get<std::string>().starts_with("origins_by_cookie was full"));
}

}  // namespace
}  // namespace nodemesh::cli
