// The API's answers as JSON: the gRPC API's messages in protobuf's JSON mapping (so that
// `kubectl get --raw` and meshctl read what the gRPC clients read), a tap as one message per
// line, and errors as Kubernetes Status objects, with the HTTP status each error takes.
#pragma once

#include <google/protobuf/message.h>

#include <chrono>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "common/httpapi/permissions.h"

namespace nodemesh::httpapi {

// `message` in protobuf's canonical JSON, every field present (zeros too: a reader need not
// know the defaults), on one line, ended by '\n': an answer, or one line of a tap.
std::string MessageJson(const google::protobuf::Message& message);

// Reads what MessageJson wrote, ignoring fields this build does not know (a newer aggregator
// may answer with more). INVALID_ARGUMENT naming what is wrong.
absl::Status ParseMessageJson(std::string_view json, google::protobuf::Message* message);

// An error as the API answers it.
struct ErrorAnswer {
  int http_status = 500;
  std::string body;  // a Kubernetes Status object (application/json)
  // 503: send Retry-After: 1 (the condition is expected to pass; clients may retry).
  bool retry_after = false;
};

// INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE 400 BadRequest; UNAUTHENTICATED 401
// Unauthorized; PERMISSION_DENIED 403 Forbidden; NOT_FOUND 404 NotFound; RESOURCE_EXHAUSTED
// 429 TooManyRequests; UNAVAILABLE 503 ServiceUnavailable; DEADLINE_EXCEEDED 504 Timeout;
// anything else 500 InternalError. With `denied`, the Status names its resource (details),
// as the API server's own 403 does.
ErrorAnswer ErrorAnswerFor(const absl::Status& status, const Permission* denied = nullptr);

}  // namespace nodemesh::httpapi
