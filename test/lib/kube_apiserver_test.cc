// Unit tier: the test Kubernetes API server answers as the real one does, over real HTTPS,
// and its switches (stalled watches, expired history, slow reviews, down then up) do what
// they say.
#include "test/lib/kube_apiserver.h"

#include <absl/strings/escaping.h>
#include <absl/strings/str_split.h>
#include <curl/curl.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>

#include "test/lib/certificates.h"
#include "test/lib/files.h"
#include "test/lib/peers.h"
#include "test/lib/process.h"

namespace nodemesh::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

// A watch (or any streamed GET) read on its own thread, line by line as it arrives.
class WatchStream {
 public:
  WatchStream(const KubeApiServer& server, const std::string& path, const std::string& token)
      : url_(server.url() + path),
        ca_(server.ca_file()),
        authorization_("Authorization: Bearer " + token),
        multi_(curl_multi_init()) {
    thread_ = std::thread([this] { Run(); });
  }
  ~WatchStream() {
    stop_ = true;
    curl_multi_wakeup(multi_);
    thread_.join();
    curl_multi_cleanup(multi_);
  }

  // The next event, or nullopt if none came within `timeout` (or the stream ended).
  std::optional<json> Next(std::chrono::milliseconds timeout = 5s) {
    std::unique_lock lock(mutex_);
    changed_.wait_for(lock, timeout, [&] { return !lines_.empty() || done_; });
    if (lines_.empty()) return std::nullopt;
    const std::string line = std::move(lines_.front());
    lines_.pop_front();
    return json::parse(line);
  }
  // The next event that is not a BOOKMARK.
  std::optional<json> NextChange(std::chrono::milliseconds timeout = 5s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left <= 0ms) return std::nullopt;
      std::optional<json> event = Next(left);
      if (!event || event->at("type") != "BOOKMARK") return event;
    }
  }
  // Waits for the stream to end; false if it still runs after `timeout`.
  bool WaitDone(std::chrono::milliseconds timeout = 5s) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, timeout, [&] { return done_; });
  }
  // Bytes received so far, response headers included.
  size_t bytes() {
    std::lock_guard lock(mutex_);
    return bytes_;
  }
  // The HTTP status once the response headers came, waiting up to `timeout`; 0 if none did.
  long status(std::chrono::milliseconds timeout = 5s) {
    std::unique_lock lock(mutex_);
    changed_.wait_for(lock, timeout, [&] { return status_ != 0 || done_; });
    return status_;
  }
  CURLcode result() {
    std::lock_guard lock(mutex_);
    return result_;
  }

 private:
  static size_t Write(char* data, size_t size, size_t count, void* self_pointer) {
    auto* self = static_cast<WatchStream*>(self_pointer);
    std::lock_guard lock(self->mutex_);
    self->bytes_ += size * count;
    self->partial_.append(data, size * count);
    for (size_t end; (end = self->partial_.find('\n')) != std::string::npos;) {
      self->lines_.push_back(self->partial_.substr(0, end));
      self->partial_.erase(0, end + 1);
    }
    self->changed_.notify_all();
    return size * count;
  }

  static size_t Header(char* data, size_t size, size_t count, void* self_pointer) {
    auto* self = static_cast<WatchStream*>(self_pointer);
    const std::string_view line(data, size * count);
    std::lock_guard lock(self->mutex_);
    self->bytes_ += line.size();
    if (line.starts_with("HTTP/") && line.size() > 12) {
      self->status_ = std::stoi(std::string(line.substr(9, 3)));
      self->changed_.notify_all();
    }
    return line.size();
  }

  void Run() {
    CURL* curl = curl_easy_init();
    curl_slist* headers = curl_slist_append(nullptr, authorization_.c_str());
    curl_easy_setopt(curl, CURLOPT_URL, url_.c_str());
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_CAINFO, ca_.c_str());
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, Write);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, this);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, Header);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, this);
    curl_multi_add_handle(multi_, curl);
    CURLcode result = CURLE_OK;
    for (int running = 1; running && !stop_;) {
      curl_multi_perform(multi_, &running);
      int queued = 0;
      while (CURLMsg* message = curl_multi_info_read(multi_, &queued)) {
        if (message->msg == CURLMSG_DONE) result = message->data.result;
      }
      if (running) curl_multi_poll(multi_, nullptr, 0, 100, nullptr);
    }
    curl_multi_remove_handle(multi_, curl);
    curl_easy_cleanup(curl);
    curl_slist_free_all(headers);
    std::lock_guard lock(mutex_);
    result_ = result;
    done_ = true;
    changed_.notify_all();
  }

  const std::string url_, ca_, authorization_;
  CURLM* const multi_;
  std::atomic<bool> stop_{false};
  std::mutex mutex_;
  std::condition_variable changed_;
  std::string partial_;
  std::deque<std::string> lines_;
  size_t bytes_ = 0;
  bool done_ = false;
  long status_ = 0;
  CURLcode result_ = CURLE_OK;
  std::thread thread_;  // last: it uses everything above
};

json Pod(const std::string& name, json labels, const std::string& node = "node-1") {
  return {{"apiVersion", "v1"},
          {"kind", "Pod"},
          {"metadata", {{"name", name}, {"labels", std::move(labels)}}},
          {"spec", {{"nodeName", node}, {"containers", {{{"name", "app"}, {"image", "app:1"}}}}}}};
}

std::string RvOf(const json& object) { return object.at("metadata").at("resourceVersion"); }

std::vector<std::string> NamesOf(const json& list) {
  std::vector<std::string> names;
  for (const json& item : list.at("items")) names.push_back(item.at("metadata").at("name"));
  return names;
}

// A list through the API as the admin, with the query given.
json List(KubeApiServer& server, const std::string& path_and_query) {
  const KubeApiServer::Response response = server.Call("GET", path_and_query, server.admin_token());
  INFO(path_and_query << ": " << response.body);
  REQUIRE(response.status == 200);
  return response.json();
}

// Waits until the server has `count` watch streams open: a watch is only guaranteed to see
// changes made after that.
void WaitForWatches(KubeApiServer& server, int count) {
  REQUIRE(PollUntil([&] { return server.OpenWatches() == count; }, 5s));
}

// The CURLcode of a plain GET of /version verified with `ca_file`, to `host`.
CURLcode TlsGet(const KubeApiServer& server, const std::string& ca_file,
                const std::string& host = "127.0.0.1") {
  CURL* curl = curl_easy_init();
  const std::string url = "https://" + host + ":" + std::to_string(server.port()) + "/version";
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_CAINFO, ca_file.c_str());
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 10000L);
  curl_easy_setopt(
      curl, CURLOPT_WRITEFUNCTION,
      +[](char*, size_t size, size_t count, void*) { return size * count; });
  const CURLcode result = curl_easy_perform(curl);
  curl_easy_cleanup(curl);
  return result;
}

TEST_CASE("the test API server speaks TLS with its own CA only, and checks bearer tokens") {
  KubeApiServer server;
  CHECK(server.url() == "https://127.0.0.1:" + std::to_string(server.port()));
  CHECK(TlsGet(server, server.ca_file()) == CURLE_OK);
  CHECK(TlsGet(server, server.ca_file(), "localhost") == CURLE_OK);
  CHECK(TlsGet(server, server.other_ca_file()) == CURLE_PEER_FAILED_VERIFICATION);

  const json unauthorized = {
      {"kind", "Status"},    {"apiVersion", "v1"},        {"metadata", json::object()},
      {"status", "Failure"}, {"message", "Unauthorized"}, {"reason", "Unauthorized"},
      {"code", 401}};
  for (const std::string token : {"", "wrong"}) {
    const KubeApiServer::Response response = server.Call("GET", "/api/v1/pods", token);
    CHECK(response.status == 401);
    CHECK(response.json() == unauthorized);
  }

  const std::string token = server.IssueToken("nodemesh", "nodemesh-agent");
  CHECK(server.Call("GET", "/api/v1/pods", token).status == 200);
  CHECK(server.Call("GET", "/version", token).json().at("gitVersion") == "v1.29.0");
  server.RevokeToken(token);
  CHECK(server.Call("GET", "/api/v1/pods", token).status == 401);
  // Control calls take the admin token only.
  CHECK(server.Call("GET", "/_test/requests", server.IssueToken("a", "b")).status == 403);

  // Logged: the two TLS probes that got through (no token), then the calls above.
  const std::vector<KubeApiServer::Request> requests = server.Requests();
  REQUIRE(requests.size() == 7);
  CHECK(requests[0].path == "/version");
  CHECK(requests[0].status == 401);
  CHECK(requests[2].user.empty());
  CHECK(requests[2].status == 401);
  CHECK(requests[4].method == "GET");
  CHECK(requests[4].path == "/api/v1/pods");
  CHECK(requests[4].user == "system:serviceaccount:nodemesh:nodemesh-agent");
  CHECK(requests[4].status == 200);
  CHECK_FALSE(requests[4].watch);
}

