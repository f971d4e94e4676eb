// libFuzzer target: one HTTP/2 connection, both directions, fed as parsers/fuzz_harness.h
// describes. Unless the client's bytes start with 'P', the connection preface is fed
// first, so that most inputs reach the frames.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <vector>

#include "parsers/fuzz_harness.h"
#include "parsers/http2/parser.h"

namespace {

using nodemesh::parsers::ParserConfig;
using nodemesh::parsers::Peer;
using nodemesh::parsers::RequestStart;
using nodemesh::parsers::ResponseStart;
using nodemesh::parsers::StreamEnd;
using nodemesh::parsers::Timestamp;
using nodemesh::parsers::fuzz::Record;

// A stream starts once with a growing client (odd) id, gets at most one final response
// before its end, ends at most once with what its start and response said, and none is
// left open once the connection has closed.
class Contract {
 public:
  void OnRequestStart(const RequestStart& request) {
    if (request.stream_id <= last_started_ || request.stream_id % 2 == 0) __builtin_trap();
    last_started_ = request.stream_id;
    streams_[request.stream_id] = Open{request.at, 0, false};
  }
  void OnResponseStart(const ResponseStart& response) {
    auto it = streams_.find(response.stream_id);
    if (it == streams_.end() || it->second.responded) __builtin_trap();
    if (response.status < 200 || response.status > 999) __builtin_trap();
    it->second.responded = true;
    it->second.response_at = response.at;
  }
  void OnStreamEnd(const StreamEnd& end) {
    auto it = streams_.find(end.stream_id);
    if (it == streams_.end()) __builtin_trap();
    if (end.request_at != it->second.request_at) __builtin_trap();
    if (end.response_at != it->second.response_at) __builtin_trap();
    if (it->second.responded != (end.status != 0)) __builtin_trap();
    streams_.erase(it);
  }
  void Closed() const {
    if (!streams_.empty()) __builtin_trap();
  }

 private:
  struct Open {
    Timestamp request_at = 0;
    Timestamp response_at = 0;
    bool responded = false;
  };
  uint32_t last_started_ = 0;
  std::map<uint32_t, Open> streams_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const ParserConfig config = [] {
    ParserConfig c;
    c.captured_headers = {"content-type", "user-agent", "grpc-encoding"};
    return c;
  }();
  static const ParserConfig small = [] {
    ParserConfig c;
    c.limits.max_header_bytes = 512;
    c.limits.max_open_streams = 4;
    c.limits.max_frame_bytes = 1024;
    return c;
  }();

  std::vector<Record> records = nodemesh::parsers::fuzz::DecodeRecords(data, size);
  const auto first_client = std::find_if(records.begin(), records.end(), [](const Record& r) {
    return r.from == Peer::kClient && !r.bytes.empty();
  });
  if (first_client == records.end() || first_client->bytes[0] != 'P') {
    records.insert(records.begin(), Record{.bytes = nodemesh::parsers::http2::kClientPreface});
  }
  nodemesh::parsers::fuzz::CheckInput<nodemesh::parsers::http2::Parser, Contract>(records, config,
                                                                                  small);
  return 0;
}
