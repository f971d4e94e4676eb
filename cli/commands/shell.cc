// meshctl shell: flags, then one command (-c) or the interactive shell (cli/shell/).
#include "cli/shell/shell.h"

#include <filesystem>
#include <memory>
#include <optional>

#include "cli/commands/command.h"
#include "cli/commands/scope.h"

namespace nodemesh::cli {
namespace {

struct ShellFlags {
  std::string socket = std::string(kDefaultAdminSocket);
  std::string node;
  std::string command;
  std::string output = "table";
};

// $XDG_STATE_HOME/nodemesh/shell_history, else ~/.nodemesh_history; none without either.
std::string HistoryPath(const Context& context) {
  if (std::optional<std::string> state = context.getenv("XDG_STATE_HOME");
      state && !state->empty()) {
    const std::string directory = *state + "/nodemesh";
    // As the XDG spec asks: made when missing, parents too, only the user's.
    std::error_code ignored;
    std::filesystem::create_directories(directory, ignored);
    std::filesystem::permissions(directory, std::filesystem::perms::owner_all, ignored);
    return directory + "/shell_history";
  }
  if (std::optional<std::string> home = context.getenv("HOME"); home && !home->empty()) {
    return *home + "/.nodemesh_history";
  }
  return "";
}

int RunShell(const Invocation& invocation, const ShellFlags& flags, bool one_command) {
  absl::StatusOr<OutputFormat> format =
      ParseOutputFormat(flags.output, "shell", {OutputFormat::kTable, OutputFormat::kJson});
  if (!format.ok()) return invocation.Fail("-o", format.status());
  std::unique_ptr<AggregatorApi> aggregator;
  std::unique_ptr<AdminClient> agent;
  if (flags.node.empty()) {
    agent = std::make_unique<SocketAdminClient>(flags.socket);
  } else {
    absl::StatusOr<std::unique_ptr<AggregatorApi>> client = invocation.Client();
    if (!client.ok()) return invocation.Fail(client.status());
    aggregator = *std::move(client);
    agent = std::make_unique<RelayedAdminClient>(*aggregator, flags.node);
  }
  Shell shell(*agent, *format, invocation.context.cancel);
  if (one_command) {
    return shell.Run(flags.command, invocation.context.out, invocation.context.err).code;
  }
  return RunShellRepl(shell, HistoryPath(invocation.context), invocation.context.out,
                      invocation.context.err);
}

}  // namespace

void AddShellCommand(CLI::App& app, Invocation& invocation) {
  CLI::App* command = app.add_subcommand(
      "shell",
      "Look inside this node's agent and kernel programs: pods, connections, programs and "
      "maps, counters, settings (interactive, or one command with -c)");
  auto flags = std::make_shared<ShellFlags>();
  CLI::Option* socket =
      command->add_option("--socket", flags->socket, "The agent's admin socket, on its node")
          ->capture_default_str();
  command
      ->add_option("--node", flags->node,
                   "The agent of this node, through the aggregator (--aggregator): reads only")
      ->excludes(socket);
  CLI::Option* one = command->add_option("-c,--command", flags->command,
                                         "Run this one command and exit (e.g. -c pods; -c help)");
  AddOutputOption(*command, flags->output, "table or json");
  invocation.RunWhenChosen(*command, [&invocation, flags, one] {
    return RunShell(invocation, *flags, one->count() > 0);
  });
}

}  // namespace nodemesh::cli
