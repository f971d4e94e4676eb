#include "parsers/http1/parser.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace nodemesh::parsers::http1 {
namespace {

// on_headers_complete results understood by llhttp.
constexpr int kHasBody = 0;
constexpr int kNoBody = 1;
constexpr int kNoBodyThenSwitch = 2;

llhttp_settings_t EmptySettings() {
  llhttp_settings_t settings;
  llhttp_settings_init(&settings);
  return settings;
}

}  // namespace

const llhttp_settings_t Parser::kRequestSettings = [] {
  llhttp_settings_t s = EmptySettings();
  s.on_message_begin = &Parser::OnRequestBegin;
  s.on_url = &Parser::OnUrl;
  s.on_header_field = &Parser::OnHeaderField;
  s.on_header_field_complete = &Parser::OnHeaderFieldComplete;
  s.on_header_value = &Parser::OnHeaderValue;
  s.on_header_value_complete = &Parser::OnHeaderValueComplete;
  s.on_headers_complete = &Parser::OnRequestHeadersComplete;
  s.on_body = &Parser::OnRequestBody;
  return s;
}();

const llhttp_settings_t Parser::kResponseSettings = [] {
  llhttp_settings_t s = EmptySettings();
  s.on_message_begin = &Parser::OnResponseBegin;
  s.on_status = &Parser::OnStatus;
  s.on_header_field = &Parser::OnHeaderField;
  s.on_header_field_complete = &Parser::OnHeaderFieldComplete;
  s.on_header_value = &Parser::OnHeaderValue;
  s.on_header_value_complete = &Parser::OnHeaderValueComplete;
  s.on_headers_complete = &Parser::OnResponseHeadersComplete;
  s.on_body = &Parser::OnResponseBody;
  s.on_message_complete = &Parser::OnResponseComplete;
  return s;
}();

Parser::Parser(const ParserConfig& config, EventSink& sink) : config_(config), sink_(sink) {
  for (auto [http, settings] : {std::pair{&request_http_, &kRequestSettings},
                                std::pair{&response_http_, &kResponseSettings}}) {
    llhttp_init(http, http == &request_http_ ? HTTP_REQUEST : HTTP_RESPONSE, settings);
    http->data = this;
    // An observer follows what the peers actually do: if a client keeps sending after
    // "Connection: close", the server decides, not the parser.
    llhttp_set_lenient_keep_alive(http, 1);
  }
}

ParserState Parser::Feed(Peer from, std::string_view bytes, Timestamp now) {
  if (state_ != ParserState::kParsing || bytes.empty()) return state_;
  now_ = now;
  return from == Peer::kClient ? FeedClient(bytes) : FeedServer(bytes);
}

ParserState Parser::FeedClient(std::string_view bytes) {
  if (client_awaits_upgrade_) {
    if (held_client_bytes_.size() + bytes.size() > config_.limits.max_buffered_client_bytes) {
      Fail(ParseError::kBufferedTooMuch, "client kept sending while its Upgrade was unanswered");
      return state_;
    }
    held_client_bytes_.append(bytes);
    return state_;
  }
  CheckResult(&request_http_, llhttp_execute(&request_http_, bytes.data(), bytes.size()), bytes);
  return state_;
}

ParserState Parser::FeedServer(std::string_view bytes) {
  CheckResult(&response_http_, llhttp_execute(&response_http_, bytes.data(), bytes.size()),
              bytes);
  if (state_ == ParserState::kParsing && !client_awaits_upgrade_ && !held_client_bytes_.empty()) {
    // The upgrade was refused: the client's held bytes are HTTP/1 after all.
    std::string held = std::move(held_client_bytes_);
    held_client_bytes_.clear();
    FeedClient(held);
  }
  return state_;
}

