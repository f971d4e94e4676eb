// Bulk throughput through the agent: iperf3 from a client pod to an iperf3 server pod of one
// simulated node, one stream and many at once, in these scenarios, back to back:
//   direct          no proxy
//   outbound-copy   the client pod meshed: one hop through the agent, every byte copied
//                   through a userspace buffer (--max-pipes 0)
//   outbound        as outbound-copy with the agent's default: iperf3's bytes are opaque to
//                   the observer once detected, so the relay splices them in the kernel
//   same-node-copy  both pods meshed, the agent as it runs by default: dialled straight into
//                   the server pod (one hop, watched as both pods see it), copied
//   same-node       as same-node-copy, spliced
//   two-hop-copy    both pods meshed, the agent with --same-node-direct=off: out of the client
//                   pod and into the server pod, copied
//   two-hop         as two-hop-copy, spliced
// With --rounds N the scenarios run N times, interleaved, and the medians are reported. Each
// agent scenario also checks that the agent counted at least every byte iperf3 received (its
// byte counters read the same on both paths) and reports the agent's CPU per GiB moved.
//
// Needs root (netns, cgroups, eBPF). Run through `bash bench/run.sh bulk`; never a test.
// Exits non-zero if a measurement failed or the traffic did not go through the agent.
// Everything it creates (network, pods, iperf3, agents) is removed by the fixture's
// destructors, also on failure.
#include <fmt/format.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "test/lib/agent_process.h"
#include "test/lib/files.h"
#include "test/lib/median.h"
#include "test/lib/proc_stats.h"
#include "test/lib/process.h"
#include "test/lib/test_node.h"

