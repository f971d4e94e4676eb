// End-to-end tier for the agent's metrics: known traffic between two meshed pods must give
// exact counts on /metrics, in both directions (outbound at the caller, inbound at the
// server); latency percentiles must be within the stated error of what the server did and
// the client saw; and a real Prometheus scraping the agent must answer with the same counts.
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "test/lib/agent_process.h"
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

  // Starts `mode` of metrics_peer.py in the server pod on port 8080, then the agent, and
  // waits until the agent captures that port.
  void Start(const std::string& server_mode) {
    server_process =
        std::make_unique<Process>(server.Run({kPython, SourcePath("test/e2e/metrics_peer.py"),
                                              server_mode, "--listen", Target(server, 8080)}));
    REQUIRE(server_process->WaitForOutput("listening", 10s));
    // AgentProcess serves /metrics on a free loopback port.
    agent =
        std::make_unique<AgentProcess>(node, AgentProcessOptions{.binary = NODEMESH_AGENT_BINARY});
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

TEST_CASE("a real Prometheus scraping the agent returns the expected request_total") {
  Scenario s;
  s.Start("http-server");
  TempDir prometheus_dir;
  const std::string web = fmt::format("127.0.0.1:{}", FreeLoopbackPort());
  std::ofstream(prometheus_dir.path() + "/prometheus.yml") << fmt::format(
      "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
      "scrape_configs:\n  - job_name: nodemesh-agent\n    static_configs:\n"
      "      - targets: ['{}']\n",
      s.metrics_address);
  Process prometheus({"prometheus", "--config.file=" + prometheus_dir.path() + "/prometheus.yml",
                      "--storage.tsdb.path=" + prometheus_dir.path() + "/data",
                      "--web.listen-address=" + web});
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
  INFO("last answer: " << answer << "\nprometheus: " << prometheus.output());
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

}  // namespace
}  // namespace nodemesh::testing
