// The Kubernetes API client against a real HTTPS test API server: in-cluster configuration,
// a token rotated on disk, TLS verified against the configured CA, the API's errors in its
// own words, and streams (line splitting, stalls, stop).
#include "common/kube/client.h"

#include <stdlib.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/base/format.h"
#include "common/kube/test_objects.h"
#include "test/lib/files.h"
#include "test/lib/kube_apiserver.h"
#include "test/lib/peers.h"
#include "test/lib/process.h"
#include "test/lib/scoped_env.h"

namespace nodemesh::kube {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using testing::KubeApiServer;
using testing::KubeApiServerOptions;
using testing::ScopedEnv;
using testing::TempDir;

std::string MessageOf(const absl::Status& status) { return std::string(status.message()); }

std::string WatchPath(const std::string& resource_version) {
  return "/api/v1/pods?watch=1&allowWatchBookmarks=true&resourceVersion=" + resource_version;
}

TEST_CASE("InClusterConfig reads the pod's environment and service-account directory") {
  KubeApiServer server;
  TempDir dir;
  const std::string sa = dir.path() + "/serviceaccount";
  const std::string token = server.IssueToken("emojivoto", "nodemesh-agent");
  server.WriteServiceAccountDir(sa, token, "emojivoto");
  ScopedEnv host("KUBERNETES_SERVICE_HOST", server.host());
  ScopedEnv port("KUBERNETES_SERVICE_PORT", std::to_string(server.port()));

  const absl::StatusOr<Config> config = InClusterConfig(sa);
  REQUIRE(config.ok());
  CHECK(config->server == server.url());
  CHECK(config->ca_file == sa + "/ca.crt");
  CHECK(config->token_file == sa + "/token");
  CHECK(config->token.empty());
  CHECK(config->namespace_name == "emojivoto");
  CHECK(config->source == "in-cluster");

  Client client(*config);
  const absl::StatusOr<json> pods = client.Get("/api/v1/namespaces/emojivoto/pods");
  REQUIRE(pods.ok());
  CHECK((*pods)["kind"] == "PodList");
  const std::vector<KubeApiServer::Request> requests = server.Requests();
  REQUIRE(!requests.empty());
  CHECK(requests.back().user == "system:serviceaccount:emojivoto:nodemesh-agent");
  CHECK(client.stats().requests == 1);
  CHECK(client.stats().failures == 0);
  CHECK(client.stats().token_reloads == 0);
}

TEST_CASE("InClusterConfig says what is missing") {
  TempDir dir;
  dir.Write("token", "a-token\n");
  dir.Write("ca.crt", "-----BEGIN CERTIFICATE-----\n");
  ScopedEnv host("KUBERNETES_SERVICE_HOST", "10.96.0.1");
  ScopedEnv port("KUBERNETES_SERVICE_PORT", "443");
  REQUIRE(InClusterConfig(dir.path()).ok());

  SECTION("an IPv6 service address is bracketed") {
    ScopedEnv v6("KUBERNETES_SERVICE_HOST", "fd00:10:96::1");
    const absl::StatusOr<Config> config = InClusterConfig(dir.path());
    REQUIRE(config.ok());
    CHECK(config->server == "https://[fd00:10:96::1]:443");
  }
  SECTION("no namespace file: default") {
    const absl::StatusOr<Config> config = InClusterConfig(dir.path());
    REQUIRE(config.ok());
    CHECK(config->namespace_name == "default");
  }
  SECTION("outside a pod") {
    ScopedEnv unset("KUBERNETES_SERVICE_HOST", std::nullopt);
    const absl::StatusOr<Config> config = InClusterConfig(dir.path());
    REQUIRE(absl::IsFailedPrecondition(config.status()));
    CHECK_THAT(MessageOf(config.status()),
               Catch::Contains("KUBERNETES_SERVICE_HOST") && Catch::Contains("kubeconfig"));
  }
  SECTION("no token mounted") {
    std::filesystem::remove(dir.path() + "/token");
    const absl::StatusOr<Config> config = InClusterConfig(dir.path());
    REQUIRE(absl::IsFailedPrecondition(config.status()));
    CHECK_THAT(MessageOf(config.status()), Catch::Contains(dir.path() + "/token") &&
                                               Catch::Contains("automountServiceAccountToken"));
  }
  SECTION("no CA certificate") {
    std::filesystem::remove(dir.path() + "/ca.crt");
    const absl::StatusOr<Config> config = InClusterConfig(dir.path());
    REQUIRE(absl::IsFailedPrecondition(config.status()));
    CHECK_THAT(MessageOf(config.status()), Catch::Contains(dir.path() + "/ca.crt"));
  }
}

TEST_CASE("A token rotated in its file is used without restarting the client") {
  KubeApiServer server;
  TempDir dir;
  const std::string sa = dir.path() + "/serviceaccount";
  const std::string first = server.IssueToken("default", "agent");
  server.WriteServiceAccountDir(sa, first, "default");
  // The kubelet's layout: token -> ..data/token, ..data -> a timestamped directory; a new
  // token is a new directory and an atomic rename of the ..data symlink.
  const auto write_version = [&](const std::string& version, const std::string& token) {
    std::filesystem::create_directory(sa + "/" + version);
    testing::WriteFile(sa + "/" + version + "/token", token);
    std::filesystem::create_symlink(version, sa + "/..data_tmp");
    std::filesystem::rename(sa + "/..data_tmp", sa + "/..data");
  };
  write_version("..2024_01_01_00_00_00.1", first);
  std::filesystem::remove(sa + "/token");
  std::filesystem::create_symlink("..data/token", sa + "/token");

  ScopedEnv host("KUBERNETES_SERVICE_HOST", server.host());
  ScopedEnv port("KUBERNETES_SERVICE_PORT", std::to_string(server.port()));
  const absl::StatusOr<Config> config = InClusterConfig(sa);
  REQUIRE(config.ok());
  Client client(*config);
  REQUIRE(client.Get("/api/v1/pods").ok());

  server.RevokeToken(first);
  const absl::StatusOr<json> rejected = client.Get("/api/v1/pods");
  REQUIRE(absl::IsUnauthenticated(rejected.status()));
  CHECK_THAT(MessageOf(rejected.status()), Catch::StartsWith("list pods: 401 Unauthorized"));
  CHECK(client.stats().token_reloads == 0);

  const std::string second = server.IssueToken("default", "agent");
  write_version("..2024_01_01_01_00_00.2", second);
  const absl::StatusOr<json> accepted = client.Get("/api/v1/pods");
  CHECK(accepted.ok());
  CHECK(client.stats().token_reloads == 1);
  // Unchanged file: not read again.
  CHECK(client.Get("/api/v1/pods").ok());
  CHECK(client.stats().token_reloads == 1);

  // A plain rewrite in place is seen too (same size, new contents and modification time).
  server.RevokeToken(second);
  const std::string third = server.IssueToken("default", "agent");
  REQUIRE(third.size() == second.size());
  testing::WriteFile(sa + "/..data/token", third);
  CHECK(client.Get("/api/v1/pods").ok());
  CHECK(client.stats().token_reloads == 2);
  CHECK(client.stats().failures == 1);
}

TEST_CASE("TLS is verified against the configured CA") {
  KubeApiServer server;
  const Config good = AdminConfigOf(server);

  // A CA file that did not sign the server's certificate.
  Config config = good;
  config.ca_file = server.other_ca_file();
  Client other_ca(config);
  const absl::StatusOr<json> refused = other_ca.Get("/api/v1/pods");
  REQUIRE(absl::IsUnavailable(refused.status()));
  CHECK_THAT(MessageOf(refused.status()), Catch::Contains(server.other_ca_file()) &&
                                              Catch::Contains("did not verify") &&
                                              Catch::Contains(server.url()));
  CHECK(other_ca.stats().failures == 1);

  // CA data in memory.
  config = good;
  config.ca_file.clear();
  config.ca_data = testing::ReadFile(server.ca_file());
  REQUIRE(!config.ca_data.empty());
  CHECK(Client(config).Get("/api/v1/pods").ok());
  config.ca_data = testing::ReadFile(server.other_ca_file());
  const absl::StatusOr<json> refused_data = Client(config).Get("/api/v1/pods");
  REQUIRE(absl::IsUnavailable(refused_data.status()));
  CHECK_THAT(MessageOf(refused_data.status()),
             Catch::Contains("certificate-authority-data") && Catch::Contains("did not verify"));

  // insecure-skip-tls-verify connects anyway (with a warning).
  config = good;
  config.ca_file = server.other_ca_file();
  config.insecure_skip_tls_verify = true;
  CHECK(Client(config).Get("/api/v1/pods").ok());

  // No server listening.
  const std::string url = server.url();
  server.Stop();
  const absl::StatusOr<json> unreachable = Client(good).Get("/api/v1/pods");
  REQUIRE(absl::IsUnavailable(unreachable.status()));
  CHECK_THAT(MessageOf(unreachable.status()), Catch::Contains("cannot connect") &&
                                                  Catch::Contains(url) &&
                                                  Catch::Contains("Connection refused"));
}

TEST_CASE(
    "tls-server-name: the certificate is verified against it, the server's address "
    "is still where the client connects") {
  KubeApiServer server;
  Config config = AdminConfigOf(server);  // https://127.0.0.1:PORT
  config.tls_server_name = "localhost";   // in the server's certificate, beside 127.0.0.1
  Client named(config);
  REQUIRE(named.Get("/api/v1/pods").ok());
  CHECK(server.Requests().back().user == "admin");

  config.tls_server_name = "api.example";  // not in it
  const absl::StatusOr<json> refused = Client(config).Get("/api/v1/pods");
  REQUIRE(absl::IsUnavailable(refused.status()));
  CHECK_THAT(MessageOf(refused.status()),
             Catch::Contains("did not verify") &&
                 Catch::Contains("(as api.example, the cluster's tls-server-name)"));

  // A watch goes the same way.
  config.tls_server_name = "localhost";
  const std::atomic<bool> stop{false};
  CHECK(Client(config)
            .Stream(
                "/api/v1/pods?watch=1&timeoutSeconds=1", 5s, [](std::string_view) { return true; },
                stop)
            .ok());
}

// test/lib/connect_proxy.py, started; its port once it listens.
struct ConnectProxy {
  explicit ConnectProxy(std::vector<std::string> arguments = {})
      : process([&] {
          arguments.insert(arguments.begin(), {testing::kPython, "-u",
                                               testing::SourcePath("test/lib/connect_proxy.py")});
          return testing::Process(arguments);
        }()) {
    REQUIRE(process.WaitForOutput("listening ", 10s));
    REQUIRE(
        testing::PollUntil([&] { return process.output().find('\n') != std::string::npos; }, 10s));
    port = std::stoi(process.output().substr(std::string_view("listening ").size()));
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port); }

