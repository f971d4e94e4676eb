// End-to-end tier for the agent's metrics: known traffic between two meshed pods must give
// exact counts on /metrics, in both directions (outbound at the caller, inbound at the
// server); latency percentiles must be within the stated error of what the server did and
// the client saw; and a real Prometheus scraping the agent must answer with the same counts.
// A scrape has exactly the series the cardinality formula of docs/ARCHITECTURE.md (section
// 6) gives, with each export knob; and a real Prometheus, scraping the agent and evaluating
// the chart's recording rules, answers every query of every panel and variable of the
// chart's Grafana dashboards (their variables substituted) with data.
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
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
using Labels = std::map<std::string, std::string>;

// One sample line of the Prometheus text format.
struct Sample {
  std::string name;
  Labels labels;
  double value = 0;
};

std::vector<Sample> ParseExposition(const std::string& text) {
  std::vector<Sample> samples;
  std::istringstream in(text);
  std::string line;
  static const std::regex label(R"re(([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)")re");
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    Sample sample;
    const size_t brace = line.find('{');
    const size_t space = line.rfind(' ');
    sample.name = line.substr(0, std::min(brace, space));
    if (brace != std::string::npos) {
      const std::string inside = line.substr(brace + 1, line.rfind('}') - brace - 1);
      for (std::sregex_iterator it(inside.begin(), inside.end(), label), end; it != end; ++it) {
        sample.labels[(*it)[1]] = (*it)[2];
      }
    }
    sample.value = std::stod(line.substr(space + 1));
    samples.push_back(std::move(sample));
  }
  return samples;
}

// The sum of every series of `name` whose labels include `match`.
double Sum(const std::vector<Sample>& samples, const std::string& name, const Labels& match) {
  double total = 0;
  for (const Sample& sample : samples) {
    if (sample.name != name) continue;
    const bool matches = std::all_of(match.begin(), match.end(), [&](const auto& pair) {
      const auto it = sample.labels.find(pair.first);
      return it != sample.labels.end() && it->second == pair.second;
    });
    if (matches) total += sample.value;
  }
  return total;
}

// A node with a meshed client pod (deployment "load") and a meshed server pod
// (deployment "api"), and an agent with /metrics on a free loopback port.
struct Scenario {
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
  std::string metrics_address;

  // Starts `mode` of metrics_peer.py in the server pod on port 8080, then the agent (with
  // `agent_args`), and waits until the agent captures that port.
  void Start(const std::string& server_mode, const std::vector<std::string>& agent_args = {}) {
    server_process =
        std::make_unique<Process>(server.Run({kPython, SourcePath("test/e2e/metrics_peer.py"),
                                              server_mode, "--listen", Target(server, 8080)}));
    REQUIRE(server_process->WaitForOutput("listening", 10s));
    // AgentProcess serves /metrics on a free loopback port.
    agent = std::make_unique<AgentProcess>(
        node, AgentProcessOptions{.binary = NODEMESH_AGENT_BINARY, .extra_args = agent_args});
    REQUIRE(agent->WaitForInboundPort(server, 8080));
    metrics_address = agent->metrics_address();
  }

  CommandResult RunClient(const std::vector<std::string>& arguments) {
    std::vector<std::string> argv = {kPython, SourcePath("test/e2e/metrics_peer.py")};
    argv.insert(argv.end(), arguments.begin(), arguments.end());
    CommandResult result = client.RunCommand(argv, 60s);
    INFO(result.output);
    REQUIRE(result.exit_code == 0);
    return result;
  }

  std::vector<Sample> Scrape() const {
    const CommandResult result =
        RunCommand({"curl", "-sS", "--max-time", "5", "http://" + metrics_address + "/metrics"});
    return result.exit_code == 0 ? ParseExposition(result.output) : std::vector<Sample>();
  }

