// Who holds an address that one of nodemesh's listeners could not take, for the error that
// says so ("127.0.0.1:8085 is in use by nodemesh-aggregator (pid 4242)"). Every listener takes
// its address exclusively (no SO_REUSEPORT, an admin socket never taken over from a live
// agent), so that a second process fails at start instead of sharing the address with the
// first: two aggregators on one port would split the agents and the queries between them.
#pragma once

#include <optional>
#include <string>

#include "common/net/address.h"

namespace nodemesh {

// The process holding a TCP listener on `address` in this process's network namespace: one
// on the same address and port, or on a wildcard address with that port (or, for a wildcard
// `address`, on any address with that port). "nodemesh-aggregator (pid 4242)"; nullopt when
// /proc does not tell (no such listener, or one of another user's processes).
std::optional<std::string> TcpListenerHolder(const Endpoint& address);

// The process at the other end of a connected Unix socket (its SO_PEERCRED), named as above.
std::optional<std::string> UnixPeerHolder(int connected_fd);

// How a process is named in those messages: the base name of its program, and its pid.
std::string DescribeProcess(int pid);

}  // namespace nodemesh
