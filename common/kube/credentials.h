// What a request to the API server presents, from a Config: a bearer token (the kubeconfig's,
// or its token file read again whenever the file changes), a client certificate (file or
// data), or what the user's exec plugin hands out (exec_credential.h), kept until its
// expirationTimestamp passes or the API server refuses it.
//
// Thread-safe: requests of any thread ask at once; one plugin run at a time, and a request
// that finds the credential expired waits for the run it started or found (as client-go's
// authenticator holds its lock across the run).
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "common/kube/config.h"
#include "common/kube/exec_credential.h"

namespace nodemesh::kube {

// The Authorization header's value a Config gives: "" with no token, else "Bearer TOKEN". A
// token file is looked at on every call and read again when it changed: the kubelet rotates
// projected service-account tokens by swapping a symlink, so a new token is a new file behind
// the same name. Thread-safe.
class BearerToken {
 public:
  // `reloads` counts the token file read again after a change.
  BearerToken(const Config& config, std::atomic<uint64_t>& reloads)
      : token_file_(config.token_file), config_token_(config.token), reloads_(reloads) {}

  // An error (UNAUTHENTICATED, naming the file) only when no token could ever be read: once
  // one was, it is kept while the file is unreadable or caught empty between a truncation and
  // a write.
  absl::StatusOr<std::string> Header();

 private:
  const std::string token_file_;
  const std::string config_token_;  // used when there is no token file
  std::atomic<uint64_t>& reloads_;
  std::mutex mutex_;
  // The file's token and the file as they were when last read.
  std::string token_;
  int64_t mtime_ns_ = -1;
  uint64_t size_ = 0;
  uint64_t inode_ = 0;
};

// What one request presents.
struct RequestCredentials {
  std::string authorization;                           // "" or "Bearer TOKEN"
  std::string client_certificate_pem, client_key_pem;  // PEM, both or neither
  // Changes whenever any of the above does, so that a 401 can tell whether the credential it
  // was given is still the current one.
  uint64_t generation = 0;

  bool operator==(const RequestCredentials&) const = default;
};

class Credentials {
 public:
  // `config` must outlive this. `token_reloads` counts token files read again after a change,
  // `exec_runs` runs of the exec plugin.
  Credentials(const Config& config, ExecEnvironment environment,
              std::atomic<uint64_t>& token_reloads, std::atomic<uint64_t>& exec_runs);

  // The credentials for a request now: the exec plugin runs when it has not yet, or when its
  // credential has expired. Errors say what could not be read or run.
  absl::StatusOr<RequestCredentials> Get();

  // After a 401 to a request made with credentials of `generation`: true when newer ones now
  // exist (the plugin ran again and handed out something else, a token file changed, or
  // another request already renewed them), so that the request is worth repeating; false when
  // there is nothing new to try. An error when running the plugin again failed.
  absl::StatusOr<bool> RefreshAfterUnauthorized(uint64_t generation);

 private:
  // The plugin's credential, run again when there is none or it has expired. Holds mutex_.
  absl::Status EnsureExecCredential();
  // The current credentials, with a new generation if they changed. Holds mutex_.
  absl::StatusOr<RequestCredentials> Compose();

  const Config& config_;
  const ExecEnvironment environment_;
  std::atomic<uint64_t>& exec_runs_;
  BearerToken bearer_;
  std::mutex mutex_;
  std::optional<ExecCredential> exec_credential_;
  // The kubeconfig's client certificate and key, read once.
  std::optional<std::pair<std::string, std::string>> certificate_;
  RequestCredentials current_;
};

}  // namespace nodemesh::kube
