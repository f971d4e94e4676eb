// The service scenario (endurance.h): what the agent's conntrack lookup of a connection dialled
// to a Service's cluster IP costs (agent/kernel/conntrack.h, one query per such connection),
// on a routed simulated node whose Services are DNATed by nftables in the host's netns, as
// kube-proxy does it (test_node.h):
//
//   lookup     this process asks, as a worker does, for the entry of a real connection held
//              through a Service (the answer names the pod the NAT chose) and of one held
//              straight to the pod (no translation): the time of one query, many times over.
//   new conns  the agent (one worker) carrying new connections at a fixed rate, each with one
//              request, from a meshed client pod to nginx through its Service's cluster IP
//              (a lookup per connection) and to the pod's own address (none), alternated: the
//              agent's CPU per connection in both, so what the lookup adds where it is made.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "agent/kernel/conntrack.h"
#include "bench/endurance/endurance.h"
#include "test/lib/peers.h"
#include "test/lib/proc_stats.h"

namespace nodemesh::testing::endurance {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr uint16_t kEchoPort = 9000;

Endpoint EndpointOf(const std::string& text) {
  const std::optional<Endpoint> endpoint = Endpoint::Parse(text);
  if (!endpoint) throw std::runtime_error("not ip:port: " + text);
  return *endpoint;
}

// A connection held from `client` to `target` by tcp_peer.py hold, and its local address.
struct Held {
  Process process;
  Endpoint local;
};

Held Hold(const Pod& client, const std::string& target) {
  Process process = client.Run(TcpPeer("hold", {"--connect", target, "--interval", "1"}));
  if (!process.WaitForOutput("connected", 10s)) {
    throw std::runtime_error("tcp_peer.py hold did not connect: " + process.output());
  }
  const Endpoint local = EndpointOf(FieldOf(process.output(), "connected", "local"));
  return Held{std::move(process), local};
}

// Times of `count` lookups of one connection, in microseconds, sorted; and whether each found
// the translation `expected` says it should.
std::vector<double> TimeLookups(agent::Conntrack& conntrack, const Held& held,
                                const std::string& dialled, bool expected, int count) {
  const Endpoint destination = EndpointOf(dialled);
  std::vector<double> us;
  us.reserve(static_cast<size_t>(count));
  for (int i = 0; i < count; ++i) {
    const auto start = Clock::now();
    const bool translated = conntrack.TranslatedDestination(held.local, destination).has_value();
    us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - start).count());
    Check(translated == expected, fmt::format("service: the lookup of a connection to {} {}",
                                              dialled, expected ? "found no NAT" : "found a NAT"));
  }
  std::sort(us.begin(), us.end());
  return us;
}

double Percentile(const std::vector<double>& sorted, double p) {
  return sorted[std::min(sorted.size() - 1, static_cast<size_t>(p * sorted.size()))];
}

double Mean(const std::vector<double>& values) {
  double sum = 0;
  for (const double value : values) sum += value;
  return sum / static_cast<double>(values.size());
}

// One load of new connections through the agent: its CPU per connection, and the lookups
// that found a translation meanwhile.
struct ChurnRun {
  std::string to;
  uint64_t connections = 0;
  double agent_cpu_us_per_connection = 0;
  uint64_t translated = 0;
};

ChurnRun Churn(const Pod& client, const AgentProcess& agent, pid_t agent_pid, const std::string& to,
               const std::string& target, const Settings& settings) {
  WaitUntilIdle(agent);
  const uint64_t translated_before = ProxyStat(agent, "service_translated");
  const double cpu_before = ProcessCpuSeconds(agent_pid);
  Process load =
      client.Run({SelfBinary(), "client-churn", "--target", target, "--rate",
                  fmt::format("{}", settings.service_rate), "--requests-per-connection", "1",
                  "--slots", "32", "--seconds", std::to_string(settings.service_seconds)});
  const ClientTotals totals =
      FinishClient(load, std::chrono::seconds(settings.service_seconds + 60));
  PollUntil([&] { return ProxyStat(agent, "active") == 0; }, 60s, 100ms);
  ChurnRun run{.to = to, .connections = totals.connections_completed};
  run.agent_cpu_us_per_connection = (ProcessCpuSeconds(agent_pid) - cpu_before) * 1e6 /
                                    static_cast<double>(std::max<uint64_t>(1, run.connections));
  run.translated = ProxyStat(agent, "service_translated") - translated_before;
  Check(totals.responses_ok == totals.requests_sent && totals.responses_corrupted == 0 &&
            totals.connections_broken == 0 && totals.connect_failed == 0,
        fmt::format("service: to {}: {} of {} answered right, {} broken, {} failed connects", to,
                    totals.responses_ok, totals.requests_sent, totals.connections_broken,
                    totals.connect_failed));
  return run;
}

}  // namespace

