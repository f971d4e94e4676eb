// What every meshctl command shares: the parsed global flags, the context, and one way to
// fail. The flags most commands share (resource, -n/-A, -t, -o) are in scope.h.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cli/api.h"
#include "cli/meshctl.h"
#include "cli/resource.h"
#include "common/base/format.h"
#include "common/tls/tls.h"

namespace nodemesh::cli {

struct Invocation {
  const Context& context;
  std::string aggregator;
  TlsFiles tls;  // meshctl --ca, --cert, --key, --tls-server-name
  // Set by the subcommand that parsed; run once parsing is over.
  std::function<int()> run;

  // Makes `run_command` the one to run when `command` is the subcommand given.
  void RunWhenChosen(CLI::App& command, std::function<int()> run_command);

  // The aggregator's API at the --aggregator address, or why that address is unusable.
  absl::StatusOr<std::unique_ptr<AggregatorApi>> Client() const;
  // Prints "meshctl: <message>" and returns the exit code: 2 for a usage error, else 1.
  int Fail(const absl::Status& status) const;
  // For a problem with one flag's value: "--from: <message>".
  int Fail(std::string_view flag, const absl::Status& status) const;
};

// Each adds its subcommand; the subcommand sets `invocation.run` when it is the one given.
void AddStatCommand(CLI::App& app, Invocation& invocation);
void AddTapCommand(CLI::App& app, Invocation& invocation);
void AddTopCommand(CLI::App& app, Invocation& invocation);
void AddRoutesCommand(CLI::App& app, Invocation& invocation);
void AddEdgesCommand(CLI::App& app, Invocation& invocation);
void AddInjectCommands(CLI::App& app, Invocation& invocation);
void AddCheckCommand(CLI::App& app, Invocation& invocation);
void AddVersionCommand(CLI::App& app, Invocation& invocation);
void AddShellCommand(CLI::App& app, Invocation& invocation);

}  // namespace nodemesh::cli
