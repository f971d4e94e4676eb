// What one connection's bytes say, as its relay passes them by: the protocol (detected from
// the first bytes), the requests and responses (its parser's events), recorded in the
// worker's metric shard and sent to tap subscribers. An observer never touches a socket and
// never changes what is relayed: a parse failure turns its connection opaque, counted.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "agent/counter.h"
#include "agent/metrics/route.h"
#include "agent/metrics/shard.h"
#include "agent/observer/tap.h"
#include "agent/options.h"
#include "agent/pod_view.h"
#include "agent/proxy/relay_interface.h"
#include "common/net/address.h"
#include "parsers/parser.h"

namespace nodemesh::agent {

struct ConnectionName;

// What the observers of one worker saw. The worker's thread writes; anyone reads.
struct ObserverStats {
  Counter bytes_to_upstream;
  Counter bytes_to_client;
  Counter protocols[parsers::kProtocolCount];  // connections, by the protocol detected
  Counter parse_failures;
  Counter parse_errors[parsers::kProtocolCount][parsers::kParseErrorCount];
  Counter protocol_switches;  // upgrades: the rest of the connection is another protocol
  Counter requests;
  Counter stream_ends;
};

// The agent's tables, shared by every worker's observers: read on the data path, written
// by the control thread (see agent.h).
struct AgentTables {
  const metrics::IdentityTable& identities;
  metrics::RouteTable& routes;
  const PeerDirectory& directory;
  const ServiceDirectory& services;
  const TapSubscriptions& tap;
  const std::string& node;
};

// What the observers of one worker share: the agent's tables and options, and the worker's
// own shard, route cache, tap limiter and outbox, which only that worker's thread touches.
class ObserverContext {
 public:
  ObserverContext(const AgentTables& tables, const ObserverOptions& options, int worker_index,
                  int worker_count)
      : tables_(tables),
        options_(options),
        worker_index_(worker_index),
        worker_count_(worker_count),
        route_cache_(tables.routes, tables.identities) {}

  const AgentTables& tables() const { return tables_; }
  const ObserverOptions& options() const { return options_; }
  metrics::Shard& shard() { return shard_; }
  const metrics::Shard& shard() const { return shard_; }
  ObserverStats& stats() { return stats_; }
  const ObserverStats& stats() const { return stats_; }
  // The aggregator's events, and the local taps'.
  TapOutbox& tap_outbox() { return tap_outbox_; }
  TapOutbox& local_tap_outbox() { return local_tap_outbox_; }
  TapOutbox& tap_outbox_for(uint64_t subscription) {
    return IsLocalTap(subscription) ? local_tap_outbox_ : tap_outbox_;
  }
  // Whether `filter`'s tap may emit one more event now: its rate is the whole
  // agent's, shared by the workers.
  bool AllowTap(const TapFilter& filter, int64_t now_ns) {
    return tap_limiter_.Allow(filter.id, filter.max_rps / worker_count_, now_ns);
  }
  // The route id of `request` to `destination`; no allocation once the route is known.
  metrics::RouteTable::Id RouteOf(const parsers::RequestStart& request,
                                  metrics::IdentityTable::Id destination);
  // Drops the cached routes of identities the agent forgot (their ids will be reused).
  void ForgetIdentities(const std::vector<metrics::IdentityTable::Id>& ids) {
    route_cache_.Forget(ids);
  }
  // The routes this worker's series, streams in flight and cache refer to (the worker's
  // part of forgetting routes: see metrics::RouteCache::KeepOnly).
  void AddReferencedRoutes(absl::flat_hash_set<metrics::RouteTable::Id>* ids) {
    shard_.AddReferencedRoutes(ids);
    route_cache_.KeepOnly(ids);
  }
  metrics::RouteCache& route_cache() { return route_cache_; }
  // "node:worker-sequence", unique in the cluster for a connection's tap request ids.
  std::string NextConnectionName();

 private:
  const AgentTables tables_;
  const ObserverOptions& options_;
  const int worker_index_;
  const int worker_count_;
  metrics::Shard shard_;
  metrics::RouteCache route_cache_;
  std::string route_scratch_;
  TapRateLimiter tap_limiter_;
  TapOutbox tap_outbox_;
  TapOutbox local_tap_outbox_;
  ObserverStats stats_;
  uint64_t connection_sequence_ = 0;
};

// The observer of one connection, owned with its relay by the worker.
class ConnectionObserver final : public RelayObserver, private parsers::EventSink {
 public:
  // `pod` is the view, as the connection started, of the enrolled pod it belongs to; `client`
  // the application's or caller's address as accepted, `destination` where it was going. `source_address` says
  // from which address the server sees the client, asked the first time a tap needs it.
  ConnectionObserver(ObserverContext& context, std::shared_ptr<const PodView> pod,
                     Direction direction, const Endpoint& client, const Endpoint& destination,
                     std::function<Endpoint()> source_address, int64_t now_ns);

