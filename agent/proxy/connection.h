// One proxied TCP connection: the application's socket and the agent's upstream socket,
// bytes copied unchanged both ways, observed on the way by protocol detection and an L7
// parser. Lives on one worker thread from accept to close.
#pragma once

#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "agent/kernel/system.h"
#include "agent/metrics/route.h"
#include "agent/metrics/shard.h"
#include "agent/observer/tap.h"
#include "agent/pod.h"
#include "agent/proxy/buffer_pool.h"
#include "common/net/address.h"
#include "parsers/parser.h"

namespace nodemesh::agent {

class Worker;
struct ConnectionSummary;

class Connection final : public parsers::EventSink {
 public:
  // `client` is the accepted socket, `upstream` a socket with a connect in flight.
  // Inbound, `bound_as_caller` is the upstream socket's transparent source address, whose
  // passthrough entry goes when the connection does.
  Connection(Worker& worker, std::shared_ptr<const PodRuntime> pod, Direction direction,
             UniqueFd client, UniqueFd upstream, Endpoint destination,
             std::optional<Endpoint> bound_as_caller, int64_t now_ns);
  ~Connection() override;

  enum class State : uint8_t { kConnecting, kProxying, kClosed };
  State state() const { return state_; }
  int client_fd() const { return client_.get(); }
  int upstream_fd() const { return upstream_.get(); }
  int64_t started_ns() const { return started_ns_; }
  int64_t last_activity_ns() const { return last_activity_ns_; }
  const Endpoint& destination() const { return destination_; }
  Direction direction() const { return direction_; }

  ConnectionSummary Summary(int64_t now_ns) const;

  // Which of its two sockets an epoll event is for.
  enum class Socket : uint8_t { kClient, kUpstream };
  // Epoll reported `events` (edge-triggered) on one of the sockets.
  void OnEvents(Socket socket, uint32_t events, int64_t now_ns);
  // A buffer came back to the pool while this connection was waiting for one.
  void OnBufferAvailable(int64_t now_ns) { PumpBoth(now_ns); }
  // The upstream did not answer in time: the application sees a reset, as from a dead peer.
  void ConnectTimedOut(int64_t now_ns);
  void IdleTimedOut(int64_t now_ns);

  // Where the worker keeps this connection in its timeout lists.
  std::list<Connection*>::iterator timer_position;
  bool connecting = true;  // in the connect list, else in the idle list
  bool waiting_for_buffer = false;

  // parsers::EventSink
  void OnRequestStart(const parsers::RequestStart& request) override;
  void OnResponseStart(const parsers::ResponseStart& response) override;
  void OnStreamEnd(const parsers::StreamEnd& end) override;

 private:
  // One direction of the copy.
  struct Flow {
    int from = -1;
    int to = -1;
    parsers::Peer sender = parsers::Peer::kClient;
    std::unique_ptr<Buffer> buffer;
    bool eof = false;   // `from` sent FIN
    bool shut = false;  // FIN passed on to `to`
    uint64_t bytes = 0;
  };
  enum class PumpResult : uint8_t { kBlocked, kDone, kPeerReset };

  void FinishConnect(int64_t now_ns);
  // Moves what `flow.from` has to `flow.to` until one of them blocks. With
  // `stop_at_short_read`, a read that did not fill the buffer ends it too: the socket was
  // drained, and the next bytes (or a FIN not yet reported) bring a new edge.
  PumpResult Pump(Flow& flow, bool stop_at_short_read, int64_t now_ns);
  // Both directions, each until it blocks: when no edge says which one can move.
  void PumpBoth(int64_t now_ns);
  // After the pumps of one event: a reset ends the connection; activity restarts its idle
  // timer; both directions shut ends it cleanly.
  void AfterPumps(PumpResult a, PumpResult b, uint64_t moved_before, int64_t now_ns);
  void Observe(parsers::Peer sender, std::string_view bytes, int64_t now_ns);
  void ObserveEnd(parsers::Peer sender, int64_t now_ns);
  // No protocol to find: every byte from here on is only counted.
  void SettleOpaque();
  void StartParser(parsers::Protocol protocol, int64_t now_ns);
  void StopParser();
  // Ends the connection: a clean close, or a reset of both sockets.
  void Close(bool reset, int64_t now_ns);

  Worker& worker_;
  const std::shared_ptr<const PodRuntime> pod_;
  const Direction direction_;
  UniqueFd client_;
  UniqueFd upstream_;
  const Endpoint client_address_;
  const Endpoint destination_;
  const uint64_t sequence_;  // unique on its worker, for tap request ids
  const std::optional<Endpoint> bound_as_caller_;
  State state_ = State::kConnecting;
  const int64_t started_ns_;
  int64_t last_activity_ns_;
  Flow to_upstream_;
  Flow to_client_;

  // Metrics: who talks to whom, this connection's TCP series, and the route of each
  // request in flight by stream id.
  metrics::TrafficKey traffic_;
  metrics::TcpSeries* tcp_series_ = nullptr;
  absl::flat_hash_map<uint32_t, metrics::RouteTable::Id> stream_routes_;

  // Tap: the subscriptions each tapped stream matched, and both ends' identities, looked up
  // the first time a tap needs them.
  void MaybeTap(const parsers::RequestStart& request);
  void EmitTap(uint32_t stream_id, const std::vector<uint64_t>& subscriptions,
               const std::function<void(v1::TapEvent&)>& fill);
  const metrics::Identity& SourceIdentity();
  // The client as the server sees it, found the first time a tap needs it.
  const Endpoint& SourceAddress();
  const metrics::Identity& DestinationIdentity();
  struct TappedStream {
    std::vector<uint64_t> subscriptions;
    parsers::Timestamp request_at = 0;
  };
  absl::flat_hash_map<uint32_t, TappedStream> tapped_;
  std::optional<metrics::Identity> source_identity_;
  std::optional<metrics::Identity> destination_identity_;
  std::optional<Endpoint> source_address_;

  // Protocol detection: the client's first bytes, until they decide. An HTTP/2 server
  // sends its preface (SETTINGS) without waiting for the client's, so what the server
  // says meanwhile is held too (a little of it: see Observe) for the parser.
  bool detecting_ = true;
  std::string first_bytes_;
  std::string server_first_bytes_;
  parsers::Protocol protocol_ = parsers::Protocol::kOpaque;
  std::unique_ptr<parsers::ConnectionParser> parser_;
};

}  // namespace nodemesh::agent
