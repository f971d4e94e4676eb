#include "test/lib/aggregator_process.h"

#include <fmt/format.h>

#include <algorithm>
#include <regex>
#include <stdexcept>
#include <utility>

namespace nodemesh::testing {

AggregatorProcess::AggregatorProcess(AggregatorProcessOptions options)
    : options_(std::move(options)) {
  Start();
}

void AggregatorProcess::Start() {
  std::vector<std::string> argv = {options_.binary, "--listen", options_.listen};
  argv.insert(argv.end(), options_.extra_args.begin(), options_.extra_args.end());
  process_.emplace(std::move(argv));
  // Logged once its gRPC server has bound the port: the real one, even for port 0.
  static const std::regex kServing(R"(serving agents and clients on \S+ \(port (\d+)\))");
  std::string port;
  PollUntil(
      [&] {
        const std::string output = process_->output();
        std::smatch match;
        if (std::regex_search(output, match, kServing)) port = match[1];
        return !port.empty() || !process_->IsRunning();
      },
      options_.ready_timeout);
  if (port.empty()) {
    const std::optional<ExitStatus> status = process_->Wait(std::chrono::milliseconds(0));
    throw std::runtime_error(
        fmt::format("{} did not listen on {} {}:\n{}", options_.binary, options_.listen,
                    status ? "(it ended: " + status->ToString() + ")"
                           : fmt::format("within {} ms", options_.ready_timeout.count()),
                    Tail(process_->output())));
  }
  address_ = options_.listen.substr(0, options_.listen.rfind(':') + 1) + port;
  // A restart takes the same port, where the agents dial it again.
  options_.listen = address_;

  // With --api-listen, logged once the HTTPS API listens too (after the gRPC port).
  const auto api_listen =
      std::find(options_.extra_args.begin(), options_.extra_args.end(), "--api-listen");
  if (api_listen == options_.extra_args.end() || api_listen + 1 == options_.extra_args.end()) {
    return;
  }
  static const std::regex kServingApi(R"(serving nodemesh.io/v1alpha1 on (\S+) for)");
  PollUntil(
      [&] {
        const std::string output = process_->output();
        std::smatch match;
        if (std::regex_search(output, match, kServingApi)) api_address_ = match[1];
        return !api_address_.empty() || !process_->IsRunning();
      },
      options_.ready_timeout);
  if (api_address_.empty()) {
    throw std::runtime_error(fmt::format("{} did not serve its HTTPS API on {}:\n{}",
                                         options_.binary, *(api_listen + 1),
                                         Tail(process_->output())));
  }
  *(api_listen + 1) = api_address_;
}

int AggregatorProcess::Connections(std::string_view node) const {
  // "node NAME connected (agent ...)" or "node NAME connected again (...)".
  const std::string said = fmt::format("node {} connected", node);
  const std::string output = process_->output();
  int count = 0;
  for (size_t at = output.find(said); at != std::string::npos; at = output.find(said, at + 1)) {
    ++count;
  }
  return count;
}

bool AggregatorProcess::WaitForNode(std::string_view node, std::chrono::milliseconds timeout,
                                    int count) {
  return PollUntil([&] { return Connections(node) >= count; }, timeout);
}

void AggregatorProcess::Restart() {
  process_.reset();  // SIGTERM, then SIGKILL; nothing if it has ended already
  Start();
}

}  // namespace nodemesh::testing
