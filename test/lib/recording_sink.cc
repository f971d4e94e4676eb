#include "test/lib/recording_sink.h"

#include <fmt/format.h>

namespace nodemesh::testing {
namespace {

std::string HeadersToString(const std::vector<parsers::Header>& headers) {
  std::string out;
  for (const parsers::Header& header : headers)
    out += fmt::format(" {}={}", header.name, header.value);
  return out;
}

struct Printer {
  std::string operator()(const parsers::RequestStart& r) const {
    return fmt::format("req id={} at={} {} {}://{}{} grpc={}{}", r.stream_id, r.at, r.method,
                       r.scheme, r.authority, r.path, r.grpc, HeadersToString(r.headers));
  }
  std::string operator()(const parsers::ResponseStart& r) const {
    return fmt::format("rsp id={} at={} status={}{}", r.stream_id, r.at, r.status,
                       HeadersToString(r.headers));
  }
  std::string operator()(const parsers::StreamEnd& e) const {
    return fmt::format(
        "end id={} reason={} req_at={} rsp_at={} at={} status={} req_bytes={} rsp_bytes={} "
        "req_msgs={} rsp_msgs={} grpc_status={} grpc_message='{}' error_code={}",
        e.stream_id, static_cast<int>(e.reason), e.request_at, e.response_at, e.at, e.status,
        e.request_bytes, e.response_bytes, e.request_messages, e.response_messages,
        e.grpc_status ? std::to_string(*e.grpc_status) : "-", e.grpc_message, e.error_code);
  }
};

}  // namespace

std::string ToString(const Event& event) { return std::visit(Printer{}, event); }

std::string RecordingSink::Dump() const {
  std::string out;
  for (const Event& event : events) out += ToString(event) + "\n";
  return out;
}

}  // namespace nodemesh::testing
