#include "agent/proxy/connection.h"

#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "agent/aggregator_client.h"
#include "agent/proxy/worker.h"
#include "common/base/log.h"
#include "common/metrics/classification.h"
#include "common/wire/convert.h"
#include "parsers/detect.h"

namespace nodemesh::agent {
namespace {

// Closing with SO_LINGER {1, 0} sends RST instead of FIN.
void ArmReset(int fd) {
  if (fd < 0) return;
  const linger hard{.l_onoff = 1, .l_linger = 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &hard, sizeof hard);
}

}  // namespace

Connection::Connection(Worker& worker, std::shared_ptr<const PodRuntime> pod, Direction direction,
                       UniqueFd client, UniqueFd upstream, Endpoint destination,
                       std::optional<Endpoint> bound_as_caller, int64_t now_ns)
    : worker_(worker),
      pod_(std::move(pod)),
      direction_(direction),
      client_(std::move(client)),
      upstream_(std::move(upstream)),
      client_address_(Endpoint::Peer(client_.get()).value_or(Endpoint{})),
      destination_(destination),
      sequence_(worker.NextConnectionSequence()),
      bound_as_caller_(bound_as_caller),
      started_ns_(now_ns),
      last_activity_ns_(now_ns) {
  to_upstream_.from = client_.get();
  to_upstream_.to = upstream_.get();
  to_upstream_.sender = parsers::Peer::kClient;
  to_client_.from = upstream_.get();
  to_client_.to = client_.get();
  to_client_.sender = parsers::Peer::kServer;
  // Outbound, the pod calls out to the destination; inbound, the client calls the pod.
  const metrics::IdentityTable::Id local = pod_->view()->identity;
  const metrics::IdentityTable::Id remote = worker_.metrics().directory.Lookup(
      direction_ == Direction::kOutbound ? destination_.ip : client_address_.ip);
  traffic_ = direction_ == Direction::kOutbound
                 ? metrics::TrafficKey{local, remote, Direction::kOutbound}
                 : metrics::TrafficKey{remote, local, Direction::kInbound};
  tcp_series_ = worker_.shard().OpenConnection(traffic_);
}

Connection::~Connection() {
  worker_.buffers().Release(std::move(to_upstream_.buffer));
  worker_.buffers().Release(std::move(to_client_.buffer));
}

ConnectionSummary Connection::Summary(int64_t now_ns) const {
  ConnectionSummary summary;
  summary.direction = direction_;
  summary.pod = pod_->view()->info.key();
  summary.client = client_address_;
  summary.destination = destination_;
  summary.protocol = detecting_ ? "detecting" : std::string(parsers::ProtocolName(protocol_));
  summary.state = state_ == State::kConnecting ? "connecting" : "proxying";
  summary.age_ns = now_ns - started_ns_;
  summary.bytes_to_upstream = to_upstream_.bytes;
  summary.bytes_to_client = to_client_.bytes;
  return summary;
}

void Connection::OnEvents(Socket socket, uint32_t events, int64_t now_ns) {
  if (state_ == State::kConnecting) {
    // The client's bytes wait in its socket; PumpBoth takes them once connected.
    if (socket == Socket::kUpstream) FinishConnect(now_ns);
    return;
  }
  if (state_ != State::kProxying) return;
  // Only what this edge can have changed: the direction reading from this socket, and the
  // one writing to it if bytes were waiting for room. A reported hang-up or FIN means the
  // socket must be read to its end, not only until a short read.
  Flow& reading = socket == Socket::kClient ? to_upstream_ : to_client_;
  Flow& writing = socket == Socket::kClient ? to_client_ : to_upstream_;
  const bool readable = (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0;
  const bool ending = (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0;
  const bool can_write = (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) != 0 && writing.buffer &&
                         !writing.buffer->empty();
  const uint64_t moved_before = to_upstream_.bytes + to_client_.bytes;
  const PumpResult read =
      readable ? Pump(reading, /*stop_at_short_read=*/!ending, now_ns) : PumpResult::kBlocked;
  const PumpResult written = can_write && read != PumpResult::kPeerReset
                                 ? Pump(writing, /*stop_at_short_read=*/false, now_ns)
                                 : PumpResult::kBlocked;
  AfterPumps(read, written, moved_before, now_ns);
}

void Connection::PumpBoth(int64_t now_ns) {
  if (state_ != State::kProxying) return;
  const uint64_t moved_before = to_upstream_.bytes + to_client_.bytes;
  const PumpResult up = Pump(to_upstream_, /*stop_at_short_read=*/false, now_ns);
  const PumpResult down =
      up == PumpResult::kPeerReset ? up : Pump(to_client_, /*stop_at_short_read=*/false, now_ns);
  AfterPumps(up, down, moved_before, now_ns);
}

void Connection::AfterPumps(PumpResult a, PumpResult b, uint64_t moved_before, int64_t now_ns) {
  if (a == PumpResult::kPeerReset || b == PumpResult::kPeerReset) {
    worker_.stats().Add(worker_.stats().resets);
    Close(/*reset=*/true, now_ns);
    return;
  }
  if (to_upstream_.bytes + to_client_.bytes != moved_before) {
    last_activity_ns_ = now_ns;
    worker_.Touch(this, now_ns);
  }
  if (to_upstream_.shut && to_client_.shut) Close(/*reset=*/false, now_ns);
}

void Connection::FinishConnect(int64_t now_ns) {
  int error = 0;
  socklen_t length = sizeof error;
  getsockopt(upstream_.get(), SOL_SOCKET, SO_ERROR, &error, &length);
  if (error == 0) {
    // SO_ERROR is also 0 while the handshake is still in flight.
    if (!Endpoint::Peer(upstream_.get())) return;
    state_ = State::kProxying;
    worker_.ConnectionEstablished(this, now_ns);
    if (!worker_.options().l7) SettleOpaque();  // opaque from the first byte
    // The client may have spoken already, and its edge is spent.
    PumpBoth(now_ns);
    return;
  }
  // The application sees what a direct connect would have shown as closely as TCP allows:
  // a refused connect becomes a reset of its (already accepted) connection.
  WorkerStats& stats = worker_.stats();
  stats.Add(error == ECONNREFUSED ? stats.upstream_refused : stats.upstream_failed);
  Log(LogLevel::kDebug, "{} {} -> {}: upstream connect failed: {}", DirectionName(direction_),
      pod_->view()->info.key(), destination_.ToString(), std::strerror(error));
  Close(/*reset=*/true, now_ns);
}

void Connection::ConnectTimedOut(int64_t now_ns) {
  worker_.stats().Add(worker_.stats().connect_timeouts);
  Log(LogLevel::kDebug, "{} {} -> {}: upstream connect timed out", DirectionName(direction_),
      pod_->view()->info.key(), destination_.ToString());
  Close(/*reset=*/true, now_ns);
}

void Connection::IdleTimedOut(int64_t now_ns) {
  worker_.stats().Add(worker_.stats().idle_timeouts);
  Close(/*reset=*/false, now_ns);
}

Connection::PumpResult Connection::Pump(Flow& flow, bool stop_at_short_read, int64_t now_ns) {
  bool drained = false;
  for (;;) {
    if (flow.buffer && !flow.buffer->empty()) {
      const ssize_t sent =
          ::send(flow.to, flow.buffer->pending(), flow.buffer->pending_size(), MSG_NOSIGNAL);
      if (sent > 0) {
        flow.buffer->Drained(static_cast<size_t>(sent));
        flow.bytes += static_cast<uint64_t>(sent);
        if (flow.sender == parsers::Peer::kServer)
          tcp_series_->write_bytes += static_cast<uint64_t>(sent);
        continue;
      }
      if (sent < 0 && (errno == EAGAIN || errno == EINTR)) return PumpResult::kBlocked;
      return PumpResult::kPeerReset;
    }
    // Nothing pending: give the buffer back, so idle connections hold none.
    worker_.buffers().Release(std::move(flow.buffer));
    if (flow.eof) {
      if (!flow.shut) {
        ::shutdown(flow.to, SHUT_WR);
        flow.shut = true;
      }
      return PumpResult::kDone;
    }
    if (drained) return PumpResult::kBlocked;
    flow.buffer = worker_.buffers().Acquire();
    if (!flow.buffer) {
      worker_.WaitForBuffer(this);
      return PumpResult::kBlocked;
    }
    const size_t room = flow.buffer->space_size();
    const ssize_t received = ::recv(flow.from, flow.buffer->space(), room, 0);
    if (received > 0) {
      drained = stop_at_short_read && static_cast<size_t>(received) < room;
      flow.buffer->Filled(static_cast<size_t>(received));
      if (flow.sender == parsers::Peer::kClient) {
        tcp_series_->read_bytes += static_cast<uint64_t>(received);
      }
      Observe(flow.sender, std::string_view(flow.buffer->pending(), flow.buffer->pending_size()),
              now_ns);
      continue;
    }
    if (received == 0) {
      flow.eof = true;
      ObserveEnd(flow.sender, now_ns);
      continue;
    }
    if (errno == EAGAIN || errno == EINTR) {
      worker_.buffers().Release(std::move(flow.buffer));
      return PumpResult::kBlocked;
    }
    return PumpResult::kPeerReset;
  }
}

void Connection::Observe(parsers::Peer sender, std::string_view bytes, int64_t now_ns) {
  WorkerStats& stats = worker_.stats();
  stats.Add(sender == parsers::Peer::kClient ? stats.bytes_to_upstream : stats.bytes_to_client,
            bytes.size());
  if (detecting_) {
    if (sender == parsers::Peer::kServer) {
      // An HTTP/2 server may send its SETTINGS before the client's preface arrives (gRPC
      // servers do, on every connection), so a server speaking first is not yet proof of
      // an unknown protocol: its first few bytes wait for the client's to decide. More
      // than a preface's worth is a server-first protocol the parsers do not know.
      constexpr size_t kMaxServerPrefaceBytes = 4096;
      if (server_first_bytes_.size() + bytes.size() <= kMaxServerPrefaceBytes) {
        server_first_bytes_.append(bytes);
        return;
      }
      SettleOpaque();
      return;
    }
    const size_t room = parsers::kMaxDetectionBytes - first_bytes_.size();
    first_bytes_.append(bytes.substr(0, room));
    std::optional<parsers::Detection> detection = parsers::DetectProtocol(first_bytes_);
    if (!detection) return;
    detecting_ = false;
    protocol_ = detection->protocol;
    // Only HTTP/2 servers speak first; any other protocol with a server that did is not
    // what its first client bytes suggest.
    if (!server_first_bytes_.empty() && protocol_ != parsers::Protocol::kHttp2) {
      protocol_ = parsers::Protocol::kOpaque;
    }
    stats.Add(stats.protocols[static_cast<int>(protocol_)]);
    if (!detection->sni.empty()) {
      Log(LogLevel::kDebug, "{} {} -> {}: TLS for {}", DirectionName(direction_),
          pod_->view()->info.key(), destination_.ToString(), detection->sni);
    }
    StartParser(protocol_, now_ns);
    // The parser sees every byte from the first: what detection held, then the rest of
    // this read beyond it.
    const std::string held = std::move(first_bytes_);
    first_bytes_.clear();
    if (parser_) parser_->Feed(parsers::Peer::kClient, held, now_ns);
    if (parser_ && bytes.size() > room) {
      parser_->Feed(parsers::Peer::kClient, bytes.substr(room), now_ns);
    }
    const std::string server_held = std::move(server_first_bytes_);
    server_first_bytes_.clear();
    if (parser_ && !server_held.empty()) parser_->Feed(parsers::Peer::kServer, server_held, now_ns);
  } else if (parser_) {
    parser_->Feed(sender, bytes, now_ns);
  }
  if (parser_ && parser_->state() != parsers::ParserState::kParsing) StopParser();
}

void Connection::ObserveEnd(parsers::Peer sender, int64_t now_ns) {
  if (detecting_) {
    // Either side ended before the client's bytes decided: opaque, as detect.h asks (and
    // counted, so that every connection has a protocol).
    SettleOpaque();
    return;
  }
  if (!parser_) return;
  parser_->EndOfInput(sender, now_ns);
  if (parser_->state() != parsers::ParserState::kParsing) StopParser();
}

void Connection::SettleOpaque() {
  detecting_ = false;
  first_bytes_.clear();
  server_first_bytes_.clear();
  WorkerStats& stats = worker_.stats();
  stats.Add(stats.protocols[static_cast<int>(parsers::Protocol::kOpaque)]);
}

const Endpoint& Connection::SourceAddress() {
  if (!source_address_) {
    // Outbound, the application's own socket sits on the pod's loopback (it was redirected
    // there); the address the server sees is the upstream socket's.
    source_address_ = direction_ == Direction::kInbound
                          ? client_address_
                          : Endpoint::Local(upstream_.get()).value_or(client_address_);
  }
  return *source_address_;
}

void Connection::StartParser(parsers::Protocol protocol, int64_t) {
  parser_ = parsers::MakeParser(protocol, worker_.options().parser_config, *this);
}

void Connection::StopParser() {
  WorkerStats& stats = worker_.stats();
  if (parser_->state() == parsers::ParserState::kFailed) {
    stats.Add(stats.parse_failures);
    stats.Add(stats.parse_errors[static_cast<int>(protocol_)][static_cast<int>(parser_->error())]);
    Log(LogLevel::kDebug, "{} {} -> {}: {} parse failed ({}: {}); forwarding as opaque TCP",
        DirectionName(direction_), pod_->view()->info.key(), destination_.ToString(),
        parsers::ProtocolName(protocol_), parsers::ParseErrorName(parser_->error()),
        parser_->error_detail());
  } else {
    stats.Add(stats.protocol_switches);
  }
  parser_.reset();
}

void Connection::Close(bool reset, int64_t now_ns) {
  if (state_ == State::kClosed) return;
  state_ = State::kClosed;
  if (parser_) parser_->Close(now_ns);
  metrics::Shard::CloseConnection(tcp_series_, now_ns - started_ns_, reset);
  if (reset) {
    ArmReset(client_.get());
    ArmReset(upstream_.get());
  }
  client_.Reset();
  upstream_.Reset();
  if (bound_as_caller_) worker_.datapath().ForgetPassthrough(*bound_as_caller_, destination_);
  worker_.ConnectionClosed(this);
}

void Connection::OnRequestStart(const parsers::RequestStart& request) {
  worker_.stats().Add(worker_.stats().requests);
  const metrics::RouteTable::Id route = worker_.RouteOf(request, traffic_.destination);
  stream_routes_[request.stream_id] = route;
  worker_.shard().CountRequest(metrics::RequestKey{traffic_, route});
  if (worker_.tap_subscriptions().active()) MaybeTap(request);
  Log(LogLevel::kDebug, "{} {} -> {}: request {} {} {}", DirectionName(direction_),
      pod_->view()->info.key(), destination_.ToString(), request.stream_id, request.method,
      request.path);
}

void Connection::OnResponseStart(const parsers::ResponseStart& response) {
  const auto tapped = tapped_.find(response.stream_id);
  if (tapped == tapped_.end()) return;
  EmitTap(response.stream_id, tapped->second.subscriptions, [&](v1::TapEvent& event) {
    v1::TapResponse& out = *event.mutable_response();
    out.set_status(static_cast<uint32_t>(response.status));
    out.set_latency_ns(response.at - tapped->second.request_at);
    for (const parsers::Header& header : response.headers) {
      (*out.mutable_headers())[header.name] =
          IsSensitiveHeader(header.name) ? "[redacted]" : header.value;
    }
  });
}

void Connection::OnStreamEnd(const parsers::StreamEnd& end) {
  worker_.stats().Add(worker_.stats().stream_ends);
  const auto it = stream_routes_.find(end.stream_id);
  if (it == stream_routes_.end()) return;  // the parser reports ends of started streams only
  const int grpc_status = end.grpc_status.value_or(-1);
  const metrics::ResponseKey key = metrics::ResponseKeyOf(metrics::RequestKey{traffic_, it->second},
                                                          end.status, grpc_status, end.reason);
  stream_routes_.erase(it);
  if (const auto tapped = tapped_.find(end.stream_id); tapped != tapped_.end()) {
    EmitTap(end.stream_id, tapped->second.subscriptions, [&](v1::TapEvent& event) {
      v1::TapEnd& out = *event.mutable_end();
      out.set_reason(static_cast<v1::TapEnd::Reason>(static_cast<int>(end.reason) + 1));
      out.set_grpc_status(grpc_status);
      out.set_grpc_message(end.grpc_message);
      out.set_error_code(end.error_code);
      out.set_duration_ns(end.at - end.request_at);
      out.set_request_bytes(end.request_bytes);
      out.set_response_bytes(end.response_bytes);
      out.set_request_messages(end.request_messages);
      out.set_response_messages(end.response_messages);
    });
    tapped_.erase(tapped);
  }
  worker_.shard().CountResponse(key, end.at - end.request_at,
                                end.response_at != 0 ? end.response_at - end.request_at : -1);
}

const metrics::Identity& Connection::SourceIdentity() {
  if (!source_identity_) source_identity_ = worker_.metrics().identities.Get(traffic_.source);
  return *source_identity_;
}

const metrics::Identity& Connection::DestinationIdentity() {
  if (!destination_identity_) {
    destination_identity_ = worker_.metrics().identities.Get(traffic_.destination);
  }
  return *destination_identity_;
}

void Connection::MaybeTap(const parsers::RequestStart& request) {
  const std::shared_ptr<const TapSubscriptions::List> filters =
      worker_.tap_subscriptions().Current();
  std::vector<uint64_t> matched;
  for (const TapFilter& filter : *filters) {
    if (!filter.Matches(SourceIdentity(), DestinationIdentity(), request)) continue;
    // The agent's rate is shared by its workers.
    if (!worker_.tap_limiter().Allow(filter.id, filter.max_rps / worker_.options().worker_count,
                                     request.at)) {
      continue;
    }
    matched.push_back(filter.id);
  }
  if (matched.empty()) return;
  EmitTap(request.stream_id, matched, [&](v1::TapEvent& event) {
    v1::TapRequest& out = *event.mutable_request();
    out.set_method(request.method);
    out.set_scheme(request.scheme);
    out.set_authority(request.authority);
    out.set_path(request.path);
    out.set_grpc(request.grpc);
    for (const parsers::Header& header : request.headers) {
      (*out.mutable_headers())[header.name] =
          IsSensitiveHeader(header.name) ? "[redacted]" : header.value;
    }
  });
  tapped_[request.stream_id] = TappedStream{std::move(matched), request.at};
}

void Connection::EmitTap(uint32_t stream_id, const std::vector<uint64_t>& subscriptions,
                         const std::function<void(v1::TapEvent&)>& fill) {
  v1::TapEvent event;
  event.set_request_id(
      fmt::format("{}:{}-{}:{}", worker_.node(), worker_.index(), sequence_, stream_id));
  *event.mutable_source() = wire::ToProto(SourceIdentity());
  *event.mutable_destination() = wire::ToProto(DestinationIdentity());
  event.set_source_address(SourceAddress().ToString());
  event.set_destination_address(destination_.ToString());
  event.set_direction(direction_ == Direction::kOutbound ? v1::OUTBOUND : v1::INBOUND);
  event.set_unix_micros(std::chrono::duration_cast<std::chrono::microseconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count());
  fill(event);
  for (size_t i = 0; i < subscriptions.size(); ++i) {
    event.set_subscription(subscriptions[i]);
    if (i + 1 == subscriptions.size()) {
      worker_.tap_outbox().Push(std::move(event));
    } else {
      worker_.tap_outbox().Push(event);
    }
  }
}

}  // namespace nodemesh::agent
