// LoadKubeconfig on kubeconfig files written to a temporary directory: which file and
// context win, data versus file fields, relative paths, and errors that say what to do.
#include <stdlib.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/base/format.h"
#include "common/kube/client.h"
#include "test/lib/files.h"
#include "test/lib/scoped_env.h"

namespace nodemesh::kube {
namespace {

using testing::ScopedEnv;
using testing::TempDir;

// "-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n" and friends, base64.
constexpr std::string_view kCaPem = "-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n";
constexpr std::string_view kCaBase64 =
    "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCkNBCi0tLS0tRU5EIENFUlRJRklDQVRFLS0tLS0K";
constexpr std::string_view kCertPem = "CERT PEM\n";
constexpr std::string_view kCertBase64 = "Q0VSVCBQRU0K";
constexpr std::string_view kKeyPem = "KEY PEM\n";
constexpr std::string_view kKeyBase64 = "S0VZIFBFTQo=";

// One cluster, one user with a token, one context with a namespace.
std::string Simple(std::string_view server = "https://127.0.0.1:6443") {
  return fmt::format(R"(apiVersion: v1
kind: Config
clusters:
- name: kind-dev
  cluster:
    server: {}
    certificate-authority-data: {}
users:
- name: admin
  user:
    token: abc.def
contexts:
- name: kind-dev
  context:
    cluster: kind-dev
    user: admin
    namespace: emojivoto
current-context: kind-dev
)",
                     server, kCaBase64);
}

TEST_CASE("an explicit kubeconfig: server, CA data, token, the context's namespace", "[kube]") {
  TempDir dir;
  const std::string path = dir.Write("config", Simple("https://127.0.0.1:6443/"));
  const absl::StatusOr<Config> config = LoadKubeconfig(path);
  REQUIRE(config.ok());
  CHECK(config->server == "https://127.0.0.1:6443");  // the trailing slash dropped
  CHECK(config->ca_data == kCaPem);
  CHECK(config->ca_file.empty());
  CHECK_FALSE(config->insecure_skip_tls_verify);
  CHECK(config->token == "abc.def");
  CHECK(config->token_file.empty());
  CHECK(config->client_certificate_file.empty());
  CHECK(config->client_certificate_data.empty());
  CHECK(config->namespace_name == "emojivoto");
  CHECK(config->source == fmt::format("kubeconfig {}, context kind-dev", path));
}

TEST_CASE("file fields are relative to the kubeconfig's directory: data fields are decoded",
          "[kube]") {
  TempDir dir;
  std::filesystem::create_directories(dir.path() + "/kube/pki");
  dir.Write("kube/pki/ca.crt", kCaPem);
  dir.Write("kube/pki/client.crt", kCertPem);
  dir.Write("kube/pki/client.key", kKeyPem);
  dir.Write("kube/token", "file-token\n");
  const std::string path = dir.Write("kube/config", R"(clusters:
- name: files
  cluster:
    server: https://10.0.0.1:6443
    certificate-authority: pki/ca.crt
- name: insecure
  cluster:
    server: https://10.0.0.2:6443
    insecure-skip-tls-verify: true
users:
- name: cert-files
  user:
    client-certificate: pki/client.crt
    client-key: ./pki/client.key
- name: cert-data
  user:
    client-certificate-data: )" + std::string(kCertBase64) +
                                                        R"(
    client-key-data: )" + std::string(kKeyBase64) + R"(
- name: token-file
  user:
    tokenFile: token
contexts:
- name: files
  context: {cluster: files, user: cert-files}
- name: data
  context: {cluster: insecure, user: cert-data, namespace: data}
- name: token-file
  context: {cluster: files, user: token-file}
- name: anonymous
  context: {cluster: files}
current-context: files
)");

  const absl::StatusOr<Config> files = LoadKubeconfig(path);
  REQUIRE(files.ok());
  CHECK(files->server == "https://10.0.0.1:6443");
  CHECK(files->ca_file == dir.path() + "/kube/pki/ca.crt");
  CHECK(files->ca_data.empty());
  CHECK(files->client_certificate_file == dir.path() + "/kube/pki/client.crt");
  CHECK(files->client_key_file == dir.path() + "/kube/pki/client.key");
  CHECK(files->client_certificate_data.empty());
  CHECK(files->token.empty());
  CHECK(files->namespace_name == "default");