TEST_CASE("the test API server creates, gets, lists with selectors, patches, updates and deletes") {
  KubeApiServer server;
  const std::string pods = "/api/v1/namespaces/emojivoto/pods";
  const json web = server.Create(pods, Pod("web-1", {{"app", "web"}, {"tier", "front"}}));
  CHECK(web.at("kind") == "Pod");
  CHECK(web.at("metadata").at("namespace") == "emojivoto");
  CHECK(web.at("metadata").at("uid").get<std::string>().size() == 36);
  CHECK(web.at("metadata").at("generation") == 1);
  CHECK(web.at("metadata").contains("creationTimestamp"));
  server.Create(pods, Pod("voting-1", {{"app", "voting"}}, "node-2"));
  server.Create("/api/v1/namespaces/other/pods", Pod("web-1", {{"app", "web"}}, "node-2"));
  server.Create("/api/v1/namespaces", {{"metadata", {{"name", "emojivoto"}}}});
  server.Create("/apis/apps/v1/namespaces/emojivoto/deployments",
                {{"metadata", {{"name", "web"}}}, {"spec", {{"replicas", 1}}}});

  const KubeApiServer::Response duplicate =
      server.Call("POST", pods, server.admin_token(), Pod("web-1", json::object()).dump());
  CHECK(duplicate.status == 409);
  CHECK(duplicate.json().at("reason") == "AlreadyExists");
  CHECK(duplicate.json().at("message") == R"(pods "web-1" already exists)");

  CHECK(server.Get(pods + "/web-1") == web);
  CHECK(server.Get("/api/v1/namespaces/emojivoto").at("status").at("phase") == "Active");
  CHECK(server.Get("/apis/apps/v1/namespaces/emojivoto/deployments/web").at("apiVersion") ==
        "apps/v1");

  const json all = List(server, "/api/v1/pods");
  CHECK(all.at("kind") == "PodList");
  CHECK(all.at("metadata").at("resourceVersion") == "6");
  CHECK(NamesOf(all) == std::vector<std::string>{"voting-1", "web-1", "web-1"});
  CHECK_FALSE(all.at("items")[0].contains("kind"));  // as the real API lists them
  CHECK(NamesOf(List(server, pods)) == std::vector<std::string>{"voting-1", "web-1"});
  const auto names = [&](const std::string& query) {
    return NamesOf(List(server, pods + "?" + query));
  };
  using Names = std::vector<std::string>;
  CHECK(names("labelSelector=app%3Dweb") == Names{"web-1"});
  CHECK(names("labelSelector=app%3D%3Dvoting") == Names{"voting-1"});
  CHECK(names("labelSelector=app!%3Dweb") == Names{"voting-1"});
  CHECK(names("labelSelector=app%20in%20(web,voting)") == Names{"voting-1", "web-1"});
  CHECK(names("labelSelector=app%20notin%20(web)") == Names{"voting-1"});
  CHECK(names("labelSelector=tier") == Names{"web-1"});
  CHECK(names("labelSelector=!tier") == Names{"voting-1"});
  CHECK(names("labelSelector=app%3Dweb,!tier").empty());
  CHECK(names("fieldSelector=spec.nodeName%3Dnode-2") == Names{"voting-1"});
  CHECK(names("fieldSelector=metadata.name%3Dweb-1,status.phase%3DPending") == Names{"web-1"});
  CHECK(NamesOf(List(server, "/api/v1/pods?fieldSelector=metadata.namespace%3Dother")) ==
        Names{"web-1"});
  const KubeApiServer::Response bad_field =
      server.Call("GET", pods + "?fieldSelector=spec.bogus%3Dx", server.admin_token());
  CHECK(bad_field.status == 400);
  CHECK(bad_field.json().at("reason") == "BadRequest");

  // Merge patch, strategic merge patch (applied as a merge patch), JSON patch.
  const json patched =
      server.MergePatch(pods + "/web-1", {{"metadata", {{"labels", {{"tier", nullptr}}}}}});
  CHECK(patched.at("metadata").at("labels") == json{{"app", "web"}});
  CHECK(std::stoi(RvOf(patched)) > std::stoi(RvOf(web)));
  CHECK(patched.at("metadata").at("uid") == web.at("metadata").at("uid"));
  CHECK(server
            .Call("PATCH", pods + "/web-1", server.admin_token(),
                  R"({"metadata":{"annotations":{"a":"1"}}})",
                  "application/strategic-merge-patch+json")
            .status == 200);
  const KubeApiServer::Response json_patched =
      server.Call("PATCH", pods + "/web-1", server.admin_token(),
                  R"([{"op":"test","path":"/metadata/annotations/a","value":"1"},
          {"op":"replace","path":"/metadata/labels/app","value":"web2"},
          {"op":"add","path":"/metadata/labels/new","value":"x"},
          {"op":"remove","path":"/metadata/annotations"}])",
                  "application/json-patch+json");
  REQUIRE(json_patched.status == 200);
  CHECK(json_patched.json().at("metadata").at("labels") == json{{"app", "web2"}, {"new", "x"}});
  CHECK_FALSE(json_patched.json().at("metadata").contains("annotations"));
  CHECK(server
            .Call("PATCH", pods + "/web-1", server.admin_token(),
                  R"([{"op":"test","path":"/metadata/labels/app","value":"no"}])",
                  "application/json-patch+json")
            .status == 422);
  CHECK(server.Call("PATCH", pods + "/web-1", server.admin_token(), "{}", "application/json")
            .status == 415);

  // PUT: a stale resourceVersion is a conflict; the current one replaces the object.
  json replacement = Pod("web-1", {{"app", "web3"}});
  replacement["metadata"]["resourceVersion"] = RvOf(web);
  const KubeApiServer::Response stale =
      server.Call("PUT", pods + "/web-1", server.admin_token(), replacement.dump());
  CHECK(stale.status == 409);
  CHECK(stale.json().at("reason") == "Conflict");
  CHECK(stale.json().at("message") ==
        R"(Operation cannot be fulfilled on pods "web-1": the object has been modified; please )"
        "apply your changes to the latest version and try again");
  replacement["metadata"]["resourceVersion"] = RvOf(json_patched.json());
  replacement["spec"]["nodeName"] = "node-3";
  const KubeApiServer::Response replaced =
      server.Call("PUT", pods + "/web-1", server.admin_token(), replacement.dump());
  REQUIRE(replaced.status == 200);
  CHECK(replaced.json().at("metadata").at("labels") == json{{"app", "web3"}});
  CHECK(replaced.json().at("metadata").at("generation") == 2);  // the spec changed

  server.Delete(pods + "/web-1");
  const KubeApiServer::Response gone = server.Call("GET", pods + "/web-1", server.admin_token());
  CHECK(gone.status == 404);
  CHECK(gone.json() == json{{"kind", "Status"},
                            {"apiVersion", "v1"},
                            {"metadata", json::object()},
                            {"status", "Failure"},
                            {"message", R"(pods "web-1" not found)"},
                            {"reason", "NotFound"},
                            {"details", {{"name", "web-1"}, {"kind", "pods"}}},
                            {"code", 404}});
  CHECK(server
            .Call("DELETE", "/apis/apps/v1/namespaces/emojivoto/deployments/nope",
                  server.admin_token())
            .json()
            .at("message") == R"(deployments.apps "nope" not found)");
  CHECK(NamesOf(List(server, pods)) == Names{"voting-1"});
}