  testing::Process process;
  int port = 0;
};

TEST_CASE("proxy-url: requests and watches go through the proxy, tunnelled with CONNECT") {
  KubeApiServer server;
  Config config = AdminConfigOf(server);
  const std::string tunnel = "CONNECT 127.0.0.1:" + std::to_string(server.port());

  SECTION("a tunnel for each request and watch") {
    ConnectProxy proxy;
    config.proxy_url = proxy.url();
    Client client(config);
    const absl::StatusOr<json> pods = client.Get("/api/v1/pods");
    REQUIRE(pods.ok());
    CHECK(server.Requests().back().user == "admin");
    CHECK(proxy.process.WaitForOutput(tunnel, 5s));
    const std::atomic<bool> stop{false};
    CHECK(client
              .Stream(
                  "/api/v1/pods?watch=1&timeoutSeconds=1", 5s,
                  [](std::string_view) { return true; }, stop)
              .ok());
    CHECK(testing::CountLines(proxy.process.output(), tunnel) == 2);
  }
  SECTION("with the proxy's credentials in its URL, as Basic Proxy-Authorization") {
    ConnectProxy proxy({"--user", "squid:p@ss"});
    config.proxy_url = "http://squid:p%40ss@127.0.0.1:" + std::to_string(proxy.port);
    CHECK(Client(config).Get("/api/v1/pods").ok());
    config.proxy_url = "http://squid:wrong@127.0.0.1:" + std::to_string(proxy.port);
    const absl::StatusOr<json> refused = Client(config).Get("/api/v1/pods");
    REQUIRE(absl::IsUnavailable(refused.status()));
    CHECK_THAT(MessageOf(refused.status()),
               Catch::Contains("refused to connect") && Catch::Contains("407"));
  }
  SECTION("nothing listening: the failure names the proxy, not the server it was for") {
    config.proxy_url = "http://127.0.0.1:1";
    const absl::StatusOr<json> refused = Client(config).Get("/api/v1/pods");
    REQUIRE(absl::IsUnavailable(refused.status()));
    CHECK_THAT(MessageOf(refused.status()),
               Catch::Contains("through the proxy http://127.0.0.1:1 (Connection refused)"));
  }
  SECTION("a SOCKS proxy is refused, saying which proxies are") {
    config.proxy_url = "socks5://127.0.0.1:1080";
    const absl::StatusOr<json> refused = Client(config).Get("/api/v1/pods");
    REQUIRE(absl::IsInvalidArgument(refused.status()));
    CHECK_THAT(MessageOf(refused.status()),
               Catch::Contains("socks5://127.0.0.1:1080") && Catch::Contains("HTTP proxies"));
  }
}

