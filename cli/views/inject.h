// What meshctl inject and uninject print: one line per object changed (or found as asked
// already), or with -o json one document, {"changes": [...]}, of the same.
#pragma once

#include <string>
#include <vector>

#include "cli/inject/plan.h"
#include "cli/views/views.h"

namespace nodemesh::cli {

// The local cluster: "pod emojivoto/web-1 meshed", or "pod emojivoto/web-1 already meshed
// (no change)"; kJson: {"changes": [{"type": "pod", "namespace", "name", "meshed",
// "changed"}]}.
std::string RenderMeshChanges(const std::vector<MeshChange>& changes, bool meshed,
                              OutputFormat format = OutputFormat::kTable);

// Kubernetes: one line per change, in the local mode's shape: "namespace emojivoto
// labelled nodemesh.io/mesh=enabled", "pod emojivoto/web-1 already labelled ... (no
// change)"; kJson: {"changes": [...]}.
std::string RenderKubeChanges(const std::vector<KubeChange>& changes, OutputFormat format);

}  // namespace nodemesh::cli
