// The aggregator's rules on callers: who may report for a node, read, tap a namespace, and
// open a node's shell. (The real handshake that names a caller is in the kernel tier's
// trust test: test/kernel/trust_test.cc.)
#include "aggregator/authorization.h"

#include <grpcpp/server_context.h>

#include <catch2/catch.hpp>

namespace nodemesh::aggregator {
namespace {

Caller Node(const std::string& name) {
  return Caller{.authenticated = true, .name = "system:node:" + name, .groups = {"system:nodes"}};
}

Caller User(const std::string& name, std::vector<std::string> groups) {
  return Caller{.authenticated = true, .name = name, .groups = std::move(groups)};
}

v1::TapRequestSpec TapOf(const std::string& namespace_name, const std::string& to_namespace = "") {
  v1::TapRequestSpec spec;
  spec.mutable_target()->set_type("deployment");
  spec.mutable_target()->set_name("web");
  spec.mutable_target()->set_namespace_(namespace_name);
  if (!to_namespace.empty()) {
    spec.mutable_to()->set_type("deployment");
    spec.mutable_to()->set_name("db");
    spec.mutable_to()->set_namespace_(to_namespace);
  }
  return spec;
}

TEST_CASE("an agent reports only for the node its certificate names") {
  CHECK(MayReport(Node("node-a"), "node-a").ok());

  const absl::Status other = MayReport(Node("node-b"), "node-a");
  CHECK(other.code() == absl::StatusCode::kPermissionDenied);
  CHECK(other.message() ==
        "the certificate of 'system:node:node-b' may not report for node node-a: an agent's "
        "certificate names its own node (CN=system:node:node-a, O=system:nodes)");

  // The name alone is not enough: a node's certificate is also in the nodes' group.
  Caller outside = Node("node-a");
  outside.groups = {"nodemesh:tap:*"};
  CHECK(MayReport(outside, "node-a").code() == absl::StatusCode::kPermissionDenied);
  CHECK(MayReport(User("system:node:node-a-x", {"system:nodes"}), "node-a").code() ==
        absl::StatusCode::kPermissionDenied);

  const absl::Status anonymous = MayReport(Caller{}, "node-a");
  CHECK(anonymous.code() == absl::StatusCode::kUnauthenticated);
  CHECK(anonymous.message() ==
        "an agent needs a client certificate to report: give the agent of node node-a "
        "--aggregator-cert and --aggregator-key, with the subject CN=system:node:node-a, "
        "O=system:nodes");
}

TEST_CASE("any certificate of the CA may read aggregates and no certificate may not") {
  CHECK(MayRead(User("viewer", {})).ok());
  CHECK(MayRead(Node("node-a")).ok());
  const absl::Status anonymous = MayRead(Caller{});
  CHECK(anonymous.code() == absl::StatusCode::kUnauthenticated);
  CHECK(anonymous.message() ==
        "reading the aggregator needs a client certificate issued by the aggregator's client "
        "CA: give meshctl --cert and --key (or NODEMESH_CERT and NODEMESH_KEY)");
}

TEST_CASE("tap needs the tapped namespaces in the certificate's groups") {
  const Caller emojivoto = User("alice", {"nodemesh:tap:emojivoto"});
  CHECK(MayTap(emojivoto, TapOf("emojivoto")).ok());
  CHECK(MayTap(emojivoto, TapOf("emojivoto", "emojivoto")).ok());

  const absl::Status other = MayTap(emojivoto, TapOf("payments"));
  CHECK(other.code() == absl::StatusCode::kPermissionDenied);
  CHECK(other.message() ==
        "'alice' may not tap namespace payments: its certificate needs O=nodemesh:tap:payments "
        "or O=nodemesh:tap:*");
  // Requests to another namespace are that namespace's too.
  const absl::Status to = MayTap(emojivoto, TapOf("emojivoto", "payments"));
  CHECK(to.code() == absl::StatusCode::kPermissionDenied);
  CHECK(to.message().find("namespace payments") != std::string::npos);

  const absl::Status everywhere = MayTap(emojivoto, TapOf(""));
  CHECK(everywhere.code() == absl::StatusCode::kPermissionDenied);
  CHECK(everywhere.message() ==
        "'alice' may not tap every namespace: its certificate needs O=nodemesh:tap:* (or tap "
        "one namespace it may)");

  const Caller all = User("ops", {"viewers", "nodemesh:tap:*"});
  CHECK(MayTap(all, TapOf("")).ok());
  CHECK(MayTap(all, TapOf("payments", "emojivoto")).ok());
  // A node may read, not tap.
  CHECK(MayTap(Node("node-a"), TapOf("emojivoto")).code() == absl::StatusCode::kPermissionDenied);
  CHECK(MayTap(Caller{}, TapOf("emojivoto")).code() == absl::StatusCode::kUnauthenticated);
}

// The namespaces whose tap permission a tap needs ("": every namespace).
std::vector<std::string> TappedNamespaces(const v1::TapRequestSpec& spec) {
  std::vector<std::string> namespaces;
  for (const Permission& tap : httpapi::PermissionsFor(spec)) {
    namespaces.push_back(tap.namespace_name);
  }
  return namespaces;
}

TEST_CASE("the tapped namespaces are the target's and the destination's") {
  CHECK(TappedNamespaces(TapOf("emojivoto")) == std::vector<std::string>{"emojivoto"});
  CHECK(TappedNamespaces(TapOf("emojivoto", "emojivoto")) == std::vector<std::string>{"emojivoto"});
  CHECK(TappedNamespaces(TapOf("emojivoto", "payments")) ==
        std::vector<std::string>{"emojivoto", "payments"});
  CHECK(TappedNamespaces(TapOf("")) == std::vector<std::string>{""});
  v1::TapRequestSpec all_to = TapOf("emojivoto");
  all_to.mutable_to()->set_type("deployment");  // a destination in every namespace
  CHECK(TappedNamespaces(all_to) == std::vector<std::string>{"emojivoto", ""});
  // A user with emojivoto's tap may not tap a destination in every namespace.
  CHECK(MayTap(User("alice", {"nodemesh:tap:emojivoto"}), all_to).code() ==
        absl::StatusCode::kPermissionDenied);
}

TEST_CASE("a node's shell through the relay needs every namespace's tap") {
  CHECK(MayRelayToNode(User("ops", {"nodemesh:tap:*"}), "node-a").ok());
  const absl::Status one = MayRelayToNode(User("alice", {"nodemesh:tap:emojivoto"}), "node-a");
  CHECK(one.code() == absl::StatusCode::kPermissionDenied);
  CHECK(one.message() ==
        "'alice' may not open the shell of node node-a: it shows every namespace's pods and "
        "requests there, so its certificate needs O=nodemesh:tap:*");
  CHECK(MayRelayToNode(Caller{}, "node-a").code() == absl::StatusCode::kUnauthenticated);
}

TEST_CASE("without a client CA every call is allowed") {
  // No certificate is looked for: the context of a call that has none is enough.
  const Authorizer open(AuthMode::kOpen);
  const grpc::ServerContext context;
  CHECK(open.Report(context, "node-a").ok());
  CHECK(open.Read(context).ok());
  CHECK(open.Tap(context, TapOf("")).ok());
  CHECK(open.RelayToNode(context, "node-a").ok());
}

TEST_CASE("the certificate rules answer the API's permissions") {
  const Caller viewer = User("viewer", {});
  for (const char* resource : {"stats", "edges", "routes", "inventory", "views"}) {
    CHECK(MayByCertificate(viewer, Permission{.verb = "get", .resource = resource}).ok());
    CHECK(MayByCertificate(Caller{}, Permission{.verb = "get", .resource = resource}).code() ==
          absl::StatusCode::kUnauthenticated);
  }
  const Permission tap_a{.verb = "watch", .resource = "taps", .namespace_name = "a"};
  CHECK(MayByCertificate(User("alice", {"nodemesh:tap:a"}), tap_a).ok());
  CHECK(MayByCertificate(viewer, tap_a).code() == absl::StatusCode::kPermissionDenied);
  const Permission node_admin{
      .verb = "get", .resource = "nodes", .subresource = "admin", .name = "node-a"};
  CHECK(MayByCertificate(User("ops", {"nodemesh:tap:*"}), node_admin).ok());
  CHECK(MayByCertificate(User("alice", {"nodemesh:tap:a"}), node_admin).code() ==
        absl::StatusCode::kPermissionDenied);
}

TEST_CASE("in the Kubernetes mode a gRPC client without a certificate is sent to the API server") {
  const Authorizer kubernetes(AuthMode::kKubernetes);
  const grpc::ServerContext context;  // no certificate
  for (const absl::Status& status : {kubernetes.Read(context), kubernetes.Tap(context, TapOf("a")),
                                     kubernetes.RelayToNode(context, "node-a")}) {
    CHECK(status.code() == absl::StatusCode::kUnauthenticated);
    CHECK(status.message() ==
          "this aggregator authorizes users through the Kubernetes API server: ask its API "
          "there (kubectl get --raw /apis/nodemesh.io/v1alpha1/...), or present a client "
          "certificate of its --tls-ca");
  }
  // Agents are known by certificates there too.
  CHECK(kubernetes.Report(context, "node-a").code() == absl::StatusCode::kUnauthenticated);

  // With certificates, the same calls ask for one.
  const Authorizer certificates(AuthMode::kCertificates);
  CHECK(certificates.Read(context).message() ==
        "reading the aggregator needs a client certificate issued by the aggregator's client "
        "CA: give meshctl --cert and --key (or NODEMESH_CERT and NODEMESH_KEY)");
}

}  // namespace
}  // namespace nodemesh::aggregator
