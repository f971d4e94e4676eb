// What the connection-parser fuzz targets (http1/fuzz.cc, http2/fuzz.cc) share: their input
// format and the runs each input goes through.
//
// An input is a sequence of records, so that seeds made from recorded conversations
// (parsers/corpus/make_seeds.py, from test/fixtures/parsers/*.capture) reach deep into each
// protocol while the fuzzer still varies who sends what, and how it is split:
//
//   flags (1 byte) | length (2 bytes, little endian) | bytes
//
// flags bit 0: the server sent it (else the client); bit 1: that peer then half-closed;
// bits 2-7: when non-zero, the bytes are fed in pieces of that many bytes. A record cut
// short by the end of the input is fed as far as it goes; fewer than 3 bytes left are
// ignored.
//
// Parsers promise that any split of the same bytes yields the same events (parser.h), and
// that giving back their idle memory changes none, so every input is fed twice, in the
// pieces the flags ask for with ReleaseIdleMemory after each piece, and a record at a time
// without it, and the two runs must agree; a third run with small limits reaches the limit
// paths, where the point at which a limit trips may depend on the split. Every run checks the
// protocol's event contract. Failures trap, so that libFuzzer keeps the input.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "parsers/parser.h"

namespace nodemesh::parsers::fuzz {

struct Record {
  Peer from = Peer::kClient;
  bool half_close = false;
  size_t piece = 0;  // 0: whole
  std::string_view bytes;
};

// The records point into `input`, which must outlive them.
inline std::vector<Record> DecodeRecords(std::string_view input) {
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

inline std::vector<Record> DecodeRecords(const uint8_t* data, size_t size) {
  return DecodeRecords(std::string_view(reinterpret_cast<const char*>(data), size));
}

enum class Split : uint8_t { kFlagged, kWholeRecords };

// Each record gets its own timestamp, so that timestamps in events tell records apart but
// never depend on the split.
inline void Feed(ConnectionParser& parser, const std::vector<Record>& records, Split split) {
  Timestamp now = 0;
  for (const Record& record : records) {
    ++now;
    std::string_view bytes = record.bytes;
    const size_t piece =
        split == Split::kWholeRecords || record.piece == 0 ? bytes.size() : record.piece;
    while (!bytes.empty()) {
      parser.Feed(record.from, bytes.substr(0, piece), now);
      bytes.remove_prefix(std::min(piece, bytes.size()));
      if (split == Split::kFlagged) parser.ReleaseIdleMemory();
    }
    if (record.half_close) parser.EndOfInput(record.from, now);
  }
  parser.Close(now + 1);
}

using Event = std::variant<RequestStart, ResponseStart, StreamEnd>;

// What one run produced: two runs over the same bytes must produce equal ones.
struct Outcome {
  std::vector<Event> events;
  ParserState state = ParserState::kParsing;
  ParseError error = ParseError::kNone;
  std::string error_detail;

  bool operator==(const Outcome&) const = default;
};

// Hands every event to `Contract`, the protocol's checks, and records it. A Contract has
// OnRequestStart, OnResponseStart and OnStreamEnd taking the event, and Closed(), called
// once the parser has closed; each traps on a break of the contract.
template <typename Contract>
class CheckingSink final : public EventSink {
 public:
  void OnRequestStart(const RequestStart& request) override {
    contract.OnRequestStart(request);
    events.emplace_back(request);
  }
  void OnResponseStart(const ResponseStart& response) override {
    contract.OnResponseStart(response);
    events.emplace_back(response);
  }
  void OnStreamEnd(const StreamEnd& end) override {
    contract.OnStreamEnd(end);
    events.emplace_back(end);
  }

  Contract contract;
  std::vector<Event> events;
};

template <typename Parser, typename Contract>
Outcome Run(const ParserConfig& config, const std::vector<Record>& records, Split split) {
  CheckingSink<Contract> sink;
  Parser parser(config, sink);
  Feed(parser, records, split);
  sink.contract.Closed();
  return Outcome{std::move(sink.events), parser.state(), parser.error(),
                 std::string(parser.error_detail())};
}

// The runs described at the top of this file.
template <typename Parser, typename Contract>
void CheckInput(const std::vector<Record>& records, const ParserConfig& config,
                const ParserConfig& small_limits) {
  if (Run<Parser, Contract>(config, records, Split::kFlagged) !=
      Run<Parser, Contract>(config, records, Split::kWholeRecords)) {
    __builtin_trap();
  }
  Run<Parser, Contract>(small_limits, records, Split::kFlagged);
}

}  // namespace nodemesh::parsers::fuzz
