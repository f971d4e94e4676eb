// meshctl dashboard's answers, in process: a fake AggregatorApi behind the Dashboard, requests
// built as the HTTP server hands them over, streams written into a fake ResponseStream.
#include "cli/dashboard/server.h"

#include <fmt/format.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "cli/dashboard/assets.h"
#include "common/httpapi/json.h"

namespace nodemesh::cli::dashboard {
namespace {

using http::HttpRequest;
using http::HttpResponse;
using namespace std::chrono_literals;

constexpr uint16_t kPort = 41234;
constexpr std::string_view kToken = "00112233445566778899aabbccddeeff";

// Answers as configured, counts calls; a tap sends its messages, then waits for its cancel.
class FakeApi final : public AggregatorApi {
 public:
  absl::StatusOr<v1::StatSummaryResponse> StatSummary(const v1::StatSummaryRequest&) override {
    return absl::UnimplementedError("not used");
  }
  absl::StatusOr<v1::EdgesResponse> Edges(const v1::EdgesRequest&) override {
    return absl::UnimplementedError("not used");
  }
  absl::StatusOr<v1::TopRoutesResponse> TopRoutes(const v1::TopRoutesRequest&) override {
    return absl::UnimplementedError("not used");
  }
  absl::StatusOr<v1::ListPodsResponse> ListPods(const v1::ListPodsRequest& request) override {
    std::lock_guard lock(mutex);
    list_pods_requests.push_back(request);
    return pods;
  }
  absl::StatusOr<v1::NodeAdminResponse> NodeAdmin(const v1::NodeAdminRequest& request) override {
    std::lock_guard lock(mutex);
    node_admin_requests.push_back(request);
    return node_admin_status;
  }
  absl::StatusOr<v1::ViewResponse> View(const v1::ViewRequest& request) override {
    std::lock_guard lock(mutex);
    view_requests.push_back(request);
    if (!view_status.ok()) return view_status;
    return view_response;
  }
  absl::Status Tap(const v1::TapRequestSpec& spec, CancelSource& cancel,
                   const std::function<bool(const v1::TapStreamMessage&)>& on_message) override {
    {
      std::lock_guard lock(mutex);
      tap_requests.push_back(spec);
    }
    if (!tap_refusal.ok()) return tap_refusal;
    for (const v1::TapStreamMessage& message : tap_messages) {
      if (!on_message(message)) return absl::OkStatus();
    }
    if (!tap_failure.ok()) return tap_failure;
    while (!cancel.WaitFor(10ms)) {
    }
    tap_cancelled = true;
    return absl::OkStatus();
  }
  const std::string& address() const override { return address_; }

  std::mutex mutex;
  v1::ViewResponse view_response;
  absl::Status view_status;
  v1::ListPodsResponse pods;
  absl::Status node_admin_status = absl::UnimplementedError("not set");
  std::vector<v1::TapStreamMessage> tap_messages;
  absl::Status tap_refusal, tap_failure;
  std::atomic<bool> tap_cancelled{false};
  std::vector<v1::ViewRequest> view_requests;
  std::vector<v1::TapRequestSpec> tap_requests;
  std::vector<v1::ListPodsRequest> list_pods_requests;
  std::vector<v1::NodeAdminRequest> node_admin_requests;

 private:
  std::string address_ = "127.0.0.1:8085";
};

// Takes what a streamed answer writes; the client leaves when told.
class FakeStream final : public http::ResponseStream {
 public:
  bool Write(std::string_view chunk, std::chrono::milliseconds) override {
    std::lock_guard lock(mutex_);
    written_ += chunk;
    return !gone;
  }
  bool ClientGone() const override { return gone; }
  std::string written() const {
    std::lock_guard lock(mutex_);
    return written_;
  }
  std::atomic<bool> gone{false};