namespace nodemesh::testing {
namespace {

using namespace std::chrono_literals;

constexpr uint16_t kIperfPort = 5201;

struct Settings {
  std::vector<int> streams = {1, 16};
  int seconds = 10;
  int rounds = 1;
  int workers = 1;
};

struct Scenario {
  std::string name;
  bool client_meshed = false;
  bool server_meshed = false;
  bool splice = true;  // false: the agent with --max-pipes 0
  // Both pods meshed: dialled straight into the server (one hop) or, off, out of the
  // client's listener and into the server's (two).
  bool same_node_direct = true;
};

struct Result {
  double gbits = 0;                // received, per second
  double agent_cpu_s_per_gib = 0;  // 0 when no agent
};

// One iperf3 run from `client` to the server, as its receiving end measured it.
struct Iperf {
  double bits_per_second = 0;
  double bytes = 0;
};

Iperf RunIperf(const Pod& client, const Pod& server, int streams, const Settings& settings) {
  const CommandResult result = client.RunCommand(
      {"iperf3", "--client", server.ip, "--port", std::to_string(kIperfPort), "--time",
       std::to_string(settings.seconds), "--parallel", std::to_string(streams), "--json"},
      std::chrono::seconds(settings.seconds + 60));
  const nlohmann::json report = nlohmann::json::parse(result.output, nullptr, false);
  if (result.exit_code != 0 || report.is_discarded() || report.contains("error")) {
    throw std::runtime_error(fmt::format("iperf3 failed (exit {}{}):\n{}", result.exit_code,
                                         result.timed_out ? ", timed out" : "", result.output));
  }
  return {report["end"]["sum_received"]["bits_per_second"].get<double>(),
          report["end"]["sum_received"]["bytes"].get<double>()};
}

Result RunScenario(TestNode& node, const Pod& client, const Pod& server, const Scenario& scenario,
                   int streams, const Settings& settings, const std::string& scratch) {
  node.WriteInventory(scratch + "/pods.json");
  node.SetMeshed(client, scenario.client_meshed);
  node.SetMeshed(server, scenario.server_meshed);
  std::unique_ptr<AgentProcess> agent;
  if (scenario.client_meshed) {
    std::vector<std::string> args = {"--same-node-direct",
                                     scenario.same_node_direct ? "on" : "off"};
    if (!scenario.splice) args.insert(args.end(), {"--max-pipes", "0"});
    agent =
        std::make_unique<AgentProcess>(node, AgentProcessOptions{.binary = NODEMESH_AGENT_BINARY,
                                                                 .log_level = "warning",
                                                                 .workers = settings.workers,
                                                                 .extra_args = args});
    if (scenario.server_meshed && !agent->WaitForInboundPort(server, kIperfPort)) {
      throw std::runtime_error("the agent did not capture iperf3's port:\n" + agent->output());
    }
  }
  const double cpu_before = agent ? ProcessCpuSeconds(agent->process().pid()) : 0;
  const Iperf iperf = RunIperf(client, server, streams, settings);
  Result result{.gbits = iperf.bits_per_second / 1e9};
  if (agent) {
    const double cpu = ProcessCpuSeconds(agent->process().pid()) - cpu_before;
    const nlohmann::json proxy = agent->Get("/stats")["proxy"];
    // Every connection went through the agent, and it counted every byte that arrived (the
    // control connection's too, and with both pods meshed each byte twice, once by each pod's
    // view, whether in one hop or two: hence at least).
    // With both pods meshed, into the server as the scenario says: dialled straight, or
    // through the inbound listener.
    const auto counted = proxy["bytes_to_upstream"].get<double>();
    const auto connections = static_cast<uint64_t>(streams) + 1;
    const uint64_t inbound = proxy["accepted_inbound"], direct = proxy["same_node_direct"];
    const bool into_server = !scenario.server_meshed ||
                             (scenario.same_node_direct ? direct >= connections && inbound == 0
                                                        : inbound >= connections && direct == 0);
    if (proxy["accepted_outbound"].get<uint64_t>() < connections || !into_server ||
        counted < iperf.bytes * (scenario.server_meshed ? 2 : 1)) {
      throw std::runtime_error(fmt::format(
          "{}: the traffic did not go through the agent as expected (iperf3 received {} bytes): {}",
          scenario.name, iperf.bytes, proxy.dump()));
    }
    result.agent_cpu_s_per_gib = cpu / (iperf.bytes / (1 << 30));
    const std::optional<ExitStatus> status = agent->Stop();
    if (!status || !status->ok()) {
      throw std::runtime_error("the agent did not stop cleanly:\n" + agent->output());
    }
  }
  fmt::print(stderr, "    {} x{}: {:.2f} Gbit/s, agent CPU {:.2f} s/GiB\n", scenario.name, streams,
             result.gbits, result.agent_cpu_s_per_gib);
  return result;
}

int Run(const Settings& settings) {
  if (::geteuid() != 0) {
    fmt::print(stderr, "bulk_bench needs root (netns, cgroups, eBPF): run it with sudo\n");
    return 2;
  }
  const std::vector<Scenario> scenarios = {
      {.name = "direct"},
      {.name = "outbound-copy", .client_meshed = true, .splice = false},
      {.name = "outbound", .client_meshed = true},
      {.name = "same-node-copy", .client_meshed = true, .server_meshed = true, .splice = false},
      {.name = "same-node", .client_meshed = true, .server_meshed = true},
      {.name = "two-hop-copy",
       .client_meshed = true,
       .server_meshed = true,
       .splice = false,
       .same_node_direct = false},
      {.name = "two-hop", .client_meshed = true, .server_meshed = true, .same_node_direct = false},
  };
  fmt::print("iperf3, {} s each; {} round(s), interleaved; agent --workers {}\n", settings.seconds,
             settings.rounds, settings.workers);
  std::fflush(stdout);

  PodNetwork network;
  TestNode node(network, "bulk");
  const Pod& client = node.AddPod(
      {.namespace_name = "bench", .name = "client-1", .owner_name = "client", .meshed = false});
  const Pod& server = node.AddPod(
      {.namespace_name = "bench", .name = "server-1", .owner_name = "server", .meshed = false});
  TempDir scratch;
  Process iperf_server = server.Run({"iperf3", "--server", "--forceflush", "--bind", server.ip,
                                     "--port", std::to_string(kIperfPort)});
  if (!iperf_server.WaitForOutput("Server listening", 10s)) {
    throw std::runtime_error("iperf3 --server did not start: " + iperf_server.output());
  }

  // results[streams index][scenario] over rounds
  std::vector<std::vector<std::vector<Result>>> results(
      settings.streams.size(), std::vector<std::vector<Result>>(scenarios.size()));
  for (int round = 0; round < settings.rounds; ++round) {
    for (size_t s = 0; s < settings.streams.size(); ++s) {
      for (size_t i = 0; i < scenarios.size(); ++i) {
        fmt::print(stderr, "round {}: {} x{}\n", round + 1, scenarios[i].name, settings.streams[s]);
        results[s][i].push_back(RunScenario(node, client, server, scenarios[i], settings.streams[s],
                                            settings, scratch.path()));
      }
    }
  }

  fmt::print("\n{:<14} {:>7} {:>9} {:>8} {:>14}\n", "scenario", "streams", "Gbit/s", "vs dir.",
             "agent CPU s/GiB");
  for (size_t s = 0; s < settings.streams.size(); ++s) {
    const auto median = [&](size_t i, auto field) {
      std::vector<double> values;
      for (const Result& r : results[s][i]) values.push_back(field(r));
      return Median(values);
    };
    const double direct = median(0, [](const Result& r) { return r.gbits; });
    for (size_t i = 0; i < scenarios.size(); ++i) {
      const double gbits = median(i, [](const Result& r) { return r.gbits; });
      const double cpu = median(i, [](const Result& r) { return r.agent_cpu_s_per_gib; });
      fmt::print("{:<14} {:>7} {:>9.2f} {:>7.2f}x {:>14}\n", scenarios[i].name, settings.streams[s],
                 gbits, gbits / direct, i == 0 ? std::string() : fmt::format("{:.3f}", cpu));
    }
  }
  fmt::print("\nMedians over {} round(s); per-run figures on stderr.\n", settings.rounds);
  return 0;
}

}  // namespace
}  // namespace nodemesh::testing

int main(int argc, char** argv) {
  nodemesh::testing::Settings settings;
  CLI::App app{"Bulk throughput through the nodemesh agent, copied and spliced, versus direct",
               "bulk_bench"};
  app.option_defaults()->always_capture_default();
  app.add_option("--streams", settings.streams, "Parallel iperf3 streams, one measurement each")
      ->delimiter(',')
      ->check(CLI::Range(1, 128));
  app.add_option("--seconds", settings.seconds, "Seconds of each iperf3 run")
      ->check(CLI::Range(1, 600));
  app.add_option("--rounds", settings.rounds, "Interleaved repetitions; medians are reported")
      ->check(CLI::Range(1, 20));
  app.add_option("--workers", settings.workers, "The agent's worker threads")
      ->check(CLI::Range(1, 16));
  CLI11_PARSE(app, argc, argv);
  try {
    return nodemesh::testing::Run(settings);
  } catch (const std::exception& error) {
    fmt::print(stderr, "bulk_bench: {}\n", error.what());
    return 1;
  }
}
