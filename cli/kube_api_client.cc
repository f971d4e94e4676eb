#include "cli/kube_api_client.h"

#include <algorithm>
#include <atomic>
#include <optional>
#include <utility>
#include <variant>
#include <vector>

#include "absl/strings/ascii.h"
#include "common/base/format.h"
#include "common/httpapi/json.h"
#include "common/httpapi/permissions.h"
#include "nlohmann/json.hpp"

namespace nodemesh::cli {
namespace {

// The call's name as the gRPC API has it, for messages that are the same on both paths.
std::string_view CallName(const httpapi::ApiRequest& request) {
  static constexpr std::string_view kNames[] = {"StatSummary", "Edges",     "TopRoutes", "ListPods",
                                                "Tap",         "NodeAdmin", "View"};
  static_assert(std::size(kNames) == std::variant_size_v<httpapi::ApiRequest>);
  return kNames[request.index()];
}

// The body as a Kubernetes Status object, if it is one.
std::optional<nlohmann::json> StatusObject(std::string_view body) {
  nlohmann::json json = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (!json.is_object() || json.value("kind", "") != "Status") return std::nullopt;
  return json;
}

// What the answer says: a Status's message, else the start of the body on one line.
std::string Words(std::string_view body) {
  if (const std::optional<nlohmann::json> status = StatusObject(body)) {
    return status->value("message", "");
  }
  std::string text(absl::StripAsciiWhitespace(std::string(body.substr(0, 200))));
  std::replace(text.begin(), text.end(), '\n', ' ');
  return text;
}

// The quoted value after `key` in a Kubernetes message (`User "alice"`), if any.
std::optional<std::string> Quoted(std::string_view message, std::string_view key) {
  const size_t at = message.find(key);
  if (at == std::string_view::npos) return std::nullopt;
  const size_t start = at + key.size();
  const size_t end = message.find('"', start);
  if (end == std::string_view::npos) return std::nullopt;
  return std::string(message.substr(start, end - start));
}

// Of the permissions the call needed, the one the API server's (or the aggregator's) 403
// names by its namespace; the first when the message names none.
httpapi::Permission DeniedPermission(const httpapi::ApiRequest& request, std::string_view message) {
  const std::vector<httpapi::Permission> needed = httpapi::PermissionsFor(request);
  std::optional<std::string> named = Quoted(message, "in the namespace \"");
  if (!named && message.find("at the cluster scope") != std::string_view::npos) named = "";
  if (named) {
    for (const httpapi::Permission& permission : needed) {
      if (permission.namespace_name == *named) return permission;
    }
  }
  return needed.front();
}

// "tap namespace b", "read the stats of every namespace", "reach the agent of node n1".
std::string Action(const httpapi::Permission& permission) {
  const std::string scope = permission.namespace_name.empty()
                                ? std::string("every namespace")
                                : "namespace " + permission.namespace_name;
  if (permission.resource == "taps") return "tap " + scope;
  if (permission.resource == "nodes") return "reach the agent of node " + permission.name;
  if (permission.resource == "inventory") return "list the pods of " + scope;
  return fmt::format("read the {} of {}", permission.resource, scope);
}

// A word the shell takes as it is, else single-quoted.
std::string ShellWord(std::string_view word) {
  const bool plain = !word.empty() && std::all_of(word.begin(), word.end(), [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) ||
           std::string_view("-_.:@/=+,").find(c) != std::string_view::npos;
  });
  if (plain) return std::string(word);
  std::string quoted = "'";
  for (const char c : word) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

// The kubectl command that binds the chart's role granting `permission` to `user`: a
// RoleBinding in the permission's namespace, a ClusterRoleBinding at cluster scope.
std::string GrantCommand(const httpapi::Permission& permission, std::string_view user) {
  const std::string_view role = permission.ClusterRole();
  constexpr std::string_view kServiceAccount = "system:serviceaccount:";
  std::string subject;
  if (user.substr(0, kServiceAccount.size()) == kServiceAccount &&
      std::count(user.begin(), user.end(), ':') == 3) {
    subject = "--serviceaccount=" + ShellWord(user.substr(kServiceAccount.size()));
  } else {
    subject = "--user=" + ShellWord(user);
  }
  // A binding's name must be a DNS subdomain: lower case, digits, '-' and '.'.
  std::string name = absl::AsciiStrToLower(std::string(user));
  for (char& c : name) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-') c = '-';
  }
  name = fmt::format("{}-{}", name, role);
  if (permission.namespace_name.empty()) {
    return fmt::format("kubectl create clusterrolebinding {} --clusterrole={} {}", name, role,
                       subject);
  }
  return fmt::format("kubectl create rolebinding {} -n {} --clusterrole={} {}", name,
                     permission.namespace_name, role, subject);
}

std::string Forbidden(const httpapi::ApiRequest& request, std::string_view message) {
  const httpapi::Permission permission = DeniedPermission(request, message);
  const std::optional<std::string> user = Quoted(message, "User \"");
  const bool known = user.has_value() && !user->empty();
  return fmt::format(
      "{} may not {}: that needs permission {}. Someone who may grant it runs:\n  {}",
      known ? *user : "you", Action(permission), permission.Describe(),
      GrantCommand(permission, known ? *user : "YOUR_USER"));
}

// kube-aggregator's whole answer when the APIService is not Available.
bool IsAggregationLayerUnavailable(const kube::Response& answer) {
  return answer.status == 503 && absl::StripAsciiWhitespace(answer.body) == "service unavailable";
}

}  // namespace

