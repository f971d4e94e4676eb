// The HTTP/1 parser on connections recorded from real peers (test/fixtures/parsers,
// see record.py there for what each capture holds).
#include <catch2/catch.hpp>
#include <random>

#include "parsers/http1/parser.h"
#include "test/lib/capture.h"
#include "test/lib/recording_sink.h"

namespace nodemesh::parsers::http1 {
namespace {

using testing::RecordingSink;

struct Replayed {
  RecordingSink sink;
  ParserState state = ParserState::kParsing;
  ParseError error = ParseError::kNone;
};

Replayed ReplayCapture(const std::string& name, std::mt19937* rng = nullptr) {
  const auto segments = testing::ReadCapture(testing::FixturePath("parsers/" + name));
  Replayed replayed;
  ParserConfig config;
  Parser parser(config, replayed.sink);
  testing::Replay(segments, parser, rng);
  replayed.state = parser.state();
  replayed.error = parser.error();
  return replayed;
}

// Status, response body bytes and request body bytes of every request, in order.
struct Exchange {
  std::string method;
  std::string path;
  int status;
  uint64_t response_bytes;
  uint64_t request_bytes = 0;
  bool operator==(const Exchange&) const = default;
};

std::vector<Exchange> Exchanges(const RecordingSink& sink) {
  std::vector<Exchange> exchanges;
  const auto requests = sink.requests();
  const auto ends = sink.ends();
  REQUIRE(requests.size() == ends.size());
  for (size_t i = 0; i < ends.size(); ++i) {
    REQUIRE(ends[i].stream_id == requests[i].stream_id);
    CHECK(ends[i].reason == EndReason::kComplete);
    exchanges.push_back({requests[i].method, requests[i].path, ends[i].status,
                         ends[i].response_bytes, ends[i].request_bytes});
  }
  return exchanges;
}

TEST_CASE("http1 capture: curl and nginx on one keep-alive connection") {
  const Replayed r = ReplayCapture("http1-keepalive.capture");
  CHECK(r.state == ParserState::kParsing);
  CHECK(Exchanges(r.sink) == std::vector<Exchange>{
                                 {"GET", "/file-1000.txt", 200, 1000},
                                 {"GET", "/missing", 404, 146},
                                 {"HEAD", "/file-1000.txt", 200, 0},
                                 {"POST", "/upload", 200, 9, 3000},
                                 {"GET", "/status/204", 204, 0},
                                 {"GET", "/old", 301, 162},
                             });
  for (const RequestStart& request : r.sink.requests()) {
    CHECK(request.authority == "127.0.0.1:18080");
    CHECK(request.headers.at(0) == Header{"user-agent", "curl/7.88.1"});
  }
  // curl's form upload says what it sends.
  CHECK(r.sink.requests().at(3).headers.at(1) ==
        Header{"content-type", "application/x-www-form-urlencoded"});
  CHECK(r.sink.responses().at(0).headers == std::vector<Header>{{"content-type", "text/plain"}});
}

TEST_CASE("http1 capture: Connection: close") {
  const Replayed r = ReplayCapture("http1-close.capture");
  CHECK(Exchanges(r.sink) == std::vector<Exchange>{{"GET", "/file-1000.txt", 200, 1000}});
}

TEST_CASE("http1 capture: chunked bodies both ways") {
  const Replayed r = ReplayCapture("http1-chunked.capture");
  CHECK(Exchanges(r.sink) == std::vector<Exchange>{
                                 {"GET", "/chunked/file-20000.txt", 200, 20000},
                                 {"POST", "/upload", 200, 9, 5000},
                             });
}

TEST_CASE("http1 capture: Expect: 100-continue with a 1.1 MB upload") {
  const Replayed r = ReplayCapture("http1-continue.capture");
  CHECK(Exchanges(r.sink) == std::vector<Exchange>{{"POST", "/upload", 200, 9, 1100000}});
  // The response starts with the final 200, after the body, not with the 100 Continue.
  CHECK(r.sink.responses().at(0).status == 200);
  CHECK(r.sink.responses().at(0).at > 3);
}

TEST_CASE("http1 capture: a body delimited by the server closing") {
  const Replayed r = ReplayCapture("http1-eof-body.capture");
  CHECK(Exchanges(r.sink) == std::vector<Exchange>{{"GET", "/eof-body", 200, 5000}});
  const auto segments =
      testing::ReadCapture(testing::FixturePath("parsers/http1-eof-body.capture"));
  // It ends when the server's EOF is read, at that segment's timestamp.
  Timestamp server_eof = 0;
  for (size_t i = 0; i < segments.size(); ++i) {
    if (segments[i].eof && segments[i].from == Peer::kServer) server_eof = Timestamp(i + 1);
  }
  CHECK(r.sink.ends().at(0).at == server_eof);
}

TEST_CASE("http1 capture: three pipelined requests in one write") {
  const Replayed r = ReplayCapture("http1-pipelined.capture");
  CHECK(Exchanges(r.sink) == std::vector<Exchange>{
                                 {"GET", "/file-1000.txt", 200, 1000},
                                 {"GET", "/missing", 404, 146},
                                 {"GET", "/file-20000.txt", 200, 20000},
                             });
  // All three requests arrived in the first segment.
  for (const RequestStart& request : r.sink.requests()) CHECK(request.at == 1);
}

TEST_CASE("http1 capture: WebSocket upgrade and CONNECT switch to opaque") {
  SECTION("websocket") {
    const Replayed r = ReplayCapture("http1-upgrade-1.capture");
    CHECK(r.state == ParserState::kSwitched);
    CHECK(Exchanges(r.sink) == std::vector<Exchange>{{"GET", "/ws", 101, 0}});
  }
  SECTION("connect") {
    const Replayed r = ReplayCapture("http1-upgrade-2.capture");
    CHECK(r.state == ParserState::kSwitched);
    CHECK(Exchanges(r.sink) == std::vector<Exchange>{{"CONNECT", "backend.test:443", 200, 0}});
  }
}

TEST_CASE("http1 capture: any split of a recorded connection gives the same events") {
  std::mt19937 rng(Catch::rngSeed());
  for (const char* name :
       {"http1-keepalive.capture", "http1-close.capture", "http1-chunked.capture",
        "http1-eof-body.capture", "http1-pipelined.capture", "http1-upgrade-1.capture",
        "http1-upgrade-2.capture"}) {
    CAPTURE(name);
    const Replayed whole = ReplayCapture(name);
    for (int round = 0; round < 20; ++round) {
      const Replayed split = ReplayCapture(name, &rng);
      REQUIRE(split.sink.Dump() == whole.sink.Dump());
      REQUIRE(split.state == whole.state);
    }
  }
}

}  // namespace
}  // namespace nodemesh::parsers::http1
