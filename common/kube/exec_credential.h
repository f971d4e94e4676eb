// A kubeconfig's exec credential plugin (client.authentication.k8s.io/v1 and v1beta1), run
// once the way client-go runs it: the command from PATH or the kubeconfig's directory, the
// caller's environment with the kubeconfig's `env` over it and KUBERNETES_EXEC_INFO over
// both, stdin handed over only in an interactive run (interactiveMode and whether stdin is a
// terminal decide, with client-go's rules), and the ExecCredential it prints checked with
// client-go's messages. Caching what it hands out is credentials.h's job.
//
// Where nodemesh differs, on purpose: a non-interactive run is stopped after
// ExecEnvironment::non_interactive_timeout (client-go waits forever), and its stderr is
// caught so that a failure names the plugin with its own words; a run that succeeds hands its
// stderr to ExecEnvironment::plugin_stderr. An interactive run shares the caller's stderr, so
// that prompts reach the user as they are written.
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/kube/config.h"

namespace nodemesh::kube {

// What a process running plugins knows of its surroundings.
struct ExecEnvironment {
  // meshctl: isatty(0). Daemons (the agent, the aggregator): false, never interactive.
  bool stdin_is_terminal = false;
  // The caller reads stdin itself (client-go's StdinUnavailable): never handed over.
  bool stdin_unavailable = false;
  std::function<absl::Time()> now = [] { return absl::Now(); };
  std::chrono::milliseconds non_interactive_timeout = std::chrono::seconds(60);
  // The stderr of a run that succeeded (non-interactive runs only); empty: logged as a
  // warning.
  std::function<void(std::string_view text)> plugin_stderr{};
};

// What one run handed out.
struct ExecCredential {
  std::string token;
  std::string client_certificate_pem, client_key_pem;  // both or neither
  std::optional<absl::Time> expiry;                    // none: good until a 401

  bool operator==(const ExecCredential&) const = default;
};

// Runs the plugin of `config.exec` once (it must be set) and checks what it printed. Errors
// are FAILED_PRECONDITION (whatever went wrong, it is the plugin's or its setup's to fix, not
// the API server's), start "getting credentials for user U of <config.source>: " and name the
// plugin: not
// found (with the kubeconfig's installHint), failed with its exit code and the end of its
// stderr, stopped after the timeout, or printed something that is not a valid
// ExecCredential (client-go's message). Blocks for as long as the plugin runs.
absl::StatusOr<ExecCredential> RunExecPlugin(const Config& config,
                                             const ExecEnvironment& environment);

}  // namespace nodemesh::kube
