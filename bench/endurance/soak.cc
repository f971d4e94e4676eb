// The soak scenario (endurance.h): a steady rate with connections opened and closed all the
// time, the agent (and the aggregator it reports to) sampled as it runs, and sent against
// counted at the end.
#include <fmt/format.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "bench/endurance/endurance.h"
#include "test/lib/aggregator_process.h"
#include "test/lib/files.h"
#include "test/lib/peers.h"
#include "test/lib/proc_stats.h"

namespace nodemesh::testing::endurance {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

struct Sample {
  int seconds = 0;
  Memory agent;
  uint64_t aggregator_rss_kib = 0;
  uint64_t active = 0;
  uint64_t counted = 0;
  uint64_t sent = 0;
};

// The last "progress <seconds> <sent> <ok>" line of a churn client: requests sent so far.
uint64_t SentSoFar(const Process& client) {
  const std::string output = client.output();
  const size_t at = output.rfind("progress ");
  if (at == std::string::npos) return 0;
  std::istringstream fields(output.substr(at + 9));
  uint64_t seconds = 0, sent = 0;
  fields >> seconds >> sent;
  return sent;
}

}  // namespace

void RunSoak(const Settings& settings) {
  fmt::print(
      "\n== soak: {} s at {:.0f} requests/s, {} requests per connection over {} connections "
      "at a time ({:.0f} connections opened and closed a second); warm-up {} s ==\n",
      settings.soak_seconds, settings.soak_rate, settings.soak_requests_per_connection,
      settings.soak_slots, settings.soak_rate / settings.soak_requests_per_connection,
      settings.warmup_seconds);
  ClientServerNode bench;
  TestNode& node = bench.node;
  const Pod& client = bench.client;
  const Pod& server = bench.server;
  // The agent streams its deltas to an aggregator, as in a cluster: its memory is
  // sampled too.
  AggregatorProcess aggregator({.binary = NODEMESH_AGGREGATOR_BINARY});
  std::unique_ptr<AgentProcess> agent =
      StartAgent(node, settings, {"--aggregator", aggregator.address()});
  const pid_t agent_pid = agent->process().pid();
  WaitUntilIdle(*agent);
  const Memory idle_before = MemoryOf(agent_pid);
  const uint64_t requests_before = ProxyStat(*agent, "requests");
  const uint64_t responses_before = RegistryResponses(*agent);
  const uint64_t accepted_before = ProxyStat(*agent, "accepted_outbound");

  Process load = client.Run(
      {SelfBinary(), "client-churn", "--target", Target(server, kServerPort), "--rate",
       fmt::format("{}", settings.soak_rate), "--requests-per-connection",
       std::to_string(settings.soak_requests_per_connection), "--slots",
       std::to_string(settings.soak_slots), "--seconds", std::to_string(settings.soak_seconds),
       "--progress-seconds", std::to_string(settings.sample_seconds)});
  const auto start = Clock::now();
  fmt::print("{:>6} {:>10} {:>9} {:>7} {:>7} {:>10} {:>10} {:>10}\n", "t s", "agent RSS",
             "agent HWM", "agent", "agent", "sent", "counted", "aggregator");
  fmt::print("{:>6} {:>10} {:>9} {:>7} {:>7} {:>10} {:>10} {:>10}\n", "", "MiB", "MiB", "fds",
             "conns", "", "by agent", "RSS MiB");
  std::fflush(stdout);
  std::vector<Sample> samples;
  const auto sample_at = [&](int seconds) {
    Sample s{.seconds = seconds,
             .agent = MemoryOf(agent_pid),
             .aggregator_rss_kib = StatusKiB(aggregator.process().pid(), "VmRSS"),
             .active = ProxyStat(*agent, "active"),
             .counted = ProxyStat(*agent, "requests") - requests_before,
             .sent = SentSoFar(load)};
    fmt::print("{:>6} {:>10.1f} {:>9.1f} {:>7} {:>7} {:>10} {:>10} {:>10.1f}\n", s.seconds,
               MiB(s.agent.rss_kib), MiB(s.agent.hwm_kib), s.agent.fds, s.active, s.sent, s.counted,
               MiB(s.aggregator_rss_kib));
    std::fflush(stdout);
    samples.push_back(s);
  };
  sample_at(0);
  for (int tick = 1; load.IsRunning(); ++tick) {
    const auto due = start + std::chrono::seconds(tick * settings.sample_seconds);
    while (Clock::now() < due && load.IsRunning()) std::this_thread::sleep_for(100ms);
    if (!load.IsRunning()) break;
    sample_at(tick * settings.sample_seconds);
    if (Clock::now() - start > std::chrono::seconds(settings.soak_seconds + 60)) {
      throw std::runtime_error("the soak client did not end:\n" + load.output());
    }
  }
  const ClientTotals totals = FinishClient(load, 30s);
  WaitUntilIdle(*agent);
  // The registry takes a worker's counts once a second.
  uint64_t responses_counted = 0;
  PollUntil(
      [&] {
        responses_counted = RegistryResponses(*agent) - responses_before;
        return responses_counted >= totals.responses_ok;
      },
      10s, 200ms);
  const uint64_t requests_counted = ProxyStat(*agent, "requests") - requests_before;
  const uint64_t proxied = ProxyStat(*agent, "accepted_outbound") - accepted_before;
  const Memory idle_after = MemoryOf(agent_pid);
  const uint64_t aggregator_after = StatusKiB(aggregator.process().pid(), "VmRSS");

  const Sample* warm = &samples.back();
  for (const Sample& s : samples) {
    if (s.seconds >= settings.warmup_seconds) {
      warm = &s;
      break;
    }
  }
  const Sample& last = samples.back();
  const double growth_hours = static_cast<double>(last.seconds - warm->seconds) / 3600.0;
  const auto growth = [&](uint64_t from, uint64_t to) {
    const double kib = static_cast<double>(to) - static_cast<double>(from);
    return growth_hours > 0
               ? fmt::format("{:+.0f} KiB ({:+.1f} MiB/h)", kib, kib / 1024.0 / growth_hours)
               : fmt::format("{:+.0f} KiB", kib);
  };
  fmt::print("\n{:<44} {:>14}\n", "traffic", "");
  fmt::print("{:<44} {:>14}\n", "requests sent (written whole)", totals.requests_sent);
  fmt::print("{:<44} {:>14}\n", "answered right", totals.responses_ok);
  fmt::print("{:<44} {:>14}\n", "answered wrong (status, body)", totals.responses_corrupted);
  fmt::print("{:<44} {:>14}\n", "lost (connection ended before the answer)", totals.requests_lost);
  fmt::print("{:<44} {:>14}\n", "skipped (due, no free connection)", totals.requests_behind);
  fmt::print("{:<44} {:>14}\n", "requests counted by the agent (/stats)", requests_counted);
  fmt::print("{:<44} {:>14}\n", "responses counted by the agent (/routes)", responses_counted);
  fmt::print("{:<44} {:>14}\n", "sent = counted",
             requests_counted == totals.requests_sent && responses_counted == totals.responses_ok
                 ? "yes"
                 : "NO");
  fmt::print("{:<44} {:>14}\n", "connections opened", totals.connections_opened);
  fmt::print("{:<44} {:>14}\n", "connections completed", totals.connections_completed);
  fmt::print("{:<44} {:>14}\n", "connections failed or broken",
             totals.connect_failed + totals.connections_broken);
  fmt::print("{:<44} {:>14}\n", "connections accepted by the agent", proxied);
  fmt::print("\n{:<34} {:>10} {:>10} {:>10} {:>10} {:>28}\n", "memory and descriptors",
             "idle before", fmt::format("t={} s", warm->seconds),
             fmt::format("t={} s", last.seconds), "idle after", "growth after warm-up");
  fmt::print("{:<34} {:>10.1f} {:>10.1f} {:>10.1f} {:>10.1f} {:>28}\n", "agent RSS MiB",
             MiB(idle_before.rss_kib), MiB(warm->agent.rss_kib), MiB(last.agent.rss_kib),
             MiB(idle_after.rss_kib), growth(warm->agent.rss_kib, last.agent.rss_kib));
  fmt::print("{:<34} {:>10} {:>10} {:>10} {:>10} {:>28}\n", "agent fds", idle_before.fds,
             warm->agent.fds, last.agent.fds, idle_after.fds,
             fmt::format("{:+}", static_cast<int64_t>(last.agent.fds) -
                                     static_cast<int64_t>(warm->agent.fds)));
  fmt::print("{:<34} {:>10.1f} {:>10.1f} {:>10.1f} {:>10.1f} {:>28}\n", "aggregator RSS MiB",
             MiB(samples.front().aggregator_rss_kib), MiB(warm->aggregator_rss_kib),
             MiB(last.aggregator_rss_kib), MiB(aggregator_after),
             growth(warm->aggregator_rss_kib, last.aggregator_rss_kib));
  fmt::print("(agent peak RSS over the soak, VmHWM: {:.1f} MiB)\n", MiB(idle_after.hwm_kib));
  for (const std::string& incident : totals.incidents) fmt::print("  client: {}\n", incident);
  if (totals.connections_broken + totals.responses_corrupted > 0) {
    fmt::print("agent /stats after: {}\n", agent->Get("/stats")["proxy"].dump());
  }

  Check(totals.responses_corrupted == 0 && totals.requests_lost == 0 &&
            totals.connect_failed == 0 && totals.connections_broken == 0,
        fmt::format("soak: {} corrupted, {} lost, {} connects failed, {} connections broken",
                    totals.responses_corrupted, totals.requests_lost, totals.connect_failed,
                    totals.connections_broken));
  Check(requests_counted == totals.requests_sent,
        fmt::format("soak: {} requests sent, {} counted by the agent", totals.requests_sent,
                    requests_counted));
  Check(responses_counted == totals.responses_ok,
        fmt::format("soak: {} answers received, {} responses in the agent's /routes",
                    totals.responses_ok, responses_counted));
  Check(idle_after.fds == idle_before.fds,
        fmt::format("soak: the agent holds {} descriptors idle after, {} before", idle_after.fds,
                    idle_before.fds));
  const std::optional<ExitStatus> status = agent->Stop();
  Check(status && status->ok(), "soak: the agent did not stop cleanly");
}

}  // namespace nodemesh::testing::endurance
