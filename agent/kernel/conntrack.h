// Where the node's NAT sent a connection. An application that dials a Kubernetes Service
// dials its cluster IP; the agent dials it too, from inside the pod's netns, and kube-proxy's
// DNAT in the node's own netns (the agent's home) picks one of the Service's pods. The
// conntrack entry of that connection says which: its reply tuple's source is the pod the
// packets were sent to. One netlink socket per worker, asked synchronously (NFCT_Q_GET) once
// per connection dialled to a Service, from the worker's thread only.
#pragma once

#include <memory>
#include <optional>

#include "absl/status/statusor.h"
#include "agent/counter.h"
#include "common/net/address.h"

struct nfct_handle;

namespace nodemesh::agent {

// What the lookups found. The worker's thread writes; anyone reads.
struct ConntrackStats {
  Counter translated;      // an entry whose reply comes from elsewhere than was dialled
  Counter not_translated;  // no entry, or one the NAT did not change
  Counter failed;          // the query failed otherwise (EPERM, the socket, ...)
};

class Conntrack {
 public:
  // A netlink socket in the calling thread's network namespace, which must be the one
  // where the NAT happens (the agent's home).
  static absl::StatusOr<std::unique_ptr<Conntrack>> Open();
  ~Conntrack();
  Conntrack(const Conntrack&) = delete;
  Conntrack& operator=(const Conntrack&) = delete;

  // The TCP connection from `local` (the upstream socket's address) to `dialled` (the cluster
  // IP and port it connected to): the address and port its replies come from, the backend the
  // NAT chose. nullopt when its entry is missing or untranslated (nothing chose another
  // backend), or when the query fails; each counted. IPv4 (v4-mapped) and IPv6.
  std::optional<Endpoint> TranslatedDestination(const Endpoint& local, const Endpoint& dialled);

  const ConntrackStats& stats() const { return stats_; }

 private:
  explicit Conntrack(nfct_handle* handle) : handle_(handle) {}

  nfct_handle* const handle_;
  ConntrackStats stats_;
};

}  // namespace nodemesh::agent
