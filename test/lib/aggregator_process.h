// The real nodemesh-aggregator binary, run by the kernel and end-to-end tests and the
// endurance benchmark, ready when constructed.
//
//   AggregatorProcess aggregator({.binary = NODEMESH_AGGREGATOR_BINARY});  // returns once
//                                                                           // it listens
//   AgentProcess agent(node, {.binary = ..., .extra_args = {"--aggregator",
//                                                          aggregator.address()}});
//   REQUIRE(aggregator.WaitForNode("node-a"));  // it holds node-a's pods: a tap may start
//
// Ready means listening: the aggregator logs "serving agents and clients on HOST:PORT (port
// N)" once its gRPC server has bound its port, and that line names the port, so it may be
// started on port 0 and no other process can take its port between a probe and its start.
// The destructor stops it (SIGTERM, then SIGKILL). Not thread-safe.
#pragma once

#include <chrono>
#include <optional>
#include <regex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "test/lib/process.h"

namespace nodemesh::testing {

struct AggregatorProcessOptions {
  std::string binary{};  // path of nodemesh-aggregator
  // Its --listen address; port 0: a free port, read back from its log (address()).
  std::string listen = "127.0.0.1:0";
  std::vector<std::string> extra_args{};  // appended to the command line (TLS flags, ...)
  // Added to its environment (a benchmark preloads a clock library this way).
  std::vector<std::pair<std::string, std::string>> env{};
  // Bounds the wait for it to listen.
  std::chrono::milliseconds ready_timeout{std::chrono::seconds(10)};
};

class AggregatorProcess {
 public:
  // Throws std::runtime_error, with the aggregator's output, if it exits or does not listen
  // in time.
  explicit AggregatorProcess(AggregatorProcessOptions options);
  AggregatorProcess(const AggregatorProcess&) = delete;
  AggregatorProcess& operator=(const AggregatorProcess&) = delete;

  // "HOST:PORT" it serves agents and clients on, with the port it took.
  const std::string& address() const { return address_; }
  // "HOST:PORT" of its HTTPS API (the port it took), with `--api-listen ADDRESS` or
  // `--api-listen=ADDRESS` in extra_args; else empty.
  const std::string& api_address() const { return api_address_; }
  Process& process() { return *process_; }
  std::string output() const { return process_->output(); }

  // How many times it has logged that the agent of `node` connected (for the first time or
  // again).
  int Connections(std::string_view node) const;
  // Waits until it has logged that `count` times: from then on it holds that node's pods,
  // so a tap of them is not refused.
  bool WaitForNode(std::string_view node,
                   std::chrono::milliseconds timeout = std::chrono::seconds(15), int count = 1);

  // Stops it if it still runs and starts it again on the same address, as after a crash;
  // returns once it listens (throws as the constructor does). Its output starts anew.
  void Restart();

 private:
  void Start();
  // The first group of `line` once the log has it, within the ready timeout; "" when it does
  // not come or the process ends first.
  std::string WaitForLogged(const std::regex& line);

  AggregatorProcessOptions options_;
  std::string address_;
  std::string api_address_;
  std::optional<Process> process_;  // always set once constructed
};

}  // namespace nodemesh::testing
