#include "parsers/http1/parser.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace nodemesh::parsers::http1 {
namespace {

// on_headers_complete results understood by llhttp.
constexpr int kHasBody = 0;
constexpr int kNoBody = 1;
constexpr int kNoBodyThenSwitch = 2;

// `name` equals `lowercase` ignoring ASCII case. Inline and length-first, as it runs for
// every header of every message and most names differ in length.
bool NameIs(const std::string& name, std::string_view lowercase) {
  if (name.size() != lowercase.size()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    if (absl::ascii_tolower(static_cast<unsigned char>(name[i])) != lowercase[i]) return false;
  }
  return true;
}

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
  s.on_message_complete = &Parser::OnRequestComplete;
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

// --- the pending-request ring ---------------------------------------------------------

void Parser::PendingQueue::push_back(const Pending& pending) {
  if (size_ == slots_.size()) {
    std::vector<Pending> grown;
    grown.reserve(std::max<size_t>(4, 2 * slots_.size()));
    for (size_t i = 0; i < size_; ++i) grown.push_back((*this)[i]);
    grown.resize(grown.capacity());
    slots_ = std::move(grown);
    head_ = 0;
  }
  slots_[(head_ + size_) % slots_.size()] = pending;
  ++size_;
}

void Parser::PendingQueue::pop_front() {
  head_ = (head_ + 1) % slots_.size();
  --size_;
}

// --- feeding --------------------------------------------------------------------------

Parser::Scratch::Scratch(Parser& parser) {
  for (Side* side : {&client, &server}) {
    side->parser = &parser;
    side->request = side == &client;
    side->http = side->request ? &parser.client_http_ : &parser.server_http_;
    side->http->data = side;
  }
  client.headers = &request.headers;
  server.headers = &response.headers;
  request.scheme = "http";
}

Parser::Parser(const ParserConfig& config, EventSink& sink) : config_(config), sink_(sink) {
  for (llhttp_t* http : {&client_http_, &server_http_}) {
    const bool request = http == &client_http_;
    llhttp_init(http, request ? HTTP_REQUEST : HTTP_RESPONSE,
                request ? &kRequestSettings : &kResponseSettings);
    // An observer follows what the peers actually do: if a client keeps sending after
    // "Connection: close", the server decides, not the parser.
    llhttp_set_lenient_keep_alive(http, 1);
  }
  scratch_ = std::make_unique<Scratch>(*this);
  for (const std::string& name : config_.captured_headers) {
    longest_wanted_name_ = std::max(longest_wanted_name_, name.size());
  }
}

void Parser::ReleaseIdleMemory() {
  // Only between messages with nothing awaited: a request awaiting its response, a head or
  // body partly read, or bytes held for an Upgrade's answer live in the scratch.
  if (!scratch_ || state_ != ParserState::kParsing || client_awaits_upgrade_ ||
      !scratch_->pending.empty() || scratch_->client.in_message || scratch_->server.in_message ||
      !scratch_->held_client_bytes.empty()) {
    return;
  }
  scratch_.reset();
}

ParserState Parser::Feed(Peer from, std::string_view bytes, Timestamp now) {
  if (state_ != ParserState::kParsing || bytes.empty()) return state_;
  now_ = now;
  if (from == Peer::kClient) return FeedClient(bytes);
  Scratch& at = scratch();
  Execute(at.server, bytes);
  if (state_ == ParserState::kParsing && !client_awaits_upgrade_ && !at.held_client_bytes.empty()) {
    // The upgrade was refused: the client's held bytes are HTTP/1 after all.
    std::string held = std::move(at.held_client_bytes);
    at.held_client_bytes.clear();
    FeedClient(held);
  }
  return state_;
}

ParserState Parser::FeedClient(std::string_view bytes) {
  Scratch& at = scratch();
  if (client_awaits_upgrade_) {
    if (at.held_client_bytes.size() + bytes.size() > config_.limits.max_buffered_client_bytes) {
      Fail(ParseError::kBufferedTooMuch, "client kept sending while its Upgrade was unanswered");
      return state_;
    }
    at.held_client_bytes.append(bytes);
    return state_;
  }
  Execute(at.client, bytes);
  return state_;
}

void Parser::Execute(Side& side, std::string_view bytes) {
  const llhttp_errno_t result = bytes.empty()
                                    ? llhttp_finish(side.http)
                                    : llhttp_execute(side.http, bytes.data(), bytes.size());
  if (state_ != ParserState::kParsing || result == HPE_OK) return;
  if (result == HPE_PAUSED_UPGRADE) {
    if (!side.request) {
      state_ = ParserState::kSwitched;
      return;
    }
    // An Upgrade or CONNECT request: whether the bytes after it are still HTTP/1 depends
    // on the response.
    client_awaits_upgrade_ = true;
    const char* stop = llhttp_get_error_pos(side.http);
    scratch_->held_client_bytes.assign(stop, bytes.data() + bytes.size() - stop);
    return;
  }
  if (error_ == ParseError::kNone) {
    Fail(ParseError::kMalformed,
         absl::StrCat(side.request ? "request: " : "response: ", llhttp_errno_name(result), ": ",
                      llhttp_get_error_reason(side.http)));
  }
  state_ = ParserState::kFailed;
}

ParserState Parser::EndOfInput(Peer from, Timestamp now) {
  if (state_ != ParserState::kParsing) return state_;
  now_ = now;
  // A peer ends once. llhttp_finish() would complete an EOF-delimited message again on a
  // second call, so a repeated end is ignored here.
  bool& ended = from == Peer::kClient ? client_ended_ : server_ended_;
  if (ended) return state_;
  ended = true;
  // Without its scratch the parser rests between messages: no message ends with the input.
  if (!scratch_) return state_;
  Side& side = from == Peer::kClient ? scratch_->client : scratch_->server;
  if (side.request && client_awaits_upgrade_) return state_;
  // Completes a body delimited by EOF; a message cut short is left for Close() to abort.
  if (llhttp_message_needs_eof(side.http)) Execute(side, {});
  return state_;
}

void Parser::Close(Timestamp now) {
  if (!scratch_) return;  // nothing awaited
  PendingQueue& pending = scratch_->pending;
  for (size_t i = 0; i < pending.size(); ++i) {
    if (pending[i].started) EndStream(pending[i], EndReason::kAborted, now);
  }
  pending.clear();
}

int Parser::Fail(ParseError error, std::string detail) {
  error_ = error;
  error_detail_ = std::move(detail);
  state_ = ParserState::kFailed;
  return HPE_USER;
}

int Parser::HeadTooLarge(Side& side) {
  return Fail(ParseError::kHeadersTooLarge,
              absl::StrCat(side.request ? "request" : "response", " head over ",
                           config_.limits.max_header_bytes, " bytes"));
}

// --- request side ---------------------------------------------------------------------

int Parser::OnRequestBegin(llhttp_t* http) {
  Side& side = SideOf(http);
  Parser& self = *side.parser;
  Scratch& at = *self.scratch_;
  side.in_message = true;
  if (at.pending.size() >= self.config_.limits.max_pending_requests) {
    return self.Fail(ParseError::kTooManyStreams,
                     absl::StrCat("over ", self.config_.limits.max_pending_requests,
                                  " pipelined requests awaiting a response"));
  }
  self.client_stream_id_ = self.next_stream_id_++;
  at.pending.push_back(Pending{.stream_id = self.client_stream_id_, .request_at = self.now_});
  side.head_bytes = 0;
  side.captured = 0;
  at.request.authority.clear();
  at.request.path.clear();
  at.request.grpc = false;
  return HPE_OK;
}

int Parser::OnUrl(llhttp_t* http, const char* at, size_t length) {
  Side& side = SideOf(http);
  side.parser->scratch_->request.path.append(at, length);
  return side.parser->CountHeadBytes(side, length);
}

Parser::Pending* Parser::CurrentRequest() {
  // Absent once an early response has answered it and gone.
  PendingQueue& pending = scratch_->pending;
  if (pending.empty() || pending.back().stream_id != client_stream_id_) return nullptr;
  return &pending.back();
}

int Parser::OnRequestHeadersComplete(llhttp_t* http) {
  Parser& self = *SideOf(http).parser;
  Pending* pending = self.CurrentRequest();
  // A request already reported (its response came first) is not reported twice.
  if (pending == nullptr || pending->started) return kHasBody;
  pending->method = llhttp_get_method(http);
  self.StartRequest(*pending);
  return kHasBody;
}

void Parser::StartRequest(Pending& pending) {
  EndCapture(scratch_->client);
  RequestStart& request = scratch_->request;
  request.stream_id = pending.stream_id;
  request.at = pending.request_at;
  request.method = llhttp_method_name(static_cast<llhttp_method_t>(pending.method));
  pending.started = true;
  sink_.OnRequestStart(request);
}

int Parser::OnRequestBody(llhttp_t* http, const char*, size_t length) {
  // The response may have ended the exchange already (an early error answer).
  if (Pending* pending = SideOf(http).parser->CurrentRequest()) pending->request_bytes += length;
  return HPE_OK;
}

int Parser::OnRequestComplete(llhttp_t* http) {
  SideOf(http).in_message = false;
  return HPE_OK;
}

// --- response side --------------------------------------------------------------------

int Parser::OnResponseBegin(llhttp_t* http) {
  Side& side = SideOf(http);
  Parser& self = *side.parser;
  side.in_message = true;
  if (self.scratch_->pending.empty()) {
    return self.Fail(ParseError::kUnexpectedResponse, "response with no request to answer");
  }
  side.head_bytes = 0;
  side.captured = 0;
  self.response_at_ = self.now_;
  self.response_bytes_ = 0;
  return HPE_OK;
}

int Parser::OnStatus(llhttp_t* http, const char*, size_t length) {
  Side& side = SideOf(http);
  return side.parser->CountHeadBytes(side, length);
}

int Parser::OnResponseHeadersComplete(llhttp_t* http) {
  Side& side = SideOf(http);
  Parser& self = *side.parser;
  Scratch& at = *self.scratch_;
  Pending& pending = at.pending.front();
  const int status = llhttp_get_status_code(http);
  const bool connect = pending.method == HTTP_CONNECT;
  self.switching_ = status == 101 || (connect && status >= 200 && status < 300);
  self.final_response_ = status >= 200 || self.switching_;
  if (!self.final_response_) return kNoBody;  // 100 Continue and friends: a final one follows
  // A server may answer before the request head is complete (e.g. 431): report the request
  // with what is known of it.
  if (!pending.started) {
    pending.method = llhttp_get_method(at.client.http);
    self.StartRequest(pending);
  }
  EndCapture(side);
  at.response.stream_id = pending.stream_id;
  at.response.at = self.response_at_;
  at.response.status = status;
  pending.responded = true;
  self.sink_.OnResponseStart(at.response);
  if (self.switching_) return kNoBodyThenSwitch;
  // RFC 9110 6.4.1: whatever Content-Length says, these never carry a body.
  const bool bodiless = pending.method == HTTP_HEAD || status == 204 || status == 304;
  return bodiless ? kNoBody : kHasBody;
}

int Parser::OnResponseBody(llhttp_t* http, const char*, size_t length) {
  SideOf(http).parser->response_bytes_ += length;
  return HPE_OK;
}

int Parser::OnResponseComplete(llhttp_t* http) {
  Side& side = SideOf(http);
  Parser& self = *side.parser;
  side.in_message = false;
  if (!self.final_response_) return HPE_OK;
  Scratch& at = *self.scratch_;
  if (at.pending.empty()) {
    return self.Fail(ParseError::kUnexpectedResponse, "response ended with no request open");
  }
  self.EndStream(at.pending.front(), EndReason::kComplete, self.now_);
  at.pending.pop_front();
  if (self.client_awaits_upgrade_ && at.pending.empty()) {
    self.client_awaits_upgrade_ = false;
    if (!self.switching_) llhttp_resume_after_upgrade(at.client.http);
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
    end.response_at = scratch_->response.at;
    end.status = scratch_->response.status;
    end.response_bytes = response_bytes_;
  }
  sink_.OnStreamEnd(end);
}

// --- headers, both sides --------------------------------------------------------------

int Parser::OnHeaderField(llhttp_t* http, const char* at, size_t length) {
  Side& side = SideOf(http);
  Parser& self = *side.parser;
  // A name longer than every wanted one matches none, whatever pieces it came in: what was
  // copied of it so far is dropped, or its first piece could pass for a wanted name.
  side.field_length += length;
  if (side.field_length <= self.longest_wanted_name_) {
    side.field.append(at, length);
  } else {
    side.field.clear();
  }
  return self.CountHeadBytes(side, length);
}

int Parser::OnHeaderFieldComplete(llhttp_t* http) {
  Side& side = SideOf(http);
  const std::string& name = side.field;
  side.field_length = 0;
  side.is_host = side.request && NameIs(name, "host");
  side.is_content_type = side.request && NameIs(name, "content-type");
  side.captured_as = nullptr;
  for (const std::string& captured : side.parser->config_.captured_headers) {
    if (NameIs(name, captured)) {
      side.captured_as = &captured;
      break;
    }
  }
  return HPE_OK;
}

int Parser::OnHeaderValue(llhttp_t* http, const char* at, size_t length) {
  Side& side = SideOf(http);
  if (side.is_host || side.is_content_type || side.captured_as != nullptr) {
    side.value.append(at, length);
  }
  return side.parser->CountHeadBytes(side, length);
}

int Parser::OnHeaderValueComplete(llhttp_t* http) {
  Side& side = SideOf(http);
  side.parser->KeepHeader(side);
  side.field.clear();
  side.value.clear();
  side.is_host = side.is_content_type = false;
  side.captured_as = nullptr;
  return HPE_OK;
}

void Parser::KeepHeader(Side& side) {
  RequestStart& request = scratch_->request;
  if (side.is_host) request.authority = side.value;
  if (side.is_content_type) {
    request.grpc = absl::StartsWithIgnoreCase(side.value, "application/grpc");
  }
  if (side.captured_as == nullptr) return;
  std::vector<Header>& headers = *side.headers;
  if (side.captured == headers.size()) headers.emplace_back();
  Header& header = headers[side.captured++];
  header.name = *side.captured_as;
  header.value = side.value;
}

void Parser::EndCapture(Side& side) {
  // Drops the headers the previous message of this side had and this one has not.
  side.headers->resize(std::min(side.headers->size(), side.captured));
}

}  // namespace nodemesh::parsers::http1
