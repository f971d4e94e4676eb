#include "parsers/http1/parser.h"

#include <catch2/catch.hpp>

#include "test/lib/capture.h"
#include "test/lib/recording_sink.h"

namespace nodemesh::parsers::http1 {
namespace {

using testing::RecordingSink;

struct Conversation {
  ParserConfig config;
  RecordingSink sink;
  Parser parser{config, sink};
  Timestamp now = 0;

  ParserState Client(std::string_view bytes) { return parser.Feed(Peer::kClient, bytes, ++now); }
  ParserState Server(std::string_view bytes) { return parser.Feed(Peer::kServer, bytes, ++now); }
};

TEST_CASE("a GET and its response give start, response and end") {
  Conversation c;
  c.Client("GET /api/list?x=1 HTTP/1.1\r\nHost: web:8080\r\nUser-Agent: curl/7.88\r\n\r\n");
  c.Server("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello");
  REQUIRE(c.parser.state() == ParserState::kParsing);
  REQUIRE(c.sink.events.size() == 3);
  const RequestStart request = c.sink.requests().at(0);
  CHECK(request.stream_id == 1);
  CHECK(request.at == 1);
  CHECK(request.method == "GET");
  CHECK(request.scheme == "http");
  CHECK(request.authority == "web:8080");
  CHECK(request.path == "/api/list?x=1");
  CHECK(request.headers == std::vector<Header>{{"user-agent", "curl/7.88"}});
  CHECK_FALSE(request.grpc);
  const ResponseStart response = c.sink.responses().at(0);
  CHECK(response.status == 200);
  CHECK(response.at == 2);
  CHECK(response.headers == std::vector<Header>{{"content-type", "text/plain"}});
  const StreamEnd end = c.sink.ends().at(0);
  CHECK(end.reason == EndReason::kComplete);
  CHECK(end.status == 200);
  CHECK(end.response_bytes == 5);
  CHECK(end.request_at == 1);
  CHECK(end.response_at == 2);
  CHECK(end.at == 2);
}

}  // namespace
}  // namespace nodemesh::parsers::http1
