// Protocol detection from the first bytes a client sends.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace nodemesh::parsers {

enum class Protocol : uint8_t { kHttp1, kHttp2, kTls, kOpaque };
// Arrays indexed by Protocol are sized by this: kOpaque stays the last enumerator.
inline constexpr size_t kProtocolCount = static_cast<size_t>(Protocol::kOpaque) + 1;

std::string_view ProtocolName(Protocol protocol);

struct Detection {
  Protocol protocol = Protocol::kOpaque;
  std::string sni;  // TLS only: the ClientHello's server_name, empty when absent
};

// The most bytes DetectProtocol() needs: a whole TLS record holding the ClientHello.
inline constexpr size_t kMaxDetectionBytes = 5 + (1 << 14);

// Decides from the client's first bytes; nullopt while they are a prefix of something
// recognisable and more are needed. Given kMaxDetectionBytes or more it always decides.
// A caller that sees the client stop (EOF, or a server that speaks first) treats the
// connection as opaque.
std::optional<Detection> DetectProtocol(std::string_view first_bytes);

}  // namespace nodemesh::parsers
