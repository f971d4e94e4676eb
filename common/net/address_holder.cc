#include "common/net/address_holder.h"

#include <dirent.h>
#include <sys/socket.h>
#include <unistd.h>

#include <charconv>
#include <cstdint>
#include <cstring>
#include <memory>
#include <sstream>

#include "common/base/file.h"
#include "fmt/format.h"

namespace nodemesh {
namespace {

constexpr std::string_view kListenState = "0A";  // TCP_LISTEN, as /proc/net/tcp prints it

// The whole of `text` as a number in `base`.
template <typename Number>
bool ParseNumber(std::string_view text, Number* out, int base = 10) {
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), *out, base);
  return error == std::errc() && end == text.data() + text.size() && !text.empty();
}

struct CloseDir {
  void operator()(DIR* directory) const { closedir(directory); }
};
using Directory = std::unique_ptr<DIR, CloseDir>;

// An address of /proc/net/tcp{,6}: "0100007F:1F90", the address as the 32-bit words the
// kernel holds in network order, each printed as a host-order number, then the port.
std::optional<Endpoint> ParseProcAddress(std::string_view text) {
  const size_t colon = text.find(':');
  if (colon == std::string_view::npos) return std::nullopt;
  const std::string_view hex_address = text.substr(0, colon);
  uint32_t port = 0;
  if (!ParseNumber(text.substr(colon + 1), &port, 16) || port > 0xffff) return std::nullopt;
  if (hex_address.size() != 8 && hex_address.size() != 32) return std::nullopt;
  uint8_t bytes[16] = {};
  for (size_t word = 0; word < hex_address.size() / 8; ++word) {
    uint32_t value = 0;
    if (!ParseNumber(hex_address.substr(word * 8, 8), &value, 16)) return std::nullopt;
    std::memcpy(bytes + word * 4, &value, sizeof value);  // back to the kernel's byte order
  }
  Endpoint endpoint;
  endpoint.port = static_cast<uint16_t>(port);
  if (hex_address.size() == 8) {
    endpoint.ip.bytes[10] = endpoint.ip.bytes[11] = 0xff;
    std::memcpy(endpoint.ip.bytes.data() + 12, bytes, 4);
  } else {
    std::memcpy(endpoint.ip.bytes.data(), bytes, 16);
  }
  return endpoint;
}

// The inode of a listening socket whose address covers `address`, from one of the kernel's
// tables of TCP sockets.
std::optional<uint64_t> ListenerInode(const std::string& table, const Endpoint& address) {
  const absl::StatusOr<std::string> text = ReadFile(table);
  if (!text.ok()) return std::nullopt;
  std::istringstream lines(*text);
  std::string line;
  std::getline(lines, line);  // the heading
  while (std::getline(lines, line)) {
    std::istringstream fields(line);
    std::string slot, local, remote, state, queues, timer, retransmits, uid, timeout, inode;
    if (!(fields >> slot >> local >> remote >> state >> queues >> timer >> retransmits >> uid >>
          timeout >> inode)) {
      continue;
    }
    if (state != kListenState) continue;
    const std::optional<Endpoint> listening = ParseProcAddress(local);
    if (!listening || listening->port != address.port) continue;
    if (listening->ip != address.ip && !listening->ip.is_unspecified() &&
        !address.ip.is_unspecified()) {
      continue;
    }
    uint64_t number = 0;
    if (ParseNumber(inode, &number) && number != 0) return number;
  }
  return std::nullopt;
}

// The process holding the socket of `inode` among its descriptors: a walk of /proc, which
// shows only the processes this one may look into.
std::optional<int> SocketOwner(uint64_t inode) {
  const std::string wanted = fmt::format("socket:[{}]", inode);
  Directory proc(opendir("/proc"));
  if (!proc) return std::nullopt;
  while (const dirent* process = readdir(proc.get())) {
    int pid = 0;
    if (!ParseNumber(std::string_view(process->d_name), &pid)) continue;
    const std::string fd_dir = fmt::format("/proc/{}/fd", pid);
    Directory fds(opendir(fd_dir.c_str()));
    if (!fds) continue;
    while (const dirent* fd = readdir(fds.get())) {
      if (fd->d_name[0] == '.') continue;
      char target[64];
      const ssize_t length = readlinkat(dirfd(fds.get()), fd->d_name, target, sizeof target);
      if (length > 0 && std::string_view(target, static_cast<size_t>(length)) == wanted) {
        return pid;
      }
    }
  }
  return std::nullopt;
}

}  // namespace

std::string DescribeProcess(int pid) {
  std::string name;
  // The program as it was started (argv[0]), whose base name is not cut at 15 characters as
  // /proc/PID/comm is.
  if (const absl::StatusOr<std::string> command_line =
          ReadFile(fmt::format("/proc/{}/cmdline", pid));
      command_line.ok()) {
    name = command_line->substr(0, command_line->find('\0'));
    name = name.substr(name.rfind('/') == std::string::npos ? 0 : name.rfind('/') + 1);
  }
  if (name.empty()) {
    if (const absl::StatusOr<std::string> comm = ReadFile(fmt::format("/proc/{}/comm", pid));
        comm.ok()) {
      name = comm->substr(0, comm->find('\n'));
    }
  }
  return name.empty() ? fmt::format("pid {}", pid) : fmt::format("{} (pid {})", name, pid);
}

std::optional<std::string> TcpListenerHolder(const Endpoint& address) {
  std::optional<uint64_t> inode = ListenerInode("/proc/net/tcp", address);
  if (!inode) inode = ListenerInode("/proc/net/tcp6", address);
  if (!inode) return std::nullopt;
  const std::optional<int> pid = SocketOwner(*inode);
  if (!pid) return std::nullopt;
  return DescribeProcess(*pid);
}

std::optional<std::string> UnixPeerHolder(int connected_fd) {
  ucred peer{};
  socklen_t length = sizeof peer;
  if (getsockopt(connected_fd, SOL_SOCKET, SO_PEERCRED, &peer, &length) != 0 || peer.pid <= 0) {
    return std::nullopt;
  }
  return DescribeProcess(peer.pid);
}

}  // namespace nodemesh
