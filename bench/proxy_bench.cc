// Added latency and throughput of the agent, and the cost of L7 parsing: HTTP/1.1
// keep-alive requests from a client pod to nginx in a server pod of one simulated node,
// measured in one run in these scenarios, back to back:
//   direct         no proxy
//   outbound       the client pod meshed: one hop through the agent
//   same-node      both pods meshed, the agent as it runs by default: the call dialled
//                  straight into the server pod, one hop, watched as both pods see it
//   two-hop        both pods meshed, the agent with --same-node-direct=off: out of the
//                  client pod and into the server pod
//   outbound-l4    as outbound, with the agent's --l7 off (opaque TCP, no parsing)
//   outbound-tap   as outbound, with a local tap of the agent polled throughout (100 events/s)
//   haproxy-l4     the reference: HAProxy (one thread, mode tcp) in the client pod's netns,
//                  dialled explicitly on the pod's loopback, as the agent's outbound
//                  listener is: the same hop through a well-tuned userspace proxy
//   haproxy-http   as haproxy-l4 in mode http (parsing every request and response)
//   nginx-l4       the second reference: nginx (one worker, the stream module's proxy_pass)
//                  where HAProxy is, as HAProxy is run
//   nginx-http     as nginx-l4 with the http module's proxy_pass to an upstream with
//                  keep-alive, as nginx's documentation configures a reverse proxy
//   relay          the floor: nodemesh-relay (a blocking recv/send thread per direction)
//                  dialled as HAProxy is: what any userspace hop costs on the machine
// Each scenario is measured at a fixed rate (open loop: latency) and at saturation (closed
// loop: throughput) with nodemesh-loadgen. With --rounds N the scenarios run N times,
// interleaved, and the medians are reported, so that a slow spell of the machine does not
// land on one scenario only.
//
// Needs root (netns, cgroups, eBPF). Run through `bash bench/run.sh proxy`; never a test.
// Exits non-zero if any measurement had errors or the traffic did not take the expected
// path through the agent. Everything it creates (network, pods, nginx, agents, HAProxy,
// temporary files) is removed by the fixture's destructors, also on failure.
#include <fmt/format.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "test/lib/agent_process.h"
#include "test/lib/files.h"
#include "test/lib/peers.h"
#include "test/lib/median.h"
#include "test/lib/proc_stats.h"
#include "test/lib/process.h"
#include "test/lib/test_node.h"

namespace nodemesh::testing {
namespace {

using namespace std::chrono_literals;

constexpr uint16_t kServerPort = 8080;

struct Settings {
  double rate = 2000;
  int rate_connections = 4;
  int saturate_connections = 8;
  std::string duration = "10s";
  int rounds = 1;
  int workers = 1;
  // CPUs for the load generator, nginx and the agent ("0", "1", "0,1"), or empty: unpinned.
  std::string loadgen_cpus, nginx_cpus, agent_cpus;
  // The machine is shared: a load during which other processes used more than this much
  // CPU (in CPUs, averaged over the load) is run again, up to `retries` times.
  double max_interference = 0.1;
  int retries = 2;
  // Scenarios to run besides "direct", the baseline, which always runs; empty: all.
  std::vector<std::string> scenarios;
  bool grpc = false;           // the gRPC scenarios instead of the HTTP/1 ones
  int settle_timeout_s = 120;  // waiting for the machine to be quiet before each load
};

struct Scenario {
  std::string name;
  bool client_meshed = false;
  bool server_meshed = false;
  bool l7 = true;
  std::string haproxy_mode{};  // "tcp" or "http": HAProxy instead of the agent
  std::string nginx_mode{};    // "stream" or "http": nginx instead of the agent
  bool relay = false;          // nodemesh-relay instead of the agent
  bool tap = false;            // a local tap of the agent's polled throughout (TapPoller)
  int hops = 0;
  // Both pods meshed: the agent dials the server straight (one hop) or, off, out of the
  // client's listener and into the server's (two).
  bool same_node_direct = true;
};

// Where the client pod dials HAProxy, nginx or the relay.
constexpr std::string_view kBaselineListen = "127.0.0.1:15001";

// One nodemesh-loadgen run, as it reported it.
struct LoadResult {
  uint64_t requests = 0;
  uint64_t errors = 0;
  double rps = 0;
  double duration = 0;  // measured seconds, after the warm-up
  double p50 = 0, p90 = 0, p99 = 0, p999 = 0, max = 0;
  double interference = 0;  // CPUs used by processes other than the benchmark's meanwhile
  // CPU time per request of the proxy (the agent, all hops; HAProxy; nginx's master and worker;
  // the relay) and of the server, over the whole run.
  double proxy_cpu_us = 0;
  double server_cpu_us = 0;
};

struct Measurement {
  LoadResult rate;
  LoadResult saturate;
};

// argv prefixed with taskset when `cpus` is set.
std::vector<std::string> Pinned(const std::string& cpus, std::vector<std::string> argv) {
  if (!cpus.empty()) argv.insert(argv.begin(), {"taskset", "-c", cpus});
  return argv;
}

// A whole nginx.conf for one nginx of the benchmark, the server or the proxy: one worker, its
// files under `root`, `modules` (load_module lines) before and `body` (its http or stream
// block) after the settings both share.
std::string NginxConf(const std::string& root, std::string_view modules, std::string_view body) {
  return fmt::format(R"({0}
master_process on;
worker_processes 1;
user root;
error_log {1}/error.log warn;
pid {1}/nginx.pid;
events {{ worker_connections 4096; }}
{2}
)",
                     modules, root, body);
}

Process StartNginx(const Pod& server, const Pod& client, const std::string& dir,
                   const Settings& settings) {
  const std::string root = dir + "/nginx";
  // The smallest answer nginx can give, with keep-alive that outlasts every run: what is
  // measured is the path between the pods, not the server's work.
  const std::string conf = NginxConf(root, "",
                                     fmt::format(R"(http {{
  access_log off;
  default_type text/plain;
  {2}
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  server {{
    listen {0}:{1};
    location / {{ return 200 "ok\n"; }}
  }}
}})",
                                                 server.ip, kServerPort, NginxTempPaths(root)));
  return testing::StartNginx(server, client, root, conf,
                             fmt::format("http://{}:{}/", server.ip, kServerPort),
                             Pinned(settings.nginx_cpus, {}));
}

