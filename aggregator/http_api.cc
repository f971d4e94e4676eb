#include "aggregator/http_api.h"

#include <optional>
#include <string>
#include <utility>
#include <variant>

#include "common/base/log.h"
#include "common/httpapi/discovery.h"
#include "common/httpapi/json.h"
#include "common/httpapi/paths.h"
#include "common/httpapi/permissions.h"

namespace nodemesh::aggregator {
namespace {

using namespace std::chrono_literals;

constexpr std::string_view kJson = "application/json";
// A tap's client that takes no line for this long is cut off: its events would only pile up.
constexpr auto kTapWriteDeadline = 10s;

http::HttpResponse Json(std::string body) {
  return http::HttpResponse(200, std::string(kJson), std::move(body));
}

http::HttpResponse Answer(const httpapi::ErrorAnswer& error) {
  http::HttpResponse response(error.http_status, std::string(kJson), error.body);
  if (error.retry_after) response.headers.emplace_back("Retry-After", "1");
  return response;
}

http::HttpResponse Error(const absl::Status& status, const httpapi::Permission* denied = nullptr) {
  return Answer(httpapi::ErrorAnswerFor(status, denied));
}

// A query's answer as JSON, or its error.
template <typename Response>
http::HttpResponse JsonOrError(const absl::StatusOr<Response>& answer) {
  return answer.ok() ? Json(httpapi::MessageJson(*answer)) : Error(answer.status());
}

// The user the front proxy vouches for, or why there is none.
absl::StatusOr<KubeUser> UserOf(const FrontProxy& front_proxy, const http::HttpRequest& request) {
  const std::optional<std::string> verified =
      request.peer.verified ? std::optional<std::string>(request.peer.common_name) : std::nullopt;
  const HeaderList headers(request.headers.begin(), request.headers.end());
  return front_proxy.Authenticate(verified, headers);
}

// A tap's events as lines of the answer's body.
class HttpTapStream : public TapStream {
 public:
  explicit HttpTapStream(http::ResponseStream& out) : out_(out) {}
  bool Write(const v1::TapStreamMessage& message) override {
    return out_.Write(httpapi::MessageJson(message), kTapWriteDeadline);
  }
  bool Cancelled() const override { return out_.ClientGone(); }
  // An empty message, which every reader of the stream skips.
  bool Heartbeat() override {
    return out_.Write(httpapi::MessageJson(v1::TapStreamMessage()), kTapWriteDeadline);
  }

 private:
  http::ResponseStream& out_;
};

// One call, its caller authorized: the answer of ApiCalls as JSON.
http::HttpResponse Call(const ApiCalls& calls, const KubeUser& user,
                        const httpapi::ApiRequest& request) {
  if (const auto* stat = std::get_if<v1::StatSummaryRequest>(&request)) {
    return JsonOrError(calls.StatSummary(*stat));
  }
  if (const auto* edges = std::get_if<v1::EdgesRequest>(&request)) {
    return JsonOrError(calls.Edges(*edges));
  }
  if (const auto* routes = std::get_if<v1::TopRoutesRequest>(&request)) {
    return JsonOrError(calls.TopRoutes(*routes));
  }
  if (const auto* pods = std::get_if<v1::ListPodsRequest>(&request)) {
    return Json(httpapi::MessageJson(calls.ListPods(*pods)));
  }
  if (const auto* view = std::get_if<v1::ViewRequest>(&request)) {
    return JsonOrError(calls.View(*view));
  }
  if (const auto* admin = std::get_if<v1::NodeAdminRequest>(&request)) {
    const auto answer = calls.NodeAdmin(*admin, [] { return false; });
    if (!answer.ok()) return Error(answer.status());
    // The agent's answer as it is; the header tells a relayed 404 from the aggregator's own.
    http::HttpResponse relayed(static_cast<int>(answer->status()), answer->content_type(),
                               answer->body());
    relayed.headers.emplace_back("Nodemesh-Relayed-From", admin->node());
    return relayed;
  }
  const auto& spec = std::get<v1::TapRequestSpec>(request);
  // Opened before the answer's status line, so that a refusal is the answer's status; the
  // events then stream until the client leaves, maxEvents, or the aggregator stops.
  absl::StatusOr<std::shared_ptr<TapSession>> opened =
      calls.OpenTap(spec, CallOrigin{user.name, user.name});
  if (!opened.ok()) return Error(opened.status());
  return http::HttpResponse::Stream(
      200, std::string(kJson),
      [&calls, spec, session = *std::move(opened)](http::ResponseStream& out) mutable {
        HttpTapStream stream(out);
        const absl::Status ended = calls.StreamTap(std::move(session), spec, stream);
        // The aggregator stopping: the last line says so (the client's leaving needs none).
        if (absl::IsUnavailable(ended)) {
          out.Write(httpapi::ErrorAnswerFor(ended).body, kTapWriteDeadline);
        }
      });
}

}  // namespace

http::HttpRoutes HttpApiRoutes(FrontProxy& front_proxy, KubeAuthorizer& authorizer,
                               const ApiCalls& calls) {
  http::HttpRoutes routes;
  const auto ok = [](const http::HttpRequest&) {
    return http::HttpResponse(200, "text/plain; charset=utf-8", "ok");
  };
  routes.Handle("/healthz", ok);
  routes.Handle("/livez", ok);
  routes.Handle("/readyz", [&front_proxy](const http::HttpRequest&) {
    return front_proxy.WaitForSync(0ms)
               ? http::HttpResponse(200, "text/plain; charset=utf-8", "ok")
               : http::HttpResponse(503, "text/plain; charset=utf-8",
                                    "the front proxy's settings have not been read yet");
  });
  routes.Handle("/apis", [](const http::HttpRequest&) { return Answer(httpapi::ApisAnswer()); });
  // Discovery needs the front proxy's word and no permission: the API server asks for it as
  // a user with no groups.
  const auto discovery = [&front_proxy](std::string (*document)()) {
    return [&front_proxy, document](const http::HttpRequest& request) {
      const absl::StatusOr<KubeUser> user = UserOf(front_proxy, request);
      return user.ok() ? Json(document()) : Error(user.status());
    };
  };
  routes.Handle("/apis/nodemesh.io", discovery(httpapi::GroupJson));
  routes.Handle(std::string(httpapi::kApiPath), discovery(httpapi::ResourceListJson));
  routes.Handle(std::string(httpapi::kApiPath) + "/", [&front_proxy, &authorizer,
                                                       &calls](const http::HttpRequest& request) {
    if (request.method != "GET") {
      return Error(absl::InvalidArgumentError(fmt::format(
          "{} is not served: every call of {} is a GET", request.method, httpapi::kApiPath)));
    }
    const absl::StatusOr<KubeUser> user = UserOf(front_proxy, request);
    if (!user.ok()) return Error(user.status());
    const absl::StatusOr<httpapi::ApiRequest> parsed =
        httpapi::ParseApiRequest(request.path, request.raw_query);
    if (!parsed.ok()) return Error(parsed.status());
    for (const httpapi::Permission& permission : httpapi::PermissionsFor(*parsed)) {
      if (absl::Status may = authorizer.Check(*user, permission); !may.ok()) {
        Log(LogLevel::kInfo, "{} refused to {}: {}", request.path, user->name, may.message());
        return Error(may, &permission);
      }
    }
    return Call(calls, *user, *parsed);
  });
  return routes;
}

}  // namespace nodemesh::aggregator
