// rss_bench: the agent's resident memory on one simulated node with 0, 100 and 500 enrolled
// idle pods, split the way /proc/PID/smaps splits it (anonymous against file-backed, and per
// library), against a budget and against HAProxy and nginx idle in the same run.
//
// One node (test_node.h) holds the idle pods, each a network namespace (loopback and an eth0
// with its address) and a cgroup under the node's, as the fixture's pods are but without
// a veth: nothing dials them, and a /24 holds fewer than 500 pods. Each agent asked for
// (--agent label=binary: two binaries make a before/after in one run) is started on the node
// with the first N of them in its local inventory, alone and reporting to a real aggregator
// as in a cluster; once all are enrolled (and the aggregator holds them) and its memory has
// settled it is read and stopped; the agents take turns within a round, in an order that
// alternates between rounds, and the report gives medians over rounds.
//
// Needs root (netns, cgroups, eBPF). Run through `bash bench/run.sh rss`; never a test.
// Everything it creates is removed by destructors, also on failure; the pods are named after
// the network's id, so a run that died is swept by the next one (test_node.h). One thread.
#include <fmt/format.h>
#include <sys/types.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "test/lib/agent_process.h"
#include "test/lib/aggregator_process.h"
#include "test/lib/files.h"
#include "test/lib/peers.h"
#include "test/lib/median.h"
#include "test/lib/proc_stats.h"
#include "test/lib/process.h"
#include "test/lib/test_node.h"

namespace nodemesh::testing {
namespace {

using namespace std::chrono_literals;

// The aim for the agent at 100 idle pods.
constexpr double kBudgetMiB = 12;

// An agent binary under a label, with environment variables of its own (label=binary, or
// label=binary,NAME=VALUE,... for a setting such as MALLOC_ARENA_MAX).
struct AgentVariant {
  std::string label;
  std::string binary;
  std::vector<std::string> env;  // NAME=VALUE
  bool reporting = false;        // to the aggregator (--aggregator), as in a cluster
};

struct Settings {
  std::vector<int> pods{0, 100, 500};
  std::vector<std::string> agents;  // AgentVariant specs; empty: the built agent
  int rounds = 1;
  int workers = 2;
  int libraries = 25;  // rows of the per-library table
  // Each agent alone (no aggregator: the agent's own floor) and reporting to one.
  std::vector<std::string> modes{"alone", "reporting"};
};

AgentVariant ParseVariant(const std::string& spec) {
  std::vector<std::string> parts;
  std::istringstream stream(spec);
  for (std::string part; std::getline(stream, part, ',');) parts.push_back(part);
  const size_t equals = parts.empty() ? std::string::npos : parts[0].find('=');
  if (equals == std::string::npos || equals == 0 || equals + 1 == parts[0].size()) {
    throw std::invalid_argument(
        fmt::format("--agent {}: expected label=path-of-nodemesh-agent[,NAME=VALUE...]", spec));
  }
  AgentVariant variant{parts[0].substr(0, equals), parts[0].substr(equals + 1), {}};
  if (::access(variant.binary.c_str(), X_OK) != 0) {
    throw std::invalid_argument(
        fmt::format("--agent {}: {} is not an executable file", spec, variant.binary));
  }
  for (size_t i = 1; i < parts.size(); ++i) {
    if (parts[i].find('=') == std::string::npos) {
      throw std::invalid_argument(
          fmt::format("--agent {}: '{}' is not NAME=VALUE", spec, parts[i]));
    }
    variant.env.push_back(parts[i]);
  }
  return variant;
}

// Pods that only exist: a netns and a cgroup each under `node`, named after the network's id.
class IdlePods {
 public:
  IdlePods(const TestNode& node, int count) {
    try {
      for (int i = 0; i < count; ++i) Add(node, i);
    } catch (...) {
      Remove();
      throw;
    }
  }
  ~IdlePods() { Remove(); }
  IdlePods(const IdlePods&) = delete;
  IdlePods& operator=(const IdlePods&) = delete;

