// nodemesh-agent: one per node. Redirects the connections of meshed pods to itself in the
// kernel, proxies them unchanged and observes them.
#include <signal.h>
#include <sys/resource.h>
#include <sys/signalfd.h>

#include <CLI/CLI.hpp>
#include <filesystem>

#include "absl/strings/ascii.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "agent/agent.h"
#include "agent/inventory/kubernetes.h"
#include "agent/inventory/local.h"
#include "agent/metrics/export_format.h"
#include "common/base/log.h"
#include "common/base/version.h"

namespace {

using nodemesh::Log;
using nodemesh::LogLevel;

// CLI11 validator for durations such as "500ms", "10s", "1h".
struct DurationValidator : CLI::Validator {
  DurationValidator() {
    name_ = "DURATION";
    func_ = [](std::string& text) {
      absl::Duration duration;
      if (!absl::ParseDuration(text, &duration) || duration <= absl::ZeroDuration()) {
        return std::string("expected a positive duration such as 500ms, 10s or 1h, not '") + text +
               "'";
      }
      return std::string();
    };
  }
};

constexpr std::string_view kKubernetes = "kubernetes";

int64_t Nanoseconds(const std::string& text) {
  absl::Duration duration;
  absl::ParseDuration(text, &duration);
  return absl::ToInt64Nanoseconds(duration);
}

// More descriptors than the default 1024: two per proxied connection.
void RaiseFileLimit() {
  rlimit limit;
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
  }
}

}  // namespace

