// nodemesh-aggregator: one per cluster. Node agents stream their metrics and tap events to
// it; meshctl and the debugging shell ask it about the whole cluster.
#include <signal.h>

#include <CLI/CLI.hpp>
#include <cstdlib>

#include "aggregator/server.h"
#include "common/base/log.h"
#include "common/base/version.h"
#include "common/kube/config.h"

namespace {

using nodemesh::Log;
using nodemesh::LogLevel;

// Blocks SIGINT and SIGTERM in every thread (gRPC's included, which start later) and waits for
// one of them here.
int WaitForTerminationSignal() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  int received = 0;
  sigwait(&signals, &received);
  return received;
}

}  // namespace

int main(int argc, char** argv) {
  nodemesh::aggregator::ServerOptions options;
  std::string log_level = "info";
  size_t max_memory_mb = options.store.max_memory_bytes >> 20;
  std::string agent_service_account;
  std::string peer_service_account;
  nodemesh::aggregator::AgentTokenOptions agent_tokens;
  std::string kubeconfig;
  std::string kube_context;
  nodemesh::aggregator::PrometheusOptions prometheus;
  double prometheus_timeout_seconds = 10;

  CLI::App app{
      "nodemesh aggregator: merges the node agents' metrics into an hour of per-second "
      "windows and serves stat, edges, routes and tap to meshctl",
      "nodemesh-aggregator"};
  app.set_version_flag("--version",
                       fmt::format("nodemesh-aggregator version {}", nodemesh::kVersion));
  app.option_defaults()->always_capture_default();
  app.add_option("--listen", options.listen_address,
                 "HOST:PORT to serve agents and clients on (gRPC, nodemesh.v1); in plaintext "
                 "only on loopback, else with TLS (--tls-cert, --tls-key)");
  app.add_option("--tls-cert", options.tls.cert, "PEM file of the aggregator's certificate");
  app.add_option("--tls-key", options.tls.key, "PEM file of its key");
  app.add_option("--tls-ca", options.tls.ca,
                 "PEM file of the CA whose certificates name agents and clients: with it, an "
                 "agent reports only for the node its certificate names (CN=system:node:NODE, "
                 "O=system:nodes), and tapping needs O=nodemesh:tap:NAMESPACE or nodemesh:tap:*");
  app.add_option("--agent-service-account", agent_service_account,
                 "NAMESPACE/NAME of the agents' ServiceAccount: agents may then present their "
                 "pod's projected token instead of a certificate; the API server reviews it "
                 "(TokenReview) and the agent reports only for the node its pod runs on");
  app.add_option("--agent-token-audience", agent_tokens.audience,
                 "The audience the agents' projected tokens are issued for");
  app.add_option("--api-listen", options.kubernetes.api_listen,
                 "HOST:PORT to serve the API nodemesh.io/v1alpha1 on over HTTPS (with --tls-cert "
                 "and --tls-key) for the Kubernetes API server's aggregation layer: users call "
                 "through the API server with their own credentials, and RBAC decides what they "
                 "may read and tap (gRPC clients then need a certificate of --tls-ca)");
  app.add_option("--kubeconfig", kubeconfig,
                 "A kubeconfig to reach the API server with (default: the pod's own "
                 "ServiceAccount, in-cluster)");
  app.add_option("--kube-context", kube_context,
                 "The kubeconfig's context to use (default: its current-context)");
  app.add_option("--max-memory-mb", max_memory_mb,
                 "Memory for the hour of per-second metrics; past it the oldest seconds go first")
      ->check(CLI::Range(size_t{64}, size_t{1} << 20));
  app.add_option("--max-nodes", options.max_nodes,
                 "Agents connected at once, one per node; a new node's past it is refused, and "
                 "so are calls past the threads that these, 64 taps and 64 queries need")
      ->check(CLI::Range(size_t{1}, size_t{100'000}));
  app.add_option("--peers", options.backfill.peers,
                 "The other replicas of this aggregator, which every agent streams to as well: "
                 "HOST:PORT, several separated by commas, or a name resolving to one address per "
                 "replica (a headless Service; this replica among them is skipped). At start, "
                 "the seconds before it are asked of one of them, so that windows reach back "
                 "the whole hour; without, they start at this replica's start");
  app.add_option("--peer-ca", options.backfill.tls.ca,
                 "PEM file of the CA that issued the peers' certificates (with it, they are "
                 "dialled with TLS; without, in plaintext on loopback only)");
  app.add_option("--peer-cert", options.backfill.tls.cert,
                 "PEM file of the certificate presented to the peers: where they have --tls-ca, "
                 "one it issued, as for any caller that reads");
  app.add_option("--peer-key", options.backfill.tls.key, "PEM file of its key");
  app.add_option("--peer-server-name", options.backfill.tls.server_name,
                 "Name the peers' certificates must carry, when it is not the name in --peers");
  app.add_option("--peer-token-file", options.backfill.token_file,
                 "A file holding this pod's projected ServiceAccount token (audience "
                 "--agent-token-audience), presented to the peers, read anew for each call");
  app.add_option("--peer-service-account", peer_service_account,
                 "NAMESPACE/NAME of the replicas' ServiceAccount: a peer presenting its pod's "
                 "projected token of it (reviewed by the API server) may ask for the seconds "
                 "it missed");
  app.add_option("--prometheus", prometheus.url,
                 "http(s)://HOST:PORT[/PATH] of a Prometheus-compatible store (Prometheus, Thanos, "
                 "Mimir, VictoriaMetrics) that scrapes the agents' /metrics: it answers stat, "
                 "edges and routes over windows longer than the hour held in memory (up to 31d)");
  app.add_option("--prometheus-bearer-token-file", prometheus.bearer_token_file,
                 "A file with the bearer token the store wants; read again when it changes");
  app.add_option("--prometheus-basic-auth-file", prometheus.basic_auth_file,
                 "A file with USER:PASSWORD for the store's basic authentication");
  app.add_option("--prometheus-ca-file", prometheus.ca_file,
                 "PEM file of the CA of an https store's certificate (default: the system's)");
  app.add_option("--prometheus-timeout", prometheus_timeout_seconds,
                 "Seconds a query to the store may take, connecting included")
      ->check(CLI::Range(0.1, 600.0));
  app.add_option("--log-level", log_level, "debug, info, warning or error")
      ->check(CLI::IsMember({"debug", "info", "warning", "error"}));
  CLI11_PARSE(app, argc, argv);
  options.store.max_memory_bytes = max_memory_mb << 20;
  if (!options.backfill.peers.empty()) {
    if (const absl::Status peers = nodemesh::CheckReplicaAddresses(
            options.backfill.peers, "--peers", options.backfill.tls, "--peer-");
        !peers.ok()) {
      Log(LogLevel::kError, "{}", peers.message());
      return EXIT_FAILURE;
    }
  }
  if (!prometheus.url.empty()) {
    prometheus.timeout = std::chrono::milliseconds(
        static_cast<int64_t>(prometheus_timeout_seconds * 1000));
    options.prometheus = prometheus;
  } else if (!prometheus.bearer_token_file.empty() || !prometheus.basic_auth_file.empty() ||
             !prometheus.ca_file.empty()) {
    Log(LogLevel::kError,
        "--prometheus-* options without --prometheus: give the store's URL, or drop them");
    return EXIT_FAILURE;
  }

  LogLevel level = LogLevel::kInfo;
  nodemesh::ParseLogLevel(log_level, &level);
  nodemesh::SetLogLevel(level);

  if (!agent_service_account.empty() || !peer_service_account.empty() ||
      !options.kubernetes.api_listen.empty()) {
    nodemesh::aggregator::AgentTokenOptions peer_tokens = agent_tokens;
    absl::Status parsed =
        agent_service_account.empty()
            ? absl::OkStatus()
            : nodemesh::aggregator::ParseAgentServiceAccount(agent_service_account, &agent_tokens);
    if (parsed.ok() && !peer_service_account.empty() &&
        !nodemesh::aggregator::ParseAgentServiceAccount(peer_service_account, &peer_tokens).ok()) {
      parsed = absl::InvalidArgumentError(
          fmt::format("--peer-service-account '{}' is not NAMESPACE/NAME: give the replicas' "
                      "ServiceAccount, e.g. nodemesh/nodemesh-aggregator",
                      peer_service_account));
    }
    const absl::StatusOr<nodemesh::kube::Config> api_server =
        kubeconfig.empty() ? nodemesh::kube::InClusterConfig()
                           : nodemesh::kube::LoadKubeconfig(kubeconfig, kube_context);
    const absl::Status trouble = !parsed.ok() ? parsed : api_server.status();
    if (!trouble.ok()) {
      Log(LogLevel::kError, "{}", trouble.message());
      return EXIT_FAILURE;
    }
    options.kubernetes.api_server = *api_server;
    if (!agent_service_account.empty()) options.kubernetes.agent_tokens = agent_tokens;
    if (!peer_service_account.empty()) options.kubernetes.peer_tokens = peer_tokens;
  }

  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  nodemesh::aggregator::AggregatorServer server(options);
  const absl::StatusOr<int> port = server.Start();
  if (!port.ok()) {
    Log(LogLevel::kError, "{}", port.status().message());
    return EXIT_FAILURE;
  }
  Log(LogLevel::kInfo, "nodemesh-aggregator {} serving agents and clients on {} (port {})",
      nodemesh::kVersion, options.listen_address, *port);
  if (options.tls.empty()) {
    Log(LogLevel::kInfo,
        "plaintext on loopback (a local cluster): nobody is authenticated, "
        "and any local process may report, read and tap");
  } else if (options.tls.ca.empty()) {
    Log(LogLevel::kWarning,
        "TLS without --tls-ca: agents and clients are not authenticated, "
        "so any of them may report, read and tap");
  } else {
    Log(LogLevel::kInfo, "TLS: agents and clients are known by certificates of {}", options.tls.ca);
  }
  if (!options.kubernetes.api_listen.empty()) {
    Log(LogLevel::kInfo,
        "serving nodemesh.io/v1alpha1 on {} for the API server at {}: users are known through "
        "its front proxy, and RBAC decides what they may read and tap",
        server.api_address(), options.kubernetes.api_server->server);
  }
  if (options.prometheus) {
    Log(LogLevel::kInfo,
        "windows longer than {} s are answered from the Prometheus-compatible store at {}",
        options.store.retention_seconds, options.prometheus->url);
  }
  if (options.kubernetes.agent_tokens) {
    Log(LogLevel::kInfo,
        "agents are known by the projected tokens of ServiceAccount {} (audience {}), reviewed "
        "by the API server at {}",
        agent_service_account, agent_tokens.audience, options.kubernetes.api_server->server);
  }
  const int signal = WaitForTerminationSignal();
  Log(LogLevel::kInfo, "{}: shutting down", signal == SIGINT ? "SIGINT" : "SIGTERM");
  server.Shutdown();
  return EXIT_SUCCESS;
}
