#include "parsers/http2/parser.h"

#include <nghttp2/nghttp2.h>

#include <catch2/catch.hpp>
#include <map>
#include <random>
#include <utility>

#include "test/lib/capture.h"
#include "test/lib/recording_sink.h"

namespace nodemesh::parsers::http2 {
namespace {

using testing::RecordingSink;
using testing::Segment;
using Fields = std::vector<std::pair<std::string, std::string>>;

// --- building byte streams ---------------------------------------------------------------

// One direction's HPACK encoder, with a real dynamic table, so that what the parser decodes
// depends on every block before it.
class Encoder {
 public:
  // The table starts at the protocol's 4096 bytes; ChangeTableSize() may take it up to this.
  static constexpr size_t kMaxTableSize = 65536;

  Encoder() { REQUIRE(nghttp2_hd_deflate_new(&deflater_, kMaxTableSize) == 0); }
  Encoder(const Encoder&) = delete;
  Encoder& operator=(const Encoder&) = delete;
  ~Encoder() { nghttp2_hd_deflate_del(deflater_); }

  std::string Encode(const Fields& fields) {
    std::vector<nghttp2_nv> nvs;
    for (const auto& [name, value] : fields) {
      nvs.push_back(nghttp2_nv{const_cast<uint8_t*>(reinterpret_cast<const uint8_t*>(name.data())),
                               const_cast<uint8_t*>(reinterpret_cast<const uint8_t*>(value.data())),
                               name.size(), value.size(), NGHTTP2_NV_FLAG_NONE});
    }
    std::string out(nghttp2_hd_deflate_bound(deflater_, nvs.data(), nvs.size()), '\0');
    const ssize_t length = nghttp2_hd_deflate_hd(deflater_, reinterpret_cast<uint8_t*>(out.data()),
                                                 out.size(), nvs.data(), nvs.size());
    REQUIRE(length >= 0);
    out.resize(static_cast<size_t>(length));
    return out;
  }

  // As after the peer's SETTINGS_HEADER_TABLE_SIZE: the next block starts with a size update.
  void ChangeTableSize(size_t size) {
    REQUIRE(nghttp2_hd_deflate_change_table_size(deflater_, size) == 0);
  }

 private:
  nghttp2_hd_deflater* deflater_ = nullptr;
};

std::string Frame(FrameType type, uint8_t frame_flags, uint32_t stream_id,
                  std::string_view payload) {
  std::string out;
  FrameHeader{static_cast<uint32_t>(payload.size()), type, frame_flags, stream_id}.AppendTo(out);
  out.append(payload);
  return out;
}

std::string Uint32(uint32_t value) {
  return {static_cast<char>(value >> 24), static_cast<char>(value >> 16),
          static_cast<char>(value >> 8), static_cast<char>(value)};
}

std::string Settings(const std::vector<std::pair<SettingsId, uint32_t>>& settings = {}) {
  std::string payload;
  for (const auto& [id, value] : settings) {
    payload += static_cast<char>(static_cast<uint16_t>(id) >> 8);
    payload += static_cast<char>(static_cast<uint16_t>(id));
    payload += Uint32(value);
  }
  return Frame(FrameType::kSettings, 0, 0, payload);
}

std::string SettingsAck() { return Frame(FrameType::kSettings, flags::kAck, 0, ""); }

std::string Data(uint32_t stream_id, std::string_view payload, uint8_t frame_flags = 0) {
  return Frame(FrameType::kData, frame_flags, stream_id, payload);
}

std::string RstStream(uint32_t stream_id, ErrorCode code) {
  return Frame(FrameType::kRstStream, 0, stream_id, Uint32(static_cast<uint32_t>(code)));
}

std::string Goaway(uint32_t last_stream_id, ErrorCode code, std::string_view debug = "") {
  return Frame(FrameType::kGoaway, 0, 0,
               Uint32(last_stream_id) + Uint32(static_cast<uint32_t>(code)) + std::string(debug));
}

std::string WindowUpdate(uint32_t stream_id, uint32_t increment) {
  return Frame(FrameType::kWindowUpdate, 0, stream_id, Uint32(increment));
}

std::string Ping(bool ack = false) {
  return Frame(FrameType::kPing, ack ? flags::kAck : 0, 0, "12345678");
}

// One gRPC message: the 5-byte prefix (uncompressed) and the payload.
std::string GrpcMessage(std::string_view payload) {
  return std::string(1, '\0') + Uint32(static_cast<uint32_t>(payload.size())) +
         std::string(payload);
}

// Concatenates frames built in list order: the operands of + may be evaluated in any order,
// and header blocks must be encoded in the order they are sent.
std::string Join(std::initializer_list<std::string> frames) {
  std::string out;
  for (const std::string& frame : frames) out += frame;
  return out;
}

constexpr uint8_t kEndHeaders = flags::kEndHeaders;
constexpr uint8_t kEndStream = flags::kEndStream;

// Both byte streams of one connection, as segments in the order a relay reads them.
struct Script {
  Script& Client(std::string bytes) {
    segments.push_back(Segment{Peer::kClient, std::move(bytes)});
    return *this;
  }
  Script& Server(std::string bytes) {
    segments.push_back(Segment{Peer::kServer, std::move(bytes)});
    return *this;
  }
  // The connection preface and the usual SETTINGS exchange.
  Script& Open() {
    Client(std::string(kClientPreface) + Settings({{SettingsId::kEnablePush, 0}}));
    Server(Settings({{SettingsId::kMaxConcurrentStreams, 100}}) + SettingsAck());
    return Client(SettingsAck());
  }
  std::string RequestHeaders(uint32_t stream_id, const Fields& fields,
                             uint8_t frame_flags = kEndHeaders) {
    return Frame(FrameType::kHeaders, frame_flags, stream_id, client_hpack.Encode(fields));
  }
  std::string ResponseHeaders(uint32_t stream_id, const Fields& fields,
                              uint8_t frame_flags = kEndHeaders) {
    return Frame(FrameType::kHeaders, frame_flags, stream_id, server_hpack.Encode(fields));
  }