// CPU time in microseconds: of the whole machine (user and system, without interrupts,
// which are charged to no process), of a cgroup, and of a process with all its threads.
double MachineCpuUs() {
  std::istringstream stat(ReadFile("/proc/stat"));
  std::string cpu;
  uint64_t user = 0, nice = 0, system = 0;
  stat >> cpu >> user >> nice >> system;
  return static_cast<double>(user + nice + system) * 1e6 /
         static_cast<double>(sysconf(_SC_CLK_TCK));
}

double CgroupCpuUs(const std::string& cgroup_dir) {
  std::istringstream stat(ReadFile(cgroup_dir + "/cpu.stat"));
  std::string key;
  uint64_t value = 0;
  while (stat >> key >> value) {
    if (key == "usage_usec") return static_cast<double>(value);
  }
  return 0;
}

double ProcessCpuUs(pid_t pid) { return ProcessCpuSeconds(pid) * 1e6; }

// What the benchmark's own processes use: the pods (load generator, nginx) and the proxy.
struct CpuMeter {
  const Pod& client;
  const Pod& server;
  // The agent, HAProxy, nginx's processes or the relay (outside the pods' cgroups); none direct.
  std::vector<pid_t> proxy;
  std::string target;  // what the load generator dials

  double ProxyUs() const {
    double us = 0;
    for (const pid_t pid : proxy) us += ProcessCpuUs(pid);
    return us;
  }
  // CPUs used by everything else between two calls.
  struct Mark {
    double machine_us, client_us, server_us, proxy_us;
    std::chrono::steady_clock::time_point at;
    double ours_us() const { return client_us + server_us + proxy_us; }
  };
  Mark Now() const {
    return {MachineCpuUs(), CgroupCpuUs(client.cgroup_dir), CgroupCpuUs(server.cgroup_dir),
            ProxyUs(), std::chrono::steady_clock::now()};
  }
  static double Others(const Mark& from, const Mark& to) {
    const double wall_us = std::chrono::duration<double, std::micro>(to.at - from.at).count();
    return std::max(0.0, (to.machine_us - from.machine_us) - (to.ours_us() - from.ours_us())) /
           wall_us;
  }
};

// Waits (boundedly) until the machine is quiet, so that a load starts on idle CPUs.
void Settle(const CpuMeter& meter, const Settings& settings) {
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(settings.settle_timeout_s);
  while (std::chrono::steady_clock::now() < deadline) {
    const CpuMeter::Mark before = meter.Now();
    std::this_thread::sleep_for(2s);
    const double others = CpuMeter::Others(before, meter.Now());
    if (others <= settings.max_interference) return;
    fmt::print(stderr, "    waiting: other processes use {:.2f} CPUs\n", others);
  }
}

LoadResult RunLoad(const Pod& client, const std::string& target, const Settings& settings,
                   bool saturate) {
  std::vector<std::string> argv = {
      NODEMESH_LOADGEN_BINARY,
      "--target",
      target,
      "--duration",
      settings.duration,
      "--connections",
      std::to_string(saturate ? settings.saturate_connections : settings.rate_connections)};
  if (saturate) {
    argv.push_back("--saturate");
  } else {
    argv.insert(argv.end(), {"--rate", fmt::format("{}", settings.rate)});
  }
  const CommandResult result =
      client.RunCommand(Pinned(settings.loadgen_cpus, argv), 120s);  // loads end by themselves
  std::optional<nlohmann::json> report;
  std::istringstream lines(result.output);
  for (std::string line; std::getline(lines, line);) {
    if (line.starts_with("{")) report = nlohmann::json::parse(line, nullptr, false);
  }
  if (result.exit_code != 0 || !report || report->is_discarded()) {
    throw std::runtime_error(fmt::format("nodemesh-loadgen failed (exit {}{}):\n{}",
                                         result.exit_code, result.timed_out ? ", timed out" : "",
                                         result.output));
  }
  LoadResult load;
  load.requests = (*report)["requests"];
  load.errors = (*report)["errors"];
  load.rps = (*report)["rps"];
  load.p50 = (*report)["p50"];
  load.p90 = (*report)["p90"];
  load.p99 = (*report)["p99"];
  load.p999 = (*report)["p999"];
  load.max = (*report)["max"];
  load.duration = (*report)["duration"];
  if (load.errors > 0) {
    throw std::runtime_error(fmt::format("{} errors: {}", load.errors, report->dump()));
  }
  return load;
}

// A load, run again while other processes disturbed it (up to settings.retries times); the
// least disturbed run is kept. `run` makes one load, after its warm-up of 1 s, and says how
// many requests it answered and over how long; `label` names it in the progress lines.
template <typename RunOnce>
LoadResult MeasureWith(const CpuMeter& meter, const Settings& settings, std::string_view label,
                       const RunOnce& run) {
  std::optional<LoadResult> best;
  for (int attempt = 0; attempt <= settings.retries; ++attempt) {
    Settle(meter, settings);
    const CpuMeter::Mark before = meter.Now();
    LoadResult load = run();
    const CpuMeter::Mark after = meter.Now();
    load.interference = CpuMeter::Others(before, after);
    // The loads run at the measured rate through their warm-up too.
    const double requests = load.rps * (load.duration + 1);
    load.proxy_cpu_us = (after.proxy_us - before.proxy_us) / requests;
    load.server_cpu_us = (after.server_us - before.server_us) / requests;
    fmt::print(stderr,
               "    {} p50 {:.1f} p99 {:.1f} p99.9 {:.1f} us, {:.0f} req/s; CPU per request: "
               "proxy {:.1f} us, server {:.1f} us; others {:.2f} CPUs\n",
               label, load.p50, load.p99, load.p999, load.rps, load.proxy_cpu_us,
               load.server_cpu_us, load.interference);
    if (!best || load.interference < best->interference) best = load;
    if (load.interference <= settings.max_interference) break;
  }
  return *best;
}

