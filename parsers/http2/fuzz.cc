// libFuzzer target: one HTTP/2 connection, both directions.
//
// The input is a sequence of records, the format the connection-parser fuzz targets share
// (test/lib/fuzz_input.h; parsers/corpus/make_seeds.py writes seeds from captures):
//
//   flags (1 byte) | length (2 bytes, little endian) | bytes
//
// flags bit 0: the server sent it (else the client); bit 1: that peer then half-closed;
// bits 2-7: when non-zero, the bytes are fed in pieces of that many bytes. A record cut
// short by the end of the input is fed as far as it goes. Unless the client's bytes start
// with 'P', the connection preface is fed first, so that most inputs reach the frames.
//
// Each input runs three times: fed in the pieces the flags ask for, fed a record at a time
// (the events must be identical: parsing may not depend on how bytes are split), and with
// small limits to reach the limit paths. Every run checks the event contract.
#include <cstddef>
#include <cstdint>
#include <map>
#include <string_view>
#include <variant>
#include <vector>

#include "parsers/http2/parser.h"

namespace {

using nodemesh::parsers::ConnectionParser;
using nodemesh::parsers::EventSink;
using nodemesh::parsers::ParserConfig;
using nodemesh::parsers::Peer;
using nodemesh::parsers::RequestStart;
using nodemesh::parsers::ResponseStart;
using nodemesh::parsers::StreamEnd;
using nodemesh::parsers::Timestamp;

struct Record {
  Peer from = Peer::kClient;
  bool half_close = false;
  size_t piece = 0;  // 0: whole
  std::string_view bytes;
};

std::vector<Record> ParseRecords(std::string_view input) {
  std::vector<Record> records;
  while (input.size() >= 3) {
    const auto flags = static_cast<uint8_t>(input[0]);
    const size_t length =
        static_cast<uint8_t>(input[1]) | (static_cast<size_t>(static_cast<uint8_t>(input[2])) << 8);
    input.remove_prefix(3);
    Record record;
    record.from = (flags & 1) != 0 ? Peer::kServer : Peer::kClient;
    record.half_close = (flags & 2) != 0;
    record.piece = flags >> 2;
    record.bytes = input.substr(0, std::min(length, input.size()));
    input.remove_prefix(record.bytes.size());
    records.push_back(record);
  }
  return records;
}

// Records every event and traps on any break of the event contract: a stream starts once
// with a growing id, gets at most one response before its end, and ends at most once.
class CheckingSink final : public EventSink {
 public:
  using Event = std::variant<RequestStart, ResponseStart, StreamEnd>;

  void OnRequestStart(const RequestStart& request) override {
    if (request.stream_id <= last_started_ || request.stream_id % 2 == 0) __builtin_trap();
    last_started_ = request.stream_id;
    streams_[request.stream_id] = Open{request.at, 0, false};
    events.emplace_back(request);
  }
  void OnResponseStart(const ResponseStart& response) override {
    auto it = streams_.find(response.stream_id);
    if (it == streams_.end() || it->second.responded) __builtin_trap();
    if (response.status < 200 || response.status > 999) __builtin_trap();
    it->second.responded = true;
    it->second.response_at = response.at;
    events.emplace_back(response);
  }
  void OnStreamEnd(const StreamEnd& end) override {
    auto it = streams_.find(end.stream_id);
    if (it == streams_.end()) __builtin_trap();
    if (end.request_at != it->second.request_at) __builtin_trap();
    if (end.response_at != it->second.response_at) __builtin_trap();
    if (it->second.responded != (end.status != 0)) __builtin_trap();
    streams_.erase(it);
    events.emplace_back(end);
  }
  // After Close(), no stream may be left without its end.
  void CheckAllEnded() const {
    if (!streams_.empty()) __builtin_trap();
  }

  std::vector<Event> events;

 private:
  struct Open {
    Timestamp request_at = 0;
    Timestamp response_at = 0;
    bool responded = false;
  };
  uint32_t last_started_ = 0;
  std::map<uint32_t, Open> streams_;
};

void Feed(ConnectionParser& parser, const std::vector<Record>& records, bool preface,
          bool whole_records) {
  Timestamp now = 0;
  if (preface) parser.Feed(Peer::kClient, nodemesh::parsers::http2::kClientPreface, now);
  for (const Record& record : records) {
    ++now;
    std::string_view bytes = record.bytes;
    const size_t piece = whole_records || record.piece == 0 ? bytes.size() : record.piece;
    while (!bytes.empty()) {
      parser.Feed(record.from, bytes.substr(0, piece), now);
      bytes.remove_prefix(std::min(piece, bytes.size()));
    }
    if (record.half_close) parser.EndOfInput(record.from, now);
  }
  parser.Close(now + 1);
}

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

  const std::vector<Record> records =
      ParseRecords(std::string_view(reinterpret_cast<const char*>(data), size));
  bool preface = true;
  for (const Record& record : records) {
    if (record.from == Peer::kClient && !record.bytes.empty()) {
      preface = record.bytes[0] != 'P';
      break;
    }
  }

  CheckingSink split_sink;
  nodemesh::parsers::http2::Parser split(config, split_sink);
  Feed(split, records, preface, /*whole_records=*/false);
  split_sink.CheckAllEnded();

  CheckingSink whole_sink;
  nodemesh::parsers::http2::Parser whole(config, whole_sink);
  Feed(whole, records, preface, /*whole_records=*/true);
  if (split_sink.events != whole_sink.events || split.state() != whole.state() ||
      split.error() != whole.error() || split.error_detail() != whole.error_detail()) {
    __builtin_trap();
  }

  CheckingSink small_sink;
  nodemesh::parsers::http2::Parser limited(small, small_sink);
  Feed(limited, records, preface, /*whole_records=*/false);
  small_sink.CheckAllEnded();
  return 0;
}
