// HTTP/1.x on llhttp: one llhttp instance per direction, requests paired with responses
// in order (pipelining), bodies by Content-Length, chunked or EOF, HEAD/1xx/204/304 with
// no body, Upgrade and CONNECT switching the connection to another protocol.
#pragma once

#include <deque>
#include <string>

#include "llhttp.h"
#include "parsers/parser.h"

namespace nodemesh::parsers::http1 {

class Parser final : public ConnectionParser {
 public:
  // `config` and `sink` must outlive the parser.
  Parser(const ParserConfig& config, EventSink& sink);
  Parser(const Parser&) = delete;
  Parser& operator=(const Parser&) = delete;

  ParserState Feed(Peer from, std::string_view bytes, Timestamp now) override;
  ParserState EndOfInput(Peer from, Timestamp now) override;
  void Close(Timestamp now) override;
  ParserState state() const override { return state_; }
  ParseError error() const override { return error_; }
  std::string_view error_detail() const override { return error_detail_; }

 private:
  // A request seen on the client side and not yet answered.
  struct Pending {
    uint32_t stream_id = 0;
    Timestamp request_at = 0;
    uint8_t method = 0;  // llhttp_method_t, known once the request line is parsed
    bool started = false;    // RequestStart emitted
    bool responded = false;  // ResponseStart emitted
    uint64_t request_bytes = 0;
  };

  // Head state of one direction's current message.
  struct Head {
    size_t bytes = 0;  // request line or status line plus headers, for the size limit
    std::string field;
    bool keep_value = false;  // the value is used: Host, Content-Type or a captured header
    std::string value;
  };

  static const llhttp_settings_t kRequestSettings;
  static const llhttp_settings_t kResponseSettings;

  // llhttp callbacks, by direction.
  static int OnRequestBegin(llhttp_t* http);
  static int OnUrl(llhttp_t* http, const char* at, size_t length);
  static int OnRequestHeadersComplete(llhttp_t* http);
  static int OnRequestBody(llhttp_t* http, const char* at, size_t length);
  static int OnResponseBegin(llhttp_t* http);
  static int OnStatus(llhttp_t* http, const char* at, size_t length);
  static int OnResponseHeadersComplete(llhttp_t* http);
  static int OnResponseBody(llhttp_t* http, const char* at, size_t length);
  static int OnResponseComplete(llhttp_t* http);
  static int OnHeaderField(llhttp_t* http, const char* at, size_t length);
  static int OnHeaderFieldComplete(llhttp_t* http);
  static int OnHeaderValue(llhttp_t* http, const char* at, size_t length);
  static int OnHeaderValueComplete(llhttp_t* http);

  static Parser& Of(llhttp_t* http) { return *static_cast<Parser*>(http->data); }
  bool IsRequest(const llhttp_t* http) const { return http == &request_http_; }
  Head& HeadOf(const llhttp_t* http) { return IsRequest(http) ? request_head_ : response_head_; }

  ParserState FeedClient(std::string_view bytes);
  ParserState FeedServer(std::string_view bytes);
  // Maps an llhttp result to the parser state; `bytes` is what was fed.
  void CheckResult(llhttp_t* http, llhttp_errno_t result, std::string_view bytes);
  int CountHeadBytes(llhttp_t* http, size_t length);
  int Fail(ParseError error, std::string detail);
  void StartRequest(Pending& pending);
  void EndStream(const Pending& pending, EndReason reason, Timestamp at);
  void KeepHeader(llhttp_t* http, const Head& head);

  const ParserConfig& config_;
  EventSink& sink_;
  llhttp_t request_http_;
  llhttp_t response_http_;
  Timestamp now_ = 0;
  ParserState state_ = ParserState::kParsing;
  ParseError error_ = ParseError::kNone;
  std::string error_detail_;

  uint32_t next_stream_id_ = 1;
  std::deque<Pending> pending_;
  Head request_head_;
  Head response_head_;
  RequestStart request_;    // scratch for the request head being parsed
  ResponseStart response_;  // scratch for the response head being parsed
  Timestamp response_at_ = 0;  // first byte of the response being parsed
  uint64_t response_bytes_ = 0;
  bool final_response_ = false;  // the current response is not 1xx
  bool switching_ = false;       // the current response switches protocols

  // The client side paused after an Upgrade or CONNECT request: its later bytes wait here
  // until the response says whether the protocol switched.
  bool client_awaits_upgrade_ = false;
  std::string held_client_bytes_;
};

}  // namespace nodemesh::parsers::http1
