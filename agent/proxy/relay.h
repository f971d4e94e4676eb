// The bytes of one proxied TCP connection: the application's socket and the agent's
// upstream socket, passed on unchanged both ways, with half-close (a FIN from one side is
// passed on while the other keeps sending), backpressure (a side is not read while its bytes
// cannot be written on), bounded buffers, and the upstream's failure mirrored to the
// application. Each direction moves its bytes one of two ways, decided before each read:
// - copied through a buffer (recv, then send) while its RelayObserver watches that side, so
//   the observer reads them (OnBytes);
// - spliced socket -> pipe -> socket inside the kernel once the observer no longer watches
//   (an opaque or TLS connection, a parser that stopped, L7 off) and the side has shown it
//   carries bulk (an unwatched read filled a whole buffer), counted (OnBytesUnseen) but
//   never copied. Bytes a buffer already holds go on first. Until then, or without a pipe
//   from the host (at its bound, or out of descriptors), unwatched bytes are copied, and
//   counted the same way.
// Either way a direction holds at most what its buffer or pipe holds and reads only into
// their room (a buffer once emptied, a pipe also while its writer is full, so that a hop keeps
// reading while the next socket drains), so the order of bytes, backpressure and the counts
// are the same on both paths.
// A relay knows no protocol (its RelayObserver does) and no worker (its RelayHost does; both
// in relay_interface.h): it is driven by edge-triggered epoll events and by the host's timers,
// with the time passed in, so it runs over socketpairs and loopback in unit tests as it does
// in the agent. One thread drives a relay. Splicing into a socket whose peer is gone raises
// SIGPIPE (splice has no MSG_NOSIGNAL): a process with relays ignores SIGPIPE.
#pragma once

#include <cstdint>
#include <memory>

#include "agent/proxy/buffer_pool.h"
#include "agent/proxy/relay_interface.h"
#include "common/base/unique_fd.h"

namespace nodemesh::agent {

class Relay {
 public:
  // `client` is the accepted socket, `upstream` a non-blocking socket with its connect in
  // flight (or already connected). Both must be non-blocking.
  Relay(RelayHost& host, RelayObserver& observer, UniqueFd client, UniqueFd upstream,
        int64_t now_ns);
  ~Relay();
  Relay(const Relay&) = delete;
  Relay& operator=(const Relay&) = delete;

  enum class State : uint8_t { kConnecting, kRelaying, kClosed };
  State state() const { return state_; }
  int fd(Side side) const { return side == Side::kClient ? client_.get() : upstream_.get(); }
  int64_t started_ns() const { return started_ns_; }
  int64_t last_activity_ns() const { return last_activity_ns_; }
  // Bytes received from `from` and sent on to the other side, copied or spliced.
  uint64_t bytes_from(Side from) const { return FlowFrom(from).bytes; }

  // Epoll reported `events` (edge-triggered) on the socket of `side`.
  void OnEvents(Side side, uint32_t events, int64_t now_ns);
  // A buffer came back to the pool while this relay was waiting for one.
  void OnBufferAvailable(int64_t now_ns) { PumpBoth(now_ns); }
  // The upstream did not answer in time: the application sees a reset, as from a dead peer.
  void ConnectTimedOut(int64_t now_ns) { End(RelayEnd::kConnectTimeout, now_ns); }
  void IdleTimedOut(int64_t now_ns) { End(RelayEnd::kIdleTimeout, now_ns); }
  // Nothing moved for the host's quiet spell: the observer may give back what it keeps for
  // the next bytes. The relay has nothing of its own to give back: it holds a buffer or a pipe
  // only while bytes are in it, and bytes waiting on a reader that does not read stay.
  void Quiet() { observer_.OnQuiet(); }

 private:
  // One direction of the copy.
  struct Flow {
    Side from = Side::kClient;
    int from_fd = -1;
    int to_fd = -1;
    std::unique_ptr<Buffer> buffer;  // bytes copied, while some are in flight
    std::unique_ptr<Pipe> pipe;      // bytes spliced, while some are in flight
    bool eof = false;                // `from` sent FIN
    bool shut = false;               // FIN passed on
    // Not watched, and a read filled a whole buffer: bulk, spliced from then on. A side that
    // only ever sends a little (a small exchange, a connection's last bytes, its FIN) never
    // takes a pipe: two descriptors and a megabyte's room are not worth a few bytes.
    bool bulk = false;
    uint64_t bytes = 0;
    // Bytes read and not yet sent on.
    bool pending() const { return (buffer && !buffer->empty()) || (pipe && pipe->held() > 0); }
  };
  enum class PumpResult : uint8_t { kBlocked, kDone, kPeerReset };

  const Flow& FlowFrom(Side from) const {
    return from == Side::kClient ? to_upstream_ : to_client_;
  }
  Flow& FlowFrom(Side from) { return from == Side::kClient ? to_upstream_ : to_client_; }
  void FinishConnect(int64_t now_ns);
  // Moves what `flow.from_fd` has to `flow.to_fd` until one of them blocks. With
  // `stop_at_short_read`, a read that did not fill the buffer ends it too: the socket was
  // drained, and the next bytes (or a FIN not yet reported) bring a new edge. (A splice
  // that moved less than asked says nothing of the socket: it may have filled the pipe's
  // slots, so spliced reads go on until the socket has nothing.)
  PumpResult Pump(Flow& flow, bool stop_at_short_read, int64_t now_ns);
  // Both directions, each until it blocks: when no edge says which one can move.
  void PumpBoth(int64_t now_ns);
  // After the pumps of one event: a reset ends the relay; activity restarts the idle
  // deadline; both directions shut end it cleanly.
  void AfterPumps(PumpResult a, PumpResult b, uint64_t moved_before, int64_t now_ns);
  // Closes both sockets (resetting them when `end` is a failure) and tells observer and host.
  void End(RelayEnd end, int64_t now_ns);

  RelayHost& host_;
  RelayObserver& observer_;
  UniqueFd client_;
  UniqueFd upstream_;
  State state_ = State::kConnecting;
  const int64_t started_ns_;
  int64_t last_activity_ns_;
  Flow to_upstream_;
  Flow to_client_;
};

}  // namespace nodemesh::agent