LoadResult MeasureLoad(const CpuMeter& meter, const Settings& settings, bool saturate) {
  return MeasureWith(meter, settings, saturate ? "saturate" : "rate    ",
                     [&] { return RunLoad(meter.client, meter.target, settings, saturate); });
}

// Waits until nginx answers through the baseline proxy the client pod dials.
void WaitUntilServing(const Pod& client, const Process& proxy, std::string_view name) {
  const std::string probe = fmt::format("http://{}/", kBaselineListen);
  const bool up = PollUntil(
      [&] {
        return client.RunCommand({"curl", "-sS", "--max-time", "2", "-o", "/dev/null", probe}, 10s)
                   .exit_code == 0;
      },
      20s, 100ms);
  if (!up) throw std::runtime_error(fmt::format("{} did not start: {}", name, proxy.output()));
}

// HAProxy as the reference hop: one thread, in the client pod's netns (not its cgroup, so
// that its CPU is measured apart from the load generator's), forwarding to nginx.
Process StartHaproxy(const Pod& client, const Pod& server, const std::string& mode,
                     const std::string& dir, const Settings& settings) {
  const std::string config = dir + "/haproxy-" + mode + ".cfg";
  WriteFile(config, fmt::format(R"(global
  nbthread 1
  maxconn 4096
defaults
  mode {0}
  timeout connect 5s
  timeout client 300s
  timeout server 300s
listen bench
  bind {1}
  server nginx {2}:{3}
)",
                                mode, kBaselineListen, server.ip, kServerPort));
  Process haproxy(Pinned(settings.agent_cpus, {"haproxy", "-db", "-f", config}),
                  {.netns_path = client.netns_path});
  WaitUntilServing(client, haproxy, "haproxy");
  return haproxy;
}

// nginx as the second reference hop, run as HAProxy is (in the client pod's netns, outside its
// cgroup), with one worker as HAProxy has one thread. Its conf, pid, error log and temporary
// files are kept under `dir`.
Process StartNginxProxy(const Pod& client, const Pod& server, const std::string& mode,
                        const std::string& dir, const Settings& settings) {
  const std::string root = dir + "/nginx-" + mode;
  std::filesystem::create_directories(root + "/tmp");
  // Debian ships the stream module apart from nginx (libnginx-mod-stream), loaded on demand.
  constexpr std::string_view kStreamModule = "/usr/lib/nginx/modules/ngx_stream_module.so";
  if (mode == "stream" && !std::filesystem::exists(kStreamModule)) {
    throw std::runtime_error(
        fmt::format("nginx-l4 needs {} (Debian's libnginx-mod-stream: bash test/install-deps.sh)",
                    kStreamModule));
  }
  // In http, keep-alive as long as the server nginx's on both sides of the hop, so that no
  // connection is closed during a run (nginx closes one after 1,000 requests by default,
  // HAProxy never). The upstream keeps as many idle connections as the load generator
  // opens, so that no request waits for a new connection to the server once all are open.
  const std::string body =
      mode == "stream"
          ? fmt::format(R"(stream {{
  server {{
    listen {0};
    proxy_pass {1}:{2};
    proxy_timeout 300s;
  }}
}})",
                        kBaselineListen, server.ip, kServerPort)
          : fmt::format(R"(http {{
  access_log off;
  {3}
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  upstream backend {{
    server {1}:{2};
    keepalive {4};
    keepalive_requests 100000000;
    keepalive_timeout 300s;
  }}
  server {{
    listen {0};
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}})",
                        kBaselineListen, server.ip, kServerPort, NginxTempPaths(root),
                        std::max(settings.rate_connections, settings.saturate_connections));
  WriteFile(
      root + "/nginx.conf",
      NginxConf(root, mode == "stream" ? fmt::format("load_module {};", kStreamModule) : "", body));
  Process nginx(Pinned(settings.agent_cpus, {"nginx", "-p", root, "-e", root + "/error.log", "-c",
                                             root + "/nginx.conf", "-g", "daemon off;"}),
                {.netns_path = client.netns_path});
  WaitUntilServing(client, nginx, "nginx");
  return nginx;
}

// The processes nginx's master started (its worker), whose CPU is the proxy's with the master's.
std::vector<pid_t> ChildrenOf(pid_t pid) {
  std::istringstream children(ReadFile(fmt::format("/proc/{0}/task/{0}/children", pid)));
  std::vector<pid_t> pids;
  for (pid_t child = 0; children >> child;) pids.push_back(child);
  return pids;
}

// The relay, the floor of a userspace hop, where HAProxy would be.
Process StartRelay(const Pod& client, const Pod& server, const Settings& settings) {
  Process relay(
      Pinned(settings.agent_cpus, {NODEMESH_RELAY_BINARY, "--listen", std::string(kBaselineListen),
                                   "--to", fmt::format("{}:{}", server.ip, kServerPort)}),
      {.netns_path = client.netns_path});
  WaitUntilServing(client, relay, "nodemesh-relay");
  return relay;
}