  const absl::StatusOr<Config> data = LoadKubeconfig(path, "data");
  REQUIRE(data.ok());
  CHECK(data->insecure_skip_tls_verify);
  CHECK(data->ca_file.empty());
  CHECK(data->ca_data.empty());
  CHECK(data->client_certificate_data == kCertPem);
  CHECK(data->client_key_data == kKeyPem);
  CHECK(data->client_certificate_file.empty());
  CHECK(data->namespace_name == "data");
  CHECK(data->source == fmt::format("kubeconfig {}, context data", path));

  const absl::StatusOr<Config> token_file = LoadKubeconfig(path, "token-file");
  REQUIRE(token_file.ok());
  CHECK(token_file->token_file == dir.path() + "/kube/token");
  CHECK(token_file->token.empty());

  const absl::StatusOr<Config> anonymous = LoadKubeconfig(path, "anonymous");
  REQUIRE(anonymous.ok());
  CHECK(anonymous->token.empty());
  CHECK(anonymous->token_file.empty());
  CHECK(anonymous->client_certificate_file.empty());
}

TEST_CASE("KUBECONFIG: several files, the first naming a thing wins", "[kube]") {
  TempDir dir;
  // The first file sets no current-context and has its own "shared" cluster; the second
  // sets the current context and redefines "shared", which must not win.
  const std::string first = dir.Write("first", R"(clusters:
- name: shared
  cluster: {server: "https://first:6443", insecure-skip-tls-verify: true}
users:
- name: u
  user: {token: first-token}
contexts:
- name: dev
  context: {cluster: shared, user: u, namespace: from-first}
)");
  const std::string second = dir.Write("second", R"(clusters:
- name: shared
  cluster: {server: "https://second:6443"}
- name: only-second
  cluster: {server: "https://only-second:6443"}
users:
- name: u
  user: {token: second-token}
contexts:
- name: dev
  context: {cluster: only-second, user: u}
- name: prod
  context: {cluster: only-second, user: u, namespace: prod}
current-context: prod
)");
  const std::string third = dir.Write("third", "current-context: dev\n");
  const std::string missing = dir.path() + "/missing";
  const ScopedEnv kubeconfig("KUBECONFIG", missing + ":" + first + "::" + second + ":" + third);

  // current-context from the first file that sets one (second's "prod", not third's "dev").
  const absl::StatusOr<Config> current = LoadKubeconfig();
  REQUIRE(current.ok());
  CHECK(current->server == "https://only-second:6443");
  CHECK(current->namespace_name == "prod");
  CHECK(current->token == "first-token");
  CHECK(current->source == fmt::format("kubeconfig {}, context prod", second));

  // "dev" and "shared" come from the first file that defines them.
  const absl::StatusOr<Config> dev = LoadKubeconfig({}, "dev");
  REQUIRE(dev.ok());
  CHECK(dev->server == "https://first:6443");
  CHECK(dev->insecure_skip_tls_verify);
  CHECK(dev->namespace_name == "from-first");
  CHECK(dev->source == fmt::format("kubeconfig {}, context dev", first));

  // An explicit path is the only file read.
  const absl::StatusOr<Config> only = LoadKubeconfig(second, "dev");
  REQUIRE(only.ok());
  CHECK(only->server == "https://only-second:6443");
  CHECK(only->token == "second-token");
}

TEST_CASE("without KUBECONFIG: ~/.kube/config", "[kube]") {
  TempDir home;
  std::filesystem::create_directories(home.path() + "/.kube");
  home.Write(".kube/config", Simple());
  const ScopedEnv kubeconfig("KUBECONFIG", std::nullopt);
  const ScopedEnv home_env("HOME", home.path());
  const absl::StatusOr<Config> config = LoadKubeconfig();
  REQUIRE(config.ok());
  CHECK(config->source == fmt::format("kubeconfig {}/.kube/config, context kind-dev", home.path()));

  const ScopedEnv empty("KUBECONFIG", "");  // set but empty: as if unset
  CHECK(LoadKubeconfig().ok());
}