TEST_CASE("https_proxy of the environment is used unless no_proxy names the server") {
  KubeApiServer server;
  const Config config = AdminConfigOf(server);  // https://127.0.0.1:PORT, no proxy-url
  ConnectProxy proxy;
  ScopedEnv https_proxy("https_proxy", proxy.url());
  ScopedEnv upper("HTTPS_PROXY", std::nullopt);
  ScopedEnv upper_no("NO_PROXY", std::nullopt);
  const std::string tunnel = "CONNECT 127.0.0.1:" + std::to_string(server.port());
  {
    ScopedEnv no_proxy("no_proxy", std::nullopt);
    CHECK(Client(config).Get("/api/v1/pods").ok());
    CHECK(testing::CountLines(proxy.process.output(), tunnel) == 1);
  }
  for (const char* names : {"127.0.0.1", "example.com, 127.0.0.0/8", "*"}) {
    ScopedEnv no_proxy("no_proxy", names);
    CHECK(Client(config).Get("/api/v1/pods").ok());
  }
  CHECK(testing::CountLines(proxy.process.output(), tunnel) == 1);
}

TEST_CASE("API errors keep the server's message") {
  TempDir dir;
  const std::string rbac = dir.Write("rbac.json", R"([
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
     "metadata": {"name": "pod-getter"},
     "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
     "metadata": {"name": "reader-gets-pods"},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                 "name": "pod-getter"},
     "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": "default"}]}
  ])");
  KubeApiServer server(KubeApiServerOptions{.rbac_file = rbac});
  Client admin(AdminConfigOf(server));

  Config reader_config = AdminConfigOf(server);
  reader_config.token = server.IssueToken("default", "reader");
  Client reader(reader_config);
  const absl::StatusOr<json> denied = reader.Get("/api/v1/pods?fieldSelector=spec.nodeName%3Dn1");
  REQUIRE(absl::IsPermissionDenied(denied.status()));
  CHECK(MessageOf(denied.status()) ==
        "list pods: 403 Forbidden: pods is forbidden: User "
        "\"system:serviceaccount:default:reader\" cannot list resource \"pods\" in API group \"\" "
        "at the cluster scope");

  const absl::StatusOr<json> missing = admin.Get("/api/v1/namespaces/default/pods/nope");
  REQUIRE(absl::IsNotFound(missing.status()));
  CHECK(MessageOf(missing.status()) ==
        "get pods default/nope: 404 Not Found: pods \"nope\" not found");

  REQUIRE(
      admin.Request("POST", "/api/v1/namespaces/default/pods", TestPod("default", "web").dump())
          ->status == 201);
  const absl::StatusOr<Response> again =
      admin.Request("POST", "/api/v1/namespaces/default/pods", TestPod("default", "web").dump());
  REQUIRE(again.ok());
  CHECK(again->status == 409);
  const absl::Status exists = StatusFromResponse(*again, "create pod default/web");
  CHECK(absl::IsAlreadyExists(exists));
  CHECK_THAT(MessageOf(exists), Catch::StartsWith("create pod default/web: 409 Conflict: "));

  const absl::StatusOr<json> patched =
      admin.MergePatch("/api/v1/namespaces/default/pods/web",
                       {{"metadata", {{"labels", {{"nodemesh.io/mesh", "enabled"}}}}}});
  REQUIRE(patched.ok());
  CHECK((*patched)["metadata"]["labels"]["nodemesh.io/mesh"] == "enabled");
  CHECK(
      server.Get("/api/v1/namespaces/default/pods/web")["metadata"]["labels"]["nodemesh.io/mesh"] ==
      "enabled");
  const absl::StatusOr<json> patch_missing =
      admin.MergePatch("/api/v1/namespaces/default/pods/nope", {{"metadata", json::object()}});
  REQUIRE(absl::IsNotFound(patch_missing.status()));
  CHECK_THAT(MessageOf(patch_missing.status()), Catch::StartsWith("patch pods default/nope: 404"));
}

