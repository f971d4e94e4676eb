// libFuzzer target: one HTTP/1 connection, both directions, fed as parsers/fuzz_harness.h
// describes.
#include <cstddef>
#include <cstdint>

#include "parsers/fuzz_harness.h"
#include "parsers/http1/parser.h"

namespace {

using nodemesh::parsers::ParserConfig;
using nodemesh::parsers::RequestStart;
using nodemesh::parsers::ResponseStart;
using nodemesh::parsers::StreamEnd;

// The contract that holds for any input: requests start with growing ids, and nothing
// answers or ends a request that has not started.
class Contract {
 public:
  void OnRequestStart(const RequestStart& request) {
    if (request.stream_id <= last_started_) __builtin_trap();
    last_started_ = request.stream_id;
  }
  void OnResponseStart(const ResponseStart& response) const {
    if (response.stream_id > last_started_) __builtin_trap();
  }
  void OnStreamEnd(const StreamEnd& end) const {
    if (end.stream_id > last_started_) __builtin_trap();
  }
  void Closed() const {}

 private:
  uint32_t last_started_ = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const ParserConfig config = [] {
    ParserConfig c;
    c.captured_headers = {"content-type", "user-agent", "x-request-id"};
    return c;
  }();
  static const ParserConfig small = [] {
    ParserConfig c = config;
    c.limits.max_header_bytes = 4096;
    c.limits.max_pending_requests = 8;
    c.limits.max_buffered_client_bytes = 1024;
    return c;
  }();
  nodemesh::parsers::fuzz::CheckInput<nodemesh::parsers::http1::Parser, Contract>(
      nodemesh::parsers::fuzz::DecodeRecords(data, size), config, small);
  return 0;
}
