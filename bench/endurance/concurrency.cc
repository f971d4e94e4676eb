// The concurrency scenario (endurance.h): many connections open at once through one agent,
// in rounds, with the memory a connection costs.
#include <fmt/format.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <vector>

#include "bench/endurance/endurance.h"
#include "test/lib/files.h"
#include "test/lib/peers.h"
#include "test/lib/proc_stats.h"

namespace nodemesh::testing::endurance {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

struct ConcurrencyRound {
  ClientTotals client;
  uint64_t counted_requests = 0;
  uint64_t active_at_peak = 0;
  Memory before, all_open, peak, after;
};

}  // namespace

void RunConcurrency(const Settings& settings) {
  fmt::print(
      "\n== concurrency: {} connections at once, {} requests each, client pod -> agent -> "
      "server pod; {} round(s) on one agent ==\n",
      settings.connections, settings.requests_per_connection, settings.concurrency_rounds);
  ClientServerNode bench;
  TestNode& node = bench.node;
  const Pod& client = bench.client;
  const Pod& server = bench.server;
  std::unique_ptr<AgentProcess> agent = StartAgent(node, settings);
  const pid_t agent_pid = agent->process().pid();
  fmt::print("agent pid {}: open files limit {}, {} workers\n", agent_pid, FileLimit(agent_pid),
             settings.workers);
  const uint64_t n = ConnectionsThatFit(settings, *agent, agent_pid);

  std::vector<ConcurrencyRound> rounds;
  for (int round = 1; round <= settings.concurrency_rounds; ++round) {
    ConcurrencyRound r;
    WaitUntilIdle(*agent);
    r.before = MemoryOf(agent_pid);
    const uint64_t requests_before = ProxyStat(*agent, "requests");
    const auto started = Clock::now();
    Process load = client.Run({SelfBinary(), "client-concurrent", "--target",
                               Target(server, kServerPort), "--connections", std::to_string(n),
                               "--requests", std::to_string(settings.requests_per_connection),
                               "--seed", std::to_string(round),
                               // Past the limit some connections are never answered.
                               "--phase-timeout", settings.beyond_file_limit ? "20" : "600"});
    const double agent_cpu_before = ProcessCpuSeconds(agent_pid);
    WaitForLine(load, "all-open", 900s);
    r.all_open = MemoryOf(agent_pid);
    const double open_seconds = std::chrono::duration<double>(Clock::now() - started).count();
    if (settings.beyond_file_limit) {
      ReportAtDescriptorLimit(*agent, agent_pid, agent_cpu_before, open_seconds, r.all_open.fds);
    }
    load.Signal(SIGUSR1);
    WaitForLine(load, "exchanged", 900s);
    r.peak = MemoryOf(agent_pid);
    r.active_at_peak = ProxyStat(*agent, "active");
    load.Signal(SIGUSR1);
    r.client = FinishClient(load, 120s);
    WaitUntilIdle(*agent);
    r.after = MemoryOf(agent_pid);
    r.counted_requests = ProxyStat(*agent, "requests") - requests_before;
    fmt::print("round {}: {} connections open in {:.1f} s; {} requests answered\n", round,
               r.client.connections_opened, open_seconds, r.client.responses_ok);
    std::fflush(stdout);
    rounds.push_back(r);
  }

  fmt::print("\n{:>5} {:>11} {:>11} {:>9} {:>9} {:>10} {:>8} {:>9} {:>11} {:>9}\n", "round",
             "connections", "completed", "requests", "answered", "corrupted", "lost", "counted",
             "open at", "broken");
  fmt::print("{:>5} {:>11} {:>11} {:>9} {:>9} {:>10} {:>8} {:>9} {:>11} {:>9}\n", "", "", "",
             "sent", "right", "", "", "by agent", "peak", "");
  for (size_t i = 0; i < rounds.size(); ++i) {
    const ConcurrencyRound& r = rounds[i];
    fmt::print("{:>5} {:>11} {:>11} {:>9} {:>9} {:>10} {:>8} {:>9} {:>11} {:>9}\n", i + 1,
               r.client.connections_opened, r.client.connections_completed, r.client.requests_sent,
               r.client.responses_ok, r.client.responses_corrupted, r.client.requests_lost,
               r.counted_requests, r.active_at_peak,
               r.client.connections_broken + r.client.connect_failed);
  }
  fmt::print("\n{:>5} {:>10} {:>10} {:>10} {:>10} {:>10} {:>12} {:>9} {:>9} {:>9}\n", "round",
             "RSS before", "all open", "after reqs", "after", "peak (HWM)", "per conn.", "fds",
             "fds", "fds");
  fmt::print("{:>5} {:>10} {:>10} {:>10} {:>10} {:>10} {:>12} {:>9} {:>9} {:>9}\n", "", "MiB",
             "MiB", "MiB", "MiB", "MiB", "KiB", "before", "open", "after");
  for (size_t i = 0; i < rounds.size(); ++i) {
    const ConcurrencyRound& r = rounds[i];
    const uint64_t peak = std::max(r.all_open.rss_kib, r.peak.rss_kib);
    fmt::print(
        "{:>5} {:>10.1f} {:>10.1f} {:>10.1f} {:>10.1f} {:>10.1f} {:>12.2f} {:>9} {:>9} {:>9}\n",
        i + 1, MiB(r.before.rss_kib), MiB(r.all_open.rss_kib), MiB(r.peak.rss_kib),
        MiB(r.after.rss_kib), MiB(r.peak.hwm_kib),
        static_cast<double>(peak - std::min(peak, r.before.rss_kib)) / static_cast<double>(n),
        r.before.fds, r.peak.fds, r.after.fds);
  }
  fmt::print(
      "\nper conn. = (RSS with all open, after their requests - RSS before) / connections. "
      "'after' is once the agent holds no connection again.\n");

  for (size_t i = 0; i < rounds.size(); ++i) {
    const ConcurrencyRound& r = rounds[i];
    const std::string round = fmt::format("concurrency round {}", i + 1);
    const uint64_t expected = n * static_cast<uint64_t>(settings.requests_per_connection);
    Check(r.client.connections_completed == n,
          fmt::format("{}: {} of {} connections completed", round, r.client.connections_completed,
                      n));
    Check(r.client.responses_ok == expected && r.client.responses_corrupted == 0 &&
              r.client.requests_lost == 0,
          fmt::format("{}: {} of {} requests answered right, {} corrupted, {} lost", round,
                      r.client.responses_ok, expected, r.client.responses_corrupted,
                      r.client.requests_lost));
    Check(r.active_at_peak >= n,
          fmt::format("{}: the agent held {} connections at the peak, not {}", round,
                      r.active_at_peak, n));
    Check(r.counted_requests == r.client.requests_sent,
          fmt::format("{}: {} requests sent, {} counted by the agent", round,
                      r.client.requests_sent, r.counted_requests));
    Check(r.after.fds == rounds[0].before.fds,
          fmt::format("{}: the agent holds {} descriptors after, {} before the first round", round,
                      r.after.fds, rounds[0].before.fds));
  }
  const std::optional<ExitStatus> status = agent->Stop();
  Check(status && status->ok(), "concurrency: the agent did not stop cleanly");
}

}  // namespace nodemesh::testing::endurance