TEST_CASE("missing files: say which and what to do", "[kube]") {
  TempDir dir;
  const std::string path = dir.path() + "/nope";
  const absl::StatusOr<Config> explicit_path = LoadKubeconfig(path);
  REQUIRE_FALSE(explicit_path.ok());
  CHECK(explicit_path.status().code() == absl::StatusCode::kNotFound);
  CHECK(explicit_path.status().message() ==
        fmt::format("cannot read kubeconfig {} (No such file or directory): pass --kubeconfig "
                    "PATH or set KUBECONFIG to a kubeconfig file (kubectl config view --raw "
                    "shows the one kubectl uses)",
                    path));

  {
    const ScopedEnv kubeconfig("KUBECONFIG", std::nullopt);
    const ScopedEnv home("HOME", dir.path());
    const absl::StatusOr<Config> default_path = LoadKubeconfig();
    REQUIRE_FALSE(default_path.ok());
    CHECK(default_path.status().message().find(
              fmt::format("cannot read kubeconfig {}/.kube/config", dir.path())) == 0);
  }
  {
    const ScopedEnv kubeconfig("KUBECONFIG", path + ":" + path + "2");
    const absl::StatusOr<Config> none = LoadKubeconfig();
    REQUIRE_FALSE(none.ok());
    CHECK(none.status().message() ==
          fmt::format("cannot read any file of KUBECONFIG: {0} (No such file or directory), {0}2 "
                      "(No such file or directory); point KUBECONFIG or --kubeconfig at a "
                      "kubeconfig file",
                      path));
  }

  const std::string broken = dir.Write("broken", "clusters: [\n");
  const absl::StatusOr<Config> yaml = LoadKubeconfig(broken);
  REQUIRE_FALSE(yaml.ok());
  CHECK(yaml.status().message().find(fmt::format("kubeconfig {} is not valid YAML: ", broken)) ==
        0);

  const std::string ca_missing = dir.Write("ca-missing", R"(clusters:
- name: c
  cluster: {server: "https://x:6443", certificate-authority: ca.crt}
contexts:
- name: c
  context: {cluster: c}
current-context: c
)");
  const absl::StatusOr<Config> ca = LoadKubeconfig(ca_missing);
  REQUIRE_FALSE(ca.ok());
  CHECK(ca.status().message() ==
        fmt::format("cannot read certificate-authority {}/ca.crt of cluster c in kubeconfig {} "
                    "(No such file or directory)",
                    dir.path(), ca_missing));
}

