#include "test/lib/agent_process.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <regex>
#include <stdexcept>

namespace nodemesh::testing {
namespace {

// GET `path` on a connected-to-be stream socket at `address`: the admin API and /metrics
// both answer with Connection: close, so the reply ends at EOF.
std::optional<HttpReply> HttpGet(const sockaddr* address, socklen_t length, std::string_view path,
                                 std::chrono::milliseconds timeout) {
  const int fd = ::socket(address->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return std::nullopt;
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(timeout);
  const timeval limit{
      .tv_sec = seconds.count(),
      .tv_usec = static_cast<suseconds_t>(
          std::chrono::duration_cast<std::chrono::microseconds>(timeout - seconds).count())};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit);
  if (::connect(fd, address, length) != 0) return std::nullopt;
  const std::string request =
      fmt::format("GET {} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n", path);
  for (size_t sent = 0; sent < request.size();) {
    const ssize_t n = ::send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return std::nullopt;
    sent += static_cast<size_t>(n);
  }
  std::string reply;
  char buffer[16384];
  for (;;) {
    const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return std::nullopt;
    if (n == 0) break;
    reply.append(buffer, static_cast<size_t>(n));
  }
  const size_t head_end = reply.find("\r\n\r\n");
  if (!reply.starts_with("HTTP/1.") || head_end == std::string::npos || reply.size() < 12) {
    return std::nullopt;
  }
  HttpReply parsed;
  parsed.status = std::atoi(reply.substr(9, 3).c_str());
  parsed.body = reply.substr(head_end + 4);
  return parsed;
}

}  // namespace

std::optional<HttpReply> HttpGetUnix(const std::string& socket_path, std::string_view path,
                                     std::chrono::milliseconds timeout) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (socket_path.size() >= sizeof address.sun_path) return std::nullopt;
  std::memcpy(address.sun_path, socket_path.data(), socket_path.size());
  return HttpGet(reinterpret_cast<const sockaddr*>(&address), sizeof address, path, timeout);
}

std::optional<HttpReply> HttpGetTcp(const std::string& host_port, std::string_view path,
                                    std::chrono::milliseconds timeout) {
  const size_t colon = host_port.rfind(':');
  if (colon == std::string::npos) return std::nullopt;
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(std::atoi(host_port.c_str() + colon + 1)));
  if (::inet_pton(AF_INET, host_port.substr(0, colon).c_str(), &address.sin_addr) != 1) {
    return std::nullopt;
  }
  return HttpGet(reinterpret_cast<const sockaddr*>(&address), sizeof address, path, timeout);
}

AgentProcess::AgentProcess(TestNode& node, AgentProcessOptions options) : node_(node) {
  std::string pattern = (std::filesystem::temp_directory_path() / "nodemesh-agent-XXXXXX").string();
  if (::mkdtemp(pattern.data()) == nullptr) {
    throw std::runtime_error(fmt::format("mkdtemp {}: {}", pattern, std::strerror(errno)));
  }
  directory_ = pattern;
  inventory_path_ = directory_ + "/pods.json";
  admin_socket_ = directory_ + "/admin.sock";
  try {
    std::vector<std::string> argv = {options.binary, "--node", node_.name()};
    if (options.inventory.empty()) {
      node_.WriteInventory(inventory_path_);
      argv.insert(argv.end(), {"--inventory", inventory_path_});
    } else {
      argv.insert(argv.end(), options.inventory.begin(), options.inventory.end());
    }
    argv.insert(argv.end(),
                {"--cgroup-root", node_.cgroup_path(), "--admin-socket", admin_socket_, "--workers",
                 std::to_string(options.workers), "--log-level", options.log_level,
                 // Any free port: agents of tests running at once
                 // must not compete for the default one.
                 "--metrics-address", "127.0.0.1:0"});
    argv.insert(argv.end(), options.extra_args.begin(), options.extra_args.end());
    argv.insert(argv.begin(), options.launcher.begin(), options.launcher.end());
    const bool local = options.inventory.empty();
    process_.emplace(std::move(argv), Process::Options{.kill_grace = std::chrono::seconds(10)});
    const bool ready = PollUntil(
        [&] {
          return !process_->IsRunning() ||
                 (local ? AllMeshedPodsEnrolled() : TryGet("/pods").has_value());
        },
        options.ready_timeout, std::chrono::milliseconds(50));
    if (!process_->IsRunning()) {
      throw std::runtime_error(fmt::format(
          "nodemesh-agent for {} exited ({}) before it was ready:\n{}", node_.name(),
          process_->Wait(std::chrono::milliseconds(0))->ToString(), Tail(process_->output())));
    }
    if (!ready) {
      throw std::runtime_error(
          fmt::format("nodemesh-agent for {} did not enrol the meshed pods within {} ms:\n{}",
                      node_.name(), options.ready_timeout.count(), Tail(process_->output())));
    }
  } catch (...) {
    process_.reset();
    RemoveDirectory();
    throw;
  }
}