  // Polls /metrics until `name` with `match` sums to `expected` (the agent collects its
  // workers once a second), and returns the samples of that scrape.
  std::vector<Sample> WaitFor(const std::string& name, const Labels& match, double expected) {
    std::vector<Sample> samples;
    const bool reached = PollUntil(
        [&] {
          samples = Scrape();
          return Sum(samples, name, match) == expected;
        },
        15s, 200ms);
    INFO(name << " reached " << Sum(samples, name, match) << ", expected " << expected);
    CHECK(reached);
    return samples;
  }
};

Labels Traffic(const std::string& direction) {
  return {{"direction", direction},
          {"src_namespace", "shop"},
          {"src_owner_kind", "Deployment"},
          {"src_owner_name", "load"},
          {"src_pod", "load-1"},
          {"src_service_account", "load"},
          {"dst_namespace", "shop"},
          {"dst_owner_kind", "Deployment"},
          {"dst_owner_name", "api"},
          {"dst_pod", "api-1"},
          {"dst_service_account", "api"}};
}

Labels With(Labels labels, const Labels& more) {
  for (const auto& [key, value] : more) labels[key] = value;
  return labels;
}

TEST_CASE("HTTP/1 requests with known statuses give exact counts, both directions") {
  Scenario s;
  s.Start("http-server");
  s.RunClient({"http-client", "--target", Target(s.server, 8080), "--plan", "200x7,500x3,404x2"});
  const std::string route = "GET /status/{id}";
  for (const std::string direction : {"outbound", "inbound"}) {
    CAPTURE(direction);
    const Labels traffic = With(Traffic(direction), {{"route", route}});
    const auto samples = s.WaitFor("response_total", traffic, 12);
    CHECK(Sum(samples, "request_total", traffic) == 12);
    CHECK(Sum(samples, "response_total",
              With(traffic, {{"status_code", "200"}, {"classification", "success"}})) == 7);
    CHECK(Sum(samples, "response_total",
              With(traffic, {{"status_code", "500"}, {"classification", "failure"}})) == 3);
    CHECK(Sum(samples, "response_total",
              With(traffic, {{"status_code", "404"}, {"classification", "success"}})) == 2);
    CHECK(Sum(samples, "response_latency_seconds_count", traffic) == 12);
    // One keep-alive connection carried all of them.
    CHECK(Sum(samples, "tcp_open_total", Traffic(direction)) == 1);
  }
}

TEST_CASE("gRPC calls count by grpc-status, and streams reset mid-way are failures") {
  Scenario s;
  s.Start("grpc-server");
  const CommandResult client = s.RunClient({"grpc-client", "--target", Target(s.server, 8080),
                                            "--plan", "Ok=5,Fail=3,Missing=2", "--cancel", "2"});
  CHECK(CountLines(client.output, "call Stream CANCELLED") == 2);
  for (const std::string direction : {"outbound", "inbound"}) {
    CAPTURE(direction);
    const Labels traffic = Traffic(direction);
    const auto method = [&](const std::string& name, Labels more) {
      more["route"] = "/nodemesh.test.Metrics/" + name;
      return With(traffic, more);
    };
    const auto samples = s.WaitFor("response_total", traffic, 12);
    CHECK(Sum(samples, "response_total",
              method("Ok", {{"grpc_status", "0"}, {"classification", "success"}})) == 5);
    CHECK(Sum(samples, "response_total",
              method("Fail", {{"grpc_status", "2"}, {"classification", "failure"}})) == 3);
    CHECK(Sum(samples, "response_total",
              method("Missing", {{"grpc_status", "5"}, {"classification", "success"}})) == 2);
    // The client cancelled after the response had started: no grpc-status ever came.
    CHECK(Sum(samples, "response_total",
              method("Stream", {{"status_code", "200"},
                                {"grpc_status", ""},
                                {"classification", "failure"}})) == 2);
    CHECK(Sum(samples, "request_total", With(traffic, {{"route", "/nodemesh.test.Metrics/Ok"}})) ==
          5);
  }
}