// A local tap of the agent's, as `meshctl shell`'s tap takes one: its admin API's GET /tap of
// every request, at most kTapRps events a second, polled five times a second on a thread of its
// own from construction to destruction. What the agent spends on it (matching each request,
// the rate limit, the events, the admin API's answers) is in the agent's CPU.
class TapPoller {
 public:
  static constexpr double kTapRps = 100;

  explicit TapPoller(const AgentProcess& agent)
      : started_(std::chrono::steady_clock::now()), thread_([this, &agent] { Poll(agent); }) {}
  ~TapPoller() {
    stop_ = true;
    thread_.join();
  }
  TapPoller(const TapPoller&) = delete;
  TapPoller& operator=(const TapPoller&) = delete;

  // Events taken, and how many a second since construction.
  uint64_t events() const { return events_; }
  double events_per_second() const {
    return static_cast<double>(events_) /
           std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
  }
  uint64_t failed_polls() const { return failed_; }

 private:
  void Poll(const AgentProcess& agent) {
    const std::string path = fmt::format("/tap?session=bench&max_rps={}", kTapRps);
    while (!stop_) {
      if (const std::optional<nlohmann::json> batch = agent.TryGet(path)) {
        events_ += (*batch)["events"].size();
      } else {
        ++failed_;
      }
      std::this_thread::sleep_for(200ms);
    }
  }

  const std::chrono::steady_clock::time_point started_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> events_{0}, failed_{0};
  std::thread thread_;  // last: it reads the members above
};

void StopAgent(AgentProcess& agent) {
  const std::optional<ExitStatus> status = agent.Stop();
  if (!status || !status->ok()) {
    throw std::runtime_error("the agent did not stop cleanly:\n" + agent.output());
  }
}

// nginx's workers, each with its start time: they must be gone with their master at the end.
using NginxWorkers = std::vector<std::pair<pid_t, std::optional<unsigned long long>>>;

// nginx's master ends its worker on SIGTERM and waits for it; a worker that outlived its
// master (killed after the grace) is ended here, by its pid.
void StopNginx(Process& master, const NginxWorkers& workers) {
  master.Kill(5s);
  bool orphaned = false;
  for (const auto& [worker, started] : workers) {
    if (started && ProcessStartTime(worker) == started) {
      ::kill(worker, SIGKILL);
      orphaned = true;
    }
  }
  if (orphaned) throw std::runtime_error("nginx's worker outlived its master");
}

Measurement RunScenario(TestNode& node, const Pod& client, const Pod& server,
                        const Scenario& scenario, const Settings& settings,
                        const std::string& scratch) {
  // Each agent writes its inventory into its own directory, which goes with it: the node
  // is pointed back at a file of ours before the pods' flags change for the next one.
  node.WriteInventory(scratch + "/pods.json");
  node.SetMeshed(client, scenario.client_meshed);
  node.SetMeshed(server, scenario.server_meshed);
  std::unique_ptr<AgentProcess> agent;
  std::optional<Process> baseline;  // HAProxy, nginx or the relay
  // nginx's worker, with its start time: it must be gone with its master at the end.
  NginxWorkers workers;
  CpuMeter meter{client, server, {}, Target(server, kServerPort)};
  if (!scenario.haproxy_mode.empty() || !scenario.nginx_mode.empty() || scenario.relay) {
    if (scenario.relay) {
      baseline = StartRelay(client, server, settings);
    } else if (!scenario.nginx_mode.empty()) {
      baseline = StartNginxProxy(client, server, scenario.nginx_mode, scratch, settings);
    } else {
      baseline = StartHaproxy(client, server, scenario.haproxy_mode, scratch, settings);
    }
    meter.proxy = {baseline->pid()};
    if (!scenario.nginx_mode.empty()) {
      for (const pid_t worker : ChildrenOf(baseline->pid())) {
        meter.proxy.push_back(worker);
        workers.emplace_back(worker, ProcessStartTime(worker));
      }
      if (workers.empty()) throw std::runtime_error("nginx serves without a worker process");
    }
    meter.target = kBaselineListen;
  } else if (scenario.hops > 0) {
    agent = std::make_unique<AgentProcess>(
        node,
        AgentProcessOptions{.binary = NODEMESH_AGENT_BINARY,
                            .log_level = "warning",
                            .workers = settings.workers,
                            .extra_args = {"--l7", scenario.l7 ? "on" : "off", "--same-node-direct",
                                           scenario.same_node_direct ? "on" : "off"}});
    if (scenario.server_meshed && !agent->WaitForInboundPort(server, kServerPort)) {
      throw std::runtime_error("the agent did not capture the server's port:\n" + agent->output());
    }
    if (!settings.agent_cpus.empty()) {
      const CommandResult pinned = RunCommand({"taskset", "-a", "-p", "-c", settings.agent_cpus,
                                               std::to_string(agent->process().pid())});
      if (pinned.exit_code != 0) throw std::runtime_error("taskset: " + pinned.output);
    }
    meter.proxy = {agent->process().pid()};
  }
  Measurement measurement;
  try {
    std::optional<TapPoller> tap;
    if (scenario.tap) tap.emplace(*agent);
    measurement.rate = MeasureLoad(meter, settings, /*saturate=*/false);
    measurement.saturate = MeasureLoad(meter, settings, /*saturate=*/true);
    if (tap) {
      fmt::print(stderr, "    tap: {} events, {:.1f} a second, {} failed polls\n", tap->events(),
                 tap->events_per_second(), tap->failed_polls());
      if (tap->events() == 0) throw std::runtime_error("the tap took no event");
    }
  } catch (const std::exception& error) {
    if (!agent) throw;
    throw std::runtime_error(
        fmt::format("{}: {}\nagent /stats: {}\nagent output:\n{}", scenario.name, error.what(),
                    agent->TryGet("/stats").value_or(nullptr).dump(), agent->output()));
  }
  if (agent) {
    // The traffic took the path the scenario names: every connection intercepted on the
    // way out (and in, through the inbound listener or dialled straight into the server),
    // and parsed into requests only with L7 on.
    const nlohmann::json proxy = agent->Get("/stats")["proxy"];
    fmt::print(stderr, "    agent: {}\n", proxy.dump());
    const uint64_t connections = settings.rate_connections + settings.saturate_connections;
    const uint64_t inbound = proxy["accepted_inbound"], direct = proxy["same_node_direct"];
    const bool into_server = !scenario.server_meshed ||
                             (scenario.same_node_direct ? direct >= connections && inbound == 0
                                                        : inbound >= connections && direct == 0);
    const bool intercepted =
        proxy["accepted_outbound"].get<uint64_t>() >= connections && into_server;
    const uint64_t parsed = proxy["requests"];
    const bool parsing_as_asked =
        scenario.l7 ? parsed >= measurement.rate.requests : parsed == 0 && proxy["http1"] == 0;
    if (!intercepted || !parsing_as_asked) {
      throw std::runtime_error(
          fmt::format("{}: the traffic did not take the expected path through the agent: {}",
                      scenario.name, proxy.dump()));
    }
    StopAgent(*agent);
  }
  if (!workers.empty()) StopNginx(*baseline, workers);
  return measurement;
}

