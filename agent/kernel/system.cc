#include "agent/kernel/system.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "common/base/log.h"

namespace nodemesh::agent {

absl::StatusOr<Netns> Netns::Open(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus(fmt::format("network namespace {}", path), errno);
  return Netns(std::move(fd), path);
}

absl::StatusOr<Netns> Netns::Current() { return Open("/proc/thread-self/ns/net"); }

ScopedNetns::ScopedNetns(const Netns& target, const Netns& home) : home_(home) {
  if (::setns(target.fd(), CLONE_NEWNET) != 0) {
    status_ = ErrnoStatus(fmt::format("entering network namespace {}", target.path()), errno);
  }
}

ScopedNetns::~ScopedNetns() {
  if (!status_.ok()) return;
  if (::setns(home_.fd(), CLONE_NEWNET) != 0) {
    // A thread stranded in a pod's namespace would make every later socket wrong.
    Log(LogLevel::kError, "cannot return to the agent's network namespace: {}",
        std::strerror(errno));
    std::abort();
  }
}

absl::StatusOr<std::string> FindCgroup2Mount() {
  std::ifstream mountinfo("/proc/self/mountinfo");
  if (!mountinfo) return ErrnoStatus("reading /proc/self/mountinfo", errno);
  std::string line;
  while (std::getline(mountinfo, line)) {
    // id parent major:minor root mount-point options [optional...] - fstype source options
    const size_t separator = line.find(" - ");
    if (separator == std::string::npos) continue;
    std::istringstream after(line.substr(separator + 3));
    std::string fstype;
    after >> fstype;
    if (fstype != "cgroup2") continue;
    std::istringstream before(line.substr(0, separator));
    std::string id, parent, device, root, mount_point;
    before >> id >> parent >> device >> root >> mount_point;
    return mount_point;
  }
  return absl::FailedPreconditionError(
      "no cgroup v2 mount in /proc/self/mountinfo: nodemesh needs cgroup v2 (mount it with "
      "'mount -t cgroup2 none /sys/fs/cgroup/unified' or boot with "
      "systemd.unified_cgroup_hierarchy=1)");
}

absl::StatusOr<uint64_t> CgroupId(const std::string& absolute_path) {
  struct stat st;
  if (::stat(absolute_path.c_str(), &st) != 0) {
    return ErrnoStatus(fmt::format("cgroup {}", absolute_path), errno);
  }
  if (!S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(fmt::format("cgroup {} is not a directory", absolute_path));
  }
  return static_cast<uint64_t>(st.st_ino);
}

int AllowedCpuCount() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) != 0) return 1;
  return std::max(1, CPU_COUNT(&set));
}

}  // namespace nodemesh::agent