TEST_CASE("the test API server's watches replay, follow selectors and send bookmarks") {
  KubeApiServer server({.bookmark_interval = 200ms});
  const std::string pods = "/api/v1/namespaces/emojivoto/pods";
  server.Create(pods, Pod("old-1", {{"app", "web"}}));
  const std::string rv = List(server, pods).at("metadata").at("resourceVersion");

  WatchStream all(server, pods + "?watch=1&allowWatchBookmarks=true&resourceVersion=" + rv,
                  server.admin_token());
  WatchStream web(server, pods + "?watch=true&labelSelector=app%3Dweb&resourceVersion=" + rv,
                  server.admin_token());
  WaitForWatches(server, 2);
  // Without a resourceVersion: the current objects first, as synthetic ADDED events.
  WatchStream from_now(server, pods + "?watch=1&timeoutSeconds=1", server.admin_token());
  const std::optional<json> current = from_now.Next();
  REQUIRE(current);
  CHECK(current->at("type") == "ADDED");
  CHECK(current->at("object").at("metadata").at("name") == "old-1");
  CHECK(from_now.status() == 200);

  const json created = server.Create(pods, Pod("web-1", {{"app", "web"}}));
  server.MergePatch(pods + "/web-1", {{"metadata", {{"labels", {{"app", "other"}}}}}});
  server.MergePatch(pods + "/web-1", {{"metadata", {{"labels", {{"app", "web"}}}}}});
  server.Delete(pods + "/web-1");

  std::vector<std::string> types;
  for (int i = 0; i < 4; ++i) {
    const std::optional<json> event = all.NextChange();
    REQUIRE(event);
    types.push_back(event->at("type"));
    CHECK(event->at("object").at("kind") == "Pod");
    CHECK(event->at("object").at("metadata").at("name") == "web-1");
  }
  CHECK(types == std::vector<std::string>{"ADDED", "MODIFIED", "MODIFIED", "DELETED"});
  // An object that stops matching the selector is DELETED for the watch; when it matches
  // again it is ADDED.
  types.clear();
  for (int i = 0; i < 4; ++i) {
    const std::optional<json> event = web.Next();
    REQUIRE(event);
    types.push_back(event->at("type"));
  }
  CHECK(types == std::vector<std::string>{"ADDED", "DELETED", "ADDED", "DELETED"});

  // Bookmarks carry the kind and the latest resourceVersion, nothing else.
  std::optional<json> bookmark;
  REQUIRE(PollUntil([&] { return (bookmark = all.Next(1s)) && bookmark->at("type") == "BOOKMARK"; },
                    3s));
  CHECK(bookmark->at("object") ==
        json{{"kind", "Pod"},
             {"apiVersion", "v1"},
             {"metadata", {{"resourceVersion", std::to_string(std::stoi(RvOf(created)) + 3)}}}});
  CHECK_FALSE(web.Next(500ms));  // it did not ask for bookmarks

  // A watch resumes from any version the history still holds.
  WatchStream resumed(server, pods + "?watch=1&timeoutSeconds=1&resourceVersion=" + RvOf(created),
                      server.admin_token());
  const std::optional<json> first = resumed.Next();
  REQUIRE(first);
  CHECK(first->at("type") == "MODIFIED");

  CHECK(from_now.WaitDone());  // timeoutSeconds=1 ends the stream
  CHECK(from_now.result() == CURLE_OK);

  const std::vector<KubeApiServer::Request> requests = server.Requests();
  CHECK(std::count_if(requests.begin(), requests.end(),
                      [](const KubeApiServer::Request& r) { return r.watch; }) == 4);
}

TEST_CASE(
    "a watch from an expired resourceVersion gets 410 Gone, as a Status or as an ERROR event") {
  KubeApiServer server;
  const std::string pods = "/api/v1/namespaces/default/pods";
  const std::string old_rv = RvOf(server.Create(pods, Pod("a", json::object())));

  server.ExpireHistory(KubeApiServer::GoneMode::kHttpStatus);
  const KubeApiServer::Response gone =
      server.Call("GET", pods + "?watch=1&resourceVersion=" + old_rv, server.admin_token());
  CHECK(gone.status == 410);
  CHECK(gone.json().at("kind") == "Status");
  CHECK(gone.json().at("reason") == "Expired");
  CHECK(gone.json().at("code") == 410);
  const std::string expected_message =
      "too old resource version: " + old_rv + " (" + std::to_string(std::stoi(old_rv) + 1) + ")";
  CHECK(gone.json().at("message") == expected_message);

  // A new list gives a version that can be watched from.
  const std::string listed_rv = List(server, pods).at("metadata").at("resourceVersion");
  CHECK(std::stoi(listed_rv) > std::stoi(old_rv));
  CHECK(WatchStream(server, pods + "?watch=1&resourceVersion=" + listed_rv, server.admin_token())
            .status() == 200);

  server.ExpireHistory(KubeApiServer::GoneMode::kErrorEvent);
  WatchStream stream(server, pods + "?watch=1&resourceVersion=" + listed_rv, server.admin_token());
  const std::optional<json> error = stream.Next();
  REQUIRE(error);
  CHECK(error->at("type") == "ERROR");
  CHECK(error->at("object").at("kind") == "Status");
  CHECK(error->at("object").at("code") == 410);
  CHECK(error->at("object").at("reason") == "Expired");
  CHECK(stream.WaitDone());
  CHECK(stream.status() == 200);
  CHECK(stream.result() == CURLE_OK);
  CHECK_FALSE(stream.Next(0ms));
}

TEST_CASE("stalled watches send nothing, then carry on, and closing ends them") {
  KubeApiServer server({.bookmark_interval = 100ms});
  const std::string pods = "/api/v1/namespaces/default/pods";
  const std::string rv = List(server, pods).at("metadata").at("resourceVersion");
  const std::string query = pods + "?watch=1&allowWatchBookmarks=true&resourceVersion=" + rv;
  WatchStream open_before(server, query, server.admin_token());
  REQUIRE(open_before.Next());  // a bookmark: the stream is live

  server.StallWatches(true);
  WatchStream opened_while_stalled(server, query, server.admin_token());
  WaitForWatches(server, 2);
  std::this_thread::sleep_for(300ms);  // anything already on its way has arrived
  const size_t bytes_before = open_before.bytes();
  server.Create(pods, Pod("a", json::object()));
  std::this_thread::sleep_for(2200ms);
  CHECK(open_before.bytes() == bytes_before);
  CHECK(opened_while_stalled.bytes() == 0);
  CHECK(server.OpenWatches() == 2);

  server.StallWatches(false);
  for (WatchStream* stream : {&open_before, &opened_while_stalled}) {
    const std::optional<json> event = stream->NextChange();
    REQUIRE(event);
    CHECK(event->at("type") == "ADDED");
  }

  server.CloseWatches();
  CHECK(open_before.WaitDone());
  CHECK(opened_while_stalled.WaitDone());
  CHECK(open_before.result() == CURLE_OK);  // a proper end of the stream
  CHECK(PollUntil([&] { return server.OpenWatches() == 0; }, 5s));
}

TEST_CASE("the test API server down then up keeps objects, resourceVersion and tokens") {
  KubeApiServer server;
  const std::string pods = "/api/v1/namespaces/default/pods";
  const json pod = server.Create(pods, Pod("a", {{"app", "a"}}));
  const std::string token = server.IssueToken("default", "reader");
  const std::string rv = List(server, pods).at("metadata").at("resourceVersion");
  const int port = server.port();

  server.Stop();
  CHECK_FALSE(server.running());
  CHECK_THROWS_AS(server.Call("GET", pods, token), std::runtime_error);  // connection refused

  server.Start();
  CHECK(server.running());
  CHECK(server.port() == port);
  CHECK(server.Get(pods + "/a") == pod);
  CHECK(List(server, pods).at("metadata").at("resourceVersion") == rv);
  CHECK(server.Call("GET", pods, token).status == 200);

  // Watching on from the last version works; from an older one it is too old.
  CHECK(WatchStream(server, pods + "?watch=1&resourceVersion=" + rv, token).status() == 200);
  CHECK(server
            .Call("GET", pods + "?watch=1&resourceVersion=" + std::to_string(std::stoi(rv) - 1),
                  token)
            .status == 410);
  const json added = server.Create(pods, Pod("b", json::object()));
  CHECK(std::stoi(RvOf(added)) == std::stoi(rv) + 1);

  // The requests answered before the restart are still listed.
  const std::vector<KubeApiServer::Request> requests = server.Requests();
  REQUIRE(requests.size() == 8);
  CHECK(requests[0].method == "POST");
}

