// An enrolled pod as the data plane sees it.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

#include "agent/inventory.h"
#include "agent/system.h"

namespace nodemesh::agent {

// Which side of a pod the agent is proxying for: its calls out, or calls into it.
enum class Direction : uint8_t { kOutbound, kInbound };

inline std::string_view DirectionName(Direction direction) {
  return direction == Direction::kOutbound ? "outbound" : "inbound";
}

class PodRuntime {
 public:
  PodRuntime(uint32_t id, PodInfo info, Netns netns)
      : id_(id),
        netns_(std::move(netns)),
        info_(std::make_shared<const PodInfo>(std::move(info))) {}

  uint32_t id() const { return id_; }
  const Netns& netns() const { return netns_; }
  // Identity fields (labels, owner, ...) may change while connections run: readers get a
  // consistent snapshot.
  std::shared_ptr<const PodInfo> info() const { return info_.load(std::memory_order_acquire); }
  void set_info(PodInfo info) {
    info_.store(std::make_shared<const PodInfo>(std::move(info)), std::memory_order_release);
  }

 private:
  const uint32_t id_;
  const Netns netns_;
  std::atomic<std::shared_ptr<const PodInfo>> info_;
};

}  // namespace nodemesh::agent
