// Replica lists as the agents' --aggregator and the aggregator's --peers give them.
#include "common/tls/replicas.h"

#include <catch2/catch.hpp>

#include "absl/strings/match.h"

namespace nodemesh {
namespace {

TEST_CASE("a replica list is HOST:PORT entries separated by commas") {
  CHECK(CheckReplicaAddresses("127.0.0.1:8085", "--aggregator", TlsFiles{}, "--aggregator-").ok());
  CHECK(
      CheckReplicaAddresses("127.0.0.1:1, [::1]:2,localhost:8085", "--peers", TlsFiles{}, "--peer-")
          .ok());
  const absl::Status plaintext =
      CheckReplicaAddresses("127.0.0.1:1,agg.ns.svc:8085", "--peers", TlsFiles{}, "--peer-");
  CHECK(absl::StartsWith(plaintext.message(),
                         "the aggregator at agg.ns.svc:8085 is not on loopback"));
  const absl::Status empty = CheckReplicaAddresses(" , ", "--peers", TlsFiles{}, "--peer-");
  CHECK(empty.message() == "--peers is empty: give HOST:PORT, or several separated by commas");
  const absl::Status no_port =
      CheckReplicaAddresses("[::1]:1,agg.ns.svc", "--aggregator", TlsFiles{}, "--aggregator-");
  CHECK(no_port.message() ==
        "--aggregator: 'agg.ns.svc' is not HOST:PORT: give HOST:PORT, or several separated by "
        "commas");
}

TEST_CASE("addresses are replicas as given, sorted and once each, and localhost is one replica") {
  const std::vector<ReplicaAddress> replicas =
      ResolveReplicas("127.0.0.2:2,127.0.0.1:1,127.0.0.2:2,localhost:3");
  REQUIRE(replicas.size() == 3);
  CHECK(replicas[0] == ReplicaAddress{.address = "127.0.0.1:1", .server_name = ""});
  CHECK(replicas[1].address == "127.0.0.2:2");
  CHECK(replicas[2].address == "localhost:3");
  CHECK(ResolveReplicas("no-such-host.invalid:1").empty());
}

}  // namespace
}  // namespace nodemesh
