#include "aggregator/authorization.h"

#include <fmt/format.h>
#include <grpcpp/security/auth_context.h>
#include <grpcpp/server_context.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <algorithm>
#include <memory>

namespace nodemesh::aggregator {
namespace {

// The UTF-8 values of one attribute of a certificate's subject.
std::vector<std::string> SubjectValues(X509_NAME* subject, int nid) {
  std::vector<std::string> values;
  for (int at = X509_NAME_get_index_by_NID(subject, nid, -1); at >= 0;
       at = X509_NAME_get_index_by_NID(subject, nid, at)) {
    unsigned char* utf8 = nullptr;
    const int length =
        ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, at)));
    if (length < 0) continue;
    values.emplace_back(reinterpret_cast<const char*>(utf8), static_cast<size_t>(length));
    OPENSSL_free(utf8);
  }
  return values;
}

bool InGroup(const Caller& caller, std::string_view group) {
  return std::find(caller.groups.begin(), caller.groups.end(), group) != caller.groups.end();
}

absl::Status NoCertificate(std::string_view what) {
  return absl::UnauthenticatedError(fmt::format(
      "{} needs a client certificate issued by the aggregator's client CA: give meshctl --cert "
      "and --key (or NODEMESH_CERT and NODEMESH_KEY)",
      what));
}

}  // namespace

Caller CallerOf(const grpc::ServerContext& context) {
  Caller caller;
  const std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  if (!auth) return caller;
  const std::vector<grpc::string_ref> pems = auth->FindPropertyValues("x509_pem_cert");
  if (pems.empty()) return caller;
  const std::unique_ptr<BIO, decltype(&BIO_free)> bio(
      BIO_new_mem_buf(pems.front().data(), static_cast<int>(pems.front().size())), BIO_free);
  const std::unique_ptr<X509, decltype(&X509_free)> certificate(
      bio ? PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr) : nullptr, X509_free);
  if (!certificate) return caller;
  X509_NAME* subject = X509_get_subject_name(certificate.get());
  const std::vector<std::string> names = SubjectValues(subject, NID_commonName);
  caller.authenticated = true;
  caller.name = names.empty() ? "" : names.front();
  caller.groups = SubjectValues(subject, NID_organizationName);
  return caller;
}

std::string CallerKey(const grpc::ServerContext& context) {
  const Caller caller = CallerOf(context);
  if (caller.authenticated) return caller.name;
  const std::string peer = context.peer();
  // "ipv4:10.0.0.7:51234", "ipv6:[::1]:51234": the port changes with every connection.
  const size_t port = peer.rfind(':');
  const size_t scheme = peer.find(':');
  return port != std::string::npos && port != scheme ? peer.substr(0, port) : peer;
}

absl::Status MayReport(const Caller& caller, std::string_view node) {
  if (!caller.authenticated) {
    return absl::UnauthenticatedError(
        fmt::format("an agent needs a client certificate to report: give the agent of node {} "
                    "--aggregator-cert and --aggregator-key, with the subject CN={}{}, O={}",
                    node, kNodeNamePrefix, node, kNodesGroup));
  }
  if (caller.name != fmt::format("{}{}", kNodeNamePrefix, node) || !InGroup(caller, kNodesGroup)) {
    return absl::PermissionDeniedError(fmt::format(
        "the certificate of '{}' may not report for node {}: an agent's certificate names its "
        "own node (CN={}{}, O={})",
        caller.name, node, kNodeNamePrefix, node, kNodesGroup));
  }
  return absl::OkStatus();
}

absl::Status MayByCertificate(const Caller& caller, const Permission& permission) {
  if (permission.resource == "taps") {
    if (!caller.authenticated) return NoCertificate("tap");
    if (InGroup(caller, kTapAllGroup)) return absl::OkStatus();
    if (permission.namespace_name.empty()) {
      return absl::PermissionDeniedError(fmt::format(
          "'{}' may not tap every namespace: its certificate needs O={} (or tap one namespace "
          "it may)",
          caller.name, kTapAllGroup));
    }
    if (!InGroup(caller, fmt::format("{}{}", kTapGroupPrefix, permission.namespace_name))) {
      return absl::PermissionDeniedError(fmt::format(
          "'{}' may not tap namespace {}: its certificate needs O={}{} or O={}", caller.name,
          permission.namespace_name, kTapGroupPrefix, permission.namespace_name, kTapAllGroup));
    }
    return absl::OkStatus();
  }
  if (permission.resource == "nodes") {
    if (!caller.authenticated) return NoCertificate("meshctl shell --node");
    if (!InGroup(caller, kTapAllGroup)) {
      return absl::PermissionDeniedError(
          fmt::format("'{}' may not open the shell of node {}: it shows every namespace's pods and "
                      "requests there, so its certificate needs O={}",
                      caller.name, permission.name, kTapAllGroup));
    }
    return absl::OkStatus();
  }
  return caller.authenticated ? absl::OkStatus() : NoCertificate("reading the aggregator");
}

absl::Status MayRead(const Caller& caller) {
  return MayByCertificate(caller, Permission{.verb = "get", .resource = "stats"});
}

absl::Status MayTap(const Caller& caller, const v1::TapRequestSpec& spec) {
  // The same permissions as a tap through the API server needs (the target's namespace and
  // the destination's; none: every namespace), answered from the certificate.
  for (const Permission& tap : httpapi::PermissionsFor(spec)) {
    if (absl::Status may = MayByCertificate(caller, tap); !may.ok()) return may;
  }
  return absl::OkStatus();
}

absl::Status MayRelayToNode(const Caller& caller, std::string_view node) {
  return MayByCertificate(
      caller,
      Permission{
          .verb = "get", .resource = "nodes", .subresource = "admin", .name = std::string(node)});
}

absl::Status Authorizer::ClientCall(const grpc::ServerContext& context,
                                    absl::FunctionRef<absl::Status(const Caller&)> rule) const {
  if (mode_ == AuthMode::kOpen) return absl::OkStatus();
  const Caller caller = CallerOf(context);
  if (mode_ == AuthMode::kKubernetes && !caller.authenticated) {
    return absl::UnauthenticatedError(
        "this aggregator authorizes users through the Kubernetes API server: ask its API "
        "there (kubectl get --raw /apis/nodemesh.io/v1alpha1/...), or present a client "
        "certificate of its --tls-ca");
  }
  return rule(caller);
}

absl::Status Authorizer::Report(const grpc::ServerContext& context, std::string_view node) const {
  return mode_ == AuthMode::kOpen ? absl::OkStatus() : MayReport(CallerOf(context), node);
}

absl::Status Authorizer::Read(const grpc::ServerContext& context) const {
  return ClientCall(context, MayRead);
}

absl::Status Authorizer::Tap(const grpc::ServerContext& context,
                             const v1::TapRequestSpec& spec) const {
  return ClientCall(context, [&spec](const Caller& caller) { return MayTap(caller, spec); });
}

absl::Status Authorizer::RelayToNode(const grpc::ServerContext& context,
                                     std::string_view node) const {
  return ClientCall(context, [node](const Caller& caller) { return MayRelayToNode(caller, node); });
}

}  // namespace nodemesh::aggregator
