// Endurance of the agent on one simulated node: what it costs and whether it stays whole
// when it runs long, holds many connections, and sees pods come and go. The scenarios, a
// file each:
//
//   concurrency.cc  N keep-alive HTTP/1.1 connections (default 10,000) open at once from a
//                   meshed client pod through the agent to nginx in an unmeshed server pod,
//                   each carrying a few requests whose answers are checked byte for byte;
//                   the agent's resident memory before, with all of them open, and after
//                   they closed, so the memory a connection costs; twice, so that what a
//                   first round leaves behind is told apart from what every round adds.
//   descriptor_limit.cc  the connections fitted to the agent's descriptor limit, and with
//                   --beyond-file-limit, the concurrency run past it: what the agent does
//                   there (its CPU, its log, whether its admin API answers).
//   soak.cc         a steady request rate with connections opened and closed all the time
//                   (default 10 minutes), the agent's and the aggregator's memory and the
//                   agent's descriptors sampled every 5 s; then the requests sent against the
//                   requests the agent counted, and the growth after a warm-up.
//   peers.cc        (only when asked for) the memory of a proxied connection, idle and
//                   active, in the agent against HAProxy and nginx holding the same
//                   connections in the same hop, for a few counts of connections.
//   service.cc      (only when asked for) the conntrack lookup of a connection dialled to a
//                   Service's cluster IP: its time alone, and the agent's CPU per new
//                   connection to a Service against to its pod, at a fixed rate.
//   churn.cc        a pod enrolled and released (default 1,000 times) by rewriting the
//                   inventory, as `meshctl inject` does on a local cluster, while it dials
//                   out and is dialled; every connection must complete, proxied or direct;
//                   then the agent's listeners, its kernel map entries, programs and links,
//                   the pod's cgroup attachments, identities and descriptors against before.
//
// The traffic is made by this same binary run inside the pods (load_client.h). main.cc
// reads the flags and runs the scenarios asked for; this header holds what they share.
//
// Needs root (netns, cgroups, eBPF). Run through `bash bench/run.sh endurance`; never a
// test (the kernel tier runs it shorter, as endurance_kernel_test). Exits 1 when a check
// fails (a request lost or answered wrong, sent != counted, an entry, a listener or a
// descriptor left behind), 2 on bad usage. Everything it creates is removed by the
// fixture's destructors, also on failure. One thread.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "bench/endurance/load_client.h"
#include "test/lib/agent_process.h"
#include "test/lib/files.h"
#include "test/lib/process.h"
#include "test/lib/test_node.h"

namespace nodemesh::testing::endurance {

// The flags (main.cc): each scenario reads its own.
struct Settings {
  std::vector<std::string> parts;  // empty: all
  int workers = 2;
  // concurrency
  int connections = 10000;
  int requests_per_connection = 4;
  int concurrency_rounds = 2;
  // Run every connection asked for even when the agent's descriptors cannot hold them, to
  // see what it does at its limit (the checks then fail).
  bool beyond_file_limit = false;
  // soak
  int soak_seconds = 600;
  int warmup_seconds = 60;
  int sample_seconds = 5;
  double soak_rate = 500;
  int soak_requests_per_connection = 10;
  int soak_slots = 16;
  // peers
  std::vector<int> peer_connections = {1000, 5000};
  int peer_workers = 1;  // as HAProxy runs one thread and nginx one worker
  std::string peer_before;  // another agent binary, measured beside this build's ("before")
  // service
  int service_lookups = 10000;
  double service_rate = 1000;  // new connections per second
  int service_seconds = 10;
  int service_rounds = 2;
  // churn
  int churn_cycles = 1000;
  double churn_rate = 200;
  int churn_requests_per_connection = 5;
  int churn_slots = 8;
};

// The scenarios. Each makes its own node, records what fails with Check, and stops its agent.
void RunConcurrency(const Settings& settings);
void RunSoak(const Settings& settings);
void RunChurn(const Settings& settings);
void RunPeers(const Settings& settings);
void RunService(const Settings& settings);

// ---- the descriptor limit (descriptor_limit.cc) ----

// Raises this process's open files limit, hard and soft, to `wanted` (at least the hard
// limit it has, at most the system's nr_open); without the privilege to, the soft limit to
// the hard one. Every child (nginx, the clients, the agent) inherits it, and the agent
// raises its soft limit to the hard one: so the hard limit set here is the agent's.
void RaiseFileLimit(uint64_t wanted);
// The connections of a concurrency round: settings.connections, or as many as the agent's
// descriptors hold beside what it holds idle (saying so), unless settings.beyond_file_limit.
// Waits until the agent is idle first.
uint64_t ConnectionsThatFit(const Settings& settings, const AgentProcess& agent, pid_t agent_pid);
// What the agent does past its limit once the connections are open: its CPU since
// `agent_cpu_before` over `open_seconds`, its descriptors, its admin API, its log.
void ReportAtDescriptorLimit(const AgentProcess& agent, pid_t agent_pid, double agent_cpu_before,
                             double open_seconds, size_t descriptors);

// ---- what the scenarios share (endurance.cc) ----

// Records a failed check (and prints it at once); the exit status is 1 when there are any.
void Check(bool ok, const std::string& what);
const std::vector<std::string>& Failures();

// Where nginx listens in the server pods.
inline constexpr uint16_t kServerPort = 8080;
// nginx in `server` answering every request with its own path (so each answer can be
// checked against its request), keeping connections as long as any scenario runs; its
// files in `dir`. Returns once `prober` gets an answer.
Process StartNginxAnsweringPaths(const Pod& server, const Pod& prober, const std::string& dir);

// One simulated node with a meshed client pod and an unmeshed server pod running
// StartNginxAnsweringPaths: where the concurrency and soak scenarios send their load.
struct ClientServerNode {
  PodNetwork network;
  TestNode node{network, "endurance"};
  const Pod& client = node.AddPod(
      {.namespace_name = "bench", .name = "client-1", .owner_name = "client", .meshed = true});
  const Pod& server = node.AddPod(
      {.namespace_name = "bench", .name = "server-1", .owner_name = "server", .meshed = false});
  TempDir scratch;
  Process nginx = StartNginxAnsweringPaths(server, client, scratch.path());
};

// The agent of `node` with the benchmark's settings (workers, log level warning).
std::unique_ptr<AgentProcess> StartAgent(TestNode& node, const Settings& settings,
                                         std::vector<std::string> extra_args = {});
// This binary, which the pods run as their clients.
std::string SelfBinary();

// Waits for a client to end by itself and returns its totals; throws with its output if
// it does not.
ClientTotals FinishClient(Process& client, std::chrono::milliseconds timeout);
// Waits until a client says `line`; throws with its output if it ends or does not in time.
void WaitForLine(Process& client, std::string_view line, std::chrono::seconds timeout);

// A counter of the agent's /stats "proxy".
uint64_t ProxyStat(const AgentProcess& agent, const char* name);
// Waits until the agent holds no proxied connection (bounded), then a little more, so
// that what the workers free on their next turns is freed.
void WaitUntilIdle(const AgentProcess& agent);
// Responses the agent's registry holds over all routes (updated once a second).
uint64_t RegistryResponses(const AgentProcess& agent);

// A process's memory and descriptors now.
struct Memory {
  uint64_t rss_kib = 0;
  uint64_t hwm_kib = 0;
  size_t fds = 0;
};
Memory MemoryOf(pid_t pid);
double MiB(uint64_t kib);
// Lines of `text` that contain `needle`.
int64_t CountLinesWith(const std::string& text, std::string_view needle);

}  // namespace nodemesh::testing::endurance
