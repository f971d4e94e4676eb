// meshctl tap: Linkerd's req/rsp/end lines, with pods for peers and exact durations.
#include <fmt/format.h>

#include <algorithm>

#include "cli/resource.h"
#include "cli/views/common.h"
#include "cli/views/format.h"
#include "cli/views/views.h"

namespace nodemesh::cli {
namespace {

using views::Json;

// "emojivoto/web-7d9f" for a pod, the address for anything outside the inventory.
std::string Peer(const v1::Identity& identity, const std::string& address) {
  if (!IsExternal(identity)) {
    return fmt::format("{}/{}", identity.namespace_(), identity.pod());
  }
  return address.empty() ? "unknown" : address;
}

std::string_view Proxy(v1::Direction direction) {
  switch (direction) {
    case v1::OUTBOUND:
      return "out";
    case v1::INBOUND:
      return "in";
    default:
      return "-";
  }
}

std::string_view EventType(const v1::TapEvent& event) {
  switch (event.kind_case()) {
    case v1::TapEvent::kRequest:
      return "req";
    case v1::TapEvent::kResponse:
      return "rsp";
    case v1::TapEvent::kEnd:
      return "end";
    default:
      return "unknown";
  }
}

// Why a stream ended, as a key=value pair; empty for a complete one.
std::string EndReason(const v1::TapEnd& end) {
  switch (end.reason()) {
    case v1::TapEnd::RESET:
      return fmt::format("reset={}", Http2ErrorName(end.error_code()));
    case v1::TapEnd::REFUSED:  // above the last stream id of a GOAWAY: never processed
      return fmt::format("goaway={}", Http2ErrorName(end.error_code()));
    case v1::TapEnd::ABORTED:
      return "aborted=connection-closed";
    default:
      return "";
  }
}

std::string_view EndReasonName(v1::TapEnd::Reason reason) {
  switch (reason) {
    case v1::TapEnd::COMPLETE:
      return "complete";
    case v1::TapEnd::RESET:
      return "reset";
    case v1::TapEnd::REFUSED:
      return "refused";
    case v1::TapEnd::ABORTED:
      return "aborted";
    default:
      return "unknown";
  }
}

// "emojivoto/web-svc": the Service the caller dialled, next to the pod the node's NAT chose.
std::string Service(const v1::Identity& service) {
  return fmt::format("{}/{}", service.namespace_(), service.owner_name());
}

std::string TapLine(const v1::TapEvent& event, bool wide) {
  std::string line =
      fmt::format("{} id={} proxy={} src={} dst={}", EventType(event), event.request_id(),
                  Proxy(event.direction()), Peer(event.source(), event.source_address()),
                  Peer(event.destination(), event.destination_address()));
  if (event.has_destination_service()) {
    line += " dst_svc=" + Service(event.destination_service());
  }
  switch (event.kind_case()) {
    case v1::TapEvent::kRequest: {
      const v1::TapRequest& request = event.request();
      line += fmt::format(" :method={} :authority={} :path={}", request.method(),
                          request.authority(), request.path());
      break;
    }
    case v1::TapEvent::kResponse:
      line += fmt::format(" :status={} latency={}", event.response().status(),
                          FormatLatency(event.response().latency_ns()));
      break;
    case v1::TapEvent::kEnd: {
      const v1::TapEnd& end = event.end();
      if (end.grpc_status() >= 0) line += " grpc-status=" + GrpcStatusName(end.grpc_status());
      if (std::string reason = EndReason(end); !reason.empty()) line += " " + reason;
      line += fmt::format(" duration={} response-length={}", FormatLatency(end.duration_ns()),
                          FormatBytes(end.response_bytes()));
      break;
    }
    default:
      break;
  }
  if (wide) {
    line += fmt::format(" src_addr={} dst_addr={}", views::OrDash(event.source_address()),
                        views::OrDash(event.destination_address()));
    // Addresses outside the inventory belong to no workload: nothing to add for them.
    if (std::string workload = WorkloadLabel(event.source()); !workload.empty()) {
      line += " src_res=" + workload;
    }
    if (std::string workload = WorkloadLabel(event.destination()); !workload.empty()) {
      line += " dst_res=" + workload;
    }
  }
  return line + "\n";
}

Json HeadersJson(const google::protobuf::Map<std::string, std::string>& headers) {
  // A protobuf map has no order of its own.
  std::vector<std::pair<std::string, std::string>> sorted(headers.begin(), headers.end());
  std::sort(sorted.begin(), sorted.end());
  Json json = Json::object();
  for (auto& [name, value] : sorted) json[name] = value;
  return json;
}

Json PeerJson(const v1::Identity& identity, const std::string& address) {
  Json json;
  json["external"] = IsExternal(identity);
  json["namespace"] = identity.namespace_();
  json["pod"] = identity.pod();
  json["resource"] = WorkloadLabel(identity);
  json["service_account"] = identity.service_account();
  json["node"] = identity.node();
  json["address"] = address;
  return json;
}

std::string TapJson(const v1::TapEvent& event) {
  const auto milliseconds = [](int64_t nanoseconds) {
    return static_cast<double>(nanoseconds) / 1e6;
  };
  Json json;
  json["type"] = EventType(event);
  json["id"] = event.request_id();
  json["proxy"] = Proxy(event.direction());
  json["unix_micros"] = event.unix_micros();
  json["source"] = PeerJson(event.source(), event.source_address());
  json["destination"] = PeerJson(event.destination(), event.destination_address());
  if (event.has_destination_service()) {
    Json service;
    service["namespace"] = event.destination_service().namespace_();
    service["name"] = event.destination_service().owner_name();
    json["destination_service"] = std::move(service);
  } else {
    json["destination_service"] = nullptr;
  }
  switch (event.kind_case()) {
    case v1::TapEvent::kRequest: {
      const v1::TapRequest& request = event.request();
      json["method"] = request.method();
      json["scheme"] = request.scheme();
      json["authority"] = request.authority();
      json["path"] = request.path();
      json["grpc"] = request.grpc();
      json["headers"] = HeadersJson(request.headers());
      break;
    }
    case v1::TapEvent::kResponse:
      json["status"] = event.response().status();
      json["latency_ms"] = milliseconds(event.response().latency_ns());
      json["headers"] = HeadersJson(event.response().headers());
      break;
    case v1::TapEvent::kEnd: {
      const v1::TapEnd& end = event.end();
      const bool grpc = end.grpc_status() >= 0;
      const bool has_error_code =
          end.reason() == v1::TapEnd::RESET || end.reason() == v1::TapEnd::REFUSED;
      json["reason"] = EndReasonName(end.reason());
      json["grpc_status"] = grpc ? Json(GrpcStatusName(end.grpc_status())) : Json(nullptr);
      json["grpc_status_code"] = grpc ? Json(end.grpc_status()) : Json(nullptr);
      json["grpc_message"] = end.grpc_message();
      json["error_code"] = has_error_code ? Json(Http2ErrorName(end.error_code())) : Json(nullptr);
      json["duration_ms"] = milliseconds(end.duration_ns());
      json["request_bytes"] = end.request_bytes();
      json["response_bytes"] = end.response_bytes();
      json["request_messages"] = end.request_messages();
      json["response_messages"] = end.response_messages();
      break;
    }
    default:
      break;
  }
  return json.dump() + "\n";
}

}  // namespace

std::string RenderTapEvent(const v1::TapEvent& event, OutputFormat format) {
  if (format == OutputFormat::kJson) return TapJson(event);
  return TapLine(event, format == OutputFormat::kWide);
}

std::string RenderTapDrops(const v1::TapDrops& drops) {
  const uint64_t total = drops.agent_dropped() + drops.stream_dropped();
  return fmt::format(
      "tap: {} event{} dropped (agents {}, stream {}): raise --max-rps or narrow the match\n",
      total, total == 1 ? "" : "s", drops.agent_dropped(), drops.stream_dropped());
}

}  // namespace nodemesh::cli