void RunService(const Settings& settings) {
  fmt::print(
      "\n== service: the conntrack lookup of a connection dialled to a Service, {} lookups; "
      "then {} new connections/s through the agent to a Service and to its pod, {} s each, {} "
      "round(s) ==\n",
      settings.service_lookups, settings.service_rate, settings.service_seconds,
      settings.service_rounds);
  std::fflush(stdout);
  PodNetwork network({.routed = true});
  TestNode node(network, "service");
  const Pod& client = node.AddPod(
      {.namespace_name = "bench", .name = "client-1", .owner_name = "client", .meshed = false});
  const Pod& server = node.AddPod(
      {.namespace_name = "bench", .name = "server-1", .owner_name = "server", .meshed = false});
  TempDir scratch;
  Process nginx = StartNginxAnsweringPaths(server, client, scratch.path());
  Process echo = StartEchoServer(server, kEchoPort);
  const Service& web = network.AddService({.namespace_name = "bench",
                                           .name = "web",
                                           .port = 80,
                                           .backends = {Target(server, kServerPort)}});
  const Service& echo_service = network.AddService({.namespace_name = "bench",
                                                    .name = "echo",
                                                    .port = 7,
                                                    .backends = {Target(server, kEchoPort)}});

  // The lookup alone, in this process (the host's netns, where the NAT is), before the agent.
  absl::StatusOr<std::unique_ptr<agent::Conntrack>> opened = agent::Conntrack::Open();
  if (!opened.ok()) throw std::runtime_error("conntrack: " + opened.status().ToString());
  const Held via_service = Hold(client, echo_service.target());
  const Held direct = Hold(client, Target(server, kEchoPort));
  const std::vector<double> translated = TimeLookups(**opened, via_service, echo_service.target(),
                                                     /*expected=*/true, settings.service_lookups);
  const std::vector<double> untranslated = TimeLookups(
      **opened, direct, Target(server, kEchoPort), /*expected=*/false, settings.service_lookups);
  fmt::print("\n{:<28} {:>9} {:>9} {:>9}\n", "conntrack lookup", "mean us", "p50 us", "p99 us");
  for (const auto& [what, us] : {std::pair{"through a Service (DNAT)", &translated},
                                 std::pair{"straight to the pod", &untranslated}}) {
    fmt::print("{:<28} {:>9.1f} {:>9.1f} {:>9.1f}\n", what, Mean(*us), Percentile(*us, 0.5),
               Percentile(*us, 0.99));
  }
  std::fflush(stdout);

  // The agent, carrying new connections to the Service and to the pod, alternated.
  node.SetMeshed(client, true);
  std::unique_ptr<AgentProcess> agent = std::make_unique<AgentProcess>(
      node,
      AgentProcessOptions{.binary = NODEMESH_AGENT_BINARY, .log_level = "warning", .workers = 1});
  const pid_t agent_pid = agent->process().pid();
  std::vector<ChurnRun> runs;
  for (int round = 0; round < settings.service_rounds; ++round) {
    fmt::print(stderr, "service: round {}\n", round + 1);
    runs.push_back(Churn(client, *agent, agent_pid, "Service", web.target(), settings));
    runs.push_back(Churn(client, *agent, agent_pid, "pod", Target(server, kServerPort), settings));
  }
  fmt::print("\n{:>5} {:>8} {:>12} {:>9} {:>14} {:>11}\n", "round", "to", "connections", "a second",
             "agent CPU us", "translated");
  fmt::print("{:>5} {:>8} {:>12} {:>9} {:>14} {:>11}\n", "", "", "", "", "per connection",
             "lookups");
  for (size_t i = 0; i < runs.size(); ++i) {
    fmt::print("{:>5} {:>8} {:>12} {:>9.0f} {:>14.1f} {:>11}\n", i / 2 + 1, runs[i].to,
               runs[i].connections,
               static_cast<double>(runs[i].connections) / settings.service_seconds,
               runs[i].agent_cpu_us_per_connection, runs[i].translated);
    Check(runs[i].translated == (runs[i].to == "Service" ? runs[i].connections : 0),
          fmt::format("service: {} connections to the {}, {} translated", runs[i].connections,
                      runs[i].to, runs[i].translated));
  }
  fmt::print(
      "\nagent CPU per connection: its CPU over the load and until it holds no connection, "
      "over the connections completed (one request each). A second: the rate the client "
      "kept; below --service-rate, the machine could not keep it and the figure is not one "
      "of that rate.\n");
  const std::optional<ExitStatus> status = agent->Stop();
  Check(status && status->ok(), "service: the agent did not stop cleanly");
}

}  // namespace nodemesh::testing::endurance