  Encoder client_hpack;
  Encoder server_hpack;
  std::vector<Segment> segments;
};

Fields Get(std::string path) {
  return {{":method", "GET"},         {":scheme", "http"},           {":authority", "web:8080"},
          {":path", std::move(path)}, {"user-agent", "curl/7.88.1"}, {"accept", "*/*"}};
}

Fields GrpcRequest(std::string method) {
  return {{":method", "POST"},
          {":scheme", "http"},
          {":path", std::move(method)},
          {":authority", "emoji-svc:8080"},
          {"content-type", "application/grpc"},
          {"te", "trailers"},
          {"user-agent", "grpc-go/1.60.0"},
          {"grpc-timeout", "999m"}};
}

std::string PathOf(uint32_t stream_id) { return std::string("/") += std::to_string(stream_id); }

Fields Status(std::string status) { return {{":status", std::move(status)}}; }

const Fields kGrpcResponse = {{":status", "200"}, {"content-type", "application/grpc"}};

// What a parser made of a script: its events and how it stopped.
struct Outcome {
  RecordingSink sink;
  ParserState state = ParserState::kParsing;
  ParseError error = ParseError::kNone;
  std::string detail;
};

// Feeds each segment whole, segment i at time i+1; then, with `close_at`, closes.
Outcome Run(const std::vector<Segment>& segments, const ParserConfig& config = {},
            std::optional<Timestamp> close_at = std::nullopt) {
  Outcome outcome;
  Parser parser(config, outcome.sink);
  Timestamp now = 0;
  for (const Segment& segment : segments) {
    ++now;
    if (segment.eof) {
      parser.EndOfInput(segment.from, now);
    } else {
      parser.Feed(segment.from, segment.bytes, now);
    }
  }
  if (close_at) parser.Close(*close_at);
  outcome.state = parser.state();
  outcome.error = parser.error();
  outcome.detail = std::string(parser.error_detail());
  return outcome;
}

Outcome RunOk(const std::vector<Segment>& segments, const ParserConfig& config = {}) {
  Outcome outcome = Run(segments, config);
  INFO(outcome.detail);
  REQUIRE(outcome.state == ParserState::kParsing);
  return outcome;
}

// --- conversations, used one by one and by the split property ----------------------------

void SimpleGet(Script& s) {
  s.Open();
  s.Client(s.RequestHeaders(1, Get("/api/list?x=1"), kEndHeaders | kEndStream));
  s.Server(s.ResponseHeaders(1, {{":status", "200"}, {"content-type", "text/plain"}}) +
           Data(1, "hello"));
  s.Server(Data(1, " world", kEndStream));
}

void GrpcUnaryOk(Script& s) {
  s.Open();
  s.Client(s.RequestHeaders(1, GrpcRequest("/emojivoto.v1.EmojiService/ListAll")) +
           Data(1, GrpcMessage("req"), kEndStream));
  s.Server(s.ResponseHeaders(1, kGrpcResponse) + Data(1, GrpcMessage("response-body")));
  s.Server(
      s.ResponseHeaders(1, {{"grpc-status", "0"}, {"grpc-message", ""}}, kEndHeaders | kEndStream));
}

void GrpcTrailersOnlyFailure(Script& s) {
  s.Open();
  s.Client(s.RequestHeaders(1, GrpcRequest("/emojivoto.v1.VotingService/VoteDoughnut")) +
           Data(1, GrpcMessage(""), kEndStream));
  s.Server(s.ResponseHeaders(1,
                             {{":status", "200"},
                              {"content-type", "application/grpc"},
                              {"grpc-status", "2"},
                              {"grpc-message", "ERROR%3A%20doughnut%20%E2%9C%97%zz 100%"}},
                             kEndHeaders | kEndStream));
}

// Three response messages (10, 0 and 300 bytes) cut into DATA frames at awkward places,
// one cut inside a length prefix.
void GrpcServerStreaming(Script& s) {
  s.Open();
  s.Client(s.RequestHeaders(1, GrpcRequest("/emojivoto.v1.EmojiService/Stream")) +
           Data(1, GrpcMessage("start"), kEndStream));
  const std::string body =
      GrpcMessage(std::string(10, 'a')) + GrpcMessage("") + GrpcMessage(std::string(300, 'c'));
  s.Server(s.ResponseHeaders(1, kGrpcResponse) + Data(1, body.substr(0, 7)));
  s.Server(Data(1, body.substr(7, 10)) + WindowUpdate(0, 1000));
  s.Server(Data(1, body.substr(17, 2)) + Data(1, body.substr(19, 100)));
  s.Server(Data(1, body.substr(119)) +
           s.ResponseHeaders(1, {{"grpc-status", "0"}}, kEndHeaders | kEndStream));
}

void Continuation(Script& s) {
  s.Open();
  Fields fields = Get("/continued");
  fields.emplace_back("cookie", std::string(300, 'k'));
  const std::string block = s.client_hpack.Encode(fields);
  s.Client(Frame(FrameType::kHeaders, kEndStream, 1, block.substr(0, 10)) +
           Frame(FrameType::kContinuation, 0, 1, block.substr(10, 100)));
  s.Client(Frame(FrameType::kContinuation, kEndHeaders, 1, block.substr(110)));
  s.Server(s.ResponseHeaders(1, Status("204"), kEndHeaders | kEndStream));
}

// HEADERS with PADDED and PRIORITY, DATA with PADDED, on both sides.
void Padded(Script& s) {
  s.Open();
  const std::string request = s.client_hpack.Encode(Get("/padded"));
  const std::string priority = Uint32(0) + std::string(1, '\x0f');  // depends on 0, weight 16
  s.Client(Frame(FrameType::kHeaders, kEndHeaders | flags::kPadded | flags::kPriority, 1,
                 std::string(1, '\x04') + priority + request + std::string(4, '\0')));
  s.Client(Frame(FrameType::kData, flags::kPadded | kEndStream, 1,
                 std::string(1, '\x03') + "body" + std::string(3, '\0')));
  const std::string response = s.server_hpack.Encode(Status("200"));
  s.Server(Frame(FrameType::kHeaders, kEndHeaders | flags::kPadded, 1,
                 std::string(1, '\x02') + response + std::string(2, '\0')));
  // Padding may fill the whole frame after the pad length.
  s.Server(Frame(FrameType::kData, flags::kPadded, 1, std::string(1, '\x05') + std::string(5, 0)));
  s.Server(
      Frame(FrameType::kData, flags::kPadded | kEndStream, 1, std::string(1, '\0') + "response"));
}

void ResetMidStream(Script& s) {
  s.Open();
  s.Client(s.RequestHeaders(1, GrpcRequest("/emojivoto.v1.EmojiService/Slow")) +
           Data(1, GrpcMessage("x")));
  s.Server(s.ResponseHeaders(1, kGrpcResponse) + Data(1, std::string(3, '\0')));
  s.Client(RstStream(1, ErrorCode::kCancel));
  s.Client(s.RequestHeaders(3, Get("/refused"), kEndHeaders | kEndStream));
  s.Server(RstStream(3, ErrorCode::kRefusedStream));
  // Frames after the reset, on a closed stream, are ignored.
  s.Server(Data(1, "late", kEndStream));
}

void GoawayRefusal(Script& s) {
  s.Open();
  s.Client(Join({s.RequestHeaders(1, Get("/one"), kEndHeaders | kEndStream),
                 s.RequestHeaders(3, Get("/three"), kEndHeaders | kEndStream),
                 s.RequestHeaders(5, Get("/five"), kEndHeaders | kEndStream)}));
  s.Server(Goaway(1, ErrorCode::kEnhanceYourCalm, "too busy"));
  s.Server(s.ResponseHeaders(1, Status("200"), kEndHeaders | kEndStream));
  s.Client(s.RequestHeaders(7, Get("/seven"), kEndHeaders | kEndStream));
}

void Interleaved(Script& s) {
  s.Open();
  s.Client(Join({s.RequestHeaders(1, GrpcRequest("/svc/A")), s.RequestHeaders(3, Get("/b")),
                 Data(1, GrpcMessage("a1"))}));
  s.Client(s.RequestHeaders(5, GrpcRequest("/svc/C")) + Data(1, GrpcMessage("a2"), kEndStream) +
           Data(5, GrpcMessage("c1"), kEndStream));
  s.Client(Frame(FrameType::kHeaders, kEndHeaders | kEndStream, 3, ""));  // empty trailers
  s.Server(Join({s.ResponseHeaders(3, Status("404")), s.ResponseHeaders(5, kGrpcResponse),
                 s.ResponseHeaders(1, kGrpcResponse)}));
  s.Server(Data(5, GrpcMessage("c-reply")) + Data(3, "not found") +
           Data(1, GrpcMessage("a-reply")));
  s.Server(Join({s.ResponseHeaders(1, {{"grpc-status", "0"}}, kEndHeaders | kEndStream),
                 Data(3, "", kEndStream),
                 s.ResponseHeaders(5, {{"grpc-status", "5"}, {"grpc-message", "no such emoji"}},
                                   kEndHeaders | kEndStream)}));
}

void Informational(Script& s) {
  s.Open();
  Fields request = Get("/upload");
  request[0].second = "PUT";
  request.emplace_back("expect", "100-continue");
  s.Client(s.RequestHeaders(1, request));
  s.Server(s.ResponseHeaders(1, Status("100")));
  s.Client(Data(1, "payload", kEndStream));
  s.Server(s.ResponseHeaders(1, {{":status", "103"}, {"link", "</a.css>; rel=preload"}}));
  s.Server(s.ResponseHeaders(1, Status("201"), kEndHeaders | kEndStream));
}

// Ping, priority, window updates and extension frames in between: nothing to report.
void ControlFrames(Script& s) {
  s.Open();
  s.Client(Ping() + Frame(FrameType::kPriority, 0, 3, Uint32(0) + "\x10") +
           Frame(static_cast<FrameType>(0xbe), 0xff, 9, "extension payload") +
           s.RequestHeaders(1, Get("/")) + WindowUpdate(1, 65535) + Data(1, "", kEndStream));
  s.Server(Ping(true) + Frame(static_cast<FrameType>(0x0a), 0, 0, "altsvc") +
           s.ResponseHeaders(1, Status("200")) + Data(1, "ok", kEndStream));
  s.Client(Goaway(0, ErrorCode::kNoError));  // the client's GOAWAY refuses nothing of its own
}

// A pushed stream: its request (in PUSH_PROMISE) and response go through the server's
// HPACK table but are not reported.
void Push(Script& s) {
  s.Open();
  s.Client(s.RequestHeaders(1, Get("/index.html"), kEndHeaders | kEndStream));
  s.Server(Frame(FrameType::kPushPromise, kEndHeaders, 1,
                 Uint32(2) + s.server_hpack.Encode({{":method", "GET"},
                                                    {":scheme", "http"},
                                                    {":authority", "web:8080"},
                                                    {":path", "/style.css"},
                                                    {"x-pushed", "yes"}})));
  s.Server(s.ResponseHeaders(2, {{":status", "200"}, {"x-pushed", "yes"}}) + Data(2, "body{}"));
  s.Server(s.ResponseHeaders(1, {{":status", "200"}, {"x-pushed", "yes"}}) +
           Data(2, "", kEndStream) + Data(1, "<html>", kEndStream));
}

// The client raises the server's HPACK table; the server's encoder then grows, shrinks and
// regrows it, and reuses its entries across requests.
void TableSizeUpdates(Script& s) {
  s.Client(std::string(kClientPreface) +
           Settings({{SettingsId::kHeaderTableSize, 65536}, {SettingsId::kEnablePush, 0}}));
  s.Server(Settings() + SettingsAck());
  s.server_hpack.ChangeTableSize(65536);
  const Fields big = {{":status", "200"}, {"x-big", std::string(8000, 'b')}};
  for (uint32_t stream = 1; stream <= 7; stream += 2) {
    s.Client(s.RequestHeaders(stream, Get("/again"), kEndHeaders | kEndStream));
    if (stream == 5) s.server_hpack.ChangeTableSize(0);
    if (stream == 7) s.server_hpack.ChangeTableSize(65536);
    s.Server(s.ResponseHeaders(stream, big, kEndHeaders | kEndStream));
  }
}

// The server ends the stream while the client is still sending; the rest is ignored.
void ServerEndsFirst(Script& s) {
  s.Open();
  s.Client(s.RequestHeaders(1, GrpcRequest("/svc/Upload")) + Data(1, GrpcMessage("part1")));
  s.Server(s.ResponseHeaders(1,
                             {{":status", "200"},
                              {"content-type", "application/grpc"},
                              {"grpc-status", "8"},
                              {"grpc-message", "too big"}},
                             kEndHeaders | kEndStream));
  s.Client(Data(1, GrpcMessage("part2")) +
           s.RequestHeaders(1, {{"x-trailer", "1"}}, kEndHeaders | kEndStream));
  s.Client(RstStream(1, ErrorCode::kNoError));
}

using Build = void (*)(Script&);
const std::vector<std::pair<std::string, Build>> kConversations = {
    {"simple-get", SimpleGet},
    {"grpc-unary-ok", GrpcUnaryOk},
    {"grpc-trailers-only", GrpcTrailersOnlyFailure},
    {"grpc-server-streaming", GrpcServerStreaming},
    {"continuation", Continuation},
    {"padded", Padded},
    {"reset", ResetMidStream},
    {"goaway", GoawayRefusal},
    {"interleaved", Interleaved},
    {"informational", Informational},
    {"control-frames", ControlFrames},
    {"push", Push},
    {"table-size-updates", TableSizeUpdates},
    {"server-ends-first", ServerEndsFirst},
};

std::vector<Segment> Segments(Build build) {
  Script script;
  build(script);
  return script.segments;
}

// --- tests -------------------------------------------------------------------------------

TEST_CASE("http2: a GET with a DATA response") {
  const Outcome o = RunOk(Segments(SimpleGet));
  REQUIRE(o.sink.events.size() == 3);
  const RequestStart request = o.sink.requests().at(0);
  CHECK(request.stream_id == 1);
  CHECK(request.at == 4);
  CHECK(request.method == "GET");
  CHECK(request.scheme == "http");
  CHECK(request.authority == "web:8080");
  CHECK(request.path == "/api/list?x=1");
  CHECK(request.headers == std::vector<Header>{{"user-agent", "curl/7.88.1"}});
  CHECK_FALSE(request.grpc);
  const ResponseStart response = o.sink.responses().at(0);
  CHECK(response.stream_id == 1);
  CHECK(response.at == 5);
  CHECK(response.status == 200);
  CHECK(response.headers == std::vector<Header>{{"content-type", "text/plain"}});
  const StreamEnd end = o.sink.ends().at(0);
  CHECK(end.stream_id == 1);
  CHECK(end.reason == EndReason::kComplete);
  CHECK(end.request_at == 4);
  CHECK(end.response_at == 5);
  CHECK(end.at == 6);
  CHECK(end.status == 200);
  CHECK(end.request_bytes == 0);
  CHECK(end.response_bytes == 11);
  CHECK(end.request_messages == 0);
  CHECK(end.response_messages == 0);
  CHECK_FALSE(end.grpc_status.has_value());
  CHECK(end.error_code == 0);
}

TEST_CASE("http2: a unary gRPC call that succeeds") {
  const Outcome o = RunOk(Segments(GrpcUnaryOk));
  REQUIRE(o.sink.events.size() == 3);
  const RequestStart request = o.sink.requests().at(0);
  CHECK(request.method == "POST");
  CHECK(request.path == "/emojivoto.v1.EmojiService/ListAll");
  CHECK(request.authority == "emoji-svc:8080");
  CHECK(request.grpc);
  CHECK(request.headers == std::vector<Header>{{"content-type", "application/grpc"},
                                               {"user-agent", "grpc-go/1.60.0"}});
  const StreamEnd end = o.sink.ends().at(0);
  CHECK(end.reason == EndReason::kComplete);
  CHECK(end.status == 200);
  CHECK(end.grpc_status == 0);
  CHECK(end.grpc_message.empty());
  CHECK(end.request_messages == 1);
  CHECK(end.response_messages == 1);
  CHECK(end.request_bytes == 5 + 3);
  CHECK(end.response_bytes == 5 + 13);
  CHECK(end.response_at == 5);
  CHECK(end.at == 6);
}

TEST_CASE("http2: a failing gRPC call answered trailers-only") {
  const Outcome o = RunOk(Segments(GrpcTrailersOnlyFailure));
  REQUIRE(o.sink.events.size() == 3);
  CHECK(o.sink.responses().at(0).status == 200);
  const StreamEnd end = o.sink.ends().at(0);
  CHECK(end.reason == EndReason::kComplete);
  CHECK(end.grpc_status == 2);
  // Valid escapes decoded (UTF-8 included), broken ones kept as sent.
  CHECK(end.grpc_message == "ERROR: doughnut \xE2\x9C\x97%zz 100%");
  CHECK(end.request_messages == 1);
  CHECK(end.response_messages == 0);
  CHECK(end.response_at == end.at);
}

TEST_CASE("http2: server streaming counts messages across frames and splits") {
  const Outcome o = RunOk(Segments(GrpcServerStreaming));
  const StreamEnd end = o.sink.ends().at(0);
  CHECK(end.response_messages == 3);
  CHECK(end.response_bytes == 15 + 5 + 305);
  CHECK(end.request_messages == 1);
  CHECK(end.grpc_status == 0);
}

TEST_CASE("http2: a header block continued over CONTINUATION frames") {
  const Outcome o = RunOk(Segments(Continuation));
  REQUIRE(o.sink.events.size() == 3);
  const RequestStart request = o.sink.requests().at(0);
  CHECK(request.path == "/continued");
  CHECK(request.at == 5);  // when END_HEADERS arrived, not the HEADERS frame
  CHECK(o.sink.ends().at(0).status == 204);
}

TEST_CASE("http2: padding and priority fields are stripped, padding is not counted") {
  const Outcome o = RunOk(Segments(Padded));
  REQUIRE(o.sink.events.size() == 3);
  CHECK(o.sink.requests().at(0).path == "/padded");
  const StreamEnd end = o.sink.ends().at(0);
  CHECK(end.status == 200);
  CHECK(end.request_bytes == 4);
  CHECK(end.response_bytes == 8);
}

TEST_CASE("http2: RST_STREAM from either peer ends the stream as reset") {
  const Outcome o = RunOk(Segments(ResetMidStream));
  const auto ends = o.sink.ends();
  REQUIRE(ends.size() == 2);
  CHECK(ends[0].stream_id == 1);
  CHECK(ends[0].reason == EndReason::kReset);
  CHECK(ends[0].error_code == static_cast<uint32_t>(ErrorCode::kCancel));
  CHECK(ends[0].status == 200);
  CHECK(ends[0].request_messages == 1);
  CHECK(ends[0].response_messages == 0);  // 3 bytes of a prefix are no message
  CHECK(ends[0].response_bytes == 3);
  CHECK(ends[0].at == 6);
  CHECK(ends[1].stream_id == 3);
  CHECK(ends[1].reason == EndReason::kReset);
  CHECK(ends[1].error_code == static_cast<uint32_t>(ErrorCode::kRefusedStream));
  CHECK(ends[1].status == 0);
  CHECK(ends[1].response_at == 0);
  CHECK(o.sink.events.size() == 5);
}

TEST_CASE("http2: GOAWAY refuses the streams above its last stream id") {
  const Outcome o = RunOk(Segments(GoawayRefusal));
  const auto ends = o.sink.ends();
  REQUIRE(ends.size() == 4);
  const uint32_t calm = static_cast<uint32_t>(ErrorCode::kEnhanceYourCalm);
  CHECK(ends[0].stream_id == 3);
  CHECK(ends[0].reason == EndReason::kRefused);
  CHECK(ends[0].error_code == calm);
  CHECK(ends[0].at == 5);
  CHECK(ends[1].stream_id == 5);
  CHECK(ends[1].reason == EndReason::kRefused);
  // Stream 1 is still served.
  CHECK(ends[2].stream_id == 1);
  CHECK(ends[2].reason == EndReason::kComplete);
  CHECK(ends[2].status == 200);
  // A stream opened after the GOAWAY is never processed either.
  CHECK(ends[3].stream_id == 7);
  CHECK(ends[3].reason == EndReason::kRefused);
  CHECK(ends[3].error_code == calm);
  CHECK(o.sink.requests().size() == 4);
}

TEST_CASE("http2: Close aborts the open streams, in stream order") {
  Script s;
  s.Open();
  for (uint32_t stream : {7u, 3u, 5u, 1u}) {
    s.Client(s.RequestHeaders(stream, Get(PathOf(stream))));
  }
  s.Server(s.ResponseHeaders(5, Status("200")) + Data(5, "partial"));
  s.Server(s.ResponseHeaders(1, Status("500"), kEndHeaders | kEndStream));
  // Stream ids must only grow: 3 and 1 after 7 are protocol errors, not reported.
  const Outcome o = Run(s.segments, {}, 42);
  CHECK(o.state == ParserState::kParsing);
  const auto ends = o.sink.ends();
  REQUIRE(ends.size() == 1);
  CHECK(ends[0].stream_id == 7);
  CHECK(ends[0].reason == EndReason::kAborted);
  CHECK(ends[0].at == 42);

  Script t;
  t.Open();
  for (uint32_t stream : {1u, 3u, 5u, 7u}) {
    t.Client(t.RequestHeaders(stream, Get(PathOf(stream))));
  }
  t.Server(t.ResponseHeaders(5, Status("200")) + Data(5, "partial"));
  t.Server(t.ResponseHeaders(1, Status("500"), kEndHeaders | kEndStream));
  const Outcome u = Run(t.segments, {}, 42);
  const auto aborted = u.sink.ends();
  REQUIRE(aborted.size() == 4);
  CHECK(aborted[0].stream_id == 1);
  CHECK(aborted[0].reason == EndReason::kComplete);
  for (size_t i = 1; i < 4; ++i) {
    CHECK(aborted[i].stream_id == 2 * i + 1);
    CHECK(aborted[i].reason == EndReason::kAborted);
    CHECK(aborted[i].at == 42);
  }
  CHECK(aborted[2].status == 200);
  CHECK(aborted[2].response_bytes == 7);
  CHECK(aborted[1].status == 0);
}

TEST_CASE("http2: interleaved streams keep their own state") {
  const Outcome o = RunOk(Segments(Interleaved));
  const auto ends = o.sink.ends();
  REQUIRE(ends.size() == 3);
  CHECK(ends[0].stream_id == 1);
  CHECK(ends[0].grpc_status == 0);
  CHECK(ends[0].request_messages == 2);
  CHECK(ends[0].response_messages == 1);
  CHECK(ends[1].stream_id == 3);
  CHECK(ends[1].status == 404);
  CHECK(ends[1].response_bytes == 9);
  CHECK(ends[1].response_messages == 0);  // not gRPC: DATA is not split into messages
  CHECK_FALSE(ends[1].grpc_status.has_value());
  CHECK(ends[2].stream_id == 5);
  CHECK(ends[2].grpc_status == 5);
  CHECK(ends[2].grpc_message == "no such emoji");
  CHECK(ends[2].request_messages == 1);
  const auto responses = o.sink.responses();
  REQUIRE(responses.size() == 3);
  CHECK(responses[0].stream_id == 3);
  CHECK(responses[1].stream_id == 5);
  CHECK(responses[2].stream_id == 1);
}

TEST_CASE("http2: 1xx header blocks are informational") {
  const Outcome o = RunOk(Segments(Informational));
  REQUIRE(o.sink.events.size() == 3);
  const ResponseStart response = o.sink.responses().at(0);
  CHECK(response.status == 201);
  CHECK(response.at == 8);
  const StreamEnd end = o.sink.ends().at(0);
  CHECK(end.status == 201);
  CHECK(end.request_bytes == 7);
}

TEST_CASE("http2: control, priority and extension frames report nothing") {
  const Outcome o = RunOk(Segments(ControlFrames));
  REQUIRE(o.sink.events.size() == 3);
  CHECK(o.sink.ends().at(0).response_bytes == 2);
}

TEST_CASE("http2: pushed streams keep HPACK in sync and are not reported") {
  ParserConfig config;
  config.captured_headers = {"x-pushed"};
  const Outcome o = RunOk(Segments(Push), config);
  REQUIRE(o.sink.events.size() == 3);
  CHECK(o.sink.responses().at(0).headers == std::vector<Header>{{"x-pushed", "yes"}});
  CHECK(o.sink.ends().at(0).response_bytes == 6);
}

TEST_CASE("http2: SETTINGS_HEADER_TABLE_SIZE and dynamic table size updates") {
  const Outcome o = RunOk(Segments(TableSizeUpdates));
  const auto ends = o.sink.ends();
  REQUIRE(ends.size() == 4);
  for (const StreamEnd& end : ends) CHECK(end.status == 200);
  CHECK(o.sink.requests().at(3).path == "/again");

  SECTION("without the client's SETTINGS the larger table is an HPACK error") {
    Script s;
    s.Open();
    s.server_hpack.ChangeTableSize(65536);
    s.Client(s.RequestHeaders(1, Get("/"), kEndHeaders | kEndStream));
    s.Server(s.ResponseHeaders(1, Status("200"), kEndHeaders | kEndStream));
    const Outcome failed = Run(s.segments);
    CHECK(failed.state == ParserState::kFailed);
    CHECK(failed.error == ParseError::kHpack);
  }
}

TEST_CASE("http2: a server that ends first ends the stream") {
  const Outcome o = RunOk(Segments(ServerEndsFirst));
  REQUIRE(o.sink.events.size() == 3);
  const StreamEnd end = o.sink.ends().at(0);
  CHECK(end.reason == EndReason::kComplete);
  CHECK(end.grpc_status == 8);
  CHECK(end.grpc_message == "too big");
  CHECK(end.request_messages == 1);
  CHECK(end.request_bytes == 10);
}

TEST_CASE("http2: Host stands in for a missing :authority") {
  Script s;
  s.Open();
  s.Client(s.RequestHeaders(
      1, {{":method", "GET"}, {":scheme", "http"}, {":path", "/"}, {"host", "legacy:80"}},
      kEndHeaders | kEndStream));
  const Outcome o = RunOk(s.segments);
  CHECK(o.sink.requests().at(0).authority == "legacy:80");
}

TEST_CASE("http2: limits") {
  SECTION("a frame over max_frame_bytes") {
    ParserConfig config;
    config.limits.max_frame_bytes = 100;
    Script s;
    s.Open();
    s.Client(s.RequestHeaders(1, Get("/")) + Data(1, std::string(100, 'x')));
    CHECK(Run(s.segments, config).state == ParserState::kParsing);
    s.Client(Data(1, std::string(101, 'x')));
    const Outcome o = Run(s.segments, config);
    CHECK(o.state == ParserState::kFailed);
    CHECK(o.error == ParseError::kFrameTooLarge);
    CHECK_THAT(o.detail, Catch::Contains("101"));
  }
  SECTION("a header block over max_header_bytes, across CONTINUATIONs") {
    ParserConfig config;
    config.limits.max_header_bytes = 200;
    Script s;
    s.Open();
    const std::string block = s.client_hpack.Encode(
        {{":method", "GET"}, {":path", "/"}, {"cookie", std::string(250, '~')}});
    REQUIRE(block.size() > 200);
    s.Client(Frame(FrameType::kHeaders, 0, 1, block.substr(0, 150)));
    CHECK(Run(s.segments, config).state == ParserState::kParsing);
    s.Client(Frame(FrameType::kContinuation, kEndHeaders, 1, block.substr(150)));
    const Outcome o = Run(s.segments, config);
    CHECK(o.state == ParserState::kFailed);
    CHECK(o.error == ParseError::kHeadersTooLarge);
  }
  SECTION("a small block that decodes to kept values over max_header_bytes") {
    ParserConfig config;
    config.limits.max_header_bytes = 1000;
    config.captured_headers = {"x-big"};
    Script s;
    s.Open();
    // The first request puts a 600-byte value in the table; the second repeats it by index.
    s.Client(s.RequestHeaders(1, {{":method", "GET"}, {"x-big", std::string(600, 'v')}},
                              kEndHeaders | kEndStream));
    s.Client(s.RequestHeaders(
        3, {{":method", "GET"}, {"x-big", std::string(600, 'v')}, {"x-big", std::string(600, 'v')}},
        kEndHeaders | kEndStream));
    const Outcome o = Run(s.segments, config);
    CHECK(o.sink.requests().size() == 1);
    CHECK(o.error == ParseError::kHeadersTooLarge);
  }
  SECTION("more streams open than max_open_streams") {
    ParserConfig config;
    config.limits.max_open_streams = 2;
    Script s;
    s.Open();
    s.Client(Join({s.RequestHeaders(1, Get("/1")), s.RequestHeaders(3, Get("/3"))}));
    s.Server(s.ResponseHeaders(1, Status("200"), kEndHeaders | kEndStream));
    s.Client(s.RequestHeaders(5, Get("/5")));  // 1 ended: two open again
    CHECK(Run(s.segments, config).state == ParserState::kParsing);
    s.Client(s.RequestHeaders(7, Get("/7")));
    const Outcome o = Run(s.segments, config);
    CHECK(o.state == ParserState::kFailed);
    CHECK(o.error == ParseError::kTooManyStreams);
    CHECK(o.sink.requests().size() == 3);
  }
}

// Every malformed input fails the parser, and a failed parser takes no more input.
void CheckMalformed(const std::vector<Segment>& segments, ParseError expected,
                    std::string_view detail) {
  Outcome o = Run(segments);
  INFO(o.detail);
  CHECK(o.state == ParserState::kFailed);
  CHECK(o.error == expected);
  CHECK_THAT(o.detail, Catch::Contains(std::string(detail)));
}

TEST_CASE("http2: malformed input") {
  Script s;
  SECTION("a bad preface") {
    s.Client("PRI * HTTP/1.1\r\n\r\nSM\r\n\r\n");
    CheckMalformed(s.segments, ParseError::kMalformed, "preface");
  }
  SECTION("a preface that is cut short and goes wrong later") {
    s.Client("PRI * HTTP/2.0\r\n");
    CHECK(Run(s.segments).state == ParserState::kParsing);
    s.Client("\r\nXY\r\n\r\n");
    CheckMalformed(s.segments, ParseError::kMalformed, "preface");
  }
  SECTION("garbage HPACK") {
    s.Open();
    s.Client(Frame(FrameType::kHeaders, kEndHeaders, 1, "\xff\xff\xff\xff\xff\xff"));
    CheckMalformed(s.segments, ParseError::kHpack, "stream 1");
  }
  SECTION("an HPACK index past the tables") {
    s.Open();
    s.Client(Frame(FrameType::kHeaders, kEndHeaders, 1, "\xbf"));  // index 63, table empty
    CheckMalformed(s.segments, ParseError::kHpack, "client");
  }
  SECTION("HEADERS on stream 0") {
    s.Open();
    s.Client(Frame(FrameType::kHeaders, kEndHeaders, 0, s.client_hpack.Encode(Get("/"))));
    CheckMalformed(s.segments, ParseError::kMalformed, "stream 0");
  }
  SECTION("DATA on stream 0") {
    s.Open();
    s.Server(Data(0, "x"));
    CheckMalformed(s.segments, ParseError::kMalformed, "stream 0");
  }
  SECTION("a client opening an even stream") {
    s.Open();
    s.Client(s.RequestHeaders(2, Get("/")));
    CheckMalformed(s.segments, ParseError::kMalformed, "even");
  }
  SECTION("SETTINGS on a stream") {
    s.Open();
    s.Server(Frame(FrameType::kSettings, 0, 1, ""));
    CheckMalformed(s.segments, ParseError::kMalformed, "SETTINGS");
  }
  SECTION("SETTINGS of a length no multiple of 6") {
    s.Open();
    s.Server(Frame(FrameType::kSettings, 0, 0, "12345"));
    CheckMalformed(s.segments, ParseError::kMalformed, "multiple of 6");
  }
  SECTION("RST_STREAM of the wrong size") {
    s.Open();
    s.Client(Frame(FrameType::kRstStream, 0, 1, "123"));
    CheckMalformed(s.segments, ParseError::kMalformed, "RST_STREAM");
  }
  SECTION("padding longer than the frame") {
    s.Open();
    s.Client(s.RequestHeaders(1, Get("/")));
    s.Client(Frame(FrameType::kData, flags::kPadded, 1, std::string(1, '\x05') + "abcd"));
    CheckMalformed(s.segments, ParseError::kMalformed, "padding");
  }
  SECTION("a PADDED frame with no room for the pad length") {
    s.Open();
    s.Client(Frame(FrameType::kData, flags::kPadded, 1, ""));
    CheckMalformed(s.segments, ParseError::kMalformed, "too short");
  }
  SECTION("another frame inside a header block") {
    s.Open();
    const std::string block = s.client_hpack.Encode(Get("/"));
    s.Client(Frame(FrameType::kHeaders, 0, 1, block) + Data(1, "x"));
    CheckMalformed(s.segments, ParseError::kMalformed, "CONTINUATION");
  }
  SECTION("CONTINUATION of another stream") {
    s.Open();
    const std::string block = s.client_hpack.Encode(Get("/"));
    s.Client(Frame(FrameType::kHeaders, 0, 1, block.substr(0, 5)) +
             Frame(FrameType::kContinuation, kEndHeaders, 3, block.substr(5)));
    CheckMalformed(s.segments, ParseError::kMalformed, "CONTINUATION");
  }
  SECTION("CONTINUATION with no header block") {
    s.Open();
    s.Server(Frame(FrameType::kContinuation, kEndHeaders, 1, ""));
    CheckMalformed(s.segments, ParseError::kMalformed, "no open header block");
  }
  SECTION("PUSH_PROMISE from the client") {
    s.Open();
    s.Client(Frame(FrameType::kPushPromise, kEndHeaders, 1, Uint32(2)));
    CheckMalformed(s.segments, ParseError::kMalformed, "PUSH_PROMISE");
  }
  SECTION("a response on a stream the client never opened") {
    s.Open();
    s.Server(s.ResponseHeaders(1, Status("200")));
    CheckMalformed(s.segments, ParseError::kUnexpectedResponse, "stream 1");
  }
  SECTION("a response without :status") {
    s.Open();
    s.Client(s.RequestHeaders(1, Get("/")));
    s.Server(s.ResponseHeaders(1, {{"content-type", "text/plain"}}));
    CheckMalformed(s.segments, ParseError::kMalformed, ":status");
  }
  SECTION("input after a failure is ignored, Close still ends what was started") {
    s.Open();
    s.Client(s.RequestHeaders(1, Get("/")));
    s.Client(Data(0, "x"));
    s.Server(s.ResponseHeaders(1, Status("200"), kEndHeaders | kEndStream));
    const Outcome o = Run(s.segments, {}, 9);
    CHECK(o.state == ParserState::kFailed);
    REQUIRE(o.sink.events.size() == 2);
    CHECK(o.sink.ends().at(0).reason == EndReason::kAborted);
  }
}

TEST_CASE("http2: MakeParser builds this parser for HTTP/2") {
  ParserConfig config;
  RecordingSink sink;
  std::unique_ptr<ConnectionParser> parser = MakeParser(Protocol::kHttp2, config, sink);
  REQUIRE(parser != nullptr);
  CHECK(parser->Feed(Peer::kClient, "GET / HTTP/1.1\r\n\r\n", 1) == ParserState::kFailed);
  CHECK(parser->error() == ParseError::kMalformed);
}

// --- recordings of real peers (test/fixtures/parsers/record.py lists their facts) -------

const std::vector<std::string> kCaptures = {"h2-nghttp-1", "h2-nghttp-2", "h2-h2load", "grpc-unary",
                                            "grpc-streaming"};

std::vector<Segment> Capture(const std::string& name) {
  return testing::ReadCapture(testing::FixturePath("parsers/" + name + ".capture"));
}

// Replays a capture whole and returns the stream ends by stream id.
std::map<uint32_t, StreamEnd> EndsOf(const std::string& name, RecordingSink& sink) {
  ParserConfig config;
  Parser parser(config, sink);
  testing::Replay(Capture(name), parser);
  INFO(parser.error_detail());
  REQUIRE(parser.state() == ParserState::kParsing);
  std::map<uint32_t, StreamEnd> ends;
  for (const StreamEnd& end : sink.ends()) ends[end.stream_id] = end;
  REQUIRE(ends.size() == sink.requests().size());
  return ends;
}

TEST_CASE("http2: nghttp against nghttpd") {
  RecordingSink sink;
  std::map<uint32_t, StreamEnd> ends = EndsOf("h2-nghttp-1", sink);
  REQUIRE(ends.size() == 3);
  const auto requests = sink.requests();
  CHECK(requests[0].path == "/file-1000.txt");
  CHECK(requests[0].authority == "127.0.0.1:18080");
  CHECK(requests[1].path == "/file-70000.txt");
  CHECK(requests[2].path == "/missing");
  CHECK(ends[13].status == 200);
  CHECK(ends[13].response_bytes == 1000);
  CHECK(ends[15].status == 200);
  CHECK(ends[15].response_bytes == 70000);
  CHECK(ends[17].status == 404);
  CHECK(ends[17].response_bytes == 148);
  for (const auto& [id, end] : ends) CHECK(end.reason == EndReason::kComplete);
  CHECK(sink.responses().at(2).headers ==
        std::vector<Header>{{"content-type", "text/html; charset=UTF-8"}});

  RecordingSink upload_sink;
  ends = EndsOf("h2-nghttp-2", upload_sink);
  REQUIRE(ends.size() == 1);
  CHECK(upload_sink.requests().at(0).method == "POST");
  CHECK(ends[13].request_bytes == 3000);
  CHECK(ends[13].response_bytes == 3000);
  CHECK(ends[13].status == 200);
}

TEST_CASE("http2: h2load, 20 requests 4 at a time") {
  RecordingSink sink;
  const std::map<uint32_t, StreamEnd> ends = EndsOf("h2-h2load", sink);
  REQUIRE(ends.size() == 20);
  uint32_t expected_id = 1;
  for (const auto& [id, end] : ends) {
    CHECK(id == expected_id);
    expected_id += 2;
    CHECK(end.reason == EndReason::kComplete);
    CHECK(end.status == 200);
    CHECK(end.response_bytes == 1000);
  }
}

TEST_CASE("http2: gRPC unary calls from grpcio") {
  RecordingSink sink;
  std::map<uint32_t, StreamEnd> ends = EndsOf("grpc-unary", sink);
  REQUIRE(ends.size() == 7);
  for (const RequestStart& request : sink.requests()) CHECK(request.grpc);
  CHECK(sink.requests().at(4).path == "/nodemesh.test.Echo/Fail");
  const std::pair<uint32_t, uint64_t> echoes[] = {{1, 0}, {3, 13}, {5, 1000}, {7, 20000}};
  for (const auto& [id, size] : echoes) {
    CAPTURE(id);
    CHECK(ends[id].reason == EndReason::kComplete);
    CHECK(ends[id].grpc_status == 0);
    CHECK(ends[id].request_messages == 1);
    CHECK(ends[id].response_messages == 1);
    CHECK(ends[id].request_bytes == size + 5);
    CHECK(ends[id].response_bytes == size + 5);
  }
  CHECK(ends[9].grpc_status == 2);
  CHECK(ends[9].grpc_message == "echo failed: caf\xC3\xA9 \xE2\x98\x95 100%");
  CHECK(ends[9].response_messages == 0);
  CHECK(ends[9].status == 200);
  CHECK(ends[11].grpc_status == 12);
  CHECK(ends[11].grpc_message == "Method not found!");
  // The deadline race: the server's DEADLINE_EXCEEDED, or the client's CANCEL first.
  if (ends[13].reason == EndReason::kComplete) {
    CHECK(ends[13].grpc_status == 4);
    CHECK(ends[13].grpc_message == "Deadline Exceeded");
  } else {
    CHECK(ends[13].reason == EndReason::kReset);
    CHECK(ends[13].error_code == static_cast<uint32_t>(ErrorCode::kCancel));
  }
}

TEST_CASE("http2: gRPC streaming calls from grpcio") {
  RecordingSink sink;
  std::map<uint32_t, StreamEnd> ends = EndsOf("grpc-streaming", sink);
  REQUIRE(ends.size() == 3);
  CHECK(ends[1].request_messages == 1);
  CHECK(ends[1].response_messages == 5);
  CHECK(ends[1].response_bytes == 1500 + 5 * 5);
  CHECK(ends[3].request_messages == 4);
  CHECK(ends[3].request_bytes == 100 + 4 * 5);
  CHECK(ends[3].response_messages == 1);
  CHECK(ends[3].response_bytes == 30 + 5);
  CHECK(ends[5].request_messages == 3);
  CHECK(ends[5].response_messages == 3);
  CHECK(ends[5].request_bytes == 777 + 3 * 5);
  CHECK(ends[5].response_bytes == 777 + 3 * 5);
  for (const auto& [id, end] : ends) {
    CHECK(end.reason == EndReason::kComplete);
    CHECK(end.grpc_status == 0);
  }
}

TEST_CASE("http2: any split of the same bytes gives the same events") {
  std::mt19937 rng(Catch::rngSeed());
  ParserConfig config;
  config.captured_headers = {"content-type", "user-agent", "x-pushed"};
  std::vector<std::pair<std::string, std::vector<Segment>>> conversations;
  for (const auto& [name, build] : kConversations)
    conversations.emplace_back(name, Segments(build));
  for (const std::string& name : kCaptures) conversations.emplace_back(name, Capture(name));
  for (const auto& [name, segments] : conversations) {
    CAPTURE(name);
    RecordingSink whole_sink;
    Parser whole(config, whole_sink);
    testing::Replay(segments, whole);
    INFO(whole.error_detail());
    REQUIRE(whole.state() == ParserState::kParsing);
    REQUIRE_FALSE(whole_sink.ends().empty());
    for (int round = 0; round < 100; ++round) {
      RecordingSink split_sink;
      Parser split(config, split_sink);
      testing::Replay(segments, split, &rng);
      REQUIRE(split_sink.Dump() == whole_sink.Dump());
      REQUIRE(split_sink.events == whole_sink.events);
      REQUIRE(split.state() == whole.state());
    }
  }
}

}  // namespace
}  // namespace nodemesh::parsers::http2
