// meshctl inject / uninject on the local cluster: flips `meshed` for the matching pods in
// the node inventories (plan.h's NamesPod), which the agents watch and act on live. Nothing
// else in the files changes: every other field keeps its value and place.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "cli/inject/plan.h"
#include "cli/resource.h"

namespace nodemesh::cli {

inline constexpr std::string_view kDefaultInventory = "/run/nodemesh/inventory.json";

// The inventories to edit: the --inventory paths if any, else NODEMESH_INVENTORY (a
// colon-separated list), else the default.
std::vector<std::string> InventoryPaths(const std::vector<std::string>& flags,
                                        const std::optional<std::string>& environment);

// Sets `meshed` on every pod that `ref` names in `namespace_name` (a namespace reference
// names its own), in every file of `paths` that lists the pod (a node's inventory also
// lists the pods of other nodes). Each changed file is replaced atomically: a temporary
// in the same directory, renamed over it, so an agent never reads half a file. Changes
// are by pod, sorted. Errors name the file or the resource and say what to do.
absl::StatusOr<std::vector<MeshChange>> SetMeshed(const std::vector<std::string>& paths,
                                                  const ResourceRef& ref,
                                                  std::string_view namespace_name, bool meshed);

}  // namespace nodemesh::cli
