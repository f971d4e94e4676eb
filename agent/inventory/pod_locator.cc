#include "agent/inventory/pod_locator.h"

#include <dirent.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <system_error>
#include <thread>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "agent/kernel/capabilities.h"
#include "agent/kernel/system.h"
#include "common/base/errno_status.h"
#include "common/base/file.h"
#include "common/base/format.h"
#include "common/base/unique_fd.h"

namespace nodemesh::agent {
namespace {

// How deep below the root pod directories are looked for. The deepest layout known, kind
// on a systemd host seen from the host, has them 6 levels down (/system.slice/
// docker-<id>.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/
// kubelet-kubepods-besteffort-pod<uid>.slice).
constexpr int kMaxScanDepth = 8;
// How deep below a pod directory its processes are looked for: a container's directory,
// crun's `container` inside it, and one more for a runtime that nests further.
constexpr int kMaxPodDepth = 3;

// Calls `visit` with each piece of `text` between `separator`s, empty ones included, until
// it returns false.
template <typename Visit>
void ForEachPiece(std::string_view text, char separator, Visit visit) {
  while (true) {
    const size_t end = text.find(separator);
    if (!visit(text.substr(0, end)) || end == std::string_view::npos) return;
    text.remove_prefix(end + 1);
  }
}

bool IsLowerHex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

// 8-4-4-4-12 lowercase hex digits, the groups joined by `separator`.
bool IsUuid(std::string_view text, char separator) {
  if (text.size() != 36) return false;
  for (size_t i = 0; i < text.size(); ++i) {
    const bool between_groups = i == 8 || i == 13 || i == 18 || i == 23;
    if (between_groups ? text[i] != separator : !IsLowerHex(text[i])) return false;
  }
  return true;
}

// What the kubelet names a pod's cgroup after: its UID, or for a static pod the hash of its
// manifest (32 hex digits, no separators), which the mirror pod's kubernetes.io/config.mirror
// annotation carries.
bool IsPodId(std::string_view text, char separator) {
  if (text.size() == 32) return std::all_of(text.begin(), text.end(), IsLowerHex);
  return IsUuid(text, separator);
}

// The parents a systemd pod slice's name spells out, '-' between them: the kubelet's own
// "kubepods" (below whatever its --cgroup-root adds, like kind's "kubelet"), then at most
// the QoS class. The kubelet escapes '-' inside a name, so no part is empty.
bool IsKubepodsSliceParents(std::string_view parents) {
  bool valid = true;
  bool after_kubepods = false;
  int classes = 0;
  ForEachPiece(parents, '-', [&](std::string_view part) {
    if (part.empty()) {
      valid = false;
    } else if (after_kubepods) {
      valid = (part == "burstable" || part == "besteffort") && ++classes == 1;
    } else if (part == "kubepods") {
      after_kubepods = true;
    }
    return valid;
  });
  return valid && after_kubepods;
}

std::optional<int> ParsePid(std::string_view text) {
  int pid = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), pid);
  if (error != std::errc() || end != text.data() + text.size() || pid < 0) return std::nullopt;
  return pid;
}