TEST_CASE("StatusFromResponse maps codes and keeps what it can of the body") {
  const auto status_body = [](int code, const std::string& reason, const std::string& message) {
    return json{{"kind", "Status"},   {"apiVersion", "v1"}, {"status", "Failure"},
                {"message", message}, {"reason", reason},   {"code", code}}
        .dump();
  };
  CHECK(StatusFromResponse({200, "{}"}, "x").ok());
  const absl::Status gone = StatusFromResponse(
      {410, status_body(410, "Expired", "too old resource version: 5 (9)")}, "watch pods");
  CHECK(absl::IsFailedPrecondition(gone));
  CHECK(MessageOf(gone) ==
        fmt::format("watch pods: {}: too old resource version: 5 (9)", kGoneReason));
  CHECK(absl::IsUnauthenticated(StatusFromResponse({401, ""}, "x")));
  const absl::Status conflict =
      StatusFromResponse({409, status_body(409, "Conflict", "the object has been modified")}, "x");
  CHECK(absl::IsAborted(conflict));
  const absl::Status proxy = StatusFromResponse({502, "<html>\nbad gateway\n</html>"}, "list pods");
  CHECK(absl::IsUnavailable(proxy));
  CHECK(MessageOf(proxy) == "list pods: 502 Bad Gateway: <html> bad gateway </html>");
  CHECK(absl::IsUnavailable(StatusFromResponse({503, ""}, "x")));
  const absl::Status invalid =
      StatusFromResponse({422, status_body(422, "Invalid", "Pod \"x\" is invalid")}, "create");
  CHECK(absl::IsUnknown(invalid));
  CHECK(MessageOf(invalid) == "create: 422 Unprocessable Entity: Pod \"x\" is invalid");
  // The answer stays with the error, whole, for a caller that reads more of it.
  const std::optional<Response> kept = ResponseOf(proxy);
  REQUIRE(kept.has_value());
  CHECK(kept->status == 502);
  CHECK(kept->body == "<html>\nbad gateway\n</html>");
  CHECK_FALSE(ResponseOf(absl::UnavailableError("list pods: connection refused")).has_value());
  CHECK_FALSE(ResponseOf(absl::OkStatus()).has_value());
}

