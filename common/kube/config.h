// Where the Kubernetes API server is and how to prove who we are: a Config from the pod's own
// service account (InClusterConfig) or from a kubeconfig (LoadKubeconfig, kubeconfig.cc).
// What a request then presents is credentials.h's.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace nodemesh::kube {

inline constexpr std::string_view kServiceAccountDir =
    "/var/run/secrets/kubernetes.io/serviceaccount";

// A kubeconfig user's exec credential plugin (its `exec` stanza), as client-go runs it:
// exec_credential.h runs it, credentials.h caches what it hands out.
struct ExecConfig {
  enum class InteractiveMode { kNever, kIfAvailable, kAlways };

  std::string api_version{};  // client.authentication.k8s.io/v1 or v1beta1
  // A command with a '/' is a path, made absolute against the kubeconfig's directory; one
  // without is looked up in PATH when it runs.
  std::string command{};
  std::vector<std::string> args{};
  std::vector<std::pair<std::string, std::string>> env{};  // over the caller's environment
  InteractiveMode interactive_mode = InteractiveMode::kIfAvailable;  // v1beta1's default
  bool provide_cluster_info = false;  // KUBERNETES_EXEC_INFO carries spec.cluster
  std::string install_hint{};         // shown when the command is not found
  // The cluster's `client.authentication.k8s.io/exec` extension as JSON ("" without one):
  // spec.cluster.config.
  std::string cluster_config_json{};
  std::string user{};  // the kubeconfig user it belongs to, for messages
};

// Where the API server is and how to prove who we are. Credentials, with client-go's
// precedence: token_file (re-read when it changes) over token; a client certificate besides
// either; `exec` only when there is neither a token nor a client certificate (a kubeconfig
// that has both keeps the exec stanza out of the Config, as client-go ignores it).
struct Config {
  std::string server;  // https://host:port
  // The CA that signed the server's certificate: a PEM file or PEM bytes. Both empty: the
  // system's CAs.
  std::string ca_file;
  std::string ca_data;
  bool insecure_skip_tls_verify = false;  // kubeconfig's option; said in a warning per request
  std::string token_file;
  std::string token;
  std::string client_certificate_file, client_certificate_data;  // PEM
  std::string client_key_file, client_key_data;                  // PEM
  std::optional<ExecConfig> exec;
  // The name the server's certificate is verified against (and SNI), when it is not the
  // host of `server`.
  std::string tls_server_name;
  // The proxy to reach `server` through (http, https or socks5 URL); empty: the
  // environment's (https_proxy, no_proxy), as with client-go.
  std::string proxy_url;
  // The context's namespace (kubeconfig), or the pod's own (in-cluster); "default" if none.
  std::string namespace_name = "default";
  // Where the configuration came from, for messages: "in-cluster", "kubeconfig ~/.kube/config
  // (context kind-dev)".
  std::string source;
  // What the server is, for messages: the transport (transport.h) also reaches servers that
  // are no API server ("the Prometheus-compatible store").
  std::string server_role = "the API server";
};

// client-go's in-cluster configuration: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT,
// the CA and token files of `service_account_dir`, the namespace from its `namespace`
// file. Fails saying what is missing (not in a pod, no token mounted).
absl::StatusOr<Config> InClusterConfig(std::string_view service_account_dir = kServiceAccountDir);

// A kubeconfig like kubectl reads it: `path` if given, else each file of $KUBECONFIG
// (colon-separated, first one naming a thing wins), else ~/.kube/config; the context
// `context_name` if given, else current-context. Supports server, certificate-authority
// (-data), insecure-skip-tls-verify, tls-server-name, proxy-url, token, tokenFile,
// client-certificate(-data), client-key(-data), exec plugins (validated with client-go's
// messages, even when another credential wins), and the context's namespace; relative file
// paths are relative to the kubeconfig's directory. auth-provider and basic authentication
// are refused with a message naming what replaces them.
absl::StatusOr<Config> LoadKubeconfig(std::string_view path = {},
                                      std::string_view context_name = {});

}  // namespace nodemesh::kube