TEST_CASE("RBAC allows by rule and denies with the real 403 message") {
  TempDir dir;
  const json rbac = json::parse(R"([
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
     "metadata": {"name": "nodemesh-agent"},
     "rules": [{"apiGroups": [""], "resources": ["pods", "namespaces"], "verbs": ["get", "list", "watch"]},
               {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"],
                "resourceNames": ["web"]}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
     "metadata": {"name": "nodemesh-agent"},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "nodemesh-agent"},
     "subjects": [{"kind": "ServiceAccount", "name": "nodemesh-agent", "namespace": "nodemesh"}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
     "metadata": {"name": "services", "namespace": "team"},
     "rules": [{"apiGroups": [""], "resources": ["services"], "verbs": ["*"]}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
     "metadata": {"name": "services", "namespace": "team"},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "services"},
     "subjects": [{"kind": "Group", "name": "system:serviceaccounts:nodemesh"}]}
  ])");
  KubeApiServer server({.rbac_file = dir.Write("rbac.json", rbac.dump())});
  const std::string agent = server.IssueToken("nodemesh", "nodemesh-agent");
  const std::string stranger = server.IssueToken("default", "stranger");
  const std::string user = "system:serviceaccount:nodemesh:nodemesh-agent";

  CHECK(server.Call("GET", "/api/v1/pods", agent).status == 200);
  CHECK(WatchStream(server, "/api/v1/pods?watch=1", agent).status() == 200);
  CHECK(server.Call("GET", "/api/v1/namespaces/nodemesh", agent).status == 404);  // allowed
  CHECK(server.Call("GET", "/apis/apps/v1/namespaces/x/deployments/web", agent).status == 404);
  CHECK(server.Call("GET", "/api/v1/namespaces/team/services", agent).status == 200);
  CHECK(server.Call("GET", "/api", agent).status == 200);  // discovery is open to all

  const auto denied = [&](const std::string& path, const std::string& token) {
    const KubeApiServer::Response response = server.Call("GET", path, token);
    INFO(path << ": " << response.body);
    CHECK(response.status == 403);
    CHECK(response.json().at("reason") == "Forbidden");
    CHECK(response.json().at("code") == 403);
    return response.json().at("message").get<std::string>();
  };
  CHECK(denied("/api/v1/pods", stranger) ==
        R"(pods is forbidden: User "system:serviceaccount:default:stranger" cannot list )"
        R"(resource "pods" in API group "" at the cluster scope)");
  CHECK(denied("/api/v1/services", agent) ==
        R"(services is forbidden: User ")" + user +
            R"(" cannot list resource "services" in API group "" at the cluster scope)");
  CHECK(denied("/api/v1/namespaces/other/services/db", agent) ==
        R"(services "db" is forbidden: User ")" + user +
            R"(" cannot get resource "services" in API group "" in the namespace "other")");
  CHECK(denied("/apis/apps/v1/namespaces/x/deployments/db", agent) ==
        R"(deployments.apps "db" is forbidden: User ")" + user +
            R"(" cannot get resource "deployments" in API group "apps" in the namespace "x")");
  CHECK(denied("/api/v1/namespaces/x/pods/p/status", agent) ==
        R"(pods "p" is forbidden: User ")" + user +
            R"(" cannot get resource "pods/status" in API group "" in the namespace "x")");

  for (const auto& [rule, uses] : server.RbacRuleUses()) {
    INFO(rule);
    CHECK(uses > 0);
  }
  CHECK(server.RbacRuleUses().size() == 3);
  // The request log says which rule allowed each request.
  std::set<std::string> used;
  for (const KubeApiServer::Request& request : server.Requests()) {
    if (request.user == user && request.status != 403) used.insert(request.rule);
  }
  CHECK(used == std::set<std::string>{"ClusterRole/nodemesh-agent#0",
                                      "ClusterRole/nodemesh-agent#1", "Role/team/services#0",
                                      "system:discovery"});
}

TEST_CASE("the in-cluster files and the kubeconfig lead a real client to the test API server") {
  KubeApiServer server;
  TempDir dir;
  const std::string token = server.IssueToken("nodemesh", "nodemesh-agent");
  server.WriteServiceAccountDir(dir.path() + "/sa", token, "nodemesh");
  CHECK(ReadFile(dir.path() + "/sa/token") == token);
  CHECK(ReadFile(dir.path() + "/sa/namespace") == "nodemesh");
  CHECK(ReadFile(dir.path() + "/sa/ca.crt") == ReadFile(server.ca_file()));

  server.WriteKubeconfig(dir.path() + "/config", token, "kind-test");
  const std::string config = ReadFile(dir.path() + "/config");
  CHECK(config.find("current-context: \"kind-test\"\n") != std::string::npos);
  CHECK(config.find("server: \"" + server.url() + "\"\n") != std::string::npos);
  CHECK(config.find("token: \"" + token + "\"\n") != std::string::npos);

  // The files work for a real client: curl with the CA and token read back from them.
  const CommandResult curl = RunCommand(
      {"curl", "-sS", "--fail", "--cacert", dir.path() + "/sa/ca.crt", "-H",
       "Authorization: Bearer " + ReadFile(dir.path() + "/sa/token"),
       server.url() + "/api/v1/namespaces/" + ReadFile(dir.path() + "/sa/namespace") + "/pods"});
  INFO(curl.output);
  CHECK(curl.exit_code == 0);
  CHECK(json::parse(curl.output).at("kind") == "PodList");
}

// The claims of a JWT, its signature unchecked.
json ClaimsOf(const std::string& token) {
  const std::vector<std::string> parts = absl::StrSplit(token, '.');
  REQUIRE(parts.size() == 3);
  std::string payload;
  REQUIRE(absl::WebSafeBase64Unescape(parts[1], &payload));
  return json::parse(payload);
}

int64_t UnixNow() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// The pod agent-x on node-a, and a projected token of it for the aggregator, expiring after
// `expiration`, with the node claims of Kubernetes 1.30+. Returns the pod.
json ProjectAgentX(KubeApiServer& server, std::chrono::seconds expiration, std::string* token) {
  const json pod = server.Create("/api/v1/namespaces/nodemesh/pods",
                                 Pod("agent-x", {{"app", "agent"}}, "node-a"));
  *token = server.IssueToken("nodemesh", "nodemesh-agent",
                             {.audiences = {"nodemesh.io/aggregator"},
                              .expiration = expiration,
                              .pod_name = "agent-x",
                              .node_name = "node-a",
                              .node_uid = "node-a-uid"});
  return pod;
}

TEST_CASE("tokens have audiences, expiry and pod and node claims, as projected tokens do") {
  KubeApiServer server;
  const std::string pods = "/api/v1/namespaces/nodemesh/pods";
  std::string projected;
  const json pod = ProjectAgentX(server, std::chrono::seconds(3600), &projected);
  const std::string pod_uid = pod.at("metadata").at("uid");
  const json claims = ClaimsOf(projected);
  CHECK(claims.at("aud") == json{"nodemesh.io/aggregator"});
  CHECK(claims.at("sub") == "system:serviceaccount:nodemesh:nodemesh-agent");
  CHECK(std::abs(claims.at("exp").get<int64_t>() - (UnixNow() + 3600)) <= 5);
  CHECK(claims.at("iat").get<int64_t>() <= UnixNow());
  const json& kubernetes = claims.at("kubernetes.io");
  CHECK(kubernetes.at("namespace") == "nodemesh");
  CHECK(kubernetes.at("pod") == json{{"name", "agent-x"}, {"uid", pod_uid}});
  CHECK(kubernetes.at("node") == json{{"name", "node-a"}, {"uid", "node-a-uid"}});
  CHECK(kubernetes.at("serviceaccount").at("name") == "nodemesh-agent");
  // The API server takes only tokens meant for it.
  CHECK(server.Call("GET", "/api/v1/pods", projected).status == 401);
  const std::string for_api = server.IssueToken("nodemesh", "nodemesh-agent");
  CHECK(ClaimsOf(for_api).at("aud") == json{std::string(kApiAudience)});
  CHECK_FALSE(ClaimsOf(for_api).contains("exp"));
  CHECK(server.Call("GET", "/api/v1/pods", for_api).status == 200);

  // An expired token is refused.
  const std::string brief =
      server.IssueToken("nodemesh", "nodemesh-agent", {.expiration = std::chrono::seconds(1)});
  CHECK(server.Call("GET", "/api/v1/pods", brief).status == 200);
  CHECK(PollUntil([&] { return server.Call("GET", "/api/v1/pods", brief).status == 401; }, 5s));

  // A pod-bound token lives as long as its pod, not a pod of the same name made after it.
  const std::string bound =
      server.IssueToken("nodemesh", "nodemesh-agent", {.pod_name = "agent-x"});
  CHECK(ClaimsOf(bound).at("kubernetes.io").at("pod").at("uid") == pod_uid);
  CHECK(server.Call("GET", "/api/v1/pods", bound).status == 200);
  server.Delete(pods + "/agent-x");
  CHECK(server.Call("GET", "/api/v1/pods", bound).status == 401);
  server.Create(pods, Pod("agent-x", {{"app", "agent"}}, "node-a"));
  CHECK(server.Call("GET", "/api/v1/pods", bound).status == 401);

  // Bad requests for tokens say what is wrong.
  CHECK_THROWS_WITH(server.IssueToken("nodemesh", "nodemesh-agent", {.pod_name = "none"}),
                    Catch::Contains("not found in namespace nodemesh"));

  // A user's token carries its groups and expires too.
  const std::string user = server.IssueUserToken("alice", {"dev"}, {}, std::chrono::seconds(1));
  CHECK(server.Call("GET", "/api/v1/pods", user).status == 200);
  CHECK(PollUntil([&] { return server.Call("GET", "/api/v1/pods", user).status == 401; }, 5s));
}

