// HTTP/1.x on llhttp: one llhttp instance per direction, requests paired with responses
// in order (pipelining), bodies by Content-Length, chunked or EOF, HEAD/1xx/204/304 with
// no body, Upgrade and CONNECT switching the connection to another protocol.
#pragma once

#include <memory>
#include <string>
#include <vector>

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
  void ReleaseIdleMemory() override;
  ParserState state() const override { return state_; }
  ParseError error() const override { return error_; }
  std::string_view error_detail() const override { return error_detail_; }
  // Whether the parser holds its scratch (the last ReleaseIdleMemory gave it back and no
  // bytes came since): what its tests check.
  bool holds_scratch() const { return scratch_ != nullptr; }

 private:
  // A request seen on the client side and not yet answered.
  struct Pending {
    uint32_t stream_id = 0;
    Timestamp request_at = 0;
    uint8_t method = 0;      // llhttp_method_t, known once the request head is parsed
    bool started = false;    // RequestStart emitted
    bool responded = false;  // ResponseStart emitted
    uint64_t request_bytes = 0;
  };

  // Requests awaiting responses, oldest first: a ring that grows to the pipelining depth
  // seen and then stops allocating.
  class PendingQueue {
   public:
    bool empty() const { return size_ == 0; }
    size_t size() const { return size_; }
    Pending& front() { return slots_[head_]; }
    Pending& back() { return slots_[(head_ + size_ - 1) % slots_.size()]; }
    Pending& operator[](size_t i) { return slots_[(head_ + i) % slots_.size()]; }
    void push_back(const Pending& pending);
    void pop_front();
    void clear() { head_ = size_ = 0; }

   private:
    std::vector<Pending> slots_;
    size_t head_ = 0;
    size_t size_ = 0;
  };

  // One direction: its llhttp instance and the head being parsed.
  struct Side {
    Parser* parser = nullptr;
    bool request = false;
    llhttp_t* http = nullptr;  // the parser's, whose `data` points here
    size_t head_bytes = 0;  // start line plus headers so far, for max_header_bytes
    std::string field;      // the header name being parsed, unless longer than any wanted
    size_t field_length = 0;
    std::string value;      // its value, when one of the wanted headers
    // What the current header is, known when its name is complete.
    bool is_host = false;
    bool is_content_type = false;
    const std::string* captured_as = nullptr;  // the configured name, if captured
    // The event whose headers this side fills, and how many it has filled so far: the
    // vector keeps its elements between messages so their strings keep their storage.
    std::vector<Header>* headers = nullptr;
    size_t captured = 0;
    bool in_message = false;  // between a message's first byte and its end
  };

  // What parsing a message takes, and what reusing it between messages keeps (the strings
  // and vectors keep their storage, so that a steady connection does not allocate per
  // request): made with the parser, given back by ReleaseIdleMemory between messages, made
  // again by the next bytes. The llhttp states stay with the parser: between messages they
  // are not always their initial ones (after "Connection: close", say), and kept whole they
  // parse on exactly as if nothing had been given back.
  struct Scratch {
    explicit Scratch(Parser& parser);
    Scratch(const Scratch&) = delete;
    Scratch& operator=(const Scratch&) = delete;

    Side client;
    Side server;
    PendingQueue pending;
    // Scratch events.
    RequestStart request;
    ResponseStart response;
    // The client side paused after an Upgrade or CONNECT request: its later bytes wait here
    // until the response says whether the protocol switched.
    std::string held_client_bytes;
  };

  static const llhttp_settings_t kRequestSettings;
  static const llhttp_settings_t kResponseSettings;

  // llhttp callbacks, by direction.
  static int OnRequestBegin(llhttp_t* http);
  static int OnUrl(llhttp_t* http, const char* at, size_t length);
  static int OnRequestHeadersComplete(llhttp_t* http);
  static int OnRequestBody(llhttp_t* http, const char* at, size_t length);
  static int OnRequestComplete(llhttp_t* http);
  static int OnResponseBegin(llhttp_t* http);
  static int OnStatus(llhttp_t* http, const char* at, size_t length);
  static int OnResponseHeadersComplete(llhttp_t* http);
  static int OnResponseBody(llhttp_t* http, const char* at, size_t length);
  static int OnResponseComplete(llhttp_t* http);
  static int OnHeaderField(llhttp_t* http, const char* at, size_t length);
  static int OnHeaderFieldComplete(llhttp_t* http);
  static int OnHeaderValue(llhttp_t* http, const char* at, size_t length);
  static int OnHeaderValueComplete(llhttp_t* http);

  static Side& SideOf(llhttp_t* http) { return *static_cast<Side*>(http->data); }

  Scratch& scratch() {
    if (!scratch_) scratch_ = std::make_unique<Scratch>(*this);
    return *scratch_;
  }
  ParserState FeedClient(std::string_view bytes);
  void Execute(Side& side, std::string_view bytes);
  int CountHeadBytes(Side& side, size_t length) {
    side.head_bytes += length;
    return side.head_bytes <= config_.limits.max_header_bytes ? HPE_OK : HeadTooLarge(side);
  }
  int HeadTooLarge(Side& side);
  int Fail(ParseError error, std::string detail);
  void StartRequest(Pending& pending);
  // The request the client side is parsing, if it still awaits its response.
  Pending* CurrentRequest();
  void EndStream(const Pending& pending, EndReason reason, Timestamp at);
  void KeepHeader(Side& side);
  static void EndCapture(Side& side);

  const ParserConfig& config_;
  EventSink& sink_;
  llhttp_t client_http_;
  llhttp_t server_http_;
  std::unique_ptr<Scratch> scratch_;
  size_t longest_wanted_name_ = std::string_view("content-type").size();
  Timestamp now_ = 0;
  ParserState state_ = ParserState::kParsing;
  ParseError error_ = ParseError::kNone;
  std::string error_detail_;

  uint32_t next_stream_id_ = 1;
  uint32_t client_stream_id_ = 0;  // the request the client side is parsing
  Timestamp response_at_ = 0;      // first byte of the response being parsed
  uint64_t response_bytes_ = 0;
  bool final_response_ = false;  // the current response is not 1xx
  bool switching_ = false;       // the current response switches protocols
  bool client_ended_ = false;    // EndOfInput() seen, by peer
  bool server_ended_ = false;
  // The client's bytes after an Upgrade or CONNECT request wait in held_client_bytes.
  bool client_awaits_upgrade_ = false;
};

}  // namespace nodemesh::parsers::http1
