// The bytes of one proxied TCP connection: the application's socket and the agent's
// upstream socket, copied unchanged both ways, with half-close (a FIN from one side is passed
// on while the other keeps sending), backpressure (a side is not read while its bytes cannot
// be written on), bounded buffers, and the upstream's failure mirrored to the application.
// A relay knows no protocol (its RelayObserver does) and no worker (its RelayHost does): it
// is driven by edge-triggered epoll events and by the host's timers, with the time passed
// in, so it runs over socketpairs and loopback in unit tests as it does in the agent.
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>

#include "agent/proxy/buffer_pool.h"
#include "common/base/unique_fd.h"

namespace nodemesh::agent {

// The two sockets of a relay: the application's (accepted by the agent) and the one the
// agent connected upstream.
enum class Side : uint8_t { kClient, kUpstream };

// How a relay ended.
enum class RelayEnd : uint8_t {
  kClosed,          // both directions finished cleanly
  kIdleTimeout,     // nothing moved for the idle timeout: closed cleanly
  kReset,           // a peer reset or a socket failed: the other side is reset too
  kRefused,         // the upstream refused the connect: the application sees a reset
  kConnectFailed,   // the upstream connect failed otherwise (unreachable, ...): likewise
  kConnectTimeout,  // the upstream did not answer in time: likewise
};
std::string_view RelayEndName(RelayEnd end);
// Ends counted as failed connections in metrics: resets, refusals, timeouts of the connect.
inline bool IsFailedEnd(RelayEnd end) {
  return end != RelayEnd::kClosed && end != RelayEnd::kIdleTimeout;
}

// Who watches the bytes go by (observer/): called on the relay's thread, before the bytes are
// sent on. Watching never changes or holds back what is relayed.
class RelayObserver {
 public:
  virtual ~RelayObserver() = default;
  // The upstream accepted the connection; bytes start to flow.
  virtual void OnConnected(int64_t now_ns) = 0;
  // `from` sent `bytes`, which are passed on unchanged.
  virtual void OnBytes(Side from, std::string_view bytes, int64_t now_ns) = 0;
  // `from` half-closed: it sends nothing more.
  virtual void OnHalfClose(Side from, int64_t now_ns) = 0;
  // The relay ended; its sockets are closed.
  virtual void OnClosed(RelayEnd end, int64_t now_ns) = 0;
};

// What a relay needs from where it lives (a worker): buffers, timers, and its end.
class RelayHost {
 public:
  virtual ~RelayHost() = default;
  // A buffer for bytes in flight, or nullptr when none is free: the host then calls
  // Relay::OnBufferAvailable once one is back.
  virtual std::unique_ptr<Buffer> AcquireBuffer() = 0;
  virtual void ReleaseBuffer(std::unique_ptr<Buffer> buffer) = 0;
  // The upstream connected: the connect deadline no longer applies, the idle one does.
  virtual void OnEstablished(int64_t now_ns) = 0;
  // Bytes moved: the idle deadline starts over.
  virtual void OnActivity(int64_t now_ns) = 0;
  // The relay ended and closed its sockets, after its observer heard of it. The host frees
  // the relay once the current event batch is over, never during this call.
  virtual void OnEnded(RelayEnd end, int64_t now_ns) = 0;
};

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
  // Bytes received from `from` and sent on to the other side.
  uint64_t bytes_from(Side from) const { return FlowFrom(from).bytes; }

  // Epoll reported `events` (edge-triggered) on the socket of `side`.
  void OnEvents(Side side, uint32_t events, int64_t now_ns);
  // A buffer came back to the pool while this relay was waiting for one.
  void OnBufferAvailable(int64_t now_ns) { PumpBoth(now_ns); }
  // The upstream did not answer in time: the application sees a reset, as from a dead peer.
  void ConnectTimedOut(int64_t now_ns) { End(RelayEnd::kConnectTimeout, now_ns); }
  void IdleTimedOut(int64_t now_ns) { End(RelayEnd::kIdleTimeout, now_ns); }

 private:
  // One direction of the copy.
  struct Flow {
    Side from = Side::kClient;
    int from_fd = -1;
    int to_fd = -1;
    std::unique_ptr<Buffer> buffer;
    bool eof = false;   // `from` sent FIN
    bool shut = false;  // FIN passed on
    uint64_t bytes = 0;
  };
  enum class PumpResult : uint8_t { kBlocked, kDone, kPeerReset };

  const Flow& FlowFrom(Side from) const {
    return from == Side::kClient ? to_upstream_ : to_client_;
  }
  Flow& FlowFrom(Side from) { return from == Side::kClient ? to_upstream_ : to_client_; }
  void FinishConnect(int64_t now_ns);
  // Moves what `flow.from_fd` has to `flow.to_fd` until one of them blocks. With
  // `stop_at_short_read`, a read that did not fill the buffer ends it too: the socket was
  // drained, and the next bytes (or a FIN not yet reported) bring a new edge.
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
