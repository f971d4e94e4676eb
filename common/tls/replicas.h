// The replicas of one aggregator as an address names them, for the agents (each streams to
// every replica) and for the replicas themselves (each asks a peer for what it missed):
// "HOST:PORT", or several of them separated by commas. A host that is a name stands for
// every address it resolves to, as the chart's headless Service names one address per
// replica pod; the caller resolves again from time to time, so replicas that come and go
// are followed.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/tls/tls.h"

namespace nodemesh {

struct ReplicaAddress {
  std::string address;  // "10.0.0.7:8085", "[fd00::7]:8085", or as given
  // The name its certificate must carry when it was reached through a name: that name.
  // Empty for an address given as one (it is verified as itself).
  std::string server_name;

  bool operator==(const ReplicaAddress&) const = default;
  auto operator<=>(const ReplicaAddress&) const = default;
};

// Whether `addresses` is a list of HOST:PORT, each of which may be dialled with `files`
// (AggregatorDialer: plaintext on loopback only); INVALID_ARGUMENT naming `flag` (or the
// flags of `flag_prefix`) otherwise.
absl::Status CheckReplicaAddresses(std::string_view addresses, std::string_view flag,
                                   const TlsFiles& files, std::string_view flag_prefix);

// The replicas as resolved now, sorted, without repeats. A name's IPv4 addresses, or its
// IPv6 ones when it has no IPv4 (a dual-stack replica would otherwise count twice); a name
// that resolves to nothing now gives none. Blocks while the names are resolved.
std::vector<ReplicaAddress> ResolveReplicas(std::string_view addresses);

// The dialer of one replica: `files`, verifying the name it was reached through unless
// files.server_name names another.
absl::StatusOr<AggregatorDialer> DialerFor(const ReplicaAddress& replica, TlsFiles files,
                                           std::string_view flag_prefix);

}  // namespace nodemesh
