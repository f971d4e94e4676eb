#include "cli/dashboard/server.h"

#include <fmt/format.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>
#include <variant>

#include "cli/dashboard/assets.h"
#include "cli/shell/admin_client.h"
#include "cli/shell/explain.h"
#include "cli/views/shell.h"
#include "common/http/browser_guard.h"
#include "common/httpapi/json.h"
#include "common/httpapi/paths.h"

namespace nodemesh::cli::dashboard {
namespace {

using http::HttpRequest;
using http::HttpResponse;

constexpr std::string_view kApiPrefix = "/api/v1alpha1";
constexpr std::string_view kContentSecurityPolicy =
    "default-src 'none'; script-src 'self'; worker-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'";
// A tap's events waiting for a browser that reads slowly: past it the tap's thread waits,
// and the aggregator drops (and reports) what it cannot send.
constexpr size_t kTapQueueLimit = 1024;
// How long a browser may take to accept a piece of a tap before the stream is closed.
constexpr std::chrono::milliseconds kTapWriteDeadline{30000};
// How often a tap's stream checks that its client is still there while nothing comes.
constexpr std::chrono::milliseconds kTapPoll{200};

bool SameSecret(std::string_view a, std::string_view b) {
  return !a.empty() && a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

// An answer of the API: never kept by the browser (it changes, and may be refused later).
HttpResponse JsonText(int status, std::string text) {
  HttpResponse response(status, "application/json", std::move(text));
  response.headers.emplace_back("Cache-Control", "no-store");
  return response;
}

HttpResponse Json(int status, const nlohmann::json& body) {
  return JsonText(status, body.dump() + "\n");
}

nlohmann::json ErrorJson(const absl::Status& status) {
  return {{"code", absl::StatusCodeToString(status.code())}, {"message", FailureLine(status)}};
}

// The HTTP status of the aggregated API for the same error.
HttpResponse Error(const absl::Status& status) {
  return Json(httpapi::ErrorAnswerFor(status).http_status, ErrorJson(status));
}

HttpResponse ServeAsset(const Asset& asset, const HttpRequest& request) {
  const std::string etag = fmt::format("\"{}\"", asset.sha256);
  HttpResponse response(200, std::string(asset.content_type), "");
  response.headers.emplace_back("ETag", etag);
  // Asked again each time (a new meshctl may serve another page), answered 304 when unchanged.
  response.headers.emplace_back("Cache-Control", "no-cache");
  response.headers.emplace_back("Vary", "Accept-Encoding");
  if (asset.path == "/") {
    response.headers.emplace_back("Content-Security-Policy", std::string(kContentSecurityPolicy));
  }
  if (request.Header("if-none-match").find(etag) != std::string_view::npos) {
    response.status = 304;
    return response;
  }
  if (request.Header("accept-encoding").find("gzip") != std::string_view::npos) {
    response.headers.emplace_back("Content-Encoding", "gzip");
    response.body = std::string(asset.gzip);
    return response;
  }
  absl::StatusOr<std::string> bytes = Uncompressed(asset);
  if (!bytes.ok()) return HttpResponse(500, "text/plain; charset=utf-8", bytes.status().ToString());
  response.body = *std::move(bytes);
  return response;
}

// What the tap's thread hands the stream: messages, then how the tap ended.
class TapQueue {
 public:
  // On the tap's thread: waits while the queue is full; false once the reader left.
  bool Push(const v1::TapStreamMessage& message) {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [this] { return messages_.size() < kTapQueueLimit || reader_gone_; });
    if (reader_gone_) return false;
    messages_.push_back(httpapi::MessageJson(message));  // a line, with its '\n'
    changed_.notify_all();
    return true;
  }
  void End(absl::Status status) {
    std::lock_guard lock(mutex_);
    ended_ = std::move(status);
    changed_.notify_all();
  }
  void ReaderGone() {
    std::lock_guard lock(mutex_);
    reader_gone_ = true;
    changed_.notify_all();
  }

  // Waits up to `timeout` for a message or the end. Returns the lines waiting (taken), and
  // sets `ended` when the tap is over and nothing more will come.
  std::string Take(std::chrono::milliseconds timeout, std::optional<absl::Status>& ended) {
    std::unique_lock lock(mutex_);
    changed_.wait_for(lock, timeout, [this] { return !messages_.empty() || ended_.has_value(); });
    std::string lines;
    for (const std::string& line : messages_) lines += line;
    messages_.clear();
    changed_.notify_all();
    if (ended_.has_value()) ended = ended_;
    return lines;
  }

  // Waits up to `timeout` for the first message or the end; the end if it came first.
  std::optional<absl::Status> WaitForStart(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    changed_.wait_for(lock, timeout, [this] { return !messages_.empty() || ended_.has_value(); });
    if (messages_.empty()) return ended_;
    return std::nullopt;
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<std::string> messages_;
  std::optional<absl::Status> ended_;
  bool reader_gone_ = false;
};

// One tap of the page: AggregatorApi::Tap on a thread of its own. Destroying it cancels the
// tap and joins the thread.
class RelayedTap {
 public:
  RelayedTap(AggregatorApi& api, v1::TapRequestSpec spec)
      : thread_([this, &api, spec = std::move(spec)] {
          queue_.End(api.Tap(spec, cancel_, [this](const v1::TapStreamMessage& message) {
            return queue_.Push(message);
          }));
        }) {}
  ~RelayedTap() {
    Stop();
    thread_.join();
  }

  // Ends the tap: the call is cancelled, and the thread stops waiting for room in the queue.
  void Stop() {
    queue_.ReaderGone();
    cancel_.Cancel();
  }
  RelayedTap(const RelayedTap&) = delete;
  RelayedTap& operator=(const RelayedTap&) = delete;

  TapQueue& queue() { return queue_; }

 private:
  CancelSource cancel_;
  TapQueue queue_;
  std::thread thread_;  // last: started once the rest exists
};

}  // namespace

std::string NewToken() {
  unsigned char bytes[16];
  if (RAND_bytes(bytes, sizeof(bytes)) != 1) std::abort();  // no randomness: nothing is safe
  std::string hex;
  for (unsigned char byte : bytes) hex += fmt::format("{:02x}", byte);
  return hex;
}

HttpResponse Dashboard::Serve(const HttpRequest& request) const {
  HttpResponse response;
  if (std::optional<HttpResponse> refusal = http::RefuseForeignRequest(request, settings_.port)) {
    response = *std::move(refusal);
  } else if (request.path == "/" && request.query.contains("token")) {
    if (SameSecret(request.query.at("token"), settings_.token)) {
      response = HttpResponse(303, "text/plain; charset=utf-8", "");
      response.headers.emplace_back(
          "Set-Cookie",
          fmt::format("{}={}; Path=/; HttpOnly; SameSite=Strict", kCookieName, settings_.token));
      response.headers.emplace_back("Location", "/");
      response.headers.emplace_back("Cache-Control", "no-store");
    } else {
      response = HttpResponse(401, "text/plain; charset=utf-8",
                              "This address is not the one meshctl dashboard printed (or that "
                              "meshctl has ended): open the address it printed.\n");
      response.headers.emplace_back("Cache-Control", "no-store");
    }
  } else if (const Asset* asset = FindAsset(request.path)) {
    response = ServeAsset(*asset, request);
  } else if (request.path.starts_with("/api/")) {
    response = HasSession(request)
                   ? ServeApi(request)
                   : Json(401, {{"code", "UNAUTHENTICATED"},
                                {"message", "open the address meshctl dashboard printed"}});
  } else {
    response = HttpResponse(404, "text/plain; charset=utf-8",
                            fmt::format("{} is not a page of meshctl dashboard\n", request.path));
  }
  for (const auto& [name, value] :
       {std::pair{"X-Content-Type-Options", "nosniff"}, std::pair{"Referrer-Policy", "no-referrer"},
        std::pair{"X-Frame-Options", "DENY"}}) {
    response.headers.emplace_back(name, value);
  }
  return response;
}

bool Dashboard::HasSession(const HttpRequest& request) const {
  const std::string prefix = fmt::format("{}=", kCookieName);
  for (const auto& [name, value] : request.headers) {
    if (name != "cookie") continue;
    // "a=1; nodemesh_dashboard=T; b=2"
    size_t start = 0;
    while (start < value.size()) {
      size_t end = value.find(';', start);
      if (end == std::string::npos) end = value.size();
      std::string_view cookie(value.data() + start, end - start);
      while (!cookie.empty() && cookie.front() == ' ') cookie.remove_prefix(1);
      while (!cookie.empty() && cookie.back() == ' ') cookie.remove_suffix(1);
      if (cookie.starts_with(prefix) && SameSecret(cookie.substr(prefix.size()), settings_.token)) {
        return true;
      }
      start = end + 1;
    }
  }
  return false;
}

HttpResponse Dashboard::ServeApi(const HttpRequest& request) const {
  if (request.path == "/api/dashboard/info") {
    return Json(
        200,
        {{"version", settings_.version},
         {"apiPath", settings_.api_path},
         {"elkjs", {{"version", NODEMESH_ELKJS_VERSION}, {"license", NODEMESH_ELKJS_LICENSE}}}});
  }
  if (request.path == "/api/dashboard/explain") return Explain(request);
  if (request.path.starts_with(kApiPrefix) &&
      (request.path.size() == kApiPrefix.size() || request.path[kApiPrefix.size()] == '/')) {
    return Relay(request);
  }
  return Error(absl::NotFoundError(
      fmt::format("{} is not a path of meshctl dashboard: {}/..., /api/dashboard/info, "
                  "/api/dashboard/explain?pod=NAMESPACE/NAME",
                  request.path, kApiPrefix)));
}

HttpResponse Dashboard::Relay(const HttpRequest& request) const {
  const std::string path = std::string(httpapi::kApiPath) + request.path.substr(kApiPrefix.size());
  absl::StatusOr<httpapi::ApiRequest> call = httpapi::ParseApiRequest(path, request.raw_query);
  if (!call.ok()) return Error(call.status());
  if (const auto* view = std::get_if<v1::ViewRequest>(&*call)) {
    absl::StatusOr<v1::ViewResponse> answer = api_.View(*view);
    if (!answer.ok()) return Error(answer.status());
    return JsonText(200, httpapi::MessageJson(*answer));
  }
  if (const auto* tap = std::get_if<v1::TapRequestSpec>(&*call)) return Tap(*tap);
  return Error(absl::NotFoundError(
      "meshctl dashboard relays views and taps only: .../views/KIND and .../taps?watch=true"));
}

HttpResponse Dashboard::Tap(const v1::TapRequestSpec& spec) const {
  auto tap = std::make_shared<RelayedTap>(api_, spec);
  // A refusal comes at once, before any event: it gets its own status, as the API's does.
  if (std::optional<absl::Status> ended = tap->queue().WaitForStart(settings_.tap_open_wait)) {
    if (!ended->ok()) return Error(*ended);
  }
  HttpResponse response = HttpResponse::Stream(
      200, "application/x-ndjson",
      [tap, heartbeat = settings_.heartbeat_interval](http::ResponseStream& stream) {
        auto last_write = std::chrono::steady_clock::now();
        for (;;) {
          std::optional<absl::Status> ended;
          std::string lines = tap->queue().Take(kTapPoll, ended);
          const auto now = std::chrono::steady_clock::now();
          if (ended.has_value() && !ended->ok()) {
            lines += nlohmann::json{{"error", ErrorJson(*ended)}}.dump() + "\n";
          } else if (lines.empty() && !ended.has_value() && now - last_write >= heartbeat) {
            lines = "{}\n";
          }
          if (!lines.empty()) {
            if (!stream.Write(lines, kTapWriteDeadline)) break;
            last_write = now;
          }
          if (ended.has_value() || stream.ClientGone()) break;
        }
        tap->Stop();
      });
  response.headers.emplace_back("Cache-Control", "no-store");
  return response;
}

HttpResponse Dashboard::Explain(const HttpRequest& request) const {
  const auto pod = request.query.find("pod");
  const size_t slash = pod == request.query.end() ? std::string::npos : pod->second.find('/');
  if (slash == std::string::npos || slash == 0 || slash + 1 == pod->second.size()) {
    return Error(absl::InvalidArgumentError("explain needs pod=NAMESPACE/NAME"));
  }
  const std::string pod_name = pod->second.substr(slash + 1);
  v1::ListPodsRequest list;
  list.set_namespace_(pod->second.substr(0, slash));
  absl::StatusOr<v1::ListPodsResponse> pods = api_.ListPods(list);
  if (!pods.ok()) return Error(pods.status());
  std::string node;
  for (const v1::Pod& candidate : pods->pods()) {
    if (candidate.identity().pod() == pod_name) node = candidate.identity().node();
  }
  if (node.empty()) {
    return Error(absl::NotFoundError(fmt::format(
        "no agent reports pod {}: is it running, and on a node with an agent?", pod->second)));
  }
  RelayedAdminClient agent(api_, node);
  absl::StatusOr<ExplainInputs> inputs = FetchExplainInputs(agent);
  if (!inputs.ok()) return Error(inputs.status());
  absl::StatusOr<nlohmann::json> explanation = cli::Explain(pod->second, *inputs);
  if (!explanation.ok()) return Error(explanation.status());
  return Json(200,
              {{"pod", pod->second}, {"node", node}, {"text", RenderShellExplain(*explanation)}});
}

}  // namespace nodemesh::cli::dashboard
