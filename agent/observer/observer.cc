#include "agent/observer/observer.h"

#include <chrono>

#include "common/base/format.h"
#include "common/base/log.h"
#include "common/metrics/classification.h"
#include "common/wire/convert.h"
#include "parsers/detect.h"

namespace nodemesh::agent {

// How log lines name a connection: "outbound emojivoto/web-1 -> 10.77.0.12:8080". Formatted
// only when a line is written, so that debug lines cost nothing per request otherwise.
struct ConnectionName {
  Direction direction;
  const PodView& pod;
  const Endpoint& destination;
};

}  // namespace nodemesh::agent

template <>
struct fmt::formatter<nodemesh::agent::ConnectionName> : fmt::formatter<std::string_view> {
  auto format(const nodemesh::agent::ConnectionName& name, fmt::format_context& context) const {
    return fmt::format_to(context.out(), "{} {} -> {}",
                          nodemesh::metrics::DirectionName(name.direction),
                          name.pod.info.key(), name.destination.ToString());
  }
};

namespace nodemesh::agent {
namespace {

parsers::Peer PeerOf(Side side) {
  return side == Side::kClient ? parsers::Peer::kClient : parsers::Peer::kServer;
}

// An HTTP/2 server may send its SETTINGS before the client's preface arrives (gRPC servers
// do, on every connection), so a server speaking first is not yet proof of an unknown
// protocol: its first bytes, up to this many, wait for the client's to decide. More than a
// preface's worth is a server-first protocol the parsers do not know.
constexpr size_t kMaxServerPrefaceBytes = 4096;

}  // namespace

metrics::RouteTable::Id ObserverContext::RouteOf(const parsers::RequestStart& request,
                                                 metrics::IdentityTable::Id destination) {
  metrics::TemplateRoute(request, &route_scratch_);
  return route_cache_.Lookup(destination, route_scratch_);
}

std::string ObserverContext::NextConnectionName() {
  return fmt::format("{}:{}-{}", tables_.node, worker_index_, ++connection_sequence_);
}

ConnectionObserver::ConnectionObserver(ObserverContext& context,
                                       std::shared_ptr<const PodView> pod, Direction direction,
                                       const Endpoint& client, const Endpoint& destination,
                                       std::function<Endpoint()> source_address, int64_t now_ns)
    : context_(context),
      pod_(std::move(pod)),
      direction_(direction),
      destination_(destination),
      started_ns_(now_ns),
      find_source_address_(std::move(source_address)),
      stream_routes_(context.route_cache()) {
  // Outbound, the pod calls out to the destination; inbound, the client calls the pod.
  const metrics::IdentityTable::Id local = pod_->identity;
  const metrics::IdentityTable::Id remote = context_.tables().directory.Lookup(
      direction_ == Direction::kOutbound ? destination.ip : client.ip);
  // Inbound, the caller's address is its own: a Service's NAT changes only destinations.
  traffic_ = direction_ == Direction::kOutbound
                 ? metrics::TrafficKey{local, remote, Direction::kOutbound,
                                       context_.tables().services.Lookup(destination.ip)}
                 : metrics::TrafficKey{remote, local, Direction::kInbound};
  if (!dialled_service()) OpenTcpSeries();
}

void ConnectionObserver::OpenTcpSeries() {
  tcp_series_ = context_.shard().OpenConnection(traffic_);
}

void ConnectionObserver::SetTranslatedDestination(const std::optional<Endpoint>& destination) {
  if (tcp_series_ != nullptr || !destination) return;
  traffic_.destination = context_.tables().directory.Lookup(destination->ip);
  if (tap_) tap_->destination_identity.reset();
}

std::string_view ConnectionObserver::protocol_name() const {
  return detecting_ ? "detecting" : parsers::ProtocolName(protocol_);
}

ConnectionName ConnectionObserver::Name() const {
  return ConnectionName{direction_, *pod_, destination_};
}

void ConnectionObserver::OnConnected(int64_t) {
  if (tcp_series_ == nullptr) OpenTcpSeries();
  if (!context_.options().l7) SettleOpaque();  // opaque from the first byte
}

bool ConnectionObserver::Watching(Side) const { return detecting_ || parser_ != nullptr; }

void ConnectionObserver::CountBytes(Side from, uint64_t count) {
  ObserverStats& stats = context_.stats();
  if (from == Side::kClient) {
    stats.bytes_to_upstream.Add(count);
    tcp_series_->read_bytes += count;
  } else {
    stats.bytes_to_client.Add(count);
    tcp_series_->write_bytes += count;
  }
}

void ConnectionObserver::OnBytesUnseen(Side from, uint64_t count, int64_t) {
  CountBytes(from, count);
}

void ConnectionObserver::OnBytes(Side from, std::string_view bytes, int64_t now_ns) {
  CountBytes(from, bytes.size());
  if (detecting_) {
    Detect(PeerOf(from), bytes, now_ns);
  } else if (parser_) {
    parser_->Feed(PeerOf(from), bytes, now_ns);
  }
  if (parser_ && parser_->state() != parsers::ParserState::kParsing) StopParser();
}

void ConnectionObserver::Detect(parsers::Peer sender, std::string_view bytes, int64_t now_ns) {
  if (sender == parsers::Peer::kServer) {
    if (server_first_bytes_.size() + bytes.size() <= kMaxServerPrefaceBytes) {
      server_first_bytes_.append(bytes);
    } else {
      SettleOpaque();
    }
    return;
  }
  const size_t room = parsers::kMaxDetectionBytes - first_bytes_.size();
  first_bytes_.append(bytes.substr(0, room));
  const std::optional<parsers::Detection> detection = parsers::DetectProtocol(first_bytes_);
  if (!detection) return;
  detecting_ = false;
  protocol_ = detection->protocol;
  // Only HTTP/2 servers speak first; any other protocol with a server that did is not what
  // its first client bytes suggest.
  if (!server_first_bytes_.empty() && protocol_ != parsers::Protocol::kHttp2) {
    protocol_ = parsers::Protocol::kOpaque;
  }
  context_.stats().protocols[static_cast<size_t>(protocol_)].Add();
  if (!detection->sni.empty()) Log(LogLevel::kDebug, "{}: TLS for {}", Name(), detection->sni);
  parser_ = parsers::MakeParser(protocol_, context_.options().parser_config, *this);
  if (!parser_) {
    first_bytes_.clear();
    server_first_bytes_.clear();
    return;
  }
  // The parser sees every byte from the first: what detection held, then the rest of this
  // read beyond it, then what the server said meanwhile.
  const std::string held = std::move(first_bytes_);
  first_bytes_.clear();
  parser_->Feed(parsers::Peer::kClient, held, now_ns);
  if (bytes.size() > room) parser_->Feed(parsers::Peer::kClient, bytes.substr(room), now_ns);
  const std::string server_held = std::move(server_first_bytes_);
  server_first_bytes_.clear();
  if (!server_held.empty()) parser_->Feed(parsers::Peer::kServer, server_held, now_ns);
}

void ConnectionObserver::OnHalfClose(Side from, int64_t now_ns) {
  if (detecting_) {
    // Either side ended before the client's bytes decided: opaque (and counted, so that
    // every connection has a protocol).
    SettleOpaque();
    return;
  }
  if (!parser_) return;
  parser_->EndOfInput(PeerOf(from), now_ns);
  if (parser_->state() != parsers::ParserState::kParsing) StopParser();
}

void ConnectionObserver::OnQuiet() {
  if (parser_) parser_->ReleaseIdleMemory();
  stream_routes_.ReleaseIdleMemory();
  if (tap_ && tap_->tapped.empty()) tap_->tapped = {};
}

void ConnectionObserver::OnClosed(RelayEnd end, int64_t now_ns) {
  // Dialled to a Service and never connected: no pod was reached, the cluster IP names it.
  if (tcp_series_ == nullptr) OpenTcpSeries();
  if (parser_) parser_->Close(now_ns);
  metrics::Shard::CloseConnection(tcp_series_, now_ns - started_ns_, IsFailedEnd(end));
  if (end != RelayEnd::kClosed) Log(LogLevel::kDebug, "{}: {}", Name(), RelayEndName(end));
}

void ConnectionObserver::SettleOpaque() {
  detecting_ = false;
  first_bytes_.clear();
  server_first_bytes_.clear();
  context_.stats().protocols[static_cast<size_t>(parsers::Protocol::kOpaque)].Add();
}

void ConnectionObserver::StopParser() {
  ObserverStats& stats = context_.stats();
  if (parser_->state() == parsers::ParserState::kFailed) {
    stats.parse_failures.Add();
    stats.parse_errors[static_cast<size_t>(protocol_)][static_cast<size_t>(parser_->error())].Add();
    Log(LogLevel::kDebug, "{}: {} parse failed ({}: {}); forwarding as opaque TCP", Name(),
        parsers::ProtocolName(protocol_), parsers::ParseErrorName(parser_->error()),
        parser_->error_detail());
  } else {
    stats.protocol_switches.Add();
  }
  parser_.reset();
}

void ConnectionObserver::OnRequestStart(const parsers::RequestStart& request) {
  ++requests_;
  context_.stats().requests.Add();
  const metrics::RouteTable::Id route = context_.RouteOf(request, traffic_.destination);
  stream_routes_.Start(request.stream_id, route);
  context_.shard().CountRequest(metrics::RequestKey{traffic_, route});
  if (context_.tables().tap.active()) MaybeTap(request);
  Log(LogLevel::kDebug, "{}: request {} {} {}", Name(), request.stream_id, request.method,
      request.path);
}

void ConnectionObserver::OnResponseStart(const parsers::ResponseStart& response) {
  if (!tap_) return;
  const auto tapped = tap_->tapped.find(response.stream_id);
  if (tapped == tap_->tapped.end()) return;
  EmitTap(response.stream_id, tapped->second.subscriptions, [&](v1::TapEvent& event) {
    v1::TapResponse& out = *event.mutable_response();
    out.set_status(static_cast<uint32_t>(response.status));
    out.set_latency_ns(response.at - tapped->second.request_at);
    for (const parsers::Header& header : response.headers) {
      (*out.mutable_headers())[header.name] =
          TapHeaderValue(context_.options().tap_redaction, header);
    }
  });
}

void ConnectionObserver::OnStreamEnd(const parsers::StreamEnd& end) {
  context_.stats().stream_ends.Add();
  const std::optional<metrics::RouteTable::Id> route = stream_routes_.End(end.stream_id);
  if (!route) return;  // the parser reports ends of started streams only
  const int grpc_status = end.grpc_status.value_or(-1);
  const metrics::ResponseKey key = metrics::ResponseKeyOf(metrics::RequestKey{traffic_, *route},
                                                          end.status, grpc_status, end.reason);
  const auto tapped = tap_ ? tap_->tapped.find(end.stream_id) : TappedStreams::iterator();
  if (tap_ && tapped != tap_->tapped.end()) {
    EmitTap(end.stream_id, tapped->second.subscriptions, [&](v1::TapEvent& event) {
      v1::TapEnd& out = *event.mutable_end();
      out.set_reason(wire::ToProto(end.reason));
      out.set_grpc_status(grpc_status);
      out.set_grpc_message(end.grpc_message);
      out.set_error_code(end.error_code);
      out.set_duration_ns(end.at - end.request_at);
      out.set_request_bytes(end.request_bytes);
      out.set_response_bytes(end.response_bytes);
      out.set_request_messages(end.request_messages);
      out.set_response_messages(end.response_messages);
    });
    tap_->tapped.erase(tapped);
  }
  context_.shard().CountResponse(key, end.at - end.request_at,
                                 end.response_at != 0 ? end.response_at - end.request_at : -1);
}

ConnectionObserver::TapState& ConnectionObserver::Tap() {
  if (!tap_) tap_ = std::make_unique<TapState>();
  return *tap_;
}

const metrics::Identity& ConnectionObserver::SourceIdentity() {
  std::optional<metrics::Identity>& identity = Tap().source_identity;
  if (!identity) identity = context_.tables().identities.Get(traffic_.source);
  return *identity;
}

const metrics::Identity& ConnectionObserver::DestinationIdentity() {
  std::optional<metrics::Identity>& identity = Tap().destination_identity;
  if (!identity) identity = context_.tables().identities.Get(traffic_.destination);
  return *identity;
}

const metrics::Identity* ConnectionObserver::DialledServiceIdentity() {
  if (!dialled_service()) return nullptr;
  std::optional<metrics::Identity>& identity = Tap().service_identity;
  if (!identity) identity = context_.tables().identities.Get(traffic_.service);
  return &*identity;
}

const Endpoint& ConnectionObserver::SourceAddress() {
  std::optional<Endpoint>& address = Tap().source_address;
  if (!address) address = find_source_address_();
  return *address;
}

void ConnectionObserver::MaybeTap(const parsers::RequestStart& request) {
  const std::shared_ptr<const TapSubscriptions::List> filters = context_.tables().tap.Current();
  // Checked by every filter while a tap is active: a copy only when the query is hidden.
  std::string stripped;
  const std::string_view path = TapPath(context_.options().tap_redaction, request.path, &stripped);
  std::vector<uint64_t> matched;
  for (const TapFilter& filter : *filters) {
    if (!filter.Matches(SourceIdentity(), DestinationIdentity(), DialledServiceIdentity(), request,
                        path)) {
      continue;
    }
    if (!context_.AllowTap(filter, request.at)) continue;
    matched.push_back(filter.id);
  }
  if (matched.empty()) return;
  EmitTap(request.stream_id, matched, [&](v1::TapEvent& event) {
    v1::TapRequest& out = *event.mutable_request();
    out.set_method(request.method);
    out.set_scheme(request.scheme);
    out.set_authority(request.authority);
    out.set_path(std::string(path));
    out.set_grpc(request.grpc);
    for (const parsers::Header& header : request.headers) {
      (*out.mutable_headers())[header.name] =
          TapHeaderValue(context_.options().tap_redaction, header);
    }
  });
  Tap().tapped[request.stream_id] = TappedStream{std::move(matched), request.at};
}

void ConnectionObserver::EmitTap(uint32_t stream_id, const std::vector<uint64_t>& subscriptions,
                                 const std::function<void(v1::TapEvent&)>& fill) {
  std::string& name = Tap().name;
  if (name.empty()) name = context_.NextConnectionName();
  v1::TapEvent event;
  event.set_request_id(fmt::format("{}:{}", name, stream_id));
  *event.mutable_source() = wire::ToProto(SourceIdentity());
  *event.mutable_destination() = wire::ToProto(DestinationIdentity());
  if (const metrics::Identity* service = DialledServiceIdentity()) {
    *event.mutable_destination_service() = wire::ToProto(*service);
  }
  event.set_source_address(SourceAddress().ToString());
  event.set_destination_address(destination_.ToString());
  event.set_direction(wire::ToProto(direction_));
  event.set_unix_micros(std::chrono::duration_cast<std::chrono::microseconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count());
  fill(event);
  for (size_t i = 0; i < subscriptions.size(); ++i) {
    event.set_subscription(subscriptions[i]);
    TapOutbox& outbox = context_.tap_outbox_for(subscriptions[i]);
    if (i + 1 == subscriptions.size()) {
      outbox.Push(std::move(event));
    } else {
      outbox.Push(event);
    }
  }
}

}  // namespace nodemesh::agent