TEST_CASE("Stream hands over whole lines, however the body was cut") {
  KubeApiServer server;
  Client client(AdminConfigOf(server));
  const std::string before = server.Get("/api/v1/pods")["metadata"]["resourceVersion"];
  // Larger than any read libcurl makes, so that this line arrives in many pieces.
  json big = TestPod("default", "big");
  big["metadata"]["annotations"]["filler"] = std::string(300'000, 'x');
  server.Create("/api/v1/namespaces/default/pods", big);
  for (const char* name : {"a", "b", "c"}) {
    server.Create("/api/v1/namespaces/default/pods", TestPod("default", name));
  }

  std::vector<json> events;
  std::atomic<bool> stop{false};
  const absl::Status status = client.Stream(
      WatchPath(before), 5s,
      [&](std::string_view line) {
        json event = json::parse(line);  // throws (failing the test) on a partial line
        events.push_back(std::move(event));
        return events.size() < 4;
      },
      stop);
  CHECK(status.ok());
  REQUIRE(events.size() == 4);
  CHECK(events[0]["type"] == "ADDED");
  CHECK(events[0]["object"]["metadata"]["annotations"]["filler"] ==
        big["metadata"]["annotations"]["filler"]);
  CHECK(events[1]["object"]["metadata"]["name"] == "a");
  CHECK(events[3]["object"]["metadata"]["name"] == "c");

  // An error status is read whole and mapped.
  server.ExpireHistory(KubeApiServer::GoneMode::kHttpStatus);
  const absl::Status gone = client.Stream(
      WatchPath(before), 5s, [](std::string_view) { return true; }, stop);
  REQUIRE(absl::IsFailedPrecondition(gone));
  CHECK_THAT(MessageOf(gone),
             Catch::StartsWith("watch pods: ") && Catch::Contains(std::string(kGoneReason)));
}

TEST_CASE("Stream: silence ends it, bytes keep it alive, stop ends it promptly") {
  KubeApiServer server(KubeApiServerOptions{.bookmark_interval = 200ms});
  Client client(AdminConfigOf(server));
  const std::string now = server.Get("/api/v1/pods")["metadata"]["resourceVersion"];
  int lines = 0;
  const auto count = [&lines](std::string_view) {
    ++lines;
    return true;
  };
  using Clock = std::chrono::steady_clock;

  // Bookmarks more often than the stall timeout keep it open until stopped.
  {
    std::atomic<bool> stop{false};
    std::thread stopper([&stop] {
      std::this_thread::sleep_for(1500ms);
      stop = true;
    });
    const Clock::time_point started = Clock::now();
    const absl::Status status = client.Stream(WatchPath(now), 600ms, count, stop);
    const Clock::duration took = Clock::now() - started;
    stopper.join();
    CHECK(absl::IsCancelled(status));
    CHECK(lines >= 3);
    CHECK(took < 1500ms + 200ms);
  }

  // Not a byte for the stall timeout: DEADLINE_EXCEEDED.
  server.StallWatches(true);
  lines = 0;
  {
    std::atomic<bool> stop{false};
    const Clock::time_point started = Clock::now();
    const absl::Status status = client.Stream(WatchPath(now), 400ms, count, stop);
    const Clock::duration took = Clock::now() - started;
    REQUIRE(absl::IsDeadlineExceeded(status));
    CHECK_THAT(MessageOf(status), Catch::Contains("400 ms"));
    CHECK(took >= 400ms);
    CHECK(took < 1500ms);
    CHECK(lines == 0);
  }

  // Stopped in the middle of a silent stream.
  {
    std::atomic<bool> stop{false};
    std::thread stopper([&stop] {
      std::this_thread::sleep_for(300ms);
      stop = true;
    });
    const Clock::time_point started = Clock::now();
    const absl::Status status = client.Stream(WatchPath(now), 10s, count, stop);
    const Clock::duration took = Clock::now() - started;
    stopper.join();
    CHECK(absl::IsCancelled(status));
    CHECK(took < 300ms + 200ms);
  }
}

}  // namespace
}  // namespace nodemesh::kube
