// libFuzzer target: the agent's admin API, served by a real agent. The agent's kernel
// programs are attached to an empty cgroup of the target's own, so they intercept nothing,
// and its inventory lists pods it does not enrol (another node's and an unmeshed one) and a
// Service: the endpoints have something to show. An input is one request, either
//   - relayed (first byte even, 'r' in the seeds): the rest is a target such as
//   "/tap?session=a&pod=ns%2Fweb",
//     answered as an admin request relayed by the aggregator (whose sender is not trusted
//     to have checked it), or
//   - on the socket (first byte odd, 's'): the rest is written to the admin Unix socket as it
//     stands, and the write side closed.
// Whatever the bytes, a relayed target gets an HTTP status, and the socket answers one well
// formed response (or closes without one, for a request that never completed) in time.
// Needs root, as the agent does.
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include "agent/agent.h"
#include "agent/http_server.h"
#include "agent/kernel/system.h"
#include "common/base/log.h"
#include "common/inventory/inventory.h"

namespace {

using namespace nodemesh;
using namespace nodemesh::agent;

// The socket's own bound on a request is 5 s; an answer later than this is a hang.
constexpr int kAnswerTimeoutMs = 8000;

constexpr std::string_view kInventory = R"({
  "pods": [
    {"namespace": "emojivoto", "name": "voting-1", "owner": {"kind": "Deployment", "name": "voting"},
     "labels": {"app": "voting"}, "serviceAccount": "voting", "ips": ["10.77.1.11", "fd00::11"],
     "cgroup": "/nodemesh/voting-1", "netns": "/var/run/netns/voting-1", "meshed": true,
     "inboundPorts": [8080], "node": "node-b"},
    {"namespace": "emojivoto", "name": "vote-bot-1", "owner": {"kind": "Deployment", "name": "vote-bot"},
     "ips": ["10.77.0.13"], "cgroup": "/nodemesh/vote-bot-1", "netns": "/var/run/netns/vote-bot-1",
     "meshed": false, "node": "node-a"}
  ],
  "services": [{"namespace": "emojivoto", "name": "voting-svc", "clusterIPs": ["10.96.0.20"]}]
})";

[[noreturn]] void Fail(const std::string& what) {
  fprintf(stderr, "admin_fuzz: %s\n", what.c_str());
  __builtin_trap();
}

// The agent and what it was given, for the whole run; taken down at exit.
struct Fixture {
  std::string cgroup_dir;
  std::string socket_dir;
  std::unique_ptr<Agent> agent;
  std::unique_ptr<HttpServer> admin;

  ~Fixture() {
    admin.reset();
    agent.reset();  // detaches the kernel programs from the cgroup before it goes
    if (!cgroup_dir.empty()) ::rmdir(cgroup_dir.c_str());
    if (!socket_dir.empty()) ::rmdir(socket_dir.c_str());
  }
};

Fixture* fixture = nullptr;

constexpr std::string_view kNamePrefix = "nodemesh-admin-fuzz-";

// A run that found a crash ends without its destructors: the next one removes what such a
// run (its pid gone) left in `dir`, the empty cgroup or the socket's directory.
void RemoveLeftovers(const std::string& dir) {
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(dir, error)) {
    const std::string name = entry.path().filename().string();
    if (!name.starts_with(kNamePrefix)) continue;
    const std::string pid = name.substr(kNamePrefix.size());
    if (!std::filesystem::exists("/proc/" + pid)) {
      std::filesystem::remove(entry.path() / "admin.sock", error);
      ::rmdir(entry.path().c_str());
    }
  }
}

