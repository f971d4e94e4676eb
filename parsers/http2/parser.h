// HTTP/2 (prior knowledge, RFC 9113) and gRPC on top of it, seen from the middle of the
// connection: frames of both directions, HPACK through nghttp2's inflater (one per
// direction, so each dynamic table follows its encoder), streams from the request's header
// block to END_STREAM, RST_STREAM or GOAWAY, and gRPC status from trailers or a
// trailers-only response.
//
// Timestamps, so that any split of the same bytes gives the same events:
//   RequestStart.at  = `now` of the Feed call in which the request's header block became
//                      complete (the byte that ended the frame carrying END_HEADERS);
//   ResponseStart.at = likewise for the final (non-1xx) response header block;
//   StreamEnd.at     = `now` of the Feed call holding the last byte of the frame that ended
//                      the stream (END_STREAM from the server, RST_STREAM or GOAWAY), or the
//                      time given to Close().
// A stream ends as kComplete when the server ends its side, even if the client is still
// sending: whatever the client sends on it afterwards is not counted. A stream the client
// opens above the last stream id of the server's GOAWAY starts and ends kRefused at once.
// Message counts are of whole gRPC messages (prefix and payload), on streams whose request
// content-type starts with application/grpc.
//
// Bounded memory: DATA is streamed and never held; one header block per direction is held
// until END_HEADERS (at most ParserLimits::max_header_bytes), and so are the header values
// the events keep from it. SETTINGS_HEADER_TABLE_SIZE may raise the HPACK table size up to
// kMaxHeaderTableSize; an encoder that uses more fails the connection with kHpack.
#pragma once

#include <array>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "parsers/http2/types.h"
#include "parsers/parser.h"

struct nghttp2_hd_inflater;

namespace nodemesh::parsers::http2 {

// The largest HPACK dynamic table a peer's SETTINGS can make an inflater accept.
inline constexpr size_t kMaxHeaderTableSize = 1 << 20;

class Parser final : public ConnectionParser {
 public:
  // `config` and `sink` must outlive the parser.
  Parser(const ParserConfig& config, EventSink& sink);
  Parser(const Parser&) = delete;
  Parser& operator=(const Parser&) = delete;
  ~Parser() override;

  ParserState Feed(Peer from, std::string_view bytes, Timestamp now) override;
  // HTTP/2 never delimits anything by EOF; streams left open end in Close().
  ParserState EndOfInput(Peer from, Timestamp now) override;
  void Close(Timestamp now) override;
  // Between frames, with no stream open and no header block being put together: the
  // blocks', decoded headers' and events' storage and the stream map's. The HPACK tables
  // stay: they are the connection's state, which the next header block refers to.
  void ReleaseIdleMemory() override;
  ParserState state() const override { return state_; }
  ParseError error() const override { return error_; }
  std::string_view error_detail() const override { return error_detail_; }

 private:
  struct InflaterDeleter {
    void operator()(nghttp2_hd_inflater* inflater) const;
  };
  using Inflater = std::unique_ptr<nghttp2_hd_inflater, InflaterDeleter>;

  // Where a direction's byte stream is: frames are cut into a fixed-size part that is
  // collected (pad length, priority, promised stream, control payloads), a body that is
  // streamed (DATA, header block fragments, SETTINGS entries, GOAWAY debug data), and
  // padding that is skipped.
  enum class Phase : uint8_t { kPreface, kFrameHeader, kFrameFields, kFrameBody, kFramePadding };

  // One side's frames, as its peer receives them.
  struct Direction {
    explicit Direction(Peer from) : peer(from) {}

    Peer peer;
    Inflater inflater;  // decodes the header blocks this side sends
    size_t inflater_table_limit = kDefaultHeaderTableSize;

    Phase phase = Phase::kFrameHeader;
    size_t preface_matched = 0;
    uint8_t header_bytes[kFrameHeaderBytes] = {};
    size_t header_filled = 0;
    FrameHeader frame;
    std::array<uint8_t, 8> fields = {};  // the largest fixed part: PING, GOAWAY
    size_t fields_size = 0;
    size_t fields_filled = 0;
    size_t body_left = 0;
    size_t padding_left = 0;
    uint8_t setting[kSettingBytes] = {};
    size_t setting_filled = 0;