TEST_CASE("contexts: none current, unknown, dangling references", "[kube]") {
  TempDir dir;
  const std::string no_current = dir.Write("no-current", R"(clusters:
- name: c
  cluster: {server: "https://x:6443"}
contexts:
- name: b
  context: {cluster: c}
- name: a
  context: {cluster: c}
)");
  const absl::StatusOr<Config> none = LoadKubeconfig(no_current);
  REQUIRE_FALSE(none.ok());
  CHECK(none.status().message() ==
        fmt::format("kubeconfig {} sets no current-context: pass --context NAME (one of a, b) or "
                    "run 'kubectl config use-context NAME'",
                    no_current));

  const absl::StatusOr<Config> unknown = LoadKubeconfig(no_current, "prod");
  REQUIRE_FALSE(unknown.ok());
  CHECK(unknown.status().code() == absl::StatusCode::kNotFound);
  CHECK(unknown.status().message() ==
        fmt::format("context prod is not in kubeconfig {}: use one of a, b (kubectl config "
                    "get-contexts)",
                    no_current));

  const std::string empty = dir.Write("empty", "");
  const absl::StatusOr<Config> nothing = LoadKubeconfig(empty);
  REQUIRE_FALSE(nothing.ok());
  CHECK(nothing.status().message().find(fmt::format("kubeconfig {} has no contexts", empty)) == 0);

  const std::string dangling = dir.Write("dangling", R"(clusters:
- name: c
  cluster: {server: "https://x:6443"}
- name: no-server
  cluster: {insecure-skip-tls-verify: true}
contexts:
- name: gone-cluster
  context: {cluster: gone}
- name: gone-user
  context: {cluster: c, user: gone}
- name: no-server
  context: {cluster: no-server}
current-context: gone-cluster
)");
  const absl::StatusOr<Config> cluster = LoadKubeconfig(dangling);
  REQUIRE_FALSE(cluster.ok());
  CHECK(cluster.status().message() ==
        fmt::format("context gone-cluster in kubeconfig {0} names cluster gone, which is not in "
                    "kubeconfig {0}: set it with 'kubectl config set-context gone-cluster "
                    "--cluster=NAME' (one of c, no-server)",
                    dangling));
  const absl::StatusOr<Config> user = LoadKubeconfig(dangling, "gone-user");
  REQUIRE_FALSE(user.ok());
  CHECK(user.status().message() ==
        fmt::format("context gone-user in kubeconfig {0} names user gone, which is not in "
                    "kubeconfig {0}: set it with 'kubectl config set-credentials gone "
                    "--token=TOKEN'",
                    dangling));
  const absl::StatusOr<Config> server = LoadKubeconfig(dangling, "no-server");
  REQUIRE_FALSE(server.ok());
  CHECK(server.status().message().find(
            fmt::format("cluster no-server in kubeconfig {} has no server", dangling)) == 0);
}

TEST_CASE("auth-provider and basic users are refused, naming what replaces them", "[kube]") {
  TempDir dir;
  const std::string path = dir.Write("config", R"(clusters:
- name: gke
  cluster: {server: "https://35.1.2.3"}
users:
- name: oidc-user
  user:
    auth-provider:
      name: oidc
- name: basic
  user: {username: admin, password: secret}
- name: half-cert
  user: {client-certificate-data: Q0VSVCBQRU0K}
- name: bad-data
  user: {client-certificate-data: "not base64!", client-key-data: S0VZIFBFTQo=}
contexts:
- name: oidc
  context: {cluster: gke, user: oidc-user}
- name: basic
  context: {cluster: gke, user: basic}
- name: half-cert
  context: {cluster: gke, user: half-cert}
- name: bad-data
  context: {cluster: gke, user: bad-data}
current-context: oidc
)");
  const absl::StatusOr<Config> oidc = LoadKubeconfig(path);
  REQUIRE_FALSE(oidc.ok());
  CHECK(oidc.status().code() == absl::StatusCode::kUnimplemented);
  CHECK(oidc.status().message().find(
            fmt::format("user oidc-user of context oidc (kubeconfig {}) authenticates with an "
                        "auth-provider (oidc), which nodemesh does not run: nodemesh supports "
                        "bearer tokens, client certificates and exec plugins. kubectl itself "
                        "dropped the gcp and azure providers",
                        path)) == 0);
  CHECK(oidc.status().message().find("gke-gcloud-auth-plugin") != std::string::npos);
  CHECK(oidc.status().message().find("kubelogin") != std::string::npos);

  const absl::StatusOr<Config> basic = LoadKubeconfig(path, "basic");
  REQUIRE_FALSE(basic.ok());
  CHECK(basic.status().message().find("authenticates with a username and password") !=
        std::string::npos);
  CHECK(basic.status().message().find("'kubectl config set-credentials basic --token=TOKEN'") !=
        std::string::npos);

  const absl::StatusOr<Config> half = LoadKubeconfig(path, "half-cert");
  REQUIRE_FALSE(half.ok());
  CHECK(half.status().message() ==
        fmt::format("user half-cert in kubeconfig {} has a client certificate but no client key: "
                    "give both client-certificate(-data) and client-key(-data)",
                    path));

  const absl::StatusOr<Config> bad = LoadKubeconfig(path, "bad-data");
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.status().message() ==
        fmt::format("client-certificate-data of user bad-data in kubeconfig {} is not valid "
                    "base64",
                    path));
}

