// Naming the process that holds an address: the test process itself, found through /proc
// from a listener it opened and from the far end of a Unix socket pair.
#include "common/net/address_holder.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <string>

#include "common/base/unique_fd.h"
#include "fmt/format.h"

namespace nodemesh {
namespace {

// A TCP listener on `address` with port 0; the endpoint it got.
Endpoint Listen(const UniqueFd& fd, const IpAddress& address) {
  sockaddr_storage storage;
  const socklen_t length = Endpoint{address, 0}.ToSockaddr(&storage);
  REQUIRE(bind(fd.get(), reinterpret_cast<sockaddr*>(&storage), length) == 0);
  REQUIRE(listen(fd.get(), 1) == 0);
  const std::optional<Endpoint> bound = Endpoint::Local(fd.get());
  REQUIRE(bound);
  return *bound;
}

std::string Us() { return fmt::format("(pid {})", getpid()); }

TEST_CASE("A TCP listener's holder is named by its program and pid") {
  UniqueFd v4(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  const Endpoint loopback = Listen(v4, IpAddress::Loopback4());
  const std::optional<std::string> holder = TcpListenerHolder(loopback);
  REQUIRE(holder);
  CHECK_THAT(*holder, Catch::EndsWith(Us()));
  // The program's base name, as argv[0] has it: the test binary's own.
  CHECK_THAT(*holder, Catch::StartsWith("common_test "));

  SECTION("asked for every address, a listener on one of them holds the port") {
    CHECK(TcpListenerHolder(Endpoint{IpAddress{}, loopback.port}) == holder);
  }
  SECTION("another address or port is not held by it") {
    CHECK_FALSE(TcpListenerHolder(Endpoint{*IpAddress::Parse("127.0.0.2"), loopback.port}));
    UniqueFd other(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    const Endpoint free_port = Listen(other, IpAddress::Loopback4());
    other.Reset();  // closed: nobody listens there now
    CHECK_FALSE(TcpListenerHolder(free_port));
  }
}

TEST_CASE("An IPv6 listener on every address holds its port for any address") {
  UniqueFd v6(socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0));
  const Endpoint every = Listen(v6, IpAddress{});
  const std::optional<std::string> holder =
      TcpListenerHolder(Endpoint{IpAddress::Loopback6(), every.port});
  REQUIRE(holder);
  CHECK_THAT(*holder, Catch::EndsWith(Us()));
}

TEST_CASE("The far end of a Unix socket is named by its credentials") {
  int pair[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) == 0);
  UniqueFd a(pair[0]), b(pair[1]);
  const std::optional<std::string> holder = UnixPeerHolder(a.get());
  REQUIRE(holder);
  CHECK_THAT(*holder, Catch::EndsWith(Us()));
  CHECK(DescribeProcess(getpid()) == *holder);
}

}  // namespace
}  // namespace nodemesh