TEST_CASE("opaque TCP connections count their bytes exactly") {
  Scenario s;
  s.server_process = std::make_unique<Process>(StartEchoServer(s.server, 8080));
  s.agent =
      std::make_unique<AgentProcess>(s.node, AgentProcessOptions{.binary = NODEMESH_AGENT_BINARY});
  REQUIRE(s.agent->WaitForInboundPort(s.server, 8080));
  s.metrics_address = s.agent->metrics_address();
  // Three connections, each a line no protocol claims, echoed back.
  const CommandResult dial = Dial(s.client, Target(s.server, 8080), 3);
  REQUIRE(dial.exit_code == 0);
  for (const std::string direction : {"outbound", "inbound"}) {
    CAPTURE(direction);
    const Labels traffic = Traffic(direction);
    const auto samples = s.WaitFor("tcp_close_total", traffic, 3);
    const double sent = Sum(samples, "tcp_read_bytes_total", traffic);
    CHECK(sent > 0);
    CHECK(Sum(samples, "tcp_write_bytes_total", traffic) == sent);  // an echo
    CHECK(Sum(samples, "tcp_open_total", traffic) == 3);
    CHECK(Sum(samples, "tcp_open_connections", traffic) == 0);
    CHECK(Sum(samples, "tcp_close_total", With(traffic, {{"classification", "success"}})) == 3);
    CHECK(Sum(samples, "request_total", traffic) == 0);
  }
}

TEST_CASE("latency percentiles are within the histogram's error of the real latency") {
  Scenario s;
  s.Start("http-server");
  constexpr int kDelayMs = 37;  // off every Prometheus bucket boundary
  const CommandResult client =
      s.RunClient({"http-client", "--target", Target(s.server, 8080), "--delay-ms",
                   std::to_string(kDelayMs), "--count", "40"});
  std::vector<double> client_ms;
  std::istringstream lines(client.output);
  std::string word;
  int status;
  double ms;
  for (std::string line; std::getline(lines, line);) {
    std::istringstream fields(line);
    if (fields >> word >> status >> ms && word == "response") client_ms.push_back(ms);
  }
  REQUIRE(client_ms.size() == 40);
  std::sort(client_ms.begin(), client_ms.end());
  const std::string route = "GET /delay/{id}";
  s.WaitFor("response_total", With(Traffic("inbound"), {{"route", route}}), 40);
  const nlohmann::json routes = s.agent->Get("/routes")["routes"];
  int checked = 0;
  for (const nlohmann::json& entry : routes) {
    if (entry["route"] != route) continue;
    CAPTURE(entry.dump());
    CHECK(entry["responses"] == 40);
    // The agent sees the request after the client sent it and the response before the
    // client read it: every one of its latencies lies between the server's delay and what
    // the client measured, so its percentiles do too, within the 1.6 % bucket error.
    for (auto [name, rank] : {std::pair{"p50", 19}, {"p95", 37}, {"p99", 39}}) {
      CAPTURE(name);
      const double agent_ms = entry["latency_ns"][name].get<double>() / 1e6;
      CHECK(agent_ms >= kDelayMs * (1 - 0.02));
      CHECK(agent_ms <= client_ms[static_cast<size_t>(rank)] * (1 + 0.02));
    }
    ++checked;
  }
  CHECK(checked == 2);  // outbound and inbound
}

// A real Prometheus scraping `target` once a second, evaluating the rules of `rule_file` (if
// any) once a second, on a free loopback port, its data in a temporary directory.
struct Prometheus {
  Prometheus(const std::string& target, const std::string& rule_file = "") {
    std::ofstream(dir.path() + "/prometheus.yml") << fmt::format(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n{}"
        "scrape_configs:\n  - job_name: nodemesh-agent\n    static_configs:\n"
        "      - targets: ['{}']\n",
        rule_file.empty() ? "" : fmt::format("rule_files:\n  - {}\n", rule_file), target);
    process.emplace(std::vector<std::string>{
        "prometheus", "--config.file=" + dir.path() + "/prometheus.yml",
        "--storage.tsdb.path=" + dir.path() + "/data", "--web.listen-address=" + web});
  }