  // The first `count` pods in the agent's local inventory format (TestNode::InventoryJson).
  std::string InventoryJson(int count) const {
    nlohmann::ordered_json pods = nlohmann::ordered_json::array();
    for (int i = 0; i < count; ++i) {
      const Entry& pod = pods_.at(i);
      pods.push_back({{"namespace", "idle"},
                      {"name", pod.name},
                      {"owner", {{"kind", "Deployment"}, {"name", "idle"}}},
                      {"labels", nlohmann::ordered_json::object()},
                      {"serviceAccount", "default"},
                      {"ips", {pod.ip}},
                      {"cgroup", pod.cgroup_path},
                      {"netns", "/var/run/netns/" + pod.netns},
                      {"meshed", true}});
    }
    return nlohmann::ordered_json{{"pods", pods}}.dump() + "\n";
  }

 private:
  struct Entry {
    std::string name, netns, cgroup_path, cgroup_dir, ip;
  };

  static void Run(std::vector<std::string> argv) {
    const CommandResult result = RunCommand(argv);
    if (result.exit_code != 0) {
      std::string command;
      for (const std::string& word : argv) command += word + " ";
      throw std::runtime_error(fmt::format("{}failed: {}", command, result.output));
    }
  }

  void Add(const TestNode& node, int index) {
    Entry pod;
    pod.name = fmt::format("idle-{}", index);
    pod.netns = fmt::format("nmt{}-{}", node.network().id(), pod.name);
    pod.cgroup_path = fmt::format("{}/{}", node.cgroup_path(), pod.name);
    pod.cgroup_dir = CgroupMount() + pod.cgroup_path;
    // Alone in its namespace, the address clashes with nothing: 10.78.0.1 onwards.
    pod.ip = fmt::format("10.78.{}.{}", index / 250, index % 250 + 1);
    std::filesystem::create_directory(pod.cgroup_dir);
    pods_.push_back(pod);
    Run({"ip", "netns", "add", pod.netns});
    Run({"ip", "-n", pod.netns, "link", "set", "lo", "up"});
    // A veth pair with both ends inside: the dummy driver is not on every machine.
    Run({"ip", "-n", pod.netns, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0"});
    Run({"ip", "-n", pod.netns, "addr", "add", pod.ip + "/32", "dev", "eth0"});
    Run({"ip", "-n", pod.netns, "link", "set", "eth0", "up"});
  }

  void Remove() noexcept {
    for (const Entry& pod : pods_) {
      RunCommand({"ip", "netns", "delete", pod.netns});
      std::error_code ignored;
      std::filesystem::remove(pod.cgroup_dir, ignored);
    }
    pods_.clear();
  }

  std::vector<Entry> pods_;
};

// Resident memory of one process, from /proc/PID/smaps: in KiB.
struct Memory {
  uint64_t rss = 0;
  uint64_t pss = 0;             // rss with each page shared with other processes divided
  uint64_t anonymous = 0;       // heap, stacks, anonymous maps, and copied pages of files
  uint64_t file_backed = 0;     // pages of files as they are on disk (rss - anonymous)
  uint64_t heap = 0;            // [heap] and anonymous maps (malloc arenas, thread stacks)
  uint64_t library_copies = 0;  // anonymous pages in file mappings: relocated data, GOTs
  int threads = 0;
  // Per file (its base name): resident KiB and the part of it that is copied pages.
  std::map<std::string, std::pair<uint64_t, uint64_t>> per_file;
};

Memory ReadMemory(pid_t pid) {
  Memory memory;
  std::ifstream smaps(fmt::format("/proc/{}/smaps", pid));
  std::string mapping;  // the pathname of the mapping the lines below belong to
  for (std::string line; std::getline(smaps, line);) {
    const size_t colon = line.find(':');
    // A field ("Rss:   12 kB") has its colon before any space; a mapping's header ("start-end
    // perms offset dev inode pathname") has one only in its device, after a space.
    const bool field = colon != std::string::npos && colon < line.find(' ');
    if (!field) {
      // "start-end perms offset dev inode [pathname]"
      std::istringstream words(line);
      std::string word;
      for (int i = 0; i < 5 && words >> word; ++i) {
      }
      std::getline(words >> std::ws, mapping);
      continue;
    }
    const std::string key = line.substr(0, colon);
    if (key != "Rss" && key != "Pss" && key != "Anonymous") continue;
    const uint64_t kib = std::stoull(line.substr(colon + 1));
    if (key == "Pss") {
      memory.pss += kib;
      continue;
    }
    const bool is_file = mapping.starts_with("/");
    const std::string name = is_file ? std::filesystem::path(mapping).filename().string()
                                     : (mapping.empty() ? "[anonymous]" : mapping);
    if (key == "Rss") {
      memory.rss += kib;
      memory.per_file[name].first += kib;
      if (!is_file) memory.heap += kib;
    } else {
      memory.anonymous += kib;
      memory.per_file[name].second += kib;
      if (is_file) memory.library_copies += kib;
    }
  }
  memory.file_backed = memory.rss - memory.anonymous;
  memory.threads = static_cast<int>(StatusKiB(pid, "Threads"));
  return memory;
}

double MiB(uint64_t kib) { return static_cast<double>(kib) / 1024; }

// The resident memory of `pid` once it stops changing: a second apart, within 1 %, bounded.
Memory SettledMemory(pid_t pid) {
  uint64_t last = StatusKiB(pid, "VmRSS");
  PollUntil(
      [&] {
        const uint64_t now = StatusKiB(pid, "VmRSS");
        const bool settled = now <= last + last / 100 && last <= now + now / 100;
        last = now;
        return settled;
      },
      15s, 1s);
  return ReadMemory(pid);
}

// Memory of `pid` and the processes it started (nginx's master and worker).
uint64_t TreeRssKiB(pid_t pid) {
  uint64_t kib = StatusKiB(pid, "VmRSS");
  std::ifstream children(fmt::format("/proc/{}/task/{}/children", pid, pid));
  for (pid_t child = 0; children >> child;) kib += TreeRssKiB(child);
  return kib;
}

void WaitUntilListening(const Pod& pod, Process& process, uint16_t port) {
  const bool up = PollUntil(
      [&] {
        return process.IsRunning() &&
               pod.RunCommand({"ss", "-Hltn"}).output.find(fmt::format(":{} ", port)) !=
                   std::string::npos;
      },
      20s, 100ms);
  if (!up) {
    throw std::runtime_error(
        fmt::format("{} did not listen: {}", process.command(), Tail(process.output())));
  }
}

// HAProxy and nginx idle, each listening on one port of `pod` with its defaults otherwise:
// what an idle node proxy costs, for comparison.
std::vector<std::pair<std::string, uint64_t>> PeersIdle(const Pod& pod, const std::string& dir) {
  std::vector<std::pair<std::string, uint64_t>> peers;
  const std::string haproxy_config = dir + "/haproxy.cfg";
  WriteFile(haproxy_config, R"(global
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend idle
  bind 127.0.0.1:8081
  http-request return status 200
)");
  {
    Process haproxy({"haproxy", "-db", "-f", haproxy_config}, {.netns_path = pod.netns_path});
    WaitUntilListening(pod, haproxy, 8081);
    peers.emplace_back("HAProxy (mode http, its default threads)",
                       SettledMemory(haproxy.pid()).rss);
  }
  const std::string root = dir + "/nginx";
  std::filesystem::create_directories(root + "/tmp");
  WriteFile(root + "/nginx.conf", fmt::format(R"(master_process on;
daemon off;
worker_processes 1;
user root;
error_log {0}/error.log warn;
pid {0}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  {1}
  server {{ listen 127.0.0.1:8082; return 200; }}
}}
)",
                                              root, NginxTempPaths(root)));
  {
    Process nginx({"nginx", "-c", root + "/nginx.conf"}, {.netns_path = pod.netns_path});
    WaitUntilListening(pod, nginx, 8082);
    SettledMemory(nginx.pid());
    peers.emplace_back("nginx (master and 1 worker)", TreeRssKiB(nginx.pid()));
  }
  return peers;
}

// One agent with the first `count` idle pods enrolled: its settled memory.
// Reporting, it is measured once `aggregator` holds its pods.
Memory MeasureAgent(TestNode& node, const IdlePods& pods, int count, const AgentVariant& variant,
                    const Settings& settings, AggregatorProcess& aggregator) {
  const int connected_before = aggregator.Connections(node.name());
  std::vector<std::string> launcher;
  if (!variant.env.empty()) {
    launcher.push_back("env");
    launcher.insert(launcher.end(), variant.env.begin(), variant.env.end());
  }
  AgentProcess agent(
      node, {.binary = variant.binary,
             .log_level = "warning",
             .workers = settings.workers,
             .extra_args = variant.reporting
                               ? std::vector<std::string>{"--aggregator", aggregator.address()}
                               : std::vector<std::string>{},
             .launcher = launcher});
  const std::string temporary = agent.inventory_path() + ".tmp";
  WriteFile(temporary, pods.InventoryJson(count));
  std::filesystem::rename(temporary, agent.inventory_path());
  const bool enrolled = PollUntil(
      [&] {
        const std::optional<nlohmann::json> listed = agent.TryGet("/pods");
        if (!listed) return false;
        int enrolled_pods = 0;
        for (const nlohmann::json& pod : (*listed)["pods"]) {
          enrolled_pods += pod.value("enrolled", false) ? 1 : 0;
        }
        return enrolled_pods == count;
      },
      180s, 200ms);
  if (!enrolled) {
    throw std::runtime_error(fmt::format("{} did not enrol {} pods within 180 s:\n{}",
                                         variant.label, count, Tail(agent.output())));
  }
  if (variant.reporting && !aggregator.WaitForNode(node.name(), 30s, connected_before + 1)) {
    throw std::runtime_error(fmt::format("{} did not report to the aggregator:\n{}", variant.label,
                                         Tail(agent.output())));
  }
  Memory memory = SettledMemory(agent.process().pid());
  agent.Stop();
  return memory;
}

void PrintLibraries(const std::string& label, int count, const Memory& memory, int rows) {
  fmt::print("\n{} with {} pods: resident KiB per mapping (copied: its anonymous part)\n", label,
             count);
  std::vector<std::pair<std::string, std::pair<uint64_t, uint64_t>>> files(memory.per_file.begin(),
                                                                           memory.per_file.end());
  std::sort(files.begin(), files.end(),
            [](const auto& a, const auto& b) { return a.second.first > b.second.first; });
  uint64_t rest = 0, rest_copied = 0;
  for (size_t i = 0; i < files.size(); ++i) {
    if (static_cast<int>(i) < rows) {
      fmt::print("  {:<46} {:>7} {:>7}\n", files[i].first, files[i].second.first,
                 files[i].second.second);
    } else {
      rest += files[i].second.first;
      rest_copied += files[i].second.second;
    }
  }
  fmt::print("  {:<46} {:>7} {:>7}\n", fmt::format("({} more)", files.size() - rows), rest,
             rest_copied);
}

int Run(const Settings& settings) {
  if (::geteuid() != 0) {
    fmt::print(stderr, "rss_bench needs root (netns, cgroups, eBPF): run it with sudo\n");
    return 2;
  }
  std::vector<AgentVariant> binaries;
  for (const std::string& spec : settings.agents) binaries.push_back(ParseVariant(spec));
  if (binaries.empty()) binaries.push_back({"agent", NODEMESH_AGENT_BINARY, {}});
  std::vector<AgentVariant> variants;
  for (const std::string& mode : settings.modes) {
    if (mode != "alone" && mode != "reporting") {
      fmt::print(stderr, "rss_bench: no mode '{}': alone or reporting\n", mode);
      return 2;
    }
    for (AgentVariant variant : binaries) {
      variant.reporting = mode == "reporting";
      if (variant.reporting) variant.label += " reporting";
      variants.push_back(variant);
    }
  }

  PodNetwork network;
  TestNode node(network, "rss");
  const Pod& peer_pod = node.AddPod(
      {.namespace_name = "bench", .name = "peers", .owner_name = "peers", .meshed = false});
  TempDir scratch;
  const int most = *std::max_element(settings.pods.begin(), settings.pods.end());
  fmt::print("creating {} idle pods\n", most);
  std::fflush(stdout);
  const IdlePods pods(node, most);
  AggregatorProcess aggregator({.binary = NODEMESH_AGGREGATOR_BINARY});

  // results[count][label]: one Memory per round.
  std::map<int, std::map<std::string, std::vector<Memory>>> results;
  std::vector<std::vector<std::pair<std::string, uint64_t>>> peer_rounds;
  for (int round = 0; round < settings.rounds; ++round) {
    std::vector<AgentVariant> order = variants;
    if (round % 2 == 1) std::reverse(order.begin(), order.end());
    for (const int count : settings.pods) {
      for (const AgentVariant& variant : order) {
        const Memory memory = MeasureAgent(node, pods, count, variant, settings, aggregator);
        fmt::print("round {}: {} with {} pods: {:.1f} MiB\n", round + 1, variant.label, count,
                   MiB(memory.rss));
        std::fflush(stdout);
        results[count][variant.label].push_back(memory);
      }
    }
    peer_rounds.push_back(PeersIdle(peer_pod, scratch.path()));
  }

  fmt::print("\nresident memory in MiB, medians of {} round(s); budget {:.0f} MiB\n",
             settings.rounds, kBudgetMiB);
  fmt::print("{:<24} {:>5} {:>7} {:>8} {:>6} {:>6} {:>7} {:>7} {:>8} {:>7}\n", "agent", "pods",
             "rss", "/budget", "pss", "anon", "heap", "copied", "file", "threads");
  for (const auto& [count, by_label] : results) {
    for (const AgentVariant& variant : variants) {
      const std::vector<Memory>& rounds = by_label.at(variant.label);
      const auto median = [&](uint64_t Memory::*field) {
        std::vector<uint64_t> values;
        for (const Memory& memory : rounds) values.push_back(memory.*field);
        return MiB(Median(values));
      };
      fmt::print(
          "{:<24} {:>5} {:>7.1f} {:>7.2f}x {:>6.1f} {:>6.1f} {:>7.1f} {:>7.1f} {:>8.1f} {:>7}\n",
          variant.label, count, median(&Memory::rss), median(&Memory::rss) / kBudgetMiB,
          median(&Memory::pss), median(&Memory::anonymous), median(&Memory::heap),
          median(&Memory::library_copies), median(&Memory::file_backed), rounds.back().threads);
    }
  }
  for (size_t i = 0; i < peer_rounds.front().size(); ++i) {
    std::vector<uint64_t> values;
    for (const auto& round : peer_rounds) values.push_back(round[i].second);
    fmt::print("{:<44} {:>7.1f}\n", peer_rounds.front()[i].first, MiB(Median(values)));
  }
  fmt::print(
      "\npss: rss with pages shared with other processes divided among them; anon: anonymous "
      "pages (heap + copied); heap: [heap], stacks and anonymous maps; "
      "copied: pages of libraries written to (relocations, their data); file: pages shared "
      "with the files\n");

  // The per-library split where the budget applies (or the nearest count measured).
  const int at = *std::min_element(settings.pods.begin(), settings.pods.end(), [](int a, int b) {
    return std::abs(a - 100) < std::abs(b - 100);
  });
  for (const AgentVariant& variant : variants) {
    PrintLibraries(variant.label, at, results[at][variant.label].back(), settings.libraries);
  }
  return 0;
}

}  // namespace
}  // namespace nodemesh::testing

