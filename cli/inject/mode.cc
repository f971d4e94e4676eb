#include "cli/inject/mode.h"

namespace nodemesh::cli {

absl::StatusOr<InjectMode> ChooseInjectMode(const InjectModeInputs& inputs) {
  if (inputs.inventory_flag && inputs.kubeconfig_flags) {
    return absl::InvalidArgumentError(
        "--inventory (a local cluster) and --kubeconfig/--context (a Kubernetes cluster) do not "
        "go together: give one or the other");
  }
  if (inputs.inventory_flag) return InjectMode::kLocal;
  if (inputs.kubeconfig_flags) return InjectMode::kKubernetes;
  if (inputs.inventory_environment) return InjectMode::kLocal;
  if (inputs.kubeconfig_environment || inputs.default_kubeconfig_exists) {
    return InjectMode::kKubernetes;
  }
  return InjectMode::kLocal;
}

}  // namespace nodemesh::cli
