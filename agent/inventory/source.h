// Where the agent learns its node's pods: one interface, one implementation per source, each
// in this folder (local.h: a JSON file the agent watches). main.cc picks the source; the
// agent only sees this interface.
#pragma once

#include <functional>

#include "absl/status/status.h"
#include "common/inventory/inventory.h"

namespace nodemesh::agent {

class InventorySource {
 public:
  virtual ~InventorySource() = default;
  // Starts watching; `on_change` gets every valid version of the inventory, the first one
  // before Start returns. Returns the error if the first version is invalid.
  virtual absl::Status Start(std::function<void(const Inventory&)> on_change) = 0;
  virtual void Stop() = 0;
};

}  // namespace nodemesh::agent
