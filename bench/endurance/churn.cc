// The churn scenario (endurance.h): a pod enrolled and released over and over while it dials
// and is dialled, then what the agent and the kernel hold against before.
#include <fmt/format.h>
#include <signal.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <utility>

#include "bench/endurance/endurance.h"
#include "test/lib/files.h"
#include "test/lib/peers.h"
#include "test/lib/proc_stats.h"

namespace nodemesh::testing::endurance {
namespace {

using namespace std::chrono_literals;
using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

// What enrolment makes, counted: each must be back where it was once the pod is released.
using Inventory = std::map<std::string, int64_t>;

// The network namespace's inode of a pod, as bpftool names a netns link's target.
uint64_t NetnsInode(const Pod& pod) {
  struct stat st {};
  if (::stat(pod.netns_path.c_str(), &st) != 0) return 0;
  return st.st_ino;
}

Inventory TakeInventory(const AgentProcess& agent, const Pod& pod, pid_t agent_pid) {
  Inventory counts;
  const Json stats = agent.Get("/stats");
  counts["agent listeners (/stats)"] = stats["proxy"]["listeners"].get<int64_t>();
  counts["identities (/stats)"] = stats["proxy"]["identities"].get<int64_t>();
  counts["agent connections (/stats)"] = stats["proxy"]["active"].get<int64_t>();
  const Json kernel = agent.Get("/kernel");
  for (const Json& map : kernel["maps"]) {
    if (map["name"] == "counters" || map["name"] == "excluded_ports") continue;  // fixed size
    counts[fmt::format("map {} entries", map["name"].get<std::string>())] =
        map["entries"].get<int64_t>();
  }
  counts["programs attached (/kernel)"] = static_cast<int64_t>(kernel["programs"].size());
  // The pod's view of the kernel, from outside the agent.
  const CommandResult listening = pod.RunCommand({"ss", "-Hltn"});
  counts["listeners in the pod's netns (ss)"] =
      CountLinesWith(listening.output, ":15001 ") + CountLinesWith(listening.output, ":15006 ");
  const CommandResult cgroup = RunCommand({"bpftool", "-j", "cgroup", "show", pod.cgroup_dir});
  const Json attached = Json::parse(cgroup.output, nullptr, false);
  // bpftool prints nothing at all, not an empty list, for a cgroup with nothing attached.
  const auto programs = [](const CommandResult& listed, const Json& json) -> int64_t {
    if (json.is_array()) return static_cast<int64_t>(json.size());
    return listed.exit_code == 0 && listed.output.find_first_not_of(" \n") == std::string::npos
               ? 0
               : -1;
  };
  counts["programs on the pod's cgroup (bpftool)"] = programs(cgroup, attached);
  const CommandResult effective =
      RunCommand({"bpftool", "-j", "cgroup", "show", pod.cgroup_dir, "effective"});
  const Json inherited = Json::parse(effective.output, nullptr, false);
  counts["programs effective on it (bpftool)"] = programs(effective, inherited);
  const CommandResult links = RunCommand({"bpftool", "-j", "link", "show"});
  const Json link_list = Json::parse(links.output, nullptr, false);
  int64_t netns_links = 0;
  const uint64_t inode = NetnsInode(pod);
  if (link_list.is_array()) {
    for (const Json& link : link_list) {
      if (link.value("type", "") == "netns" && link.value("netns_ino", uint64_t{0}) == inode) {
        ++netns_links;
      }
    }
  }
  counts["links on the pod's netns (bpftool)"] = netns_links;
  counts["agent fds"] = static_cast<int64_t>(DescriptorCount(agent_pid));
  return counts;
}

}  // namespace

void RunChurn(const Settings& settings) {
  fmt::print(
      "\n== churn: {} enrol/release cycles of a pod dialling out at {:.0f} requests/s and "
      "dialled at {:.0f} requests/s ({} requests per connection) ==\n",
      settings.churn_cycles, settings.churn_rate, settings.churn_rate,
      settings.churn_requests_per_connection);
  PodNetwork network;
  TestNode node(network, "endurance");
  const Pod& churned = node.AddPod(
      {.namespace_name = "bench", .name = "churn-1", .owner_name = "churn", .meshed = false});
  const Pod& server = node.AddPod(
      {.namespace_name = "bench", .name = "server-1", .owner_name = "server", .meshed = false});
  const Pod& caller = node.AddPod(
      {.namespace_name = "bench", .name = "caller-1", .owner_name = "caller", .meshed = false});
  TempDir scratch;
  Process server_nginx = StartNginxAnsweringPaths(server, churned, scratch.path());
  Process churned_nginx = StartNginxAnsweringPaths(churned, caller, scratch.path());
  std::unique_ptr<AgentProcess> agent = StartAgent(node, settings);
  const pid_t agent_pid = agent->process().pid();
  WaitUntilIdle(*agent);
  const Inventory before = TakeInventory(*agent, churned, agent_pid);
  const uint64_t rss_before = StatusKiB(agent_pid, "VmRSS");
  // What one enrolment holds, to show that the counts below can see it.
  node.SetMeshed(churned, true);
  if (!agent->WaitUntilEnrolled(churned) || !agent->WaitForInboundPort(churned, kServerPort)) {
    throw std::runtime_error("the churned pod was not enrolled:\n" + agent->output());
  }
  const Inventory enrolled = TakeInventory(*agent, churned, agent_pid);
  node.SetMeshed(churned, false);
  if (!agent->WaitUntilEnrolled(churned, false)) {
    throw std::runtime_error("the churned pod was not released:\n" + agent->output());
  }

  const auto churn_client = [&](const Pod& from, const Pod& to, uint64_t seed) {
    return from.Run({SelfBinary(), "client-churn", "--target", Target(to, kServerPort), "--rate",
                     fmt::format("{}", settings.churn_rate), "--requests-per-connection",
                     std::to_string(settings.churn_requests_per_connection), "--slots",
                     std::to_string(settings.churn_slots), "--seconds", "86400", "--seed",
                     std::to_string(seed)});
  };
  Process outbound = churn_client(churned, server, 1);
  Process inbound = churn_client(caller, churned, 2);
  const Json stats_before = agent->Get("/stats");
  const auto start = Clock::now();
  int cycles = 0, cycles_with_proxied = 0;
  fmt::print("{:>6} {:>7} {:>10} {:>7} {:>10} {:>10} {:>10} {:>10}\n", "cycle", "t s", "agent RSS",
             "agent", "listeners", "identities", "proxied", "proxied");
  fmt::print("{:>6} {:>7} {:>10} {:>7} {:>10} {:>10} {:>10} {:>10}\n", "", "", "MiB", "fds", "", "",
             "outbound", "inbound");
  std::fflush(stdout);
  for (; cycles < settings.churn_cycles; ++cycles) {
    node.SetMeshed(churned, true);
    if (!agent->WaitUntilEnrolled(churned, true, 30s)) {
      Check(false, fmt::format("churn: cycle {}: the pod was not enrolled", cycles + 1));
      break;
    }
    // Released with live proxied connections: wait until the agent took a new one.
    const uint64_t accepted = ProxyStat(*agent, "accepted_outbound");
    if (PollUntil([&] { return ProxyStat(*agent, "accepted_outbound") > accepted; }, 2s, 5ms)) {
      ++cycles_with_proxied;
    }
    node.SetMeshed(churned, false);
    if (!agent->WaitUntilEnrolled(churned, false, 30s)) {
      Check(false, fmt::format("churn: cycle {}: the pod was not released", cycles + 1));
      break;
    }
    if ((cycles + 1) % 50 == 0 || cycles + 1 == settings.churn_cycles) {
      const Json stats = agent->Get("/stats");
      fmt::print("{:>6} {:>7.0f} {:>10.1f} {:>7} {:>10} {:>10} {:>10} {:>10}\n", cycles + 1,
                 std::chrono::duration<double>(Clock::now() - start).count(),
                 MiB(StatusKiB(agent_pid, "VmRSS")), DescriptorCount(agent_pid),
                 stats["proxy"]["listeners"].get<uint64_t>(),
                 stats["proxy"]["identities"].get<uint64_t>(),
                 stats["proxy"]["accepted_outbound"].get<uint64_t>() -
                     stats_before["proxy"]["accepted_outbound"].get<uint64_t>(),
                 stats["proxy"]["accepted_inbound"].get<uint64_t>() -
                     stats_before["proxy"]["accepted_inbound"].get<uint64_t>());
      std::fflush(stdout);
    }
  }
  outbound.Signal(SIGUSR1);
  inbound.Signal(SIGUSR1);
  const ClientTotals out_totals = FinishClient(outbound, 30s);
  const ClientTotals in_totals = FinishClient(inbound, 30s);
  WaitUntilIdle(*agent);
  const Json stats_after = agent->Get("/stats");
  const Inventory after = TakeInventory(*agent, churned, agent_pid);
  const uint64_t rss_after = StatusKiB(agent_pid, "VmRSS");
  const auto delta = [&](const char* group, const char* name) {
    return stats_after[group][name].get<uint64_t>() - stats_before[group][name].get<uint64_t>();
  };
  const uint64_t proxied_out = delta("proxy", "accepted_outbound");
  const uint64_t proxied_in = delta("proxy", "accepted_inbound");

  fmt::print("\n{} cycles in {:.0f} s; {} of them released with a new proxied connection live\n",
             cycles, std::chrono::duration<double>(Clock::now() - start).count(),
             cycles_with_proxied);
  fmt::print("\n{:<22} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}\n", "connections",
             "opened", "completed", "failed", "broken", "requests", "answered", "wrong", "lost");
  fmt::print("{:<22} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}\n", "", "", "",
             "connect", "", "sent", "right", "", "");
  for (const auto& [name, t] :
       {std::pair<const char*, const ClientTotals&>{"out of the churned pod", out_totals},
        std::pair<const char*, const ClientTotals&>{"into the churned pod", in_totals}}) {
    fmt::print("{:<22} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}\n", name,
               t.connections_opened, t.connections_completed, t.connect_failed,
               t.connections_broken, t.requests_sent, t.responses_ok, t.responses_corrupted,
               t.requests_lost);
  }
  fmt::print(
      "proxied by the agent: {} outbound, {} inbound; the rest went direct (fail-open, or "
      "while released): {} outbound, {} inbound\n",
      proxied_out, proxied_in,
      out_totals.connections_opened - std::min(out_totals.connections_opened, proxied_out),
      in_totals.connections_opened - std::min(in_totals.connections_opened, proxied_in));
  for (const ClientTotals* t : {&out_totals, &in_totals}) {
    for (const std::string& incident : t->incidents) fmt::print("  client: {}\n", incident);
  }
  fmt::print("origin_missing {}, kernel origin_save_failed {}, inbound_no_listener {}\n",
             delta("proxy", "origin_missing"), delta("kernel", "origin_save_failed"),
             delta("kernel", "inbound_no_listener"));

  fmt::print("\n{:<42} {:>10} {:>10} {:>10} {:>6}\n", "held by the agent and the kernel",
             "released", "enrolled", "after", "leak");
  fmt::print("{:<42} {:>10} {:>10} {:>10} {:>6}\n", "", "(before)", "(once)", "cycles", "");
  for (const auto& [name, value] : before) {
    const int64_t now = after.count(name) ? after.at(name) : -1;
    const bool leak = now != value;
    fmt::print("{:<42} {:>10} {:>10} {:>10} {:>6}\n", name, value,
               enrolled.count(name) ? enrolled.at(name) : -1, now, leak ? "LEAK" : "no");
    Check(!leak, fmt::format("churn: {}: {} before, {} after {} cycles", name, value, now, cycles));
  }
  fmt::print("{:<42} {:>10.1f} {:>10} {:>10.1f}\n", "agent RSS MiB", MiB(rss_before), "",
             MiB(rss_after));

  Check(cycles == settings.churn_cycles,
        fmt::format("churn: {} of {} cycles ran", cycles, settings.churn_cycles));
  for (const auto& [name, t] :
       {std::pair<const char*, const ClientTotals&>{"out of the churned pod", out_totals},
        std::pair<const char*, const ClientTotals&>{"into the churned pod", in_totals}}) {
    Check(t.connect_failed == 0 && t.connections_broken == 0 && t.responses_corrupted == 0 &&
              t.requests_lost == 0,
          fmt::format("churn: {}: {} connects failed, {} broken, {} answers wrong, {} lost", name,
                      t.connect_failed, t.connections_broken, t.responses_corrupted,
                      t.requests_lost));
  }
  const std::optional<ExitStatus> status = agent->Stop();
  Check(status && status->ok(), "churn: the agent did not stop cleanly");
}

}  // namespace nodemesh::testing::endurance
