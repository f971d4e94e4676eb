#include "common/kube/credentials.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/ascii.h"
#include "common/base/file.h"
#include "common/base/format.h"

namespace nodemesh::kube {
namespace {

// A client certificate or key of the kubeconfig: its -data, else its file.
absl::StatusOr<std::string> Pem(const std::string& data, const std::string& file,
                                std::string_view what, const Config& config) {
  if (!data.empty() || file.empty()) return data;
  absl::StatusOr<std::string> contents = ReadFile(file);
  if (!contents.ok()) {
    return absl::UnauthenticatedError(fmt::format("cannot read the client {} {} of {}: {}", what,
                                                  file, config.source,
                                                  contents.status().message()));
  }
  return contents;
}

}  // namespace

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

Credentials::Credentials(const Config& config, ExecEnvironment environment,
                         std::atomic<uint64_t>& token_reloads, std::atomic<uint64_t>& exec_runs)
    : config_(config),
      environment_(std::move(environment)),
      exec_runs_(exec_runs),
      bearer_(config, token_reloads) {}

absl::Status Credentials::EnsureExecCredential() {
  if (!config_.exec.has_value()) return absl::OkStatus();
  // client-go's credsExpired: reused until now is past the expiry, with no margin.
  if (exec_credential_.has_value() &&
      (!exec_credential_->expiry.has_value() || environment_.now() <= *exec_credential_->expiry)) {
    return absl::OkStatus();
  }
  exec_runs_.fetch_add(1, std::memory_order_relaxed);
  absl::StatusOr<ExecCredential> credential = RunExecPlugin(config_, environment_);
  if (!credential.ok()) return credential.status();
  exec_credential_ = *std::move(credential);
  return absl::OkStatus();
}

absl::StatusOr<RequestCredentials> Credentials::Compose() {
  RequestCredentials next;
  if (exec_credential_.has_value()) {
    if (!exec_credential_->token.empty()) next.authorization = "Bearer " + exec_credential_->token;
    next.client_certificate_pem = exec_credential_->client_certificate_pem;
    next.client_key_pem = exec_credential_->client_key_pem;
  } else {
    absl::StatusOr<std::string> authorization = bearer_.Header();
    if (!authorization.ok()) return authorization.status();
    next.authorization = *std::move(authorization);
    if (!certificate_.has_value()) {
      absl::StatusOr<std::string> certificate = Pem(
          config_.client_certificate_data, config_.client_certificate_file, "certificate", config_);
      if (!certificate.ok()) return certificate.status();
      absl::StatusOr<std::string> key =
          Pem(config_.client_key_data, config_.client_key_file, "key", config_);
      if (!key.ok()) return key.status();
      certificate_.emplace(*std::move(certificate), *std::move(key));
    }
    next.client_certificate_pem = certificate_->first;
    next.client_key_pem = certificate_->second;
  }
  next.generation = current_.generation;
  if (next != current_) {
    next.generation = current_.generation + 1;
    current_ = next;
  }
  return current_;
}

absl::StatusOr<RequestCredentials> Credentials::Get() {
  std::lock_guard lock(mutex_);
  if (absl::Status status = EnsureExecCredential(); !status.ok()) return status;
  return Compose();
}

absl::StatusOr<bool> Credentials::RefreshAfterUnauthorized(uint64_t generation) {
  std::lock_guard lock(mutex_);
  // Another request renewed them since: worth a try.
  if (generation != current_.generation) return true;
  // client-go runs the plugin again only if the refused credential is still the cached one.
  if (config_.exec.has_value()) exec_credential_.reset();
  if (absl::Status status = EnsureExecCredential(); !status.ok()) return status;
  absl::StatusOr<RequestCredentials> now = Compose();
  if (!now.ok()) return now.status();
  return now->generation != generation;
}

}  // namespace nodemesh::kube
