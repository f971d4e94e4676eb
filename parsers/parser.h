// The contract every L7 parser keeps: bytes of one TCP connection in, request/response
// events out. Parsers are pure (no I/O, no threads, no clock: the caller supplies
// timestamps) and incremental (any split of the same bytes yields the same events).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "parsers/detect.h"
#include "parsers/end_reason.h"

namespace nodemesh::parsers {

// Nanoseconds on the caller's monotonic clock.
using Timestamp = int64_t;

// Which end of the connection sent a run of bytes.
enum class Peer : uint8_t { kClient, kServer };

struct Header {
  std::string name;  // lowercase
  std::string value;

  bool operator==(const Header&) const = default;
};

// A request head is complete. stream_id is the HTTP/2 stream id, or for HTTP/1 the
// request's position on its connection (1, 2, 3, ...).
struct RequestStart {
  uint32_t stream_id = 0;
  Timestamp at = 0;  // when the first byte of the request arrived
  std::string method;
  std::string scheme;     // "http" for HTTP/1; :scheme for HTTP/2
  std::string authority;  // Host header or :authority
  std::string path;       // request-target or :path
  std::vector<Header> headers;  // the headers named in ParserConfig::captured_headers
  bool grpc = false;            // content-type application/grpc[+proto|...]

  bool operator==(const RequestStart&) const = default;
};

// The final (non-1xx) response head is complete.
struct ResponseStart {
  uint32_t stream_id = 0;
  Timestamp at = 0;  // when the first byte of the response head arrived
  int status = 0;
  std::vector<Header> headers;

  bool operator==(const ResponseStart&) const = default;
};

struct StreamEnd {
  uint32_t stream_id = 0;
  EndReason reason = EndReason::kComplete;
  Timestamp request_at = 0;   // as in RequestStart
  Timestamp response_at = 0;  // as in ResponseStart; 0 when no response head arrived
  Timestamp at = 0;           // when the end was seen
  int status = 0;             // HTTP status; 0 when no response head arrived
  uint64_t request_bytes = 0;   // body bytes (HTTP/2: DATA payload without padding)
  uint64_t response_bytes = 0;
  uint32_t request_messages = 0;  // gRPC length-prefixed messages
  uint32_t response_messages = 0;
  std::optional<int> grpc_status;  // from trailers or a trailers-only response
  std::string grpc_message;        // percent-decoded
  uint32_t error_code = 0;         // HTTP/2 error code of the RST_STREAM or GOAWAY

  bool operator==(const StreamEnd&) const = default;
};

// Receives a parser's events. Events of one stream come in order start, response, end;
// a stream may end without a response. The references are valid during the call only.
class EventSink {
 public:
  virtual ~EventSink() = default;
  virtual void OnRequestStart(const RequestStart& request) = 0;
  virtual void OnResponseStart(const ResponseStart& response) = 0;
  virtual void OnStreamEnd(const StreamEnd& end) = 0;
};

struct ParserLimits {
  size_t max_header_bytes = 64 * 1024;   // one HTTP/1 head or one HTTP/2 header block
  size_t max_pending_requests = 256;     // HTTP/1 pipelined requests awaiting a response
  size_t max_open_streams = 1024;        // HTTP/2 streams tracked at once
  size_t max_frame_bytes = 1 << 24;      // HTTP/2 frame payload (protocol maximum 2^24-1)
  size_t max_buffered_client_bytes = 64 * 1024;  // held while an Upgrade awaits its answer
};

struct ParserConfig {
  ParserLimits limits;
  // Lowercase names of the headers copied into RequestStart/ResponseStart::headers.
  std::vector<std::string> captured_headers = {"content-type", "user-agent"};
};

enum class ParserState : uint8_t {
  kParsing,
  kSwitched,  // Upgrade or CONNECT succeeded: the rest of the connection is another protocol
  kFailed,    // malformed or over a limit: the rest of the connection is opaque
};

enum class ParseError : uint8_t {
  kNone,
  kMalformed,           // the peer broke the protocol's syntax
  kHeadersTooLarge,     // over ParserLimits::max_header_bytes
  kTooManyStreams,      // over max_open_streams or max_pending_requests
  kFrameTooLarge,       // over max_frame_bytes
  kHpack,               // header block that nghttp2's inflater rejects
  kUnexpectedResponse,  // a response with no request to pair it with
  kBufferedTooMuch,     // over max_buffered_client_bytes
};
// Arrays indexed by ParseError are sized by this: kBufferedTooMuch stays the last enumerator.
inline constexpr size_t kParseErrorCount = static_cast<size_t>(ParseError::kBufferedTooMuch) + 1;

std::string_view ParseErrorName(ParseError error);

// One parser per connection. Once state() leaves kParsing the parser ignores further input:
// the caller forwards the rest of the connection untouched and counts the reason.
class ConnectionParser {
 public:
  virtual ~ConnectionParser() = default;
  virtual ParserState Feed(Peer from, std::string_view bytes, Timestamp now) = 0;
  // `from` will send no more bytes (it half-closed): ends bodies delimited by EOF.
  virtual ParserState EndOfInput(Peer from, Timestamp now) = 0;
  // The connection is gone: every stream still open ends as kAborted.
  virtual void Close(Timestamp now) = 0;
  // The connection has been quiet for a while: gives back the memory the parser keeps for
  // the next message (its scratch) when no message is partly parsed, to be taken again by
  // the next bytes. Nothing it reports afterwards differs from never calling it.
  virtual void ReleaseIdleMemory() = 0;
  virtual ParserState state() const = 0;
  virtual ParseError error() const = 0;
  // Human-readable detail of error(), for logs.
  virtual std::string_view error_detail() const = 0;
};

// The protocols MakeParser has a parser for.
inline constexpr Protocol kParsedProtocols[] = {Protocol::kHttp1, Protocol::kHttp2};

// A parser for a detected protocol; nullptr for the others (TLS, opaque).
std::unique_ptr<ConnectionParser> MakeParser(Protocol protocol, const ParserConfig& config,
                                             EventSink& sink);

}  // namespace nodemesh::parsers
