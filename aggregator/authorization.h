// Who may do what at the aggregator, in one of three modes (AuthMode). With certificates, a
// caller is known by the client certificate it presented, verified against the aggregator's
// client CA (--tls-ca) in the handshake; its subject says what it may do, in Kubernetes' own
// terms:
//   - an agent: common name `system:node:NAME`, organization `system:nodes`, the subject of
//     a kubelet's client certificate. It may report for node NAME only.
//   - a client (meshctl): any certificate the CA issued may read aggregates (stat, edges,
//     routes, pods, views: no payload). Tapping needs an organization `nodemesh:tap:NAMESPACE` for
//     each namespace tapped, or `nodemesh:tap:*` for all; the shell's relay to a node's
//     agent, which shows every pod of that node, needs `nodemesh:tap:*`.
// Those rules are stated over the API's permissions (common/httpapi/permissions.h:
// MayByCertificate), the
// same ones the Kubernetes mode asks the API server about.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "common/httpapi/permissions.h"
#include "nodemesh/v1/nodemesh.pb.h"

namespace grpc {
class ServerContext;
}

namespace nodemesh::aggregator {

using httpapi::Permission;

inline constexpr std::string_view kNodeNamePrefix = "system:node:";
inline constexpr std::string_view kNodesGroup = "system:nodes";
inline constexpr std::string_view kTapGroupPrefix = "nodemesh:tap:";
inline constexpr std::string_view kTapAllGroup = "nodemesh:tap:*";

// A caller as its verified certificate names it.
struct Caller {
  bool authenticated = false;
  std::string name;                 // the subject's common name
  std::vector<std::string> groups;  // the subject's organizations
};

// The caller of a call: its certificate's subject, if the handshake verified one.
Caller CallerOf(const grpc::ServerContext& context);
// Who the caller is, for limits per caller: its certificate's name, or without one the host
// it calls from (gRPC's peer without its port: "ipv4:10.0.0.7").
std::string CallerKey(const grpc::ServerContext& context);

// The rules, on a caller. Each refusal is UNAUTHENTICATED (no certificate) or
// PERMISSION_DENIED, and says what the certificate would need.
absl::Status MayReport(const Caller& caller, std::string_view node);
// Any certificate may read; `watch taps` in a namespace needs that namespace's tap group (or
// nodemesh:tap:*), in every namespace nodemesh:tap:*; `get nodes/admin` nodemesh:tap:*.
absl::Status MayByCertificate(const Caller& caller, const Permission& permission);
absl::Status MayRead(const Caller& caller);
absl::Status MayTap(const Caller& caller, const v1::TapRequestSpec& spec);
absl::Status MayRelayToNode(const Caller& caller, std::string_view node);

enum class AuthMode {
  // No client CA: nobody is authenticated and everything is allowed. Plaintext on loopback
  // (the local cluster), or TLS that only proves the aggregator to its callers.
  kOpen,
  // A client CA (--tls-ca): the certificate rules above, for agents and clients.
  kCertificates,
  // Users call through the Kubernetes API server, which authenticates them; the aggregator
  // knows them from its front proxy (front_proxy.h) and asks it what they may do
  // (kube_authorizer.h). Users never hand it their Kubernetes credentials: on gRPC a client
  // needs a certificate of the client CA, when there is one, and is refused without, told to
  // go through the API server. Agents present certificates as in kCertificates.
  kKubernetes,
};

// The rules for gRPC calls in a mode.
class Authorizer {
 public:
  explicit Authorizer(AuthMode mode) : mode_(mode) {}

  AuthMode mode() const { return mode_; }

  absl::Status Report(const grpc::ServerContext& context, std::string_view node) const;
  absl::Status Read(const grpc::ServerContext& context) const;
  absl::Status Tap(const grpc::ServerContext& context, const v1::TapRequestSpec& spec) const;
  absl::Status RelayToNode(const grpc::ServerContext& context, std::string_view node) const;

 private:
  // A gRPC client's call: allowed in kOpen; else `rule` on its certificate, and in
  // kKubernetes a refusal naming the way through the API server when it has none.
  absl::Status ClientCall(const grpc::ServerContext& context,
                          absl::FunctionRef<absl::Status(const Caller&)> rule) const;

  const AuthMode mode_;
};

}  // namespace nodemesh::aggregator
