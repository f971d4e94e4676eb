#include "cli/shell/admin_client.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/base/format.h"

namespace nodemesh::cli {
namespace {

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

// The agent answers within a second; a stuck one must not hang the shell.
constexpr int kTimeoutSeconds = 10;

}  // namespace

absl::StatusOr<AdminClient::Reply> SocketAdminClient::Request(std::string_view method,
                                                              std::string_view path) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (socket_path_.size() >= sizeof address.sun_path) {
    return absl::InvalidArgumentError(
        fmt::format("--socket {}: the path is too long for a Unix socket", socket_path_));
  }
  std::memcpy(address.sun_path, socket_path_.data(), socket_path_.size());
  Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) return absl::InternalError(fmt::format("socket: {}", std::strerror(errno)));
  const timeval timeout{kTimeoutSeconds, 0};
  setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
    const int error = errno;
    if (error == EACCES || error == EPERM) {
      return absl::PermissionDeniedError(fmt::format(
          "no permission to use {}: the agent's admin socket is root's (run meshctl shell as "
          "root)",
          socket_path_));
    }
    return absl::UnavailableError(fmt::format(
        "no agent answers on {}: is nodemesh-agent running on this node? (--socket PATH) ({})",
        socket_path_, std::strerror(error)));
  }
  const std::string request =
      fmt::format("{} {} HTTP/1.1\r\nHost: agent\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                  method, path);
  for (size_t sent = 0; sent < request.size();) {
    const ssize_t n = ::send(fd.get(), request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) {
      return absl::UnavailableError(
          fmt::format("the agent on {} closed the connection: {}", socket_path_,
                      n < 0 ? std::strerror(errno) : "before the request was sent"));
    }
    sent += static_cast<size_t>(n);
  }
  std::string response;
  char buffer[65536];
  for (;;) {
    const ssize_t n = ::recv(fd.get(), buffer, sizeof buffer, 0);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::DeadlineExceededError(
          fmt::format("the agent on {} did not answer {} {}: {}", socket_path_, method, path,
                      errno == EAGAIN ? "timed out" : std::strerror(errno)));
    }
    response.append(buffer, static_cast<size_t>(n));
  }
  // "HTTP/1.1 200 OK\r\n...\r\n\r\nbody": the agent closes after the body.
  const size_t header_end = response.find("\r\n\r\n");
  Reply reply;
  if (response.compare(0, 9, "HTTP/1.1 ") != 0 || header_end == std::string::npos ||
      std::sscanf(response.c_str() + 9, "%d", &reply.status) != 1) {
    return absl::InternalError(
        fmt::format("{} does not answer as the agent's admin API does", socket_path_));
  }
  reply.body = response.substr(header_end + 4);
  return reply;
}

namespace {

absl::Status ReplyError(int status, std::string body, std::string_view method,
                        std::string_view path) {
  while (!body.empty() && (body.back() == '\n' || body.back() == ' ')) body.pop_back();
  for (char& c : body) {
    if (c == '\n') c = ' ';
  }
  const std::string message = fmt::format("the agent answered {} to {} {}: {}", status, method,
                                          path, body.empty() ? "no reason given" : body);
  if (status == 404) return absl::NotFoundError(message);
  if (status >= 400 && status < 500) return absl::InvalidArgumentError(message);
  return absl::InternalError(message);
}

}  // namespace

absl::StatusOr<AdminClient::Reply> RelayedAdminClient::Request(std::string_view method,
                                                               std::string_view path) {
  if (method != "GET") {
    return absl::FailedPreconditionError(fmt::format(
        "the aggregator relays reads only: change the agent of node {} on that node (meshctl "
        "shell as root there, or kubectl exec into its nodemesh-agent pod)",
        node_));
  }
  v1::NodeAdminRequest request;
  request.set_node(node_);
  request.set_target(std::string(path));
  absl::StatusOr<v1::NodeAdminResponse> response = aggregator_.NodeAdmin(request);
  if (!response.ok()) return response.status();
  return Reply{static_cast<int>(response->status()), response->body()};
}

absl::StatusOr<nlohmann::json> AdminClient::Get(std::string_view path) {
  absl::StatusOr<Reply> reply = Request("GET", path);
  if (!reply.ok()) return reply.status();
  if (reply->status != 200) return ReplyError(reply->status, reply->body, "GET", path);
  nlohmann::json json = nlohmann::json::parse(reply->body, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) {
    return absl::InternalError(fmt::format("the agent's answer to GET {} is not JSON", path));
  }
  return json;
}

absl::StatusOr<std::string> AdminClient::Post(std::string_view path) {
  absl::StatusOr<Reply> reply = Request("POST", path);
  if (!reply.ok()) return reply.status();
  if (reply->status != 200) return ReplyError(reply->status, reply->body, "POST", path);
  return reply->body;
}

}  // namespace nodemesh::cli
