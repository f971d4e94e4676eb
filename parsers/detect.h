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
// A caller that sees either side end before the client's bytes decide treats the connection
// as opaque; so does one whose server speaks first, unless what the server says is an HTTP/2
// server's preface (its SETTINGS may arrive before the client's preface), which the caller
// holds until the client's bytes decide.
std::optional<Detection> DetectProtocol(std::string_view first_bytes);

}  // namespace nodemesh::parsers