// An open directory, closed with the object.
class Directory {
 public:
  explicit Directory(int fd) : dir_(fd >= 0 ? ::fdopendir(fd) : nullptr) {
    if (fd >= 0 && dir_ == nullptr) ::close(fd);
  }
  static Directory Open(const std::string& path) {
    return Directory(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  }
  Directory(Directory&& other) noexcept : dir_(std::exchange(other.dir_, nullptr)) {}
  Directory& operator=(Directory&&) = delete;
  ~Directory() {
    if (dir_ != nullptr) ::closedir(dir_);
  }

  bool valid() const { return dir_ != nullptr; }
  int fd() const { return ::dirfd(dir_); }
  // The next entry other than "." and "..", or nullptr at the end.
  const dirent* Next() {
    while (const dirent* entry = ::readdir(dir_)) {
      if (std::strcmp(entry->d_name, ".") != 0 && std::strcmp(entry->d_name, "..") != 0) {
        return entry;
      }
    }
    return nullptr;
  }
  // Whether `entry` is a directory; a symbolic link to one is not.
  bool IsSubdirectory(const dirent& entry) const {
    if (entry.d_type != DT_UNKNOWN) return entry.d_type == DT_DIR;
    struct stat st;
    return ::fstatat(fd(), entry.d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
  }
  // `entry` opened if it is a directory, never through a symbolic link; invalid otherwise.
  Directory Subdirectory(const dirent& entry) const {
    if (entry.d_type != DT_DIR && entry.d_type != DT_UNKNOWN) return Directory(-1);
    return Directory(::openat(fd(), entry.d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  }

 private:
  DIR* dir_;
};

// Records every pod directory below `directory`, which is at `relative` under the mount.
void FindPodDirectories(Directory& directory, const std::string& relative, int depth,
                        absl::flat_hash_map<std::string, std::string>& found) {
  while (const dirent* entry = directory.Next()) {
    if (!directory.IsSubdirectory(*entry)) continue;
    std::string path = fmt::format("{}/{}", relative, entry->d_name);
    if (std::optional<std::string> uid = PodUidOfCgroupName(entry->d_name)) {
      // A UID twice (a node nested in one of its own pods): the outermost is the pod's.
      auto [it, inserted] = found.try_emplace(*std::move(uid), path);
      if (!inserted && path.size() < it->second.size()) it->second = std::move(path);
      continue;  // its children are its containers
    }
    if (depth + 1 >= kMaxScanDepth) continue;
    Directory child = directory.Subdirectory(*entry);
    if (child.valid()) FindPodDirectories(child, path, depth + 1, found);
  }
}

struct CgroupProcs {
  std::vector<int> pids;  // as listed: 0 for a process outside the agent's pid namespace
  bool complete = true;   // every cgroup.procs of the subtree could be read
};

void ReadCgroupProcs(Directory& directory, int depth, CgroupProcs& procs) {
  if (const absl::StatusOr<std::string> text = ReadFileAt(directory.fd(), "cgroup.procs");
      text.ok()) {
    ForEachPiece(*text, '\n', [&](std::string_view line) {
      if (const std::optional<int> pid = ParsePid(line)) procs.pids.push_back(*pid);
      return true;
    });
  } else {
    procs.complete = false;
  }
  if (depth >= kMaxPodDepth) return;
  while (const dirent* entry = directory.Next()) {
    Directory child = directory.Subdirectory(*entry);
    if (child.valid()) ReadCgroupProcs(child, depth + 1, procs);
  }
}

// Every process under `proc_root` whose cgroup names pod `uid`, in pid order.
std::vector<int> ProcessesOfPod(const std::string& proc_root, std::string_view uid) {
  std::vector<int> pids;
  Directory proc = Directory::Open(proc_root);
  if (!proc.valid()) return pids;
  while (const dirent* entry = proc.Next()) {
    const std::optional<int> pid = ParsePid(entry->d_name);
    if (!pid) continue;
    const absl::StatusOr<std::string> cgroup =
        ReadFileAt(proc.fd(), fmt::format("{}/cgroup", entry->d_name));
    if (!cgroup.ok()) continue;  // gone meanwhile
    const std::optional<std::string> pod = PodUidOfProcessCgroup(*cgroup);
    if (pod && *pod == uid) pids.push_back(*pid);
  }
  std::sort(pids.begin(), pids.end());
  return pids;
}

// A namespace's identity: its nsfs inode.
using NamespaceId = std::pair<dev_t, ino_t>;

// Nothing when the process is gone (or never was); `refused` is set when it exists but
// the agent may not look at its namespaces.
std::optional<NamespaceId> NamespaceOf(const std::string& path, absl::Status* refused = nullptr) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    if (refused != nullptr && (errno == EACCES || errno == EPERM)) {
      *refused = NameMissingCapabilities(
          ErrnoStatus(fmt::format("network namespace {}", path), errno), {CAP_SYS_PTRACE});
    }
    return std::nullopt;
  }
  return NamespaceId{st.st_dev, st.st_ino};
}

// Whether an interface of the calling thread's network namespace, the one at `path`, has
// one of `ips`.
absl::StatusOr<bool> HoldsAnyHere(const std::string& path, const std::vector<IpAddress>& ips) {
  ifaddrs* addresses = nullptr;
  if (::getifaddrs(&addresses) != 0) {
    return ErrnoStatus(fmt::format("listing the addresses in network namespace {}", path), errno);
  }
  bool holds = false;
  for (const ifaddrs* a = addresses; a != nullptr && !holds; a = a->ifa_next) {
    if (a->ifa_addr == nullptr) continue;
    sockaddr_storage storage{};
    if (a->ifa_addr->sa_family == AF_INET) {
      std::memcpy(&storage, a->ifa_addr, sizeof(sockaddr_in));
    } else if (a->ifa_addr->sa_family == AF_INET6) {
      std::memcpy(&storage, a->ifa_addr, sizeof(sockaddr_in6));
    } else {
      continue;
    }
    const std::optional<Endpoint> endpoint = Endpoint::FromSockaddr(storage);
    holds = endpoint && std::find(ips.begin(), ips.end(), endpoint->ip) != ips.end();
  }
  ::freeifaddrs(addresses);
  return holds;
}

// Whether an interface in the network namespace at `path` has one of `ips`. Looked at
// from a thread of its own, so that the caller's thread never changes namespace: a socket
// it or a library opened meanwhile would land in the pod.
absl::StatusOr<bool> NamespaceHoldsAny(const std::string& path, const std::vector<IpAddress>& ips) {
  absl::StatusOr<Netns> target = Netns::Open(path);
  if (!target.ok()) return NameMissingCapabilities(target.status(), {CAP_SYS_PTRACE});
  absl::StatusOr<bool> holds = false;
  const auto look = [&] {
    absl::StatusOr<Netns> home = Netns::Current();
    if (!home.ok()) {
      holds = home.status();
      return;
    }
    ScopedNetns inside(*target, *home);
    holds = inside.status().ok() ? HoldsAnyHere(path, ips)
                                 : NameMissingCapabilities(inside.status(), {CAP_SYS_ADMIN});
  };
  try {
    std::thread(look).join();
  } catch (const std::system_error& e) {
    return absl::ResourceExhaustedError(
        fmt::format("no thread to look into network namespace {}: {}", path, e.what()));
  }
  return holds;
}

// "10.1.0.4", "10.1.0.4 or fd00::4".
std::string IpList(const std::vector<IpAddress>& ips) {
  std::string list;
  for (const IpAddress& ip : ips) {
    if (!list.empty()) list += " or ";
    list += ip.ToString();
  }
  return list;
}

// The cgroup root as a path under the mount: "" for the mount itself, else "/a/b".
std::string RootUnderMount(std::string_view root) {
  while (root.ends_with('/')) root.remove_suffix(1);
  while (root.starts_with('/')) root.remove_prefix(1);
  return root.empty() ? std::string() : fmt::format("/{}", root);
}

std::string_view WithoutTrailingSlash(std::string_view path) {
  while (path.size() > 1 && path.ends_with('/')) path.remove_suffix(1);
  return path;
}

// The absolute directory the scan starts from, as operators read it: "/sys/fs/cgroup/",
// "/sys/fs/cgroup/kubepods".
std::string ScannedDirectory(const NodePaths& paths) {
  const std::string root = RootUnderMount(paths.cgroup_root);
  return fmt::format("{}{}", WithoutTrailingSlash(paths.cgroup_mount), root.empty() ? "/" : root);
}

}  // namespace

std::optional<std::string> PodUidOfCgroupName(std::string_view name) {
  // cgroupfs driver: pod<uid>.
  constexpr std::string_view kPod = "pod";
  if (name.starts_with(kPod)) {
    name.remove_prefix(kPod.size());
    if (!IsPodId(name, '-')) return std::nullopt;
    return std::string(name);
  }
  // systemd driver: <parents>-pod<uid, '-' as '_'>.slice.
  constexpr std::string_view kSlice = ".slice";
  if (!name.ends_with(kSlice)) return std::nullopt;
  name.remove_suffix(kSlice.size());
  const size_t last_dash = name.rfind('-');
  if (last_dash == std::string_view::npos) return std::nullopt;
  std::string_view leaf = name.substr(last_dash + 1);
  if (!leaf.starts_with(kPod)) return std::nullopt;
  leaf.remove_prefix(kPod.size());
  if (!IsPodId(leaf, '_') || !IsKubepodsSliceParents(name.substr(0, last_dash))) {
    return std::nullopt;
  }
  std::string uid(leaf);
  std::replace(uid.begin(), uid.end(), '_', '-');
  return uid;
}

std::optional<std::string> PodUidOfProcessCgroup(std::string_view proc_cgroup) {
  std::optional<std::string> uid;
  ForEachPiece(proc_cgroup, '\n', [&](std::string_view line) {
    constexpr std::string_view kUnified = "0::";
    if (!line.starts_with(kUnified)) return true;
    line.remove_prefix(kUnified.size());
    // A cgroup removed while the process is still in it.
    constexpr std::string_view kDeleted = " (deleted)";
    if (line.ends_with(kDeleted)) line.remove_suffix(kDeleted.size());
    ForEachPiece(line, '/', [&](std::string_view component) {
      uid = PodUidOfCgroupName(component);
      return !uid;
    });
    return false;
  });
  return uid;
}

void PodLocator::Rescan() {
  const std::string directory = ScannedDirectory(paths_);
  absl::flat_hash_map<std::string, std::string> found;
  absl::Status status;
  Directory top = Directory::Open(directory);
  if (top.valid()) {
    FindPodDirectories(top, RootUnderMount(paths_.cgroup_root), 0, found);
  } else {
    status = ErrnoStatus(fmt::format("cannot read the cgroup tree at {}", directory), errno);
  }
  std::lock_guard lock(mutex_);
  cgroup_by_uid_ = std::move(found);
  scan_status_ = std::move(status);
}

std::optional<std::string> PodLocator::CgroupOf(std::string_view uid) const {
  std::lock_guard lock(mutex_);
  const auto it = cgroup_by_uid_.find(std::string(uid));
  if (it == cgroup_by_uid_.end()) return std::nullopt;
  return it->second;
}

absl::StatusOr<PodLocation> PodLocator::Locate(std::string_view uid,
                                               const std::vector<IpAddress>& ips) const {
  PodLocation location;
  {
    std::lock_guard lock(mutex_);
    if (!scan_status_.ok()) return scan_status_;
    const auto it = cgroup_by_uid_.find(std::string(uid));
    if (it == cgroup_by_uid_.end()) {
      return absl::UnavailableError(
          fmt::format("no cgroup for pod {} under {} yet (its containers may not have started)",
                      uid, ScannedDirectory(paths_)));
    }
    location.cgroup = it->second;
  }

  // The pod's processes, from its cgroups when the agent's pid namespace is the proc
  // root's.
  CgroupProcs listed;
  Directory pod = Directory::Open(
      fmt::format("{}{}", WithoutTrailingSlash(paths_.cgroup_mount), location.cgroup));
  if (pod.valid()) {
    ReadCgroupProcs(pod, 0, listed);
  } else {
    listed.complete = false;
  }
  std::vector<int> pids;
  for (int pid : listed.pids) {
    struct stat st;
    if (pid > 0 && ::stat(fmt::format("{}/{}", paths_.proc_root, pid).c_str(), &st) == 0) {
      pids.push_back(pid);
    }
  }
  // Listed as 0, or missing from the proc root: the proc root is of another pid namespace
  // (the host's, mounted into the agent's container), so ask its processes which pod they
  // belong to. A pod whose cgroups could all be read and list nobody has no process yet.
  if (pids.empty() && (!listed.pids.empty() || !listed.complete)) {
    pids = ProcessesOfPod(paths_.proc_root, uid);
  }
  if (pids.empty()) return absl::UnavailableError("no process in its cgroup yet");

  // Any process of the pod will do, the pause container's too: all share the pod's
  // namespace. One that is the host's means a host-network pod, or a runtime that has not
  // made the pod's namespace yet.
  absl::flat_hash_set<NamespaceId> host;
  for (const std::string& path :
       {std::string("/proc/self/ns/net"), fmt::format("{}/1/ns/net", paths_.proc_root)}) {
    if (const std::optional<NamespaceId> id = NamespaceOf(path)) host.insert(*id);
  }
  absl::flat_hash_set<NamespaceId> seen;
  bool outside_host = false;
  absl::Status unreadable;
  for (int pid : pids) {
    std::string path = fmt::format("{}/{}/ns/net", paths_.proc_root, pid);
    const std::optional<NamespaceId> id = NamespaceOf(path, &unreadable);
    if (!id || !seen.insert(*id).second) continue;  // gone meanwhile, or seen already
    if (host.contains(*id)) continue;
    outside_host = true;
    if (!ips.empty()) {
      const absl::StatusOr<bool> holds = NamespaceHoldsAny(path, ips);
      if (!holds.ok()) {
        unreadable = holds.status();
        continue;
      }
      if (!*holds) continue;
    }
    location.netns = std::move(path);
    location.pid = pid;
    return location;
  }
  if (seen.empty()) {
    return unreadable.ok() ? absl::UnavailableError("no process in its cgroup yet") : unreadable;
  }
  if (!outside_host) {
    return absl::UnavailableError("its processes are in the host's network namespace");
  }
  if (!unreadable.ok()) return unreadable;
  return absl::UnavailableError(
      fmt::format("no network namespace of its processes holds {}", IpList(ips)));
}

}  // namespace nodemesh::agent
