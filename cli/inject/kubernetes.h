// meshctl inject / uninject on a Kubernetes cluster: labels and annotations through the API
// server, following the conventions of common/kube/pods.h, which the agents read. Nothing
// here touches a pod template: changing one would restart every pod of the workload,
// which is what nodemesh exists to avoid.
//
//   inject ns/X       label namespace X nodemesh.io/mesh=enabled
//   uninject ns/X     remove that label: the namespace is unmeshed again, as before inject
//                     (pods and workloads with their own setting keep it; a note says so)
//   inject deploy/W   namespace annotation nodemesh.io/mesh-workloads {"Deployment/W":
//                     "enabled"} (W's future pods), and label W's running pods
//                     nodemesh.io/mesh=enabled (the pods of now); sts and ds alike
//   uninject deploy/W the same with "disabled"
//   inject pod/P      label pod P (uninject: "disabled")
//
// A type without a name means every resource of it in the namespace, as in the local mode.
// What to change is worked out in plan.h; here it is read and sent, one request at a time.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "cli/inject/plan.h"
#include "cli/resource.h"
#include "common/kube/client.h"

namespace nodemesh::cli {

struct KubeInjectResult {
  std::vector<KubeChange> changes;  // namespace first, then pods by name
  std::vector<std::string> notes;   // for stderr
};

// Meshes (or unmeshes) what `ref` names in `namespace_name` through `client`. Errors say
// what was asked, what the API server answered, and what to do: the permission missing
// for a 403, the server and the kubeconfig when it cannot be reached.
absl::StatusOr<KubeInjectResult> SetMeshedInKubernetes(kube::Client& client, const ResourceRef& ref,
                                                       std::string_view namespace_name,
                                                       bool meshed);

}  // namespace nodemesh::cli