absl::Status ExplainAnswer(const kube::Response& answer, const httpapi::ApiRequest& request,
                           std::string_view api_server, bool api_served) {
  const std::string_view call = CallName(request);
  const std::string words = Words(answer.body);
  const bool from_aggregator = StatusObject(answer.body).has_value();
  switch (answer.status) {
    case 401:
      return absl::UnauthenticatedError(fmt::format(
          "{} does not accept your credentials ({}): log in again, or renew the token of your "
          "kubeconfig's user ('kubectl auth whoami' checks them)",
          api_server, words));
    case 403:
      return absl::PermissionDeniedError(Forbidden(request, words));
    case 404:
      if (!api_served) {
        return absl::NotFoundError(fmt::format(
            "the cluster does not serve {}/{}: is nodemesh installed with auth.mode=kubernetes? "
            "'kubectl get apiservice {}' shows whether its APIService is registered there ({}); "
            "or use --aggregator HOST:PORT to reach an aggregator directly",
            httpapi::kGroup, httpapi::kVersion, kApiServiceName, api_server));
      }
      break;
    case 503:
      // The aggregation layer's own answers are plain text (http.Error); the aggregator's
      // are Status objects.
      if (!from_aggregator) {
        return absl::UnavailableError(fmt::format(
            "APIService {} is unavailable ({} answered: {}): the aggregator is not running or "
            "the API server cannot reach it; 'kubectl get apiservice {}' says why, or use "
            "--aggregator HOST:PORT to reach an aggregator directly",
            kApiServiceName, api_server, words.empty() ? "503" : words, kApiServiceName));
      }
      return absl::UnavailableError(fmt::format(
          "the aggregator could not answer {} just now: {}: run the command again", call, words));
    case 504:
      return absl::DeadlineExceededError(
          fmt::format("the aggregator behind {} did not answer {} in time ({}): see whether it is "
                      "overloaded, or try a shorter -t window",
                      api_server, call, words));
    case 429:
      return absl::ResourceExhaustedError(
          fmt::format("the aggregator refused {}: {}", call, words));
    default:
      break;
  }
  if (answer.status >= 400 && answer.status < 500) {
    // The aggregator's own words say what is wrong with the request.
    return absl::InvalidArgumentError(fmt::format("the aggregator refused {}: {}", call, words));
  }
  return absl::UnknownError(
      fmt::format("{} failed at the aggregator behind {} (HTTP {}: {}): see "
                  "its log",
                  call, api_server, answer.status, words));
}

namespace {

std::string AddressOf(const kube::Config& config) {
  return fmt::format("the Kubernetes API server {} ({})", config.server, config.source);
}

}  // namespace

KubeApiClient::KubeApiClient(kube::Config config, kube::ExecEnvironment environment)
    : client_(std::move(config), std::move(environment)), address_(AddressOf(client_.config())) {}

absl::Status KubeApiClient::Unanswered(const absl::Status& failure) const {
  // kube's words name the request and the cause; what to do about an API server that does
  // not answer is ours to add.
  if (!absl::IsUnavailable(failure) && !absl::IsDeadlineExceeded(failure)) return failure;
  return absl::Status(failure.code(),
                      fmt::format("{}: is the cluster of {} up? ('kubectl cluster-info' checks "
                                  "it), or use --aggregator HOST:PORT to reach an aggregator "
                                  "directly",
                                  failure.message(), client_.config().source));
}

bool KubeApiClient::ApiServed() {
  const absl::StatusOr<kube::Response> discovery = client_.Request("GET", httpapi::kApiPath);
  // Unknown (no answer): said so by the next attempt, not taken for "not served".
  return !discovery.ok() || discovery->status != 404;
}

absl::Status KubeApiClient::Explain(const kube::Response& answer,
                                    const httpapi::ApiRequest& request) {
  return ExplainAnswer(answer, request, address_, answer.status != 404 || ApiServed());
}

