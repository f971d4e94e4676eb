#include "test/lib/test_node.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <poll.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <sstream>
#include <stdexcept>

#include "test/lib/files.h"
#include "test/lib/proc_stats.h"

namespace nodemesh::testing {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr std::string_view kNamePrefix = "nmt";
constexpr std::string_view kCgroupPrefix = "nodemesh-test-";
constexpr std::string_view kNetnsDir = "/var/run/netns";
constexpr std::string_view kEtcNetnsDir = "/etc/netns";
constexpr std::string_view kSysClassNet = "/sys/class/net";
constexpr int kPrefixLength = 24;
constexpr int kLastHostOctet = 254;
// Services' cluster IPs: 10.96.N.<kFirstServiceOctet...>, N the pod subnet's.
constexpr int kFirstServiceOctet = 10;
// Bounds every wait for the kernel during cleanup, so a stuck resource costs a warning
// instead of a hung test.
constexpr auto kCleanupTimeout = std::chrono::seconds(10);
constexpr auto kCommandTimeout = std::chrono::seconds(30);

template <typename... Args>
void Warn(fmt::format_string<Args...> format, Args&&... args) {
  std::fprintf(stderr, "test_node: %s\n", fmt::format(format, std::forward<Args>(args)...).c_str());
}

std::string Errno() { return std::strerror(errno); }

void RunOrThrow(std::vector<std::string> argv) {
  const std::string command = fmt::format("{}", fmt::join(argv, " "));
  const CommandResult result = RunCommand(std::move(argv), kCommandTimeout);
  if (result.exit_code != 0) {
    throw std::runtime_error(fmt::format(
        "`{}` failed ({}): {}", command,
        result.timed_out ? "timed out" : fmt::format("exit {}", result.exit_code), result.output));
  }
}

// For cleanup: failures are reported and the next step still runs.
void RunAndWarn(std::vector<std::string> argv) noexcept {
  try {
    RunOrThrow(std::move(argv));
  } catch (const std::exception& e) {
    Warn("cleanup: {}", e.what());
  }
}

bool Exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

std::vector<std::string> ListDirectory(std::string_view dir) {
  std::vector<std::string> names;
  std::error_code error;
  for (const fs::directory_entry& entry : fs::directory_iterator(dir, error)) {
    names.push_back(entry.path().filename().string());
  }
  return names;
}

bool IsHex4(std::string_view text) {
  return text.size() == 4 && std::all_of(text.begin(), text.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

// Also keeps names safe as path components ("..", "/").
bool IsDnsLabel(std::string_view name) {
  auto alphanumeric = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  return !name.empty() && name.size() <= 63 && alphanumeric(name.front()) &&
         alphanumeric(name.back()) && std::all_of(name.begin(), name.end(), [&](char c) {
           return alphanumeric(c) || c == '-' || c == '.';
         });
}

// The run id in one of our resource names, or nullopt for a name that is not ours.
std::optional<std::string> IdOfLink(std::string_view name) {
  if (!name.starts_with(kNamePrefix) || name.size() < kNamePrefix.size() + 5) return std::nullopt;
  const std::string_view id = name.substr(kNamePrefix.size(), 4);
  const std::string_view rest = name.substr(kNamePrefix.size() + 4);
  const bool is_bridge = rest == "br";
  const bool is_veth =
      rest.size() > 1 && rest[0] == 'p' &&
      std::all_of(rest.begin() + 1, rest.end(), [](char c) { return c >= '0' && c <= '9'; });
  if (!IsHex4(id) || !(is_bridge || is_veth)) return std::nullopt;
  return std::string(id);
}

std::optional<std::string> IdOfNetns(std::string_view name) {
  if (!name.starts_with(kNamePrefix) || name.size() < kNamePrefix.size() + 6) return std::nullopt;
  const std::string_view id = name.substr(kNamePrefix.size(), 4);
  if (!IsHex4(id) || name[kNamePrefix.size() + 4] != '-') return std::nullopt;
  return std::string(id);
}

std::optional<std::string> IdOfCgroup(std::string_view name) {
  if (!name.starts_with(kCgroupPrefix)) return std::nullopt;
  const std::string_view id = name.substr(kCgroupPrefix.size());
  if (!IsHex4(id)) return std::nullopt;
  return std::string(id);
}

// The run id of an nftables table of ours ("nodemesh-test-<id>", family ip).
std::optional<std::string> IdOfNatTable(std::string_view name) { return IdOfCgroup(name); }

// Where nft is, if it is installed: machines without it cannot have tables of ours.
const std::optional<std::string>& NftPath() {
  static const std::optional<std::string> path = []() -> std::optional<std::string> {
    for (const char* candidate : {"/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"}) {
      if (::access(candidate, X_OK) == 0) return std::string(candidate);
    }
    return std::nullopt;
  }();
  return path;
}

// The names of the ip-family nftables tables of the host netns.
std::vector<std::string> NatTables() {
  std::vector<std::string> names;
  if (!NftPath()) return names;
  std::istringstream lines(
      RunCommand({*NftPath(), "list", "tables", "ip"}, kCommandTimeout).output);
  std::string line;
  while (std::getline(lines, line)) {
    std::istringstream words(line);
    std::string table, family, name;
    if (words >> table >> family >> name && table == "table" && family == "ip") {
      names.push_back(name);
    }
  }
  return names;
}

std::optional<std::string> IdOfMarker(std::string_view name) {
  if (!name.ends_with(".owner")) return std::nullopt;
  const std::string_view id = name.substr(0, name.size() - 6);
  if (!IsHex4(id)) return std::nullopt;
  return std::string(id);
}

std::string MarkerPath(const std::string& id) {
  return fmt::format("{}/{}.owner", kTestStateDir, id);
}

struct Marker {
  pid_t pid = 0;
  unsigned long long start = 0;
  int subnet = -1;
};

std::optional<Marker> ReadMarker(const std::string& id) {
  Marker marker;
  const std::string text = ReadFile(MarkerPath(id));
  if (std::sscanf(text.c_str(), "pid=%d start=%llu subnet=%d", &marker.pid, &marker.start,
                  &marker.subnet) != 3) {
    return std::nullopt;
  }
  return marker;
}

bool OwnerAlive(const Marker& marker) {
  const std::optional<unsigned long long> start = ProcessStartTime(marker.pid);
  return start && *start == marker.start;
}

void WriteFileAtomically(const std::string& path, std::string_view contents) {
  const std::string temp = fmt::format("{}.tmp-{}", path, ::getpid());
  {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    out << contents;
    out.flush();
    if (!out) throw std::runtime_error(fmt::format("cannot write {}", temp));
  }
  if (std::rename(temp.c_str(), path.c_str()) != 0) {
    const std::string error = Errno();
    std::remove(temp.c_str());
    throw std::runtime_error(fmt::format("cannot rename {} to {}: {}", temp, path, error));
  }
}

// Serializes id and subnet allocation, netns creation and sweeping among all test
// processes on the machine. flock() locks belong to the open file, so two networks in one
// process exclude each other too; the kernel drops the lock if the holder dies.
class StateLock {
 public:
  StateLock() {
    if (::mkdir(std::string(kTestStateDir).c_str(), 0755) != 0 && errno != EEXIST) {
      throw std::runtime_error(fmt::format("cannot create {}: {}", kTestStateDir, Errno()));
    }
    const std::string path = fmt::format("{}/lock", kTestStateDir);
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) throw std::runtime_error(fmt::format("cannot open {}: {}", path, Errno()));
    while (::flock(fd_, LOCK_EX) != 0) {
      if (errno != EINTR) {
        const std::string error = Errno();
        ::close(fd_);
        throw std::runtime_error(fmt::format("cannot lock {}: {}", path, error));
      }
    }
  }
  ~StateLock() { ::close(fd_); }
  StateLock(const StateLock&) = delete;
  StateLock& operator=(const StateLock&) = delete;

 private:
  int fd_ = -1;
};

int PidfdOpen(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

bool PidfdKill(int pidfd) {
  return ::syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, nullptr, 0) == 0;
}

// Waits (bounded) until each process is gone; closes the descriptors.
void AwaitExit(const std::vector<int>& pidfds) {
  const Clock::time_point deadline = Clock::now() + kCleanupTimeout;
  for (const int pidfd : pidfds) {
    pollfd exited{.fd = pidfd, .events = POLLIN, .revents = 0};
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (::poll(&exited, 1, static_cast<int>(std::max<long long>(left.count(), 0))) != 1) {
      Warn("cleanup: a killed process has not exited after {} s", kCleanupTimeout.count());
    }
    ::close(pidfd);
  }
}

bool SameNamespace(const std::string& ns_file, const struct stat& target) {
  struct stat st {};
  return ::stat(ns_file.c_str(), &st) == 0 && st.st_dev == target.st_dev &&
         st.st_ino == target.st_ino;
}

// Kills every process (other than this one) whose network namespace is the one at
// `netns_path`: ones started with setns but without the pod's cgroup, or by hand with
// `ip netns exec`. Each pid is pinned with a pidfd and checked again before the signal,
// so a reused pid is never hit.
void KillNetnsProcesses(const std::string& netns_path) noexcept {
  try {
    struct stat target {};
    if (::stat(netns_path.c_str(), &target) != 0) return;
    std::vector<int> killed;
    for (const std::string& entry : ListDirectory("/proc")) {
      if (entry.empty() || !std::all_of(entry.begin(), entry.end(), ::isdigit)) continue;
      const pid_t pid = static_cast<pid_t>(std::stol(entry));
      const std::string ns_file = fmt::format("/proc/{}/ns/net", pid);
      if (pid == ::getpid() || !SameNamespace(ns_file, target)) continue;
      const int pidfd = PidfdOpen(pid);
      if (pidfd < 0) continue;
      if (SameNamespace(ns_file, target) && PidfdKill(pidfd)) {
        killed.push_back(pidfd);
      } else {
        ::close(pidfd);
      }
    }
    AwaitExit(killed);
  } catch (const std::exception& e) {
    Warn("cleanup: killing processes in {}: {}", netns_path, e.what());
  }
}

bool CgroupPopulated(const std::string& dir) {
  const std::string events = ReadFile(dir + "/cgroup.events");
  return events.find("populated 1") != std::string::npos;
}

// Without cgroup.kill (kernels before 5.14): SIGKILL each listed process, pinned by pidfd
// and checked to still be in this cgroup subtree.
void KillCgroupProcessesOneByOne(const std::string& dir) {
  const std::string relative = dir.substr(CgroupMount().size());
  std::vector<int> killed;
  std::error_code error;
  std::vector<std::string> dirs = {dir};
  for (const fs::directory_entry& entry : fs::recursive_directory_iterator(dir, error)) {
    if (entry.is_directory(error)) dirs.push_back(entry.path().string());
  }
  for (const std::string& cgroup : dirs) {
    std::istringstream procs(ReadFile(cgroup + "/cgroup.procs"));
    pid_t pid;
    while (procs >> pid) {
      if (pid == ::getpid()) continue;
      const int pidfd = PidfdOpen(pid);
      if (pidfd < 0) continue;
      const std::string membership = ReadFile(fmt::format("/proc/{}/cgroup", pid));
      if (membership.find("0::" + relative) != std::string::npos && PidfdKill(pidfd)) {
        killed.push_back(pidfd);
      } else {
        ::close(pidfd);
      }
    }
  }
  AwaitExit(killed);
}

// Kills every process in the cgroup subtree at `dir` and waits until it is empty.
void KillCgroupTree(const std::string& dir) noexcept {
  try {
    if (!Exists(dir) || !CgroupPopulated(dir)) return;
    const std::string kill_file = dir + "/cgroup.kill";
    const bool has_kill_file = Exists(kill_file);
    const Clock::time_point deadline = Clock::now() + kCleanupTimeout;
    while (CgroupPopulated(dir)) {
      if (Clock::now() >= deadline) {
        Warn("cleanup: cgroup {} still has processes after {} s", dir, kCleanupTimeout.count());
        return;
      }
      if (has_kill_file) {
        // Kills the whole subtree at once, including processes forking meanwhile.
        std::ofstream(kill_file) << "1";
      } else {
        KillCgroupProcessesOneByOne(dir);
      }
      PollUntil([&] { return !CgroupPopulated(dir); }, std::chrono::seconds(1),
                std::chrono::milliseconds(5));
    }
  } catch (const std::exception& e) {
    Warn("cleanup: killing processes in cgroup {}: {}", dir, e.what());
  }
}

// rmdir bottom-up; cgroup directories cannot be removed recursively in one call.
void RemoveCgroupTree(const std::string& dir) noexcept {
  try {
    if (!Exists(dir)) return;
    std::error_code error;
    for (const fs::directory_entry& entry : fs::directory_iterator(dir, error)) {
      if (entry.is_directory(error)) RemoveCgroupTree(entry.path().string());
    }
    // A cgroup whose last process just died can stay busy for a moment.
    const bool removed = PollUntil([&] { return ::rmdir(dir.c_str()) == 0 || errno == ENOENT; },
                                   std::chrono::seconds(2), std::chrono::milliseconds(10));
    if (!removed) Warn("cleanup: cannot remove cgroup {}: {}", dir, Errno());
  } catch (const std::exception& e) {
    Warn("cleanup: removing cgroup {}: {}", dir, e.what());
  }
}

void DeleteLink(const std::string& name) noexcept {
  if (Exists(fmt::format("{}/{}", kSysClassNet, name))) RunAndWarn({"ip", "link", "del", name});
}

// What `ip netns del` does, without a fork per namespace.
void DeleteNetns(const std::string& name) noexcept {
  const std::string path = fmt::format("{}/{}", kNetnsDir, name);
  if (!Exists(path)) return;
  if (::umount2(path.c_str(), MNT_DETACH) != 0 && errno != EINVAL) {
    Warn("cleanup: cannot unmount {}: {}", path, Errno());
  }
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    Warn("cleanup: cannot remove {}: {}", path, Errno());
  }
}

void RemoveEtcNetns(const std::string& netns_name) noexcept {
  std::error_code error;
  fs::remove_all(fs::path(kEtcNetnsDir) / netns_name, error);
  if (error) Warn("cleanup: cannot remove {}/{}: {}", kEtcNetnsDir, netns_name, error.message());
}

// Everything of run `id`, in the order that lets each step succeed: processes first (they
// hold namespaces and cgroups), then links, namespaces, files and cgroups.
void RemoveAllWithId(const std::string& id) noexcept {
  try {
    const std::string cgroup_root = fmt::format("{}/{}{}", CgroupMount(), kCgroupPrefix, id);
    const std::string name_prefix = fmt::format("{}{}", kNamePrefix, id);
    KillCgroupTree(cgroup_root);
    std::vector<std::string> netns_names;
    for (const std::string& name : ListDirectory(kNetnsDir)) {
      if (IdOfNetns(name) == id) netns_names.push_back(name);
    }
    for (const std::string& name : netns_names) {
      KillNetnsProcesses(fmt::format("{}/{}", kNetnsDir, name));
    }
    for (const std::string& name : ListDirectory(kSysClassNet)) {
      if (IdOfLink(name) == id) DeleteLink(name);
    }
    for (const std::string& name : netns_names) DeleteNetns(name);
    for (const std::string& name : ListDirectory(kEtcNetnsDir)) {
      if (IdOfNetns(name) == id) RemoveEtcNetns(name);
    }
    for (const std::string& name : NatTables()) {
      if (IdOfNatTable(name) == id) RunAndWarn({*NftPath(), "delete", "table", "ip", name});
    }
    RemoveCgroupTree(cgroup_root);
  } catch (const std::exception& e) {
    Warn("cleanup of run {}: {}", id, e.what());
  }
}

// Requires the StateLock. A resource whose id has no live owner is stale: owners write
// their marker (under the lock) before creating anything and remove it (under the lock)
// after removing everything.
void SweepLocked() {
  std::set<std::string> ids;
  auto collect = [&ids](std::string_view dir, auto id_of) {
    for (const std::string& name : ListDirectory(dir)) {
      if (std::optional<std::string> id = id_of(name)) ids.insert(*id);
    }
  };
  collect(kTestStateDir, IdOfMarker);
  collect(kSysClassNet, IdOfLink);
  collect(kNetnsDir, IdOfNetns);
  collect(kEtcNetnsDir, IdOfNetns);
  collect(CgroupMount(), IdOfCgroup);
  for (const std::string& name : NatTables()) {
    if (std::optional<std::string> id = IdOfNatTable(name)) ids.insert(*id);
  }
  for (const std::string& id : ids) {
    const std::optional<Marker> marker = ReadMarker(id);
    if (marker && OwnerAlive(*marker)) continue;
    RemoveAllWithId(id);
    ::unlink(MarkerPath(id).c_str());
  }
  // Temp files of a marker write interrupted by a crash.
  for (const std::string& name : ListDirectory(kTestStateDir)) {
    if (name.find(".owner.tmp-") != std::string::npos) {
      ::unlink(fmt::format("{}/{}", kTestStateDir, name).c_str());
    }
  }
}

// IPv4 networks in use in the host namespace: (address in host order, prefix length).
std::vector<std::pair<uint32_t, int>> HostIpv4Prefixes() {
  std::vector<std::pair<uint32_t, int>> prefixes;
  auto parse = [&prefixes](std::string_view token) {
    const size_t slash = token.find('/');
    const std::string address(token.substr(0, slash));
    const int length =
        slash == std::string_view::npos ? 32 : std::stoi(std::string(token.substr(slash + 1)));
    in_addr parsed{};
    if (::inet_pton(AF_INET, address.c_str(), &parsed) == 1) {
      prefixes.emplace_back(ntohl(parsed.s_addr), length);
    }
  };
  std::istringstream addresses(RunCommand({"ip", "-4", "-o", "addr", "show"}).output);
  std::string line;
  while (std::getline(addresses, line)) {
    std::istringstream words(line);
    std::string word;
    while (words >> word) {
      if (word == "inet" && words >> word) parse(word);
    }
  }
  std::istringstream routes(RunCommand({"ip", "-4", "route", "show", "table", "all"}).output);
  static const std::set<std::string> kRouteTypes = {
      "unicast",   "local",       "broadcast", "multicast", "anycast",
      "blackhole", "unreachable", "prohibit",  "throw",     "nat"};
  while (std::getline(routes, line)) {
    std::istringstream words(line);
    std::string word;
    if (!(words >> word)) continue;
    if (kRouteTypes.contains(word) && !(words >> word)) continue;
    parse(word);
  }
  return prefixes;
}

uint32_t SubnetBase(int index) {
  return (10u << 24) | (77u << 16) | (static_cast<uint32_t>(index) << 8);
}

uint32_t ServiceBase(int index) {
  return (10u << 24) | (96u << 16) | (static_cast<uint32_t>(index) << 8);
}

std::string FormatIpv4(uint32_t address) {
  return fmt::format("{}.{}.{}.{}", address >> 24, (address >> 16) & 0xff, (address >> 8) & 0xff,
                     address & 0xff);
}

// fd77:0:0:<subnet>::<host>, written as inet_ntop writes it (as peers print addresses).
std::string PodIpv6(int subnet_index, int host) {
  in6_addr address{};
  address.s6_addr[0] = 0xfd;
  address.s6_addr[1] = 0x77;
  address.s6_addr[6] = static_cast<uint8_t>(subnet_index >> 8);
  address.s6_addr[7] = static_cast<uint8_t>(subnet_index);
  address.s6_addr[15] = static_cast<uint8_t>(host);
  char text[INET6_ADDRSTRLEN];
  return inet_ntop(AF_INET6, &address, text, sizeof text);
}

// Requires the StateLock, after the sweep: every remaining marker is a live run.
int PickSubnet() {
  std::set<int> taken;
  for (const std::string& name : ListDirectory(kTestStateDir)) {
    if (std::optional<std::string> id = IdOfMarker(name)) {
      if (std::optional<Marker> marker = ReadMarker(*id)) taken.insert(marker->subnet);
    }
  }
  const std::vector<std::pair<uint32_t, int>> host = HostIpv4Prefixes();
  for (int index = 0; index < 256; ++index) {
    if (taken.contains(index)) continue;
    const uint32_t base = SubnetBase(index);
    // A broader host route (10.0.0.0/8, say) is fine: the bridge's /24 is more specific.
    const bool clashes = std::any_of(host.begin(), host.end(), [base](const auto& prefix) {
      return prefix.second >= kPrefixLength && (prefix.first & 0xffffff00u) == base;
    });
    if (!clashes) return index;
  }
  throw std::runtime_error("no free 10.77.N.0/24 subnet for a test pod network");
}

std::string PickId() {
  std::random_device entropy;
  for (int attempt = 0; attempt < 1000; ++attempt) {
    const std::string id = fmt::format("{:04x}", entropy() & 0xffff);
    const bool in_use = Exists(MarkerPath(id)) ||
                        Exists(fmt::format("{}/{}{}br", kSysClassNet, kNamePrefix, id)) ||
                        Exists(fmt::format("{}/{}{}", CgroupMount(), kCgroupPrefix, id));
    if (!in_use) return id;
  }
  throw std::runtime_error("no free id for a test pod network");
}

std::string UnescapeMountinfo(std::string_view field) {
  std::string out;
  for (size_t i = 0; i < field.size(); ++i) {
    if (field[i] == '\\' && i + 3 < field.size()) {
      out += static_cast<char>(std::stoi(std::string(field.substr(i + 1, 3)), nullptr, 8));
      i += 3;
    } else {
      out += field[i];
    }
  }
  return out;
}

std::string FindCgroupMount() {
  std::ifstream mountinfo("/proc/self/mountinfo");
  std::string line;
  while (std::getline(mountinfo, line)) {
    // id parent major:minor root mount-point options [optional...] - type source super
    std::istringstream fields(line);
    std::vector<std::string> words;
    std::string word;
    while (fields >> word) words.push_back(word);
    const auto separator = std::find(words.begin(), words.end(), "-");
    if (words.size() < 5 || separator == words.end() || separator + 1 == words.end()) continue;
    if (*(separator + 1) == "cgroup2" && words[3] == "/") return UnescapeMountinfo(words[4]);
  }
  throw std::runtime_error("cgroup v2 is not mounted (no cgroup2 entry in /proc/self/mountinfo)");
}

}  // namespace

