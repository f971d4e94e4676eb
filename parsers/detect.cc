#include "parsers/detect.h"

#include <array>
#include <cstdint>

#include "llhttp.h"

namespace nodemesh::parsers {
namespace {

constexpr std::string_view kHttp2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

constexpr std::array kHttp1Methods = {
#define NODEMESH_METHOD_NAME(num, name, string) std::string_view(#string),
    HTTP_METHOD_MAP(NODEMESH_METHOD_NAME)
#undef NODEMESH_METHOD_NAME
};

enum class Verdict { kYes, kNo, kNeedMore };

Verdict StartsWith(std::string_view bytes, std::string_view prefix) {
  const size_t n = std::min(bytes.size(), prefix.size());
  if (bytes.substr(0, n) != prefix.substr(0, n)) return Verdict::kNo;
  return n == prefix.size() ? Verdict::kYes : Verdict::kNeedMore;
}

// An HTTP/1 request line starts with a method llhttp knows, then a space.
Verdict LooksLikeHttp1(std::string_view bytes) {
  Verdict best = Verdict::kNo;
  for (std::string_view method : kHttp1Methods) {
    const Verdict verdict = StartsWith(bytes, method);
    if (verdict == Verdict::kNo) continue;
    if (verdict == Verdict::kNeedMore || bytes.size() == method.size()) {
      best = Verdict::kNeedMore;
    } else if (bytes[method.size()] == ' ') {
      return Verdict::kYes;
    }
  }
  return best;
}

// Bounds-checked big-endian reader over a byte span.
class Reader {
 public:
  explicit Reader(std::string_view bytes) : bytes_(bytes) {}
  bool ok() const { return ok_; }
  size_t left() const { return ok_ ? bytes_.size() - pos_ : 0; }
  uint32_t Uint(int width) {
    uint32_t value = 0;
    for (char c : Take(width)) value = (value << 8) | static_cast<uint8_t>(c);
    return value;
  }
  // The next n bytes, or an empty span (and ok() false from then on) past the end.
  std::string_view Take(size_t n) {
    if (!ok_ || bytes_.size() - pos_ < n) {
      ok_ = false;
      return {};
    }
    std::string_view out = bytes_.substr(pos_, n);
    pos_ += n;
    return out;
  }
  Reader Sub(size_t n) { return Reader(Take(n), ok_); }

 private:
  Reader(std::string_view bytes, bool ok) : bytes_(bytes), ok_(ok) {}
  std::string_view bytes_;
  size_t pos_ = 0;
  bool ok_ = true;
};

// server_name from a ClientHello handshake message (RFC 8446 4.1.2, RFC 6066 3).
std::string ServerName(Reader hello) {
  hello.Take(2 + 32);                  // legacy_version, random
  hello.Take(hello.Uint(1));           // legacy_session_id
  hello.Take(hello.Uint(2));           // cipher_suites
  hello.Take(hello.Uint(1));           // legacy_compression_methods
  Reader extensions = hello.Sub(hello.Uint(2));
  while (extensions.ok() && extensions.left() >= 4) {
    const uint32_t type = extensions.Uint(2);
    Reader body = extensions.Sub(extensions.Uint(2));
    if (type != 0) continue;  // server_name
    Reader names = body.Sub(body.Uint(2));
    while (names.ok() && names.left() >= 3) {
      const uint32_t name_type = names.Uint(1);
      std::string_view name = names.Take(names.Uint(2));
      if (names.ok() && name_type == 0) return std::string(name);  // host_name
    }
    return {};
  }
  return {};
}

// A TLS handshake record (content type 22, version 3.x) that starts a ClientHello.
Verdict LooksLikeTls(std::string_view bytes, std::string* sni) {
  const auto byte = [&](size_t i) { return static_cast<uint8_t>(bytes[i]); };
  if (bytes.empty()) return Verdict::kNeedMore;
  if (byte(0) != 22) return Verdict::kNo;
  if (bytes.size() < 2) return Verdict::kNeedMore;
  if (byte(1) != 3) return Verdict::kNo;
  if (bytes.size() < 6) return Verdict::kNeedMore;
  if (byte(2) > 4 || byte(5) != 1) return Verdict::kNo;  // handshake type client_hello
  const size_t record_length = (size_t{byte(3)} << 8) | byte(4);
  if (bytes.size() < 5 + record_length) return Verdict::kNeedMore;
  Reader record(bytes.substr(5, record_length));
  record.Uint(1);  // msg_type
  const uint32_t hello_length = record.Uint(3);
  // A ClientHello larger than one record carries its SNI only in the first fragment;
  // reading what is there is enough for the name, which comes early.
  *sni = ServerName(record.Sub(std::min<size_t>(hello_length, record.left())));
  return Verdict::kYes;
}

}  // namespace

std::string_view ProtocolName(Protocol protocol) {
  switch (protocol) {
    case Protocol::kHttp1:
      return "http1";
    case Protocol::kHttp2:
      return "http2";
    case Protocol::kTls:
      return "tls";
    case Protocol::kOpaque:
      return "opaque";
  }
  return "unknown";
}

std::optional<Detection> DetectProtocol(std::string_view first_bytes) {
  if (first_bytes.empty()) return std::nullopt;
  // The HTTP/2 preface starts with "PRI ", which is also an HTTP/1 method: test it first.
  const Verdict http2 = StartsWith(first_bytes, kHttp2Preface);
  if (http2 == Verdict::kYes) return Detection{Protocol::kHttp2, {}};
  const Verdict http1 = LooksLikeHttp1(first_bytes);
  if (http1 == Verdict::kYes && http2 == Verdict::kNo) return Detection{Protocol::kHttp1, {}};
  std::string sni;
  const Verdict tls = LooksLikeTls(first_bytes, &sni);
  if (tls == Verdict::kYes) return Detection{Protocol::kTls, std::move(sni)};
  const bool undecided =
      http2 == Verdict::kNeedMore || http1 != Verdict::kNo || tls == Verdict::kNeedMore;
  if (undecided && first_bytes.size() < kMaxDetectionBytes) return std::nullopt;
  return Detection{Protocol::kOpaque, {}};
}

}  // namespace nodemesh::parsers
