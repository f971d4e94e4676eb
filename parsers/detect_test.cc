#include "parsers/detect.h"

#include <catch2/catch.hpp>
#include <fstream>
#include <iterator>

#include "test/lib/capture.h"

namespace nodemesh::parsers {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in);
  return {std::istreambuf_iterator<char>(in), {}};
}

// A TLS record holding a ClientHello whose extensions are `extensions`.
std::string ClientHello(const std::string& extensions) {
  std::string body;
  body += "\x03\x03";                      // legacy_version
  body += std::string(32, 'r');            // random
  body += '\x00';                          // session id
  body += std::string("\x00\x02\x13\x01", 4);  // one cipher suite
  body += std::string("\x01\x00", 2);      // null compression
  body += static_cast<char>(extensions.size() >> 8);
  body += static_cast<char>(extensions.size() & 0xff);
  body += extensions;
  std::string handshake = "\x01";
  handshake += '\0';
  handshake += static_cast<char>(body.size() >> 8);
  handshake += static_cast<char>(body.size() & 0xff);
  handshake += body;
  std::string record = "\x16\x03\x01";
  record += static_cast<char>(handshake.size() >> 8);
  record += static_cast<char>(handshake.size() & 0xff);
  return record + handshake;
}

std::string ServerNameExtension(const std::string& name) {
  std::string entry = std::string("\x00", 1) + static_cast<char>(name.size() >> 8) +
                      static_cast<char>(name.size() & 0xff) + name;
  std::string list = std::string(1, static_cast<char>(entry.size() >> 8)) +
                     static_cast<char>(entry.size() & 0xff) + entry;
  return std::string("\x00\x00", 2) + static_cast<char>(list.size() >> 8) +
         static_cast<char>(list.size() & 0xff) + list;
}

TEST_CASE("detect: HTTP/1 request lines") {
  CHECK(DetectProtocol("GET / HTTP/1.1\r\n")->protocol == Protocol::kHttp1);
  CHECK(DetectProtocol("DELETE /x HTTP/1.1")->protocol == Protocol::kHttp1);
  CHECK(DetectProtocol("M-SEARCH * HTTP/1.1")->protocol == Protocol::kHttp1);
  SECTION("a prefix of a method waits for more") {
    CHECK_FALSE(DetectProtocol("G").has_value());
    CHECK_FALSE(DetectProtocol("GET").has_value());
    CHECK_FALSE(DetectProtocol("PRI ").has_value());  // could still be the HTTP/2 preface
  }
  SECTION("an unknown method or a missing space is not HTTP") {
    CHECK(DetectProtocol("GETS / HTTP/1.1")->protocol == Protocol::kOpaque);
    CHECK(DetectProtocol("get / HTTP/1.1")->protocol == Protocol::kOpaque);
    CHECK(DetectProtocol("GET\t/")->protocol == Protocol::kOpaque);
  }
}

TEST_CASE("detect: the HTTP/2 prior-knowledge preface, whole or in part") {
  const std::string preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
  CHECK(DetectProtocol(preface)->protocol == Protocol::kHttp2);
  CHECK(DetectProtocol(preface + "\x00\x00\x12\x04")->protocol == Protocol::kHttp2);
  for (size_t n = 1; n < preface.size(); ++n) {
    CAPTURE(n);
    CHECK_FALSE(DetectProtocol(preface.substr(0, n)).has_value());
  }
  // PRI is no HTTP/1 method: a broken preface is nothing known.
  CHECK(DetectProtocol("PRI * HTTP/2.0\r\n\r\nXX")->protocol == Protocol::kOpaque);
  CHECK(DetectProtocol("PRI / HTTP/1.1")->protocol == Protocol::kOpaque);
}

TEST_CASE("detect: a TLS ClientHello, with its server name") {
  SECTION("from a real client") {
    const std::string hello = ReadFile(testing::FixturePath("parsers/tls-clienthello.bin"));
    const auto detection = DetectProtocol(hello);
    REQUIRE(detection.has_value());
    CHECK(detection->protocol == Protocol::kTls);
    CHECK(detection->sni == "voting.emojivoto.svc.cluster.local");
    for (size_t n = 1; n < hello.size(); n += 37) {
      CAPTURE(n);
      CHECK_FALSE(DetectProtocol(hello.substr(0, n)).has_value());
    }
  }
  SECTION("without server_name") {
    const auto detection = DetectProtocol(ClientHello(std::string("\x00\x0b\x00\x02\x01\x00", 6)));
    REQUIRE(detection.has_value());
    CHECK(detection->protocol == Protocol::kTls);
    CHECK(detection->sni.empty());
  }
  SECTION("server_name after another extension") {
    const auto detection = DetectProtocol(
        ClientHello(std::string("\x00\x0b\x00\x02\x01\x00", 6) + ServerNameExtension("web")));
    CHECK(detection->sni == "web");
  }
  SECTION("lengths that overrun give TLS without a name, never a read past the end") {
    std::string hello = ClientHello(ServerNameExtension("web"));
    hello[hello.size() - 4] = '\x7f';  // the name's list claims more than there is
    const auto detection = DetectProtocol(hello);
    CHECK(detection->protocol == Protocol::kTls);
    CHECK(detection->sni.empty());
  }
  SECTION("other record types are not a ClientHello") {
    CHECK(DetectProtocol(std::string("\x17\x03\x03\x00\x05hello", 10))->protocol ==
          Protocol::kOpaque);
    CHECK(DetectProtocol(std::string("\x16\x03\x03\x00\x05\x02", 6))->protocol ==
          Protocol::kOpaque);
  }
}

TEST_CASE("detect: anything else is opaque, and detection always ends") {
  CHECK(DetectProtocol(std::string("\x00\x00\x00\x08\x04\xd2\x16\x2f", 8))->protocol ==
        Protocol::kOpaque);
  CHECK(DetectProtocol("SSH-2.0-OpenSSH_9.2\r\n")->protocol == Protocol::kOpaque);
  CHECK_FALSE(DetectProtocol("").has_value());
  // A TLS record header announcing 16 KiB, then nothing more: decided at the cap.
  std::string huge("\x16\x03\x01\x40\x00\x01", 6);
  huge.resize(kMaxDetectionBytes - 1, 'x');
  CHECK_FALSE(DetectProtocol(huge).has_value());
  huge += 'x';
  CHECK(DetectProtocol(huge).has_value());
}

}  // namespace
}  // namespace nodemesh::parsers