// The answer to a TokenReview (or its refusal) made with `reviewer`'s token.
KubeApiServer::Response ReviewToken(KubeApiServer& server, const std::string& reviewer,
                                    const std::string& token, const json& audiences) {
  json review = {{"apiVersion", "authentication.k8s.io/v1"},
                 {"kind", "TokenReview"},
                 {"spec", {{"token", token}}}};
  if (!audiences.is_null()) review["spec"]["audiences"] = audiences;
  return server.Call("POST", "/apis/authentication.k8s.io/v1/tokenreviews", reviewer,
                     review.dump());
}

// RBAC of an extension API server's own account (bound to the bootstrap roles, as the chart
// binds the aggregator's) and of users of its API.
json ReviewRbac() {
  return json::parse(R"([
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
     "metadata": {"name": "aggregator:system:auth-delegator"},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:auth-delegator"},
     "subjects": [{"kind": "ServiceAccount", "name": "aggregator", "namespace": "nodemesh"}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
     "metadata": {"name": "aggregator-auth-reader", "namespace": "kube-system"},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "extension-apiserver-authentication-reader"},
     "subjects": [{"kind": "ServiceAccount", "name": "aggregator", "namespace": "nodemesh"}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
     "metadata": {"name": "nodemesh-tap"},
     "rules": [{"apiGroups": ["nodemesh.io"], "resources": ["taps"], "verbs": ["watch"]}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
     "metadata": {"name": "alice-tap", "namespace": "a"},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "nodemesh-tap"},
     "subjects": [{"kind": "User", "name": "alice"}, {"kind": "Group", "name": "dev"}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
     "metadata": {"name": "node-admin"},
     "rules": [{"apiGroups": ["nodemesh.io"], "resources": ["nodes/admin"], "verbs": ["get"]},
               {"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
     "metadata": {"name": "ops-node-admin"},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "node-admin"},
     "subjects": [{"kind": "Group", "name": "ops"}]}
  ])");
}

TEST_CASE("TokenReview checks audiences, expiry and the pod, and gives the pod and node extras") {
  TempDir dir;
  KubeApiServer server({.rbac_file = dir.Write("rbac.json", ReviewRbac().dump())});
  const std::string reviewer = server.IssueToken("nodemesh", "aggregator");
  std::string token;
  const json pod = ProjectAgentX(server, std::chrono::seconds(600), &token);
  const std::string pod_uid = pod.at("metadata").at("uid");
  const json audience = {"nodemesh.io/aggregator"};

  const KubeApiServer::Response accepted = ReviewToken(server, reviewer, token, audience);
  INFO(accepted.body);
  REQUIRE(accepted.status == 201);
  const json review = accepted.json();
  CHECK(review.at("kind") == "TokenReview");
  CHECK(review.at("apiVersion") == "authentication.k8s.io/v1");
  CHECK(review.at("spec").at("token") == token);
  const json& status = review.at("status");
  CHECK(status.at("authenticated") == true);
  CHECK(status.at("audiences") == audience);
  const json& user = status.at("user");
  CHECK(user.at("username") == "system:serviceaccount:nodemesh:nodemesh-agent");
  CHECK(user.at("uid").get<std::string>().size() == 36);
  CHECK(user.at("groups") ==
        json{"system:serviceaccounts", "system:serviceaccounts:nodemesh", "system:authenticated"});
  const json& extra = user.at("extra");
  CHECK(extra.at("authentication.kubernetes.io/pod-name") == json{"agent-x"});
  CHECK(extra.at("authentication.kubernetes.io/pod-uid") == json{pod_uid});
  CHECK(extra.at("authentication.kubernetes.io/node-name") == json{"node-a"});
  CHECK(extra.at("authentication.kubernetes.io/node-uid") == json{"node-a-uid"});
  CHECK(extra.at("authentication.kubernetes.io/credential-id") ==
        json{"JTI=" + ClaimsOf(token).at("jti").get<std::string>()});

  // As before Kubernetes 1.30: the pod, no node.
  const std::string without_node =
      server.IssueToken("nodemesh", "nodemesh-agent",
                        {.audiences = {"nodemesh.io/aggregator", "other"}, .pod_name = "agent-x"});
  const json older = ReviewToken(server, reviewer, without_node, audience).json().at("status");
  CHECK(older.at("authenticated") == true);
  CHECK(older.at("audiences") == audience);  // what both have
  CHECK(older.at("user").at("extra").contains("authentication.kubernetes.io/pod-name"));
  CHECK_FALSE(older.at("user").at("extra").contains("authentication.kubernetes.io/node-name"));

  // Refusals have no "authenticated", and an error.
  const auto refusal = [&](const std::string& refused, const json& audiences) {
    const KubeApiServer::Response response = ReviewToken(server, reviewer, refused, audiences);
    INFO(response.body);
    CHECK(response.status == 201);
    const json refused_status = response.json().at("status");
    CHECK_FALSE(refused_status.contains("authenticated"));
    return refused_status.value("error", "");
  };
  CHECK_THAT(refusal(token, {"another-audience"}), Catch::Contains("audiences"));
  CHECK_THAT(refusal(token, nullptr), Catch::Contains(std::string(kApiAudience)));
  CHECK(refusal("not-a-token", audience) == "invalid bearer token");
  const std::string brief = server.IssueToken(
      "nodemesh", "nodemesh-agent",
      {.audiences = {"nodemesh.io/aggregator"}, .expiration = std::chrono::seconds(1)});
  CHECK(PollUntil(
      [&] {
        return !ReviewToken(server, reviewer, brief, audience)
                    .json()
                    .at("status")
                    .contains("authenticated");
      },
      5s));
  CHECK_THAT(refusal(brief, audience), Catch::Contains("expired"));
  server.RevokeToken(without_node);
  CHECK(refusal(without_node, audience) == "invalid bearer token");
  // The pod is gone: its tokens are no longer valid.
  server.Delete("/api/v1/namespaces/nodemesh/pods/agent-x");
  CHECK_THAT(refusal(token, audience),
             Catch::Contains("nodemesh/agent-x") && Catch::Contains("no longer exists"));

  // Without audiences in the review, the API server's own are asked for.
  const std::string plain = server.IssueToken("nodemesh", "nodemesh-agent");
  CHECK(ReviewToken(server, reviewer, plain, nullptr).json().at("status").at("audiences") ==
        json{std::string(kApiAudience)});
  // Reviewing takes create tokenreviews (system:auth-delegator); a review needs a token.
  CHECK(ReviewToken(server, server.IssueToken("nodemesh", "stranger"), plain, nullptr).status ==
        403);
  CHECK(ReviewToken(server, reviewer, "", nullptr).status == 400);

  // The request log says what each review decided.
  std::vector<json> reviews;
  for (const KubeApiServer::Request& request : server.Requests()) {
    if (!request.review.is_null()) reviews.push_back(request.review);
  }
  REQUIRE(reviews.size() >= 2);
  CHECK(reviews[0] == json{{"audiences", audience},
                           {"authenticated", true},
                           {"user", "system:serviceaccount:nodemesh:nodemesh-agent"}});
  CHECK(std::any_of(reviews.begin(), reviews.end(), [](const json& entry) {
    return entry.at("authenticated") == false && entry.at("error") == "invalid bearer token";
  }));
  CHECK(server.RbacRuleUses().at("ClusterRole/system:auth-delegator#0") > 0);
}

// The answer to a SubjectAccessReview with `spec`, made with `reviewer`'s token.
KubeApiServer::Response ReviewAccess(KubeApiServer& server, const std::string& reviewer,
                                     const json& spec) {
  const json review = {
      {"apiVersion", "authorization.k8s.io/v1"}, {"kind", "SubjectAccessReview"}, {"spec", spec}};
  return server.Call("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", reviewer,
                     review.dump());
}

TEST_CASE("SubjectAccessReview is decided by RBAC: resources and paths, namespaces, groups") {
  TempDir dir;
  KubeApiServer server({.rbac_file = dir.Write("rbac.json", ReviewRbac().dump())});
  const std::string reviewer = server.IssueToken("nodemesh", "aggregator");
  const auto allowed = [&](const json& spec) {
    const KubeApiServer::Response response = ReviewAccess(server, reviewer, spec);
    INFO(spec.dump() << ": " << response.body);
    REQUIRE(response.status == 201);
    const json answer = response.json();
    CHECK(answer.at("kind") == "SubjectAccessReview");
    CHECK(answer.at("spec") == spec);
    return answer.at("status").at("allowed").get<bool>();
  };
  const auto tap = [](const std::string& namespace_name) {
    return json{{"namespace", namespace_name},
                {"verb", "watch"},
                {"group", "nodemesh.io"},
                {"version", "v1alpha1"},
                {"resource", "taps"}};
  };

  // A RoleBinding in namespace a, for a user and for a group.
  CHECK(allowed({{"user", "alice"}, {"resourceAttributes", tap("a")}}));
  CHECK_FALSE(allowed({{"user", "alice"}, {"resourceAttributes", tap("b")}}));
  CHECK_FALSE(allowed({{"user", "alice"}, {"resourceAttributes", tap("")}}));
  CHECK(allowed({{"user", "bob"}, {"groups", {"dev"}}, {"resourceAttributes", tap("a")}}));
  CHECK_FALSE(allowed({{"user", "bob"}, {"resourceAttributes", tap("a")}}));
  json get_tap = tap("a");
  get_tap["verb"] = "get";
  CHECK_FALSE(allowed({{"user", "alice"}, {"resourceAttributes", get_tap}}));
  // A ClusterRoleBinding to a group: a subresource at the cluster scope, and a path.
  const json node_admin = {{"verb", "get"},       {"group", "nodemesh.io"}, {"version", "v1alpha1"},
                           {"resource", "nodes"}, {"subresource", "admin"}, {"name", "node-a"}};
  CHECK(allowed({{"user", "carol"}, {"groups", {"ops"}}, {"resourceAttributes", node_admin}}));
  CHECK_FALSE(allowed({{"user", "carol"}, {"resourceAttributes", node_admin}}));
  const json metrics = {{"path", "/metrics"}, {"verb", "get"}};
  CHECK(allowed({{"user", "carol"}, {"groups", {"ops"}}, {"nonResourceAttributes", metrics}}));
  CHECK_FALSE(allowed({{"user", "alice"}, {"nonResourceAttributes", metrics}}));
  // Discovery is for authenticated users (system:discovery); system:masters may do anything.
  const json apis = {{"path", "/apis"}, {"verb", "get"}};
  CHECK(allowed(
      {{"user", "x"}, {"groups", {"system:authenticated"}}, {"nonResourceAttributes", apis}}));
  CHECK_FALSE(allowed({{"user", "x"}, {"nonResourceAttributes", apis}}));
  CHECK(allowed(
      {{"user", "root"}, {"groups", {"system:masters"}}, {"resourceAttributes", tap("b")}}));

  // The reason names the rule; a refusal has none.
  const json answer =
      ReviewAccess(server, reviewer, {{"user", "alice"}, {"resourceAttributes", tap("a")}}).json();
  CHECK(answer.at("status") ==
        json{{"allowed", true}, {"reason", "RBAC: allowed by ClusterRole/nodemesh-tap#0"}});
  CHECK(ReviewAccess(server, reviewer, {{"user", "alice"}, {"resourceAttributes", tap("b")}})
            .json()
            .at("status") == json{{"allowed", false}});

  // Invalid reviews, and reviewers without create subjectaccessreviews.
  const auto invalid = [&](const json& spec) {
    const KubeApiServer::Response response = ReviewAccess(server, reviewer, spec);
    INFO(response.body);
    CHECK(response.status == 422);
    return response.json().at("message").get<std::string>();
  };
  CHECK_THAT(invalid({{"resourceAttributes", tap("a")}}),
             Catch::Contains("at least one of user or group must be specified"));
  CHECK_THAT(invalid({{"user", "alice"}}), Catch::Contains("exactly one of"));
  CHECK_THAT(invalid({{"user", "alice"},
                      {"resourceAttributes", tap("a")},
                      {"nonResourceAttributes", metrics}}),
             Catch::Contains("exactly one of"));
  CHECK(ReviewAccess(server, server.IssueToken("a", "stranger"),
                     {{"user", "alice"}, {"resourceAttributes", tap("a")}})
            .status == 403);

  // The request log has each review's subject, attributes and decision.
  json first;
  for (const KubeApiServer::Request& request : server.Requests()) {
    if (!request.review.is_null()) {
      first = request.review;
      CHECK(request.rule == "ClusterRole/system:auth-delegator#1");
      break;
    }
  }
  CHECK(first == json{{"user", "alice"},
                      {"groups", json::array()},
                      {"extra", json::object()},
                      {"allowed", true},
                      {"rule", "ClusterRole/nodemesh-tap#0"},
                      {"resourceAttributes", tap("a")}});
  const std::map<std::string, int> uses = server.RbacRuleUses();
  CHECK(uses.at("ClusterRole/nodemesh-tap#0") >= 2);
  CHECK(uses.at("ClusterRole/node-admin#1") == 1);
  CHECK(uses.at("ClusterRole/system:auth-delegator#1") > 0);
  CHECK_FALSE(uses.contains("ClusterRole/system:auth-delegator#0"));  // no TokenReview made
}

TEST_CASE("the bootstrap roles and system:masters authorize requests as in every cluster") {
  TempDir dir;
  KubeApiServer server({.rbac_file = dir.Write("rbac.json", ReviewRbac().dump())});
  const std::string configmaps = "/api/v1/namespaces/kube-system/configmaps";
  const json trust = server.Get(configmaps + "/extension-apiserver-authentication");
  server.Create(configmaps, {{"metadata", {{"name", "other"}}}, {"data", json::object()}});
  const std::string aggregator = server.IssueToken("nodemesh", "aggregator");
  const KubeApiServer::Response read =
      server.Call("GET", configmaps + "/extension-apiserver-authentication", aggregator);
  CHECK(read.status == 200);
  CHECK(read.json() == trust);
  CHECK(WatchStream(server,
                    configmaps + "?watch=1&fieldSelector=metadata.name%3Dextension-apiserver-"
                                 "authentication",
                    aggregator)
            .status() == 200);
  CHECK(server.Call("GET", configmaps + "/other", aggregator).status == 403);
  CHECK(server.Call("GET", configmaps, aggregator).status == 403);
  CHECK(server.RbacRuleUses().at("Role/kube-system/extension-apiserver-authentication-reader#0") ==
        2);

  const std::string root = server.IssueUserToken("root", {"system:masters"});
  CHECK(server.Call("GET", configmaps + "/other", root).status == 200);
  CHECK(server.Requests().back().rule == "system:masters");
  CHECK(server.Call("GET", configmaps + "/other", server.IssueUserToken("alice")).status == 403);
}

TEST_CASE("configmaps and apiservices are stored, apiservices with their status") {
  KubeApiServer server;
  const std::string apiservices = "/apis/apiregistration.k8s.io/v1/apiservices";
  const json created = server.Create(
      apiservices,
      {{"apiVersion", "apiregistration.k8s.io/v1"},
       {"kind", "APIService"},
       {"metadata", {{"name", "v1alpha1.nodemesh.io"}}},
       {"spec",
        {{"group", "nodemesh.io"},
         {"version", "v1alpha1"},
         {"service", {{"namespace", "nodemesh"}, {"name", "nodemesh-aggregator"}, {"port", 443}}},
         {"groupPriorityMinimum", 1000},
         {"versionPriority", 100}}}});
  CHECK_FALSE(created.at("metadata").contains("namespace"));
  // The availability controller finds no Service behind it.
  json conditions;
  REQUIRE(PollUntil(
      [&] {
        conditions = server.Get(apiservices + "/v1alpha1.nodemesh.io")
                         .value("status", json::object())
                         .value("conditions", json::array());
        return !conditions.empty();
      },
      10s));
  CHECK(conditions.at(0).at("status") == "False");
  CHECK(conditions.at(0).at("reason") == "ServiceNotFound");
  CHECK(conditions.at(0).at("message") ==
        "service/nodemesh-aggregator in \"nodemesh\" is not present");
  const json available = {
      {"conditions", {{{"type", "Available"}, {"status", "True"}, {"reason", "Passed"}}}}};
  const KubeApiServer::Response status =
      server.Call("PATCH", apiservices + "/v1alpha1.nodemesh.io/status", server.admin_token(),
                  json{{"status", available}}.dump(), "application/merge-patch+json");
  CHECK(status.status == 200);
  const json stored = server.Get(apiservices + "/v1alpha1.nodemesh.io");
  CHECK(stored.at("status") == available);
  CHECK(stored.at("spec") == created.at("spec"));
  CHECK(NamesOf(List(server, apiservices)) == std::vector<std::string>{"v1alpha1.nodemesh.io"});

  server.Create("/api/v1/namespaces/x/configmaps",
                {{"metadata", {{"name", "settings"}}}, {"data", {{"a", "1"}}}});
  CHECK(server.MergePatch("/api/v1/namespaces/x/configmaps/settings", {{"data", {{"a", "2"}}}})
            .at("data") == json{{"a", "2"}});

  // Discovery lists them and the review APIs.
  const json registration = List(server, "/apis/apiregistration.k8s.io/v1");
  CHECK(registration.at("resources").at(0).at("name") == "apiservices");
  const json authentication = List(server, "/apis/authentication.k8s.io/v1");
  CHECK(authentication.at("resources") == json{{{"name", "tokenreviews"},
                                                {"singularName", "tokenreview"},
                                                {"namespaced", false},
                                                {"kind", "TokenReview"},
                                                {"verbs", {"create"}}}});
  const json groups = List(server, "/apis");
  std::set<std::string> names;
  for (const json& group : groups.at("groups")) names.insert(group.at("name"));
  CHECK(names.contains("authorization.k8s.io"));
  CHECK(names.contains("apiregistration.k8s.io"));
}

TEST_CASE("reviews made slow or unavailable, and other requests unaffected") {
  TempDir dir;
  KubeApiServer server({.rbac_file = dir.Write("rbac.json", ReviewRbac().dump())});
  const std::string reviewer = server.IssueToken("nodemesh", "aggregator");
  const std::string token = server.IssueToken("nodemesh", "nodemesh-agent");
  server.SetReviewFaults({.delay = 60s});
  // The review waits; the test lifts the delay and it is answered at once.
  std::future<KubeApiServer::Response> slow =
      std::async(std::launch::async, [&] { return ReviewToken(server, reviewer, token, nullptr); });
  CHECK(server.Call("GET", "/api/v1/namespaces/nodemesh/pods", server.admin_token()).status == 200);
  CHECK(slow.wait_for(300ms) == std::future_status::timeout);
  const auto lifted = std::chrono::steady_clock::now();
  server.SetReviewFaults({});
  REQUIRE(slow.wait_for(5s) == std::future_status::ready);
  CHECK(std::chrono::steady_clock::now() - lifted < 2s);
  CHECK(slow.get().json().at("status").at("authenticated") == true);

  server.SetReviewFaults({.delay = 500ms});
  const auto started = std::chrono::steady_clock::now();
  CHECK(ReviewToken(server, reviewer, token, nullptr).status == 201);
  CHECK(std::chrono::steady_clock::now() - started >= 500ms);

  server.SetReviewFaults({.unavailable = true});
  const KubeApiServer::Response unavailable = ReviewAccess(
      server, reviewer,
      {{"user", "alice"}, {"nonResourceAttributes", {{"path", "/"}, {"verb", "get"}}}});
  CHECK(unavailable.status == 503);
  CHECK(unavailable.json().at("reason") == "ServiceUnavailable");
  CHECK(ReviewToken(server, reviewer, token, nullptr).status == 503);
  server.SetReviewFaults({});
  CHECK(ReviewToken(server, reviewer, token, nullptr).status == 201);
}

TEST_CASE("the front proxy's certificates and the extension-apiserver-authentication ConfigMap") {
  KubeApiServer server;
  const std::string path =
      "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication";
  const json trust = server.Get(path);
  const json& data = trust.at("data");
  CHECK(data.at("requestheader-client-ca-file") == ReadFile(server.front_proxy_ca_file()));
  CHECK(data.at("client-ca-file") == ReadFile(server.ca_file()));
  CHECK(json::parse(data.at("requestheader-allowed-names").get<std::string>()) ==
        json{"front-proxy-client"});
  CHECK(json::parse(data.at("requestheader-username-headers").get<std::string>()) ==
        json{"X-Remote-User"});
  CHECK(json::parse(data.at("requestheader-group-headers").get<std::string>()) ==
        json{"X-Remote-Group"});
  CHECK(json::parse(data.at("requestheader-extra-headers-prefix").get<std::string>()) ==
        json{"X-Remote-Extra-"});
  CHECK(json::parse(data.at("requestheader-uid-headers").get<std::string>()) == json::array());

  // Both client certificates are the front proxy CA's, for clients, with their names.
  for (const auto& [cert, name] :
       {std::pair{server.front_proxy_client_cert(), "front-proxy-client"},
        std::pair{server.not_allowed_client_cert(), "not-allowed"}}) {
    const CommandResult verify = RunCommand({"openssl", "verify", "-purpose", "sslclient",
                                             "-CAfile", server.front_proxy_ca_file(), cert});
    INFO(verify.output);
    CHECK(verify.exit_code == 0);
    const CommandResult subject =
        RunCommand({"openssl", "x509", "-noout", "-subject", "-in", cert});
    CHECK(subject.output.find(std::string("CN = ") + name) != std::string::npos);
  }
  CHECK(RunCommand(
            {"openssl", "verify", "-CAfile", server.ca_file(), server.front_proxy_client_cert()})
            .exit_code != 0);

  // Published once: a restart leaves it as it was.
  server.Stop();
  server.Start();
  CHECK(server.Get(path) == trust);
}

// An extension API server (echo_extension.py) for the aggregation layer to call: its serving
// certificate names echo.demo.svc, and it serves only the front proxy's certificates.
struct EchoExtension {
  std::unique_ptr<Process> process;
  std::string address;  // 127.0.0.1:PORT

  // Its certificates are made in `dir` by the first one, and kept by the next.
  EchoExtension(const TempDir& dir, const KubeApiServer& api) {
    if (!std::filesystem::exists(dir.path() + "/echo.crt")) {
      MakeCa(dir, "echo-ca");
      MakeServerCertificate(dir, "echo-ca", "echo", {"echo.demo.svc"});
    }
    const std::string ready = dir.path() + "/echo.ready";
    std::filesystem::remove(ready);
    process = std::make_unique<Process>(std::vector<std::string>{
        kPython, "-u", SourcePath("test/lib/echo_extension.py"), "--cert", dir.path() + "/echo.crt",
        "--key", dir.path() + "/echo.key", "--client-ca", api.front_proxy_ca_file(), "--group",
        "echo.example.com", "--version", "v1", "--ready-file", ready});
    REQUIRE(PollUntil([&] { return !ReadFile(ready).empty(); }, 10s));
    address = "127.0.0.1:" + std::to_string(std::stoi(ReadFile(ready)));
  }
};

// A GET through the test API server with `token` and more request headers.
KubeApiServer::Response GetWithHeaders(const KubeApiServer& api, const std::string& path,
                                       const std::string& token,
                                       const std::vector<std::string>& more_headers) {
  CURL* curl = curl_easy_init();
  curl_slist* headers = curl_slist_append(nullptr, ("Authorization: Bearer " + token).c_str());
  for (const std::string& header : more_headers)
    headers = curl_slist_append(headers, header.c_str());
  const std::string url = api.url() + path;
  const std::string ca = api.ca_file();
  KubeApiServer::Response response;
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_CAINFO, ca.c_str());
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 10000L);
  curl_easy_setopt(
      curl, CURLOPT_WRITEFUNCTION, +[](char* data, size_t size, size_t count, void* body) {
        static_cast<std::string*>(body)->append(data, size * count);
        return size * count;
      });
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &response.body);
  const CURLcode result = curl_easy_perform(curl);
  long status = 0;
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_cleanup(curl);
  curl_slist_free_all(headers);
  INFO(curl_easy_strerror(result));
  REQUIRE(result == CURLE_OK);
  response.status = static_cast<int>(status);
  return response;
}

