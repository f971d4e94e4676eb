// How a worker reaches the far end of a connection it accepted: a socket made inside the
// pod's network namespace (ScopedNetns), marked as the agent's own so that the kernel
// programs pass it, with a non-blocking connect in flight. Outbound, the server sees the
// pod's own address and the pod's routing applies. Inbound, the socket is bound
// transparently to the caller's address, so that the application sees the caller, and a
// passthrough entry in the datapath lets it reach the application instead of being steered
// back to the agent; the entry goes when the connection does. For a connection dialled to a
// Service's cluster IP, the dialer also says which pod the node's NAT chose (conntrack.h).
//
// One per worker, used from its thread only (its conntrack socket is the worker's); one
// dial per connection, never per event.
#pragma once

#include <memory>
#include <optional>

#include "absl/status/status.h"
#include "agent/counter.h"
#include "agent/kernel/conntrack.h"
#include "agent/kernel/datapath.h"
#include "agent/kernel/system.h"
#include "agent/options.h"
#include "common/base/unique_fd.h"
#include "common/net/address.h"

namespace nodemesh::agent {

// What a dial made: the socket with its connect in flight, or the errno that stopped it.
struct UpstreamLeg {
  UniqueFd socket;  // invalid when the dial failed
  int error = 0;    // the dial's errno when it failed (ECONNREFUSED: refused at once)
  // Inbound: the socket's own address, the caller's with a port of its own, whose
  // passthrough entry the connection's end must forget (ForgetPassthrough).
  std::optional<Endpoint> bound_as_caller;
};

class UpstreamDialer {
 public:
  // `marks`, `datapath` and `home` (the agent's own network namespace) outlive the dialer.
  UpstreamDialer(const SocketMarks& marks, Datapath& datapath, const Netns& home)
      : marks_(marks), datapath_(datapath), home_(home) {}
  UpstreamDialer(const UpstreamDialer&) = delete;
  UpstreamDialer& operator=(const UpstreamDialer&) = delete;

  // Opens the conntrack socket in the calling thread's network namespace, which must be
  // `home`, where the node's NAT is. Without it, connections to Services stay named by their
  // cluster IP.
  absl::Status OpenConntrack();

  // From the pod in `pod_netns` to `destination`, the application's original destination.
  UpstreamLeg DialOutbound(const Netns& pod_netns, const Endpoint& destination);
  // From `caller` to `destination`, the application's own address in the pod in `pod_netns`.
  UpstreamLeg DialInbound(const Netns& pod_netns, const Endpoint& caller,
                          const Endpoint& destination);
  // An inbound leg's connection ended: `bound_as_caller` to `destination` is steered again.
  void ForgetPassthrough(const Endpoint& bound_as_caller, const Endpoint& destination) {
    datapath_.ForgetPassthrough(bound_as_caller, destination);
  }

  // The pod the node's NAT sent the connection of `upstream_fd`, dialled to `dialled` (a
  // Service's cluster IP), to; asked once it has connected. nullopt when that is not known:
  // no conntrack socket, no entry, or one not translated (each counted).
  std::optional<Endpoint> TranslatedDestination(int upstream_fd, const Endpoint& dialled);

  // What the Service lookups found; null without a conntrack socket.
  const ConntrackStats* conntrack_stats() const {
    return conntrack_ ? &conntrack_->stats() : nullptr;
  }
  // Lookups not made for want of a conntrack socket.
  const Counter& service_lookups_unavailable() const { return service_lookups_unavailable_; }

 private:
  // A non-blocking socket of `family` made inside the pod's netns, marked `mark`.
  UniqueFd MakeSocket(const Netns& pod_netns, int family, uint32_t mark);
  // Starts `leg`'s connect to `destination`; on failure, the leg is left failed and holds
  // nothing (no socket, no passthrough entry).
  void Connect(const Endpoint& destination, UpstreamLeg* leg);

  const SocketMarks& marks_;
  Datapath& datapath_;
  const Netns& home_;
  // In the agent's home netns; null if it could not be opened.
  std::unique_ptr<Conntrack> conntrack_;
  Counter service_lookups_unavailable_;
};

}  // namespace nodemesh::agent