  TempDir dir;
  const std::string web = fmt::format("127.0.0.1:{}", FreeLoopbackPort());
  std::optional<Process> process;
};

TEST_CASE("a real Prometheus scraping the agent returns the expected request_total") {
  Scenario s;
  s.Start("http-server");
  Prometheus prometheus(s.metrics_address);
  const std::string& web = prometheus.web;
  s.RunClient({"http-client", "--target", Target(s.server, 8080), "--plan", "200x9,503x4"});

  const std::string query =
      "sum(request_total{direction=\"outbound\",src_owner_name=\"load\","
      "dst_owner_name=\"api\",route=\"GET /status/{id}\"})";
  std::string answer;
  const bool answered = PollUntil(
      [&] {
        const CommandResult result =
            RunCommand({"curl", "-sS", "--max-time", "3", "-G", "http://" + web + "/api/v1/query",
                        "--data-urlencode", "query=" + query});
        answer = result.output;
        if (result.exit_code != 0) return false;
        const nlohmann::json body = nlohmann::json::parse(answer, nullptr, false);
        if (body.is_discarded() || body["status"] != "success") return false;
        const auto& vector = body["data"]["result"];
        return !vector.empty() && vector[0]["value"][1] == "13";
      },
      60s, 500ms);
  INFO("last answer: " << answer << "\nprometheus: " << prometheus.process->output());
  CHECK(answered);
  // Failures as Prometheus sees them: the 503s.
  const CommandResult failures =
      RunCommand({"curl", "-sS", "--max-time", "3", "-G", "http://" + web + "/api/v1/query",
                  "--data-urlencode",
                  "query=sum(response_total{direction=\"inbound\",dst_owner_name=\"api\","
                  "classification=\"failure\"})"});
  const nlohmann::json body = nlohmann::json::parse(failures.output, nullptr, false);
  REQUIRE_FALSE(body.is_discarded());
  REQUIRE(body["data"]["result"].size() == 1);
  CHECK(body["data"]["result"][0]["value"][1] == "4");
}

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
    Scenario s;
    s.Start("http-server");
    s.RunClient({"http-client", "--target", Target(s.server, 8080), "--plan", "200x5,404x2,500x3"});
    // Outbound and inbound; one route; three statuses.
    CheckSeries(*s.agent, FormulaSeries(2, 1, 3, 28));
  }
  SECTION("coarse buckets, status_code dropped: 11 bounds, one kind per classification") {
    Scenario s;
    s.Start("http-server",
            {"--metrics-latency-buckets=coarse", "--metrics-drop-labels=status_code"});
    s.RunClient({"http-client", "--target", Target(s.server, 8080), "--plan", "200x5,404x2,500x3"});
    CheckSeries(*s.agent, FormulaSeries(2, 1, 2, 11));
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
  Scenario s;
  s.Start("http-server");
  Prometheus prometheus(s.metrics_address, SourcePath("helm/nodemesh/files/recording-rules.yaml"));
  const std::string& web = prometheus.web;
  // Traffic all along: requests of 20 ms for up to a minute, and failures on another route.
  Process steady =
      s.client.Run({kPython, SourcePath("test/e2e/metrics_peer.py"), "http-client", "--target",
                    Target(s.server, 8080), "--delay-ms", "20", "--count", "3000"});
  s.RunClient({"http-client", "--target", Target(s.server, 8080), "--plan", "200x20,500x10"});

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
  INFO("prometheus: " << prometheus.process->output());
  for (const std::string& query : unanswered) {
    CAPTURE(query);
    CHECK(answered(query));
  }
}

}  // namespace
}  // namespace nodemesh::testing
