// meshctl inject / uninject RESOURCE: mesh or unmesh running pods with no restart, on the
// local cluster (node inventories) or on a Kubernetes cluster (labels and an annotation
// through the API server).
#include "cli/views/inject.h"

#include <fmt/format.h>

#include <memory>

#include "cli/commands/command.h"
#include "cli/commands/scope.h"
#include "cli/inject/kubernetes.h"
#include "cli/inject/local.h"
#include "cli/inject/mode.h"
#include "common/kube/client.h"

namespace nodemesh::cli {
namespace {

constexpr std::string_view kModeHelp =
    "Where: on a Kubernetes cluster (labels and an annotation through the API server) or on\n"
    "the local cluster (node inventories), chosen in this order:\n"
    "  --inventory: local; --kubeconfig or --context: Kubernetes (not with --inventory);\n"
    "  else NODEMESH_INVENTORY set: local; else KUBECONFIG set: Kubernetes;\n"
    "  else ~/.kube/config exists: Kubernetes; else local (/run/nodemesh/inventory.json).\n"
    "\n"
    "On Kubernetes nothing is restarted and no pod template changes:\n"
    "  ns/NAME         labels the namespace nodemesh.io/mesh=enabled (uninject removes the\n"
    "                  label; pods and workloads with a setting of their own keep it)\n"
    "  deploy/NAME     sets \"Deployment/NAME\" to enabled (uninject: disabled) in the\n"
    "                  namespace's nodemesh.io/mesh-workloads annotation, for the pods to come,\n"
    "                  and labels its running pods nodemesh.io/mesh=enabled (or disabled);\n"
    "                  sts/NAME and ds/NAME alike\n"
    "  pod/NAME        labels the pod nodemesh.io/mesh=enabled (uninject: disabled)\n"
    "-n defaults to the kubeconfig context's namespace there, to \"default\" locally.\n";

struct InjectFlags {
  explicit InjectFlags(bool meshed)
      : scope({.command = meshed ? "inject" : "uninject",
               .namespace_help = "Namespace of the resource (default: the kubeconfig context's "
                                 "namespace on Kubernetes, \"default\" locally)",
               .default_namespace = "",  // the mode's
               .outputs = {OutputFormat::kTable, OutputFormat::kJson},
               .output_help = "table or json"}) {}

  ScopeFlags scope;
  std::vector<std::string> inventories;
};

InjectModeInputs ModeInputs(const InjectFlags& flags, const Invocation& invocation) {
  InjectModeInputs inputs;
  inputs.inventory_flag = !flags.inventories.empty();
  inputs.kubeconfig_flags = !invocation.kubeconfig.empty() || !invocation.kube_context.empty();
  const std::optional<std::string> inventory = invocation.context.getenv("NODEMESH_INVENTORY");
  inputs.inventory_environment = inventory.has_value() && !inventory->empty();
  const KubeconfigPresence kubeconfig = FindKubeconfig(invocation.context);
  inputs.kubeconfig_environment = kubeconfig.environment;
  inputs.default_kubeconfig_exists = kubeconfig.default_file;
  return inputs;
}

int RunLocal(const InjectFlags& flags, const Scope& scope, const Invocation& invocation,
             bool meshed) {
  const std::vector<std::string> paths =
      InventoryPaths(flags.inventories, invocation.context.getenv("NODEMESH_INVENTORY"));
  const absl::StatusOr<std::vector<MeshChange>> changes =
      SetMeshed(paths, scope.resource,
                scope.namespace_name.empty() ? "default" : scope.namespace_name, meshed);
  if (!changes.ok()) return invocation.Fail(changes.status());
  invocation.context.out << RenderMeshChanges(*changes, meshed, scope.output);
  return 0;
}

int RunKubernetes(const Scope& scope, const Invocation& invocation, bool meshed) {
  // The kubeconfig is found as kubectl finds it (--kubeconfig, else $KUBECONFIG, else
  // ~/.kube/config), from the process's environment.
  absl::StatusOr<kube::Config> config =
      kube::LoadKubeconfig(invocation.kubeconfig, invocation.kube_context);
  if (!config.ok()) return invocation.Fail(config.status());
  const std::string namespace_name =
      scope.namespace_name.empty() ? config->namespace_name : scope.namespace_name;
  kube::Client client(*std::move(config), invocation.ExecEnvironment());
  const absl::StatusOr<KubeInjectResult> result =
      SetMeshedInKubernetes(client, scope.resource, namespace_name, meshed);
  if (!result.ok()) return invocation.Fail(result.status());
  invocation.context.out << RenderKubeChanges(result->changes, scope.output);
  for (const std::string& note : result->notes) {
    invocation.context.err << fmt::format("meshctl: note: {}\n", note);
  }
  return 0;
}

int RunInject(const InjectFlags& flags, const Invocation& invocation, bool meshed) {
  const absl::StatusOr<Scope> scope = flags.scope.Parse();
  if (!scope.ok()) return invocation.Fail(scope.status());
  const absl::StatusOr<InjectMode> mode = ChooseInjectMode(ModeInputs(flags, invocation));
  if (!mode.ok()) return invocation.Fail(mode.status());
  return *mode == InjectMode::kKubernetes ? RunKubernetes(*scope, invocation, meshed)
                                          : RunLocal(flags, *scope, invocation, meshed);
}

void AddInjectCommand(CLI::App& app, Invocation& invocation, bool meshed) {
  auto flags = std::make_shared<InjectFlags>(meshed);
  CLI::App* command =
      app.add_subcommand(meshed ? "inject" : "uninject",
                         meshed ? "Mesh the running pods of a resource, with no restart"
                                : "Stop meshing the pods of a resource, with no restart");
  flags->scope.AddTarget(*command);
  command
      ->add_option("--inventory", flags->inventories,
                   fmt::format("Local cluster: node inventory file to edit; repeat for several "
                               "nodes (default: NODEMESH_INVENTORY, colon-separated, else {})",
                               kDefaultInventory))
      // One path per --inventory, so that a resource after it is not taken for a path.
      ->allow_extra_args(false)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  flags->scope.AddAnswer(*command);
  command->footer(
      fmt::format("{}\nExamples:\n  meshctl {} ns/emojivoto\n  meshctl {} deploy/web -n emojivoto\n"
                  "  meshctl {} deploy -n emojivoto --inventory /run/nodemesh/inventory.json",
                  kModeHelp, meshed ? "inject" : "uninject", meshed ? "inject" : "uninject",
                  meshed ? "inject" : "uninject"));
  invocation.RunWhenChosen(
      *command, [flags, &invocation, meshed] { return RunInject(*flags, invocation, meshed); });
}

}  // namespace

void AddInjectCommands(CLI::App& app, Invocation& invocation) {
  AddInjectCommand(app, invocation, true);
  AddInjectCommand(app, invocation, false);
}

}  // namespace nodemesh::cli
