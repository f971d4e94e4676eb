// Kernel tier for Services: the real agent on a routed simulated node with a kube-proxy-style
// Service (test_node.h: cluster IP DNATed by nftables in the host netns to two pods), and a
// real aggregator asked through meshctl. A connection dialled to the cluster IP is named by
// the pod the NAT chose, checked against each backend's own log, with the Service as
// dst_service; without the NAT, by the cluster IP (External), still with the Service.
#include <fmt/format.h>

#include <catch2/catch.hpp>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

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
using nlohmann::json;

constexpr uint16_t kServicePort = 80;
constexpr uint16_t kBackendPort = 8080;
constexpr uint16_t kHttpPort = 8081;

// The sum of the samples of `name` whose labels contain every one of `labels` ("k=\"v\"") and
// none of `without` (label names).
double Sum(const std::string& exposition, const std::string& name,
           const std::vector<std::string>& labels, const std::vector<std::string>& without = {}) {
  double sum = 0;
  std::istringstream lines(exposition);
  std::string line;
  while (std::getline(lines, line)) {
    if (!line.starts_with(name + "{")) continue;
    const size_t end = line.rfind('}');
    const std::string series = line.substr(0, end + 1);
    bool match = true;
    for (const std::string& label : labels) match &= series.find(label) != std::string::npos;
    for (const std::string& label : without) match &= series.find(label + "=") == std::string::npos;
    if (match) sum += std::stod(line.substr(end + 2));
  }
  return sum;
}

std::string Label(const std::string& name, const std::string& value) {
  return fmt::format("{}=\"{}\"", name, value);
}

// An HTTP server on the pod's address whose /who answers the pod's name.
Process StartWhoServer(const Pod& pod, const TempDir& docroot) {
  WriteFile(docroot.path() + "/who", pod.name + "\n");
  Process server =
      pod.Run({kPython, "-u", "-m", "http.server", std::to_string(kHttpPort), "--bind", pod.ip},
              {.cwd = docroot.path()});
  if (!server.WaitForOutput("Serving HTTP", 10s)) {
    throw std::runtime_error("the HTTP server in " + pod.name +
                             " did not start: " + server.output());
  }
  return server;
}

// node-a: client-1 (meshed) and the two pods web-a and web-b (not meshed) of the Services
// web-svc (TCP echo) and web-http (HTTP), on a routed network; the agent reports to an
// aggregator.
struct ServiceCluster {
  RootRequired root_required{"kernel"};
  PodNetwork network{{.routed = true}};
  TestNode node{network, "node-a"};
  const Pod& client = node.AddPod({.namespace_name = "shop",
                                   .name = "client-1",
                                   .owner_name = "client",
                                   .service_account = "client",
                                   .meshed = true});
  const Pod& web_a = node.AddPod(
      {.namespace_name = "shop", .name = "web-a", .owner_name = "web", .meshed = false});
  const Pod& web_b = node.AddPod(
      {.namespace_name = "shop", .name = "web-b", .owner_name = "web", .meshed = false});
  Process server_a = StartEchoServer(web_a, kBackendPort);
  Process server_b = StartEchoServer(web_b, kBackendPort);
  TempDir docroot_a, docroot_b;
  Process http_a = StartWhoServer(web_a, docroot_a);
  Process http_b = StartWhoServer(web_b, docroot_b);
  const Service& service =
      network.AddService({.namespace_name = "shop",
                          .name = "web-svc",
                          .port = kServicePort,
                          .backends = {Target(web_a, kBackendPort), Target(web_b, kBackendPort)}});
  const Service& http_service =
      network.AddService({.namespace_name = "shop",
                          .name = "web-http",
                          .port = kServicePort,
                          .backends = {Target(web_a, kHttpPort), Target(web_b, kHttpPort)}});
  AggregatorProcess aggregator{{.binary = NODEMESH_AGGREGATOR_BINARY}};
  std::unique_ptr<AgentProcess> agent;
  std::string metrics_address;

  void StartAgent() {
    agent = std::make_unique<AgentProcess>(
        node, AgentProcessOptions{.binary = NODEMESH_AGENT_BINARY,
                                  .log_level = "debug",
                                  .extra_args = {"--aggregator", aggregator.address()}});
    metrics_address = agent->metrics_address();
    // A tap started before the aggregator knows the node's pods is refused (NOT_FOUND).
    if (!aggregator.WaitForNode("node-a")) {
      throw std::runtime_error("the agent did not connect to the aggregator:\n" +
                               aggregator.output() + "\n" + agent->output());
    }
  }

  std::string Metrics() const {
    const CommandResult result =
        RunCommand({"curl", "-sS", "--max-time", "5", "http://" + metrics_address + "/metrics"});
    return result.exit_code == 0 ? result.output : "";
  }

