// Exec credential plugins run by the client against the test API server: real plugin
// processes (test/lib/exec_plugin.sh, which counts its runs and hands out tokens the server
// issued, and one-line scripts that misbehave), the credential kept until it expires and
// renewed after a 401 (the request then sent again), and each failure named with the
// plugin's own words.
#include <sys/stat.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/time/time.h"
#include "common/base/format.h"
#include "common/kube/client.h"
#include "common/kube/test_objects.h"
#include "nlohmann/json.hpp"
#include "test/lib/certificates.h"
#include "test/lib/files.h"
#include "test/lib/kube_apiserver.h"
#include "test/lib/peers.h"

namespace nodemesh::kube {
namespace {

using namespace std::chrono_literals;
using testing::KubeApiServer;
using testing::TempDir;

// A clock a test moves by hand.
struct TestClock {
  absl::Time now = absl::FromUnixSeconds(1'900'000'000);
  std::function<absl::Time()> Function() {
    return [this] { return now; };
  }
};

// The server's admin configuration with the exec plugin `command` in place of the token.
Config PluginConfig(const KubeApiServer& server, const std::string& command,
                    std::vector<std::pair<std::string, std::string>> env = {}) {
  Config config = AdminConfigOf(server);
  config.token.clear();
  config.source = "kubeconfig /k, context c";
  config.exec = ExecConfig{.api_version = "client.authentication.k8s.io/v1",
                           .command = command,
                           .env = std::move(env),
                           .interactive_mode = ExecConfig::InteractiveMode::kNever,
                           .user = "u"};
  return config;
}

// The counting plugin with its state directory, handing out `tokens` in turn.
struct CountingPlugin {
  explicit CountingPlugin(const std::vector<std::string>& tokens) {
    std::string lines;
    for (const std::string& token : tokens) lines += token + "\n";
    dir.Write("tokens", lines);
  }
  int Calls() const {
    const std::string text = testing::ReadFile(dir.path() + "/calls");
    return text.empty() ? 0 : std::stoi(text);
  }
  Config ConfigFor(const KubeApiServer& server) const {
    return PluginConfig(server, testing::SourcePath("test/lib/exec_plugin.sh"),
                        {{"PLUGIN_DIR", dir.path()}});
  }
  TempDir dir;
};

std::string LastUser(KubeApiServer& server) { return server.Requests().back().user; }

// A plugin script written to `dir`: `body` after a shebang.
std::string Script(const TempDir& dir, const std::string& name, const std::string& body) {
  const std::string path = dir.Write(name, "#!/bin/sh\n" + body);
  ::chmod(path.c_str(), 0755);
  return path;
}

absl::Status GetPods(const Config& config) { return Client(config).Get("/api/v1/pods").status(); }

TEST_CASE("exec plugin: run once, its token kept until it expires and not a moment before") {
  KubeApiServer server;
  const std::string first = server.IssueToken("plugin", "first");
  const std::string second = server.IssueToken("plugin", "second");
  CountingPlugin plugin({first, second});
  // Tokens good for an hour of the test's clock (the plugin reads the real one).
  testing::WriteFile(plugin.dir.path() + "/lifetime", "3600");
  TestClock clock;
  clock.now = absl::Now();
  Client client(plugin.ConfigFor(server), {.now = clock.Function()});

  REQUIRE(client.Get("/api/v1/pods").ok());
  REQUIRE(client.Get("/api/v1/namespaces").ok());
  CHECK(plugin.Calls() == 1);
  CHECK(client.stats().exec_runs == 1);
  CHECK(LastUser(server) == "system:serviceaccount:plugin:first");

  clock.now += absl::Minutes(59);
  REQUIRE(client.Get("/api/v1/pods").ok());
  CHECK(plugin.Calls() == 1);

  clock.now += absl::Minutes(2);  // past the expiry
  REQUIRE(client.Get("/api/v1/pods").ok());
  CHECK(plugin.Calls() == 2);
  CHECK(LastUser(server) == "system:serviceaccount:plugin:second");
  CHECK(client.stats().failures == 0);
}

TEST_CASE("exec plugin: a 401 runs it again and the request is sent once more") {
  KubeApiServer server;
  const std::string first = server.IssueToken("plugin", "first");
  const std::string second = server.IssueToken("plugin", "second");
  CountingPlugin plugin({first, second});  // no expiry: good until refused
  Client client(plugin.ConfigFor(server));
  REQUIRE(client.Get("/api/v1/pods").ok());
  CHECK(plugin.Calls() == 1);

  server.RevokeToken(first);
  const absl::StatusOr<nlohmann::json> pods = client.Get("/api/v1/pods");
  REQUIRE(pods.ok());
  CHECK(plugin.Calls() == 2);
  const std::vector<KubeApiServer::Request> requests = server.Requests();
  REQUIRE(requests.size() >= 3);
  CHECK(requests[requests.size() - 2].status == 401);
  CHECK(requests.back().user == "system:serviceaccount:plugin:second");

  // A watch alike.
  server.RevokeToken(second);
  const std::string third = server.IssueToken("plugin", "third");
  testing::WriteFile(plugin.dir.path() + "/tokens", first + "\n" + second + "\n" + third + "\n");
  const std::atomic<bool> stop{false};
  CHECK(client
            .Stream(
                "/api/v1/pods?watch=1&timeoutSeconds=1", 5s, [](std::string_view) { return true; },
                stop)
            .ok());
  CHECK(plugin.Calls() == 3);
  CHECK(LastUser(server) == "system:serviceaccount:plugin:third");

  // A plugin that hands out the refused token again: the 401 stands, no loop.
  server.RevokeToken(third);
  const absl::StatusOr<nlohmann::json> refused = client.Get("/api/v1/pods");
  REQUIRE(absl::IsUnauthenticated(refused.status()));
  CHECK(plugin.Calls() == 4);
  CHECK_THAT(std::string(refused.status().message()),
             Catch::StartsWith("list pods: 401 Unauthorized"));
}

TEST_CASE("exec plugin: what it is given: KUBERNETES_EXEC_INFO, env, stdin") {
  KubeApiServer server;
  CountingPlugin plugin({server.admin_token()});
  Config config = plugin.ConfigFor(server);
  config.exec->env.emplace_back("HOME", "/from-kubeconfig");
  config.exec->args = {"--ignored"};
  REQUIRE(GetPods(config).ok());
  CHECK(testing::ReadFile(plugin.dir.path() + "/exec-info") ==
        R"({"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1",)"
        R"("spec":{"interactive":false}})");
  CHECK(testing::ReadFile(plugin.dir.path() + "/stdin") == "other\n");

  // With provideClusterInfo: the cluster as client-go describes it, the CA as base64 of
  // its PEM, the cluster's exec extension as config.
  config.exec->provide_cluster_info = true;
  config.exec->cluster_config_json = R"({"audience":"abc"})";
  config.tls_server_name = "localhost";
  REQUIRE(GetPods(config).ok());
  const nlohmann::json info =
      nlohmann::json::parse(testing::ReadFile(plugin.dir.path() + "/exec-info"));
  CHECK(info["spec"]["cluster"]["server"] == server.url());
  CHECK(info["spec"]["cluster"]["tls-server-name"] == "localhost");
  std::string ca;
  REQUIRE(absl::Base64Unescape(
      info["spec"]["cluster"]["certificate-authority-data"].get<std::string>(), &ca));
  CHECK(ca == testing::ReadFile(server.ca_file()));
  CHECK(info["spec"]["cluster"]["config"] == nlohmann::json{{"audience", "abc"}});
  CHECK(info["spec"]["interactive"] == false);
  CHECK(
      testing::ReadFile(plugin.dir.path() + "/exec-info")
          .starts_with(R"({"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1",)"
                       R"("spec":{"cluster":{"server":)"));

  // The kubeconfig's env over the caller's (HOME), the caller's for the rest (PATH).
  TempDir dir;
  const std::string seen = dir.path() + "/env";
  const std::string printer =
      Script(dir, "env-plugin",
             fmt::format("echo \"$HOME $PLUGIN_DIR ${{PATH:+path}}\" > {}\n"
                         "exec {} \"$@\"\n",
                         seen, testing::SourcePath("test/lib/exec_plugin.sh")));
  config.exec->command = printer;
  REQUIRE(GetPods(config).ok());
  CHECK(testing::ReadFile(seen) == fmt::format("/from-kubeconfig {} path\n", plugin.dir.path()));
}

TEST_CASE("exec plugin: interactiveMode as client-go decides it") {
  KubeApiServer server;
  CountingPlugin plugin({server.admin_token()});
  Config config = plugin.ConfigFor(server);
  config.exec->interactive_mode = ExecConfig::InteractiveMode::kAlways;
  const absl::StatusOr<nlohmann::json> refused =
      Client(config, {.stdin_is_terminal = false}).Get("/api/v1/pods");
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.status().message() ==
        "list pods: getting credentials for user u of kubeconfig /k, context c: exec plugin "
        "cannot support interactive mode: standard input is not a terminal");
  CHECK(plugin.Calls() == 0);
  const absl::StatusOr<nlohmann::json> unavailable =
      Client(config, {.stdin_is_terminal = true, .stdin_unavailable = true}).Get("/api/v1/pods");
  REQUIRE_FALSE(unavailable.ok());
  CHECK_THAT(std::string(unavailable.status().message()),
             Catch::EndsWith("exec plugin cannot support interactive mode: standard input is "
                             "unavailable"));

