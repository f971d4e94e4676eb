// libFuzzer target: one HTTP/1 connection, both directions, from test/lib/fuzz_input.h.
#include <cstddef>
#include <cstdint>

#include "parsers/http1/parser.h"
#include "test/lib/fuzz_input.h"

namespace {

// Checks the contract that holds for any input: events of a stream come in order, and a
// stopped parser stays stopped.
class CheckingSink final : public nodemesh::parsers::EventSink {
 public:
  void OnRequestStart(const nodemesh::parsers::RequestStart& request) override {
    if (request.stream_id <= last_started_) __builtin_trap();
    last_started_ = request.stream_id;
  }
  void OnResponseStart(const nodemesh::parsers::ResponseStart& response) override {
    if (response.stream_id > last_started_) __builtin_trap();
  }
  void OnStreamEnd(const nodemesh::parsers::StreamEnd& end) override {
    if (end.stream_id > last_started_) __builtin_trap();
  }

 private:
  uint32_t last_started_ = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const nodemesh::parsers::ParserConfig config = [] {
    nodemesh::parsers::ParserConfig c;
    c.limits.max_header_bytes = 4096;  // small limits reach the limit paths too
    c.limits.max_pending_requests = 8;
    c.limits.max_buffered_client_bytes = 1024;
    c.captured_headers = {"content-type", "user-agent", "x-request-id"};
    return c;
  }();
  CheckingSink sink;
  nodemesh::parsers::http1::Parser parser(config, sink);
  nodemesh::testing::FeedFuzzInput(
      parser, std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