  // Polls /metrics until tcp_close_total (both classifications) with `labels` reaches `count`.
  bool WaitForClosed(const std::vector<std::string>& labels, double count,
                     std::string* exposition) const {
    return PollUntil(
        [&] {
          *exposition = Metrics();
          return Sum(*exposition, "tcp_close_total", labels) == count;
        },
        15s, 200ms);
  }

  json Meshctl(std::vector<std::string> arguments) const {
    arguments.insert(arguments.begin(),
                     {NODEMESH_MESHCTL_BINARY, "--aggregator", aggregator.address()});
    const CommandResult result = RunCommand(arguments, 60s);
    INFO(Describe(result));
    REQUIRE(result.exit_code == 0);
    const size_t start = result.output.find('{');
    REQUIRE(start != std::string::npos);
    return json::parse(result.output.substr(start, result.output.rfind('}') - start + 1));
  }
};

// Dials the Service once from client-1 and returns the backend whose echo server logged it.
const Pod* DialService(ServiceCluster& c, size_t* accepted_a, size_t* accepted_b) {
  const CommandResult dialled = Dial(c.client, c.service.target());
  INFO(Describe(dialled) << "\nagent:\n" << (c.agent ? c.agent->output() : ""));
  REQUIRE(dialled.exit_code == 0);
  // The application still sees the address it dialled.
  CHECK(FieldOf(dialled.output, "dial 0 ok", "peer") == c.service.target());
  const Pod* reached = nullptr;
  REQUIRE(PollUntil(
      [&] {
        if (AcceptedFrom(c.server_a).size() > *accepted_a) reached = &c.web_a;
        if (AcceptedFrom(c.server_b).size() > *accepted_b) reached = &c.web_b;
        return reached != nullptr;
      },
      10s));
  *accepted_a = AcceptedFrom(c.server_a).size();
  *accepted_b = AcceptedFrom(c.server_b).size();
  return reached;
}

TEST_CASE("a connection dialled to a Service is named by the pod its NAT chose, and the Service") {
  ServiceCluster c;
  size_t accepted_a = 0, accepted_b = 0;
  // Direct, before the agent exists: the NAT alone sends the client to the backends in turn.
  const Pod* first_direct = DialService(c, &accepted_a, &accepted_b);
  const Pod* second_direct = DialService(c, &accepted_a, &accepted_b);
  CHECK(first_direct != second_direct);
  CHECK(AcceptedFrom(c.server_a) == std::vector<std::string>{c.client.ip});

  c.StartAgent();
  const std::string outbound = Label("direction", "outbound");
  const std::string via_service = Label("dst_service", "web-svc");
  std::string exposition;
  for (int i = 1; i <= 2; ++i) {
    const Pod* reached = DialService(c, &accepted_a, &accepted_b);
    CAPTURE(i, reached->name);
    const std::vector<std::string> labels = {outbound,
                                             Label("src_pod", "client-1"),
                                             Label("dst_pod", reached->name),
                                             Label("dst_owner_name", "web"),
                                             Label("dst_service_namespace", "shop"),
                                             via_service};
    INFO(exposition << "\nagent:\n" << c.agent->output());
    CHECK(c.WaitForClosed(labels, 1, &exposition));
    CHECK(Sum(exposition, "tcp_open_total", labels) == 1);
  }
  // Both pods, one connection each; nothing under the cluster IP, nothing without the Service.
  INFO(exposition);
  CHECK(Sum(exposition, "tcp_open_total", {outbound, via_service}) == 2);
  CHECK(Sum(exposition, "tcp_open_total", {outbound, Label("dst_owner_kind", "External")}) == 0);
  CHECK(Sum(exposition, "tcp_open_total", {outbound}, {"dst_service"}) == 0);
  // The server's side of the agent sees no Service: the backends are not meshed, so there is
  // no inbound series at all.
  CHECK(Sum(exposition, "tcp_open_total", {Label("direction", "inbound")}) == 0);
  CHECK(c.agent->ProxyCounter("service_translated") == 2);

  // The aggregator: the Service's row, as its callers' agent saw it; and its callers.
  json services;
  const bool in_window = PollUntil(
      [&] {
        services = c.Meshctl({"stat", "svc", "-n", "shop", "-o", "json"});
        return services["rows"].size() == 1 && services["rows"][0]["name"] == "web-svc" &&
               services["rows"][0]["tcp_conn"] == 0 &&
               services["rows"][0]["read_bytes_per_sec"].get<double>() > 0;
      },
      20s, 500ms);
  INFO(services.dump(1));
  CHECK(in_window);
  CHECK(services["rows"][0]["type"] == "service");
  const json callers =
      c.Meshctl({"stat", "deploy", "-n", "shop", "--to", "svc/web-svc", "-o", "json"});
  INFO(callers.dump(1));
  REQUIRE(callers["rows"].size() == 1);
  CHECK(callers["rows"][0]["name"] == "client");
  // The backends' own rows (inbound view) count nothing: no agent saw them serve.
  const json by_pod =
      c.Meshctl({"stat", "pod", "-n", "shop", "--from", "deploy/client", "-o", "json"});
  INFO(by_pod.dump(1));
  std::set<std::string> reached_pods;
  for (const json& row : by_pod["rows"]) reached_pods.insert(row["name"].get<std::string>());
  CHECK(reached_pods == std::set<std::string>{"web-a", "web-b"});

  // Without the NAT, the cluster IP answers itself (web-a holds it too): nothing translated
  // the connection, so it stays the cluster IP's, External, still dialled to the Service.
  c.network.RemoveServiceNat(c.service);
  const CommandResult address = RunCommand(
      {"ip", "-n", c.web_a.netns_name, "addr", "add", c.service.cluster_ip + "/32", "dev", "eth0"});
  REQUIRE(address.exit_code == 0);
  Process cluster_ip_server = StartEchoServer(c.web_a, kServicePort, c.service.cluster_ip);
  const CommandResult dialled = Dial(c.client, c.service.target());
  INFO(Describe(dialled));
  REQUIRE(dialled.exit_code == 0);
  REQUIRE(PollUntil([&] { return AcceptedFrom(cluster_ip_server).size() == 1; }, 10s));
  const std::vector<std::string> untranslated = {outbound, Label("dst_owner_kind", "External"),
                                                 Label("dst_pod", ""), via_service};
  CHECK(c.WaitForClosed(untranslated, 1, &exposition));
  INFO(exposition);
  CHECK(Sum(exposition, "tcp_open_total", {outbound, via_service}) == 3);
  CHECK(c.agent->ProxyCounter("service_not_translated") == 1);

  const std::optional<ExitStatus> status = c.agent->Stop();
  INFO(c.agent->output());
  REQUIRE(status);
  CHECK(status->ok());
  CHECK(c.agent->output().find("Sanitizer") == std::string::npos);
}

