#include "parsers/http1/parser.h"

#include <catch2/catch.hpp>
#include <random>

#include "test/lib/capture.h"
#include "test/lib/recording_sink.h"

namespace nodemesh::parsers::http1 {
namespace {

using testing::RecordingSink;
using testing::Segment;

// One connection's exchange, fed a segment at a time with timestamps 1, 2, 3, ...
struct Conversation {
  ParserConfig config;
  RecordingSink sink;
  Parser parser{config, sink};
  Timestamp now = 0;

  Conversation() = default;
  explicit Conversation(ParserConfig c) : config(std::move(c)) {}

  ParserState Client(std::string_view bytes) { return parser.Feed(Peer::kClient, bytes, ++now); }
  ParserState Server(std::string_view bytes) { return parser.Feed(Peer::kServer, bytes, ++now); }
};

TEST_CASE("http1: a GET and its response give start, response and end") {
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
  CHECK(response.stream_id == 1);
  CHECK(response.status == 200);
  CHECK(response.at == 2);
  CHECK(response.headers == std::vector<Header>{{"content-type", "text/plain"}});
  const StreamEnd end = c.sink.ends().at(0);
  CHECK(end.stream_id == 1);
  CHECK(end.reason == EndReason::kComplete);
  CHECK(end.status == 200);
  CHECK(end.request_bytes == 0);
  CHECK(end.response_bytes == 5);
  CHECK(end.request_at == 1);
  CHECK(end.response_at == 2);
  CHECK(end.at == 2);
}

TEST_CASE("http1: the end comes with the last body byte, not before") {
  Conversation c;
  c.Client("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
  c.Server("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345");
  CHECK(c.sink.ends().empty());
  c.Server("67890");
  REQUIRE(c.sink.ends().size() == 1);
  CHECK(c.sink.ends()[0].at == 3);
  CHECK(c.sink.ends()[0].response_at == 2);
  CHECK(c.sink.ends()[0].response_bytes == 10);
}

TEST_CASE("http1: header names match whatever their case, values keep theirs") {
  ParserConfig config;
  config.captured_headers = {"x-request-id", "content-type"};
  Conversation c(config);
  c.Client(
      "POST /v HTTP/1.1\r\nHOST: Web\r\nX-Request-ID: AbC\r\nContent-Type: "
      "application/grpc+proto\r\nContent-Length: 0\r\n\r\n");
  const RequestStart request = c.sink.requests().at(0);
  CHECK(request.authority == "Web");
  CHECK(request.grpc);
  CHECK(request.headers ==
        std::vector<Header>{{"x-request-id", "AbC"}, {"content-type", "application/grpc+proto"}});
}

TEST_CASE("http1: a longer name that starts like a wanted one is not it, however split") {
  // Fed in two pieces, the first of which is exactly a wanted name.
  for (const size_t split : {size_t{0}, std::string_view("GET / HTTP/1.1\r\nUser-Agent").size()}) {
    INFO("split at " << split);
    Conversation c;
    const std::string_view head =
        "GET / HTTP/1.1\r\nUser-Agent-Extra: no\r\nUser-Agent: yes\r\nHost: a\r\n\r\n";
    if (split > 0) c.Client(head.substr(0, split));
    c.Client(head.substr(split));
    REQUIRE(c.sink.requests().size() == 1);
    CHECK(c.sink.requests()[0].headers == std::vector<Header>{{"user-agent", "yes"}});
  }
}

TEST_CASE("http1: pipelined requests pair with responses in order") {
  Conversation c;
  c.Client(
      "GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
      "HEAD /b HTTP/1.1\r\nHost: h\r\n\r\n"
      "POST /c HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nxyz");
  REQUIRE(c.sink.requests().size() == 3);
  // The HEAD response announces a length but has no body; the next response follows at once.
  c.Server(
      "HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno"
      "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
      "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n");
  REQUIRE(c.parser.state() == ParserState::kParsing);
  const auto ends = c.sink.ends();
  REQUIRE(ends.size() == 3);
  CHECK(ends[0].stream_id == 1);
  CHECK(ends[0].status == 404);
  CHECK(ends[0].response_bytes == 2);
  CHECK(ends[1].stream_id == 2);
  CHECK(ends[1].status == 200);
  CHECK(ends[1].response_bytes == 0);
  CHECK(ends[2].stream_id == 3);
  CHECK(ends[2].status == 201);
  CHECK(ends[2].request_bytes == 3);
  CHECK(c.sink.requests()[1].method == "HEAD");
}

TEST_CASE("http1: chunked bodies in both directions count their payload") {
  Conversation c;
  c.Client(
      "POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
      "4\r\nabcd\r\n6;ext=1\r\nefghij\r\n0\r\n\r\n");
  c.Server(
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
      "3\r\nabc\r\n0\r\nTrailer-Field: x\r\n\r\n");
  const auto ends = c.sink.ends();
  REQUIRE(ends.size() == 1);
  CHECK(ends[0].request_bytes == 10);
  CHECK(ends[0].response_bytes == 3);
}

TEST_CASE("http1: a body delimited by the server's EOF ends at EndOfInput") {
  Conversation c;
  c.Client("GET /stream HTTP/1.0\r\n\r\n");
  c.Server("HTTP/1.0 200 OK\r\n\r\nsome");
  c.Server(" bytes");
  CHECK(c.sink.ends().empty());
  c.parser.EndOfInput(Peer::kServer, 9);
  const auto ends = c.sink.ends();
  REQUIRE(ends.size() == 1);
  CHECK(ends[0].reason == EndReason::kComplete);
  CHECK(ends[0].response_bytes == 10);
  CHECK(ends[0].at == 9);
  CHECK(c.parser.state() == ParserState::kParsing);
}

TEST_CASE("http1: a repeated end of input ends a body once") {
  Conversation c;
  c.Client("GET /stream HTTP/1.1\r\nHost: h\r\n\r\n");
  c.Server("HTTP/1.0 200 OK\r\n\r\nbody");
  c.parser.EndOfInput(Peer::kServer, 3);
  c.parser.EndOfInput(Peer::kServer, 4);
  c.parser.Close(5);
  REQUIRE(c.sink.ends().size() == 1);
  CHECK(c.sink.ends()[0].reason == EndReason::kComplete);
}

TEST_CASE("http1: 204 and 304 have no body") {
  Conversation c;
  c.Client("GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n");
  c.Server(
      "HTTP/1.1 204 No Content\r\n\r\n"
      "HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n");
  const auto ends = c.sink.ends();
  REQUIRE(ends.size() == 2);
  CHECK(ends[0].status == 204);
  CHECK(ends[1].status == 304);
  CHECK(ends[1].response_bytes == 0);
}

TEST_CASE("http1: 100-continue is informational: the final response ends the request") {
  Conversation c;
  c.Client("PUT /big HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n");
  c.Server("HTTP/1.1 100 Continue\r\n\r\n");
  CHECK(c.sink.responses().empty());
  c.Client("data");
  c.Server("HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n");
  REQUIRE(c.sink.responses().size() == 1);
  CHECK(c.sink.responses()[0].status == 201);
  CHECK(c.sink.responses()[0].at == 4);
  const auto ends = c.sink.ends();
  REQUIRE(ends.size() == 1);
  CHECK(ends[0].request_bytes == 4);
  CHECK(ends[0].response_at == 4);
  CHECK(ends[0].status == 201);
}

TEST_CASE("http1: a server may answer before the request body is done") {
  Conversation c;
  c.Client("POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n12");
  c.Server("HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n");
  const auto ends = c.sink.ends();
  REQUIRE(ends.size() == 1);
  CHECK(ends[0].status == 413);
  CHECK(ends[0].request_bytes == 2);
  c.Client("34567890");
  CHECK(c.parser.state() == ParserState::kParsing);
}

TEST_CASE("http1: a server may answer a request whose head never completed") {
  Conversation c;
  c.Client("GET /very-long HTTP/1.1\r\nHost: h\r\nX-Huge: aaaa");
  c.Server("HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\n\r\n");
  REQUIRE(c.sink.requests().size() == 1);
  CHECK(c.sink.requests()[0].path == "/very-long");
  REQUIRE(c.sink.ends().size() == 1);
  CHECK(c.sink.ends()[0].status == 431);
}

TEST_CASE("http1: a request answered early is reported once, and the next one pairs right") {
  Conversation c;
  c.Client("GET /slow HTTP/1.1\r\nHost: h\r\nX-A: 1");
  c.Server("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
  c.Client("\r\n\r\nGET /next HTTP/1.1\r\nHost: h\r\n\r\n");
  c.Server("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
  const auto requests = c.sink.requests();
  REQUIRE(requests.size() == 2);
  CHECK(requests[0].method == "GET");
  CHECK(requests[0].path == "/slow");
  CHECK(requests[1].path == "/next");
  const auto ends = c.sink.ends();
  REQUIRE(ends.size() == 2);
  CHECK(ends[0].status == 400);
  CHECK(ends[1].stream_id == requests[1].stream_id);
  CHECK(ends[1].status == 200);
}

TEST_CASE("http1: an accepted Upgrade switches the connection") {
  Conversation c;
  c.Client(
      "GET /chat HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
      "\x81\x05hello");
  CHECK(c.parser.state() == ParserState::kParsing);
  CHECK(c.Server("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: "
                 "websocket\r\n\r\n\x81\x02hi") == ParserState::kSwitched);
  const auto ends = c.sink.ends();
  REQUIRE(ends.size() == 1);
  CHECK(ends[0].status == 101);
  CHECK(ends[0].reason == EndReason::kComplete);
  CHECK(c.Client("\x81\x03more") == ParserState::kSwitched);
  CHECK(c.parser.error() == ParseError::kNone);
}

TEST_CASE("http1: a refused Upgrade keeps parsing, including bytes sent meanwhile") {
  Conversation c;
  c.Client("GET /a HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n");
  c.Client("GET /b HTTP/1.1\r\nHost: h\r\n\r\n");
  CHECK(c.sink.requests().size() == 1);
  c.Server("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
  REQUIRE(c.sink.requests().size() == 2);
  CHECK(c.sink.requests()[1].path == "/b");
  c.Server("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
  CHECK(c.sink.ends().size() == 2);
  CHECK(c.parser.state() == ParserState::kParsing);
}

TEST_CASE("http1: CONNECT answered 2xx becomes a tunnel, refused stays HTTP") {
  SECTION("accepted") {
    Conversation c;
    c.Client("CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\n");
    CHECK(c.sink.requests().at(0).path == "db:5432");
    CHECK(c.Server("HTTP/1.1 200 Connection Established\r\n\r\n\x00\x01") ==
          ParserState::kSwitched);
    CHECK(c.sink.ends().at(0).status == 200);
  }
  SECTION("refused") {
    Conversation c;
    c.Client("CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\n");
    c.Server("HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n");
    c.Client("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    CHECK(c.parser.state() == ParserState::kParsing);
    CHECK(c.sink.requests().size() == 2);
  }
}

TEST_CASE("http1: Close aborts the requests still open, with what is known") {
  Conversation c;
  c.Client("GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n");
  c.Server("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial");
  c.parser.Close(7);
  const auto ends = c.sink.ends();
  REQUIRE(ends.size() == 2);
  CHECK(ends[0].reason == EndReason::kAborted);
  CHECK(ends[0].status == 200);
  CHECK(ends[0].response_bytes == 7);
  CHECK(ends[0].at == 7);
  CHECK(ends[1].reason == EndReason::kAborted);
  CHECK(ends[1].status == 0);
  CHECK(ends[1].response_at == 0);
}

TEST_CASE("http1: bad input fails the parser with a reason and stops it") {
  SECTION("malformed request line") {
    Conversation c;
    CHECK(c.Client("GET / HTTP/1.1 junk\r\n\r\n") == ParserState::kFailed);
    CHECK(c.parser.error() == ParseError::kMalformed);
    CHECK_THAT(std::string(c.parser.error_detail()), Catch::Contains("request"));
    CHECK(c.Server("HTTP/1.1 200 OK\r\n\r\n") == ParserState::kFailed);
    CHECK(c.sink.events.empty());
  }
  SECTION("malformed response") {
    Conversation c;
    c.Client("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    CHECK(c.Server("HTTP/1.1 abc OK\r\n\r\n") == ParserState::kFailed);
    CHECK(c.parser.error() == ParseError::kMalformed);
  }
  SECTION("a response nobody asked for") {
    Conversation c;
    CHECK(c.Server("HTTP/1.1 200 OK\r\n\r\n") == ParserState::kFailed);
    CHECK(c.parser.error() == ParseError::kUnexpectedResponse);
  }
  SECTION("a head over the limit") {
    ParserConfig config;
    config.limits.max_header_bytes = 64;
    Conversation c(config);
    CHECK(c.Client("GET / HTTP/1.1\r\nHost: h\r\nCookie: " + std::string(100, 'x') + "\r\n\r\n") ==
          ParserState::kFailed);
    CHECK(c.parser.error() == ParseError::kHeadersTooLarge);
  }
  SECTION("too many pipelined requests") {
    ParserConfig config;
    config.limits.max_pending_requests = 2;
    Conversation c(config);
    CHECK(c.Client("GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n") ==
          ParserState::kParsing);
    CHECK(c.Client("GET /3 HTTP/1.1\r\nHost: h\r\n\r\n") == ParserState::kFailed);
    CHECK(c.parser.error() == ParseError::kTooManyStreams);
  }
  SECTION("a client that floods while its Upgrade is pending") {
    ParserConfig config;
    config.limits.max_buffered_client_bytes = 16;
    Conversation c(config);
    c.Client("GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\n");
    CHECK(c.Client(std::string(17, 'z')) == ParserState::kFailed);
    CHECK(c.parser.error() == ParseError::kBufferedTooMuch);
  }
}

// Hand-written conversations covering every feature above, for the split property.
std::vector<std::vector<Segment>> Conversations() {
  const auto client = [](std::string bytes) { return Segment{Peer::kClient, std::move(bytes)}; };
  const auto server = [](std::string bytes) { return Segment{Peer::kServer, std::move(bytes)}; };
  return {
      {client("GET /a HTTP/1.1\r\nHost: h\r\nUser-Agent: u\r\n\r\nHEAD /b HTTP/1.1\r\nHost: "
              "h\r\n\r\n"),
       server("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Type: t\r\n\r\nabc"),
       server("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n"),
       client("POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: "
              "chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
       server("HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nerror\r\n0\r\n\r\n")},
      {client("PUT /p HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"),
       server("HTTP/1.1 100 Continue\r\n\r\n"), client("ok"), server("HTTP/1.1 200 OK\r\n\r\n"),
       client("GET /last HTTP/1.0\r\n\r\n"), server("HTTP/1.0 200 OK\r\n\r\nuntil eof"),
       Segment{Peer::kServer, "", true}},
      {client("GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"),
       server(
           "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"),
       client("\x81\x02hi")},
  };
}

TEST_CASE("http1: an idle parser gives back its scratch between messages, and parses on") {
  const std::string request =
      "GET /orders/1 HTTP/1.1\r\nHost: web:8080\r\nUser-Agent: a-client/1.0 (long enough)\r\n\r\n";
  const std::string response =
      "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
  Conversation kept;  // never released: what the released one must report alike
  Conversation released;
  const auto both = [&](bool client, std::string_view bytes) {
    for (Conversation* c : {&kept, &released}) client ? c->Client(bytes) : c->Server(bytes);
  };
  both(true, request);
  both(false, response);
  REQUIRE(released.parser.holds_scratch());
  released.parser.ReleaseIdleMemory();
  CHECK_FALSE(released.parser.holds_scratch());
  released.parser.ReleaseIdleMemory();  // twice: still nothing held, nothing reported

  // Held while a request awaits its response, and while a head or a body is partly read.
  both(true, request);
  released.parser.ReleaseIdleMemory();
  CHECK(released.parser.holds_scratch());
  both(false, response.substr(0, 20));
  released.parser.ReleaseIdleMemory();
  CHECK(released.parser.holds_scratch());
  both(false, response.substr(20, response.size() - 21));
  released.parser.ReleaseIdleMemory();
  CHECK(released.parser.holds_scratch());
  both(false, response.substr(response.size() - 1));
  released.parser.ReleaseIdleMemory();
  CHECK_FALSE(released.parser.holds_scratch());
  both(true, request.substr(0, 10));
  released.parser.ReleaseIdleMemory();
  CHECK(released.parser.holds_scratch());
  both(true, request.substr(10));
  both(false, response);
  released.parser.ReleaseIdleMemory();
  CHECK_FALSE(released.parser.holds_scratch());

  // Connection: close with keep-alive after it, a HEAD, then the client's half-close and the
  // connection's end with nothing open, each after a release.
  both(true, "HEAD /h HTTP/1.0\r\nHost: web\r\n\r\n");
  both(false, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 7\r\n\r\n");
  released.parser.ReleaseIdleMemory();
  CHECK_FALSE(released.parser.holds_scratch());
  both(true, request);
  both(false, response);
  released.parser.ReleaseIdleMemory();
  for (Conversation* c : {&kept, &released}) {
    c->parser.EndOfInput(Peer::kClient, ++c->now);
    c->parser.EndOfInput(Peer::kServer, ++c->now);
    c->parser.Close(++c->now);
  }
  CHECK(released.sink.Dump() == kept.sink.Dump());
  CHECK(released.sink.ends().size() == 5);
  CHECK(released.sink.requests().back().stream_id == 5);
  CHECK(released.sink.requests().back().headers ==
        std::vector<Header>{{"user-agent", "a-client/1.0 (long enough)"}});
  CHECK(released.parser.state() == ParserState::kParsing);
}

TEST_CASE("http1: an idle parser keeps its scratch while an Upgrade awaits its answer") {
  Conversation c;
  c.Client("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
  c.parser.ReleaseIdleMemory();
  CHECK(c.parser.holds_scratch());
  c.Server("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
  c.parser.ReleaseIdleMemory();
  CHECK_FALSE(c.parser.holds_scratch());
  c.Client("GET /next HTTP/1.1\r\nHost: a\r\n\r\n");
  c.Server("HTTP/1.1 204 No Content\r\n\r\n");
  REQUIRE(c.sink.ends().size() == 2);
  CHECK(c.sink.ends()[1].status == 204);
  CHECK(c.sink.requests()[1].path == "/next");
}

TEST_CASE("http1: any split of the same bytes gives the same events") {
  std::mt19937 rng(Catch::rngSeed());
  int n = 0;
  for (const std::vector<Segment>& conversation : Conversations()) {
    CAPTURE(++n);
    ParserConfig config;
    RecordingSink whole_sink;
    Parser whole(config, whole_sink);
    testing::Replay(conversation, whole);
    REQUIRE(whole.error() == ParseError::kNone);
    REQUIRE(whole_sink.ends().size() >= 1);
    for (int round = 0; round < 200; ++round) {
      RecordingSink split_sink;
      Parser split(config, split_sink);
      testing::Replay(conversation, split, &rng);
      REQUIRE(split_sink.Dump() == whole_sink.Dump());
      REQUIRE(split.state() == whole.state());
    }
  }
}

}  // namespace
}  // namespace nodemesh::parsers::http1
