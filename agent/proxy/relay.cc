#include "agent/proxy/relay.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include <cerrno>

namespace nodemesh::agent {
namespace {

constexpr unsigned kSpliceFlags = SPLICE_F_MOVE | SPLICE_F_NONBLOCK;

// Closing with SO_LINGER {1, 0} sends RST instead of FIN.
void ArmReset(int fd) {
  if (fd < 0) return;
  const linger hard{.l_onoff = 1, .l_linger = 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &hard, sizeof hard);
}

}  // namespace

Relay::Relay(RelayHost& host, RelayObserver& observer, UniqueFd client, UniqueFd upstream,
             int64_t now_ns)
    : host_(host),
      observer_(observer),
      client_(std::move(client)),
      upstream_(std::move(upstream)),
      started_ns_(now_ns),
      last_activity_ns_(now_ns) {
  to_upstream_.from = Side::kClient;
  to_upstream_.from_fd = client_.get();
  to_upstream_.to_fd = upstream_.get();
  to_client_.from = Side::kUpstream;
  to_client_.from_fd = upstream_.get();
  to_client_.to_fd = client_.get();
}

Relay::~Relay() {
  host_.ReleaseBuffer(std::move(to_upstream_.buffer));
  host_.ReleaseBuffer(std::move(to_client_.buffer));
  host_.ReleasePipe(std::move(to_upstream_.pipe));
  host_.ReleasePipe(std::move(to_client_.pipe));
}

void Relay::OnEvents(Side side, uint32_t events, int64_t now_ns) {
  if (state_ == State::kConnecting) {
    // The client's bytes wait in its socket; PumpBoth takes them once connected.
    if (side == Side::kUpstream) FinishConnect(now_ns);
    return;
  }
  if (state_ != State::kRelaying) return;
  // Only what this edge can have changed: the direction reading from this socket, and the
  // one writing to it if bytes were waiting for room. A reported hang-up or FIN means the
  // socket must be read to its end, not only until a short read.
  Flow& reading = FlowFrom(side);
  Flow& writing = FlowFrom(side == Side::kClient ? Side::kUpstream : Side::kClient);
  const bool readable = (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0;
  const bool ending = (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0;
  const bool can_write = (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) != 0 && writing.pending();
  const uint64_t moved_before = to_upstream_.bytes + to_client_.bytes;
  const PumpResult read =
      readable ? Pump(reading, /*stop_at_short_read=*/!ending, now_ns) : PumpResult::kBlocked;
  const PumpResult written = can_write && read != PumpResult::kPeerReset
                                 ? Pump(writing, /*stop_at_short_read=*/false, now_ns)
                                 : PumpResult::kBlocked;
  AfterPumps(read, written, moved_before, now_ns);
}

void Relay::PumpBoth(int64_t now_ns) {
  if (state_ != State::kRelaying) return;
  const uint64_t moved_before = to_upstream_.bytes + to_client_.bytes;
  const PumpResult up = Pump(to_upstream_, /*stop_at_short_read=*/false, now_ns);
  const PumpResult down =
      up == PumpResult::kPeerReset ? up : Pump(to_client_, /*stop_at_short_read=*/false, now_ns);
  AfterPumps(up, down, moved_before, now_ns);
}

void Relay::AfterPumps(PumpResult a, PumpResult b, uint64_t moved_before, int64_t now_ns) {
  if (a == PumpResult::kPeerReset || b == PumpResult::kPeerReset) {
    End(RelayEnd::kReset, now_ns);
    return;
  }
  if (to_upstream_.bytes + to_client_.bytes != moved_before) {
    last_activity_ns_ = now_ns;
    host_.OnActivity(now_ns);
  }
  if (to_upstream_.shut && to_client_.shut) End(RelayEnd::kClosed, now_ns);
}

void Relay::FinishConnect(int64_t now_ns) {
  int error = 0;
  socklen_t length = sizeof error;
  getsockopt(upstream_.get(), SOL_SOCKET, SO_ERROR, &error, &length);
  if (error == 0) {
    // SO_ERROR is also 0 while the handshake is still in flight; a peer name says it is done.
    sockaddr_storage peer;
    socklen_t peer_length = sizeof peer;
    if (getpeername(upstream_.get(), reinterpret_cast<sockaddr*>(&peer), &peer_length) != 0) {
      return;
    }
    state_ = State::kRelaying;
    host_.OnEstablished(now_ns);
    observer_.OnConnected(now_ns);
    // The client may have spoken already, and its edge is spent.
    PumpBoth(now_ns);
    return;
  }
  // The application sees what a direct connect would have shown as closely as TCP allows:
  // a failed connect becomes a reset of its (already accepted) connection.
  End(error == ECONNREFUSED ? RelayEnd::kRefused : RelayEnd::kConnectFailed, now_ns);
}

Relay::PumpResult Relay::Pump(Flow& flow, bool stop_at_short_read, int64_t now_ns) {
  bool drained = false;
  // The writer's socket is full while spliced bytes wait: the pipe's room is still read into
  // (its size bounds what the relay holds, as a buffer's does), so that a hop does not stop
  // reading for as long as the next socket takes to drain a whole pipe.
  bool writer_full = false;
  for (;;) {
    // What was read goes on before anything more is read: copied bytes before spliced ones
    // (a direction holds copied bytes only before it starts splicing, or without a pipe).
    if (flow.pending() && !writer_full) {
      const bool copied = flow.buffer && !flow.buffer->empty();
      const ssize_t sent = copied ? ::send(flow.to_fd, flow.buffer->pending(),
                                           flow.buffer->pending_size(), MSG_NOSIGNAL)
                                  : ::splice(flow.pipe->read_fd(), nullptr, flow.to_fd, nullptr,
                                             flow.pipe->held(), kSpliceFlags);
      if (sent > 0) {
        if (copied) {
          flow.buffer->Drained(static_cast<size_t>(sent));
        } else {
          flow.pipe->Drained(static_cast<size_t>(sent));
        }
        flow.bytes += static_cast<uint64_t>(sent);
        continue;
      }
      if (sent >= 0 || (errno != EAGAIN && errno != EINTR)) return PumpResult::kPeerReset;
      if (copied) return PumpResult::kBlocked;
      writer_full = true;  // its EPOLLOUT comes once it has room
    }
    // Nothing copied pending: give the buffer back, so idle relays hold none.
    host_.ReleaseBuffer(std::move(flow.buffer));
    if (flow.eof) {
      if (writer_full) return PumpResult::kBlocked;  // the FIN goes after the bytes
      host_.ReleasePipe(std::move(flow.pipe));
      if (!flow.shut) {
        ::shutdown(flow.to_fd, SHUT_WR);
        flow.shut = true;
      }
      return PumpResult::kDone;
    }
    if (drained) return PumpResult::kBlocked;
    const bool watched = observer_.Watching(flow.from);
    if (!flow.pipe && flow.bulk) flow.pipe = host_.AcquirePipe();
    if (!flow.pipe) {
      flow.buffer = host_.AcquireBuffer();
      if (!flow.buffer) return PumpResult::kBlocked;  // the host calls back with one
    }
    // Into the pipe's room when there is a pipe, else into the empty buffer. A read that finds
    // nothing means the socket has nothing, or the pipe is full and its writer is too: then
    // the writer's EPOLLOUT brings the relay back to send and read on.
    const size_t room =
        flow.pipe ? flow.pipe->capacity() - flow.pipe->held() : flow.buffer->space_size();
    if (room == 0) return PumpResult::kBlocked;
    const ssize_t received = flow.pipe ? ::splice(flow.from_fd, nullptr, flow.pipe->write_fd(),
                                                  nullptr, room, kSpliceFlags)
                                       : ::recv(flow.from_fd, flow.buffer->space(), room, 0);
    if (received > 0) {
      const auto count = static_cast<size_t>(received);
      if (flow.pipe) {
        flow.pipe->Filled(count);
        observer_.OnBytesUnseen(flow.from, count, now_ns);
        continue;
      }
      drained = stop_at_short_read && count < room;
      flow.buffer->Filled(count);
      if (watched) {
        observer_.OnBytes(flow.from,
                          std::string_view(flow.buffer->pending(), flow.buffer->pending_size()),
                          now_ns);
      } else {  // copied until it proves bulk, or for want of a pipe: counted as if spliced
        observer_.OnBytesUnseen(flow.from, count, now_ns);
        flow.bulk = flow.bulk || count == room;
      }
      continue;
    }
    if (received == 0) {
      flow.eof = true;
      observer_.OnHalfClose(flow.from, now_ns);
      continue;
    }
    if (errno == EAGAIN || errno == EINTR) {
      // Idle relays hold neither.
      host_.ReleaseBuffer(std::move(flow.buffer));
      if (!flow.pending()) host_.ReleasePipe(std::move(flow.pipe));
      return PumpResult::kBlocked;
    }
    return PumpResult::kPeerReset;
  }
}

void Relay::End(RelayEnd end, int64_t now_ns) {
  if (state_ == State::kClosed) return;
  state_ = State::kClosed;
  if (IsFailedEnd(end)) {
    ArmReset(client_.get());
    ArmReset(upstream_.get());
  }
  client_.Reset();
  upstream_.Reset();
  observer_.OnClosed(end, now_ns);
  host_.OnEnded(end, now_ns);
}

}  // namespace nodemesh::agent
