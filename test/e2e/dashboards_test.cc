// End-to-end tier for what Prometheus stores of the agents: a scrape of a real agent carrying
// known traffic has exactly the series the cardinality formula of docs/ARCHITECTURE.md
// (section 6) gives, with each export knob; and a real Prometheus, scraping that agent and
// evaluating the chart's recording rules, answers every query of every panel of the chart's
// Grafana dashboards (their variables substituted) with data.
#include <fmt/format.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "test/lib/agent_process.h"
#include "test/lib/files.h"
#include "test/lib/peers.h"
#include "test/lib/process.h"
#include "test/lib/test_node.h"
#include "test/lib/tier.h"

namespace nodemesh::testing {
namespace {

using namespace std::chrono_literals;

// A node with a meshed client pod (shop/load) and a meshed HTTP server pod (shop/api) on
// port 8080, and an agent with `agent_args`.
struct Shop {
  explicit Shop(std::vector<std::string> agent_args) {
    server_process =
        std::make_unique<Process>(server.Run({kPython, SourcePath("test/e2e/metrics_peer.py"),
                                              "http-server", "--listen", Target(server, 8080)}));
    REQUIRE(server_process->WaitForOutput("listening", 10s));
    agent = std::make_unique<AgentProcess>(
        node, AgentProcessOptions{.binary = NODEMESH_AGENT_BINARY, .extra_args = agent_args});
    REQUIRE(agent->WaitForInboundPort(server, 8080));
  }

  // metrics_peer.py http-client in the client pod with `arguments`, to its end.
  void RunClient(const std::vector<std::string>& arguments) {
    std::vector<std::string> argv = {kPython, SourcePath("test/e2e/metrics_peer.py"), "http-client",
                                     "--target", Target(server, 8080)};
    argv.insert(argv.end(), arguments.begin(), arguments.end());
    const CommandResult result = client.RunCommand(argv, 60s);
    INFO(result.output);
    REQUIRE(result.exit_code == 0);
  }