void Parser::CheckResult(llhttp_t* http, llhttp_errno_t result, std::string_view bytes) {
  if (state_ != ParserState::kParsing || result == HPE_OK) return;
  if (result == HPE_PAUSED_UPGRADE) {
    if (!IsRequest(http)) {
      state_ = ParserState::kSwitched;
      return;
    }
    // An Upgrade or CONNECT request: whether the bytes after it are still HTTP/1 depends
    // on the response.
    client_awaits_upgrade_ = true;
    const char* stop = llhttp_get_error_pos(http);
    held_client_bytes_.assign(stop, bytes.data() + bytes.size() - stop);
    return;
  }
  if (error_ == ParseError::kNone) {
    Fail(ParseError::kMalformed,
         absl::StrCat(IsRequest(http) ? "request: " : "response: ", llhttp_errno_name(result),
                      ": ", llhttp_get_error_reason(http)));
  }
  state_ = ParserState::kFailed;
}

ParserState Parser::EndOfInput(Peer from, Timestamp now) {
  if (state_ != ParserState::kParsing) return state_;
  now_ = now;
  llhttp_t* http = from == Peer::kClient ? &request_http_ : &response_http_;
  if (from == Peer::kClient && client_awaits_upgrade_) return state_;
  // Completes a body delimited by EOF; a message cut short is left for Close() to abort.
  if (llhttp_message_needs_eof(http)) CheckResult(http, llhttp_finish(http), {});
  return state_;
}

void Parser::Close(Timestamp now) {
  for (Pending& pending : pending_) {
    if (pending.started) EndStream(pending, EndReason::kAborted, now);
  }
  pending_.clear();
}

int Parser::Fail(ParseError error, std::string detail) {
  error_ = error;
  error_detail_ = std::move(detail);
  state_ = ParserState::kFailed;
  return HPE_USER;
}

int Parser::CountHeadBytes(llhttp_t* http, size_t length) {
  Head& head = HeadOf(http);
  head.bytes += length;
  if (head.bytes > config_.limits.max_header_bytes) {
    return Fail(ParseError::kHeadersTooLarge,
                absl::StrCat(IsRequest(http) ? "request" : "response", " head over ",
                             config_.limits.max_header_bytes, " bytes"));
  }
  return HPE_OK;
}

// --- request side ---------------------------------------------------------------------

int Parser::OnRequestBegin(llhttp_t* http) {
  Parser& self = Of(http);
  if (self.pending_.size() >= self.config_.limits.max_pending_requests) {
    return self.Fail(ParseError::kTooManyStreams,
                     absl::StrCat("over ", self.config_.limits.max_pending_requests,
                                  " pipelined requests awaiting a response"));
  }
  self.pending_.push_back(Pending{.stream_id = self.next_stream_id_++, .request_at = self.now_});
  self.request_head_.bytes = 0;
  RequestStart& request = self.request_;
  request.method.clear();
  request.authority.clear();
  request.path.clear();
  request.headers.clear();
  request.grpc = false;
  return HPE_OK;
}

int Parser::OnUrl(llhttp_t* http, const char* at, size_t length) {
  Parser& self = Of(http);
  self.request_.path.append(at, length);
  return self.CountHeadBytes(http, length);
}

int Parser::OnRequestHeadersComplete(llhttp_t* http) {
  Parser& self = Of(http);
  Pending& pending = self.pending_.back();
  pending.method = llhttp_get_method(http);
  self.StartRequest(pending);
  return kHasBody;
}

void Parser::StartRequest(Pending& pending) {
  request_.stream_id = pending.stream_id;
  request_.at = pending.request_at;
  request_.method = llhttp_method_name(static_cast<llhttp_method_t>(pending.method));
  request_.scheme = "http";
  pending.started = true;
  sink_.OnRequestStart(request_);
}

int Parser::OnRequestBody(llhttp_t* http, const char*, size_t length) {
  Parser& self = Of(http);
  // The response may have ended the exchange already (an early error answer).
  if (!self.pending_.empty()) self.pending_.back().request_bytes += length;
  return HPE_OK;
}

// --- response side --------------------------------------------------------------------

int Parser::OnResponseBegin(llhttp_t* http) {
  Parser& self = Of(http);
  if (self.pending_.empty()) {
    return self.Fail(ParseError::kUnexpectedResponse, "response with no request to answer");
  }
  self.response_head_.bytes = 0;
  self.response_at_ = self.now_;
  self.response_bytes_ = 0;
  self.response_.headers.clear();
  return HPE_OK;
}