// The medians over rounds of one scenario.
struct Summary {
  double p50 = 0, p99 = 0, p999 = 0, rps = 0;
  double proxy_cpu_us = 0, server_cpu_us = 0;  // per request, at the fixed rate
  double interference = 0;  // CPUs other processes used during its loads (the worse of two)
};

Summary Summarize(const std::vector<Measurement>& rounds) {
  const auto median = [&](auto field) {
    std::vector<double> values;
    for (const Measurement& m : rounds) values.push_back(field(m));
    return Median(values);
  };
  return {median([](const Measurement& m) { return m.rate.p50; }),
          median([](const Measurement& m) { return m.rate.p99; }),
          median([](const Measurement& m) { return m.rate.p999; }),
          median([](const Measurement& m) { return m.saturate.rps; }),
          median([](const Measurement& m) { return m.rate.proxy_cpu_us; }),
          median([](const Measurement& m) { return m.rate.server_cpu_us; }),
          median([](const Measurement& m) {
            return std::max(m.rate.interference, m.saturate.interference);
          })};
}

// The simulated node of every scenario: a client and a server pod, unmeshed until a scenario
// meshes them, and a scratch directory for the proxies' files.
struct BenchNode {
  PodNetwork network;
  TestNode node{network, "bench"};
  const Pod& client = node.AddPod(
      {.namespace_name = "bench", .name = "client-1", .owner_name = "client", .meshed = false});
  const Pod& server = node.AddPod(
      {.namespace_name = "bench", .name = "server-1", .owner_name = "server", .meshed = false});
  TempDir scratch;
};

std::string LoadAverage() {
  std::string text = ReadFile("/proc/loadavg");
  return text.substr(0, text.find(' ', text.find(' ', text.find(' ') + 1) + 1));
}

// ---- gRPC at the fixed rate (--grpc) ----
//
// Unary calls to test/e2e/grpc_peer.py's Echo service (python3-grpcio) in the server pod, made
// by h2load (HTTP/2 without TLS, one call at a time on each connection) at the fixed rate over
// --rate-connections connections, in these scenarios, interleaved over --rounds:
//   grpc-direct    no proxy
//   grpc-outbound  the client pod meshed: the agent parses HTTP/2 and gRPC
//   grpc-haproxy   HAProxy `mode http` speaking HTTP/2 on both sides (`proto h2`), one thread
//   grpc-nginx     nginx's grpc_pass to an upstream with keep-alive, one worker
// HAProxy and nginx are dialled on the client pod's loopback as in the HTTP/1 scenarios. What
// is compared is the proxy's CPU per call; h2load reports no latency percentiles.

constexpr uint16_t kGrpcPort = 50051;
constexpr std::string_view kGrpcPath = "/nodemesh.e2e.Echo/Unary";

struct GrpcScenario {
  std::string name;
  enum class Proxy { kNone, kAgent, kHaproxy, kNginx } proxy = Proxy::kNone;
};

// h2load's command line for one load from the client pod to `target`, posting `body` (a gRPC
// message with its 5-byte prefix) as the call.
std::vector<std::string> H2load(const std::string& target, const std::string& body,
                                std::vector<std::string> load) {
  std::vector<std::string> argv = {
      "h2load", "-m",          "1", "-d", body, "-H", "content-type: application/grpc",
      "-H",     "te: trailers"};
  argv.insert(argv.end(), load.begin(), load.end());
  argv.push_back(fmt::format("http://{}{}", target, kGrpcPath));
  return argv;
}

// The counts of h2load's "requests: T total, S started, D done, OK succeeded, F failed, E
// errored, X timeout" line, or nullopt if it printed none.
struct H2loadCounts {
  uint64_t total = 0, succeeded = 0;
};
std::optional<H2loadCounts> H2loadCountsOf(const std::string& output) {
  std::istringstream lines(output);
  for (std::string line; std::getline(lines, line);) {
    unsigned long long total = 0, started = 0, done = 0, succeeded = 0;
    if (std::sscanf(line.c_str(), "requests: %llu total, %llu started, %llu done, %llu succeeded",
                    &total, &started, &done, &succeeded) == 4) {
      return H2loadCounts{total, succeeded};
    }
  }
  return std::nullopt;
}