 private:
  mutable std::mutex mutex_;
  std::string written_;
};

DashboardSettings Settings() {
  return {.token = std::string(kToken),
          .port = kPort,
          .version = "9.9.9",
          .api_path = "the aggregator 127.0.0.1:8085",
          .heartbeat_interval = 10s,
          .tap_open_wait = 2s};
}

HttpRequest Get(std::string_view target, bool session = true) {
  HttpRequest request = http::HttpRoutes::Request("GET", target);
  request.headers.emplace("host", fmt::format("127.0.0.1:{}", kPort));
  if (session)
    request.headers.emplace("cookie", fmt::format("other=1; nodemesh_dashboard={}", kToken));
  return request;
}

std::string HeaderOf(const HttpResponse& response, std::string_view name) {
  for (const auto& [key, value] : response.headers) {
    if (key == name) return value;
  }
  return "";
}

nlohmann::json BodyJson(const HttpResponse& response) {
  REQUIRE(response.content_type == "application/json");
  return nlohmann::json::parse(response.body);
}

// Lines written so far, until `done` says they are enough or 10 s pass.
std::string WaitForLines(const FakeStream& stream,
                         const std::function<bool(const std::string&)>& done) {
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (!done(stream.written()) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  return stream.written();
}

TEST_CASE("dashboard: other sites' requests are refused before anything", "[dashboard]") {
  FakeApi api;
  const Dashboard dashboard(api, Settings());
  HttpRequest rebinding = Get("/api/dashboard/info");
  rebinding.headers.erase("host");
  rebinding.headers.emplace("host", fmt::format("evil.example:{}", kPort));
  CHECK(dashboard.Serve(rebinding).status == 421);
  HttpRequest cross_site = Get("/api/dashboard/info");
  cross_site.headers.emplace("origin", "http://evil.example");
  CHECK(dashboard.Serve(cross_site).status == 403);
  HttpRequest post = Get("/api/dashboard/info");
  post.method = "POST";
  CHECK(dashboard.Serve(post).status == 405);
  HttpRequest same_origin = Get("/api/dashboard/info");
  same_origin.headers.emplace("origin", fmt::format("http://127.0.0.1:{}", kPort));
  CHECK(dashboard.Serve(same_origin).status == 200);
  CHECK(api.view_requests.empty());
}

TEST_CASE("dashboard: the printed token becomes the session cookie", "[dashboard]") {
  FakeApi api;
  const Dashboard dashboard(api, Settings());
  const HttpResponse traded = dashboard.Serve(Get(fmt::format("/?token={}", kToken), false));
  CHECK(traded.status == 303);
  CHECK(HeaderOf(traded, "Location") == "/");
  CHECK(HeaderOf(traded, "Set-Cookie") ==
        fmt::format("nodemesh_dashboard={}; Path=/; HttpOnly; SameSite=Strict", kToken));
  const HttpResponse wrong = dashboard.Serve(Get("/?token=0011", false));
  CHECK(wrong.status == 401);
  CHECK(HeaderOf(wrong, "Set-Cookie").empty());

  const nlohmann::json unauthenticated = {
      {"code", "UNAUTHENTICATED"}, {"message", "open the address meshctl dashboard printed"}};
  for (const char* cookie : {"", "nodemesh_dashboard=", "nodemesh_dashboard=00112233",
                             "xnodemesh_dashboard=00112233445566778899aabbccddeeff"}) {
    INFO(cookie);
    HttpRequest request = Get("/api/v1alpha1/views/namespaces", false);
    if (*cookie != '\0') request.headers.emplace("cookie", cookie);
    const HttpResponse answer = dashboard.Serve(request);
    CHECK(answer.status == 401);
    CHECK(BodyJson(answer) == unauthenticated);
  }
  CHECK(api.view_requests.empty());
}

TEST_CASE("dashboard: the assets are served without a session, with their hash", "[dashboard]") {
  FakeApi api;
  const Dashboard dashboard(api, Settings());
  for (const Asset& asset : Assets()) {
    INFO(asset.path);
    HttpRequest request = Get(asset.path, false);
    request.headers.emplace("accept-encoding", "gzip, deflate, br");
    const HttpResponse answer = dashboard.Serve(request);
    CHECK(answer.status == 200);
    CHECK(answer.body == asset.gzip);
    CHECK(HeaderOf(answer, "Content-Encoding") == "gzip");
    CHECK(HeaderOf(answer, "ETag") == fmt::format("\"{}\"", asset.sha256));
    CHECK(HeaderOf(answer, "X-Content-Type-Options") == "nosniff");
    CHECK(HeaderOf(answer, "X-Frame-Options") == "DENY");
    CHECK(HeaderOf(answer, "Referrer-Policy") == "no-referrer");

    HttpRequest again = Get(asset.path, false);
    again.headers.emplace("if-none-match", fmt::format("\"{}\"", asset.sha256));
    const HttpResponse unchanged = dashboard.Serve(again);
    CHECK(unchanged.status == 304);
    CHECK(unchanged.body.empty());
  }
  const HttpResponse page = dashboard.Serve(Get("/", false));
  CHECK(page.content_type == "text/html; charset=utf-8");
  CHECK(HeaderOf(page, "Content-Encoding").empty());
  CHECK(page.body == *Uncompressed(*FindAsset("/")));
  CHECK(HeaderOf(page, "Content-Security-Policy") ==
        "default-src 'none'; script-src 'self'; worker-src 'self'; style-src 'self'; img-src "
        "'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'");
  CHECK(dashboard.Serve(Get("/nothing.js", false)).status == 404);
}

TEST_CASE("dashboard: a view is one View call, its answer as the API's JSON", "[dashboard]") {
  FakeApi api;
  api.view_response.mutable_size()->set_nodes(4);
  api.view_response.set_window_seconds(60);
  const Dashboard dashboard(api, Settings());
  const HttpResponse answer = dashboard.Serve(
      Get("/api/v1alpha1/namespaces/emojivoto/views/graph?namespaces=books&type=deployment"
          "&windowSeconds=60&filter.onlyFailing=true&filter.around.type=deployment"
          "&filter.around.name=web&filter.hideNamespaces=kube-system"));
  CHECK(answer.status == 200);
  CHECK(HeaderOf(answer, "Cache-Control") == "no-store");
  CHECK(answer.body == httpapi::MessageJson(api.view_response));
  REQUIRE(api.view_requests.size() == 1);
  const v1::ViewRequest& request = api.view_requests[0];
  CHECK(request.kind() == v1::ViewRequest::GRAPH);
  CHECK(std::vector<std::string>(request.namespaces().begin(), request.namespaces().end()) ==
        std::vector<std::string>{"emojivoto", "books"});
  CHECK(request.window_seconds() == 60);
  CHECK(request.filter().only_failing());
  CHECK(request.filter().around().name() == "web");
  CHECK(request.filter().around().namespace_() == "emojivoto");
  CHECK(request.filter().hide_namespaces_size() == 1);

  CHECK(dashboard.Serve(Get("/api/v1alpha1/views/namespaces?windowSeconds=60")).status == 200);
  CHECK(api.view_requests.size() == 2);
  CHECK(api.view_requests[1].kind() == v1::ViewRequest::NAMESPACES);
}

TEST_CASE("dashboard: errors are JSON with meshctl's line and the API's status", "[dashboard]") {
  FakeApi api;
  const Dashboard dashboard(api, Settings());
  api.view_status = absl::PermissionDeniedError(
      "alice may not get views in emojivoto: kubectl create rolebinding alice-nodemesh-read -n "
      "emojivoto --clusterrole=nodemesh-read --user=alice");
  const HttpResponse refused =
      dashboard.Serve(Get("/api/v1alpha1/namespaces/emojivoto/views/workloads"));
  CHECK(refused.status == 403);
  CHECK(HeaderOf(refused, "Cache-Control") == "no-store");
  CHECK(BodyJson(refused) ==
        nlohmann::json{{"code", "PERMISSION_DENIED"}, {"message", FailureLine(api.view_status)}});
  api.view_status = absl::UnavailableError("the aggregator 127.0.0.1:8085 does not answer");
  CHECK(dashboard.Serve(Get("/api/v1alpha1/views/namespaces")).status == 503);
  api.view_status = absl::DeadlineExceededError("too slow");
  CHECK(dashboard.Serve(Get("/api/v1alpha1/views/namespaces")).status == 504);
  CHECK(api.view_requests.size() == 3);

  const HttpResponse unknown =
      dashboard.Serve(Get("/api/v1alpha1/namespaces/emojivoto/views/graph?bogus=1"));
  CHECK(unknown.status == 400);
  CHECK(BodyJson(unknown)["code"] == "INVALID_ARGUMENT");
  const HttpResponse not_relayed =
      dashboard.Serve(Get("/api/v1alpha1/namespaces/emojivoto/stats/deployment"));
  CHECK(not_relayed.status == 404);
  CHECK(BodyJson(not_relayed)["code"] == "NOT_FOUND");
  CHECK(dashboard.Serve(Get("/api/v1alpha1/nodes/node-a/admin/pods")).status == 404);
  CHECK(dashboard.Serve(Get("/api/elsewhere")).status == 404);
  CHECK(api.view_requests.size() == 3);
  CHECK(api.node_admin_requests.empty());
}

TEST_CASE("dashboard: info names meshctl's version, its API path and elkjs", "[dashboard]") {
  FakeApi api;
  const Dashboard dashboard(api, Settings());
  const HttpResponse info = dashboard.Serve(Get("/api/dashboard/info"));
  CHECK(info.status == 200);
  CHECK(BodyJson(info) ==
        nlohmann::json{
            {"version", "9.9.9"},
            {"apiPath", "the aggregator 127.0.0.1:8085"},
            {"elkjs", {{"version", "0.12.2"}, {"license", "EPL-2.0 OR GPL-3.0-or-later"}}}});
}

TEST_CASE("dashboard: a tap streams NDJSON and is cancelled when its client leaves",
          "[dashboard]") {
  FakeApi api;
  v1::TapStreamMessage event;
  event.mutable_event()->set_request_id("7");
  v1::TapStreamMessage drops;
  drops.mutable_drops()->set_agent_dropped(3);
  api.tap_messages = {event, drops};
  DashboardSettings settings = Settings();
  settings.heartbeat_interval = 300ms;
  const Dashboard dashboard(api, settings);
  const HttpResponse answer = dashboard.Serve(
      Get("/api/v1alpha1/namespaces/emojivoto/taps?watch=true&target.type=deployment"
          "&target.name=web&to.type=deployment&to.name=voting&pathPrefix=/x/&method=POST"
          "&maxRps=10"));
  CHECK(answer.status == 200);
  CHECK(answer.content_type == "application/x-ndjson");
  CHECK(HeaderOf(answer, "Cache-Control") == "no-store");
  REQUIRE(answer.stream);
  REQUIRE(api.tap_requests.size() == 1);
  CHECK(api.tap_requests[0].target().name() == "web");
  CHECK(api.tap_requests[0].to().namespace_() == "emojivoto");
  CHECK(api.tap_requests[0].path_prefix() == "/x/");
  CHECK(api.tap_requests[0].max_rps() == 10);

  FakeStream stream;
  std::thread writer([&] { answer.stream(stream); });
  // The two messages, then a heartbeat once the tap has been quiet for 300 ms.
  const std::string lines = WaitForLines(
      stream, [](const std::string& text) { return text.find("{}\n") != std::string::npos; });
  stream.gone = true;
  writer.join();
  CHECK(lines.starts_with(httpapi::MessageJson(event) + httpapi::MessageJson(drops) + "{}\n"));
  // The stream has returned; the tap is cancelled once the last reference to it goes.
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (!api.tap_cancelled && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  CHECK(api.tap_cancelled);
}

TEST_CASE("dashboard: a refused tap answers its status, a failed one ends with an error line",
          "[dashboard]") {
  FakeApi api;
  const Dashboard dashboard(api, Settings());
  api.tap_refusal = absl::PermissionDeniedError(
      "alice may not watch taps in emojivoto: kubectl create rolebinding ...");
  const HttpResponse refused = dashboard.Serve(
      Get("/api/v1alpha1/namespaces/emojivoto/taps?watch=true&target.type=deployment"));
  CHECK(refused.status == 403);
  CHECK(!refused.stream);
  CHECK(BodyJson(refused) ==
        nlohmann::json{{"code", "PERMISSION_DENIED"}, {"message", FailureLine(api.tap_refusal)}});

  api.tap_refusal = absl::OkStatus();
  v1::TapStreamMessage event;
  event.mutable_event()->set_request_id("1");
  api.tap_messages = {event};
  api.tap_failure = absl::UnavailableError("the aggregator is shutting down");
  const HttpResponse failed = dashboard.Serve(
      Get("/api/v1alpha1/namespaces/emojivoto/taps?watch=true&target.type=deployment"));
  CHECK(failed.status == 200);
  REQUIRE(failed.stream);
  FakeStream stream;
  failed.stream(stream);  // returns once the tap has ended
  CHECK(stream.written() ==
        httpapi::MessageJson(event) +
            nlohmann::json{
                {"error", {{"code", "UNAVAILABLE"}, {"message", FailureLine(api.tap_failure)}}}}
                .dump() +
            "\n");
}

TEST_CASE("dashboard: explain asks the pod's node through the API, refusals as JSON",
          "[dashboard]") {
  FakeApi api;
  v1::Pod* pod = api.pods.add_pods();
  pod->mutable_identity()->set_namespace_("emojivoto");
  pod->mutable_identity()->set_pod("web-1");
  pod->mutable_identity()->set_node("node-a");
  api.node_admin_status = absl::PermissionDeniedError(
      "alice may not get nodes/admin: kubectl create clusterrolebinding ...");
  const Dashboard dashboard(api, Settings());
  const HttpResponse refused = dashboard.Serve(Get("/api/dashboard/explain?pod=emojivoto/web-1"));
  CHECK(refused.status == 403);
  CHECK(BodyJson(refused)["message"] == FailureLine(api.node_admin_status));
  REQUIRE(api.list_pods_requests.size() == 1);
  CHECK(api.list_pods_requests[0].namespace_() == "emojivoto");
  REQUIRE(api.node_admin_requests.size() == 1);
  CHECK(api.node_admin_requests[0].node() == "node-a");

  CHECK(dashboard.Serve(Get("/api/dashboard/explain?pod=emojivoto/other")).status == 404);
  CHECK(dashboard.Serve(Get("/api/dashboard/explain?pod=web-1")).status == 400);
  CHECK(dashboard.Serve(Get("/api/dashboard/explain")).status == 400);
  CHECK(api.node_admin_requests.size() == 1);
}

}  // namespace
}  // namespace nodemesh::cli::dashboard
