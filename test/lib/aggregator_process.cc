#include "test/lib/aggregator_process.h"

#include <fmt/format.h>

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
  process_.emplace(std::move(argv), ProcessOptions{.env = options_.env});
  // Logged once its gRPC server has bound the port: the real one, even for port 0.
  static const std::regex kServing(R"(serving agents and clients on \S+ \(port (\d+)\))");
  const std::string port = WaitForLogged(kServing);
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

  // With --api-listen (its value the next argument, or after '='), logged once the HTTPS
  // API listens too (after the gRPC port).
  constexpr std::string_view kApiListen = "--api-listen";
  std::string* api_listen = nullptr;
  std::string prefix;  // what stays of the argument before the address
  for (size_t i = 0; i < options_.extra_args.size(); ++i) {
    std::string& arg = options_.extra_args[i];
    if (arg == kApiListen && i + 1 < options_.extra_args.size()) {
      api_listen = &options_.extra_args[i + 1];
    } else if (arg.starts_with(std::string(kApiListen) + "=")) {
      api_listen = &arg;
      prefix = std::string(kApiListen) + "=";
    }
  }
  if (api_listen == nullptr) return;
  static const std::regex kServingApi(R"(serving nodemesh.io/v1alpha1 on (\S+) for)");
  api_address_ = WaitForLogged(kServingApi);
  if (api_address_.empty()) {
    throw std::runtime_error(fmt::format("{} did not serve its HTTPS API on {}:\n{}",
                                         options_.binary, api_listen->substr(prefix.size()),
                                         Tail(process_->output())));
  }
  *api_listen = prefix + api_address_;
}

std::string AggregatorProcess::WaitForLogged(const std::regex& line) {
  std::string value;
  PollUntil(
      [&] {
        const std::string output = process_->output();
        std::smatch match;
        if (std::regex_search(output, match, line)) value = match[1];
        return !value.empty() || !process_->IsRunning();
      },
      options_.ready_timeout);
  return value;
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
