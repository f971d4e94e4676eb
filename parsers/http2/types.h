// HTTP/2 wire vocabulary (RFC 9113): the connection preface, the frame header, frame
// types, flags, settings and error codes, plus the gRPC message prefix that rides in DATA.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace nodemesh::parsers::http2 {

// What a client sends before its first frame (RFC 9113 §3.4).
inline constexpr std::string_view kClientPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

inline constexpr size_t kFrameHeaderBytes = 9;
inline constexpr uint32_t kMaxFrameLength = (1u << 24) - 1;  // the 24-bit length field
inline constexpr uint32_t kStreamIdMask = 0x7fffffff;        // drops the reserved bit

// The HPACK dynamic table size both ends start with, until SETTINGS_HEADER_TABLE_SIZE.
inline constexpr size_t kDefaultHeaderTableSize = 4096;

enum class FrameType : uint8_t {
  kData = 0x0,
  kHeaders = 0x1,
  kPriority = 0x2,
  kRstStream = 0x3,
  kSettings = 0x4,
  kPushPromise = 0x5,
  kPing = 0x6,
  kGoaway = 0x7,
  kWindowUpdate = 0x8,
  kContinuation = 0x9,
  // Any other value is an extension frame, which receivers ignore (RFC 9113 §4.1).
};

constexpr std::string_view FrameTypeName(FrameType type) {
  switch (type) {
    case FrameType::kData:
      return "DATA";
    case FrameType::kHeaders:
      return "HEADERS";
    case FrameType::kPriority:
      return "PRIORITY";
    case FrameType::kRstStream:
      return "RST_STREAM";
    case FrameType::kSettings:
      return "SETTINGS";
    case FrameType::kPushPromise:
      return "PUSH_PROMISE";
    case FrameType::kPing:
      return "PING";
    case FrameType::kGoaway:
      return "GOAWAY";
    case FrameType::kWindowUpdate:
      return "WINDOW_UPDATE";
    case FrameType::kContinuation:
      return "CONTINUATION";
  }
  return "extension";
}

// Frame flags. The same bit means different things on different frame types.
namespace flags {
inline constexpr uint8_t kEndStream = 0x01;   // DATA, HEADERS
inline constexpr uint8_t kAck = 0x01;         // SETTINGS, PING
inline constexpr uint8_t kEndHeaders = 0x04;  // HEADERS, PUSH_PROMISE, CONTINUATION
inline constexpr uint8_t kPadded = 0x08;      // DATA, HEADERS, PUSH_PROMISE
inline constexpr uint8_t kPriority = 0x20;    // HEADERS
}  // namespace flags

// Fixed parts of frame payloads, in bytes.
inline constexpr size_t kPadLengthBytes = 1;
inline constexpr size_t kPriorityFieldsBytes = 5;  // stream dependency + weight
inline constexpr size_t kPromisedStreamIdBytes = 4;
inline constexpr size_t kRstStreamBytes = 4;
inline constexpr size_t kSettingBytes = 6;  // 16-bit identifier + 32-bit value
inline constexpr size_t kPingBytes = 8;
inline constexpr size_t kGoawayFieldsBytes = 8;  // last stream id + error code; debug data follows
inline constexpr size_t kWindowUpdateBytes = 4;

enum class SettingsId : uint16_t {
  kHeaderTableSize = 0x1,
  kEnablePush = 0x2,
  kMaxConcurrentStreams = 0x3,
  kInitialWindowSize = 0x4,
  kMaxFrameSize = 0x5,
  kMaxHeaderListSize = 0x6,
  kEnableConnectProtocol = 0x8,
};

enum class ErrorCode : uint32_t {
  kNoError = 0x0,
  kProtocolError = 0x1,
  kInternalError = 0x2,
  kFlowControlError = 0x3,
  kSettingsTimeout = 0x4,
  kStreamClosed = 0x5,
  kFrameSizeError = 0x6,
  kRefusedStream = 0x7,
  kCancel = 0x8,
  kCompressionError = 0x9,
  kConnectError = 0xa,
  kEnhanceYourCalm = 0xb,
  kInadequateSecurity = 0xc,
  kHttp11Required = 0xd,
};

// gRPC's length prefix in front of every message: a compressed flag and a 32-bit length.
inline constexpr size_t kGrpcMessagePrefixBytes = 5;

struct FrameHeader {
  uint32_t length = 0;  // payload bytes, padding included
  FrameType type = FrameType::kData;
  uint8_t flags = 0;
  uint32_t stream_id = 0;

  bool has(uint8_t flag) const { return (flags & flag) != 0; }

  static constexpr FrameHeader Decode(const uint8_t (&bytes)[kFrameHeaderBytes]) {
    FrameHeader header;
    header.length = (uint32_t{bytes[0]} << 16) | (uint32_t{bytes[1]} << 8) | bytes[2];
    header.type = static_cast<FrameType>(bytes[3]);
    header.flags = bytes[4];
    header.stream_id = ((uint32_t{bytes[5]} << 24) | (uint32_t{bytes[6]} << 16) |
                        (uint32_t{bytes[7]} << 8) | bytes[8]) &
                       kStreamIdMask;
    return header;
  }

  // Appends the 9 header bytes to `out`; for tests and seed corpora.
  void AppendTo(std::string& out) const {
    const char bytes[kFrameHeaderBytes] = {
        static_cast<char>(length >> 16),    static_cast<char>(length >> 8),
        static_cast<char>(length),          static_cast<char>(type),
        static_cast<char>(flags),           static_cast<char>(stream_id >> 24),
        static_cast<char>(stream_id >> 16), static_cast<char>(stream_id >> 8),
        static_cast<char>(stream_id)};
    out.append(bytes, kFrameHeaderBytes);
  }
};

// Big-endian 32-bit value at `bytes`.
constexpr uint32_t ReadUint32(const uint8_t* bytes) {
  return (uint32_t{bytes[0]} << 24) | (uint32_t{bytes[1]} << 16) | (uint32_t{bytes[2]} << 8) |
         bytes[3];
}

}  // namespace nodemesh::parsers::http2