// A kubeconfig whose one user is `user` (YAML under "user:", indented by four) on a cluster
// with `cluster_extra` lines (indented by four).
std::string WithUser(std::string_view user, std::string_view cluster_extra = "") {
  return fmt::format(R"(clusters:
- name: c
  cluster:
    server: https://127.0.0.1:6443
{}users:
- name: u
  user:
{}contexts:
- name: c
  context: {{cluster: c, user: u}}
current-context: c
)",
                     cluster_extra, user);
}

TEST_CASE("exec plugins: the stanza read as client-go reads it", "[kube]") {
  TempDir dir;
  std::filesystem::create_directories(dir.path() + "/kube");
  const std::string path = dir.Write("kube/config", WithUser(R"(    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: ./bin/get-token
      args: [--cluster, prod]
      env:
      - {name: AWS_PROFILE, value: prod}
      - {name: EMPTY}
      interactiveMode: Never
      provideClusterInfo: true
      installHint: "apt-get install get-token"
)",
                                                             R"(    tls-server-name: api.example
    proxy-url: socks5://127.0.0.1:1080
    extensions:
    - name: other
      extension: {ignored: true}
    - name: client.authentication.k8s.io/exec
      extension:
        audience: abc
        enabled: true
        port: 8443
        ratio: 0.5
        quoted: "true"
        none: null
        list: [1, two]
)"));
  const absl::StatusOr<Config> config = LoadKubeconfig(path);
  REQUIRE(config.ok());
  CHECK(config->tls_server_name == "api.example");
  CHECK(config->proxy_url == "socks5://127.0.0.1:1080");
  REQUIRE(config->exec.has_value());
  const ExecConfig& exec = *config->exec;
  CHECK(exec.api_version == "client.authentication.k8s.io/v1");
  CHECK(exec.command == dir.path() + "/kube/bin/get-token");  // relative to the kubeconfig
  CHECK(exec.args == std::vector<std::string>{"--cluster", "prod"});
  CHECK(exec.env ==
        std::vector<std::pair<std::string, std::string>>{{"AWS_PROFILE", "prod"}, {"EMPTY", ""}});
  CHECK(exec.interactive_mode == ExecConfig::InteractiveMode::kNever);
  CHECK(exec.provide_cluster_info);
  CHECK(exec.install_hint == "apt-get install get-token");
  CHECK(exec.user == "u");
  // Plain scalars typed by the YAML core schema, quoted ones strings, keys sorted (as Go's
  // encoding/json writes a map).
  CHECK(exec.cluster_config_json ==
        R"({"audience":"abc","enabled":true,"list":[1,"two"],"none":null,"port":8443,)"
        R"("quoted":"true","ratio":0.5})");
  CHECK(config->token.empty());
}