// The values of header `name` in an echo's list of [name, value] pairs, in order.
std::vector<std::string> HeaderValues(const json& echo, const std::string& name) {
  std::vector<std::string> values;
  for (const json& header : echo.at("headers")) {
    if (header[0] == name) values.push_back(header[1]);
  }
  return values;
}

TEST_CASE("the aggregation layer checks an APIService and proxies to it as kube-aggregator does") {
  TempDir dir;
  const json rbac = json::parse(R"([
    {"kind": "ClusterRole", "metadata": {"name": "echo-reader"},
     "rules": [{"apiGroups": ["echo.example.com"], "resources": ["echoes"],
                "verbs": ["get", "watch"]}]},
    {"kind": "RoleBinding", "metadata": {"name": "bob-echo-reader", "namespace": "a"},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                 "name": "echo-reader"},
     "subjects": [{"kind": "User", "name": "bob"}]}
  ])");
  KubeApiServer api({.rbac_file = dir.Write("rbac.json", rbac.dump())});
  EchoExtension extension(dir, api);
  const ExtensionOptions options = {.namespace_name = "demo",
                                    .service = "echo",
                                    .address = extension.address,
                                    .ca_bundle_pem = ReadFile(dir.path() + "/echo-ca.crt"),
                                    .group = "echo.example.com",
                                    .version = "v1"};
  api.RegisterExtension(options);

  // Available: the group version answered the aggregator, as system:masters; then discovery
  // found no aggregated document (406) and read the legacy one as a user without groups.
  const json status = api.ExtensionStatus();
  INFO(status.dump(2) << "\n" << extension.process->output());
  CHECK(status.at("available") == true);
  CHECK(status.at("reason") == "Passed");
  CHECK(status.at("discovery") == "legacy");
  REQUIRE(status.at("probes").size() == 3);
  const json& availability = status.at("probes")[0];
  CHECK(availability.at("path") == "/apis/echo.example.com/v1");
  CHECK(availability.at("user") == "system:kube-aggregator");
  CHECK(availability.at("groups") == json{"system:masters"});
  CHECK(availability.at("status") == 200);
  CHECK(status.at("probes")[1].at("path") == "/apis");
  CHECK(status.at("probes")[1].at("status") == 406);
  CHECK(status.at("probes")[2].at("groups") == json::array());
  CHECK(json::parse(status.at("probes")[2].at("body").get<std::string>()).at("kind") ==
        "APIResourceList");
  CHECK(extension.process->output().find(
            "GET /apis/echo.example.com/v1 user=system:kube-aggregator groups=\n") !=
        std::string::npos);
  const json apiservice =
      api.Get("/apis/apiregistration.k8s.io/v1/apiservices/v1.echo.example.com");
  const json& condition = apiservice.at("status").at("conditions")[0];
  CHECK(condition.at("type") == "Available");
  CHECK(condition.at("status") == "True");
  CHECK(condition.at("reason") == "Passed");

  // /apis and /apis/GROUP are the API server's own, with the group in them.
  const std::string bob = api.IssueUserToken(
      "bob", {"dev"},
      {{"authentication.kubernetes.io/pod-name", {"web-1"}}, {"scopes", {"a b", "c"}}});
  const KubeApiServer::Response groups = api.Call("GET", "/apis", bob);
  CHECK(groups.body.find(R"("name":"echo.example.com")") != std::string::npos);
  CHECK(api.Call("GET", "/apis/echo.example.com", bob).json().at("kind") == "APIGroup");

  // A call reaches the extension as the front proxy's, with bob in X-Remote-* headers and
  // none of his credentials or forged headers; the path decoded, the query sorted.
  const KubeApiServer::Response echoed = GetWithHeaders(
      api, "/apis/echo.example.com/v1/namespaces/a/echoes/hello%41?z=1&b=two%20words&a=2&a=1", bob,
      {"X-Remote-User: admin", "X-Remote-Group: system:masters", "X-Remote-Extra-Scopes: all",
       "Impersonate-User: admin", "Accept: application/json"});
  INFO(echoed.body);
  REQUIRE(echoed.status == 200);
  const json echo = echoed.json();
  CHECK(echo.at("target") ==
        "/apis/echo.example.com/v1/namespaces/a/echoes/helloA?a=2&a=1&b=two+words&z=1");
  CHECK(echo.at("client") == "front-proxy-client");
  CHECK(HeaderValues(echo, "X-Remote-User") == std::vector<std::string>{"bob"});
  CHECK(HeaderValues(echo, "X-Remote-Group") ==
        std::vector<std::string>{"dev", "system:authenticated"});
  CHECK(HeaderValues(echo, "X-Remote-Extra-Authentication.kubernetes.io%2fpod-Name") ==
        std::vector<std::string>{"web-1"});
  CHECK(HeaderValues(echo, "X-Remote-Extra-Scopes") == std::vector<std::string>{"a b", "c"});
  CHECK(HeaderValues(echo, "Authorization").empty());
  CHECK(HeaderValues(echo, "Impersonate-User").empty());
  CHECK(HeaderValues(echo, "Accept") == std::vector<std::string>{"application/json"});
  CHECK(HeaderValues(echo, "X-Forwarded-For") == std::vector<std::string>{"127.0.0.1"});
  CHECK(HeaderValues(echo, "Audit-Id").size() == 1);
  CHECK(HeaderValues(echo, "Host") == std::vector<std::string>{extension.address});

  // RBAC is the API server's: bob may not read namespace b, and the extension never hears
  // of it.
  const KubeApiServer::Response in_b =
      api.Call("GET", "/apis/echo.example.com/v1/namespaces/b/echoes/hello", bob);
  CHECK(in_b.status == 403);
  CHECK(in_b.json().at("message") ==
        "echoes.echo.example.com \"hello\" is forbidden: User \"bob\" cannot get resource "
        "\"echoes\" in API group \"echo.example.com\" in the namespace \"b\"");
  CHECK(api.Call("GET", "/apis/echo.example.com/v1/namespaces/a/echoes/hello", "").status == 401);
  CHECK(extension.process->output().find("namespaces/b") == std::string::npos);

  // A watch streams through: each line arrives while the stream is still open, and the
  // extension's connection closes when the client goes.
  {
    WatchStream stream(api, "/apis/echo.example.com/v1/namespaces/a/echoes?watch=true&lines=3",
                       bob);
    for (int i = 0; i < 3; ++i) {
      const std::optional<json> line = stream.Next();
      REQUIRE(line);
      CHECK(line->at("line") == i);
    }
    CHECK(!stream.WaitDone(200ms));
  }
  CHECK(extension.process->WaitForOutput("stream closed", 5s));
  const std::vector<KubeApiServer::Request> requests = api.Requests();
  CHECK(std::any_of(requests.begin(), requests.end(), [](const KubeApiServer::Request& r) {
    return r.watch && r.status == 200 && r.user == "bob" && r.rule == "ClusterRole/echo-reader#0";
  }));

  // The TLS check is for <service>.<namespace>.svc: a service the certificate does not name
  // is not available, and the group version answers 503.
  const std::string path = "/apis/echo.example.com/v1/namespaces/a/echoes/hello";
  ExtensionOptions other = options;
  other.service = "other";
  api.RegisterExtension(other);
  CHECK(api.ExtensionStatus().at("available") == false);
  CHECK(api.ExtensionStatus().at("reason") == "FailedDiscoveryCheck");
  const KubeApiServer::Response unavailable = api.Call("GET", path, bob);
  CHECK(unavailable.status == 503);
  CHECK(unavailable.body == "service unavailable\n");

  // Registered right again, then with the extension gone.
  api.RegisterExtension(options);
  CHECK(api.ExtensionStatus().at("available") == true);
  CHECK(api.Call("GET", path, bob).status == 200);
  extension.process.reset();
  api.RegisterExtension(options);
  const json down = api.ExtensionStatus();
  CHECK(down.at("available") == false);
  CHECK(down.at("message").get<std::string>().find("failing or missing response from https://" +
                                                   extension.address) != std::string::npos);
  CHECK(api.Call("GET", path, bob).status == 503);

  // Back on another port, named by its EndpointSlice: the availability check, made again
  // while it fails, finds it Available without a new registration.
  EchoExtension again(dir, api);
  api.MergePatch("/apis/discovery.k8s.io/v1/namespaces/demo/endpointslices/echo",
                 {{"ports",
                   {{{"name", "https"},
                     {"port", std::stoi(again.address.substr(again.address.rfind(':') + 1))},
                     {"protocol", "TCP"}}}}});
  CHECK(PollUntil([&] { return api.ExtensionStatus().at("available") == true; }, 5s, 50ms));
  CHECK(api.Call("GET", path, bob).status == 200);
}

}  // namespace
}  // namespace nodemesh::testing