int main(int argc, char** argv) {
  nodemesh::agent::AgentOptions options;
  std::string connect_timeout = "10s", idle_timeout = "1h", quiet_after = "10s",
              retain_idle = "10m";
  std::string log_level = "info";
  std::string admin_socket = "/run/nodemesh/agent.sock";
  std::string metrics_address = "0.0.0.0:4191";
  std::string l7 = "on";
  std::string same_node_direct = "on";
  nodemesh::agent::KubernetesOptions kubernetes;
  std::string watch_stall_timeout = "90s";

  CLI::App app{
      "nodemesh node agent: transparently proxies and observes the connections of the "
      "meshed pods on this node",
      "nodemesh-agent"};
  app.set_version_flag("--version", fmt::format("nodemesh-agent version {}", nodemesh::kVersion));
  app.option_defaults()->always_capture_default();
  app.add_option("--node", options.node, "Name of this node")->required();
  app.add_option("--inventory", options.inventory_path,
                 "Where this node's pods come from: `kubernetes` (the API server), or the path "
                 "of a local pod inventory (JSON), watched for changes")
      ->required()
      ->check(CLI::IsMember({std::string(kKubernetes)}) | CLI::ExistingFile);
  app.add_option("--kubeconfig", kubernetes.kubeconfig,
                 "With --inventory kubernetes: a kubeconfig to reach the API server with, for an "
                 "agent outside a pod (default: in-cluster, the pod's service account)");
  app.add_option("--kube-context", kubernetes.context,
                 "The kubeconfig's context to use (default: its current-context)");
  app.add_option("--service-account-dir", kubernetes.service_account_dir,
                 "In-cluster credentials: the service account's token, ca.crt and namespace");
  app.add_option("--proc-root", options.proc_root,
                 "The host's /proc, where pods' processes and network namespaces are found "
                 "(mounted elsewhere when the agent does not share the host's pid namespace), "
                 "and the pods' network sysctls are set (its sys/net writable)");
  app.add_option("--watch-stall-timeout", watch_stall_timeout,
                 "An API watch silent for this long (not even a bookmark) is started again")
      ->check(DurationValidator());
  app.add_option("--aggregator", options.aggregator_address,
                 "HOST:PORT of the aggregator to stream metrics and tap events to, or of its "
                 "replicas: several separated by commas, or a name resolving to one address "
                 "per replica (resolved again every 10 s), each streamed to; in plaintext only "
                 "on loopback, else with TLS (--aggregator-ca)");
  app.add_option("--aggregator-ca", options.aggregator_tls.ca,
                 "PEM file of the CA that issued the aggregator's certificate: dial it with TLS");
  app.add_option("--aggregator-cert", options.aggregator_tls.cert,
                 "PEM file of this node's client certificate (CN=system:node:NODE, "
                 "O=system:nodes), for an aggregator that knows agents by certificate");
  app.add_option("--aggregator-key", options.aggregator_tls.key,
                 "PEM file of that certificate's key (it may be the same file, as the kubelet's "
                 "kubelet-client-current.pem is)");
  app.add_option(
      "--aggregator-server-name", options.aggregator_tls.server_name,
      "Name the aggregator's certificate must carry, when it is not --aggregator's host");
  app.add_option("--aggregator-token-file", options.aggregator_token_file,
                 "The pod's projected ServiceAccount token (audience nodemesh.io/aggregator), "
                 "for an aggregator that knows agents by their ServiceAccount; read again for "
                 "every stream, as the kubelet rotates it");
  app.add_option("--cgroup-root", options.cgroup_root,
                 "cgroup (under the cgroup v2 mount) whose subtree holds this node's pods");
  app.add_option("--workers", options.workers,
                 "Proxy worker threads; by default one per CPU the agent may run on")
      ->check(CLI::Range(1, 256))
      ->default_str("CPUs");
  app.add_option("--outbound-port", options.outbound_port,
                 "Port of the agent's outbound listener in every pod")
      ->check(CLI::Range(1, 65535));
  app.add_option("--inbound-port", options.inbound_port,
                 "Port of the agent's inbound listener in every pod")
      ->check(CLI::Range(1, 65535));
  app.add_option("--exclude-ports", options.excluded_ports,
                 "Destination ports never intercepted (comma-separated)")
      ->delimiter(',');
  app.add_option("--connect-timeout", connect_timeout, "Upstream connect timeout")
      ->check(DurationValidator());
  app.add_option("--idle-timeout", idle_timeout, "Close connections idle this long")
      ->check(DurationValidator());
  app.add_option("--quiet-after", quiet_after,
                 "A connection idle this long gives back the memory it keeps for its next "
                 "request (its parser's scratch), and takes it again when that comes")
      ->check(DurationValidator());
  app.add_option("--max-buffers", options.proxy.max_buffers,
                 "I/O buffers (64 KiB) per worker; connections wait for one beyond that")
      ->check(CLI::Range(16, 1 << 20));
  app.add_option("--same-node-direct", same_node_direct,
                 "on: a call between two meshed pods of this node goes straight to the server "
                 "application, from the client pod's address (one hop through the agent); off: "
                 "out through the agent's listener in the client pod and in through its listener "
                 "in the server pod (two hops). Both record the same")
      ->check(CLI::IsMember({"on", "off"}));
  app.add_option("--max-pipes", options.proxy.max_pipes,
                 "pipes per worker (two descriptors each) to splice bytes that are not parsed "
                 "(opaque, TLS, --l7 off) without copying them; beyond that they are copied, "
                 "0 copies all")
      ->check(CLI::Range(0, 1 << 16));
  app.add_option("--admin-socket", admin_socket,
                 "Unix socket of the admin API (root only): /stats, /pods, /connections");
  app.add_option("--metrics-address", metrics_address,
                 "HOST:PORT serving /metrics to Prometheus (port 0: any free port)");
  app.add_option("--max-routes", options.observer.max_routes_per_workload,
                 "Routes kept per destination workload; the rest share one overflow series")
      ->check(CLI::Range(1, 100000));
  app.add_option("--metrics-latency-buckets", options.observer.metrics_export.latency_buckets,
                 "Bounds of the latency histograms on /metrics: fine (28, from 100us to 50s) or "
                 "coarse (11, from 5ms to 10s: fewer series, wider percentile error)")
      ->check(CLI::IsMember({"fine", "coarse"}));
  app.add_option("--metrics-drop-labels", options.observer.metrics_export.dropped_labels,
                 "Labels left out of /metrics (comma-separated), e.g. src_pod,dst_pod: series "
                 "that differ only in them are exported as one, summed. Allowed: src_pod, "
                 "dst_pod, src_service_account, dst_service_account, dst_service (with "
                 "dst_service_namespace), route, status_code, grpc_status")
      ->delimiter(',')
      ->check(CLI::Validator(
          [](std::string& label) {
            // Empty: --metrics-drop-labels= drops none.
            return label.empty() ? std::string() : nodemesh::metrics::WhyLabelIsKept(label);
          },
          "LABEL", "droppable label"));
  app.add_option("--metrics-retain-idle", retain_idle,
                 "How long a metric series with no traffic stays in /metrics")
      ->check(DurationValidator());
  app.add_option("--max-pods", options.max_pods,
                 "Pods enrolled at once (sizes the kernel maps that hold them)")
      ->check(CLI::Range(1, 1 << 20));
  app.add_option("--l7", l7,
                 "on: detect and parse HTTP/1, HTTP/2 and gRPC for request metrics and tap; "
                 "off: proxy every connection as opaque TCP (connection metrics only)")
      ->check(CLI::IsMember({"on", "off"}));
  app.add_option("--tap-headers", options.observer.parser_config.captured_headers,
                 "Request and response headers tap shows (comma-separated; each is copied for "
                 "every request parsed)")
      ->delimiter(',')
      ->default_str(absl::StrJoin(options.observer.parser_config.captured_headers, ","));
  app.add_option("--tap-redact-headers", options.observer.tap_redaction.headers,
                 "Headers whose values tap shows as [redacted], before an event leaves the "
                 "node (comma-separated; an empty value redacts none)")
      ->delimiter(',')
      ->default_str(absl::StrJoin(options.observer.tap_redaction.headers, ","));
  app.add_flag("--tap-strip-query", options.observer.tap_redaction.strip_query,
               "Tap shows paths without their query (/login?[redacted]), and filters match "
               "them so");
  app.add_option("--log-level", log_level, "debug, info, warning or error")
      ->check(CLI::IsMember({"debug", "info", "warning", "error"}));
  CLI11_PARSE(app, argc, argv);

  LogLevel level;
  nodemesh::ParseLogLevel(log_level, &level);
  nodemesh::SetLogLevel(level);
  options.proxy.connect_timeout_ns = Nanoseconds(connect_timeout);
  options.proxy.idle_timeout_ns = Nanoseconds(idle_timeout);
  options.proxy.quiet_after_ns = Nanoseconds(quiet_after);
  options.observer.retain_idle_ns = Nanoseconds(retain_idle);
  options.observer.l7 = l7 == "on";
  options.proxy.same_node_direct = same_node_direct == "on";
  // Header names are compared as the parsers give them: lowercase.
  std::erase(options.observer.metrics_export.dropped_labels, "");
  for (std::vector<std::string>* names : {&options.observer.parser_config.captured_headers,
                                          &options.observer.tap_redaction.headers}) {
    std::erase(*names, "");
    for (std::string& name : *names) absl::AsciiStrToLower(&name);
  }
  RaiseFileLimit();

  // Signals are taken synchronously from a signalfd; every thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);
  const int stop_fd = signalfd(-1, &signals, SFD_CLOEXEC);

  // The listeners first, each taken exclusively: an agent whose addresses another process
  // holds stops before it loads a kernel program.
  std::error_code ignored;
  std::filesystem::create_directories(std::filesystem::path(admin_socket).parent_path(), ignored);
  auto admin = nodemesh::agent::HttpServer::ListenUnix(admin_socket);
  if (!admin.ok()) {
    fmt::print(stderr, "nodemesh-agent: {}\n", admin.status().message());
    return 1;
  }
  auto metrics = nodemesh::agent::HttpServer::ListenTcp(metrics_address);
  if (!metrics.ok()) {
    fmt::print(stderr, "nodemesh-agent: metrics: {}\n", metrics.status().message());
    return 1;
  }
  auto agent = nodemesh::agent::Agent::Create(options);
  if (!agent.ok()) {
    fmt::print(stderr, "nodemesh-agent: {}\n", agent.status().message());
    return 1;
  }
  (*agent)->ServeAdmin(**admin);
  (*agent)->ServeMetrics(**metrics);
  (*admin)->Start();
  (*metrics)->Start();
  Log(LogLevel::kInfo, "serving /metrics on {}, admin API on {}", (*metrics)->address(),
      admin_socket);
  std::unique_ptr<nodemesh::agent::InventorySource> inventory;
  if (options.inventory_path == kKubernetes) {
    kubernetes.node = options.node;
    kubernetes.paths.proc_root = options.proc_root;
    kubernetes.paths.cgroup_root = options.cgroup_root;
    if (absl::StatusOr<std::string> mount = nodemesh::agent::FindCgroup2Mount(); mount.ok()) {
      kubernetes.paths.cgroup_mount = *mount;
    }
    kubernetes.watch_stall_timeout =
        std::chrono::milliseconds(Nanoseconds(watch_stall_timeout) / 1'000'000);
    inventory = std::make_unique<nodemesh::agent::KubernetesInventory>(std::move(kubernetes));
  } else {
    inventory = std::make_unique<nodemesh::agent::LocalInventory>(options.inventory_path);
  }
  if (absl::Status status = (*agent)->Run(*inventory, stop_fd); !status.ok()) {
    fmt::print(stderr, "nodemesh-agent: {}\n", status.message());
    return 1;
  }
  Log(LogLevel::kInfo, "stopping: kernel programs detached, traffic flows direct");
  return 0;
}