const std::string& CgroupMount() {
  static const std::string mount = FindCgroupMount();
  return mount;
}

void SweepStaleTestResources() {
  StateLock lock;
  SweepLocked();
}

// ---- Pod ----

Process Pod::Run(std::vector<std::string> argv, Process::Options options) const {
  options.cgroup_dir = process_cgroup_dir;
  options.netns_path = netns_path;
  if (options.hosts_file.empty()) options.hosts_file = hosts_file;
  return Process(std::move(argv), std::move(options));
}

CommandResult Pod::RunCommand(std::vector<std::string> argv, std::chrono::milliseconds timeout,
                              Process::Options options) const {
  options.cgroup_dir = process_cgroup_dir;
  options.netns_path = netns_path;
  if (options.hosts_file.empty()) options.hosts_file = hosts_file;
  return testing::RunCommand(std::move(argv), timeout, std::move(options));
}

// ---- PodNetwork ----

std::string Service::target() const { return fmt::format("{}:{}", cluster_ip, port); }

PodNetwork::PodNetwork(PodNetworkOptions options) : options_(options) {
  if (::geteuid() != 0) {
    throw std::runtime_error(
        "PodNetwork needs root (netns, veth, bridge and cgroup creation): run kernel tests as "
        "root");
  }
  {
    StateLock lock;
    SweepLocked();
    id_ = PickId();
    subnet_index_ = PickSubnet();
    const std::optional<unsigned long long> start = ProcessStartTime(::getpid());
    if (!start) throw std::runtime_error("cannot read this process's start time");
    WriteFileAtomically(MarkerPath(id_), fmt::format("pid={} start={} subnet={}\n", ::getpid(),
                                                     *start, subnet_index_));
  }
  bridge_ = fmt::format("{}{}br", kNamePrefix, id_);
  subnet_ = fmt::format("{}/{}", FormatIpv4(SubnetBase(subnet_index_)), kPrefixLength);
  gateway_ = FormatIpv4(SubnetBase(subnet_index_) | 1);
  cgroup_root_ = fmt::format("{}/{}{}", CgroupMount(), kCgroupPrefix, id_);
  try {
    CreateBridge();
  } catch (...) {
    Teardown();
    throw;
  }
}

