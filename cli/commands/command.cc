#include "cli/commands/command.h"

#include <filesystem>
#include <optional>

#include "cli/client.h"
#include "cli/kube_api_client.h"
#include "common/kube/config.h"

namespace nodemesh::cli {
namespace {

bool Set(const Context& context, const char* name) {
  const std::optional<std::string> value = context.getenv(name);
  return value.has_value() && !value->empty();
}

}  // namespace

KubeconfigPresence FindKubeconfig(const Context& context) {
  KubeconfigPresence presence;
  presence.environment = Set(context, "KUBECONFIG");
  if (const std::optional<std::string> home = context.getenv("HOME"); home && !home->empty()) {
    std::error_code error;
    presence.default_file =
        std::filesystem::exists(std::filesystem::path(*home) / ".kube" / "config", error);
  }
  return presence;
}

absl::StatusOr<ApiPath> ChooseApiPath(const ApiPathInputs& inputs) {
  if (!inputs.aggregator_flag.empty() && inputs.kubeconfig_flags) {
    return absl::InvalidArgumentError(
        "--aggregator (the aggregator itself) and --kubeconfig/--context (through the "
        "Kubernetes API server) do not go together: give one or the other");
  }
  if (!inputs.aggregator_flag.empty()) {
    return ApiPath{ApiPath::Kind::kAggregator, inputs.aggregator_flag};
  }
  if (inputs.kubeconfig_flags) return ApiPath{ApiPath::Kind::kKubeconfig};
  if (!inputs.aggregator_environment.empty()) {
    return ApiPath{ApiPath::Kind::kAggregator, inputs.aggregator_environment};
  }
  if (inputs.kubeconfig.environment || inputs.kubeconfig.default_file) {
    return ApiPath{ApiPath::Kind::kKubeconfig};
  }
  if (inputs.in_cluster) return ApiPath{ApiPath::Kind::kInCluster};
  return ApiPath{ApiPath::Kind::kAggregator, std::string(kDefaultAggregator)};
}

void Invocation::RunWhenChosen(CLI::App& command, std::function<int()> run_command) {
  command.callback([this, run_command = std::move(run_command)] { run = run_command; });
}

absl::StatusOr<ApiPath> Invocation::Path() const {
  ApiPathInputs inputs;
  inputs.aggregator_flag = aggregator;
  inputs.kubeconfig_flags = !kubeconfig.empty() || !kube_context.empty();
  inputs.aggregator_environment = context.getenv("NODEMESH_AGGREGATOR").value_or("");
  inputs.kubeconfig = FindKubeconfig(context);
  inputs.in_cluster =
      Set(context, "KUBERNETES_SERVICE_HOST") && Set(context, "KUBERNETES_SERVICE_PORT");
  return ChooseApiPath(inputs);
}

kube::ExecEnvironment Invocation::ExecEnvironment() const {
  return {.stdin_is_terminal = context.in_is_tty,
          .plugin_stderr = [&err = context.err](std::string_view text) {
            err << text;
            if (!text.empty() && text.back() != '\n') err << '\n';
          }};
}

absl::StatusOr<std::unique_ptr<AggregatorApi>> Invocation::Client() const {
  const absl::StatusOr<ApiPath> path = Path();
  if (!path.ok()) return path.status();
  if (path->kind == ApiPath::Kind::kAggregator) {
    if (absl::Status valid = ValidateAggregatorAddress(path->aggregator); !valid.ok()) {
      return valid;
    }
    ClientOptions options;
    options.address = path->aggregator;
    options.tls = tls;
    absl::StatusOr<std::unique_ptr<GrpcApiClient>> client = GrpcApiClient::Make(std::move(options));
    if (!client.ok()) return client.status();
    return std::unique_ptr<AggregatorApi>(*std::move(client));
  }
  // The aggregator's certificates mean nothing to the API server: a user who gives them
  // meant to reach the aggregator itself.
  if (!tls.ca.empty() || !tls.cert.empty() || !tls.key.empty() || !tls.server_name.empty()) {
    return absl::InvalidArgumentError(
        "--ca, --cert, --key and --tls-server-name (or NODEMESH_CA, NODEMESH_CERT, NODEMESH_KEY) "
        "are for reaching the aggregator itself: give its address with --aggregator HOST:PORT "
        "too, or leave them out to go through the Kubernetes API server");
  }
  // The kubeconfig is found as kubectl finds it (--kubeconfig, else $KUBECONFIG, else
  // ~/.kube/config).
  absl::StatusOr<kube::Config> config = path->kind == ApiPath::Kind::kKubeconfig
                                            ? kube::LoadKubeconfig(kubeconfig, kube_context)
                                            : kube::InClusterConfig();
  if (!config.ok()) return config.status();
  return std::unique_ptr<AggregatorApi>(
      std::make_unique<KubeApiClient>(*std::move(config), ExecEnvironment()));
}

int Invocation::Fail(const absl::Status& status) const {
  context.err << FailureLine(status) << '\n';
  return status.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

int Invocation::Fail(std::string_view flag, const absl::Status& status) const {
  return Fail(absl::Status(status.code(), fmt::format("{}: {}", flag, status.message())));
}

}  // namespace nodemesh::cli
