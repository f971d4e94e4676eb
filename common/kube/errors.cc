#include "common/kube/errors.h"

#include <algorithm>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "common/base/format.h"
#include "nlohmann/json.hpp"

namespace nodemesh::kube {
namespace {

std::string_view ReasonPhrase(long status) {
  switch (status) {
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 406:
      return "Not Acceptable";
    case 409:
      return "Conflict";
    case 410:
      return "Gone";
    case 413:
      return "Request Entity Too Large";
    case 415:
      return "Unsupported Media Type";
    case 422:
      return "Unprocessable Entity";
    case 429:
      return "Too Many Requests";
    case 500:
      return "Internal Server Error";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    default:
      return {};
  }
}

absl::StatusCode CodeOf(long status, std::string_view reason) {
  switch (status) {
    case 401:
      return absl::StatusCode::kUnauthenticated;
    case 403:
      return absl::StatusCode::kPermissionDenied;
    case 404:
      return absl::StatusCode::kNotFound;
    case 409:
      return reason == "AlreadyExists" ? absl::StatusCode::kAlreadyExists
                                       : absl::StatusCode::kAborted;
    case 410:
      return absl::StatusCode::kFailedPrecondition;
    default:
      return status >= 500 && status < 600 ? absl::StatusCode::kUnavailable
                                           : absl::StatusCode::kUnknown;
  }
}

// Where an error keeps the response it was made from (ResponseOf).
constexpr char kStatusPayload[] = "nodemesh.io/kube/response-status";
constexpr char kBodyPayload[] = "nodemesh.io/kube/response-body";

}  // namespace

absl::Status StatusFromResponse(const Response& response, std::string_view what) {
  if (response.status >= 200 && response.status < 300) return absl::OkStatus();
  std::string message;
  std::string reason;
  const nlohmann::json body =
      nlohmann::json::parse(response.body, nullptr, /*allow_exceptions=*/false);
  if (body.is_object() && body.value("kind", "") == "Status") {
    message = body.value("message", "");
    reason = body.value("reason", "");
  } else {
    // Not a Status (a proxy's page, plain text): its start, on one line.
    std::string text(absl::StripAsciiWhitespace(response.body).substr(0, 200));
    std::replace(text.begin(), text.end(), '\n', ' ');
    message = std::move(text);
  }
  std::string text;
  if (response.status == 410) {
    text = fmt::format("{}: {}", what, kGoneReason);
  } else {
    text = fmt::format("{}: {}", what, response.status);
    const std::string_view phrase = ReasonPhrase(response.status);
    if (!phrase.empty()) text += fmt::format(" {}", phrase);
  }
  if (!message.empty()) text += fmt::format(": {}", message);

  absl::Status status(CodeOf(response.status, reason), text);
  status.SetPayload(kStatusPayload, absl::Cord(std::to_string(response.status)));
  status.SetPayload(kBodyPayload, absl::Cord(response.body));
  return status;
}

std::optional<Response> ResponseOf(const absl::Status& status) {
  const auto code = status.GetPayload(kStatusPayload);  // absl::optional
  const auto body = status.GetPayload(kBodyPayload);
  long number = 0;
  if (!code || !body || !absl::SimpleAtoi(std::string(*code), &number)) return std::nullopt;
  return Response{number, std::string(*body)};
}

std::string DescribeRequest(std::string_view method, std::string_view path) {
  const size_t question = path.find('?');
  const std::string_view query = question == std::string_view::npos ? "" : path.substr(question);
  const std::string_view bare = path.substr(0, question);
  std::vector<std::string_view> segments;
  for (size_t at = 0; at < bare.size();) {
    const size_t slash = bare.find('/', at);
    const size_t end = slash == std::string_view::npos ? bare.size() : slash;
    if (end > at) segments.push_back(bare.substr(at, end - at));
    at = end + 1;
  }
  size_t first = 0;
  if (segments.size() >= 2 && segments[0] == "api") {
    first = 2;  // /api/v1
  } else if (segments.size() >= 3 && segments[0] == "apis") {
    first = 3;  // /apis/group/version
  } else {
    return fmt::format("{} {}", method, bare);
  }
  std::string namespace_name;
  if (segments.size() >= first + 3 && segments[first] == "namespaces") {
    namespace_name = std::string(segments[first + 1]);
    first += 2;
  }
  if (segments.size() <= first) return fmt::format("{} {}", method, bare);
  const std::string_view resource = segments[first];
  const bool named = segments.size() > first + 1;
  std::string verb;
  if (method == "GET") {
    const bool watch = query.find("watch=1") != std::string_view::npos ||
                       query.find("watch=true") != std::string_view::npos;
    verb = watch ? "watch" : named ? "get" : "list";
  } else if (method == "PATCH") {
    verb = "patch";
  } else if (method == "POST") {
    verb = "create";
  } else if (method == "PUT") {
    verb = "update";
  } else if (method == "DELETE") {
    verb = named ? "delete" : "deletecollection";
  } else {
    verb = std::string(method);
  }
  std::string description = fmt::format("{} {}", verb, resource);
  if (named) {
    description += ' ';
    if (!namespace_name.empty()) description += namespace_name + "/";
    description += segments[first + 1];
    for (size_t i = first + 2; i < segments.size(); ++i) {
      description += '/';
      description += segments[i];
    }
  } else if (!namespace_name.empty()) {
    description += " in " + namespace_name;
  }
  return description;
}

}  // namespace nodemesh::kube
