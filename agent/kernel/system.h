// Thin owners of kernel resources the agent holds: network namespaces, cgroups, CPUs.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/base/errno_status.h"
#include "common/base/unique_fd.h"

namespace nodemesh::agent {

// A network namespace, held open by file descriptor.
class Netns {
 public:
  static absl::StatusOr<Netns> Open(const std::string& path);
  // The calling thread's current network namespace.
  static absl::StatusOr<Netns> Current();
  int fd() const { return fd_.get(); }
  const std::string& path() const { return path_; }

 private:
  Netns(UniqueFd fd, std::string path) : fd_(std::move(fd)), path_(std::move(path)) {}
  UniqueFd fd_;
  std::string path_;
};

// Moves the calling thread into `target` for its lifetime, then back to `home`. Sockets
// made meanwhile belong to `target` for good.
class ScopedNetns {
 public:
  ScopedNetns(const Netns& target, const Netns& home);
  ~ScopedNetns();
  ScopedNetns(const ScopedNetns&) = delete;
  ScopedNetns& operator=(const ScopedNetns&) = delete;
  const absl::Status& status() const { return status_; }

 private:
  const Netns& home_;
  absl::Status status_;
};

// Where cgroup v2 is mounted ("/sys/fs/cgroup", or "/sys/fs/cgroup/unified" in hybrid
// mode), from /proc/self/mountinfo.
absl::StatusOr<std::string> FindCgroup2Mount();

// The id the kernel gives a cgroup v2 directory (bpf_get_current_cgroup_id's answer).
absl::StatusOr<uint64_t> CgroupId(const std::string& absolute_path);

// How many CPUs this process may run on: its affinity mask, so a container's cpuset, not
// the machine's count. At least 1.
int AllowedCpuCount();

}  // namespace nodemesh::agent
