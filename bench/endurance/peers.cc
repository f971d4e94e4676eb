// The peers scenario (endurance.h): the memory a proxied connection costs in the agent against
// HAProxy and nginx holding the same connections in the same hop. For each count of
// connections, the three proxies one after the other, each started afresh:
//
//   agent    the client pod meshed, one worker: client -> agent (outbound) -> server pod
//   before   as agent, with another agent binary (--peer-before: an older build), when given
//   agent-l4 as agent with --l7 off (no protocol parser): what parsing adds to a connection
//   haproxy  HAProxy `mode http`, one thread, in the client pod's netns on its loopback
//   nginx    nginx `proxy_pass` to an upstream with keep-alive, one worker, as HAProxy is
//
// HAProxy and nginx are run as bench/proxy_bench.cc runs them (the hop the agent's outbound
// listener makes), with keep-alive long enough to hold every connection through the run and
// nginx's upstream keeping as many idle connections as the client opens, so that each
// proxy may hold a server connection per client connection as the agent does.
//
// The client (load_client.h) opens every connection with one request answered and holds them
// idle ("idle": what the proxy holds then, against before the client started, once every
// connection has been idle longer than the agent's quiet spell), then sends its
// remaining requests on all of them at once ("active": the proxy's peak, VmHWM, over that
// exchange, as every connection then has a request in flight or just answered). RSS and PSS
// are summed over the proxy's processes (nginx's master and worker); the kernel's socket
// buffers are in neither and are shown apart, as the machine's TCP memory (sockstat).
#include "test/lib/peers.h"

#include <fmt/format.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "bench/endurance/endurance.h"
#include "test/lib/proc_stats.h"

