// The agent in a cluster of many Services: its memory (RSS) once it knows them all, and its
// CPU time per Service event (a stream of creates, updates and deletes) while it follows
// them. The cluster is the test Kubernetes API server (test/lib/kube_apiserver.py) started
// with the Services already stored (--seed: no request per Service), and the agent watches
// it from a simulated node (no pods). `--before` names another nodemesh-agent binary (a
// build of an older commit) measured the same way in the same run, rounds interleaved.
//
// Needs root (the agent's netns, cgroups, eBPF). Run through `bash bench/run.sh services`;
// never a test. Other work on the machine moves CPU times little (they are the agent's own)
// but the API server's answers slower.
#include <fmt/format.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "test/lib/agent_process.h"
#include "test/lib/files.h"
#include "test/lib/kube_apiserver.h"
#include "test/lib/median.h"
#include "test/lib/proc_stats.h"
#include "test/lib/test_node.h"

namespace nodemesh::testing {
namespace {

using namespace std::chrono_literals;
using Json = nlohmann::json;

struct Settings {
  int services = 10'000;
  int events = 3'000;
  int rounds = 1;
  std::string before;  // another agent binary, measured beside this build's
};

constexpr int kNamespaces = 100;

// Service `i`: in one of kNamespaces namespaces, one cluster IP of 10.96.0.0/12, and the
// fields a Service applied with kubectl carries (labels, selector, ports, the last applied
// configuration), so that its JSON is the size of a real one.
Json ServiceObject(int i, const std::string& generation = "1") {
  const std::string name = fmt::format("svc-{}", i);
  const std::string ip = fmt::format("10.{}.{}.{}", 96 + i / 62'500, i / 250 % 250, i % 250 + 1);
  Json service = {
      {"apiVersion", "v1"},
      {"kind", "Service"},
      {"metadata",
       {{"namespace", fmt::format("team-{}", i % kNamespaces)},
        {"name", name},
        {"uid", fmt::format("0c7e4f1a-0000-4000-8000-{:012}", i)},
        {"labels", {{"app", name}, {"tier", "backend"}, {"generation", generation}}},
        {"annotations",
         {{"kubectl.kubernetes.io/last-applied-configuration",
           fmt::format(R"({{"apiVersion":"v1","kind":"Service","metadata":{{"labels":)"
                       R"({{"app":"{0}","tier":"backend"}},"name":"{0}","namespace":"team-{1}"}},)"
                       R"("spec":{{"ports":[{{"name":"http","port":80,"targetPort":8080}},)"
                       R"({{"name":"grpc","port":9090,"targetPort":9090}}],)"
                       R"("selector":{{"app":"{0}"}}}}}})",
                       name, i % kNamespaces)}}}}},
      {"spec",
       {{"type", "ClusterIP"},
        {"clusterIP", ip},
        {"clusterIPs", {ip}},
        {"ipFamilies", {"IPv4"}},
        {"ipFamilyPolicy", "SingleStack"},
        {"selector", {{"app", name}}},
        {"sessionAffinity", "None"},
        {"ports",
         {{{"name", "http"}, {"port", 80}, {"protocol", "TCP"}, {"targetPort", 8080}},
          {{"name", "grpc"}, {"port", 9090}, {"protocol", "TCP"}, {"targetPort", 9090}}}}}},
      {"status", {{"loadBalancer", Json::object()}}}};
  return service;
}

std::string ServicePath(int i) {
  return fmt::format("/api/v1/namespaces/team-{}/services/svc-{}", i % kNamespaces, i);
}

// Waits until `pid` has used less than 5 ms of CPU in each of two 300 ms spells: whatever
// it was doing (applying an inventory) is done.
void WaitForQuiet(pid_t pid, std::chrono::seconds timeout = 120s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  int quiet = 0;
  double last = ProcessCpuSeconds(pid);
  while (quiet < 2) {
    if (std::chrono::steady_clock::now() > deadline) {
      throw std::runtime_error("the agent did not go quiet in time");
    }
    std::this_thread::sleep_for(300ms);
    const double now = ProcessCpuSeconds(pid);
    quiet = now - last < 0.005 ? quiet + 1 : 0;
    last = now;
  }
}

// Whether the agent's Services watch has its first list.
bool ServicesListed(const AgentProcess& agent) {
  const std::optional<Json> stats = agent.TryGet("/stats");
  if (!stats || !stats->contains("kubernetes")) return false;
  return (*stats)["kubernetes"]["services"].value("synced", false);
}

uint64_t ServiceEvents(const AgentProcess& agent) {
  const std::optional<Json> stats = agent.TryGet("/stats");
  if (!stats || !stats->contains("kubernetes")) return 0;
  return (*stats)["kubernetes"]["services"].value("events", uint64_t{0});
}

struct Figures {
  double sync_seconds = 0;         // start to every Service listed and applied
  double rss_synced_mib = 0;       // then
  double cpu_ms_per_event = 0;     // the agent's, over the stream of events
  double server_ms_per_event = 0;  // the API server's (it must not be the bottleneck)
  double events_per_second = 0;    // the stream as the API server took it
  double rss_after_mib = 0;        // after the stream
};

class Cluster {
 public:
  explicit Cluster(const Settings& settings) : settings_(settings) {
    Json objects = Json::array();
    for (int i = 0; i < settings.services; ++i) {
      objects.push_back({{"group", ""}, {"resource", "services"}, {"object", ServiceObject(i)}});
    }
    WriteFile(seed_file_, Json{{"objects", objects}}.dump());
    api_.emplace(KubeApiServerOptions{.seed_file = seed_file_});
    api_->WriteKubeconfig(kubeconfig_, api_->IssueToken("nodemesh", "nodemesh-agent"));
  }

  pid_t server_pid() const { return api_->pid(); }

  Figures Measure(const std::string& binary) {
    Figures figures;
    const auto started = std::chrono::steady_clock::now();
    AgentProcess agent(node_,
                       AgentProcessOptions{
                           .binary = binary,
                           .workers = 1,
                           .inventory = {"--inventory", "kubernetes", "--kubeconfig", kubeconfig_},
                       });
    const pid_t pid = agent.process().pid();
    if (!PollUntil([&] { return ServicesListed(agent); }, 120s)) {
      throw std::runtime_error("the agent did not list the Services in time");
    }
    WaitForQuiet(pid);
    figures.sync_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    figures.rss_synced_mib = StatusKiB(pid, "VmRSS") / 1024.0;

    // Thirds: a new Service, a label of an existing one changed, the new one deleted again.
    const uint64_t events_before = ServiceEvents(agent);
    const double agent_before = ProcessCpuSeconds(pid);
    const double server_before = ProcessCpuSeconds(server_pid());
    const auto stream_started = std::chrono::steady_clock::now();
    const int cycles = settings_.events / 3;
    for (int c = 0; c < cycles; ++c) {
      const int fresh = settings_.services + c;
      const int existing = (c * 7919) % settings_.services;
      api_->Create(fmt::format("/api/v1/namespaces/team-{}/services", fresh % kNamespaces),
                   ServiceObject(fresh));
      api_->MergePatch(
          ServicePath(existing),
          {{"metadata", {{"labels", {{"generation", fmt::format("patched-{}", ++patches_)}}}}}});
      api_->Delete(ServicePath(fresh));
    }
    const double stream_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - stream_started).count();
    const uint64_t sent = static_cast<uint64_t>(cycles) * 3;
    if (!PollUntil([&] { return ServiceEvents(agent) >= events_before + sent; }, 600s)) {
      throw std::runtime_error(fmt::format("the agent saw {} of {} Service events",
                                           ServiceEvents(agent) - events_before, sent));
    }
    WaitForQuiet(pid);
    figures.cpu_ms_per_event = (ProcessCpuSeconds(pid) - agent_before) * 1e3 / sent;
    figures.server_ms_per_event = (ProcessCpuSeconds(server_pid()) - server_before) * 1e3 / sent;
    figures.events_per_second = sent / stream_seconds;
    figures.rss_after_mib = StatusKiB(pid, "VmRSS") / 1024.0;
    return figures;
  }

 private:
  const Settings& settings_;
  TempDir directory_;
  const std::string seed_file_ = directory_.path() + "/services.json";
  const std::string kubeconfig_ = directory_.path() + "/kubeconfig";
  std::optional<KubeApiServer> api_;
  PodNetwork network_;
  TestNode node_{network_, "node-a"};
  int patches_ = 0;
};

int Run(const Settings& settings) {
  if (::geteuid() != 0) throw std::runtime_error("needs root (netns, cgroups, eBPF)");
  fmt::print(stderr, "{} Services, {} events per agent, {} round(s)\n", settings.services,
             settings.events - settings.events % 3, settings.rounds);
  Cluster cluster(settings);
  struct Agent {
    std::string name, binary;
    std::vector<Figures> rounds;
  };
  std::vector<Agent> agents;
  if (!settings.before.empty()) agents.push_back({"before", settings.before, {}});
  agents.push_back({"this build", NODEMESH_AGENT_BINARY, {}});
  for (int round = 0; round < settings.rounds; ++round) {
    for (Agent& agent : agents) {
      fmt::print(stderr, "round {}: {} ({})\n", round + 1, agent.name, agent.binary);
      agent.rounds.push_back(cluster.Measure(agent.binary));
    }
  }
  const auto median = [](const Agent& agent, double Figures::*field) {
    std::vector<double> values;
    for (const Figures& figures : agent.rounds) values.push_back(figures.*field);
    return Median(values);
  };
  fmt::print("{:<12} {:>9} {:>12} {:>12} {:>12} {:>14} {:>10}\n", "agent", "sync s", "RSS MiB",
             "CPU ms/event", "RSS after", "server ms/ev", "events/s");
  for (const Agent& agent : agents) {
    fmt::print("{:<12} {:>9.1f} {:>12.1f} {:>12.3f} {:>12.1f} {:>14.2f} {:>10.0f}\n", agent.name,
               median(agent, &Figures::sync_seconds), median(agent, &Figures::rss_synced_mib),
               median(agent, &Figures::cpu_ms_per_event), median(agent, &Figures::rss_after_mib),
               median(agent, &Figures::server_ms_per_event),
               median(agent, &Figures::events_per_second));
  }
  if (agents.size() == 2) {
    fmt::print(
        "this build / before: CPU per event {:.3f}x, RSS {:.2f}x\n",
        median(agents[1], &Figures::cpu_ms_per_event) /
            median(agents[0], &Figures::cpu_ms_per_event),
        median(agents[1], &Figures::rss_synced_mib) / median(agents[0], &Figures::rss_synced_mib));
  }
  return 0;
}

}  // namespace
}  // namespace nodemesh::testing

int main(int argc, char** argv) {
  nodemesh::testing::Settings settings;
  CLI::App app{"The agent's memory and CPU per Service event with many Services", "services_bench"};
  app.option_defaults()->always_capture_default();
  app.add_option("--services", settings.services, "Services in the cluster")
      ->check(CLI::Range(1, 1'000'000));
  app.add_option("--events", settings.events,
                 "Service events per agent (creates, label updates, deletes, a third each)")
      ->check(CLI::Range(3, 1'000'000));
  app.add_option("--rounds", settings.rounds, "Interleaved repetitions; medians are reported")
      ->check(CLI::Range(1, 20));
  app.add_option("--before", settings.before,
                 "Another nodemesh-agent binary (e.g. a build of an older commit) to measure "
                 "beside this build's")
      ->check(CLI::ExistingFile);
  CLI11_PARSE(app, argc, argv);
  try {
    return nodemesh::testing::Run(settings);
  } catch (const std::exception& error) {
    fmt::print(stderr, "services_bench: {}\n", error.what());
    return 1;
  }
}