  // IfAvailable without a terminal: runs, not interactive.
  config.exec->interactive_mode = ExecConfig::InteractiveMode::kIfAvailable;
  REQUIRE(Client(config, {.stdin_is_terminal = false}).Get("/api/v1/pods").ok());
  CHECK(nlohmann::json::parse(
            testing::ReadFile(plugin.dir.path() + "/exec-info"))["spec"]["interactive"] == false);
}

TEST_CASE("exec plugin failures name the plugin, with its own stderr") {
  KubeApiServer server;
  TempDir dir;
  constexpr std::string_view kPrefix =
      "list pods: getting credentials for user u of kubeconfig /k, context c: ";
  const auto failure = [&](const Config& config) {
    const absl::StatusOr<nlohmann::json> result = Client(config).Get("/api/v1/pods");
    REQUIRE_FALSE(result.ok());
    return std::string(result.status().message());
  };

  SECTION("it fails") {
    const std::string plugin =
        Script(dir, "plugin.sh",
               "echo 'plugin stderr line 1' >&2\necho 'boom: no credentials' >&2\nexit 3\n");
    Config config = PluginConfig(server, plugin);
    config.exec->args = {"get-token", "--cluster", "prod"};
    CHECK(failure(config) ==
          fmt::format("{0}exec plugin {1} ({1} get-token --cluster prod) failed with exit code 3; "
                      "its stderr:\n  plugin stderr line 1\n  boom: no credentials",
                      kPrefix, plugin));
  }
  SECTION("it is not installed") {
    Config config = PluginConfig(server, "no-such-plugin-23");
    config.exec->install_hint = "install it with: \x1b[1mapt-get install foo\x1b[0m";
    const std::string message = failure(config);
    CHECK_THAT(message,
               Catch::StartsWith(fmt::format("{}exec plugin no-such-plugin-23 not found (looked in "
                                             "PATH=",
                                             kPrefix)));
    CHECK_THAT(message, Catch::EndsWith(
                            "It looks like you are trying to use a client-go credential plugin "
                            "that is not installed; the kubeconfig says: install it with: apt-get "
                            "install foo. See https://kubernetes.io/docs/reference/"
                            "access-authn-authz/authentication/#client-go-credential-plugins"));
    CHECK(failure(PluginConfig(server, dir.path() + "/missing")) ==
          fmt::format("{}exec plugin {}/missing not found. It looks like you are trying to use a "
                      "client-go credential plugin that is not installed. See "
                      "https://kubernetes.io/docs/reference/access-authn-authz/authentication/"
                      "#client-go-credential-plugins",
                      kPrefix, dir.path()));
  }
  SECTION("it prints what is not an ExecCredential") {
    const auto printing = [&](const std::string& name, const std::string& out) {
      return failure(
          PluginConfig(server, Script(dir, name, fmt::format("cat <<'END'\n{}\nEND\n", out))));
    };
    const std::string v1 =
        R"("apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential")";
    CHECK_THAT(printing("bad-json", "token: abc"),
               Catch::StartsWith(fmt::format("{}exec plugin {}/bad-json: decoding stdout: couldn't "
                                             "get version/kind; json parse error: ",
                                             kPrefix, dir.path())));
    CHECK(printing("v1beta1", R"({"apiVersion":"client.authentication.k8s.io/v1beta1",)"
                              R"("kind":"ExecCredential","status":{"token":"t"}})") ==
          fmt::format("{}exec plugin {}/v1beta1: exec plugin is configured to use API version "
                      "client.authentication.k8s.io/v1, plugin returned version "
                      "client.authentication.k8s.io/v1beta1",
                      kPrefix, dir.path()));
    CHECK(printing("no-status", "{" + v1 + "}") ==
          fmt::format("{}exec plugin {}/no-status: exec plugin didn't return a status field",
                      kPrefix, dir.path()));
    CHECK(printing("empty", "{" + v1 + R"(,"status":{}})") ==
          fmt::format("{}exec plugin {}/empty: exec plugin didn't return a token or cert/key pair",
                      kPrefix, dir.path()));
    // A certificate with the key of another, and one that is not PEM at all.
    testing::MakeCa(dir, "ca");
    testing::MakeClientCertificate(dir, "ca", "one", "/CN=one");
    testing::MakeClientCertificate(dir, "ca", "two", "/CN=two");
    const auto pair = [&](const std::string& name, const std::string& certificate,
                          const std::string& key) {
      const nlohmann::json credential = {
          {"apiVersion", "client.authentication.k8s.io/v1"},
          {"kind", "ExecCredential"},
          {"status", {{"clientCertificateData", certificate}, {"clientKeyData", key}}}};
      return printing(name, credential.dump());
    };
    const std::string one = testing::ReadFile(dir.path() + "/one.crt");
    CHECK(pair("mismatch", one, testing::ReadFile(dir.path() + "/two.key")) ==
          fmt::format("{}exec plugin {}/mismatch: failed parsing client key/certificate: tls: "
                      "private key does not match public key",
                      kPrefix, dir.path()));
    CHECK(pair("not-pem", "CERT", testing::ReadFile(dir.path() + "/one.key")) ==
          fmt::format("{}exec plugin {}/not-pem: failed parsing client key/certificate: tls: "
                      "failed to find any PEM data in certificate input",
                      kPrefix, dir.path()));
    CHECK(printing("cert-only", "{" + v1 + R"(,"status":{"clientCertificateData":"PEM"}})") ==
          fmt::format("{}exec plugin {}/cert-only: exec plugin returned only certificate or key, "
                      "not both",
                      kPrefix, dir.path()));
  }
  SECTION("it hangs") {
    Config config = PluginConfig(server, Script(dir, "hang", "echo waiting >&2\nexec sleep 60\n"));
    Client client(config, {.non_interactive_timeout = 300ms});
    const absl::StatusOr<nlohmann::json> result = client.Get("/api/v1/pods");
    REQUIRE(absl::IsFailedPrecondition(result.status()));
    CHECK(result.status().message() ==
          fmt::format("{}exec plugin {}/hang did not finish within 300 ms and was stopped; its "
                      "stderr:\n  waiting",
                      kPrefix, dir.path()));
  }
}

}  // namespace
}  // namespace nodemesh::kube