namespace nodemesh::testing::endurance {
namespace {

using namespace std::chrono_literals;

// Where the client pod dials HAProxy and nginx: its loopback, as the agent's listener is.
constexpr std::string_view kPeerListen = "127.0.0.1:15001";
// How long every proxy holds the connections idle before its idle memory is read: past the
// agent's quiet spell (--quiet-after, 10 s by default), after which an idle connection gives
// back what it keeps for its next request.
constexpr auto kIdleSpell = 11s;

// A value in KiB of /proc/<pid>/smaps_rollup ("Pss": the process's share of the pages it
// maps, each shared page divided among its mappers); 0 if it cannot be read.
uint64_t SmapsRollupKiB(pid_t pid, std::string_view key) {
  std::ifstream rollup(fmt::format("/proc/{}/smaps_rollup", pid));
  for (std::string line; std::getline(rollup, line);) {
    if (line.starts_with(key) && line.size() > key.size() && line[key.size()] == ':') {
      return std::stoull(line.substr(key.size() + 1));
    }
  }
  return 0;
}

// The machine's TCP socket memory (/proc/net/sockstat "TCP: ... mem N", in pages), in KiB:
// buffers the kernel holds for every socket, charged to no process.
uint64_t TcpSocketKiB() {
  std::ifstream sockstat("/proc/net/sockstat");
  for (std::string line; std::getline(sockstat, line);) {
    if (!line.starts_with("TCP:")) continue;
    const size_t at = line.find(" mem ");
    if (at == std::string::npos) return 0;
    return std::stoull(line.substr(at + 5)) * static_cast<uint64_t>(::sysconf(_SC_PAGESIZE)) / 1024;
  }
  return 0;
}

// A proxy's memory now, summed over its processes.
struct ProxyMemory {
  uint64_t rss_kib = 0, pss_kib = 0, hwm_kib = 0;
  size_t fds = 0;
  uint64_t tcp_kib = 0;  // the machine's, not the proxy's
};

ProxyMemory ProxyMemoryOf(const std::vector<pid_t>& pids) {
  ProxyMemory memory{.tcp_kib = TcpSocketKiB()};
  for (const pid_t pid : pids) {
    memory.rss_kib += StatusKiB(pid, "VmRSS");
    memory.hwm_kib += StatusKiB(pid, "VmHWM");
    memory.pss_kib += SmapsRollupKiB(pid, "Pss");
    memory.fds += DescriptorCount(pid);
  }
  return memory;
}

// Waits until nginx in the server pod answers through a peer listening on kPeerListen.
void WaitUntilServing(const Pod& client, Process& peer, std::string_view name) {
  const std::string probe = fmt::format("http://{}/probe", kPeerListen);
  const bool up = PollUntil(
      [&] {
        return client.RunCommand({"curl", "-sS", "--max-time", "2", "-o", "/dev/null", probe}, 10s)
                   .exit_code == 0;
      },
      20s, 100ms);
  if (!up) throw std::runtime_error(fmt::format("{} did not start: {}", name, peer.output()));
}

// HAProxy `mode http`, one thread, with room for every connection (maxconn counts a client
// connection with its server side; HAProxy sizes its descriptors from it) and keep-alive that
// outlasts the run on both sides.
Process StartHaproxy(const Pod& client, const Pod& server, const std::string& dir,
                     uint64_t connections) {
  const std::string config = dir + "/haproxy-peers.cfg";
  WriteFile(config, fmt::format(R"(global
  nbthread 1
  maxconn {0}
defaults
  mode http
  maxconn {0}
  timeout connect 5s
  timeout client 3600s
  timeout server 3600s
  timeout http-keep-alive 3600s
listen bench
  bind {1}
  server nginx {2}:{3}
)",
                                connections + 1000, kPeerListen, server.ip, kServerPort));
  Process haproxy({"haproxy", "-db", "-f", config}, {.netns_path = client.netns_path});
  WaitUntilServing(client, haproxy, "haproxy");
  return haproxy;
}

// nginx `proxy_pass` to an upstream keeping up to `connections` idle connections, one worker.
Process StartNginxProxy(const Pod& client, const Pod& server, const std::string& dir,
                        uint64_t connections) {
  const std::string root = dir + "/nginx-peers";
  std::filesystem::create_directories(root + "/tmp");
  WriteFile(root + "/nginx.conf",
            fmt::format(R"(
master_process on;
worker_processes 1;
worker_rlimit_nofile {5};
user root;
error_log {0}/error.log warn;
pid {0}/nginx.pid;
events {{ worker_connections {5}; multi_accept on; }}
http {{
  access_log off;
  {4}
  keepalive_requests 100000000;
  keepalive_timeout 3600s;
  upstream backend {{
    server {2}:{3};
    keepalive {6};
    keepalive_requests 100000000;
    keepalive_timeout 3600s;
  }}
  server {{
    listen {1} backlog=8192;
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
)",
                        root, kPeerListen, server.ip, kServerPort, NginxTempPaths(root),
                        2 * connections + 1000, connections));
  Process nginx({"nginx", "-p", root, "-e", root + "/error.log", "-c", root + "/nginx.conf", "-g",
                 "daemon off;"},
                {.netns_path = client.netns_path});
  WaitUntilServing(client, nginx, "nginx");
  return nginx;
}

// nginx's master and the worker it started.
std::vector<pid_t> WithChildren(pid_t pid) {
  std::vector<pid_t> pids = {pid};
  std::istringstream children(ReadFile(fmt::format("/proc/{0}/task/{0}/children", pid)));
  for (pid_t child = 0; children >> child;) pids.push_back(child);
  return pids;
}

struct PeerRun {
  std::string proxy;
  uint64_t connections = 0;
  ProxyMemory before{}, idle{}, active{};
  ClientTotals client{};
};

// One proxy holding `n` connections: started, measured, stopped.
PeerRun MeasureProxy(ClientServerNode& bench, const std::string& proxy, uint64_t n,
                     const Settings& settings) {
  // The previous agent's inventory went with it: the node is pointed back at a file of ours.
  bench.node.WriteInventory(bench.scratch.path() + "/pods.json");
  const bool is_agent = proxy.starts_with("agent") || proxy == "before";
  bench.node.SetMeshed(bench.client, is_agent);
  std::unique_ptr<AgentProcess> agent;
  std::optional<Process> peer;
  std::vector<pid_t> pids;
  std::string target;
  if (is_agent) {
    agent = std::make_unique<AgentProcess>(
        bench.node, AgentProcessOptions{
                        .binary = proxy == "before" ? settings.peer_before : NODEMESH_AGENT_BINARY,
                        .log_level = "warning",
                        .workers = settings.peer_workers,
                        .extra_args = {"--l7", proxy == "agent-l4" ? "off" : "on"}});
    pids = {agent->process().pid()};
    target = Target(bench.server, kServerPort);
    WaitUntilIdle(*agent);
  } else {
    peer = proxy == "haproxy"
               ? StartHaproxy(bench.client, bench.server, bench.scratch.path(), n)
               : StartNginxProxy(bench.client, bench.server, bench.scratch.path(), n);
    pids = WithChildren(peer->pid());
    target = std::string(kPeerListen);
    std::this_thread::sleep_for(1s);  // the probe's connection gone
  }
  PeerRun run{.proxy = proxy, .connections = n, .before = ProxyMemoryOf(pids)};
  Process load = bench.client.Run({SelfBinary(), "client-concurrent", "--target", target,
                                   "--connections", std::to_string(n), "--requests",
                                   std::to_string(settings.requests_per_connection)});
  WaitForLine(load, "all-open", 900s);
  // Past the quiet spell; also what the proxy frees on its next turns is freed by then.
  std::this_thread::sleep_for(kIdleSpell);
  run.idle = ProxyMemoryOf(pids);
  load.Signal(SIGUSR1);
  WaitForLine(load, "exchanged", 900s);
  run.active = ProxyMemoryOf(pids);
  if (agent) {
    Check(ProxyStat(*agent, "active") >= n,
          fmt::format("peers: the agent held {} connections, not {}", ProxyStat(*agent, "active"),
                      n));
  }
  load.Signal(SIGUSR1);
  run.client = FinishClient(load, 120s);
  Check(run.client.connections_completed == n &&
            run.client.responses_ok == n * static_cast<uint64_t>(settings.requests_per_connection),
        fmt::format("peers: {} with {} connections: {} completed, {} answered right, {} corrupted",
                    proxy, n, run.client.connections_completed, run.client.responses_ok,
                    run.client.responses_corrupted));
  if (agent) {
    const std::optional<ExitStatus> status = agent->Stop();
    Check(status && status->ok(), "peers: the agent did not stop cleanly");
  } else {
    peer->Kill(5s);
  }
  return run;
}

double PerConnection(uint64_t now_kib, uint64_t before_kib, uint64_t n) {
  return (static_cast<double>(now_kib) - static_cast<double>(before_kib)) / static_cast<double>(n);
}

}  // namespace

void RunPeers(const Settings& settings) {
  fmt::print(
      "\n== peers: the memory of a proxied connection in the agent (--workers {}), HAProxy "
      "mode http (one thread) and nginx proxy_pass (one worker), holding {} connections ==\n",
      settings.peer_workers, fmt::join(settings.peer_connections, ", "));
  std::fflush(stdout);  // before the progress lines on stderr
  ClientServerNode bench;
  std::vector<PeerRun> runs;
  for (const int n : settings.peer_connections) {
    for (const std::string proxy : {"agent", "before", "agent-l4", "haproxy", "nginx"}) {
      if (proxy == "before" && settings.peer_before.empty()) continue;
      fmt::print(stderr, "peers: {} holding {} connections\n", proxy, n);
      runs.push_back(MeasureProxy(bench, proxy, static_cast<uint64_t>(n), settings));
    }
  }
  fmt::print("\n{:>8} {:>11} {:>8} {:>8} {:>10} {:>10} {:>10} {:>10} {:>11} {:>7} {:>7}\n", "proxy",
             "connections", "RSS", "RSS", "idle RSS", "idle PSS", "active", "active", "kernel TCP",
             "fds", "fds");
  fmt::print("{:>8} {:>11} {:>8} {:>8} {:>10} {:>10} {:>10} {:>10} {:>11} {:>7} {:>7}\n", "", "",
             "before", "idle", "KiB/conn", "KiB/conn", "RSS KiB/c", "HWM KiB/c", "KiB/c idle",
             "before", "idle");
  fmt::print("{:>8} {:>11} {:>8} {:>8}\n", "", "", "MiB", "MiB");
  for (const PeerRun& r : runs) {
    const uint64_t n = r.connections;
    fmt::print(
        "{:>8} {:>11} {:>8.1f} {:>8.1f} {:>10.2f} {:>10.2f} {:>10.2f} {:>10.2f} {:>11.2f} {:>7} "
        "{:>7}\n",
        r.proxy, n, MiB(r.before.rss_kib), MiB(r.idle.rss_kib),
        PerConnection(r.idle.rss_kib, r.before.rss_kib, n),
        PerConnection(r.idle.pss_kib, r.before.pss_kib, n),
        PerConnection(r.active.rss_kib, r.before.rss_kib, n),
        PerConnection(r.active.hwm_kib, r.before.rss_kib, n),
        PerConnection(r.idle.tcp_kib, r.before.tcp_kib, n), r.before.fds, r.idle.fds);
  }
  fmt::print(
      "\nKiB/conn = (the proxy's memory then - its RSS or PSS before the client) / connections, "
      "summed over its processes. idle: every connection open with one request answered; "
      "active: after {} more requests on every connection at once (RSS then, and the peak, "
      "VmHWM, over the exchange). kernel TCP: the machine's TCP socket memory (sockstat), in "
      "no process's RSS.\n",
      settings.requests_per_connection - 1);
  // What a proxy sets aside when started for more connections (nginx's connection and event
  // arrays are sized by worker_connections) is in its RSS before the client: the difference
  // between two counts' RSS with all open takes it in.
  const auto [fewest, most] =
      std::minmax_element(settings.peer_connections.begin(), settings.peer_connections.end());
  if (*fewest == *most) return;
  fmt::print("\nfrom {} to {} connections, per added connection (KiB):\n", *fewest, *most);
  for (const PeerRun& small : runs) {
    if (small.connections != static_cast<uint64_t>(*fewest)) continue;
    for (const PeerRun& large : runs) {
      if (large.proxy != small.proxy || large.connections != static_cast<uint64_t>(*most)) {
        continue;
      }
      const uint64_t added = large.connections - small.connections;
      fmt::print("{:>8}: idle RSS {:.2f}, idle PSS {:.2f}, active peak (HWM) {:.2f}\n", small.proxy,
                 PerConnection(large.idle.rss_kib, small.idle.rss_kib, added),
                 PerConnection(large.idle.pss_kib, small.idle.pss_kib, added),
                 PerConnection(large.active.hwm_kib, small.active.hwm_kib, added));
    }
  }
}

}  // namespace nodemesh::testing::endurance
