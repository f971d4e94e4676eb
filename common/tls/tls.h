// TLS for nodemesh's gRPC connections (agent to aggregator, meshctl to aggregator): the
// credentials each end builds from PEM files, and whether a listen address may go without.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace grpc {
class Channel;
class ChannelArguments;
class ChannelCredentials;
class ServerCredentials;
}  // namespace grpc

namespace nodemesh {

// The PEM files of one end. A client verifies the aggregator with `ca` and presents `cert`
// (with `key`) when it has one; the aggregator presents `cert` and, with `ca`, asks every
// peer for a certificate and verifies those it is given (who must have one is the caller's
// rule, not the handshake's: aggregator/authorization.h).
struct TlsFiles {
  std::string ca;
  std::string cert;
  std::string key;
  // Client only: the name the aggregator's certificate must carry, when it is not the host
  // dialled (an address reached through a port-forward or a load balancer).
  std::string server_name;

  bool empty() const { return ca.empty() && cert.empty() && key.empty(); }
};

// `flag_prefix` names the flags the files came from in errors ("--tls-" gives --tls-ca).
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ClientCredentials(
    const TlsFiles& files, std::string_view flag_prefix);
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentials(
    const TlsFiles& files, std::string_view flag_prefix);

// Dials the aggregator the one way both its clients (the agent, meshctl) do: TLS when any
// file is given, else plaintext, which only a loopback address may be dialled with.
class AggregatorDialer {
 public:
  static absl::StatusOr<AggregatorDialer> Make(std::string address, const TlsFiles& files,
                                               std::string_view flag_prefix);

  // A new channel (it connects on first use).
  std::shared_ptr<grpc::Channel> Dial(grpc::ChannelArguments arguments) const;
  const std::string& address() const { return address_; }
  bool tls() const { return tls_; }

 private:
  AggregatorDialer() = default;

  std::string address_;
  std::shared_ptr<grpc::ChannelCredentials> credentials_;
  std::string server_name_;
  bool tls_ = false;
};

// Whether HOST:PORT is on loopback (127.0.0.0/8, ::1 or localhost): where plaintext is
// allowed, to listen on or to dial.
bool IsLoopbackAddress(std::string_view address);

}  // namespace nodemesh