// HTTP through a Service: each response's body names the pod that answered; /metrics counts
// the requests of each under that pod and the Service, and tap shows both.
TEST_CASE("requests dialled to a Service are counted and tapped with the pod that answered") {
  ServiceCluster c;
  const std::string url = "http://" + c.http_service.target() + "/who";
  // Direct first: the NAT alone, both pods in turn.
  std::set<std::string> direct;
  for (int i = 0; i < 2; ++i) {
    const CommandResult fetched = c.client.RunCommand({"curl", "-sS", "--max-time", "5", url});
    INFO(Describe(fetched));
    REQUIRE(fetched.exit_code == 0);
    direct.insert(fetched.output);
  }
  CHECK(direct == std::set<std::string>{"web-a\n", "web-b\n"});

  c.StartAgent();
  // Tap first, then make traffic; the subscription reaches the agent asynchronously, so
  // requests go on until the tap has its events.
  Process tap({NODEMESH_MESHCTL_BINARY, "--aggregator", c.aggregator.address(), "tap",
               "deploy/client", "-n", "shop", "--max-events", "6"});
  std::map<std::string, int> answered;  // by the pod named in the body
  const bool tapped = PollUntil(
      [&] {
        const CommandResult fetched = c.client.RunCommand({"curl", "-sS", "--max-time", "5", url});
        if (fetched.exit_code == 0) ++answered[fetched.output];
        return !tap.IsRunning();
      },
      45s, 200ms);
  INFO(tap.output() << "\nagent:\n" << c.agent->output());
  REQUIRE(tapped);
  const std::regex via_service(
      R"(^req id=\S+ proxy=out src=shop/client-1 dst=shop/web-(a|b) dst_svc=shop/web-http )"
      R"(:method=GET :authority=10\.96\.\d+\.\d+ :path=/who)",
      std::regex::multiline);
  CHECK(std::regex_search(tap.output(), via_service));
  CHECK(std::regex_search(
      tap.output(),
      std::regex(
          R"(^rsp id=\S+ proxy=out src=shop/client-1 dst=shop/web-(a|b) dst_svc=shop/web-http )"
          R"(:status=200)",
          std::regex::multiline)));

  // Every response counted under the pod its body named, with the Service.
  int total = 0;
  for (const auto& [body, count] : answered) total += count;
  INFO(total << " requests");
  std::string exposition;
  const std::vector<std::string> service_labels = {Label("direction", "outbound"),
                                                   Label("dst_service", "web-http")};
  const bool counted = PollUntil(
      [&] {
        exposition = c.Metrics();
        return Sum(exposition, "response_total", service_labels) == total;
      },
      15s, 200ms);
  INFO(exposition);
  CHECK(counted);
  for (const Pod* pod : {&c.web_a, &c.web_b}) {
    CAPTURE(pod->name);
    std::vector<std::string> labels = service_labels;
    labels.push_back(Label("dst_pod", pod->name));
    CHECK(Sum(exposition, "response_total", labels) == answered[pod->name + "\n"]);
    CHECK(Sum(exposition, "request_total", labels) == answered[pod->name + "\n"]);
  }
  CHECK(Sum(exposition, "response_total", {Label("dst_owner_kind", "External")}) == 0);

  // tap --to svc/NAME: only the requests dialled to that Service, not those to its pods'
  // own addresses, made meanwhile.
  Process service_tap({NODEMESH_MESHCTL_BINARY, "--aggregator", c.aggregator.address(), "tap",
                       "deploy/client", "-n", "shop", "--to", "svc/web-http", "--max-events", "9",
                       "-o", "json"});
  const std::string direct_url = "http://" + c.web_a.ip + ":" + std::to_string(kHttpPort) + "/who";
  int direct_requests = 0;
  const bool service_tapped = PollUntil(
      [&] {
        for (const std::string& each : {direct_url, url}) {
          const CommandResult fetched =
              c.client.RunCommand({"curl", "-sS", "--max-time", "5", each});
          if (fetched.exit_code != 0) continue;
          if (each == url) ++total;
          if (each == direct_url) ++direct_requests;
        }
        return !service_tap.IsRunning();
      },
      45s, 200ms);
  INFO(service_tap.output() << "\nagent:\n" << c.agent->output());
  REQUIRE(service_tapped);
  CHECK(direct_requests > 0);
  int tapped_events = 0;
  std::istringstream tap_lines(service_tap.output());
  for (std::string line; std::getline(tap_lines, line);) {
    if (!line.starts_with("{")) continue;
    const json event = json::parse(line);
    CAPTURE(line);
    CHECK(event["destination_service"]["name"] == "web-http");
    CHECK(event["destination_service"]["namespace"] == "shop");
    ++tapped_events;
  }
  CHECK(tapped_events == 9);

  // edges svc: client -> web-http -> web, every request dialled to the Service counted.
  INFO(total << " requests through the Service");
  json edges;
  const bool edges_counted = PollUntil(
      [&] {
        edges = c.Meshctl({"edges", "svc", "-n", "shop", "-t", "5m", "-o", "json"});
        return edges["edges"].size() == 2 && edges["edges"][0]["requests"] == total &&
               edges["edges"][1]["requests"] == total;
      },
      20s, 500ms);
  INFO(edges.dump(1));
  CHECK(edges_counted);
  std::set<std::string> hops;
  for (const json& edge : edges["edges"]) {
    hops.insert(edge["source"]["type"].get<std::string>() + "/" +
                edge["source"]["name"].get<std::string>() + ">" +
                edge["destination"]["type"].get<std::string>() + "/" +
                edge["destination"]["name"].get<std::string>());
  }
  CHECK(hops == std::set<std::string>{"deployment/client>service/web-http",
                                      "service/web-http>deployment/web"});

  // routes and top of the Service: its one route, every request dialled to it.
  const json routes = c.Meshctl({"routes", "svc/web-http", "-n", "shop", "-t", "5m", "-o", "json"});
  INFO(routes.dump(1));
  REQUIRE(routes["routes"].size() == 1);
  CHECK(routes["routes"][0]["destination"]["type"] == "service");
  CHECK(routes["routes"][0]["destination"]["name"] == "web-http");
  CHECK(routes["routes"][0]["requests"] == total);
  const std::string route = routes["routes"][0]["route"];
  CHECK(route.find("/who") != std::string::npos);
  const CommandResult top =
      RunCommand({NODEMESH_MESHCTL_BINARY, "--aggregator", c.aggregator.address(), "top",
                  "svc/web-http", "-n", "shop", "-t", "5m"},
                 60s);
  INFO(Describe(top));
  REQUIRE(top.exit_code == 0);
  // Piped, top prints one table: the route's row names the Service.
  bool top_row = false;
  std::istringstream top_lines(top.output);
  for (std::string line; std::getline(top_lines, line);) {
    top_row |=
        line.starts_with(route + " ") && line.find(" service/web-http ") != std::string::npos;
  }
  CHECK(top_row);
}

}  // namespace
}  // namespace nodemesh::testing