LoadResult RunGrpcLoad(const Pod& client, const std::string& target, const std::string& body,
                       const Settings& settings) {
  const int connections = settings.rate_connections;
  const std::vector<std::string> argv = H2load(
      target, body,
      {"-c", std::to_string(connections), "--rps", fmt::format("{}", settings.rate / connections),
       "-D", settings.duration, "--warm-up-time", "1s"});
  const CommandResult result = client.RunCommand(Pinned(settings.loadgen_cpus, argv), 120s);
  const std::optional<H2loadCounts> counts = H2loadCountsOf(result.output);
  double finished_s = 0;
  std::istringstream lines(result.output);
  for (std::string line; std::getline(lines, line);) {
    std::sscanf(line.c_str(), "finished in %lfs", &finished_s);
  }
  if (result.exit_code != 0 || !counts || finished_s <= 1) {
    throw std::runtime_error(
        fmt::format("h2load failed (exit {}):\n{}", result.exit_code, result.output));
  }
  if (counts->succeeded != counts->total) {
    throw std::runtime_error(fmt::format("{} of {} gRPC calls failed:\n{}",
                                         counts->total - counts->succeeded, counts->total,
                                         result.output));
  }
  LoadResult load;
  load.requests = counts->succeeded;
  load.duration = finished_s - 1;  // h2load's time includes the warm-up
  load.rps = static_cast<double>(load.requests) / load.duration;
  return load;
}

// Waits until one call through `target` (the server, or a proxy dialled on the loopback)
// succeeds.
void WaitUntilServingGrpc(const Pod& client, const std::string& target, const std::string& body,
                          Process& server, std::string_view name) {
  const bool up = PollUntil(
      [&] {
        const std::optional<H2loadCounts> counts =
            H2loadCountsOf(client.RunCommand(H2load(target, body, {"-n", "1"}), 10s).output);
        return counts && counts->succeeded == 1;
      },
      30s, 200ms);
  if (!up) throw std::runtime_error(fmt::format("{} does not serve: {}", name, server.output()));
}

Process StartGrpcHaproxy(const Pod& client, const Pod& server, const std::string& dir,
                         const std::string& body, const Settings& settings) {
  const std::string config = dir + "/haproxy-grpc.cfg";
  WriteFile(config, fmt::format(R"(global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 300s
  timeout server 300s
listen bench
  bind {0} proto h2
  server grpc {1}:{2} proto h2
)",
                                kBaselineListen, server.ip, kGrpcPort));
  Process haproxy(Pinned(settings.agent_cpus, {"haproxy", "-db", "-f", config}),
                  {.netns_path = client.netns_path});
  WaitUntilServingGrpc(client, std::string(kBaselineListen), body, haproxy, "haproxy");
  return haproxy;
}

Process StartGrpcNginx(const Pod& client, const Pod& server, const std::string& dir,
                       const std::string& body, const Settings& settings) {
  const std::string root = dir + "/nginx-grpc";
  std::filesystem::create_directories(root + "/tmp");
  WriteFile(root + "/nginx.conf",
            NginxConf(root, "",
                      fmt::format(R"(http {{
  access_log off;
  {3}
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  upstream grpc_backend {{
    server {1}:{2};
    keepalive {4};
    keepalive_requests 100000000;
    keepalive_timeout 300s;
  }}
  server {{
    listen {0} http2;
    location / {{ grpc_pass grpc://grpc_backend; }}
  }}
}})",
                                  kBaselineListen, server.ip, kGrpcPort, NginxTempPaths(root),
                                  settings.rate_connections)));
  Process nginx(Pinned(settings.agent_cpus, {"nginx", "-p", root, "-e", root + "/error.log", "-c",
                                             root + "/nginx.conf", "-g", "daemon off;"}),
                {.netns_path = client.netns_path});
  WaitUntilServingGrpc(client, std::string(kBaselineListen), body, nginx, "nginx");
  return nginx;
}

LoadResult RunGrpcScenario(TestNode& node, const Pod& client, const Pod& server,
                           const GrpcScenario& scenario, const std::string& body,
                           const Settings& settings, const std::string& scratch) {
  using Proxy = GrpcScenario::Proxy;
  node.WriteInventory(scratch + "/pods.json");
  node.SetMeshed(client, scenario.proxy == Proxy::kAgent);
  std::unique_ptr<AgentProcess> agent;
  std::optional<Process> baseline;
  NginxWorkers workers;
  CpuMeter meter{client, server, {}, Target(server, kGrpcPort)};
  if (scenario.proxy == Proxy::kAgent) {
    agent =
        std::make_unique<AgentProcess>(node, AgentProcessOptions{.binary = NODEMESH_AGENT_BINARY,
                                                                 .log_level = "warning",
                                                                 .workers = settings.workers});
    meter.proxy = {agent->process().pid()};
  } else if (scenario.proxy != Proxy::kNone) {
    baseline = scenario.proxy == Proxy::kHaproxy
                   ? StartGrpcHaproxy(client, server, scratch, body, settings)
                   : StartGrpcNginx(client, server, scratch, body, settings);
    meter.proxy = {baseline->pid()};
    for (const pid_t worker : ChildrenOf(baseline->pid())) {
      meter.proxy.push_back(worker);
      workers.emplace_back(worker, ProcessStartTime(worker));
    }
    meter.target = kBaselineListen;
  }
  const LoadResult load = MeasureWith(meter, settings, "rate    ", [&] {
    return RunGrpcLoad(client, meter.target, body, settings);
  });
  if (agent) {
    // Every call went through the agent and was parsed as HTTP/2.
    const nlohmann::json proxy = agent->Get("/stats")["proxy"];
    fmt::print(stderr, "    agent: {}\n", proxy.dump());
    if (proxy["http2"].get<uint64_t>() < static_cast<uint64_t>(settings.rate_connections) ||
        proxy["requests"].get<uint64_t>() < load.requests) {
      throw std::runtime_error(fmt::format("{}: the calls were not parsed by the agent: {}",
                                           scenario.name, proxy.dump()));
    }
    StopAgent(*agent);
  }
  if (!workers.empty()) StopNginx(*baseline, workers);
  return load;
}

