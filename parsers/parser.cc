#include "parsers/parser.h"

#include "parsers/http1/parser.h"
#include "parsers/http2/parser.h"

namespace nodemesh::parsers {

std::string_view ParseErrorName(ParseError error) {
  switch (error) {
    case ParseError::kNone:
      return "none";
    case ParseError::kMalformed:
      return "malformed";
    case ParseError::kHeadersTooLarge:
      return "headers_too_large";
    case ParseError::kTooManyStreams:
      return "too_many_streams";
    case ParseError::kFrameTooLarge:
      return "frame_too_large";
    case ParseError::kHpack:
      return "hpack";
    case ParseError::kUnexpectedResponse:
      return "unexpected_response";
    case ParseError::kBufferedTooMuch:
      return "buffered_too_much";
  }
  return "unknown";
}

std::unique_ptr<ConnectionParser> MakeParser(Protocol protocol, const ParserConfig& config,
                                             EventSink& sink) {
  switch (protocol) {
    case Protocol::kHttp1:
      return std::make_unique<http1::Parser>(config, sink);
    case Protocol::kHttp2:
      return std::make_unique<http2::Parser>(config, sink);
    case Protocol::kTls:
    case Protocol::kOpaque:
      return nullptr;
  }
  return nullptr;
}

}  // namespace nodemesh::parsers
