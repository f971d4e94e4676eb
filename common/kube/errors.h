// What the Kubernetes API server's answers mean, as statuses that carry its own words: a 403
// becomes PERMISSION_DENIED with the Status object's message ("pods is forbidden: User ...
// cannot list resource ..."), a 401 UNAUTHENTICATED, a 404 NOT_FOUND, a 410 Gone
// FAILED_PRECONDITION with kGoneReason in the message. Every message starts with what was
// asked, in the API's own words ("list pods", "watch pods in emojivoto").
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace nodemesh::kube {

// In the message of the status a 410 Gone maps to (so callers can tell it from others).
inline constexpr std::string_view kGoneReason = "resourceVersion too old (410 Gone)";

// An answer of the API server.
struct Response {
  long status = 0;  // HTTP status
  std::string body;
};

// The error a non-2xx response means (see the top of this file); `what` says what was
// asked ("list pods"). The error carries the response (ResponseOf).
absl::Status StatusFromResponse(const Response& response, std::string_view what);

// The answer an error of StatusFromResponse was made from (a stream's refusal, say, which
// reaches its caller only as an error); nullopt for any other error.
std::optional<Response> ResponseOf(const absl::Status& status);

// What a request does, in the API's own words, for messages: "list pods",
// "get pods emojivoto/web-1", "watch pods in emojivoto", "patch namespaces emojivoto". A
// path that is not a resource path is described as "GET /path".
std::string DescribeRequest(std::string_view method, std::string_view path);

}  // namespace nodemesh::kube
