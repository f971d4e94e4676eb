// The relay's interfaces (relay.h): what a relay tells whoever watches its bytes
// (RelayObserver: the observer/ room) and what it asks of the place it lives in (RelayHost:
// a worker), with the vocabulary both speak (its two sides, how it ended). Header only: the
// observer implements RelayObserver without linking, or knowing, the relay itself.
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>

#include "agent/proxy/buffer_pool.h"
#include "agent/proxy/pipe_pool.h"

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
constexpr std::string_view RelayEndName(RelayEnd end) {
  switch (end) {
    case RelayEnd::kClosed:
      return "closed";
    case RelayEnd::kIdleTimeout:
      return "idle timeout";
    case RelayEnd::kReset:
      return "reset";
    case RelayEnd::kRefused:
      return "refused";
    case RelayEnd::kConnectFailed:
      return "connect failed";
    case RelayEnd::kConnectTimeout:
      return "connect timeout";
  }
  return "unknown";
}
// Ends counted as failed connections in metrics: resets, refusals, timeouts of the connect.
inline bool IsFailedEnd(RelayEnd end) {
  return end != RelayEnd::kClosed && end != RelayEnd::kIdleTimeout;
}

// Who watches the bytes go by (observer/): called on the relay's thread, before the bytes are
// sent on. Watching never changes or holds back what is relayed. Every byte a side sends is
// told once, in order: by OnBytes while the observer watches that side, by OnBytesUnseen once
// it does not (the relay then moves them in the kernel, without reading them).
class RelayObserver {
 public:
  virtual ~RelayObserver() = default;
  // The upstream accepted the connection; bytes start to flow.
  virtual void OnConnected(int64_t now_ns) = 0;
  // Whether the observer still reads what `from` sends. Asked before each read; once false
  // it stays false for the rest of the connection.
  virtual bool Watching(Side from) const = 0;
  // `from` sent `bytes`, which are passed on unchanged.
  virtual void OnBytes(Side from, std::string_view bytes, int64_t now_ns) = 0;
  // `from` sent `count` bytes while not watched: passed on unchanged, counted, not read.
  virtual void OnBytesUnseen(Side from, uint64_t count, int64_t now_ns) = 0;
  // `from` half-closed: it sends nothing more.
  virtual void OnHalfClose(Side from, int64_t now_ns) = 0;
  // Nothing moved either way for a while: what the observer keeps only for the next bytes
  // (a parser's scratch) may be given back, to be taken again when they come.
  virtual void OnQuiet() = 0;
  // The relay ended; its sockets are closed.
  virtual void OnClosed(RelayEnd end, int64_t now_ns) = 0;
};

// What a relay needs from where it lives (a worker): buffers, pipes, timers, and its end.
class RelayHost {
 public:
  virtual ~RelayHost() = default;
  // A buffer for bytes in flight, or nullptr when none is free: the host then calls
  // Relay::OnBufferAvailable once one is back.
  virtual std::unique_ptr<Buffer> AcquireBuffer() = 0;
  virtual void ReleaseBuffer(std::unique_ptr<Buffer> buffer) = 0;
  // A pipe to splice bytes its observer does not watch, or nullptr when none can be had: the
  // relay then copies them through a buffer.
  virtual std::unique_ptr<Pipe> AcquirePipe() = 0;
  virtual void ReleasePipe(std::unique_ptr<Pipe> pipe) = 0;
  // The upstream connected: the connect deadline no longer applies, the idle one does.
  virtual void OnEstablished(int64_t now_ns) = 0;
  // Bytes moved: the idle deadline starts over.
  virtual void OnActivity(int64_t now_ns) = 0;
  // The relay ended and closed its sockets, after its observer heard of it. The host frees
  // the relay once the current event batch is over, never during this call.
  virtual void OnEnded(RelayEnd end, int64_t now_ns) = 0;
};

}  // namespace nodemesh::agent
