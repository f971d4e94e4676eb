// Where meshctl inject and uninject act: on the local cluster (its node inventories,
// local.h) or on a Kubernetes cluster (through its API server, kubernetes.h).
#pragma once

#include "absl/status/statusor.h"

namespace nodemesh::cli {

enum class InjectMode { kLocal, kKubernetes };

struct InjectModeInputs {
  bool inventory_flag = false;             // --inventory given
  bool kubeconfig_flags = false;           // --kubeconfig or --context given
  bool inventory_environment = false;      // NODEMESH_INVENTORY set and not empty
  bool kubeconfig_environment = false;     // KUBECONFIG set and not empty
  bool default_kubeconfig_exists = false;  // $HOME/.kube/config
};

// The rule, in order: flags first (--inventory: local; --kubeconfig or --context:
// Kubernetes; both: a usage error), then the environment (NODEMESH_INVENTORY: local;
// KUBECONFIG: Kubernetes), then ~/.kube/config (Kubernetes), else the local default
// inventory.
absl::StatusOr<InjectMode> ChooseInjectMode(const InjectModeInputs& inputs);

}  // namespace nodemesh::cli
