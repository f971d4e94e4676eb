// meshctl version: meshctl's own version (the shell's `version` adds the agent's).
#include "common/base/version.h"

#include <fmt/format.h>

#include "cli/commands/command.h"

namespace nodemesh::cli {

void AddVersionCommand(CLI::App& app, Invocation& invocation) {
  CLI::App* command = app.add_subcommand("version", "Print meshctl's version");
  invocation.RunWhenChosen(*command, [&invocation] {
    invocation.context.out << fmt::format("meshctl version {}\n", kVersion);
    return 0;
  });
}

}  // namespace nodemesh::cli
