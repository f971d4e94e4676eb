// The aggregator as a gRPC server: AgentService (agent_service.h: one long stream per node
// agent, each an AgentSession) and Api (api_service.h over api_calls.h: the clients' queries,
// taps and admin requests relayed to an agent) on one address. This class owns what they act on
// (server_state.h), starts and stops serving, and runs the housekeeping. Built on gRPC's
// synchronous API: each agent stream holds a handler thread reading it and a writer thread
// for the messages going down (stream_link.h); each tap client holds one thread. Queries,
// and admin requests relayed to an agent (admin_relay.h), run on gRPC's pool; housekeeping
// has a thread of its own.
#pragma once

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "aggregator/admin_relay.h"
#include "aggregator/api_calls.h"
#include "aggregator/agent_identity.h"
#include "aggregator/authorization.h"
#include "aggregator/backfill.h"
#include "aggregator/clock.h"
#include "aggregator/cluster.h"
#include "aggregator/connected_agents.h"
#include "aggregator/front_proxy.h"
#include "aggregator/kube_authorizer.h"
#include "aggregator/prometheus_source.h"
#include "aggregator/server_state.h"
#include "aggregator/store.h"
#include "aggregator/tap_hub.h"
#include "common/http/server.h"
#include "common/kube/config.h"
#include "common/tls/tls.h"

namespace grpc {
class Server;
}

namespace nodemesh::aggregator {

class AgentServiceImpl;
class ApiServiceImpl;

// What the aggregator asks the Kubernetes API server, and how it reaches it.
struct KubernetesAuthOptions {
  // The API server (in-cluster credentials or a kubeconfig); required by what follows.
  std::optional<kube::Config> api_server;
  // Agents known by their ServiceAccount tokens (agent_identity.h) besides certificates;
  // none: by certificates only.
  std::optional<AgentTokenOptions> agent_tokens;
  // The replicas' own ServiceAccount: a peer replica presenting its pod's projected token of
  // it (backfill.h, BackfillOptions::token_file) may ask for the seconds it missed. None:
  // peers are let in as readers only (a certificate of --tls-ca, or anyone in open mode).
  std::optional<AgentTokenOptions> peer_tokens;
  // HOST:PORT of the API nodemesh.io/v1alpha1 over HTTPS (http_api.h), with the certificate
  // and key of ServerOptions::tls, for the API server's aggregation layer; empty: none. With
  // it users are known through the API server, and gRPC clients only by certificates.
  std::string api_listen;
};

struct ServerOptions {
  std::string listen_address = "127.0.0.1:8085";
  // No files: plaintext, allowed on loopback only. A certificate: TLS. A CA too: callers
  // are known by their certificates, and authorization.h's rules apply.
  TlsFiles tls;
  KubernetesAuthOptions kubernetes;
  Clock clock = SystemClock();
  StoreOptions store;
  // The Prometheus-compatible store that answers windows longer than the Store's retention.
  std::optional<PrometheusOptions> prometheus;
  TapHubOptions tap;
  AdminRelayOptions admin_relay;
  // Agents connected at once, one per node (Kubernetes itself supports 5,000 nodes). A new
  // node's stream past it is refused with RESOURCE_EXHAUSTED; a node connecting again is not
  // a new one.
  size_t max_nodes = 5000;
  // Threads gRPC may take to serve calls: each agent stream and each tap holds one for its
  // life, a query one while it runs. Past it a call is refused with RESOURCE_EXHAUSTED rather
  // than the process running out of threads. 0: enough for max_nodes agents, tap.max_taps
  // taps and kQueryThreads queries at once.
  int max_threads = 0;
  static constexpr int kQueryThreads = 64;
  // A connected node is stale after this long without a delta.
  int stale_after_seconds = 5;
  // How often a tap's client hears of dropped events, and that a quiet tap is alive.
  TapPacing tap_pacing;
  // The other replicas of this aggregator, which give it the seconds before its start
  // (backfill.h); no peers: its windows start at its start.
  BackfillOptions backfill;
  // Expiry of old data and stale-node notices run this often on their own thread; zero: no
  // thread, the owner calls Housekeep().
  std::chrono::milliseconds housekeeping_interval{1000};
};

class AggregatorServer {
 public:
  explicit AggregatorServer(ServerOptions options);
  ~AggregatorServer();
  AggregatorServer(const AggregatorServer&) = delete;
  AggregatorServer& operator=(const AggregatorServer&) = delete;

  // Binds and serves (the HTTPS API too, with options.kubernetes.api_listen). Returns the
  // gRPC port bound (the one asked for, or the one picked for port
  // 0); UNAVAILABLE when the address cannot be bound.
  absl::StatusOr<int> Start();
  // Ends agent streams and taps, then stops serving. Idempotent.
  void Shutdown();

  // Ages out data past the retention, notes nodes going stale (and coming back) in the log,
  // and forgets nodes gone for longer than the retention.
  void Housekeep();

  const Store& store() const { return store_; }
  // The first second the store holds whole (server_state.h), and whether a peer is still
  // giving it the seconds before its start (backfill.h).
  int64_t history_start_second() const { return state_.history_start_second.load(); }
  bool catching_up() const { return state_.catching_up.load(); }
  // Streams of new nodes refused because max_nodes were connected.
  uint64_t refused_nodes() const { return agents_.refused(); }
  const Cluster& cluster() const { return cluster_; }
  const TapHub& tap_hub() const { return tap_hub_; }
  // Null unless agents are known by their tokens.
  const AgentTokenReviewer* agent_tokens() const { return agent_tokens_.get(); }
  // The HTTPS API's address as bound ("127.0.0.1:39123"); empty without one.
  std::string api_address() const { return api_server_ ? api_server_->address() : ""; }

 private:
  int64_t NowSeconds() const { return UnixSeconds(options_.clock()); }
  void HousekeepingLoop();
  // The HTTPS API of options_.kubernetes.api_listen, its front proxy following the API
  // server's ConfigMap.
  absl::Status StartHttpApi();

  const ServerOptions options_;
  Store store_;
  Cluster cluster_;
  TapHub tap_hub_;
  AdminRelay admin_relay_;
  const Authorizer authorizer_;
  std::unique_ptr<kube::Client> kube_client_;  // with options_.kubernetes.api_server
  std::unique_ptr<AgentTokenReviewer> agent_tokens_;
  std::unique_ptr<AgentTokenReviewer> peer_tokens_;  // with options_.kubernetes.peer_tokens
  ConnectedAgents agents_;
  std::unique_ptr<PrometheusClient> prometheus_;  // with options_.prometheus
  ServerState state_;         // the parts above, as the services use them
  const ApiCalls api_calls_;  // the clients' calls, for every transport
  std::unique_ptr<Backfill> backfill_;  // with options_.backfill.peers
  std::unique_ptr<AgentServiceImpl> agent_service_;
  std::unique_ptr<ApiServiceImpl> api_service_;
  std::unique_ptr<grpc::Server> server_;
  // With options_.kubernetes.api_listen: the HTTPS API and what it asks the API server.
  std::unique_ptr<FrontProxy> front_proxy_;
  std::unique_ptr<KubeAuthorizer> kube_authorizer_;
  std::unique_ptr<http::HttpServer> api_server_;

  std::mutex housekeeping_mutex_;
  std::condition_variable housekeeping_wake_;
  bool stopping_ = false;
  std::thread housekeeping_;
  std::mutex stale_mutex_;  // for the two below
  uint64_t evicted_for_memory_ = 0;
  std::set<std::string> stale_nodes_;  // as of the last Housekeep, for logging changes
};

}  // namespace nodemesh::aggregator