int RunGrpc(const Settings& settings) {
  using Proxy = GrpcScenario::Proxy;
  const std::vector<GrpcScenario> scenarios = {{"grpc-direct", Proxy::kNone},
                                               {"grpc-outbound", Proxy::kAgent},
                                               {"grpc-haproxy", Proxy::kHaproxy},
                                               {"grpc-nginx", Proxy::kNginx}};
  fmt::print(
      "gRPC unary calls at {} calls/s over {} connections (h2load), {} each after 1 s of "
      "warm-up; {} round(s); agent --workers {}\n",
      settings.rate, settings.rate_connections, settings.duration, settings.rounds,
      settings.workers);
  fmt::print("load average before: {}\n", LoadAverage());
  std::fflush(stdout);

  BenchNode bench;
  TestNode& node = bench.node;
  const Pod& client = bench.client;
  const Pod& server = bench.server;
  const TempDir& scratch = bench.scratch;
  // One call: "hello, world!" behind gRPC's prefix (uncompressed, 13 bytes).
  const std::string body = scratch.path() + "/call.bin";
  WriteFile(body, std::string("\0\0\0\0\x0dhello, world!", 18));
  Process grpc_server =
      server.Run(Pinned(settings.nginx_cpus, {kPython, "-u", SourcePath("test/e2e/grpc_peer.py"),
                                              "server", "--listen", Target(server, kGrpcPort)}));
  WaitUntilServingGrpc(client, Target(server, kGrpcPort), body, grpc_server, "the gRPC server");

  std::vector<std::vector<double>> cpu(scenarios.size()), rps(scenarios.size());
  for (int round = 0; round < settings.rounds; ++round) {
    for (size_t i = 0; i < scenarios.size(); ++i) {
      fmt::print(stderr, "round {}: {}\n", round + 1, scenarios[i].name);
      const LoadResult load =
          RunGrpcScenario(node, client, server, scenarios[i], body, settings, scratch.path());
      cpu[i].push_back(load.proxy_cpu_us);
      rps[i].push_back(load.rps);
    }
  }
  fmt::print("load average after: {}\n\n", LoadAverage());
  const double haproxy = Median(cpu[2]), nginx = Median(cpu[3]);
  fmt::print("{:<14} {:>10} {:>14} {:>16} {:>11} {:>9}\n", "scenario", "calls/s", "proxy CPU",
             "vCPU per 1,000", "vs HAProxy", "vs nginx");
  fmt::print("{:<14} {:>10} {:>14} {:>16} {:>11} {:>9}\n", "", "", "us/call", "calls/s", "", "");
  for (size_t i = 0; i < scenarios.size(); ++i) {
    const double us = Median(cpu[i]);
    const bool proxied = scenarios[i].proxy != Proxy::kNone;
    fmt::print("{:<14} {:>10.0f} {:>14} {:>16} {:>11} {:>9}\n", scenarios[i].name, Median(rps[i]),
               proxied ? fmt::format("{:.1f}", us) : "",
               proxied ? fmt::format("{:.4f}", us / 1000) : "",
               proxied ? fmt::format("{:.2f}x", us / haproxy) : "",
               proxied ? fmt::format("{:.2f}x", us / nginx) : "");
  }
  fmt::print(
      "\nMedians over {} round(s), each load's figures on stderr. CPU per call: the proxy's "
      "(the agent; HAProxy; nginx's master and worker) over the load, warm-up included; vCPU "
      "per 1,000 calls/s = us/call / 1,000.\n",
      settings.rounds);
  return 0;
}

