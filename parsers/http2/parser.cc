#include "parsers/http2/parser.h"

#include <nghttp2/nghttp2.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <type_traits>

#include "absl/strings/ascii.h"
#include "common/base/percent_encoding.h"

namespace nodemesh::parsers::http2 {
namespace {

// Builds an error detail from text and numbers. (absl::StrCat takes absl::string_view,
// which in Debian's Abseil is not std::string_view.)
void AppendPart(std::string& out, std::string_view part) { out.append(part); }
template <typename Number>
requires std::is_integral_v<Number>
void AppendPart(std::string& out, Number number) { out.append(std::to_string(number)); }
template <typename... Parts>
std::string Detail(const Parts&... parts) {
  std::string out;
  (AppendPart(out, parts), ...);
  return out;
}

bool StartsWithIgnoringCase(std::string_view text, std::string_view lowercase_prefix) {
  if (text.size() < lowercase_prefix.size()) return false;
  for (size_t i = 0; i < lowercase_prefix.size(); ++i) {
    if (absl::ascii_tolower(static_cast<unsigned char>(text[i])) != lowercase_prefix[i]) {
      return false;
    }
  }
  return true;
}

std::string_view SideName(Peer peer) { return peer == Peer::kClient ? "client" : "server"; }

bool CarriesHeaderBlock(FrameType type) {
  return type == FrameType::kHeaders || type == FrameType::kPushPromise ||
         type == FrameType::kContinuation;
}

bool MayBePadded(FrameType type) {
  return type == FrameType::kData || type == FrameType::kHeaders || type == FrameType::kPushPromise;
}

}  // namespace

void Parser::InflaterDeleter::operator()(nghttp2_hd_inflater* inflater) const {
  nghttp2_hd_inflate_del(inflater);
}

void Parser::GrpcMessages::Consume(std::string_view data) {
  while (!data.empty()) {
    if (message_left > 0) {
      const size_t taken = static_cast<size_t>(std::min<uint64_t>(message_left, data.size()));
      message_left -= taken;
      data.remove_prefix(taken);
      if (message_left == 0) ++complete;
      continue;
    }
    // The first prefix byte is the compressed flag; the next four are the length.
    if (prefix_filled > 0) next_length = (next_length << 8) | static_cast<uint8_t>(data[0]);
    data.remove_prefix(1);
    if (++prefix_filled < kGrpcMessagePrefixBytes) continue;
    message_left = next_length;
    prefix_filled = 0;
    next_length = 0;
    if (message_left == 0) ++complete;
  }
}

void Parser::DecodedBlock::Clear() {
  method.clear();
  scheme.clear();
  authority.clear();
  host.clear();
  path.clear();
  status.reset();
  grpc = false;
  grpc_status.reset();
  has_grpc_message = false;
  grpc_message.clear();
  captured.clear();
  kept_bytes = 0;
}

Parser::Parser(const ParserConfig& config, EventSink& sink) : config_(config), sink_(sink) {
  client_.phase = Phase::kPreface;
  for (Direction* dir : {&client_, &server_}) {
    nghttp2_hd_inflater* inflater = nullptr;
    if (nghttp2_hd_inflate_new(&inflater) != 0) {
      Fail(ParseError::kHpack, "cannot allocate an HPACK inflater");
      return;
    }
    dir->inflater.reset(inflater);
  }
}

Parser::~Parser() = default;

ParserState Parser::Feed(Peer from, std::string_view bytes, Timestamp now) {
  if (state_ != ParserState::kParsing || bytes.empty()) return state_;
  now_ = now;
  Consume(DirectionOf(from), bytes);
  return state_;
}

ParserState Parser::EndOfInput(Peer, Timestamp) { return state_; }

void Parser::Close(Timestamp now) {
  ids_.clear();
  for (const auto& [id, stream] : streams_) ids_.push_back(id);
  EndCollectedStreams(EndReason::kAborted, now, 0);
}

void Parser::ReleaseIdleMemory() {
  if (state_ != ParserState::kParsing || !streams_.empty()) return;
  for (const Direction* dir : {&client_, &server_}) {
    if (dir->phase != Phase::kFrameHeader || dir->header_filled != 0 || dir->block_open) return;
  }
  client_.block = std::string();
  server_.block = std::string();
  decoded_ = DecodedBlock();
  request_ = RequestStart();
  response_ = ResponseStart();
  end_ = StreamEnd();
  streams_ = StreamMap();
  ids_ = std::vector<uint32_t>();
}

void Parser::Fail(ParseError error, std::string detail) {
  if (state_ != ParserState::kParsing) return;
  state_ = ParserState::kFailed;
  error_ = error;
  error_detail_ = std::move(detail);
}

// --- framing ---------------------------------------------------------------------------

void Parser::Consume(Direction& dir, std::string_view bytes) {
  while (!bytes.empty() && state_ == ParserState::kParsing) {
    size_t used = 0;
    switch (dir.phase) {
      case Phase::kPreface:
        used = std::min(bytes.size(), kClientPreface.size() - dir.preface_matched);
        if (bytes.substr(0, used) != kClientPreface.substr(dir.preface_matched, used)) {
          Fail(ParseError::kMalformed, "the client did not start with the HTTP/2 preface");
          return;
        }
        dir.preface_matched += used;
        if (dir.preface_matched == kClientPreface.size()) dir.phase = Phase::kFrameHeader;
        break;
      case Phase::kFrameHeader:
        used = std::min(bytes.size(), kFrameHeaderBytes - dir.header_filled);
        std::memcpy(dir.header_bytes + dir.header_filled, bytes.data(), used);
        dir.header_filled += used;
        if (dir.header_filled == kFrameHeaderBytes) {
          dir.header_filled = 0;
          StartFrame(dir);
        }
        break;
      case Phase::kFrameFields:
        used = std::min(bytes.size(), dir.fields_size - dir.fields_filled);
        std::memcpy(dir.fields.data() + dir.fields_filled, bytes.data(), used);
        dir.fields_filled += used;
        if (dir.fields_filled == dir.fields_size) EndFields(dir);
        break;
      case Phase::kFrameBody:
        used = std::min(bytes.size(), dir.body_left);
        dir.body_left -= used;
        ConsumeBody(dir, bytes.substr(0, used));
        if (dir.body_left == 0) BeginPadding(dir);
        break;
      case Phase::kFramePadding:
        used = std::min(bytes.size(), dir.padding_left);
        dir.padding_left -= used;
        if (dir.padding_left == 0) FinishFrame(dir);
        break;
    }
    bytes.remove_prefix(used);
  }
}

void Parser::StartFrame(Direction& dir) {
  dir.frame = FrameHeader::Decode(dir.header_bytes);
  if (!CheckFrameHeader(dir)) return;
  const FrameHeader& frame = dir.frame;
  const size_t pad_length_bytes = frame.has(flags::kPadded) ? kPadLengthBytes : 0;
  size_t fields = 0;
  switch (frame.type) {
    case FrameType::kData:
      fields = pad_length_bytes;
      break;
    case FrameType::kHeaders:
    case FrameType::kPushPromise:
      fields = pad_length_bytes + (frame.type == FrameType::kPushPromise ? kPromisedStreamIdBytes
                                   : frame.has(flags::kPriority)         ? kPriorityFieldsBytes
                                                                         : 0);
      dir.block.clear();
      dir.block_stream_id = frame.stream_id;
      dir.block_open = true;
      dir.block_is_push = frame.type == FrameType::kPushPromise;
      dir.block_end_stream = !dir.block_is_push && frame.has(flags::kEndStream);
      break;
    case FrameType::kPriority:
      fields = kPriorityFieldsBytes;
      break;
    case FrameType::kRstStream:
      fields = kRstStreamBytes;
      break;
    case FrameType::kPing:
      fields = kPingBytes;
      break;
    case FrameType::kGoaway:
      fields = kGoawayFieldsBytes;
      break;
    case FrameType::kWindowUpdate:
      fields = kWindowUpdateBytes;
      break;
    case FrameType::kSettings:
    case FrameType::kContinuation:
      break;
  }
  if (fields > frame.length) {
    Fail(ParseError::kMalformed,
         Detail(SideName(dir.peer), " ", FrameTypeName(frame.type), " frame of ", frame.length,
                " bytes is too short for its flags"));
    return;
  }
  dir.fields_size = fields;
  dir.fields_filled = 0;
  dir.body_left = frame.length - fields;
  dir.padding_left = 0;
  dir.setting_filled = 0;
  BeginFields(dir);
}

bool Parser::CheckFrameHeader(const Direction& dir) {
  const FrameHeader& frame = dir.frame;
  const std::string_view side = SideName(dir.peer);
  const std::string_view type = FrameTypeName(frame.type);
  if (frame.length > config_.limits.max_frame_bytes) {
    Fail(ParseError::kFrameTooLarge,
         Detail(side, " ", type, " frame of ", frame.length, " bytes is over the limit of ",
                config_.limits.max_frame_bytes));
    return false;
  }
  if (dir.block_open &&
      (frame.type != FrameType::kContinuation || frame.stream_id != dir.block_stream_id)) {
    Fail(ParseError::kMalformed,
         Detail(side, " sent ", type, " on stream ", frame.stream_id,
                " where the CONTINUATION of stream ", dir.block_stream_id, " must follow"));
    return false;
  }
  auto fail_size = [&](std::string_view expected) {
    Fail(ParseError::kMalformed,
         Detail(side, " ", type, " frame of ", frame.length, " bytes, expected ", expected));
    return false;
  };
  switch (frame.type) {
    case FrameType::kData:
    case FrameType::kHeaders:
    case FrameType::kPriority:
    case FrameType::kRstStream:
    case FrameType::kPushPromise:
    case FrameType::kContinuation:
      if (frame.stream_id == 0) {
        Fail(ParseError::kMalformed, Detail(side, " sent ", type, " on stream 0"));
        return false;
      }
      break;
    case FrameType::kSettings:
    case FrameType::kPing:
    case FrameType::kGoaway:
      if (frame.stream_id != 0) {
        Fail(ParseError::kMalformed,
             Detail(side, " sent ", type, " on stream ", frame.stream_id, " instead of stream 0"));
        return false;
      }
      break;
    case FrameType::kWindowUpdate:
      break;
  }
  switch (frame.type) {
    case FrameType::kHeaders:
      if (dir.peer == Peer::kClient && frame.stream_id % 2 == 0) {
        Fail(ParseError::kMalformed,
             Detail("client sent HEADERS on even (server-initiated) stream ", frame.stream_id));
        return false;
      }
      break;
    case FrameType::kPushPromise:
      if (dir.peer == Peer::kClient) {
        Fail(ParseError::kMalformed, "client sent PUSH_PROMISE");
        return false;
      }
      break;
    case FrameType::kContinuation:
      if (!dir.block_open) {
        Fail(ParseError::kMalformed, Detail(side, " sent CONTINUATION on stream ", frame.stream_id,
                                            " with no open header block"));
        return false;
      }
      break;
    case FrameType::kPriority:
      if (frame.length != kPriorityFieldsBytes) return fail_size("5");
      break;
    case FrameType::kRstStream:
      if (frame.length != kRstStreamBytes) return fail_size("4");
      break;
    case FrameType::kSettings:
      if (frame.has(flags::kAck) && frame.length != 0) return fail_size("0 for an ACK");
      if (frame.length % kSettingBytes != 0) return fail_size("a multiple of 6");
      break;
    case FrameType::kPing:
      if (frame.length != kPingBytes) return fail_size("8");
      break;
    case FrameType::kGoaway:
      if (frame.length < kGoawayFieldsBytes) return fail_size("at least 8");
      break;
    case FrameType::kWindowUpdate:
      if (frame.length != kWindowUpdateBytes) return fail_size("4");
      break;
    case FrameType::kData:
      break;
  }
  return true;
}

void Parser::BeginFields(Direction& dir) {
  if (state_ != ParserState::kParsing) return;
  if (dir.fields_size == 0) {
    EndFields(dir);
  } else {
    dir.phase = Phase::kFrameFields;
  }
}

void Parser::EndFields(Direction& dir) {
  if (state_ != ParserState::kParsing) return;
  const FrameHeader& frame = dir.frame;
  if (MayBePadded(frame.type) && frame.has(flags::kPadded)) {
    const size_t pad_length = dir.fields[0];
    if (pad_length > dir.body_left) {
      Fail(ParseError::kMalformed,
           Detail(SideName(dir.peer), " ", FrameTypeName(frame.type), " frame of ", frame.length,
                  " bytes on stream ", frame.stream_id, " claims ", pad_length,
                  " bytes of padding"));
      return;
    }
    dir.body_left -= pad_length;
    dir.padding_left = pad_length;
  }
  if (CarriesHeaderBlock(frame.type) &&
      dir.block.size() + dir.body_left > config_.limits.max_header_bytes) {
    Fail(ParseError::kHeadersTooLarge,
         Detail(SideName(dir.peer), " header block on stream ", dir.block_stream_id,
                " is over the limit of ", config_.limits.max_header_bytes, " bytes"));
    return;
  }
  BeginBody(dir);
}

void Parser::BeginBody(Direction& dir) {
  if (state_ != ParserState::kParsing) return;
  if (dir.body_left == 0) {
    BeginPadding(dir);
  } else {
    dir.phase = Phase::kFrameBody;
  }
}

void Parser::ConsumeBody(Direction& dir, std::string_view body) {
  switch (dir.frame.type) {
    case FrameType::kData:
      ConsumeData(dir, body);
      break;
    case FrameType::kHeaders:
    case FrameType::kPushPromise:
    case FrameType::kContinuation:
      dir.block.append(body);
      break;
    case FrameType::kSettings:
      for (char byte : body) {
        dir.setting[dir.setting_filled++] = static_cast<uint8_t>(byte);
        if (dir.setting_filled < kSettingBytes) continue;
        dir.setting_filled = 0;
        ApplySetting(dir);
      }
      break;
    default:  // GOAWAY debug data, extension frames
      break;
  }
}

void Parser::BeginPadding(Direction& dir) {
  if (state_ != ParserState::kParsing) return;
  if (dir.padding_left == 0) {
    FinishFrame(dir);
  } else {
    dir.phase = Phase::kFramePadding;
  }
}

void Parser::FinishFrame(Direction& dir) {
  if (state_ != ParserState::kParsing) return;
  dir.phase = Phase::kFrameHeader;
  const FrameHeader& frame = dir.frame;
  switch (frame.type) {
    case FrameType::kData:
      if (dir.peer == Peer::kServer && frame.has(flags::kEndStream)) {
        if (auto it = streams_.find(frame.stream_id); it != streams_.end()) {
          EmitEnd(it->first, it->second, EndReason::kComplete, now_, 0);
          streams_.erase(it);
        }
      }
      break;
    case FrameType::kHeaders:
    case FrameType::kPushPromise:
    case FrameType::kContinuation:
      if (frame.has(flags::kEndHeaders)) {
        dir.block_open = false;
        DecodeHeaderBlock(dir);
      }
      break;
    case FrameType::kRstStream:
      OnReset(frame.stream_id, ReadUint32(dir.fields.data()));
      break;
    case FrameType::kGoaway:
      // A client's GOAWAY concerns pushed streams, which are not reported.
      if (dir.peer == Peer::kServer) {
        OnGoaway(ReadUint32(dir.fields.data()) & kStreamIdMask, ReadUint32(dir.fields.data() + 4));
      }
      break;
    default:
      break;
  }
}

void Parser::ApplySetting(Direction& dir) {
  const uint16_t id = static_cast<uint16_t>((dir.setting[0] << 8) | dir.setting[1]);
  if (id != static_cast<uint16_t>(SettingsId::kHeaderTableSize)) return;
  // The value bounds the table of the sender's decoder, so it is the other side's encoder,
  // and therefore the other direction's inflater, that may now use a larger table. It is
  // applied when seen rather than when acknowledged, and never lowered: the inflater then
  // accepts whatever the encoder may legally do, whenever it learns of the setting.
  Direction& encoder_side = dir.peer == Peer::kClient ? server_ : client_;
  const size_t limit = std::min<size_t>(ReadUint32(dir.setting + 2), kMaxHeaderTableSize);
  if (limit <= encoder_side.inflater_table_limit) return;
  // Header blocks are inflated whole, so the inflater is always between blocks here.
  const int result = nghttp2_hd_inflate_change_table_size(encoder_side.inflater.get(), limit);
  if (result != 0) {
    Fail(ParseError::kHpack,
         Detail("cannot raise the HPACK table size: ", nghttp2_strerror(result)));
    return;
  }
  encoder_side.inflater_table_limit = limit;
}

void Parser::ConsumeData(const Direction& dir, std::string_view data) {
  auto it = streams_.find(dir.frame.stream_id);
  if (it == streams_.end()) return;
  Stream& stream = it->second;
  const bool from_client = dir.peer == Peer::kClient;
  (from_client ? stream.request_bytes : stream.response_bytes) += data.size();
  if (stream.grpc) (from_client ? stream.request_messages : stream.response_messages).Consume(data);
}

// --- header blocks ---------------------------------------------------------------------

void Parser::DecodeHeaderBlock(Direction& dir) {
  decoded_.Clear();
  const auto* in = reinterpret_cast<const uint8_t*>(dir.block.data());
  size_t left = dir.block.size();
  for (;;) {
    nghttp2_nv field;
    int inflate_flags = 0;
    const ssize_t used = nghttp2_hd_inflate_hd2(dir.inflater.get(), &field, &inflate_flags, in,
                                                left, /*in_final=*/1);
    if (used < 0) {
      Fail(ParseError::kHpack,
           Detail(SideName(dir.peer), " header block on stream ", dir.block_stream_id, ": ",
                  nghttp2_strerror(static_cast<int>(used))));
      return;
    }
    in += used;
    left -= static_cast<size_t>(used);
    if ((inflate_flags & NGHTTP2_HD_INFLATE_EMIT) != 0) {
      const std::string_view name(reinterpret_cast<const char*>(field.name), field.namelen);
      const std::string_view value(reinterpret_cast<const char*>(field.value), field.valuelen);
      if (!KeepField(name, value)) {
        Fail(ParseError::kHeadersTooLarge,
             Detail(SideName(dir.peer), " header block on stream ", dir.block_stream_id,
                    " decodes to more than ", config_.limits.max_header_bytes,
                    " bytes of reported headers"));
        return;
      }
    }
    if ((inflate_flags & NGHTTP2_HD_INFLATE_FINAL) != 0) {
      nghttp2_hd_inflate_end_headers(dir.inflater.get());
      break;
    }
    if ((inflate_flags & NGHTTP2_HD_INFLATE_EMIT) == 0 && used == 0) {
      // Given the whole block, the inflater must finish or fail; this guards against a loop.
      Fail(ParseError::kHpack, Detail(SideName(dir.peer), " header block on stream ",
                                      dir.block_stream_id, " did not decode to an end"));
      return;
    }
  }
  if (dir.block_is_push) return;
  if (dir.peer == Peer::kClient) {
    OnRequestBlock(dir.block_stream_id);
  } else {
    OnResponseBlock(dir.block_stream_id, dir.block_end_stream);
  }
}

bool Parser::KeepField(std::string_view name, std::string_view value) {
  std::string* keep = nullptr;
  if (!name.empty() && name[0] == ':') {
    if (name == ":method") {
      keep = &decoded_.method;
    } else if (name == ":scheme") {
      keep = &decoded_.scheme;
    } else if (name == ":authority") {
      keep = &decoded_.authority;
    } else if (name == ":path") {
      keep = &decoded_.path;
    } else if (name == ":status") {
      // Three digits; anything else is left unset and fails the response as having none.
      if (value.size() == 3 && value[0] >= '1' && value[0] <= '9' &&
          absl::ascii_isdigit(value[1]) && absl::ascii_isdigit(value[2])) {
        decoded_.status = (value[0] - '0') * 100 + (value[1] - '0') * 10 + (value[2] - '0');
      }
    }
  } else if (name == "content-type") {
    decoded_.grpc = StartsWithIgnoringCase(value, "application/grpc");
  } else if (name == "grpc-status") {
    int grpc_status = 0;
    const char* end = value.data() + value.size();
    const auto [stop, error] = std::from_chars(value.data(), end, grpc_status);
    if (error == std::errc() && stop == end) decoded_.grpc_status = grpc_status;
  } else if (name == "grpc-message") {
    keep = &decoded_.grpc_message;
    decoded_.has_grpc_message = true;
  } else if (name == "host") {
    keep = &decoded_.host;
  }
  const std::vector<std::string>& captured = config_.captured_headers;
  const bool capture = std::find(captured.begin(), captured.end(), name) != captured.end();
  // Every copy counts, so a block repeating a field cannot make us copy without bound.
  const size_t cost =
      (keep != nullptr ? value.size() : 0) + (capture ? name.size() + value.size() : 0);
  if (decoded_.kept_bytes + cost > config_.limits.max_header_bytes) return false;
  decoded_.kept_bytes += cost;
  if (keep != nullptr) keep->assign(value);
  if (capture) decoded_.captured.push_back(Header{std::string(name), std::string(value)});
  return true;
}

void Parser::OnRequestBlock(uint32_t stream_id) {
  // Request trailers, or a late block on a stream the server already ended: nothing to
  // report. (New streams must use ids above every earlier one.)
  if (stream_id <= last_client_stream_id_) return;
  last_client_stream_id_ = stream_id;
  const bool refused = goaway_received_ && stream_id > goaway_last_stream_id_;
  if (!refused && streams_.size() >= config_.limits.max_open_streams) {
    Fail(ParseError::kTooManyStreams, Detail("stream ", stream_id, " is over the limit of ",
                                             config_.limits.max_open_streams, " open streams"));
    return;
  }
  request_.stream_id = stream_id;
  request_.at = now_;
  request_.method = decoded_.method;
  request_.scheme = decoded_.scheme;
  // :authority is what HTTP/2 clients send; Host is allowed in its place.
  request_.authority = decoded_.authority.empty() ? decoded_.host : decoded_.authority;
  request_.path = decoded_.path;
  request_.headers.swap(decoded_.captured);
  request_.grpc = decoded_.grpc;
  sink_.OnRequestStart(request_);

  Stream stream;
  stream.request_at = now_;
  stream.grpc = decoded_.grpc;
  if (refused) {
    // The server said it will not process streams above its GOAWAY's last stream id.
    EmitEnd(stream_id, stream, EndReason::kRefused, now_, goaway_error_code_);
    return;
  }
  streams_.emplace(stream_id, std::move(stream));
}

void Parser::OnResponseBlock(uint32_t stream_id, bool end_stream) {
  auto it = streams_.find(stream_id);
  if (it == streams_.end()) {
    if (stream_id % 2 == 1 && stream_id > last_client_stream_id_) {
      Fail(ParseError::kUnexpectedResponse,
           Detail("server sent headers on stream ", stream_id, " which the client never opened"));
    }
    // Otherwise a pushed stream, or one that already ended: nothing to report.
    return;
  }
  Stream& stream = it->second;
  bool final_block = true;
  if (!stream.responded) {
    if (!decoded_.status.has_value()) {
      Fail(ParseError::kMalformed,
           Detail("server response on stream ", stream_id, " has no valid :status"));
      return;
    }
    final_block = *decoded_.status >= 200;
    if (final_block) {
      stream.responded = true;
      stream.status = *decoded_.status;
      stream.response_at = now_;
      response_.stream_id = stream_id;
      response_.at = now_;
      response_.status = stream.status;
      response_.headers.swap(decoded_.captured);
      sink_.OnResponseStart(response_);
    }
  }
  // Trailers, or the only header block of a trailers-only response.
  if (final_block) {
    if (decoded_.grpc_status.has_value()) stream.grpc_status = decoded_.grpc_status;
    // gRPC percent-encodes grpc-message; a malformed escape is kept as sent rather than
    // dropping the message, as the gRPC spec asks of decoders.
    if (decoded_.has_grpc_message) stream.grpc_message = PercentDecode(decoded_.grpc_message);
  }
  if (end_stream) {
    EmitEnd(stream_id, stream, EndReason::kComplete, now_, 0);
    streams_.erase(it);
  }
}

// --- stream ends -----------------------------------------------------------------------

void Parser::OnReset(uint32_t stream_id, uint32_t error_code) {
  auto it = streams_.find(stream_id);
  if (it == streams_.end()) return;
  EmitEnd(stream_id, it->second, EndReason::kReset, now_, error_code);
  streams_.erase(it);
}

void Parser::OnGoaway(uint32_t last_stream_id, uint32_t error_code) {
  goaway_received_ = true;
  goaway_last_stream_id_ = std::min(goaway_last_stream_id_, last_stream_id);
  goaway_error_code_ = error_code;
  ids_.clear();
  for (const auto& [id, stream] : streams_) {
    if (id > last_stream_id) ids_.push_back(id);
  }
  EndCollectedStreams(EndReason::kRefused, now_, error_code);
}

void Parser::EndCollectedStreams(EndReason reason, Timestamp at, uint32_t error_code) {
  std::sort(ids_.begin(), ids_.end());
  for (uint32_t id : ids_) {
    auto it = streams_.find(id);
    EmitEnd(id, it->second, reason, at, error_code);
    streams_.erase(it);
  }
  ids_.clear();
}

void Parser::EmitEnd(uint32_t stream_id, const Stream& stream, EndReason reason, Timestamp at,
                     uint32_t error_code) {
  end_.stream_id = stream_id;
  end_.reason = reason;
  end_.request_at = stream.request_at;
  end_.response_at = stream.responded ? stream.response_at : 0;
  end_.at = at;
  end_.status = stream.responded ? stream.status : 0;
  end_.request_bytes = stream.request_bytes;
  end_.response_bytes = stream.response_bytes;
  end_.request_messages = stream.request_messages.complete;
  end_.response_messages = stream.response_messages.complete;
  end_.grpc_status = stream.grpc_status;
  end_.grpc_message = stream.grpc_message;
  end_.error_code = error_code;
  sink_.OnStreamEnd(end_);
}

}  // namespace nodemesh::parsers::http2
