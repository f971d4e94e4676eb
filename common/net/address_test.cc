// IpAddress and Endpoint: parsing, formatting and sockaddr round trips, IPv4 (kept
// v4-mapped, as the BPF maps hold it) and IPv6.
#include "common/net/address.h"

#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <string>

#include "absl/container/flat_hash_set.h"

namespace nodemesh {
namespace {

IpAddress Ip(const std::string& text) {
  const std::optional<IpAddress> ip = IpAddress::Parse(text);
  INFO(text);
  REQUIRE(ip);
  return *ip;
}

TEST_CASE("IPv4 addresses are held v4-mapped and print as dotted quads") {
  const IpAddress ip = Ip("10.77.0.11");
  CHECK(ip.is_v4());
  CHECK_FALSE(ip.is_loopback());
  CHECK(ip.ToString() == "10.77.0.11");
  const std::array<uint8_t, 16> mapped = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 77, 0, 11};
  CHECK(ip.bytes == mapped);
  CHECK(ip == IpAddress::V4(0x0a4d000b));
  // The v4-mapped IPv6 spelling is the same address.
  CHECK(Ip("::ffff:10.77.0.11") == ip);
  CHECK(Ip("0.0.0.0") == IpAddress::V4(0));
  CHECK(Ip("255.255.255.255").ToString() == "255.255.255.255");
}

TEST_CASE("IPv6 addresses parse and print in their canonical form") {
  const IpAddress ip = Ip("FD00:0:0:0::0011");
  CHECK_FALSE(ip.is_v4());
  CHECK(ip.ToString() == "fd00::11");
  CHECK(Ip("::1") == IpAddress::Loopback6());
  CHECK(Ip("::") == IpAddress{});
  CHECK(Ip("::").ToString() == "::");
  CHECK(Ip("2001:db8::1:0:0:1").ToString() == "2001:db8::1:0:0:1");
}

TEST_CASE("loopback is 127.0.0.0/8 and ::1") {
  CHECK(IpAddress::Loopback4().ToString() == "127.0.0.1");
  CHECK(IpAddress::Loopback4().is_loopback());
  CHECK(Ip("127.3.2.1").is_loopback());
  CHECK(Ip("::ffff:127.0.0.1").is_loopback());
  CHECK(IpAddress::Loopback6().is_loopback());
  CHECK(IpAddress::Loopback6().ToString() == "::1");
  CHECK_FALSE(Ip("128.0.0.1").is_loopback());
  CHECK_FALSE(Ip("::2").is_loopback());
  CHECK_FALSE(IpAddress{}.is_loopback());
}

TEST_CASE("IpAddress::Parse rejects what is not exactly an address") {
  using namespace std::string_literals;
  for (const std::string& text : {""s, "10.77.0"s, "10.77.0.256"s, "10.77.0.1.2"s, " 10.77.0.1"s,
                                  "10.77.0.1 "s, "10.77.0.1:80"s, "[::1]"s, "::1%lo"s,
                                  "fe80::1::2"s, "localhost"s, "0x0a.0.0.1"s, "10.0.0.1\0junk"s}) {
    INFO('"' << text << '"');
    CHECK_FALSE(IpAddress::Parse(text));
  }
}

TEST_CASE("Endpoint prints IPv6 in brackets") {
  CHECK((Endpoint{Ip("10.77.0.11"), 8080}).ToString() == "10.77.0.11:8080");
  CHECK((Endpoint{Ip("fd00::11"), 443}).ToString() == "[fd00::11]:443");
  CHECK((Endpoint{IpAddress::Loopback6(), 0}).ToString() == "[::1]:0");
}

TEST_CASE("Endpoint round trips through sockaddr") {
  SECTION("IPv4 becomes sockaddr_in, in network byte order") {
    const Endpoint endpoint{Ip("10.77.0.11"), 8080};
    CHECK(endpoint.family() == AF_INET);
    sockaddr_storage storage;
    REQUIRE(endpoint.ToSockaddr(&storage) == sizeof(sockaddr_in));
    const auto& in = reinterpret_cast<const sockaddr_in&>(storage);
    CHECK(in.sin_family == AF_INET);
    CHECK(in.sin_port == htons(8080));
    CHECK(in.sin_addr.s_addr == inet_addr("10.77.0.11"));
    CHECK(Endpoint::FromSockaddr(storage) == endpoint);
  }
  SECTION("IPv6 becomes sockaddr_in6") {
    const Endpoint endpoint{Ip("fd00::11"), 65535};
    CHECK(endpoint.family() == AF_INET6);
    sockaddr_storage storage;
    REQUIRE(endpoint.ToSockaddr(&storage) == sizeof(sockaddr_in6));
    const auto& in6 = reinterpret_cast<const sockaddr_in6&>(storage);
    CHECK(in6.sin6_family == AF_INET6);
    CHECK(in6.sin6_port == htons(65535));
    in6_addr expected;
    REQUIRE(inet_pton(AF_INET6, "fd00::11", &expected) == 1);
    CHECK(std::memcmp(&in6.sin6_addr, &expected, sizeof expected) == 0);
    CHECK(Endpoint::FromSockaddr(storage) == endpoint);
  }
  SECTION("a v4-mapped sockaddr_in6 reads as the IPv4 address") {
    sockaddr_storage storage{};
    auto& in6 = reinterpret_cast<sockaddr_in6&>(storage);
    in6.sin6_family = AF_INET6;
    in6.sin6_port = htons(80);
    REQUIRE(inet_pton(AF_INET6, "::ffff:10.77.0.11", &in6.sin6_addr) == 1);
    const std::optional<Endpoint> endpoint = Endpoint::FromSockaddr(storage);
    REQUIRE(endpoint);
    CHECK(endpoint->ToString() == "10.77.0.11:80");
  }
  SECTION("other families are not endpoints") {
    sockaddr_storage storage{};
    storage.ss_family = AF_UNIX;
    CHECK_FALSE(Endpoint::FromSockaddr(storage));
  }
}

TEST_CASE("Endpoint reads both ends of a connected socket") {
  const int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(listener >= 0);
  sockaddr_storage any;
  const socklen_t length = Endpoint{IpAddress::Loopback4(), 0}.ToSockaddr(&any);
  REQUIRE(bind(listener, reinterpret_cast<sockaddr*>(&any), length) == 0);
  REQUIRE(listen(listener, 1) == 0);
  const std::optional<Endpoint> listening = Endpoint::Local(listener);
  REQUIRE(listening);
  CHECK(listening->ip == IpAddress::Loopback4());
  CHECK(listening->port != 0);

  const int client = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(client >= 0);
  CHECK_FALSE(Endpoint::Peer(client));  // not connected yet
  sockaddr_storage target;
  REQUIRE(connect(client, reinterpret_cast<sockaddr*>(&target), listening->ToSockaddr(&target)) ==
          0);
  const int accepted = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
  REQUIRE(accepted >= 0);
  CHECK(Endpoint::Peer(client) == listening);
  CHECK(Endpoint::Peer(accepted) == Endpoint::Local(client));
  CHECK(Endpoint::Local(accepted) == listening);
  close(accepted);
  close(client);
  close(listener);
  CHECK_FALSE(Endpoint::Local(listener));  // closed
}

TEST_CASE("Endpoints hash by address and port") {
  absl::flat_hash_set<Endpoint> set = {{Ip("10.77.0.11"), 80},
                                       {Ip("::ffff:10.77.0.11"), 80},
                                       {Ip("10.77.0.11"), 81},
                                       {Ip("fd00::11"), 80}};
  CHECK(set.size() == 3);
  CHECK(set.contains(Endpoint{Ip("10.77.0.11"), 81}));
  CHECK_FALSE(set.contains(Endpoint{Ip("10.77.0.12"), 80}));
}

TEST_CASE("Endpoint::Parse reads listen addresses as flags write them") {
  const auto parsed = [](std::string_view text) {
    const std::optional<Endpoint> endpoint = Endpoint::Parse(text);
    return endpoint ? endpoint->ToString() : std::string("none");
  };
  CHECK(parsed("127.0.0.1:8085") == "127.0.0.1:8085");
  CHECK(parsed("[::1]:8085") == "[::1]:8085");
  CHECK(parsed("localhost:4191") == "127.0.0.1:4191");
  CHECK(parsed(":4191") == "[::]:4191");
  CHECK(Endpoint::Parse(":4191")->ip.is_unspecified());
  CHECK(Endpoint::Parse("0.0.0.0:1")->ip.is_unspecified());
  CHECK_FALSE(Endpoint::Parse("10.0.0.1:1")->ip.is_unspecified());
  for (const std::string_view text : {"127.0.0.1", "127.0.0.1:65536", "127.0.0.1:-1",
                                      "127.0.0.1:", "aggregator:8085", "[::1:80", "10.0.0.1:80x"}) {
    INFO(text);
    CHECK_FALSE(Endpoint::Parse(text));
  }
}

}  // namespace
}  // namespace nodemesh