int Run(const Settings& settings) {
  if (::geteuid() != 0) {
    fmt::print(stderr, "proxy_bench needs root (netns, cgroups, eBPF): run it with sudo\n");
    return 2;
  }
  std::vector<Scenario> scenarios = {
      {.name = "direct", .hops = 0},
      {.name = "outbound", .client_meshed = true, .hops = 1},
      {.name = "same-node", .client_meshed = true, .server_meshed = true, .hops = 1},
      {.name = "two-hop",
       .client_meshed = true,
       .server_meshed = true,
       .hops = 2,
       .same_node_direct = false},
      {.name = "outbound-l4", .client_meshed = true, .l7 = false, .hops = 1},
      {.name = "outbound-tap", .client_meshed = true, .tap = true, .hops = 1},
      {.name = "haproxy-l4", .haproxy_mode = "tcp", .hops = 1},
      {.name = "haproxy-http", .haproxy_mode = "http", .hops = 1},
      {.name = "nginx-l4", .nginx_mode = "stream", .hops = 1},
      {.name = "nginx-http", .nginx_mode = "http", .hops = 1},
      {.name = "relay", .relay = true, .hops = 1},
  };
  for (const std::string& name : settings.scenarios) {
    if (std::none_of(scenarios.begin(), scenarios.end(),
                     [&](const Scenario& s) { return s.name == name; })) {
      fmt::print(stderr, "proxy_bench: no scenario '{}'; see --help for the list\n", name);
      return 2;
    }
  }
  if (!settings.scenarios.empty()) {
    std::erase_if(scenarios, [&](const Scenario& s) {
      return s.name != "direct" && std::find(settings.scenarios.begin(), settings.scenarios.end(),
                                             s.name) == settings.scenarios.end();
    });
  }
  fmt::print(
      "rate: {} req/s over {} connections; saturation: {} connections; {} each after 1 s of "
      "warm-up; {} round(s); agent --workers {}; CPUs: loadgen {}, server {}, proxy {}\n",
      settings.rate, settings.rate_connections, settings.saturate_connections, settings.duration,
      settings.rounds, settings.workers,
      settings.loadgen_cpus.empty() ? "any" : settings.loadgen_cpus,
      settings.nginx_cpus.empty() ? "any" : settings.nginx_cpus,
      settings.agent_cpus.empty() ? "any" : settings.agent_cpus);
  fmt::print("load average before: {}\n", LoadAverage());
  std::fflush(stdout);  // before the progress lines on stderr

  BenchNode bench;
  TestNode& node = bench.node;
  const Pod& client = bench.client;
  const Pod& server = bench.server;
  const TempDir& scratch = bench.scratch;
  Process nginx = StartNginx(server, client, scratch.path(), settings);

  std::vector<std::vector<Measurement>> results(scenarios.size());
  for (int round = 0; round < settings.rounds; ++round) {
    for (size_t i = 0; i < scenarios.size(); ++i) {
      fmt::print(stderr, "round {}: {}\n", round + 1, scenarios[i].name);
      results[i].push_back(
          RunScenario(node, client, server, scenarios[i], settings, scratch.path()));
    }
  }
  fmt::print("load average after: {}\n\n", LoadAverage());

  const Summary direct = Summarize(results[0]);
  fmt::print("{:<12} {:>8} {:>8} {:>9} {:>12} {:>12} {:>9} {:>7} {:>13} {:>10} {:>7}\n", "scenario",
             "p50 us", "p99 us", "p99.9 us", "+p50 us/hop", "+p99 us/hop", "sat. rps", "vs dir.",
             "proxy CPU us", "server CPU", "others");
  fmt::print("{:<12} {:>8} {:>8} {:>9} {:>12} {:>12} {:>9} {:>7} {:>13} {:>10} {:>7}\n", "", "", "",
             "", "", "", "", "", "per req/hop", "us/req", "CPUs");
  for (size_t i = 0; i < scenarios.size(); ++i) {
    const Summary s = Summarize(results[i]);
    const int hops = scenarios[i].hops;
    const auto per_hop = [&](double value) {
      return hops ? fmt::format("{:+.1f}", value / hops) : std::string();
    };
    fmt::print(
        "{:<12} {:>8.1f} {:>8.1f} {:>9.1f} {:>12} {:>12} {:>9.0f} {:>6.0f}% {:>13} {:>10.1f} "
        "{:>7.2f}\n",
        scenarios[i].name, s.p50, s.p99, s.p999, per_hop(s.p50 - direct.p50),
        per_hop(s.p99 - direct.p99), s.rps, 100 * s.rps / direct.rps,
        hops ? fmt::format("{:.1f}", s.proxy_cpu_us / hops) : std::string(), s.server_cpu_us,
        s.interference);
  }
  fmt::print(
      "\nLatency at the fixed rate, throughput at saturation; medians over {} round(s), each "
      "load's figures on stderr. CPU per request: at the fixed rate, warm-up included. "
      "'others': CPUs used by processes outside the benchmark during the loads (median of each "
      "round's worse load); a load above {:.2f} was run again, up to {} times.\n",
      settings.rounds, settings.max_interference, settings.retries);
  return 0;
}

}  // namespace
}  // namespace nodemesh::testing

int main(int argc, char** argv) {
  nodemesh::testing::Settings settings;
  CLI::App app{"Added latency and throughput of the nodemesh agent versus direct", "proxy_bench"};
  app.option_defaults()->always_capture_default();
  app.add_option("--rate", settings.rate, "Open-loop rate, requests/s")->check(CLI::PositiveNumber);
  app.add_option("--rate-connections", settings.rate_connections, "Connections at the fixed rate")
      ->check(CLI::Range(1, 1000));
  app.add_option("--saturate-connections", settings.saturate_connections,
                 "Connections at saturation")
      ->check(CLI::Range(1, 1000));
  app.add_option("--duration", settings.duration, "Measured time of each load, after 1 s warm-up");
  app.add_option("--rounds", settings.rounds, "Interleaved repetitions; medians are reported")
      ->check(CLI::Range(1, 20));
  app.add_option("--workers", settings.workers, "The agent's worker threads")
      ->check(CLI::Range(1, 16));
  app.add_option("--loadgen-cpus", settings.loadgen_cpus, "taskset CPU list of the load generator");
  app.add_option("--nginx-cpus", settings.nginx_cpus, "taskset CPU list of the server nginx");
  app.add_option("--agent-cpus", settings.agent_cpus,
                 "taskset CPU list of the agent (or HAProxy, nginx as proxy, or the relay)");
  app.add_option("--max-interference", settings.max_interference,
                 "CPUs other processes may use during a load before it is run again");
  app.add_option(
         "--scenarios", settings.scenarios,
         "Scenarios besides direct (always run): outbound, same-node, two-hop, outbound-l4, "
         "outbound-tap, haproxy-l4, haproxy-http, nginx-l4, nginx-http, relay; default all")
      ->delimiter(',');
  app.add_flag("--grpc", settings.grpc,
               "Instead of the HTTP/1 scenarios, gRPC unary calls at the fixed rate (h2load): "
               "grpc-direct, grpc-outbound (the agent), grpc-haproxy (HTTP/2 mode), grpc-nginx "
               "(grpc_pass); the proxy's CPU per call");
  app.add_option("--retries", settings.retries, "Runs again of a disturbed load")
      ->check(CLI::Range(0, 20));
  app.add_option("--settle-timeout", settings.settle_timeout_s,
                 "Seconds to wait for a quiet machine before each load")
      ->check(CLI::Range(0, 3600));
  CLI11_PARSE(app, argc, argv);
  try {
    return settings.grpc ? nodemesh::testing::RunGrpc(settings) : nodemesh::testing::Run(settings);
  } catch (const std::exception& error) {
    fmt::print(stderr, "proxy_bench: {}\n", error.what());
    return 1;
  }
}
