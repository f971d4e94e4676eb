#include "common/kube/config.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "absl/strings/ascii.h"
#include "common/base/file.h"
#include "common/base/format.h"

namespace nodemesh::kube {
namespace {

std::string JoinPath(std::string_view dir, std::string_view name) {
  std::string path(dir);
  if (!path.empty() && path.back() != '/') path += '/';
  path += name;
  return path;
}

}  // namespace

absl::StatusOr<Config> InClusterConfig(std::string_view service_account_dir) {
  const char* host = std::getenv("KUBERNETES_SERVICE_HOST");
  const char* port = std::getenv("KUBERNETES_SERVICE_PORT");
  if (host == nullptr || *host == '\0' || port == nullptr || *port == '\0') {
    return absl::FailedPreconditionError(
        "not running in a Kubernetes pod: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT "
        "are not set (the kubelet sets them in every container); run in a pod, or use a "
        "kubeconfig instead");
  }
  Config config;
  config.source = "in-cluster";
  const std::string_view host_view(host);
  // An IPv6 address must be bracketed in a URL.
  const bool ipv6 = host_view.find(':') != std::string_view::npos && host_view.front() != '[';
  config.server =
      fmt::format("https://{}{}{}:{}", ipv6 ? "[" : "", host_view, ipv6 ? "]" : "", port);

  const std::string token_file = JoinPath(service_account_dir, "token");
  absl::StatusOr<std::string> token = ReadFile(token_file);
  if (!token.ok()) {
    return absl::FailedPreconditionError(fmt::format(
        "in-cluster configuration: cannot read the service-account token {0} ({0}: {1}); the "
        "pod has no token mounted: give it a service account with automountServiceAccountToken "
        "enabled, or use a kubeconfig",
        token_file, token.status().message()));
  }
  if (absl::StripAsciiWhitespace(*token).empty()) {
    return absl::FailedPreconditionError(
        fmt::format("in-cluster configuration: the service-account token {} is empty", token_file));
  }
  config.token_file = token_file;

  const std::string ca_file = JoinPath(service_account_dir, "ca.crt");
  struct stat ca_stat;
  if (::stat(ca_file.c_str(), &ca_stat) != 0) {
    return absl::FailedPreconditionError(fmt::format(
        "in-cluster configuration: no cluster CA certificate at {} ({}); it is mounted with the "
        "service-account token: check the pod's service-account volume",
        ca_file, std::strerror(errno)));
  }
  config.ca_file = ca_file;

  // The namespace file is optional (client-go falls back to "default" too).
  const absl::StatusOr<std::string> namespace_name =
      ReadFile(JoinPath(service_account_dir, "namespace"));
  if (namespace_name.ok() && !absl::StripAsciiWhitespace(*namespace_name).empty()) {
    config.namespace_name = std::string(absl::StripAsciiWhitespace(*namespace_name));
  }
  return config;
}

absl::StatusOr<std::string> BearerToken::Header() {
  if (token_file_.empty()) {
    if (config_token_.empty()) return std::string();
    return "Bearer " + config_token_;
  }
  std::lock_guard lock(mutex_);
  // stat the path each time (no cached descriptor): the kubelet replaces the file by
  // swapping a symlink, so a new token is a new inode behind the same name.
  struct stat file_stat;
  if (::stat(token_file_.c_str(), &file_stat) != 0) {
    const int error = errno;
    if (!token_.empty()) return "Bearer " + token_;  // keep the last token we had
    return absl::UnauthenticatedError(
        fmt::format("cannot read the token file {}: {}", token_file_, std::strerror(error)));
  }
  const int64_t mtime_ns =
      int64_t{file_stat.st_mtim.tv_sec} * 1'000'000'000 + file_stat.st_mtim.tv_nsec;
  const uint64_t size = static_cast<uint64_t>(file_stat.st_size);
  const uint64_t inode = static_cast<uint64_t>(file_stat.st_ino);
  if (mtime_ns != mtime_ns_ || size != size_ || inode != inode_ || token_.empty()) {
    absl::StatusOr<std::string> contents = ReadFile(token_file_);
    if (!contents.ok()) {
      if (!token_.empty()) return "Bearer " + token_;
      return absl::UnauthenticatedError(fmt::format("cannot read the token file {0}: {0}: {1}",
                                                    token_file_, contents.status().message()));
    }
    const absl::string_view token = absl::StripAsciiWhitespace(*contents);
    if (token.empty()) {
      // Caught between a truncation and a write: keep the last token, read again next time.
      if (!token_.empty()) return "Bearer " + token_;
      return absl::UnauthenticatedError(fmt::format("the token file {} is empty", token_file_));
    }
    if (mtime_ns_ >= 0) reloads_.fetch_add(1, std::memory_order_relaxed);
    token_ = std::string(token);
    mtime_ns_ = mtime_ns;
    size_ = size;
    inode_ = inode;
  }
  return "Bearer " + token_;
}

}  // namespace nodemesh::kube