void PodNetwork::CreateBridge() {
  // A fixed address: otherwise the bridge takes the lowest address of its ports, which
  // changes as pods come and go and leaves the pods' ARP entries for the gateway stale.
  const unsigned id_bits = static_cast<unsigned>(std::stoul(id_, nullptr, 16));
  const std::string mac =
      fmt::format("02:6e:6d:{:02x}:{:02x}:{:02x}", subnet_index_, id_bits >> 8, id_bits & 0xff);
  RunOrThrow({"ip", "link", "add", "name", bridge_, "address", mac, "type", "bridge"});
  RunOrThrow({"ip", "addr", "add", fmt::format("{}/{}", gateway_, kPrefixLength), "dev", bridge_});
  RunOrThrow({"ip", "link", "set", bridge_, "up"});
  if (options_.routed) {
    // The bridge's own setting, gone with it: the host's global ip_forward is not touched.
    const std::string forwarding = fmt::format("/proc/sys/net/ipv4/conf/{}/forwarding", bridge_);
    std::ofstream(forwarding) << "1";
    if (ReadFile(forwarding) != "1\n") {
      throw std::runtime_error(fmt::format("cannot enable forwarding in {}", forwarding));
    }
    RunOrThrow({"ip", "route", "add",
                fmt::format("{}/{}", FormatIpv4(ServiceBase(subnet_index_)), kPrefixLength), "dev",
                bridge_});
  }
  if (::mkdir(cgroup_root_.c_str(), 0755) != 0) {
    throw std::runtime_error(fmt::format("cannot create cgroup {}: {}", cgroup_root_, Errno()));
  }
}

