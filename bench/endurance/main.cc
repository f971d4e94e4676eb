// endurance_bench: the endurance benchmark's flags, and the scenarios they ask for
// (endurance.h); or, run inside a pod by the benchmark, one of its clients (load_client.h).
#include <fmt/format.h>
#include <sys/resource.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <string>
#include <string_view>
#include <thread>

#include "bench/endurance/endurance.h"
#include "bench/endurance/load_client.h"

namespace nodemesh::testing::endurance {
namespace {

// Every part but peers and service (which compare rather than check) when none is named.
bool Wanted(const Settings& settings, std::string_view part) {
  return (settings.parts.empty() && part != "peers" && part != "service") ||
         std::find(settings.parts.begin(), settings.parts.end(), part) != settings.parts.end();
}

int Run(const Settings& settings) {
  if (::geteuid() != 0) {
    fmt::print(stderr, "endurance_bench needs root (netns, cgroups, eBPF): run it with sudo\n");
    return 2;
  }
  for (const std::string& part : settings.parts) {
    if (part != "concurrency" && part != "soak" && part != "churn" && part != "peers" &&
        part != "service") {
      fmt::print(stderr,
                 "endurance_bench: no part '{}': concurrency, soak, churn, peers or service\n",
                 part);
      return 2;
    }
  }
  // The client's descriptor, the agent's two, and room for the rest.
  const int most_peer_connections =
      *std::max_element(settings.peer_connections.begin(), settings.peer_connections.end());
  RaiseFileLimit(4 * static_cast<uint64_t>(std::max(settings.connections, most_peer_connections)) +
                 65536);
  rlimit limit{};
  getrlimit(RLIMIT_NOFILE, &limit);
  fmt::print("open files limit of the benchmark and its children: {}; {} CPUs\n", limit.rlim_max,
             std::thread::hardware_concurrency());
  std::fflush(stdout);
  if (Wanted(settings, "concurrency")) RunConcurrency(settings);
  if (Wanted(settings, "soak")) RunSoak(settings);
  if (Wanted(settings, "churn")) RunChurn(settings);
  if (Wanted(settings, "peers")) RunPeers(settings);
  if (Wanted(settings, "service")) RunService(settings);
  if (!Failures().empty()) {
    fmt::print("\n{} check(s) failed:\n", Failures().size());
    for (const std::string& failure : Failures()) fmt::print("  {}\n", failure);
    return 1;
  }
  fmt::print("\nall checks passed\n");
  return 0;
}

}  // namespace
}  // namespace nodemesh::testing::endurance

