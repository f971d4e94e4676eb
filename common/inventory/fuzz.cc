// libFuzzer target: the local inventory file, as any process able to write it could make it.
// Whatever the bytes, parsing returns an inventory or an error naming what is wrong, and
// never throws or crashes; what it returns holds what the agent relies on.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "common/inventory/inventory.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view json(reinterpret_cast<const char*>(data), size);
  const absl::StatusOr<nodemesh::Inventory> inventory = nodemesh::ParseInventory(json);
  if (!inventory.ok()) {
    if (inventory.status().message().empty()) __builtin_trap();
    return 0;
  }
  for (const nodemesh::PodInfo& pod : inventory->pods) {
    if (pod.namespace_name.empty() || pod.name.empty() || pod.ips.empty()) __builtin_trap();
  }
  inventory->services.ForEach([](const std::string&, const nodemesh::ServiceInfo& service) {
    if (service.namespace_name.empty() || service.name.empty() || service.cluster_ips.empty()) {
      __builtin_trap();
    }
  });
  return 0;
}
