#include "aggregator/server.h"

#include <fmt/format.h>
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <map>
#include <random>
#include <utility>
#include <vector>

#include "aggregator/agent_service.h"
#include "aggregator/api_service.h"
#include "aggregator/http_api.h"
#include "common/base/file.h"
#include "common/base/log.h"
#include "common/kube/client.h"
#include "common/net/address_holder.h"
#include "common/tls/tls.h"

namespace nodemesh::aggregator {
namespace {

// Agent deltas of a large node (tens of thousands of series) exceed gRPC's default 4 MiB.
constexpr int kMaxMessageBytes = 64 << 20;

// Why --listen could not be taken, naming the process that holds it where /proc tells.
absl::Status CannotListen(const std::string& address) {
  const std::optional<Endpoint> endpoint = Endpoint::Parse(address);
  if (const std::optional<std::string> holder =
          endpoint ? TcpListenerHolder(*endpoint) : std::nullopt) {
    return absl::AlreadyExistsError(fmt::format(
        "cannot listen on {}: the address is in use by {}: stop it, or give --listen another "
        "HOST:PORT",
        address, *holder));
  }
  return absl::UnavailableError(
      fmt::format("cannot listen on {}: the address is in use or not an address of this host (give "
                  "--listen HOST:PORT)",
                  address));
}

std::string ReplicaId() {
  std::random_device random;
  return fmt::format("{:08x}{:08x}", random(), random());
}

}  // namespace

AggregatorServer::AggregatorServer(ServerOptions options)
    : options_(std::move(options)),
      store_(options_.store),
      cluster_(options_.stale_after_seconds),
      tap_hub_([this] { return cluster_.Pods(); }, options_.tap),
      admin_relay_(options_.admin_relay),
      authorizer_(!options_.kubernetes.api_listen.empty() ? AuthMode::kKubernetes
                  : options_.tls.ca.empty()               ? AuthMode::kOpen
                                                          : AuthMode::kCertificates),
      kube_client_(options_.kubernetes.api_server
                       ? std::make_unique<kube::Client>(*options_.kubernetes.api_server)
                       : nullptr),
      agent_tokens_(kube_client_ && options_.kubernetes.agent_tokens
                        ? std::make_unique<AgentTokenReviewer>(
                              *kube_client_, *options_.kubernetes.agent_tokens, options_.clock)
                        : nullptr),
      peer_tokens_(kube_client_ && options_.kubernetes.peer_tokens
                       ? std::make_unique<AgentTokenReviewer>(
                             *kube_client_, *options_.kubernetes.peer_tokens, options_.clock)
                       : nullptr),
      agents_(options_.max_nodes),
      prometheus_(options_.prometheus ? std::make_unique<PrometheusClient>(*options_.prometheus)
                                      : nullptr),
      state_{.clock = options_.clock,
             .history_start_second = NowSeconds(),
             .first_agent_second = options_.backfill.peers.empty() ? 0 : NowSeconds(),
             .catching_up = false,
             .replica_id = ReplicaId(),
             .store = store_,
             .prometheus = prometheus_.get(),
             .cluster = cluster_,
             .tap_hub = tap_hub_,
             .admin_relay = admin_relay_,
             .authorizer = authorizer_,
             .agent_tokens = agent_tokens_.get(),
             .peer_tokens = peer_tokens_.get(),
             .agents = agents_},
      api_calls_(state_, options_.tap_pacing),
      backfill_(options_.backfill.peers.empty()
                    ? nullptr
                    : std::make_unique<Backfill>(options_.backfill, state_,
                                                 options_.store.retention_seconds)),
      agent_service_(std::make_unique<AgentServiceImpl>(state_)),
      api_service_(std::make_unique<ApiServiceImpl>(authorizer_, api_calls_)) {}

AggregatorServer::~AggregatorServer() { Shutdown(); }

absl::StatusOr<int> AggregatorServer::Start() {
  grpc::ServerBuilder builder;
  int port = 0;
  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
  if (!options_.tls.empty()) {
    absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> tls =
        ServerCredentials(options_.tls, "--tls-");
    if (!tls.ok()) return tls.status();
    credentials = *std::move(tls);
  } else if (!IsLoopbackAddress(options_.listen_address)) {
    return absl::InvalidArgumentError(fmt::format(
        "--listen {} is not a loopback address, and plaintext is for loopback only (a local "
        "cluster): give --tls-cert and --tls-key, and --tls-ca to know agents and clients by "
        "their certificates",
        options_.listen_address));
  }
  builder.AddListeningPort(options_.listen_address, credentials, &port);
  builder.RegisterService(agent_service_.get());
  builder.RegisterService(api_service_.get());
  builder.SetMaxReceiveMessageSize(kMaxMessageBytes);
  grpc::ResourceQuota quota("nodemesh-aggregator");
  quota.SetMaxThreads(options_.max_threads > 0
                          ? options_.max_threads
                          : static_cast<int>(options_.max_nodes + options_.tap.max_taps) +
                                ServerOptions::kQueryThreads);
  builder.SetResourceQuota(quota);
  // Finds agents whose node vanished without closing the connection, and lets agents ping.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 30'000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10'000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 5'000);
  // The address is this aggregator's alone: gRPC would otherwise open it with SO_REUSEPORT,
  // and a second aggregator started on it would share it, the kernel splitting agents and
  // queries between the two.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  server_ = builder.BuildAndStart();
  if (!server_ || port == 0) {
    server_.reset();
    return CannotListen(options_.listen_address);
  }
  if (absl::Status api = StartHttpApi(); !api.ok()) {
    server_->Shutdown();
    server_->Wait();
    server_.reset();
    return api;
  }
  if (options_.housekeeping_interval.count() > 0) {
    housekeeping_ = std::thread([this] { HousekeepingLoop(); });
  }
  if (backfill_) backfill_->Start();
  return port;
}

absl::Status AggregatorServer::StartHttpApi() {
  if (options_.kubernetes.api_listen.empty()) return absl::OkStatus();
  if (!kube_client_ || options_.tls.cert.empty() || options_.tls.key.empty()) {
    return absl::InvalidArgumentError(
        "--api-listen serves the Kubernetes API server's aggregation layer: it needs the API "
        "server (in-cluster, or --kubeconfig) and the aggregator's --tls-cert and --tls-key");
  }
  http::TlsServerOptions tls;
  for (auto [file, pem] : {std::pair{&options_.tls.cert, &tls.certificate_chain_pem},
                           std::pair{&options_.tls.key, &tls.private_key_pem}}) {
    absl::StatusOr<std::string> read = ReadFile(*file);
    if (!read.ok()) return read.status();
    *pem = *std::move(read);
  }
  tls.client_ca = std::make_shared<http::ClientCaStore>();
  front_proxy_ =
      std::make_unique<FrontProxy>(*kube_client_, [store = tls.client_ca](const std::string& pem) {
        if (pem.empty()) return store->Clear();
        if (absl::Status replaced = store->Replace(pem); !replaced.ok()) {
          Log(LogLevel::kWarning, "the front proxy's CA cannot be used: {}", replaced.message());
        }
      });
  kube_authorizer_ = std::make_unique<KubeAuthorizer>(*kube_client_);
  absl::StatusOr<std::unique_ptr<http::HttpServer>> listening =
      http::HttpServer::ListenTcp(options_.kubernetes.api_listen, std::move(tls));
  if (!listening.ok()) return listening.status();
  api_server_ = *std::move(listening);
  api_server_->Serve(HttpApiRoutes(*front_proxy_, *kube_authorizer_, api_calls_));
  api_server_->Start();
  front_proxy_->Start();
  return absl::OkStatus();
}

void AggregatorServer::Shutdown() {
  {
    std::lock_guard lock(housekeeping_mutex_);
    if (stopping_) return;
    stopping_ = true;
  }
  housekeeping_wake_.notify_all();
  if (housekeeping_.joinable()) housekeeping_.join();
  if (backfill_) backfill_->Stop();
  if (!server_) return;
  tap_hub_.Shutdown();
  // Its taps end with the hub; then its connections, and nothing more asks the API server.
  if (api_server_) api_server_->Stop();
  if (front_proxy_) front_proxy_->Stop();
  agents_.CancelAll();
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  server_->Wait();
}

void AggregatorServer::HousekeepingLoop() {
  std::unique_lock lock(housekeeping_mutex_);
  while (!housekeeping_wake_.wait_for(lock, options_.housekeeping_interval,
                                      [&] { return stopping_; })) {
    lock.unlock();
    Housekeep();
    lock.lock();
  }
}

void AggregatorServer::Housekeep() {
  const int64_t now = NowSeconds();
  store_.Expire(now);
  const Store::Stats stats = store_.stats();

  const std::vector<std::string> forgotten =
      cluster_.ForgetDisconnected(now, store_.retention_seconds());
  for (const std::string& node : forgotten) {
    Log(LogLevel::kInfo, "forgetting node {}: disconnected for over {} s, its data has aged out",
        node, store_.retention_seconds());
  }
  if (!forgotten.empty()) tap_hub_.PodsChanged();

  // Disconnects are logged as they happen; here, connected nodes that fell silent.
  std::map<std::string, v1::NodeStatus> stale;
  for (v1::NodeStatus& status : cluster_.StaleNodes(now)) {
    stale.emplace(status.node(), std::move(status));
  }
  std::lock_guard lock(stale_mutex_);
  if (stats.evicted_for_memory > evicted_for_memory_) {
    Log(LogLevel::kWarning,
        "memory budget of {} MiB reached: dropped the {} oldest seconds early, so long windows "
        "see less than {} s (give the aggregator more with --max-memory-mb)",
        options_.store.max_memory_bytes >> 20, stats.evicted_for_memory - evicted_for_memory_,
        store_.retention_seconds());
    evicted_for_memory_ = stats.evicted_for_memory;
  }
  for (const auto& [node, status] : stale) {
    if (stale_nodes_.contains(node) || !status.connected()) continue;
    if (status.last_report_unix_seconds() == 0) {
      Log(LogLevel::kWarning, "node {} is stale: connected but no metrics yet", node);
    } else {
      Log(LogLevel::kWarning, "node {} is stale: no metrics for {} s", node,
          now - status.last_report_unix_seconds());
    }
  }
  for (const std::string& node : stale_nodes_) {
    const bool gone = std::find(forgotten.begin(), forgotten.end(), node) != forgotten.end();
    if (!stale.contains(node) && !gone) Log(LogLevel::kInfo, "node {} reports again", node);
  }
  stale_nodes_.clear();
  for (const auto& [node, status] : stale) stale_nodes_.insert(node);
}

}  // namespace nodemesh::aggregator