  RootRequired root_required{"e2e"};
  PodNetwork network;
  TestNode node{network, "node-a"};
  const Pod& client = node.AddPod({.namespace_name = "shop",
                                   .name = "load-1",
                                   .owner_name = "load",
                                   .service_account = "load",
                                   .meshed = true});
  const Pod& server = node.AddPod({.namespace_name = "shop",
                                   .name = "api-1",
                                   .owner_name = "api",
                                   .service_account = "api",
                                   .meshed = true});
  std::unique_ptr<Process> server_process;
  std::unique_ptr<AgentProcess> agent;
};

// Series per metric name in the agent's /metrics.
std::map<std::string, int> SeriesPerMetric(AgentProcess& agent) {
  std::map<std::string, int> counts;
  const std::optional<HttpReply> reply = agent.GetMetricsPort("/metrics");
  if (!reply || reply->status != 200) return counts;
  std::istringstream lines(reply->body);
  for (std::string line; std::getline(lines, line);) {
    if (line.empty() || line[0] == '#') continue;
    ++counts[line.substr(0, line.find_first_of("{ "))];
  }
  return counts;
}

// The formula of docs/ARCHITECTURE.md section 6 for T traffic keys (direction, source,
// destination), R routes on each and S response kinds (status, grpc status,
// classification) on each route, with B latency bounds: every connection closed.
std::map<std::string, int> FormulaSeries(int traffic, int routes, int kinds, int bounds) {
  const int histogram = bounds + 1;  // _bucket series, +Inf included; then _sum and _count
  const int responses = traffic * routes * kinds;
  return {{"request_total", traffic * routes},
          {"response_total", responses},
          {"response_latency_seconds_bucket", responses * histogram},
          {"response_latency_seconds_sum", responses},
          {"response_latency_seconds_count", responses},
          {"response_first_byte_seconds_bucket", responses * histogram},
          {"response_first_byte_seconds_sum", responses},
          {"response_first_byte_seconds_count", responses},
          {"tcp_open_total", traffic},
          {"tcp_close_total", 2 * traffic},
          {"tcp_open_connections", traffic},
          {"tcp_read_bytes_total", traffic},
          {"tcp_write_bytes_total", traffic},
          {"tcp_connection_duration_seconds_bucket", traffic * histogram},
          {"tcp_connection_duration_seconds_sum", traffic},
          {"tcp_connection_duration_seconds_count", traffic}};
}

// Polls /metrics until its request series (the internal nodemesh_ families left out) are
// `expected`.
void CheckSeries(AgentProcess& agent, const std::map<std::string, int>& expected) {
  std::map<std::string, int> counts;
  const bool reached = PollUntil(
      [&] {
        counts = SeriesPerMetric(agent);
        std::erase_if(counts,
                      [](const auto& entry) { return entry.first.starts_with("nodemesh_"); });
        return counts == expected;
      },
      15s, 200ms);
  for (const auto& [name, count] : expected) {
    CAPTURE(name);
    CHECK(counts[name] == count);
  }
  CHECK(reached);
}

TEST_CASE("a scrape has the series the cardinality formula gives, with each export knob") {
  SECTION("default: every label, 28 bounds") {
    Shop shop({});
    shop.RunClient({"--plan", "200x5,404x2,500x3"});
    // Outbound and inbound; one route; three statuses.
    CheckSeries(*shop.agent, FormulaSeries(2, 1, 3, 28));
  }
  SECTION("coarse buckets, status_code dropped: 11 bounds, one kind per classification") {
    Shop shop({"--metrics-latency-buckets=coarse", "--metrics-drop-labels=status_code"});
    shop.RunClient({"--plan", "200x5,404x2,500x3"});
    CheckSeries(*shop.agent, FormulaSeries(2, 1, 2, 11));
  }
}

// Prometheus's answer to an instant query: its result vector (empty on any error).
nlohmann::json Query(const std::string& web, const std::string& query) {
  const CommandResult result =
      RunCommand({"curl", "-sS", "--max-time", "3", "-G", "http://" + web + "/api/v1/query",
                  "--data-urlencode", "query=" + query});
  const nlohmann::json body = nlohmann::json::parse(result.output, nullptr, false);
  if (result.exit_code != 0 || body.is_discarded() || body.value("status", "") != "success") {
    return nlohmann::json::array();
  }
  return body["data"]["result"];
}

TEST_CASE("every dashboard panel's query returns data from a real Prometheus") {
  Shop shop({});
  TempDir prometheus_dir;
  const std::string web = fmt::format("127.0.0.1:{}", FreeLoopbackPort());
  std::ofstream(prometheus_dir.path() + "/prometheus.yml") << fmt::format(
      "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
      "rule_files:\n  - {}\n"
      "scrape_configs:\n  - job_name: nodemesh-agent\n    static_configs:\n"
      "      - targets: ['{}']\n",
      SourcePath("helm/nodemesh/files/recording-rules.yaml"), shop.agent->metrics_address());
  Process prometheus({"prometheus", "--config.file=" + prometheus_dir.path() + "/prometheus.yml",
                      "--storage.tsdb.path=" + prometheus_dir.path() + "/data",
                      "--web.listen-address=" + web});
  // Traffic all along: requests of 20 ms for up to a minute, and failures on another route.
  Process steady =
      shop.client.Run({kPython, SourcePath("test/e2e/metrics_peer.py"), "http-client", "--target",
                       Target(shop.server, 8080), "--delay-ms", "20", "--count", "3000"});
  shop.RunClient({"--plan", "200x20,500x10"});

  // Every query of every panel, each window of the window variable, the namespace and the
  // workload that carry the traffic; and each variable's label_values(SELECTOR, LABEL), as
  // Grafana asks it, must offer that namespace and workload.
  const std::map<std::string, std::string> values = {{"namespace", "shop"}, {"workload", "api"}};
  // Query -> the label and value its answer must have (none: any number will do).
  std::map<std::string, std::pair<std::string, std::string>> pending;
  std::set<std::string> recorded;
  const std::regex recorded_name("nodemesh:[a-z_]+:[a-z_]+:[a-z]+(\\$window|[0-9]+m)");
  const std::regex label_values(R"re(^label_values\((.+), *([a-z_]+)\)$)re");
  size_t panel_queries = 0;
  for (const auto& file :
       std::filesystem::directory_iterator(SourcePath("helm/nodemesh/files/dashboards"))) {
    CAPTURE(file.path().filename());
    const nlohmann::json dashboard = nlohmann::json::parse(ReadFile(file.path().string()));
    std::vector<std::string> windows;
    std::set<std::string> variables;
    const auto substitute = [&](std::string query, const std::string& window) {
      for (const auto& [name, value] : {std::pair{"$namespace", values.at("namespace")},
                                        {"$workload", values.at("workload")},
                                        {"$window", window}}) {
        for (size_t at; (at = query.find(name)) != std::string::npos;) {
          query.replace(at, std::string(name).size(), value);
        }
      }
      CHECK(query.find('$') == std::string::npos);
      return query;
    };
    for (const nlohmann::json& variable : dashboard["templating"]["list"]) {
      const std::string name = variable["name"];
      variables.insert(name);
      if (name == "window") {
        for (const nlohmann::json& option : variable["options"]) windows.push_back(option["value"]);
      }
      if (variable["type"] == "query") {
        std::smatch match;
        const std::string definition = variable["query"]["query"];
        REQUIRE(std::regex_match(definition, match, label_values));
        pending[fmt::format("group by ({}) ({})", match[2].str(), substitute(match[1], ""))] = {
            match[2], values.at(name)};
      }
    }
    std::set<std::string> expected = {"datasource", "window", "namespace", "workload"};
    if (file.path().filename() == "nodemesh-namespace.json") expected.erase("workload");
    CHECK(variables == expected);
    REQUIRE_FALSE(windows.empty());
    for (const nlohmann::json& panel : dashboard["panels"]) {
      CHECK(panel["datasource"]["uid"] == "${datasource}");
      for (const nlohmann::json& target : panel["targets"]) {
        for (const std::string& window : windows) {
          const std::string query = substitute(target["expr"], window);
          pending[query] = {};
          ++panel_queries;
          for (std::sregex_iterator it(query.begin(), query.end(), recorded_name), end; it != end;
               ++it) {
            pending["count(" + it->str() + ")"] = {};
            recorded.insert(it->str());
          }
        }
      }
    }
  }
  CHECK(panel_queries > 40);
  CHECK(recorded.size() > 10);
  // Polled together, under one deadline.
  const auto answered = [&](const std::string& query) {
    const auto& [label, value] = pending.at(query);
    for (const nlohmann::json& sample : Query(web, query)) {
      if (label.empty() ? sample["value"][1] != "NaN"
                        : sample["metric"].value(label, "") == value) {
        return true;
      }
    }
    return false;
  };
  std::set<std::string> unanswered;
  for (const auto& [query, expected] : pending) unanswered.insert(query);
  PollUntil(
      [&] {
        std::erase_if(unanswered, answered);
        return unanswered.empty();
      },
      45s, 500ms);
  for (const std::string& query : unanswered) {
    CAPTURE(query);
    CHECK(answered(query));
  }
  INFO("prometheus: " << prometheus.output());
}

}  // namespace
}  // namespace nodemesh::testing