int main(int argc, char** argv) {
  using nodemesh::testing::endurance::ChurnClientOptions;
  using nodemesh::testing::endurance::ConcurrentClientOptions;
  nodemesh::testing::endurance::Settings settings;
  CLI::App app{"Endurance of the nodemesh agent: many connections, a long soak, pod churn",
               "endurance_bench"};
  app.option_defaults()->always_capture_default();
  app.add_option("--only", settings.parts,
                 "Parts to run: concurrency, soak, churn, peers, service; default all but peers "
                 "and service")
      ->delimiter(',');
  app.add_option("--workers", settings.workers, "The agent's worker threads")
      ->check(CLI::Range(1, 16));
  app.add_option("--connections", settings.connections, "Concurrency: connections open at once")
      ->check(CLI::Range(1, 200000));
  app.add_option("--requests-per-connection", settings.requests_per_connection,
                 "Concurrency: requests on each connection")
      ->check(CLI::Range(1, 1000));
  app.add_option("--concurrency-rounds", settings.concurrency_rounds,
                 "Concurrency: rounds on the same agent")
      ->check(CLI::Range(1, 10));
  app.add_flag("--beyond-file-limit", settings.beyond_file_limit,
               "Concurrency: open every connection asked for even past the agent's descriptor "
               "limit, to see what it does there (its checks then fail)");
  app.add_option("--soak-seconds", settings.soak_seconds, "Soak: duration")
      ->check(CLI::Range(10, 86400));
  app.add_option("--warmup-seconds", settings.warmup_seconds,
                 "Soak: memory growth is measured from this sample on")
      ->check(CLI::Range(0, 86400));
  app.add_option("--sample-seconds", settings.sample_seconds, "Soak: sampling interval")
      ->check(CLI::Range(1, 600));
  app.add_option("--soak-rate", settings.soak_rate, "Soak: requests per second")
      ->check(CLI::Range(1.0, 100000.0));
  app.add_option("--soak-requests-per-connection", settings.soak_requests_per_connection,
                 "Soak: requests before a connection is closed and replaced")
      ->check(CLI::Range(1, 100000));
  app.add_option("--soak-slots", settings.soak_slots, "Soak: connections open at a time")
      ->check(CLI::Range(1, 10000));
  app.add_option("--peer-connections", settings.peer_connections,
                 "Peers: counts of connections held by each proxy in turn")
      ->delimiter(',')
      ->check(CLI::Range(1, 50000));
  app.add_option("--peer-workers", settings.peer_workers, "Peers: the agent's worker threads")
      ->check(CLI::Range(1, 16));
  app.add_option("--peer-before", settings.peer_before,
                 "Peers: another nodemesh-agent binary (an older build), measured as 'before' "
                 "beside this build's agent")
      ->check(CLI::ExistingFile);
  app.add_option("--service-lookups", settings.service_lookups,
                 "Service: conntrack lookups timed, of each kind")
      ->check(CLI::Range(1, 10000000));
  app.add_option("--service-rate", settings.service_rate,
                 "Service: new connections per second through the agent")
      ->check(CLI::Range(1.0, 20000.0));
  app.add_option("--service-seconds", settings.service_seconds, "Service: duration of each load")
      ->check(CLI::Range(1, 3600));
  app.add_option("--service-rounds", settings.service_rounds,
                 "Service: rounds of a load to the Service then one to its pod")
      ->check(CLI::Range(1, 20));
  app.add_option("--churn-cycles", settings.churn_cycles, "Churn: enrol/release cycles")
      ->check(CLI::Range(1, 100000));
  app.add_option("--churn-rate", settings.churn_rate,
                 "Churn: requests per second each way, out of and into the churned pod")
      ->check(CLI::Range(1.0, 10000.0));
  app.add_option("--churn-slots", settings.churn_slots,
                 "Churn: connections open at a time each way")
      ->check(CLI::Range(1, 10000));
  app.add_option("--churn-requests-per-connection", settings.churn_requests_per_connection,
                 "Churn: requests before a connection is closed and replaced")
      ->check(CLI::Range(1, 100000));

  // The load itself, run by the benchmark inside a pod.
  ConcurrentClientOptions concurrent;
  CLI::App* concurrent_app =
      app.add_subcommand("client-concurrent", "(internal) many connections at once, in a pod");
  concurrent_app->add_option("--target", concurrent.target, "ip:port")->required();
  concurrent_app->add_option("--connections", concurrent.connections);
  concurrent_app->add_option("--requests", concurrent.requests);
  concurrent_app->add_option("--seed", concurrent.seed);
  concurrent_app->add_option("--phase-timeout", concurrent.phase_timeout_s)
      ->check(CLI::Range(1, 3600));
  ChurnClientOptions churn;
  CLI::App* churn_app = app.add_subcommand(
      "client-churn", "(internal) a steady rate with connection churn, in a pod");
  churn_app->add_option("--target", churn.target, "ip:port")->required();
  churn_app->add_option("--rate", churn.rate)->check(CLI::PositiveNumber);
  churn_app->add_option("--requests-per-connection", churn.requests_per_connection)
      ->check(CLI::Range(1, 100000));
  churn_app->add_option("--slots", churn.slots)->check(CLI::Range(1, 100000));
  churn_app->add_option("--seconds", churn.seconds)->check(CLI::Range(1, 86400));
  churn_app->add_option("--progress-seconds", churn.progress_seconds)->check(CLI::Range(1, 600));
  churn_app->add_option("--seed", churn.seed);
  CLI11_PARSE(app, argc, argv);
  try {
    if (*concurrent_app) return nodemesh::testing::endurance::RunConcurrentClient(concurrent);
    if (*churn_app) return nodemesh::testing::endurance::RunChurnClient(churn);
    return nodemesh::testing::endurance::Run(settings);
  } catch (const std::exception& error) {
    fmt::print(stderr, "endurance_bench: {}\n", error.what());
    return 1;
  }
}