TEST_CASE("exec plugins: v1beta1 defaults interactiveMode, a bare command stays for PATH",
          "[kube]") {
  TempDir dir;
  const std::string path = dir.Write("config", WithUser(R"(    exec:
      apiVersion: client.authentication.k8s.io/v1beta1
      command: gke-gcloud-auth-plugin
)"));
  const absl::StatusOr<Config> config = LoadKubeconfig(path);
  REQUIRE(config.ok());
  REQUIRE(config->exec.has_value());
  CHECK(config->exec->command == "gke-gcloud-auth-plugin");
  CHECK(config->exec->interactive_mode == ExecConfig::InteractiveMode::kIfAvailable);
  CHECK_FALSE(config->exec->provide_cluster_info);
  CHECK(config->exec->cluster_config_json.empty());
  CHECK(config->exec->args.empty());
}

TEST_CASE("exec plugins: client-go's validation messages, all at once", "[kube]") {
  TempDir dir;
  const auto load = [&](std::string_view user) {
    const absl::StatusOr<Config> config = LoadKubeconfig(dir.Write("config", WithUser(user)));
    REQUIRE_FALSE(config.ok());
    CHECK(config.status().code() == absl::StatusCode::kFailedPrecondition);
    return std::string(config.status().message());
  };
  const std::string prefix = fmt::format("kubeconfig {}/config: ", dir.path());
  CHECK(load("    exec: {apiVersion: client.authentication.k8s.io/v1, interactiveMode: Never}\n") ==
        prefix + "command must be specified for u to use exec authentication plugin");
  CHECK(load("    exec: {command: p, interactiveMode: Never}\n") ==
        prefix + "apiVersion must be specified for u to use exec authentication plugin");
  CHECK(load("    exec: {command: p, apiVersion: client.authentication.k8s.io/v1}\n") ==
        prefix + "interactiveMode must be specified for u to use exec authentication plugin");
  CHECK(load("    exec: {command: p, apiVersion: client.authentication.k8s.io/v1, "
             "interactiveMode: Sometimes}\n") ==
        prefix + "invalid interactiveMode for u: \"Sometimes\"");
  CHECK(load("    exec: {command: p, apiVersion: client.authentication.k8s.io/v1beta1, "
             "env: [{value: x}]}\n") ==
        prefix + "env variable name must be specified for u to use exec authentication plugin");
  CHECK(load("    exec: {command: p, apiVersion: client.authentication.k8s.io/v1beta1}\n"
             "    auth-provider: {name: oidc}\n") ==
        prefix + "authProvider cannot be provided in combination with an exec plugin for u");
  CHECK(load("    exec: {env: [{name: \"\"}]}\n") ==
        prefix +
            "command must be specified for u to use exec authentication plugin; apiVersion must "
            "be specified for u to use exec authentication plugin; env variable name must be "
            "specified for u to use exec authentication plugin; interactiveMode must be "
            "specified for u to use exec authentication plugin");
  CHECK(load("    exec: {command: p, apiVersion: client.authentication.k8s.io/v1alpha1, "
             "interactiveMode: Never}\n") ==
        fmt::format("user u in kubeconfig {}/config: exec plugin: invalid apiVersion "
                    "\"client.authentication.k8s.io/v1alpha1\" (use "
                    "client.authentication.k8s.io/v1 or client.authentication.k8s.io/v1beta1)",
                    dir.path()));
  // Still checked when a token would win, as client-go does.
  CHECK(
      load("    token: t\n    exec: {command: p, apiVersion: client.authentication.k8s.io/v1}\n") ==
      prefix + "interactiveMode must be specified for u to use exec authentication plugin");
}

TEST_CASE("exec plugins: a token or a client certificate wins, as with client-go", "[kube]") {
  TempDir dir;
  constexpr std::string_view kExec =
      "    exec: {command: p, apiVersion: client.authentication.k8s.io/v1beta1}\n";
  const absl::StatusOr<Config> token =
      LoadKubeconfig(dir.Write("token", WithUser(fmt::format("    token: t\n{}", kExec))));
  REQUIRE(token.ok());
  CHECK(token->token == "t");
  CHECK_FALSE(token->exec.has_value());

  dir.Write("token-file", "file-token\n");
  const absl::StatusOr<Config> token_file = LoadKubeconfig(
      dir.Write("file", WithUser(fmt::format("    tokenFile: token-file\n{}", kExec))));
  REQUIRE(token_file.ok());
  CHECK_FALSE(token_file->exec.has_value());

  const absl::StatusOr<Config> certificate = LoadKubeconfig(dir.Write(
      "cert", WithUser(fmt::format("    client-certificate-data: {}\n    client-key-data: {}\n{}",
                                   kCertBase64, kKeyBase64, kExec))));
  REQUIRE(certificate.ok());
  CHECK(certificate->client_certificate_data == kCertPem);
  CHECK_FALSE(certificate->exec.has_value());
  // An invalid apiVersion only matters for a plugin that would run.
  const absl::StatusOr<Config> unused = LoadKubeconfig(
      dir.Write("unused", WithUser("    token: t\n    exec: {command: p, apiVersion: v9, "
                                   "interactiveMode: Never}\n")));
  CHECK(unused.ok());
}

}  // namespace
}  // namespace nodemesh::kube
