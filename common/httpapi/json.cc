#include "common/httpapi/json.h"

#include <google/protobuf/util/json_util.h>

#include "common/base/format.h"
#include "nlohmann/json.hpp"

namespace nodemesh::httpapi {

std::string MessageJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.always_print_primitive_fields = true;
  std::string json;
  // Printing a message whose fields are all valid cannot fail.
  (void)google::protobuf::util::MessageToJsonString(message, &json, options);
  json += '\n';
  return json;
}

absl::Status ParseMessageJson(std::string_view json, google::protobuf::Message* message) {
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;
  const auto parsed = google::protobuf::util::JsonStringToMessage(
      google::protobuf::StringPiece(json.data(), json.size()), message, options);
  if (parsed.ok()) return absl::OkStatus();
  return absl::InvalidArgumentError(
      fmt::format("not a {} in JSON: {}", message->GetDescriptor()->name(),
                  std::string(parsed.message().data(), parsed.message().size())));
}

ErrorAnswer ErrorAnswerFor(const absl::Status& status, const Permission* denied) {
  struct Kind {
    int http_status;
    const char* reason;
  };
  const Kind kind = [&]() -> Kind {
    switch (status.code()) {
      case absl::StatusCode::kInvalidArgument:
      case absl::StatusCode::kFailedPrecondition:
      case absl::StatusCode::kOutOfRange:
        return {400, "BadRequest"};
      case absl::StatusCode::kUnauthenticated:
        return {401, "Unauthorized"};
      case absl::StatusCode::kPermissionDenied:
        return {403, "Forbidden"};
      case absl::StatusCode::kNotFound:
        return {404, "NotFound"};
      case absl::StatusCode::kResourceExhausted:
        return {429, "TooManyRequests"};
      case absl::StatusCode::kUnavailable:
        return {503, "ServiceUnavailable"};
      case absl::StatusCode::kDeadlineExceeded:
        return {504, "Timeout"};
      default:
        return {500, "InternalError"};
    }
  }();
  nlohmann::json body = {{"kind", "Status"},
                         {"apiVersion", "v1"},
                         {"metadata", nlohmann::json::object()},
                         {"status", "Failure"},
                         {"message", std::string(status.message())},
                         {"reason", kind.reason},
                         {"code", kind.http_status}};
  if (denied != nullptr) {
    body["details"] = {{"group", kGroup}, {"kind", denied->resource}};
    if (!denied->name.empty()) body["details"]["name"] = denied->name;
  }
  return {kind.http_status, body.dump() + "\n", kind.http_status == 503};
}

}  // namespace nodemesh::httpapi