void Setup() {
  if (::geteuid() != 0) {
    fprintf(stderr, "admin_fuzz needs root: it runs a real agent (eBPF, cgroups)\n");
    std::exit(1);
  }
  static Fixture made;
  fixture = &made;
  const absl::StatusOr<std::string> mount = FindCgroup2Mount();
  if (!mount.ok()) Fail(std::string(mount.status().message()));
  RemoveLeftovers(*mount);
  RemoveLeftovers("/tmp");
  const std::string name = fmt::format("{}{}", kNamePrefix, ::getpid());
  const std::string cgroup = "/" + name;
  made.cgroup_dir = *mount + cgroup;
  if (::mkdir(made.cgroup_dir.c_str(), 0755) != 0) Fail("cannot make " + made.cgroup_dir);
  made.socket_dir = "/tmp/" + name;
  if (::mkdir(made.socket_dir.c_str(), 0700) != 0) Fail("cannot make " + made.socket_dir);

  AgentOptions options;
  options.node = "node-a";
  options.cgroup_root = cgroup;
  options.workers = 1;
  options.max_pods = 64;
  absl::StatusOr<std::unique_ptr<Agent>> agent = Agent::Create(options);
  if (!agent.ok()) Fail(std::string(agent.status().message()));
  made.agent = *std::move(agent);
  const absl::StatusOr<Inventory> inventory = ParseInventory(kInventory);
  if (!inventory.ok()) Fail(std::string(inventory.status().message()));
  if (absl::Status applied = made.agent->Apply(*inventory); !applied.ok()) {
    Fail(std::string(applied.message()));
  }
  absl::StatusOr<std::unique_ptr<HttpServer>> admin =
      HttpServer::ListenUnix(made.socket_dir + "/admin.sock");
  if (!admin.ok()) Fail(std::string(admin.status().message()));
  made.admin = *std::move(admin);
  made.agent->ServeAdmin(*made.admin);
  made.admin->Start();
}

void Relayed(std::string_view target) {
  const http::HttpResponse response = fixture->agent->AnswerRelayed(target);
  if (response.status < 100 || response.status > 599) {
    Fail(fmt::format("relayed '{}' answered status {}", target, response.status));
  }
}

void OnSocket(std::string_view bytes) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  const std::string& path = fixture->admin->address();
  std::memcpy(address.sun_path, path.c_str(), path.size());
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    Fail(fmt::format("cannot connect to the admin socket: {}", std::strerror(errno)));
  }
  // The server stops reading at its bound on a request's size: what it leaves unread is not
  // an error here.
  for (size_t sent = 0; sent < bytes.size();) {
    const ssize_t n = ::send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    sent += static_cast<size_t>(n);
  }
  ::shutdown(fd, SHUT_WR);
  std::string reply;
  char buffer[4096];
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(kAnswerTimeoutMs);
  for (;;) {
    const auto left =
        std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    pollfd readable{fd, POLLIN, 0};
    const int ready = ::poll(&readable, 1, static_cast<int>(std::max<int64_t>(left.count(), 0)));
    if (ready < 0 && errno == EINTR) continue;  // libFuzzer's timer signal
    if (ready != 1) Fail("the admin socket did not answer");
    const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    reply.append(buffer, static_cast<size_t>(n));
  }
  ::close(fd);
  if (reply.empty()) return;  // the request never completed: closed without an answer
  const size_t head_end = reply.find("\r\n\r\n");
  const size_t length_at = reply.find("Content-Length: ");
  if (!reply.starts_with("HTTP/1.1 ") || head_end == std::string::npos ||
      length_at == std::string::npos || length_at > head_end) {
    Fail("the admin socket answered something that is not an HTTP/1.1 response");
  }
  const unsigned long length = std::strtoul(reply.c_str() + length_at + 16, nullptr, 10);
  if (length != reply.size() - head_end - 4) Fail("Content-Length does not match the body");
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  SetLogLevel(LogLevel::kError);
  Setup();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return -1;
  const std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] % 2 == 0) {
    Relayed(rest);
  } else {
    OnSocket(rest);
  }
  SetLogLevel(LogLevel::kError);  // an input may have asked for POST /log-level?level=debug
  return 0;
}
