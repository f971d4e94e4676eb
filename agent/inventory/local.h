// The inventory from a local JSON file, watched with inotify. Editors and tools that
// replace the file (write a temporary, rename it over) and ones that rewrite it in place
// are both seen. An invalid version is reported and ignored: the last valid one stays. One
// write raises several events, and a read may already see the next write's text: a version
// identical to the one last handed over is not handed over again.
#pragma once

#include <string>
#include <thread>

#include "agent/inventory/source.h"
#include "agent/kernel/system.h"

namespace nodemesh::agent {

class LocalInventory final : public InventorySource {
 public:
  explicit LocalInventory(std::string path) : path_(std::move(path)) {}
  ~LocalInventory() override { Stop(); }

  absl::Status Start(std::function<void(const Inventory&)> on_change) override;
  void Stop() override;

 private:
  // Reads and parses the file; `text` receives what was read.
  absl::StatusOr<Inventory> Read(std::string& text) const;
  void Watch();

  const std::string path_;
  std::function<void(const Inventory&)> on_change_;
  UniqueFd inotify_;
  UniqueFd stop_;  // eventfd
  std::thread watcher_;
  std::string last_text_;  // of the version last handed over; used by the watcher only
};

}  // namespace nodemesh::agent
