// Where the agent learns its node's pods: one interface, one implementation per source, each
// in this folder (local.h: a JSON file the agent watches; kubernetes.h: the API server). main.cc picks the source; the
// agent only sees this interface.
#pragma once

#include <functional>

#include "absl/status/status.h"
#include "common/inventory/inventory.h"
#include "nlohmann/json.hpp"

namespace nodemesh::agent {

class InventorySource {
 public:
  virtual ~InventorySource() = default;
  // Starts watching; `on_change` gets every valid version of the inventory, the first one
  // before Start returns. Returns the error if the first version is invalid.
  virtual absl::Status Start(std::function<void(const Inventory&)> on_change) = 0;
  virtual void Stop() = 0;
  // Whether a pod of the first version that cannot be enrolled stops the agent at start. A
  // file the operator wrote (local) says exactly what to enrol: a pod it names wrongly is a
  // mistake to fix before starting. The cluster's pods (kubernetes) come and go whatever the
  // agent does, and which of them the first version holds depends on what the API server
  // and the node had ready at that moment: one that cannot be enrolled is reported and
  // retried like any later one, never a reason to stop the node's agent.
  virtual bool FirstVersionMustApply() const { return true; }
  // What the source knows of its own health, for the admin API's /stats.
  virtual nlohmann::json Status() const { return nlohmann::json::object(); }
};

}  // namespace nodemesh::agent