int main(int argc, char** argv) {
  nodemesh::testing::Settings settings;
  CLI::App app{"The agent's resident memory with idle pods enrolled, against HAProxy and nginx",
               "rss_bench"};
  app.option_defaults()->always_capture_default();
  app.add_option("--pods", settings.pods, "Idle pods enrolled, one measurement each")
      ->delimiter(',')
      ->check(CLI::Range(0, 2000));
  app.add_option("--agent", settings.agents,
                 "label=path-of-nodemesh-agent[,NAME=VALUE...] (repeatable); default the "
                 "agent built with this benchmark");
  app.add_option("--rounds", settings.rounds, "Rounds; medians are reported")
      ->check(CLI::Range(1, 20));
  app.add_option("--modes", settings.modes,
                 "alone (no aggregator) and/or reporting (to a real aggregator)")
      ->delimiter(',');
  app.add_option("--workers", settings.workers, "The agent's worker threads")
      ->check(CLI::Range(1, 16));
  app.add_option("--libraries", settings.libraries, "Rows of the per-library tables")
      ->check(CLI::Range(1, 200));
  CLI11_PARSE(app, argc, argv);
  try {
    return nodemesh::testing::Run(settings);
  } catch (const std::exception& e) {
    fmt::print(stderr, "rss_bench: {}\n", e.what());
    return 1;
  }
}
