// meshctl inject / uninject RESOURCE: mesh or unmesh running pods on the local cluster.
#include "cli/inject.h"

#include <fmt/format.h>

#include <memory>

#include "cli/commands/command.h"

namespace nodemesh::cli {
namespace {

struct InjectFlags {
  std::vector<std::string> words;
  std::string namespace_name = "default";
  std::vector<std::string> inventories;
};

int RunInject(const InjectFlags& flags, const Invocation& invocation, bool meshed) {
  const std::string_view command = meshed ? "inject" : "uninject";
  const absl::StatusOr<ResourceRef> ref = ParseResourceWords(flags.words, command);
  if (!ref.ok()) return invocation.Fail(ref.status());
  const std::vector<std::string> paths =
      InventoryPaths(flags.inventories, invocation.context.getenv("NODEMESH_INVENTORY"));
  const absl::StatusOr<std::vector<MeshChange>> changes =
      SetMeshed(paths, *ref, flags.namespace_name, meshed);
  if (!changes.ok()) return invocation.Fail(changes.status());
  invocation.context.out << RenderMeshChanges(*changes, meshed);
  return 0;
}

void AddInjectCommand(CLI::App& app, Invocation& invocation, bool meshed) {
  auto flags = std::make_shared<InjectFlags>();
  CLI::App* command = app.add_subcommand(
      meshed ? "inject" : "uninject",
      meshed ? "Mesh the running pods of a resource, with no restart (local cluster)"
             : "Stop meshing the pods of a resource, with no restart (local cluster)");
  AddResourceArgument(*command, flags->words);
  AddNamespaceOption(*command, flags->namespace_name);
  command
      ->add_option("--inventory", flags->inventories,
                   fmt::format("Node inventory file to edit; repeat for several nodes "
                               "(default: NODEMESH_INVENTORY, colon-separated, else {})",
                               kDefaultInventory))
      // One path per --inventory, so that a resource after it is not taken for a path.
      ->allow_extra_args(false)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  command->footer(meshed ? "Example:\n  meshctl inject deploy -n emojivoto"
                         : "Example:\n  meshctl uninject deploy/web -n emojivoto");
  command->callback([flags, &invocation, meshed] {
    invocation.run = [flags, &invocation, meshed] { return RunInject(*flags, invocation, meshed); };
  });
}

}  // namespace

void AddInjectCommands(CLI::App& app, Invocation& invocation) {
  AddInjectCommand(app, invocation, true);
  AddInjectCommand(app, invocation, false);
}

}  // namespace nodemesh::cli