PodNetwork::~PodNetwork() {
  if (!node_names_.empty()) {
    // The nodes hold a reference to this network; going on would leave them dangling.
    std::fprintf(stderr,
                 "test_node: PodNetwork %s destroyed before its TestNodes; destroy the nodes "
                 "first\n",
                 id_.c_str());
    std::abort();
  }
  Teardown();
}

void PodNetwork::Teardown() noexcept {
  RemoveAllWithId(id_);
  try {
    StateLock lock;
    ::unlink(MarkerPath(id_).c_str());
  } catch (const std::exception& e) {
    Warn("cleanup: cannot remove the marker of run {}: {}", id_, e.what());
  }
}

std::string PodNetwork::nat_table() const { return fmt::format("{}{}", kCgroupPrefix, id_); }

const Service& PodNetwork::AddService(ServiceSpec spec) {
  if (!options_.routed) {
    throw std::invalid_argument(
        "Services need a routed pod network (PodNetworkOptions::routed): on a plain bridge "
        "a backend's replies would bypass the host's NAT");
  }
  if (!NftPath()) throw std::runtime_error("Services need nft (apt-get install nftables)");
  if (!IsDnsLabel(spec.name) || !IsDnsLabel(spec.namespace_name) || spec.backends.empty()) {
    throw std::invalid_argument(
        fmt::format("service {}/{}: names must be DNS labels, and it needs backends",
                    spec.namespace_name, spec.name));
  }
  const int octet = kFirstServiceOctet + static_cast<int>(services_.size());
  if (octet > kLastHostOctet) throw std::runtime_error("no cluster IP left for a Service");
  for (const auto& other : services_) {
    if (other->name == spec.name) {
      throw std::invalid_argument(fmt::format("a service named {} already exists", spec.name));
    }
  }
  auto service = std::make_unique<Service>();
  static_cast<ServiceSpec&>(*service) = std::move(spec);
  service->cluster_ip = FormatIpv4(ServiceBase(subnet_index_) | static_cast<uint32_t>(octet));
  service->chain = "svc-" + service->name;
  const std::string table = nat_table();
  if (!nat_table_created_) {
    RunOrThrow({*NftPath(), "add table ip " + table});
    nat_table_created_ = true;
    RunOrThrow({*NftPath(), "add chain ip " + table +
                                " prerouting { type nat hook prerouting priority dstnat; "
                                "policy accept; }"});
  }
  RunOrThrow({*NftPath(), fmt::format("add chain ip {} {}", table, service->chain)});
  AddServiceRules(*service);
  RunOrThrow({*NftPath(), fmt::format("add rule ip {} prerouting ip daddr {} tcp dport {} jump {}",
                                      table, service->cluster_ip, service->port, service->chain)});
  services_.push_back(std::move(service));
  return *services_.back();
}

