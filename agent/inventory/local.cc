#include "agent/inventory/local.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>

#include <cerrno>
#include <filesystem>

#include "common/base/file.h"
#include "common/base/log.h"

namespace nodemesh::agent {

absl::StatusOr<Inventory> LocalInventory::Read(std::string& text) const {
  absl::StatusOr<std::string> contents = ReadFile(path_);
  if (!contents.ok()) {
    return absl::Status(contents.status().code(),
                        fmt::format("inventory {}: {}", path_, contents.status().message()));
  }
  text = *std::move(contents);
  absl::StatusOr<Inventory> inventory = ParseInventory(text);
  if (!inventory.ok()) {
    return absl::InvalidArgumentError(
        fmt::format("inventory {}: {}", path_, inventory.status().message()));
  }
  return inventory;
}

absl::Status LocalInventory::Start(std::function<void(const Inventory&)> on_change) {
  on_change_ = std::move(on_change);
  // The directory is watched, not the file: a rename over the file replaces its inode.
  const std::filesystem::path path(path_);
  inotify_.Reset(inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
  if (!inotify_.valid()) return ErrnoStatus("inotify_init1", errno);
  const std::string directory = path.has_parent_path() ? path.parent_path().string() : ".";
  if (inotify_add_watch(inotify_.get(), directory.c_str(),
                        IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE) < 0) {
    return ErrnoStatus(fmt::format("watching {}", directory), errno);
  }
  stop_.Reset(eventfd(0, EFD_CLOEXEC));
  if (!stop_.valid()) return ErrnoStatus("eventfd", errno);

  absl::StatusOr<Inventory> first = Read(last_text_);
  if (!first.ok()) return first.status();
  on_change_(*first);
  watcher_ = std::thread([this] { Watch(); });
  return absl::OkStatus();
}

void LocalInventory::Stop() {
  if (!watcher_.joinable()) return;
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t written = ::write(stop_.get(), &one, sizeof one);
  watcher_.join();
}

void LocalInventory::Watch() {
  const std::string file_name = std::filesystem::path(path_).filename().string();
  std::string last_error;
  for (;;) {
    pollfd fds[2] = {{inotify_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0 && errno != EINTR) {
      Log(LogLevel::kError, "inventory watch failed: {}", std::strerror(errno));
      return;
    }
    if (fds[1].revents != 0) return;
    if (fds[0].revents == 0) continue;
    alignas(inotify_event) char buffer[16384];
    bool touched = false;
    for (;;) {
      const ssize_t n = ::read(inotify_.get(), buffer, sizeof buffer);
      if (n <= 0) break;
      for (ssize_t offset = 0; offset < n;) {
        const auto* event = reinterpret_cast<const inotify_event*>(buffer + offset);
        if (event->len > 0 && file_name == event->name) touched = true;
        offset += static_cast<ssize_t>(sizeof(inotify_event) + event->len);
      }
    }
    if (!touched) continue;
    std::string text;
    absl::StatusOr<Inventory> inventory = Read(text);
    if (!inventory.ok()) {
      // A writer may be half-way through an in-place rewrite: say it once per error.
      if (std::string(inventory.status().message()) != last_error) {
        last_error = std::string(inventory.status().message());
        Log(LogLevel::kError, "{} (keeping the previous inventory)", last_error);
      }
      continue;
    }
    last_error.clear();
    if (text == last_text_) continue;
    last_text_ = std::move(text);
    on_change_(*inventory);
  }
}

}  // namespace nodemesh::agent