template <typename Response>
absl::StatusOr<Response> KubeApiClient::Get(const httpapi::ApiRequest& request) {
  const absl::StatusOr<kube::Response> answer =
      client_.Request("GET", httpapi::ApiRequestTarget(request));
  if (!answer.ok()) return Unanswered(answer.status());
  if (answer->status < 200 || answer->status >= 300) return Explain(*answer, request);
  Response response;
  if (absl::Status parsed = httpapi::ParseMessageJson(answer->body, &response); !parsed.ok()) {
    return absl::InternalError(
        fmt::format("the answer to {} through {} is not one of the aggregator: {}",
                    CallName(request), address_, parsed.message()));
  }
  return response;
}

absl::StatusOr<v1::StatSummaryResponse> KubeApiClient::StatSummary(
    const v1::StatSummaryRequest& request) {
  return Get<v1::StatSummaryResponse>(request);
}

absl::StatusOr<v1::EdgesResponse> KubeApiClient::Edges(const v1::EdgesRequest& request) {
  return Get<v1::EdgesResponse>(request);
}

absl::StatusOr<v1::TopRoutesResponse> KubeApiClient::TopRoutes(
    const v1::TopRoutesRequest& request) {
  return Get<v1::TopRoutesResponse>(request);
}

absl::StatusOr<v1::ListPodsResponse> KubeApiClient::ListPods(const v1::ListPodsRequest& request) {
  return Get<v1::ListPodsResponse>(request);
}

absl::StatusOr<v1::ViewResponse> KubeApiClient::View(const v1::ViewRequest& request) {
  return Get<v1::ViewResponse>(request);
}

absl::StatusOr<v1::NodeAdminResponse> KubeApiClient::NodeAdmin(
    const v1::NodeAdminRequest& request) {
  const absl::StatusOr<kube::Response> answer =
      client_.Request("GET", httpapi::ApiRequestTarget(request));
  if (!answer.ok()) return Unanswered(answer.status());
  // The agent answers in plain text or its own JSON: a Status is the API server's or the
  // aggregator's, and so are a 404 of an API not served and the aggregation layer's 503.
  const bool relayed = answer->status < 300 || (!StatusObject(answer->body).has_value() &&
                                                !IsAggregationLayerUnavailable(*answer) &&
                                                (answer->status != 404 || ApiServed()));
  if (!relayed) return Explain(*answer, request);
  v1::NodeAdminResponse response;
  response.set_status(static_cast<uint32_t>(answer->status));
  response.set_body(answer->body);
  return response;
}

absl::Status KubeApiClient::Tap(
    const v1::TapRequestSpec& spec, CancelSource& cancel,
    const std::function<bool(const v1::TapStreamMessage&)>& on_message) {
  const httpapi::ApiRequest request = spec;
  std::atomic<bool> stop{false};
  const CancelSource::Registration registration = cancel.OnCancel([&stop] { stop = true; });
  uint64_t events = 0, lines = 0;
  bool stopped = false;
  absl::Status broken;  // a line that is no message, or the aggregator's last word
  const absl::Status streamed = client_.Stream(
      httpapi::ApiRequestTarget(request), kTapStallTimeout,
      [&](std::string_view line) {
        ++lines;
        if (line.find_first_not_of(" \t\r") == std::string_view::npos) return true;
        v1::TapStreamMessage message;
        if (absl::Status parsed = httpapi::ParseMessageJson(line, &message); !parsed.ok()) {
          broken = absl::InternalError(
              fmt::format("a line of the tap stream through {} is not one of the aggregator: {}",
                          address_, parsed.message()));
          return false;
        }
        if (!message.has_event() && !message.has_drops()) {
          // `{}` is the aggregator's heartbeat; a Status, why it ended the stream.
          if (StatusObject(line).has_value()) {
            broken = absl::UnavailableError(fmt::format(
                "the aggregator ended the tap stream ({}): run the command again", Words(line)));
            return false;
          }
          return true;
        }
        if (message.has_event()) ++events;
        if (!on_message(message)) {
          stopped = true;
          return false;
        }
        return true;
      },
      stop);
  if (stopped || cancel.cancelled()) return absl::OkStatus();
  if (!broken.ok()) return broken;
  if (streamed.ok()) {
    if (spec.max_events() != 0 && events >= spec.max_events()) return absl::OkStatus();
    return absl::UnavailableError(fmt::format(
        "the aggregator behind {} ended the tap stream: run the command again", address_));
  }
  if (const std::optional<kube::Response> answer = kube::ResponseOf(streamed)) {
    return Explain(*answer, request);
  }
  if (absl::IsDeadlineExceeded(streamed) && lines > 0) {
    return absl::UnavailableError(fmt::format(
        "the tap stream through {} stalled (nothing for {}s, not even a heartbeat): run the "
        "command again",
        address_, std::chrono::duration_cast<std::chrono::seconds>(kTapStallTimeout).count()));
  }
  return Unanswered(streamed);
}

}  // namespace nodemesh::cli
