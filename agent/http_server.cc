#include "agent/http_server.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "common/base/format.h"
#include "common/base/log.h"
#include "common/http/listener.h"
#include "common/net/address_holder.h"
#include "llhttp.h"

namespace nodemesh::agent {
namespace {

constexpr size_t kMaxRequestBytes = 16 * 1024;
// For the whole request, however it is cut: a client sending a byte at a time would
// otherwise hold the one serving thread (probes, scrapes) for as long as it liked.
constexpr auto kRequestDeadline = std::chrono::seconds(5);

std::string_view Reason(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    default:
      return "Error";
  }
}

// Collects the request line's target; llhttp does the parsing.
struct RequestReader {
  llhttp_t parser;
  std::string url;
  bool complete = false;

  static int OnUrl(llhttp_t* p, const char* at, size_t length) {
    static_cast<RequestReader*>(p->data)->url.append(at, length);
    return 0;
  }
  static int OnComplete(llhttp_t* p) {
    static_cast<RequestReader*>(p->data)->complete = true;
    return HPE_PAUSED;
  }
};

// A socket file at `path` is taken over only from a server that is gone: one that still
// accepts there keeps it, and whoever asks fails naming it. Anything but a socket is left
// alone.
absl::Status ClaimUnixPath(const std::string& path, const sockaddr_un& address) {
  struct stat existing {};
  if (::lstat(path.c_str(), &existing) != 0) {
    return errno == ENOENT ? absl::OkStatus()
                           : ErrnoStatus(fmt::format("admin socket {}", path), errno);
  }
  if (!S_ISSOCK(existing.st_mode)) {
    return absl::AlreadyExistsError(
        fmt::format("admin socket {}: a file that is not a socket is there: remove it, or give "
                    "--admin-socket another path",
                    path));
  }
  UniqueFd probe(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!probe.valid()) return ErrnoStatus("socket", errno);
  if (connect(probe.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0) {
    return absl::AlreadyExistsError(
        fmt::format("admin socket {} is in use by {}: another agent serves it; stop it, or give "
                    "--admin-socket another path",
                    path, UnixPeerHolder(probe.get()).value_or("another process")));
  }
  // Refused: the socket of a server that has gone, left behind.
  ::unlink(path.c_str());
  return absl::OkStatus();
}

}  // namespace

HttpServer::HttpServer(UniqueFd listener, std::string address, std::string unix_path)
    : listener_(std::move(listener)),
      address_(std::move(address)),
      unix_path_(std::move(unix_path)) {
  stop_.Reset(eventfd(0, EFD_CLOEXEC));
  reserve_.Reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
}

HttpServer::~HttpServer() {
  Stop();
  if (!unix_path_.empty()) ::unlink(unix_path_.c_str());
}

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::ListenTcp(const std::string& address) {
  absl::StatusOr<http::TcpListener> listener = http::ListenTcp(address, 64);
  if (!listener.ok()) return listener.status();
  return std::unique_ptr<HttpServer>(
      new HttpServer(std::move(listener->fd), std::move(listener->address), ""));
}

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::ListenUnix(const std::string& path) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (path.size() >= sizeof address.sun_path) {
    return absl::InvalidArgumentError(fmt::format("socket path too long: {}", path));
  }
  std::memcpy(address.sun_path, path.c_str(), path.size());
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return ErrnoStatus("socket", errno);
  if (absl::Status free = ClaimUnixPath(path, address); !free.ok()) return free;
  // Created owner-only from the start, not chmod-ed after: no window where others may connect.
  const mode_t old_mask = ::umask(0177);
  const int rc = bind(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof address);
  ::umask(old_mask);
  if (rc != 0) return ErrnoStatus(fmt::format("admin socket {}", path), errno);
  if (listen(fd.get(), 16) != 0) return ErrnoStatus("listen", errno);
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(fd), path, path));
}

void HttpServer::Start() {
  thread_ = std::thread([this] { Serve(); });
}

void HttpServer::Stop() {
  if (!thread_.joinable()) return;
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(stop_.get(), &one, sizeof one);
  thread_.join();
}

void HttpServer::Serve() {
  for (;;) {
    pollfd fds[2] = {{listener_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0 && errno != EINTR) return;
    if (fds[1].revents != 0) return;
    if (fds[0].revents == 0) continue;
    UniqueFd client(accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!client.valid() && (errno == EMFILE || errno == ENFILE)) {
      // Out of descriptors: the reserve makes room for this one client.
      reserve_.Reset();
      client.Reset(accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (client.valid()) ServeOne(client.get());
      client.Reset();
      reserve_.Reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
      // Another thread may have taken the room first: the listener stays readable, so rest
      // rather than spin.
      if (!reserve_.valid()) ::poll(&fds[1], 1, 100);
      continue;
    }
    if (client.valid()) ServeOne(client.get());
  }
}

void HttpServer::ServeOne(int fd) {
  const timeval timeout{.tv_sec = std::chrono::seconds(kRequestDeadline).count(), .tv_usec = 0};
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
  const auto deadline = std::chrono::steady_clock::now() + kRequestDeadline;

  llhttp_settings_t settings;
  llhttp_settings_init(&settings);
  settings.on_url = &RequestReader::OnUrl;
  settings.on_message_complete = &RequestReader::OnComplete;
  RequestReader reader;
  llhttp_init(&reader.parser, HTTP_REQUEST, &settings);
  reader.parser.data = &reader;

  http::HttpResponse response;
  size_t total = 0;
  char buffer[4096];
  while (!reader.complete) {
    const auto left =
        std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    pollfd readable{fd, POLLIN, 0};
    const int ready = left.count() > 0 ? ::poll(&readable, 1, static_cast<int>(left.count())) : 0;
    if (ready < 0 && errno == EINTR) continue;
    if (ready == 0) {
      response = {408, "text/plain; charset=utf-8",
                  fmt::format("the request did not arrive whole within {} s\n",
                              std::chrono::seconds(kRequestDeadline).count())};
      break;
    }
    const ssize_t n = ready < 0 ? -1 : ::recv(fd, buffer, sizeof buffer, MSG_DONTWAIT);
    if (n <= 0) return;
    total += static_cast<size_t>(n);
    const llhttp_errno_t rc = llhttp_execute(&reader.parser, buffer, static_cast<size_t>(n));
    if ((rc != HPE_OK && rc != HPE_PAUSED) || total > kMaxRequestBytes) {
      response = {400, "text/plain; charset=utf-8", "bad request\n"};
      break;
    }
  }
  if (reader.complete) {
    response = routes_.Serve(http::HttpRoutes::Request(
        llhttp_method_name(static_cast<llhttp_method_t>(reader.parser.method)), reader.url));
  }
  std::string reply = fmt::format(
      "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
      response.status, Reason(response.status), response.content_type, response.body.size());
  reply += response.body;
  for (size_t sent = 0; sent < reply.size();) {
    const ssize_t n = ::send(fd, reply.data() + sent, reply.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return;
    sent += static_cast<size_t>(n);
  }
}

}  // namespace nodemesh::agent