  // "detecting" until the first bytes decide, then the protocol's name.
  std::string_view protocol_name() const;
  uint64_t requests() const { return requests_; }
  std::string pod_key() const { return pod_->info.key(); }

  // Outbound and dialled to a Service's cluster IP: the connection is named by the pod the
  // node's NAT sends it to, which the worker finds out once the upstream has connected and
  // tells with SetTranslatedDestination, before OnConnected.
  bool dialled_service() const { return traffic_.service != metrics::IdentityTable::kExternal; }
  // Where the NAT sent a connection dialled to a Service; nullopt when that is not known (the
  // destination stays what the cluster IP names: External).
  void SetTranslatedDestination(const std::optional<Endpoint>& destination);

  // RelayObserver
  void OnConnected(int64_t now_ns) override;
  // While detecting or parsing, both sides; after that (opaque, TLS, a parser stopped, L7
  // off), neither: what is left is only counted.
  bool Watching(Side from) const override;
  void OnBytes(Side from, std::string_view bytes, int64_t now_ns) override;
  void OnBytesUnseen(Side from, uint64_t count, int64_t now_ns) override;
  void OnHalfClose(Side from, int64_t now_ns) override;
  // The parser gives back its scratch between messages, and the connection its maps of
  // streams in flight when none is: an idle connection keeps what counts, not what parses.
  void OnQuiet() override;
  void OnClosed(RelayEnd end, int64_t now_ns) override;

 private:
  // parsers::EventSink
  void OnRequestStart(const parsers::RequestStart& request) override;
  void OnResponseStart(const parsers::ResponseStart& response) override;
  void OnStreamEnd(const parsers::StreamEnd& end) override;

  // The client's first bytes, until they decide the protocol.
  void Detect(parsers::Peer sender, std::string_view bytes, int64_t now_ns);
  // No protocol to find: every byte from here on is only counted.
  void SettleOpaque();
  void StopParser();
  // Both kinds of bytes count alike in the connection's series and the worker's stats.
  void CountBytes(Side from, uint64_t count);
  // For log lines (see observer.cc).
  ConnectionName Name() const;

  // Tap: the subscriptions each tapped stream matched, and both ends' identities (and the
  // Service dialled, null when none), looked up the first time a tap needs them.
  void MaybeTap(const parsers::RequestStart& request);
  void EmitTap(uint32_t stream_id, const std::vector<uint64_t>& subscriptions,
               const std::function<void(v1::TapEvent&)>& fill);
  const metrics::Identity& SourceIdentity();
  const metrics::Identity& DestinationIdentity();
  const metrics::Identity* DialledServiceIdentity();
  const Endpoint& SourceAddress();

  ObserverContext& context_;
  const std::shared_ptr<const PodView> pod_;
  const Direction direction_;
  const Endpoint destination_;
  const int64_t started_ns_;
  std::function<Endpoint()> find_source_address_;
  uint64_t requests_ = 0;

  // Metrics: who talks to whom, this connection's TCP series, and the route of each request
  // in flight by stream id. A connection dialled to a Service opens its series once its
  // destination is known (connected, or failed to): nothing is counted under the cluster IP
  // it was not going to.
  void OpenTcpSeries();
  metrics::TrafficKey traffic_;
  metrics::TcpSeries* tcp_series_ = nullptr;
  metrics::StreamRoutes stream_routes_;

  // What only a tapped connection needs, made the first time a tap does: most connections are
  // never tapped, and three identities are most of an observer's size.
  struct TappedStream {
    std::vector<uint64_t> subscriptions;
    parsers::Timestamp request_at = 0;
  };
  using TappedStreams = absl::flat_hash_map<uint32_t, TappedStream>;
  struct TapState {
    TappedStreams tapped;
    std::string name;  // node:worker-sequence
    std::optional<metrics::Identity> source_identity;
    std::optional<metrics::Identity> destination_identity;
    std::optional<metrics::Identity> service_identity;
    std::optional<Endpoint> source_address;
  };
  TapState& Tap();
  std::unique_ptr<TapState> tap_;

  // Protocol detection: the client's first bytes, until they decide. An HTTP/2 server sends
  // its preface (SETTINGS) without waiting for the client's, so what the server says
  // meanwhile is held too (a little of it: see Detect) for the parser.
  bool detecting_ = true;
  std::string first_bytes_;
  std::string server_first_bytes_;
  parsers::Protocol protocol_ = parsers::Protocol::kOpaque;
  std::unique_ptr<parsers::ConnectionParser> parser_;
};

}  // namespace nodemesh::agent
