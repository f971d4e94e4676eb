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

}  // namespace nodemesh::kube