int Parser::OnStatus(llhttp_t* http, const char*, size_t length) {
  return Of(http).CountHeadBytes(http, length);
}

int Parser::OnResponseHeadersComplete(llhttp_t* http) {
  Parser& self = Of(http);
  Pending& pending = self.pending_.front();
  const int status = llhttp_get_status_code(http);
  const bool connect = pending.method == HTTP_CONNECT;
  self.switching_ = status == 101 || (connect && status >= 200 && status < 300);
  self.final_response_ = status >= 200 || self.switching_;
  if (!self.final_response_) return kNoBody;  // 100 Continue and friends: a final one follows
  // A server may answer before the request head is complete (e.g. 431): report the request
  // with what is known of it.
  if (!pending.started) self.StartRequest(pending);
  self.response_.stream_id = pending.stream_id;
  self.response_.at = self.response_at_;
  self.response_.status = status;
  pending.responded = true;
  self.sink_.OnResponseStart(self.response_);
  if (self.switching_) return kNoBodyThenSwitch;
  return pending.method == HTTP_HEAD ? kNoBody : kHasBody;
}

int Parser::OnResponseBody(llhttp_t* http, const char*, size_t length) {
  Of(http).response_bytes_ += length;
  return HPE_OK;
}

int Parser::OnResponseComplete(llhttp_t* http) {
  Parser& self = Of(http);
  if (!self.final_response_) return HPE_OK;
  self.EndStream(self.pending_.front(), EndReason::kComplete, self.now_);
  self.pending_.pop_front();
  if (self.client_awaits_upgrade_ && self.pending_.empty()) {
    self.client_awaits_upgrade_ = false;
    if (!self.switching_) llhttp_resume_after_upgrade(&self.request_http_);
  }
  return HPE_OK;
}

void Parser::EndStream(const Pending& pending, EndReason reason, Timestamp at) {
  StreamEnd end;
  end.stream_id = pending.stream_id;
  end.reason = reason;
  end.request_at = pending.request_at;
  end.at = at;
  end.request_bytes = pending.request_bytes;
  if (pending.responded) {
    end.response_at = response_.at;
    end.status = response_.status;
    end.response_bytes = response_bytes_;
  }
  sink_.OnStreamEnd(end);
}

// --- headers, both sides --------------------------------------------------------------

int Parser::OnHeaderField(llhttp_t* http, const char* at, size_t length) {
  Parser& self = Of(http);
  self.HeadOf(http).field.append(at, length);
  return self.CountHeadBytes(http, length);
}

int Parser::OnHeaderFieldComplete(llhttp_t* http) {
  Parser& self = Of(http);
  Head& head = self.HeadOf(http);
  absl::AsciiStrToLower(&head.field);
  const std::vector<std::string>& captured = self.config_.captured_headers;
  head.keep_value = (self.IsRequest(http) && (head.field == "host" || head.field == "content-type")) ||
                    std::find(captured.begin(), captured.end(), head.field) != captured.end();
  return HPE_OK;
}

int Parser::OnHeaderValue(llhttp_t* http, const char* at, size_t length) {
  Parser& self = Of(http);
  Head& head = self.HeadOf(http);
  if (head.keep_value) head.value.append(at, length);
  return self.CountHeadBytes(http, length);
}

int Parser::OnHeaderValueComplete(llhttp_t* http) {
  Parser& self = Of(http);
  Head& head = self.HeadOf(http);
  if (head.keep_value) self.KeepHeader(http, head);
  head.field.clear();
  head.value.clear();
  return HPE_OK;
}

void Parser::KeepHeader(llhttp_t* http, const Head& head) {
  const bool request = IsRequest(http);
  if (request && head.field == "host") request_.authority = head.value;
  if (request && head.field == "content-type") {
    request_.grpc = absl::StartsWithIgnoreCase(head.value, "application/grpc");
  }
  const std::vector<std::string>& captured = config_.captured_headers;
  if (std::find(captured.begin(), captured.end(), head.field) != captured.end()) {
    (request ? request_.headers : response_.headers).push_back(Header{head.field, head.value});
  }
}

}  // namespace nodemesh::parsers::http1