void PodNetwork::AddServiceRules(const Service& service) {
  std::vector<std::string> entries;
  for (size_t i = 0; i < service.backends.size(); ++i) {
    const std::string& backend = service.backends[i];
    const size_t colon = backend.rfind(':');
    if (colon == std::string::npos) {
      throw std::invalid_argument(fmt::format("backend '{}' is not ip:port", backend));
    }
    entries.push_back(
        fmt::format("{} : {} . {}", i, backend.substr(0, colon), backend.substr(colon + 1)));
  }
  // In turn (numgen inc), so that a test knows which connection goes where.
  RunOrThrow({*NftPath(), fmt::format("add rule ip {} {} meta l4proto tcp dnat ip addr . port to "
                                      "numgen inc mod {} map {{ {} }}",
                                      nat_table(), service.chain, service.backends.size(),
                                      fmt::join(entries, ", "))});
}

void PodNetwork::RemoveServiceNat(const Service& service) {
  RunOrThrow({*NftPath(), fmt::format("flush chain ip {} {}", nat_table(), service.chain)});
}

void PodNetwork::RestoreServiceNat(const Service& service) {
  RemoveServiceNat(service);
  AddServiceRules(service);
}

PodNetwork::PodAddress PodNetwork::AllocatePodAddress() {
  if (next_host_octet_ > kLastHostOctet) {
    throw std::runtime_error(fmt::format("pod network {} is full", subnet_));
  }
  const int octet = next_host_octet_++;
  return {.ip = FormatIpv4(SubnetBase(subnet_index_) | static_cast<uint32_t>(octet)),
          .ip6 = PodIpv6(subnet_index_, octet),
          .veth = fmt::format("{}{}p{}", kNamePrefix, id_, next_veth_++)};
}

