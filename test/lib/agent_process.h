// The real nodemesh-agent binary, run for one simulated node (test_node.h) by the kernel
// and end-to-end tests, with a client for its admin API.
//
//   AgentProcess agent(node, {.binary = NODEMESH_AGENT_BINARY});  // returns once enrolled
//   client.Run(...);
//   CHECK(agent.ProxyCounter("accepted_outbound") == 1);
//
// The constructor writes the node's inventory into a fresh temporary directory (the node
// keeps it current from then on, so SetMeshed reaches the agent), starts the agent with
// --cgroup-root at the node's subtree and an admin socket in that directory, and waits
// until /pods shows every meshed pod of the node enrolled. The destructor stops the agent
// (if still running) and removes the directory.
#pragma once

#include <chrono>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "test/lib/process.h"
#include "test/lib/test_node.h"

namespace nodemesh::testing {

struct HttpReply {
  int status = 0;
  std::string body;
};

struct AgentProcessOptions {
  std::string binary{};  // path of nodemesh-agent
  std::string log_level = "info";
  int workers = 2;
  std::vector<std::string> extra_args{};  // appended to the command line
  // Empty: the node's local inventory file, kept current by the node. Otherwise the
  // arguments naming the source instead ({"--inventory", "kubernetes", "--kubeconfig", ...}):
  // the agent is then ready once its admin API answers.
  std::vector<std::string> inventory{};
  // A command the agent runs under, e.g. {"unshare", "--cgroup"}: empty, none.
  std::vector<std::string> launcher{};
  // Bounds the wait for the admin API and for every meshed pod to be enrolled.
  std::chrono::milliseconds ready_timeout{std::chrono::seconds(30)};
};

class AgentProcess {
 public:
  // Throws std::runtime_error, with the agent's output, if it exits or is not ready in time.
  AgentProcess(TestNode& node, AgentProcessOptions options);
  ~AgentProcess();
  AgentProcess(const AgentProcess&) = delete;
  AgentProcess& operator=(const AgentProcess&) = delete;

  const std::string& inventory_path() const { return inventory_path_; }
  const std::string& admin_socket() const { return admin_socket_; }
  Process& process() { return *process_; }
  std::string output() const { return process_->output(); }

  // GET `path` on the admin API and parse the JSON body; nullopt if the agent does not
  // answer (not started, or gone) or the answer is not 200 with JSON.
  std::optional<nlohmann::json> TryGet(std::string_view path) const;
  // The same, but throws std::runtime_error when there is no answer.
  nlohmann::json Get(std::string_view path) const;

  // Where the agent serves /metrics, /readyz and /healthz ("127.0.0.1:PORT": tests start
  // it on any free loopback port), from its log; throws if it has not said so within 10s.
  std::string metrics_address();
  // GET `path` there; nullopt if nothing answers.
  std::optional<HttpReply> GetMetricsPort(std::string_view path);
  // One counter of /stats: "proxy" (accepted_outbound, upstream_refused, ...) or "kernel"
  // (redirected_ipv4, inbound_steered, ...). Throws if the agent does not answer.
  uint64_t ProxyCounter(std::string_view name) const;
  uint64_t KernelCounter(std::string_view name) const;

  // Polls /pods until `pod` is enrolled (or released, for enrolled = false).
  bool WaitUntilEnrolled(const Pod& pod, bool enrolled = true,
                         std::chrono::milliseconds timeout = std::chrono::seconds(20)) const;
  // Polls /pods until `pod` is captured inbound on <its ip>:`port`, or on
  // [<its ip6>]:`port` with `ipv6` (the agent finds a pod's listening ports once a second).
  bool WaitForInboundPort(const Pod& pod, uint16_t port,
                          std::chrono::milliseconds timeout = std::chrono::seconds(20),
                          bool ipv6 = false) const;

  // SIGTERM, then waits for a clean exit (SIGKILL after `grace`). The agent's exit status.
  std::optional<ExitStatus> Stop(std::chrono::milliseconds grace = std::chrono::seconds(10));
  // SIGKILL, as when the agent crashes; waits until it is reaped.
  void Kill();

 private:
  bool AllMeshedPodsEnrolled() const;
  std::optional<nlohmann::json> FindPod(const Pod& pod) const;
  void RemoveDirectory() noexcept;

  TestNode& node_;
  std::string directory_;
  std::string inventory_path_;
  std::string admin_socket_;
  std::optional<Process> process_;  // always set once constructed
};

// The same on TCP, at "127.0.0.1:4191" (IPv4).
std::optional<HttpReply> HttpGetTcp(const std::string& host_port, std::string_view path,
                                    std::chrono::milliseconds timeout = std::chrono::seconds(5));

// GET `path` over HTTP/1.1 on the Unix socket `socket_path`: the status code and body,
// or nullopt if nothing answers within `timeout`.
std::optional<HttpReply> HttpGetUnix(const std::string& socket_path, std::string_view path,
                                     std::chrono::milliseconds timeout = std::chrono::seconds(5));

}  // namespace nodemesh::testing
