// List-and-watch against a real HTTPS test API server: the copy follows every change,
// bookmarks move the resourceVersion, a 410 either way means a new list, a stalled watch is
// resumed without one, and the copy survives the server going away and coming back.
#include "common/kube/reflector.h"

#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "common/kube/test_objects.h"
#include "test/lib/kube_apiserver.h"
#include "test/lib/process.h"

namespace nodemesh::kube {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using testing::KubeApiServer;
using testing::KubeApiServerOptions;
using testing::PollUntil;

std::string PodsOf(const std::string& namespace_name) {
  return "/api/v1/namespaces/" + namespace_name + "/pods";
}

// Short timings, so that every recovery happens in well under a second.
ReflectorOptions PodOptions() {
  ReflectorOptions options;
  options.path = "/api/v1/pods";
  options.what = "pods";
  options.watch_timeout = 60s;
  options.stall_timeout = 1500ms;
  options.initial_backoff = 50ms;
  options.max_backoff = 400ms;
  return options;
}

std::vector<std::string> Keys(const Reflector& reflector) {
  std::vector<std::string> keys;
  for (const auto& [key, object] : *reflector.Snapshot()) keys.push_back(key);
  return keys;
}

bool Has(const Reflector& reflector, const std::string& key) {
  return reflector.Snapshot()->contains(key);
}

std::string CurrentVersion(KubeApiServer& server) {
  return server.Get("/api/v1/pods")["metadata"]["resourceVersion"];
}

// The server's record of the reflector's requests for pods: lists and watches.
std::vector<KubeApiServer::Request> PodRequests(KubeApiServer& server, bool watch) {
  std::vector<KubeApiServer::Request> requests;
  for (KubeApiServer::Request& request : server.Requests()) {
    if (request.path.starts_with("/api/v1/pods") && request.user == "admin" &&
        request.watch == watch && request.method == "GET") {
      requests.push_back(std::move(request));
    }
  }
  return requests;
}

TEST_CASE("Reflector lists, then follows ADDED, MODIFIED and DELETED") {
  KubeApiServer server;
  server.Create(PodsOf("default"), TestPod("default", "a"));
  server.Create(PodsOf("default"), TestPod("default", "b"));
  server.Create(PodsOf("emojivoto"), TestPod("emojivoto", "web-1"));
  Client client(AdminConfigOf(server));
  std::atomic<int> changes{0};
  Reflector reflector(client, PodOptions(), [&changes] { ++changes; });
  CHECK(!reflector.synced());
  CHECK(reflector.Snapshot()->empty());
  reflector.Start();
  REQUIRE(reflector.WaitForSync(5s));
  CHECK(Keys(reflector) == std::vector<std::string>{"default/a", "default/b", "emojivoto/web-1"});
  CHECK(reflector.resource_version() == CurrentVersion(server));
  CHECK(PollUntil([&] { return changes == 1; }, 1s));
  CHECK(reflector.stats().lists == 1);
  const std::shared_ptr<const Reflector::Objects> before = reflector.Snapshot();

  server.Create(PodsOf("default"), TestPod("default", "c"));
  server.MergePatch(PodsOf("default") + "/a", {{"metadata", {{"labels", {{"app", "web"}}}}}});
  server.Delete(PodsOf("default") + "/b");
  const std::string last = CurrentVersion(server);
  REQUIRE(PollUntil([&] { return reflector.resource_version() == last; }, 5s));
  CHECK(Keys(reflector) == std::vector<std::string>{"default/a", "default/c", "emojivoto/web-1"});
  CHECK(reflector.Snapshot()->at("default/a")["metadata"]["labels"]["app"] == "web");
  CHECK(reflector.stats().events == 3);
  CHECK(changes == 4);
  CHECK(reflector.stats().lists == 1);
  CHECK(reflector.last_error().empty());
  // A snapshot taken earlier is not changed under its holder.
  CHECK(before->size() == 3);
  CHECK(before->contains("default/b"));
  CHECK(before->at("default/a")["metadata"].value("labels", json::object()).count("app") == 0);

  // The watch asked for bookmarks and a timeout, from the list's version.
  const std::vector<KubeApiServer::Request> watches = PodRequests(server, /*watch=*/true);
  REQUIRE(!watches.empty());
  CHECK_THAT(watches.front().path, Catch::Contains("watch=1") &&
                                       Catch::Contains("allowWatchBookmarks=true") &&
                                       Catch::Contains("timeoutSeconds=60"));
}

TEST_CASE("Reflector sends its selectors URL-encoded") {
  KubeApiServer server;
  server.Create(PodsOf("default"),
                TestPod("default", "web-1", {{"app", "web"}, {"tier", "front"}}));
  server.Create(PodsOf("default"), TestPod("default", "db-1", {{"app", "db"}}));
  server.Create(PodsOf("other"), TestPod("other", "web-2", {{"app", "web"}, {"tier", "front"}}));
  Client client(AdminConfigOf(server));
  ReflectorOptions options = PodOptions();
  options.field_selector = "metadata.namespace=default";
  options.label_selector = "app=web,tier in (front, back)";
  Reflector reflector(client, options, nullptr);
  reflector.Start();
  REQUIRE(reflector.WaitForSync(5s));
  CHECK(Keys(reflector) == std::vector<std::string>{"default/web-1"});

  // A pod that stops matching leaves the copy.
  server.MergePatch(PodsOf("default") + "/web-1", {{"metadata", {{"labels", {{"app", "api"}}}}}});
  REQUIRE(PollUntil([&] { return !Has(reflector, "default/web-1"); }, 5s));

  const std::vector<KubeApiServer::Request> lists = PodRequests(server, /*watch=*/false);
  REQUIRE(lists.size() == 1);
  CHECK_THAT(lists[0].path,
             Catch::Contains("fieldSelector=metadata.namespace%3Ddefault") &&
                 Catch::Contains("labelSelector=app%3Dweb%2Ctier%20in%20%28front%2C%20back%29"));
}

TEST_CASE("Bookmarks move the resourceVersion on without events") {
  KubeApiServer server(KubeApiServerOptions{.bookmark_interval = 200ms});
  server.Create(PodsOf("default"), TestPod("default", "a"));
  Client client(AdminConfigOf(server));
  std::atomic<int> changes{0};
  Reflector reflector(client, PodOptions(), [&changes] { ++changes; });
  reflector.Start();
  REQUIRE(reflector.WaitForSync(5s));
  const std::string listed = reflector.resource_version();

  // A change elsewhere moves the server's version; the pods' watch hears of it only by
  // bookmark.
  server.Create(
      "/api/v1/namespaces",
      {{"apiVersion", "v1"}, {"kind", "Namespace"}, {"metadata", {{"name", "elsewhere"}}}});
  const std::string now = server.Get("/api/v1/namespaces")["metadata"]["resourceVersion"];
  REQUIRE(now != listed);
  REQUIRE(PollUntil([&] { return reflector.resource_version() == now; }, 5s));
  CHECK(reflector.stats().bookmarks >= 1);
  CHECK(reflector.stats().events == 0);
  CHECK(changes == 1);
  CHECK(Keys(reflector) == std::vector<std::string>{"default/a"});
}

TEST_CASE("A 410 Gone, as a status or as an ERROR event, makes the reflector list again") {
  KubeApiServer server;
  server.Create(PodsOf("default"), TestPod("default", "a"));
  server.Create(PodsOf("default"), TestPod("default", "b"));
  Client client(AdminConfigOf(server));
  Reflector reflector(client, PodOptions(), nullptr);
  reflector.Start();
  REQUIRE(reflector.WaitForSync(5s));

  // Changes the watch does not hear of (stalled), then its version is expired and it is
  // closed: only a new list can bring the copy up to date.
  const auto expire_and_reconnect = [&](KubeApiServer::GoneMode mode, const std::string& remove,
                                        const std::string& add) {
    REQUIRE(PollUntil([&] { return server.OpenWatches() == 1; }, 5s));
    server.StallWatches(true);
    server.Delete(PodsOf("default") + "/" + remove);
    server.Create(PodsOf("default"), TestPod("default", add));
    server.ExpireHistory(mode);
    server.CloseWatches();
    server.StallWatches(false);
  };
  const uint64_t events = reflector.stats().events;

  expire_and_reconnect(KubeApiServer::GoneMode::kHttpStatus, "a", "c");
  REQUIRE(PollUntil([&] { return reflector.stats().lists == 2; }, 5s));
  CHECK(reflector.stats().gone == 1);
  CHECK(Keys(reflector) == std::vector<std::string>{"default/b", "default/c"});
  bool saw_410 = false;
  for (const KubeApiServer::Request& watch : PodRequests(server, /*watch=*/true)) {
    saw_410 = saw_410 || watch.status == 410;
  }
  CHECK(saw_410);

  expire_and_reconnect(KubeApiServer::GoneMode::kErrorEvent, "b", "d");
  REQUIRE(PollUntil([&] { return reflector.stats().lists == 3; }, 5s));
  CHECK(reflector.stats().gone == 2);
  CHECK(Keys(reflector) == std::vector<std::string>{"default/c", "default/d"});

  CHECK(reflector.stats().events == events);  // the changes came with the lists
  CHECK(reflector.stats().errors == 0);
  CHECK(reflector.last_error().empty());
  // And it watches again from the last list's version.
  server.Create(PodsOf("default"), TestPod("default", "e"));
  CHECK(PollUntil([&] { return Has(reflector, "default/e"); }, 5s));
  CHECK(reflector.stats().lists == 3);
}

TEST_CASE("A stalled watch is started again from the last version, without a list") {
  KubeApiServer server(KubeApiServerOptions{.bookmark_interval = 200ms});
  server.Create(PodsOf("default"), TestPod("default", "a"));
  Client client(AdminConfigOf(server));
  ReflectorOptions options = PodOptions();
  options.stall_timeout = 500ms;
  Reflector reflector(client, options, nullptr);
  reflector.Start();
  REQUIRE(reflector.WaitForSync(5s));
  server.Create(PodsOf("default"), TestPod("default", "b"));
  REQUIRE(PollUntil([&] { return Has(reflector, "default/b"); }, 5s));
  const std::string version = reflector.resource_version();

  server.StallWatches(true);
  REQUIRE(PollUntil([&] { return reflector.stats().stalls >= 1; }, 5s));
  server.Create(PodsOf("default"), TestPod("default", "c"));
  server.StallWatches(false);
  REQUIRE(PollUntil([&] { return Has(reflector, "default/c"); }, 5s));

  CHECK(reflector.stats().lists == 1);
  CHECK(reflector.stats().errors == 0);
  CHECK(reflector.last_error().empty());
  CHECK(PodRequests(server, /*watch=*/false).size() == 1);
  const std::vector<KubeApiServer::Request> watches = PodRequests(server, /*watch=*/true);
  REQUIRE(watches.size() >= 2);
  // Every watch after the stall started from the version the reflector had reached.
  for (size_t i = 1; i < watches.size(); ++i) {
    CHECK_THAT(watches[i].path, Catch::Contains("resourceVersion=" + version));
  }
}

TEST_CASE("The copy is kept while the server is down, and catches up when it is back") {
  KubeApiServer server;
  server.Create(PodsOf("default"), TestPod("default", "a"));
  server.Create(PodsOf("default"), TestPod("default", "b"));
  Client client(AdminConfigOf(server));
  Reflector reflector(client, PodOptions(), nullptr);
  reflector.Start();
  REQUIRE(reflector.WaitForSync(5s));

  server.Stop();
  REQUIRE(PollUntil([&] { return !reflector.last_error().empty(); }, 5s));
  CHECK_THAT(reflector.last_error(), Catch::Contains(server.url()));
  CHECK(reflector.synced());
  CHECK(Keys(reflector) == std::vector<std::string>{"default/a", "default/b"});
  // Failures are retried with backoff, not in a tight loop.
  std::this_thread::sleep_for(500ms);
  CHECK(reflector.stats().errors >= 1);
  CHECK(reflector.stats().errors <= 6);
  CHECK(Keys(reflector) == std::vector<std::string>{"default/a", "default/b"});

  server.Start();
  server.Create(PodsOf("default"), TestPod("default", "c"));
  REQUIRE(PollUntil([&] { return Has(reflector, "default/c"); }, 5s));
  CHECK(Keys(reflector) == std::vector<std::string>{"default/a", "default/b", "default/c"});
  CHECK(reflector.last_error().empty());
}

TEST_CASE("An unauthorized reflector reports it, and recovers when its token is rotated") {
  KubeApiServer server;
  server.Create(PodsOf("default"), TestPod("default", "a"));
  testing::TempDir dir;
  const std::string token = server.IssueToken("default", "agent");
  server.WriteServiceAccountDir(dir.path(), token, "default");
  Config config = AdminConfigOf(server);
  config.token.clear();
  config.token_file = dir.path() + "/token";
  Client client(config);
  Reflector reflector(client, PodOptions(), nullptr);
  server.RevokeToken(token);
  reflector.Start();
  REQUIRE(PollUntil([&] { return !reflector.last_error().empty(); }, 5s));
  CHECK_THAT(reflector.last_error(), Catch::StartsWith("list pods: 401 Unauthorized"));
  CHECK(!reflector.WaitForSync(10ms));

  testing::WriteFile(dir.path() + "/token", server.IssueToken("default", "agent"));
  REQUIRE(reflector.WaitForSync(5s));
  CHECK(Keys(reflector) == std::vector<std::string>{"default/a"});
  CHECK(reflector.last_error().empty());
  CHECK(client.stats().token_reloads == 1);
}

TEST_CASE("Stop returns promptly, in a silent watch or in a backoff") {
  KubeApiServer server;
  Client client(AdminConfigOf(server));
  ReflectorOptions options = PodOptions();
  options.stall_timeout = 30s;
  options.initial_backoff = 10s;
  options.max_backoff = 10s;
  const auto stop_time = [](Reflector& reflector) {
    const auto started = std::chrono::steady_clock::now();
    reflector.Stop();
    return std::chrono::steady_clock::now() - started;
  };

  Reflector silent(client, options, nullptr);
  silent.Start();
  REQUIRE(silent.WaitForSync(5s));
  server.StallWatches(true);
  REQUIRE(PollUntil([&] { return server.OpenWatches() == 1; }, 5s));
  std::this_thread::sleep_for(300ms);
  CHECK(stop_time(silent) < 200ms);
  silent.Stop();  // twice is harmless

  Reflector backing_off(client, options, nullptr);
  server.Stop();
  backing_off.Start();
  REQUIRE(PollUntil([&] { return backing_off.stats().errors >= 1; }, 5s));
  std::this_thread::sleep_for(100ms);
  CHECK(stop_time(backing_off) < 200ms);
  CHECK(!backing_off.synced());
}

}  // namespace
}  // namespace nodemesh::kube
