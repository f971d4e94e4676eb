// What every meshctl command shares: the parsed global flags, the context, and one way to
// fail. The flags most commands share (resource, -n/-A, -t, -o) are in scope.h.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cli/api.h"
#include "cli/meshctl.h"
#include "cli/resource.h"
#include "common/base/format.h"
#include "common/kube/exec_credential.h"
#include "common/tls/tls.h"

namespace nodemesh::cli {

// How meshctl reaches the aggregator's API: its own gRPC address, or through the Kubernetes
// API server with the user's kubeconfig or the pod's in-cluster credentials (kube_api_client.h).
struct ApiPath {
  enum class Kind { kAggregator, kKubeconfig, kInCluster };
  Kind kind = Kind::kAggregator;
  std::string aggregator{};  // kAggregator: HOST:PORT

  bool operator==(const ApiPath&) const = default;
};

// Where a kubeconfig is found without --kubeconfig, as kubectl looks (`context`'s environment).
struct KubeconfigPresence {
  bool environment = false;   // KUBECONFIG set and not empty
  bool default_file = false;  // $HOME/.kube/config exists
};
KubeconfigPresence FindKubeconfig(const Context& context);

// What the choice of ApiPath looks at.
struct ApiPathInputs {
  std::string aggregator_flag{};         // --aggregator
  bool kubeconfig_flags = false;         // --kubeconfig or --context given
  std::string aggregator_environment{};  // NODEMESH_AGGREGATOR
  KubeconfigPresence kubeconfig{};
  bool in_cluster = false;  // KUBERNETES_SERVICE_HOST and _PORT set
};

// The rule, in order: flags first (--aggregator: that address; --kubeconfig or --context:
// that kubeconfig's API server; both: a usage error), then NODEMESH_AGGREGATOR, then a
// kubeconfig (KUBECONFIG, else ~/.kube/config), then the in-cluster credentials, else the
// local cluster's aggregator at kDefaultAggregator.
absl::StatusOr<ApiPath> ChooseApiPath(const ApiPathInputs& inputs);

struct Invocation {
  const Context& context;
  // The global flags, as given ("" when not).
  std::string aggregator{};    // --aggregator
  std::string kubeconfig{};    // --kubeconfig
  std::string kube_context{};  // --context
  TlsFiles tls{};              // --ca, --cert, --key, --tls-server-name, or NODEMESH_CA, ...
  // Set by the subcommand that parsed; run once parsing is over.
  std::function<int()> run{};

  // Makes `run_command` the one to run when `command` is the subcommand given.
  void RunWhenChosen(CLI::App& command, std::function<int()> run_command);

  // Where --kubeconfig/--context, --aggregator and the environment say the API is.
  absl::StatusOr<ApiPath> Path() const;
  // The aggregator's API on that path, or why it cannot be reached there.
  absl::StatusOr<std::unique_ptr<AggregatorApi>> Client() const;
  // For the Kubernetes API server: an exec plugin may prompt when stdin is a terminal; what
  // it writes to stderr otherwise is passed on after its run.
  kube::ExecEnvironment ExecEnvironment() const;
  // Prints "meshctl: <message>" and returns the exit code: 2 for a usage error, else 1.
  int Fail(const absl::Status& status) const;
  // For a problem with one flag's value: "--from: <message>".
  int Fail(std::string_view flag, const absl::Status& status) const;
};

// Each adds its subcommand; the subcommand sets `invocation.run` when it is the one given.
void AddStatCommand(CLI::App& app, Invocation& invocation);
void AddTapCommand(CLI::App& app, Invocation& invocation);
void AddTopCommand(CLI::App& app, Invocation& invocation);
void AddRoutesCommand(CLI::App& app, Invocation& invocation);
void AddEdgesCommand(CLI::App& app, Invocation& invocation);
void AddInjectCommands(CLI::App& app, Invocation& invocation);
void AddCheckCommand(CLI::App& app, Invocation& invocation);
void AddVersionCommand(CLI::App& app, Invocation& invocation);
void AddShellCommand(CLI::App& app, Invocation& invocation);
void AddDashboardCommand(CLI::App& app, Invocation& invocation);

}  // namespace nodemesh::cli