    // The header block being assembled from HEADERS or PUSH_PROMISE and CONTINUATIONs.
    std::string block;
    uint32_t block_stream_id = 0;
    bool block_open = false;        // its last frame had no END_HEADERS yet
    bool block_end_stream = false;  // the HEADERS frame carried END_STREAM
    bool block_is_push = false;     // a PUSH_PROMISE's request: decoded, not reported
  };

  // Splits one direction's DATA into gRPC length-prefixed messages, across frames.
  struct GrpcMessages {
    void Consume(std::string_view data);

    uint32_t complete = 0;
    uint8_t prefix_filled = 0;
    uint32_t next_length = 0;
    uint64_t message_left = 0;
  };

  // A stream whose RequestStart was emitted and whose end was not.
  struct Stream {
    Timestamp request_at = 0;
    Timestamp response_at = 0;
    int status = 0;
    bool grpc = false;
    bool responded = false;  // the final response head arrived
    uint64_t request_bytes = 0;
    uint64_t response_bytes = 0;
    GrpcMessages request_messages;
    GrpcMessages response_messages;
    std::optional<int> grpc_status;
    std::string grpc_message;
  };

  // What one decoded header block said, as far as events need it.
  struct DecodedBlock {
    void Clear();

    std::string method;
    std::string scheme;
    std::string authority;
    std::string host;
    std::string path;
    std::optional<int> status;
    bool grpc = false;
    std::optional<int> grpc_status;
    bool has_grpc_message = false;
    std::string grpc_message;  // still percent-encoded
    std::vector<Header> captured;
    size_t kept_bytes = 0;  // copied out of the block, for the header size limit
  };

  using StreamMap = absl::flat_hash_map<uint32_t, Stream>;

  Direction& DirectionOf(Peer from) { return from == Peer::kClient ? client_ : server_; }

  void Consume(Direction& dir, std::string_view bytes);
  void StartFrame(Direction& dir);
  bool CheckFrameHeader(const Direction& dir);
  void BeginFields(Direction& dir);
  void EndFields(Direction& dir);
  void BeginBody(Direction& dir);
  void ConsumeBody(Direction& dir, std::string_view body);
  void BeginPadding(Direction& dir);
  void FinishFrame(Direction& dir);

  void ApplySetting(Direction& dir);
  void ConsumeData(const Direction& dir, std::string_view data);
  void DecodeHeaderBlock(Direction& dir);
  bool KeepField(std::string_view name, std::string_view value);
  void OnRequestBlock(uint32_t stream_id);
  void OnResponseBlock(uint32_t stream_id, bool end_stream);
  void OnReset(uint32_t stream_id, uint32_t error_code);
  void OnGoaway(uint32_t last_stream_id, uint32_t error_code);

  void EmitEnd(uint32_t stream_id, const Stream& stream, EndReason reason, Timestamp at,
               uint32_t error_code);
  // Ends the streams in `ids_` (ascending, so the order of events never depends on the
  // hash map's) and forgets them.
  void EndCollectedStreams(EndReason reason, Timestamp at, uint32_t error_code);
  void Fail(ParseError error, std::string detail);

  const ParserConfig& config_;
  EventSink& sink_;
  Timestamp now_ = 0;
  ParserState state_ = ParserState::kParsing;
  ParseError error_ = ParseError::kNone;
  std::string error_detail_;

  Direction client_{Peer::kClient};
  Direction server_{Peer::kServer};
  StreamMap streams_;
  uint32_t last_client_stream_id_ = 0;  // the highest stream the client opened
  // The server's GOAWAY: it will not process client streams above its last stream id.
  bool goaway_received_ = false;
  uint32_t goaway_last_stream_id_ = kStreamIdMask;
  uint32_t goaway_error_code_ = 0;

  DecodedBlock decoded_;
  RequestStart request_;
  ResponseStart response_;
  StreamEnd end_;
  std::vector<uint32_t> ids_;
};

}  // namespace nodemesh::parsers::http2