AgentProcess::~AgentProcess() {
  process_.reset();  // SIGTERM, then SIGKILL after the grace period
  RemoveDirectory();
}

void AgentProcess::RemoveDirectory() noexcept {
  std::error_code ignored;
  std::filesystem::remove_all(directory_, ignored);
}

std::optional<nlohmann::json> AgentProcess::TryGet(std::string_view path) const {
  const std::optional<HttpReply> reply = HttpGetUnix(admin_socket_, path);
  if (!reply || reply->status != 200) return std::nullopt;
  nlohmann::json body = nlohmann::json::parse(reply->body, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) return std::nullopt;
  return body;
}

nlohmann::json AgentProcess::Get(std::string_view path) const {
  std::optional<nlohmann::json> body = TryGet(path);
  if (!body) {
    throw std::runtime_error(fmt::format("the agent's admin API did not answer GET {}:\n{}", path,
                                         Tail(process_->output())));
  }
  return *std::move(body);
}

std::string AgentProcess::metrics_address() {
  static const std::regex serving(R"(serving /metrics on (\S+),)");
  std::smatch match;
  process_->WaitForOutput("serving /metrics on", std::chrono::seconds(10));
  const std::string output = process_->output();
  if (!std::regex_search(output, match, serving)) {
    throw std::runtime_error("the agent has not said where it serves /metrics:\n" + Tail(output));
  }
  return match[1];
}

std::optional<HttpReply> AgentProcess::GetMetricsPort(std::string_view path) {
  return HttpGetTcp(metrics_address(), path);
}

uint64_t AgentProcess::ProxyCounter(std::string_view name) const {
  return Get("/stats")["proxy"].at(std::string(name)).get<uint64_t>();
}

uint64_t AgentProcess::KernelCounter(std::string_view name) const {
  return Get("/stats")["kernel"].at(std::string(name)).get<uint64_t>();
}

std::optional<nlohmann::json> AgentProcess::FindPod(const Pod& pod) const {
  std::optional<nlohmann::json> pods = TryGet("/pods");
  if (!pods) return std::nullopt;
  for (const nlohmann::json& entry : (*pods)["pods"]) {
    if (entry.value("namespace", "") == pod.namespace_name && entry.value("name", "") == pod.name) {
      return entry;
    }
  }
  return std::nullopt;
}

bool AgentProcess::AllMeshedPodsEnrolled() const {
  std::optional<nlohmann::json> pods = TryGet("/pods");
  if (!pods) return false;
  for (const Pod* pod : node_.pods()) {
    if (!pod->meshed) continue;
    bool enrolled = false;
    for (const nlohmann::json& entry : (*pods)["pods"]) {
      enrolled |= entry.value("namespace", "") == pod->namespace_name &&
                  entry.value("name", "") == pod->name && entry.value("enrolled", false);
    }
    if (!enrolled) return false;
  }
  return true;
}

bool AgentProcess::WaitUntilEnrolled(const Pod& pod, bool enrolled,
                                     std::chrono::milliseconds timeout) const {
  return PollUntil(
      [&] {
        const std::optional<nlohmann::json> entry = FindPod(pod);
        return entry && entry->value("enrolled", false) == enrolled;
      },
      timeout, std::chrono::milliseconds(50));
}

bool AgentProcess::WaitForInboundPort(const Pod& pod, uint16_t port,
                                      std::chrono::milliseconds timeout, bool ipv6) const {
  const std::string endpoint =
      ipv6 ? fmt::format("[{}]:{}", pod.ip6, port) : fmt::format("{}:{}", pod.ip, port);
  return PollUntil(
      [&] {
        const std::optional<nlohmann::json> entry = FindPod(pod);
        if (!entry || !entry->contains("inbound")) return false;
        for (const nlohmann::json& captured : (*entry)["inbound"]) {
          if (captured == endpoint) return true;
        }
        return false;
      },
      timeout, std::chrono::milliseconds(50));
}

std::optional<ExitStatus> AgentProcess::Stop(std::chrono::milliseconds grace) {
  return process_->Kill(grace);
}

void AgentProcess::Kill() {
  process_->Signal(SIGKILL);
  process_->Wait(std::chrono::seconds(30));
}

}  // namespace nodemesh::testing