void PodNetwork::AddToHosts(const Pod* pod) {
  pods_.push_back(pod);
  WriteHostsFiles();
}

void PodNetwork::RemoveFromHosts(const Pod* pod) noexcept {
  pods_.erase(std::remove(pods_.begin(), pods_.end(), pod), pods_.end());
  try {
    WriteHostsFiles();
  } catch (const std::exception& e) {
    Warn("cleanup: rewriting hosts files: {}", e.what());
  }
}

// Rewritten in place, not renamed: processes already running in a pod have the file
// bind-mounted by inode and must see the new pods too. Written over the old bytes before
// truncating, so a reader never finds it empty.
void PodNetwork::WriteHostsFiles() const {
  std::string contents = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";
  for (const Pod* pod : pods_) {
    contents += fmt::format("{}\t{} {}.{}\n", pod->ip, pod->name, pod->name, pod->namespace_name);
  }
  for (const Pod* pod : pods_) {
    const int fd = ::open(pod->hosts_file.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
      throw std::runtime_error(fmt::format("cannot open {}: {}", pod->hosts_file, Errno()));
    const bool written = ::pwrite(fd, contents.data(), contents.size(), 0) ==
                             static_cast<ssize_t>(contents.size()) &&
                         ::ftruncate(fd, static_cast<off_t>(contents.size())) == 0;
    const std::string error = Errno();
    ::close(fd);
    if (!written)
      throw std::runtime_error(fmt::format("cannot write {}: {}", pod->hosts_file, error));
  }
}

// ---- TestNode ----

TestNode::TestNode(PodNetwork& network, std::string name)
    : network_(network), name_(std::move(name)) {
  if (!IsDnsLabel(name_)) {
    throw std::invalid_argument(fmt::format("node name '{}' is not a DNS label", name_));
  }
  if (network_.node_names_.contains(name_)) {
    throw std::invalid_argument(fmt::format("node '{}' already exists on this network", name_));
  }
  cgroup_path_ = fmt::format("/{}{}/{}", kCgroupPrefix, network_.id(), name_);
  cgroup_dir_ = CgroupMount() + cgroup_path_;
  if (::mkdir(cgroup_dir_.c_str(), 0755) != 0) {
    throw std::runtime_error(fmt::format("cannot create cgroup {}: {}", cgroup_dir_, Errno()));
  }
  network_.node_names_.insert(name_);
}

TestNode::~TestNode() {
  for (auto pod = pods_.rbegin(); pod != pods_.rend(); ++pod) RemovePod(**pod);
  pods_.clear();
  KillCgroupTree(cgroup_dir_);  // anything a test put into the node's cgroup itself
  RemoveCgroupTree(cgroup_dir_);
  network_.node_names_.erase(name_);
}

const Pod& TestNode::AddPod(PodSpec spec) {
  if (!IsDnsLabel(spec.name) || !IsDnsLabel(spec.namespace_name)) {
    throw std::invalid_argument(
        fmt::format("pod {}/{}: names must be DNS labels", spec.namespace_name, spec.name));
  }
  for (const Pod* other : network_.pods_) {
    if (other->name == spec.name) {
      throw std::invalid_argument(fmt::format("a pod named {} already exists", spec.name));
    }
  }
  auto pod = std::make_unique<Pod>();
  static_cast<PodSpec&>(*pod) = std::move(spec);
  PodNetwork::PodAddress address = network_.AllocatePodAddress();
  pod->ip = std::move(address.ip);
  if (pod->ipv6) pod->ip6 = std::move(address.ip6);
  pod->host_veth = std::move(address.veth);
  pod->netns_name = fmt::format("{}{}-{}", kNamePrefix, network_.id(), pod->name);
  pod->netns_path = fmt::format("{}/{}", kNetnsDir, pod->netns_name);
  pod->cgroup_path = pod->cgroup_subpath.empty()
                         ? fmt::format("{}/{}_{}", cgroup_path_, pod->namespace_name, pod->name)
                         : fmt::format("{}/{}", cgroup_path_, pod->cgroup_subpath);
  pod->cgroup_dir = CgroupMount() + pod->cgroup_path;
  pod->process_cgroup_dir = pod->container_cgroup.empty()
                                ? pod->cgroup_dir
                                : fmt::format("{}/{}", pod->cgroup_dir, pod->container_cgroup);
  pod->hosts_file = fmt::format("{}/{}/hosts", kEtcNetnsDir, pod->netns_name);
  pods_.push_back(std::move(pod));
  Pod& added = *pods_.back();
  try {
    CreatePodResources(added);
  } catch (...) {
    RemovePod(added);
    pods_.pop_back();
    throw;
  }
  return added;
}

void TestNode::CreatePodResources(Pod& pod) {
  // The kubelet's parents (QoS slices) may exist already, shared with other pods.
  std::error_code parents_error;
  fs::create_directories(fs::path(pod.cgroup_dir).parent_path(), parents_error);
  if (::mkdir(pod.cgroup_dir.c_str(), 0755) != 0) {
    throw std::runtime_error(fmt::format("cannot create cgroup {}: {}", pod.cgroup_dir, Errno()));
  }
  if (pod.process_cgroup_dir != pod.cgroup_dir &&
      ::mkdir(pod.process_cgroup_dir.c_str(), 0755) != 0) {
    throw std::runtime_error(
        fmt::format("cannot create cgroup {}: {}", pod.process_cgroup_dir, Errno()));
  }
  struct stat cgroup {};
  if (::stat(pod.cgroup_dir.c_str(), &cgroup) != 0) {
    throw std::runtime_error(fmt::format("cannot stat {}: {}", pod.cgroup_dir, Errno()));
  }
  pod.cgroup_id = cgroup.st_ino;  // a cgroup v2 directory's inode number is the cgroup id
  {
    // Under the lock: the first `ip netns add` on a machine sets up /var/run/netns as a
    // shared mount, which concurrent callers would each try to do.
    StateLock lock;
    RunOrThrow({"ip", "netns", "add", pod.netns_name});
  }
  RunOrThrow({"ip", "link", "add", pod.host_veth, "type", "veth", "peer", "name", "eth0", "netns",
              pod.netns_name});
  RunOrThrow({"ip", "link", "set", pod.host_veth, "master", network_.bridge(), "up"});
  // Routed: no on-link route for the /24 (see PodNetworkOptions::routed).
  std::vector<std::string> add_address = {
      "ip",  "-n",  pod.netns_name, "addr", "add", fmt::format("{}/{}", pod.ip, kPrefixLength),
      "dev", "eth0"};
  if (network_.routed()) add_address.push_back("noprefixroute");
  RunOrThrow(add_address);
  if (!pod.ip6.empty()) {
    // nodad: usable at once, not after duplicate address detection.
    RunOrThrow({"ip", "-n", pod.netns_name, "addr", "add", fmt::format("{}/64", pod.ip6), "dev",
                "eth0", "nodad"});
  }
  RunOrThrow({"ip", "-n", pod.netns_name, "link", "set", "lo", "up"});
  RunOrThrow({"ip", "-n", pod.netns_name, "link", "set", "eth0", "up"});
  if (network_.routed()) {
    RunOrThrow({"ip", "-n", pod.netns_name, "route", "add", network_.gateway(), "dev", "eth0",
                "scope", "link"});
    RunOrThrow(
        {"ip", "-n", pod.netns_name, "route", "add", network_.subnet(), "via", network_.gateway()});
    // The host would tell the pod to go direct (the backend is on the same link), and the
    // replies would then bypass its NAT.
    RunOrThrow({"ip", "netns", "exec", pod.netns_name, "sysctl", "-q", "-w",
                "net.ipv4.conf.all.accept_redirects=0", "net.ipv4.conf.eth0.accept_redirects=0"});
  }
  RunOrThrow({"ip", "-n", pod.netns_name, "route", "add", "default", "via", network_.gateway()});
  std::error_code error;
  fs::create_directories(fs::path(pod.hosts_file).parent_path(), error);
  if (error) {
    throw std::runtime_error(fmt::format(
        "cannot create {}: {}", fs::path(pod.hosts_file).parent_path().string(), error.message()));
  }
  network_.AddToHosts(&pod);
  if (!inventory_path_.empty()) RewriteInventory();
}

void TestNode::RemovePod(Pod& pod) noexcept {
  network_.RemoveFromHosts(&pod);
  KillCgroupTree(pod.cgroup_dir);
  KillNetnsProcesses(pod.netns_path);
  DeleteLink(pod.host_veth);  // takes eth0 in the pod with it
  DeleteNetns(pod.netns_name);
  RemoveEtcNetns(pod.netns_name);
  RemoveCgroupTree(pod.cgroup_dir);
}

const Pod& TestNode::pod(std::string_view name) const {
  for (const auto& pod : pods_) {
    if (pod->name == name) return *pod;
  }
  throw std::out_of_range(fmt::format("node {} has no pod {}", name_, name));
}

std::vector<const Pod*> TestNode::pods() const {
  std::vector<const Pod*> out;
  for (const auto& pod : pods_) out.push_back(pod.get());
  return out;
}

std::string TestNode::InventoryJson() const {
  // Ordered, so the file reads in the documented field order.
  nlohmann::ordered_json pods = nlohmann::ordered_json::array();
  for (const auto& pod : pods_) {
    nlohmann::ordered_json labels = nlohmann::ordered_json::object();
    for (const auto& [key, value] : pod->labels) labels[key] = value;
    pods.push_back({
        {"namespace", pod->namespace_name},
        {"name", pod->name},
        {"owner", {{"kind", pod->owner_kind}, {"name", pod->owner_name}}},
        {"labels", labels},
        {"serviceAccount", pod->service_account},
        {"ips", pod->ip6.empty() ? nlohmann::ordered_json::array({pod->ip})
                                 : nlohmann::ordered_json::array({pod->ip, pod->ip6})},
        {"cgroup", pod->cgroup_path},
        {"netns", pod->netns_path},
        {"meshed", pod->meshed},
    });
  }
  nlohmann::ordered_json inventory = {{"pods", pods}};
  if (!network_.services().empty()) {
    nlohmann::ordered_json services = nlohmann::ordered_json::array();
    for (const auto& service : network_.services()) {
      services.push_back({{"namespace", service->namespace_name},
                          {"name", service->name},
                          {"clusterIPs", nlohmann::ordered_json::array({service->cluster_ip})}});
    }
    inventory["services"] = services;
  }
  return inventory.dump() + "\n";
}

void TestNode::WriteInventory(const std::string& path) {
  inventory_path_ = path;
  RewriteInventory();
}

void TestNode::RewriteInventory() const { WriteFileAtomically(inventory_path_, InventoryJson()); }

void TestNode::SetMeshed(const Pod& pod, bool meshed) {
  for (const auto& ours : pods_) {
    if (ours.get() == &pod) {
      ours->meshed = meshed;
      if (!inventory_path_.empty()) RewriteInventory();
      return;
    }
  }
  throw std::invalid_argument(fmt::format("pod {} is not on node {}", pod.name, name_));
}

}  // namespace nodemesh::testing
